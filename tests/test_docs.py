"""Every command in README.md and docs/*.md is checked (issue 20: "every command in README and docs/
is run by a test, or is checked by one").

The shell commands of the ```bash / ```sh / ```console blocks (and the ``$ `` lines of plain blocks)
are split into simple commands and each one is classified: a ``python -m fastuda.X`` command goes
through X's own argument parser (``build_parser()``), a training preset and its overrides load and
validate through fastuda.config, ``make X`` names a Makefile target, ``pip install`` names existing
extras, constraints files and pinned packages, ``--help`` / ``--list-keys`` run. A command that no rule
knows FAILS, so a new kind of command in the docs gets a check (or an allow-list entry saying why it
cannot have one). The ```python blocks compile, and the names they import exist.
"""

import argparse
import ast
import builtins
import contextlib
import importlib
import io
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

# Commands that no test can run or check, each with the reason. A first word listed here is allowed
# whatever its arguments.
ALLOWED_PROGRAMS = {
    ".": "activates the venv the commands above it made (sources a file; nothing to check)",
    "source": "as '.'",
    "mv": "the maintainer's constraints refresh (docs/installing.md): writes the repository's pins",
    "grep": "a filter in a pipe (the command before it is checked), or the constraints refresh",
    "sort": "a filter in the constraints refresh",
    ".venv-latest/bin/pip": "freezes the .venv-latest that `make test-latest` builds (minutes of installs)",
}
# Packages the install commands may name: each must also be pinned in constraints.txt.
PIP_PACKAGES = {"pip", "setuptools", "wheel", "ninja", "torch", "torchvision", "timm", "triton", "build"}
CLI_MODULES = {"fastuda.train", "fastuda.evaluate", "fastuda.predict", "fastuda.data.convert",
               "fastuda.kernels.audit", "fastuda.train_demo"}  # fmt: skip


# -- extraction ----------------------------------------------------------------------------------------


def code_blocks(path: Path):
    """(first line number, language, text) of each fenced block, indentation of list items removed."""
    lines = path.read_text().splitlines()
    i = 0
    while i < len(lines):
        m = re.match(r"^(\s*)```(\w*)\s*$", lines[i])
        if not m:
            i += 1
            continue
        indent, body, j = len(m.group(1)), [], i + 1
        while not re.match(r"^\s*```\s*$", lines[j]):
            body.append(lines[j][indent:])
            j += 1
        yield i + 1, m.group(2), "\n".join(body)
        i = j + 1


def shell_lines(lang: str, text: str) -> list[tuple[str, list[str]]]:
    """The command lines of a block (continuations joined), each with the output shown after it."""
    if lang not in ("bash", "sh", "console", "shell", ""):
        return []
    prompted = lang in ("console", "") or any(line.startswith("$ ") for line in text.splitlines())
    out: list[tuple[str, list[str]]] = []
    pending = ""
    for line in text.splitlines():
        if pending:
            pending += " " + line.strip()
        elif prompted and not line.startswith("$ "):
            if out:
                out[-1][1].append(line)
            continue
        elif prompted:
            pending = line[2:]
        else:
            pending = line
        if pending.endswith("\\"):
            pending = pending[:-1].rstrip()
            continue
        if pending.strip() and not pending.lstrip().startswith("#"):
            out.append((pending.strip(), []))
        pending = ""
    return out


def simple_commands(line: str) -> list[list[str]]:
    """Splits a command line at |, &&, ||, ; and { } into argv lists; drops comments, redirections
    and VAR=value prefixes."""
    lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    commands, argv, redirect = [], [], False
    for token in lexer:
        if token in ("|", "&&", "||", ";", "{", "}", "(", ")"):
            commands.append(argv)
            argv = []
        elif token in (">", ">>", "<", "2>", "&>"):
            redirect = True
        elif redirect:
            redirect = False
        elif not argv and re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", token):
            continue  # an environment variable for the command
        else:
            argv.append(token)
    commands.append(argv)
    return [c for c in commands if c]


def all_commands():
    for path in DOCS:
        for lineno, lang, text in code_blocks(path):
            for line, shown in shell_lines(lang, text):
                yield f"{path.relative_to(ROOT)}:{lineno}", line, shown


def python_blocks():
    for path in DOCS:
        for lineno, lang, text in code_blocks(path):
            if lang in ("python", "py"):
                yield f"{path.relative_to(ROOT)}:{lineno}", text


# -- checks ----------------------------------------------------------------------------------------------


class Checked(Exception):
    """A command failed its check."""


def _parse(module: str, argv: list[str]) -> tuple[argparse.ArgumentParser, argparse.Namespace]:
    mod = importlib.import_module(module)
    parser = mod.build_parser()
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            # the CLIs parse intermixed (overrides after options) except the fixed-argument ones
            parse = parser.parse_intermixed_args if module in ("fastuda.train", "fastuda.evaluate",
                                                               "fastuda.predict") else parser.parse_args  # fmt: skip
            return parser, parse(argv)
    except SystemExit as e:
        raise Checked(f"{module} rejects its arguments: {err.getvalue().strip()}") from None


def _overrides(overrides: list[str], preset: str | None = None) -> None:
    from fastuda.config import TrainConfig, apply_overrides, load_config
    from fastuda.errors import UserError

    try:
        if preset:
            load_config(preset, overrides, from_pretrained=False)
        else:
            apply_overrides(TrainConfig(), overrides)
    except UserError as e:
        raise Checked(f"config: {e}") from None


def _run_main(module: str, argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = importlib.import_module(module).main(argv)
        except SystemExit as e:
            code = e.code
    return code, out.getvalue(), err.getvalue()


def check_fastuda_module(module: str, argv: list[str]) -> str:
    if module not in CLI_MODULES:
        raise Checked(f"python -m {module}: not a fastuda command line (known: {sorted(CLI_MODULES)})")
    if "--help" in argv or "-h" in argv:
        code, out, _ = _run_main(module, argv)
        if code != 0 or "usage:" not in out:
            raise Checked(f"{module} --help exits {code}")
        return "ran --help"
    parser, args = _parse(module, argv)
    if module == "fastuda.train":
        if args.list_keys is not None:
            code, _, err = _run_main(module, argv)
            if code != 0:
                raise Checked(f"{module} {' '.join(argv)} exits {code}: {err.strip()}")
            return "ran --list-keys"
        if args.config is None:
            raise Checked("fastuda.train without a preset")
        placeholder = re.search(r"\b[A-Z]{2,}\b", args.config)  # OUT/config.json in running text
        if args.config.endswith(".json") and not placeholder and not (ROOT / args.config).exists():
            raise Checked(f"{args.config}: no such config file")
        _overrides(args.overrides, None if placeholder else args.config)
        return "preset + overrides validated"
    if module in ("fastuda.evaluate", "fastuda.predict"):
        inputs = args.overrides if module == "fastuda.evaluate" else args.inputs
        overrides = [s for s in inputs if "=" in s and not s.startswith(("docs/", "/"))]
        _overrides(overrides, args.config)
        for s in [args.checkpoint, *inputs]:
            if s.startswith("docs/") and not (ROOT / s).exists():
                raise Checked(f"{s}: the repository has no such file")
        return "arguments and overrides parsed"
    if module == "fastuda.kernels.audit" and args.ops:
        from fastuda.kernels.audit import OPS

        if unknown := [o for o in args.ops.split(",") if o not in OPS]:
            raise Checked(f"--ops {unknown}: not audited ops {list(OPS)}")
    return "arguments parsed"


def makefile_targets() -> set[str]:
    return set(re.findall(r"^([A-Za-z0-9_.-]+)\s*:(?!=)", (ROOT / "Makefile").read_text(), re.M))


def check_pip(argv: list[str]) -> str:
    if argv[:1] != ["install"]:
        raise Checked(f"pip {' '.join(argv)}: only `pip install` is known")
    extras = {m.group(1): m.group(2) for m in re.finditer(r'"(\w+)": \[([^\]]*)\]', (ROOT / "setup.py").read_text())}
    pinned = {re.split(r"[=<>\[ ]", line)[0].lower() for line in (ROOT / "constraints.txt").read_text().splitlines()
              if line and not line.startswith("#")}  # fmt: skip
    it = iter(argv[1:])
    for arg in it:
        if arg in ("-c", "--constraint", "-r"):
            name = next(it)
            if not (ROOT / name).is_file():
                raise Checked(f"pip {arg} {name}: no such file")
        elif arg in ("-e", "--editable") or re.match(r"^(\.|fastuda)(\[|$)", arg):
            spec = next(it) if arg.startswith("-") else arg
            m = re.fullmatch(r"(?:\.|fastuda)(?:\[([\w,]+)\])?", spec)
            if not m or (arg.startswith("-") and spec.startswith("fastuda")):
                raise Checked(f"pip install {arg} {spec}: expected . or .[extras] (fastuda[extras] from PyPI)")
            for extra in (m.group(1) or "").split(","):
                if extra and extra not in extras:
                    raise Checked(f"pip -e {spec}: setup.py has no extra {extra!r} ({sorted(extras)})")
        elif arg.startswith("-"):
            if arg not in ("--upgrade", "-U", "--no-build-isolation", "--no-deps"):
                raise Checked(f"pip install {arg}: an option this test does not know")
        elif arg.lower() not in PIP_PACKAGES or arg.lower() not in pinned:
            raise Checked(f"pip install {arg}: not a package the docs install, or not pinned in constraints.txt")
    return "extras, files and pins exist"


def check_pytest(argv: list[str]) -> str:
    """The paths exist, -m names markers of pytest.ini, -k a test whose id holds it exists."""
    markers = set(re.findall(r"^    (\w+):", (ROOT / "pytest.ini").read_text(), re.M))
    it, paths, keyword = iter(argv), [], None
    for arg in it:
        if arg == "-m":
            words = set(re.findall(r"\w+", next(it))) - {"not", "and", "or"}
            if unknown := words - markers:
                raise Checked(f"pytest -m: no such marker {sorted(unknown)} in pytest.ini ({sorted(markers)})")
        elif arg == "-k":
            keyword = next(it)
        elif arg.startswith("-"):
            if arg not in ("-q", "-x", "-v", "-ra", "--benchmark-only"):
                raise Checked(f"pytest {arg}: an option this test does not know")
        else:
            path = arg.split("::")[0]
            if not (ROOT / path).exists():
                raise Checked(f"pytest {arg}: no such file or folder")
            paths.append(path)
    if keyword and re.fullmatch(r"\w+", keyword):  # a plain word: some test function holds it
        files = [f for p in paths or ["tests"] for f in ([ROOT / p] if p.endswith(".py") else (ROOT / p).rglob("*.py"))]
        if not any(keyword in f.read_text() for f in files):
            raise Checked(f"pytest -k {keyword}: no test in {paths or ['tests']} mentions it")
    return "paths, markers and -k exist"


def check_command(argv: list[str], shown: list[str]) -> str:
    """Checks one simple command; returns how, raises Checked when it is wrong."""
    prog, rest = argv[0], argv[1:]
    if prog == "torchrun":
        if "-m" not in rest:
            raise Checked("torchrun without -m")
        i = rest.index("-m")
        if any(not a.startswith("--") for a in rest[:i]):
            raise Checked(f"torchrun {' '.join(rest[:i])}: expected only --options before -m")
        return "torchrun: " + check_fastuda_module(rest[i + 1], rest[i + 2 :])
    if prog in ("python", "python3", ".venv/bin/python", "$PY"):
        if rest[:2] == ["-m", "venv"]:
            return "makes a venv"
        if rest[:1] == ["-m"] and rest[1] == "pytest":
            return check_pytest(rest[2:])
        if rest[:1] == ["-m"] and rest[1] == "pip":
            return check_pip(rest[2:])
        if rest[:1] == ["-m"] and rest[1].startswith("fastuda"):
            if shown and shown[0].startswith("error:"):  # the docs show the error the command gives
                code, _, err = _run_main(rest[1], rest[2:])
                if code != 2 or err.strip() != "\n".join(shown).strip():
                    raise Checked(f"expected exit 2 and {shown!r}; got {code} and {err.strip()!r}")
                return "gives the error shown"
            return check_fastuda_module(rest[1], rest[2:])
        if rest[:1] == ["-c"]:  # a snippet in the docs is a quick read-only one: it runs
            result = subprocess.run([sys.executable, *rest], cwd=ROOT, capture_output=True, text=True, timeout=120)
            if result.returncode != 0:
                raise Checked(f"python -c exits {result.returncode}: {result.stderr.strip()[-300:]}")
            return "ran"
        if rest and rest[0].endswith(".py"):
            if not (ROOT / rest[0]).is_file():
                raise Checked(f"{rest[0]}: no such script")
            return "script exists"
        raise Checked(f"python {' '.join(rest)}: unknown form")
    if prog == "pytest":
        return check_pytest(rest)
    if prog == "make":
        targets = [a for a in rest if not a.startswith("-") and "=" not in a]
        if missing := [t for t in targets if t not in makefile_targets()]:
            raise Checked(f"make {missing}: no such target in the Makefile")
        return "Makefile targets exist"
    if prog == "pip":
        return check_pip(rest)
    if prog in ALLOWED_PROGRAMS:
        return "allowed: " + ALLOWED_PROGRAMS[prog]
    raise Checked(f"{prog}: a command no rule of tests/test_docs.py knows; add a check or an allow-list entry")


def check_line(line: str, shown: list[str]) -> list[str]:
    commands = simple_commands(line)
    how = [check_command(commands[0], shown)]
    if len(commands) > 1 and commands[0][:3] == ["python", "-m", "fastuda.train"] and "--list-keys" in commands[0]:
        # `--list-keys PRESET | grep KEY`, followed by its output: the lines shown are in the listing
        _, out, _ = _run_main("fastuda.train", commands[0][3:])
        listed = {" ".join(x.split()) for x in out.splitlines()}
        if missing := [s for s in shown if " ".join(s.split()) not in listed]:
            raise Checked(f"the output shown is not what --list-keys prints: {missing}")
    how += [check_command(c, []) for c in commands[1:]]
    return how


COMMANDS = list(all_commands())


def test_docs_have_commands():
    # guards the extraction itself: the README and the manual show dozens of commands
    assert len(COMMANDS) > 30, COMMANDS
    assert any("fastuda.train" in line for _, line, _ in COMMANDS)


@pytest.mark.parametrize("where,line,shown", COMMANDS, ids=[f"{w} {line[:60]}" for w, line, _ in COMMANDS])
def test_command(where, line, shown):
    try:
        check_line(line, shown)
    except Checked as e:
        pytest.fail(f"{where}: `{line}`: {e}", pytrace=False)


def runnable(tree: ast.AST) -> bool:
    """A block runs here when it needs nothing from outside: every name it reads is defined in
    it, and it names no GPU and no file (a checkpoint, an image, a dataset folder)."""
    defined = set(dir(builtins))
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            defined.add(node.id)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            defined |= {(a.asname or a.name).split(".")[0] for a in node.names}
        elif isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            defined.add(node.name)
        elif isinstance(node, ast.arg):
            defined.add(node.arg)
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load) and node.id not in defined:
            return False
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and (
                node.value == "cuda" or "/" in node.value or re.search(r"\.(pt|pth|png|jpe?g|json)$", node.value)):
            return False
    return True


@pytest.mark.parametrize("where,text", list(python_blocks()), ids=[w for w, _ in python_blocks()])
def test_python_block(where, text, tmp_path, monkeypatch):
    """Each Python block compiles, and the fastuda names it imports exist; a block that needs no
    GPU, data or weights runs. (Today each needs one of them.)"""
    tree = compile(text, where, "exec", ast.PyCF_ONLY_AST)
    if runnable(tree):
        monkeypatch.chdir(tmp_path)
        exec(compile(tree, where, "exec"), {"__name__": "__docs__"})
        return
    aliases = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module.startswith("fastuda"):
            mod = importlib.import_module(node.module)
            for name in node.names:
                assert hasattr(mod, name.name), f"{where}: from {node.module} import {name.name}: no such name"
        elif isinstance(node, ast.Import):
            for name in node.names:
                if name.name.startswith("fastuda"):
                    aliases[name.asname or name.name] = importlib.import_module(name.name)
    for node in ast.walk(tree):  # ops.pseudo_label, fastuda.Segmenter: the attribute exists
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases:
            assert hasattr(aliases[node.value.id], node.attr), f"{where}: {node.value.id}.{node.attr}: no such name"


# -- the checker can fail ----------------------------------------------------------------------------------


@pytest.mark.parametrize("line", [
    "python -m fastuda.train daformer_gta2cs_typo data.source_root=data/gta",   # no such preset
    "python -m fastuda.train daformer_gta2cs optim.lrr=3e-5",                   # no such key
    "python -m fastuda.train daformer_gta2cs 'data.crop_size=(384,)'",          # a bad value
    "python -m fastuda.train daformer_gta2cs --resum",                          # no such flag
    "torchrun --nproc_per_node=2 -m fastuda.train nopreset",
    "python -m fastuda.evaluate runs/x.pt --strde 256 256",
    "python -m fastuda.evaluate runs/x.pt data.target_rot=data/cityscapes",
    "python -m fastuda.predict x.pt img.png --out o --config nopreset",
    "python -m fastuda.data.convert gta5 data/gta",
    "python -m fastuda.kernels.audit --model --ops attention_bwd_typo",
    "python -m fastuda.nonexistent",
    "make tests",
    "pip install -c constraints-new.txt torch",
    "pip install -e '.[devv]'",
    "pip install numpyy",
    "rsync -a host:data/gta data/gta",
    "python bench/nonexistent.py",
    "python -c 'raise SystemExit(3)'",
    "pytest -m slwo tests",
    "pytest tests/test_nonexistent.py",
    "pytest bench -k nosuchbenchmarkword",
])  # fmt: skip
def test_checker_rejects(line):
    with pytest.raises(Checked):
        check_line(line, [])


def test_python_blocks_that_need_nothing_run():
    assert runnable(ast.parse("import fastuda.config as c\nprint(c.load_config('demo').max_iters)"))
    for text in ("labels = seg('street.jpg')", "x = torch.randn(2, device='cuda')", "f('runs/x/latest.pt')"):
        assert not runnable(ast.parse(text)), text


def test_checker_checks_shown_output():
    with pytest.raises(Checked):
        check_line("python -m fastuda.train demo uda.mode=dac", ["error: uda.mode='dac': something else"])
    with pytest.raises(Checked):
        check_line("python -m fastuda.train --list-keys demo | grep mic_block", ["uda.mic_block_size=63  b: wrong"])


def test_extraction():
    block = "A=1 python -m fastuda.train demo \\\n    max_iters=3 --out runs/x  # a comment\n# only a comment\n"
    line = "A=1 python -m fastuda.train demo max_iters=3 --out runs/x  # a comment"
    assert shell_lines("bash", block) == [(line, [])]
    assert simple_commands("A=1 python -m fastuda.train demo max_iters=3  # c") == [
        ["python", "-m", "fastuda.train", "demo", "max_iters=3"]]  # fmt: skip
    assert simple_commands("{ grep '^#' c.txt; pip freeze | sort -f; } > new") == [
        ["grep", "^#", "c.txt"], ["pip", "freeze"], ["sort", "-f"]]  # fmt: skip
    assert shell_lines("console", "$ make test\noutput line\n") == [("make test", ["output line"])]
    assert shell_lines("", "data/gta/   GTA5\n") == []


def test_no_module_over_400_lines():
    """Issue 20: no file in fastuda/ over 400 lines. (rglob does not enter the fastuda/kernels link:
    the Triton kernels and the audit in kernels/ are not counted.)"""
    long = {str(p.relative_to(ROOT)): n for p in sorted((ROOT / "fastuda").rglob("*.py"))
            if (n := len(p.read_text().splitlines())) > 400}  # fmt: skip
    assert not long, f"files over 400 lines: {long}"


def _anchors(path: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation but '-' and '_' dropped, spaces to '-'."""
    text = _prose(path)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in re.findall(r"^#+ (.+)$", text, re.M)}


def test_links_resolve():
    """Every relative link of README.md and docs/ names an existing file, and its #anchor a heading there."""
    bad = []
    for path in DOCS:
        text = _prose(path)
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"^[a-z]+:", target):
                continue  # https:, mailto:
            file, _, anchor = target.partition("#")
            dest = (path.parent / file).resolve() if file else path
            if not dest.exists():
                bad.append(f"{path.relative_to(ROOT)}: {target}: no such file")
            elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
                bad.append(f"{path.relative_to(ROOT)}: {target}: no such heading")
    assert not bad, "\n".join(bad)


# Commands in running text (`python -m fastuda.X ...` in backquotes) are checked too, with the
# placeholders the prose uses standing for arguments.
def _prose(path: Path) -> str:
    return re.sub(r"```.*?```", "", path.read_text(), flags=re.S)  # the text outside the code blocks


COMMAND_START = r"^(python -m fastuda\.|python [\w./-]+\.py|make [a-z]|pip install |torchrun |pytest )"
INLINE = [(str(path.relative_to(ROOT)), span) for path in DOCS for span in re.findall(r"`([^`\n]+)`", _prose(path))
          if re.match(COMMAND_START, span)]  # fmt: skip


@pytest.mark.parametrize("where,span", INLINE, ids=[f"{w} {s[:60]}" for w, s in INLINE])
def test_inline_command(where, span):
    if "..." in span or "<" in span or ("[" in span and not span.startswith("pip")):
        pytest.skip("a usage pattern, not a command")
    if span.startswith("python -m") and len(span.split()) == 3:  # the command named, without arguments
        assert span.split()[2] in CLI_MODULES, f"{where}: `{span}`: not a fastuda command line"
        return
    try:
        check_line(span, [])
    except Checked as e:
        pytest.fail(f"{where}: `{span}`: {e}", pytrace=False)
