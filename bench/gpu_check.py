"""``make gpu-check``: the CUDA test tier and the benchmarks at the real shapes on one GPU,
its CUDA tier and training iterations within ``--budget`` seconds (480 by default; the whole
run is not yet timed on a GPU), with one table printed last and appended to bench/RESULTS.md.

    python bench/gpu_check.py                 # on a GPU machine (make gpu-check)
    python bench/gpu_check.py --dry-run       # anywhere: every section at CPU sizes, nothing appended
    python bench/gpu_check.py --budget 300    # seconds; sections that no longer fit are reported as skipped

Sections, each against a baseline measured in the same run:

1. CUDA tier: ``pytest tests -m cuda`` (kernels in fp32/fp16/bf16, CUDA ClassMix, compile,
   the sync-free training step under ``torch.cuda.set_sync_debug_mode("error")``).
2. attention forward + backward at every MiT-B5 stage (batch 2 and HRDA's batch 18, bf16)
   against every SDPA backend that runs it; target >= 1.0x the fastest.
3. pseudo_label, weighted CE, scale_fusion, ClassMix: achieved GB/s (bytes each op must
   move once / CUDA-event time) against the device-to-device copy bandwidth; target >= 0.8
   for the loss kernels and scale_fusion (ClassMix: reported).
4. the time model against the clock: every op call of the static audit (``python -m
   fastuda.kernels.audit``, kernels/timing.py) at its real shape, measured here next to its
   modelled time for this GPU (H100 or H200 parameters); the ratio modelled / measured says how
   far the model is off (1.0: exact; above 1: the kernel beats the model). The section also
   appends ``model-param`` lines (the measured copy bandwidth as the HBM figure) that the
   audit reads back from bench/RESULTS.md.
   The 5-product "pair" attention backward (a prototype, docs/kernels.md) is measured too, in
   a child process under a time limit (its programs wait on each other through flags, which
   have never run on a GPU): against the default backward, timed in the same child, its
   agreement with it, bitwise repeatability, and its own modelled time. These are the figures
   that decide issue 18's last gate calls (docs/kernels.md, "Why the attention backward stops
   here").
5. one DAFormer (512 crop) and one HRDA (1024 crop) training iteration, MiT-B5, batch 2 + 2,
   bf16 autocast: fused vs reference ops and fused + torch.compile, time and peak memory,
   each in its own process (a clean allocator); target for HRDA: >= 2x faster in <= 0.6x the
   memory of the reference path.

Without a GPU (and without ``--dry-run``) it prints one line and exits 0. Timings use
``triton.testing.do_bench`` (CUDA events) on the GPU, a host clock in the dry run.
"""

import argparse
import dataclasses
import datetime
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# bench/ is a folder of modules, not a package (docs/layout.md): run as a script, this file's folder
# is already first on sys.path, so the benchmark modules import by their own names.

import torch  # noqa: E402

CUDA = torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET", "0") != "1"


@dataclasses.dataclass
class Row:
    section: str
    case: str
    fastuda: str = "-"  # the measured figure of fastuda (ms, GB/s, MiB)
    baseline: str = "-"  # what it is compared with, measured in this run
    ratio: float | None = None  # higher is better, as the target reads
    target: float | None = None
    note: str = ""
    memory_ok: bool | None = None  # a second target (HRDA's memory), when there is one

    @property
    def met(self) -> str:
        if self.ratio is None or self.target is None:
            return "-"
        return "yes" if self.ratio >= self.target and self.memory_ok is not False else "NO"


# ---------------------------------------------------------------- timing


def time_ms(fn, reps: int = 100) -> float:
    """Median milliseconds of ``fn`` (CUDA events on the GPU, a host clock otherwise)."""
    if CUDA:
        import triton.testing

        return triton.testing.do_bench(fn, warmup=25, rep=reps)
    fn()
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def copy_bandwidth() -> float:
    """Device-to-device copy GB/s (read + write): the ceiling memory-bound ops are held to."""
    n = (1 << 28) if CUDA else (1 << 22)  # 1 GiB on the GPU
    src = torch.empty(n, dtype=torch.float32, device="cuda" if CUDA else "cpu").normal_()
    dst = torch.empty_like(src)
    ms = time_ms(lambda: dst.copy_(src), reps=300)
    return 2 * src.numel() * 4 / (ms * 1e-3) / 1e9


# ---------------------------------------------------------------- sections


def cuda_tier(timeout: float) -> list[Row]:
    """``pytest tests -m cuda``, verbose so that a run cut short by the time limit still
    tells how many tests passed and which failed."""
    cmd = [sys.executable, "-m", "pytest", str(ROOT / "tests"), "-m", "cuda", "-v", "-p", "no:cacheprovider"]
    t0 = time.perf_counter()
    try:
        out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
        stdout, verdict = out.stdout, ("pass" if out.returncode == 0 else f"rc {out.returncode}")
    except subprocess.TimeoutExpired as e:
        stdout = e.stdout.decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
        verdict = f"cut at {timeout:.0f} s"
    outcomes = {k: 0 for k in ("PASSED", "FAILED", "ERROR", "SKIPPED")}
    failed = []
    for line in stdout.splitlines():
        if "::" not in line:
            continue
        for k in outcomes:
            if f" {k}" in line:
                outcomes[k] += 1
                if k in ("FAILED", "ERROR"):
                    failed.append(line.split(" ")[0].split("::")[-1])
                break
    note = ", ".join(f"{n} {k.lower()}" for k, n in outcomes.items() if n) + f" in {time.perf_counter() - t0:.0f} s"
    if failed:
        note += "; failed: " + ", ".join(failed[:8])
    return [Row("cuda tier", "pytest -m cuda", verdict, note=note)]


def attention_rows() -> list[Row]:
    import pytest

    import bench_attention as ba

    dtype = torch.bfloat16 if CUDA else torch.float32
    rows = []
    for shape in ba.SHAPES:
        B, H, N, M, D = shape
        times = {}
        for provider in ["fastuda", *ba.SDPA_BACKENDS]:
            try:
                fn, _, _ = ba.setup(shape, provider, "full", dtype)
            except pytest.skip.Exception:
                continue  # this SDPA backend has no kernel for the shape / dtype
            times[provider] = time_ms(fn)
            del fn
        sdpa = {k: v for k, v in times.items() if k != "fastuda"}
        case = f"B{B} H{H} N{N} M{M} D{D} {str(dtype).removeprefix('torch.')} fwd+bwd"
        if "fastuda" not in times or not sdpa:
            rows.append(Row("attention", case, note="no comparison ran"))
            continue
        best = min(sdpa, key=sdpa.get)
        note = ", ".join(f"{k.removeprefix('sdpa-')} {v:.3f}" for k, v in sdpa.items())
        rows.append(Row("attention", case, f"{times['fastuda']:.3f} ms", f"{best} {sdpa[best]:.3f} ms",
                        sdpa[best] / times["fastuda"], 1.0, note))  # fmt: skip
    return rows


def bandwidth_rows(copy_gbs: float) -> list[Row]:
    import bench_classmix
    import bench_cross_entropy
    import bench_pseudo_label
    import bench_scale_fusion

    pl, ce, sf, cm = bench_pseudo_label, bench_cross_entropy, bench_scale_fusion, bench_classmix
    cases = []  # (op, shape, dtype, mode, setup thunk, target fraction of copy bandwidth)
    for shape in pl.SHAPES:
        for dtype in pl.DTYPES:
            make = lambda s=shape, d=dtype: pl.setup(s, d, "fastuda")  # noqa: E731
            cases.append(("pseudo_label", shape, dtype, "forward", make, 0.8))
    for shape in ce.SHAPES:
        for dtype in ce.DTYPES:
            for mode in ("forward", "full"):
                make = lambda s=shape, d=dtype, m=mode: ce.setup(s, d, "fastuda", m)  # noqa: E731
                cases.append(("cross_entropy", shape, dtype, mode, make, 0.8))
    for case, mode in sf.PARAMS:
        for dtype in sf.DTYPES:
            make = lambda c=case, d=dtype, m=mode: sf.setup(c, d, "fastuda", m)  # noqa: E731
            cases.append((f"scale_fusion {case}", sf.CASES[case][0], dtype, mode, make, 0.8))
    for shape in cm.SHAPES:
        cases.append(("classmix", shape, torch.float32, "forward", lambda s=shape: cm.setup(s, "fastuda"), None))
    rows = []
    for op, shape, dtype, mode, make, target in cases:
        fn, nbytes = make()
        ms = time_ms(fn)
        gbs = nbytes / (ms * 1e-3) / 1e9
        case = f"{'x'.join(map(str, shape))} {str(dtype).removeprefix('torch.')} {mode.replace('full', 'fwd+bwd')}"
        rows.append(Row(op, case, f"{gbs:.4g} GB/s ({ms:.4g} ms)", f"copy {copy_gbs:.4g} GB/s", gbs / copy_gbs, target))
        del fn
    return rows


def _model_device() -> str:
    """The audit's parameter set for this GPU."""
    name = torch.cuda.get_device_name() if CUDA else ""
    return "H200" if "H200" in name else "H100"


def audit_model(ops: str | None = None, match: str | None = None, *extra: str) -> dict:
    """The static audit's JSON (a child process: it compiles for sm_90 with Triton's compiler,
    not the interpreter); ``extra``: more audit arguments."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    cmd = [sys.executable, "-m", "fastuda.kernels.audit", "--json"]
    cmd += ["--ops", ops] if ops else []
    cmd += ["--match", match] if match else []
    cmd += list(extra)
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env)
    if out.returncode not in (0, 1):
        raise RuntimeError(f"the audit failed: {out.stderr.strip()[-300:]}")
    return json.loads(out.stdout)


def model_rows(copy_gbs: float, audit: dict | None = None) -> list[Row]:
    """Modelled (kernels/timing.py) against measured time per audited op call. Without a GPU
    (the dry run) only the modelled figures, for a few calls."""
    from fastuda.kernels import audit as A

    if audit is None:
        audit = audit_model() if CUDA else audit_model("attention_fwd,cross_entropy_bwd", "B2 H8 N256 M256 D64 bfloat16")
    device = _model_device()
    modelled = {(o["op"], o["case"]): o["model"][device] for o in audit["ops"]}
    rows = []
    if CUDA:
        for op, case, _, call in A.calls([o for o in A.OPS if any(k[0] == o for k in modelled)], device="cuda"):
            m = modelled.get((op, case))
            if m is None:
                continue
            us = time_ms(call) * 1e3
            rows.append(Row("model", f"{op} {case}", f"{us:.1f} us", f"modelled {m['modelled_us']:.1f} us "
                            f"({device}), ideal {m['ideal_us']:.1f} us", m["modelled_us"] / us, None,
                            f"measured / ideal {us / m['ideal_us']:.2f}"))  # fmt: skip
    else:
        for (op, case), m in modelled.items():
            rows.append(Row("model", f"{op} {case}", "- (dry run)", f"modelled {m['modelled_us']:.1f} us ({device}), "
                            f"ideal {m['ideal_us']:.1f} us", None, None, "not measured without a GPU"))  # fmt: skip
    rows.append(Row("model", "model-param", f"{device} hbm_bytes_s = {copy_gbs * 1e9:.4g}",
                    note="measured copy bandwidth: the audit's HBM figure from now on" if CUDA else "dry run: not appended"))  # fmt: skip
    return rows


def model_params(rows: list[Row]) -> str:
    """``model-param`` lines for bench/RESULTS.md (kernels/timing.py, load_overrides)."""
    return "".join(f"model-param {r.fastuda}\n" for r in rows if r.section == "model" and r.case == "model-param")


def pair_child() -> dict:
    """In a child process: the audited bf16 attention backward calls under the default and the
    "pair" policy. Per case: both times (us), the pair's largest difference from the default
    relative to the default's largest magnitude, and whether two pair runs agree bitwise."""
    from fastuda.kernels import attention
    from fastuda.kernels import audit as A

    out = {}
    for _, case, _, call in A.calls(["attention_bwd"], match="bfloat16", device="cuda" if CUDA else "cpu"):
        attention.BWD_POLICY = "time"
        ref = [t.float() for t in call()]
        default_us = time_ms(call) * 1e3
        attention.BWD_POLICY = "pair"
        got, again = [t.float() for t in call()], [t.float() for t in call()]
        diff = max(((g - r).abs().max() / r.abs().max().clamp_min(1e-30)).item() for g, r in zip(got, ref))
        same = all(torch.equal(a, b) for a, b in zip(got, again))
        out[case] = dict(default_us=default_us, pair_us=time_ms(call) * 1e3, rel_diff=diff, bitwise_repeat=same)
        print(json.dumps({case: out[case]}), file=sys.stderr, flush=True)  # progress, should the limit cut it
    return out


def pair_rows(timeout: float, audit: dict | None = None, measured: dict | None = None) -> list[Row]:
    """The pair backward against the default, measured (pair_child, in a child process cut at
    ``timeout`` seconds: a flag that never arrives is a hang, not a lost run) and modelled. Without
    a GPU (the dry run) the modelled figures only, for one call. ``audit`` / ``measured`` stand
    in for the audit's JSON and the child's answer (tests)."""
    if audit is None:
        match = "bfloat16" if CUDA else "B18 H1 N16384 M256 D64 bfloat16"
        audit = audit_model("attention_bwd", match, "--bwd-policy", "pair")
    device = _model_device()
    modelled = {o["case"]: o["model"][device] for o in audit["ops"] if o["op"] == "attention_bwd"}
    if measured is None and CUDA:
        cmd = [sys.executable, str(Path(__file__).resolve()), "--pair-child"]
        try:
            out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired as e:
            err = e.stderr.decode() if isinstance(e.stderr, bytes) else (e.stderr or "")
            done = sum(line.startswith("{") for line in err.splitlines())
            return [Row("pair backward", "-", note=f"cut at {timeout:.0f} s after {done} of {len(modelled)} calls: "
                        "a pair that never completes (flags) or a slow compile")]  # fmt: skip
        lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
        if out.returncode or not lines:
            err = (out.stderr.strip().splitlines() or ["?"])[-1][:150]
            return [Row("pair backward", "-", note=f"failed: {err}")]
        measured = json.loads(lines[-1])
    rows = []
    for case, m in modelled.items():
        if measured is None:
            rows.append(Row("pair backward", case, "- (dry run)", f"pair modelled {m['modelled_us']:.1f} us ({device})",
                            None, None, "not measured without a GPU"))  # fmt: skip
            continue
        r = measured.get(case)
        if r is None:
            continue
        rows.append(Row("pair backward", case, f"{r['pair_us']:.1f} us",
                        f"default {r['default_us']:.1f} us; pair modelled {m['modelled_us']:.1f} us ({device})",
                        r["default_us"] / r["pair_us"], None,
                        f"pair modelled / measured {m['modelled_us'] / r['pair_us']:.2f}; differs from the default by "
                        f"{r['rel_diff']:.1e} of its largest; {'bitwise repeatable' if r['bitwise_repeat'] else 'NOT bitwise repeatable'}"))  # fmt: skip
    return rows


def one_step(preset: str, provider: str, compile_backend: str) -> dict:
    """In a child process: time one training iteration and its peak memory."""
    import fastuda.ops
    import bench_uda_step

    fastuda.ops.set_value_checks("off")
    fn, info = bench_uda_step.setup(preset, provider, compile_backend)
    for _ in range(2):  # Triton JIT, autotuning, torch.compile
        fn()
    peak = float("nan")
    if CUDA:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        fn()
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() / 2**20
    times = []
    for _ in range(3):  # an iteration takes ~0.1-1 s: three, synchronised, give a stable median
        t0 = time.perf_counter()
        fn()
        torch.cuda.synchronize() if CUDA else None
        times.append((time.perf_counter() - t0) * 1e3)
    return dict(info, ms=statistics.median(times), peak_mib=peak)


def step_rows(deadline: float, compile_backend: str) -> list[Row]:
    d, h = "daformer_gta2cs", "hrda_gta2cs"
    # eager first (the targets), compiled last: Inductor's compile of MiT-B5 takes minutes
    runs = [(d, "reference"), (d, "fastuda"), (h, "reference"), (h, "fastuda"),
            (d, "fastuda+compile"), (h, "fastuda+compile")]  # fmt: skip
    results: dict[tuple[str, str], dict] = {}
    rows = []
    for preset, provider in runs:
        left = deadline - time.perf_counter()
        if left < 30:
            rows.append(Row("training step", f"{preset} {provider}", note="skipped: time budget spent"))
            continue
        cmd = [sys.executable, str(Path(__file__).resolve()), "--one-step", preset, provider,
               "--compile-backend", compile_backend]  # fmt: skip
        try:
            out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=left - 10)
        except subprocess.TimeoutExpired:
            rows.append(Row("training step", f"{preset} {provider}", note="cut short by the time budget"))
            continue
        lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
        if out.returncode or not lines:
            err = (out.stderr.strip().splitlines() or ["?"])[-1][:120]
            rows.append(Row("training step", f"{preset} {provider}", note=f"failed: {err}"))
            continue
        results[preset, provider] = r = json.loads(lines[-1])
        ref = results.get((preset, "reference"))
        case = f"{preset} {r['backbone']} {r['crop']} B={r['batch']} {provider}"
        figure = f"{r['ms']:.1f} ms, {r['peak_mib']:.0f} MiB"
        if provider == "reference" or ref is None:
            rows.append(Row("training step", case, figure))
            continue
        speed, memory = ref["ms"] / r["ms"], r["peak_mib"] / ref["peak_mib"]
        hrda = preset == h
        row = Row("training step", case, figure, f"reference {ref['ms']:.1f} ms, {ref['peak_mib']:.0f} MiB", speed,
                  2.0 if hrda else None, f"memory {memory:.2f}x of reference" + (" (target <= 0.6)" if hrda else ""))
        row.memory_ok = (memory <= 0.6) if hrda else None
        rows.append(row)
    return rows


# ---------------------------------------------------------------- report


def environment() -> dict:
    import triton

    def git(*args):
        try:
            return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.TimeoutExpired):
            return ""

    commit = git("rev-parse", "--short=10", "HEAD") or "?"
    dirty = " (dirty)" if git("status", "--porcelain", "--untracked-files=no") else ""
    return dict(
        device=torch.cuda.get_device_name() if CUDA else "cpu (dry run)",
        torch=torch.__version__, triton=triton.__version__, cuda=torch.version.cuda or "-",
        commit=commit + dirty, date=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    )  # fmt: skip


def render(rows: list[Row], env: dict, seconds: float) -> str:
    lines = [
        f"## gpu-check: {env['device']}, {env['date']}",
        "",
        f"torch {env['torch']}, triton {env['triton']}, CUDA {env['cuda']}, commit {env['commit']}, "
        f"{seconds:.0f} s",
        "",
        "| section | case | fastuda | baseline (same run) | ratio | target | met | note |",
        "| --- | --- | --- | --- | ---: | ---: | --- | --- |",
    ]
    return "\n".join(lines + row_lines(rows)) + "\n"


def row_lines(rows: list[Row]) -> list[str]:
    """The table's body: one markdown row per Row."""
    lines = []
    for r in rows:
        ratio = "-" if r.ratio is None else f"{r.ratio:.2f}"
        target = "-" if r.target is None else f">= {r.target:g}"
        cells = (r.section, r.case, r.fastuda, r.baseline, ratio, target, r.met, r.note)
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budget", type=float, default=480, help="seconds for the whole check (default 480)")
    parser.add_argument("--dry-run", action="store_true", help="run every section at CPU sizes; append nothing")
    parser.add_argument("--no-append", action="store_true", help="print the table only")
    parser.add_argument("--results", default=str(ROOT / "bench" / "RESULTS.md"), help="the file rows are appended to")
    parser.add_argument("--compile-backend", default=None, help="torch.compile backend of the compiled step "
                        "(default: inductor; aot_eager in the dry run)")  # fmt: skip
    parser.add_argument("--one-step", nargs=2, metavar=("PRESET", "PROVIDER"), help=argparse.SUPPRESS)
    parser.add_argument("--pair-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    backend = args.compile_backend or ("inductor" if CUDA else "aot_eager")
    if args.one_step:
        print(json.dumps(one_step(*args.one_step, backend)))
        return 0
    if args.pair_child:
        import fastuda.ops

        fastuda.ops.set_value_checks("off")
        print(json.dumps(pair_child()))
        return 0
    if not CUDA and not args.dry_run:
        print("gpu-check: no CUDA GPU visible (torch.cuda.is_available() is False): skipped. "
              "`python bench/gpu_check.py --dry-run` runs it at CPU sizes.")  # fmt: skip
        return 0

    t0 = time.perf_counter()
    deadline = t0 + args.budget
    import fastuda.ops

    fastuda.ops.set_value_checks("off")  # value checks read CUDA tensors on the host: not what users time
    rows: list[Row] = []

    def section(name, fn, *a):
        print(f"gpu-check: {name} ({time.perf_counter() - t0:.0f} s)", flush=True)
        start = len(rows)
        try:
            rows.extend(fn(*a))
        except Exception as e:  # one broken section must not hide the others' figures
            rows.append(Row(name, "-", note=f"error: {type(e).__name__}: {str(e)[:150]}"))
        # each section's rows as it ends: a run killed later (a hang, the machine's limit) keeps them
        print("\n".join(row_lines(rows[start:])), flush=True)

    # the CUDA tier gets at most 35% of the budget; the benchmarks need the rest
    section("cuda tier", cuda_tier, max(30.0, 0.35 * args.budget))
    copy_gbs = copy_bandwidth()
    rows.append(Row("copy", "device-to-device, 1 GiB fp32" if CUDA else "host copy, 16 MiB", f"{copy_gbs:.4g} GB/s"))
    section("attention", attention_rows)
    section("memory-bound ops", bandwidth_rows, copy_gbs)
    torch.cuda.empty_cache() if CUDA else None
    section("model", model_rows, copy_gbs)
    torch.cuda.empty_cache() if CUDA else None
    section("pair backward", pair_rows, 150.0)
    section("training step", step_rows, deadline, backend)

    seconds = time.perf_counter() - t0
    table = render(rows, environment(), seconds)
    if not (args.dry_run or args.no_append):
        with open(args.results, "a", encoding="utf-8") as f:
            f.write("\n" + table + ("\n" + model_params(rows) if CUDA else ""))
    print("\n" + table, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
