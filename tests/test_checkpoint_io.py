"""The checkpoint surface, through the CLIs: every file a user may hand ``python -m fastuda.predict``
or ``python -m fastuda.evaluate`` either works or gives one line, ``error: ...`` naming the file,
and exit code 2 (no traceback). Also ``load_checkpoint`` on fastuda's own training checkpoint and on
Hugging Face key names, and the resume check."""

import argparse
import os

import pytest
import torch

from fastuda import evaluate, predict
from fastuda.errors import UserError, run_cli
from fastuda.models import build_model, load_checkpoint
from fastuda.models.architecture import architecture
from fastuda.models.checkpoint import read_checkpoint, read_training_checkpoint

from _checkpoints import network, write_fastuda, write_released


class _Call:
    """Unpickles as ``os.system(command)``: what a malicious checkpoint holds."""

    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """name -> path of every kind of file the table below uses."""
    root = tmp_path_factory.mktemp("checkpoints")
    cfg, model = network("daformer")
    out = {"fastuda": write_fastuda(root / "latest.pt", cfg, model),
           "released": write_released(root / "daformer_released.pth", model)}  # fmt: skip
    _, hrda = network("hrda")
    out["released_hrda"] = write_released(root / "hrda_released.pth", hrda)
    (root / "notes.txt").write_text("these are not weights\n")
    out["text"] = root / "notes.txt"
    data = out["fastuda"].read_bytes()
    (root / "truncated.pt").write_bytes(data[: len(data) // 2])
    out["truncated"] = root / "truncated.pt"
    (root / "empty.pth").write_bytes(b"")
    out["empty"] = root / "empty.pth"
    (root / "folder").mkdir()
    (root / "folder" / "readme.md").write_text("no weights here")
    out["folder"] = root / "folder"
    out["missing"] = root / "missing.pth"
    mit = {k.removeprefix("backbone."): v for k, v in model.state_dict().items() if k.startswith("backbone.")}
    mit["head.weight"], mit["head.bias"] = torch.randn(1000, 128), torch.randn(1000)  # the ImageNet classifier
    torch.save(mit, root / "mit_demo.pth")
    out["mit"] = root / "mit_demo.pth"
    torch.save({"args": argparse.Namespace(lr=1.0), "state_dict": model.state_dict()}, root / "pickled.pth")
    out["pickled"] = root / "pickled.pth"
    torch.save({"state_dict": model.state_dict(), "hook": _Call(f"touch {root / 'RAN'}")}, root / "call.pth")
    out["call"] = root / "call.pth"
    torch.save(torch.randn(3), root / "tensor.pt")
    out["tensor"] = root / "tensor.pt"
    torch.save({"epoch": 3, "note": "no tensors"}, root / "no_weights.pt")
    out["no_weights"] = root / "no_weights.pt"
    torch.save({"layer.weight": torch.randn(2, 2)}, root / "foreign.pt")
    out["foreign"] = root / "foreign.pt"
    (root / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{\"a\": ")
    out["safetensors"] = root / "model.safetensors"
    return out


# (file, extra arguments, message with {path}); each runs through predict and evaluate
ERRORS = {
    "not a checkpoint": ("text", [], "{path} is not a checkpoint (expected a file written by torch.save"),
    "truncated": ("truncated", [], "checkpoint {path} is truncated or damaged: its zip archive has no central directory"),
    "empty": ("empty", [], "checkpoint {path} is empty (0 bytes)"),
    "folder": ("folder", [], "{path} is a folder, not a checkpoint (a Hugging Face folder holds model.safetensors"),
    "missing": ("missing", [], "checkpoint {path} not found"),
    "other architecture": ("fastuda", ["--config", "demo", "model.backbone=mit_b0"],
                           "{path}: checkpoint is mit_demo + daformer, config asks for mit_b0 + daformer"),
    "other classes": ("fastuda", ["model.num_classes=7"], "{path}: checkpoint predicts 6 classes, config asks for 7"),
    "released HRDA, DAFormer config": ("released_hrda", ["--config", "demo"],
                                       "{path}: checkpoint is mit_demo + hrda, config asks for mit_demo + daformer"),
    "ImageNet encoder": ("mit", [], "{path} holds a mit_demo (encoder only), not a segmentation network"),
    "pickled object": ("pickled", [], "checkpoint {path} pickles argparse.Namespace, which fastuda does not unpickle"),
    # a pickled call: refused by name, not "truncated or damaged" with torch's advice to load it anyway
    "pickled call": ("call", [], "checkpoint {path} pickles posix.system, which fastuda does not unpickle: it never "
                                 "unpickles code"),
    "a tensor": ("tensor", [], "{path} is not a checkpoint: it holds a Tensor, expected a dict of tensors"),
    "no weights": ("no_weights", [], "{path} holds no weights (no tensors keyed by parameter name; top-level keys: epoch"),
    "foreign keys": ("foreign", [], "{path} is not a checkpoint fastuda knows: its keys (layer.weight) match none"),
    "damaged safetensors": ("safetensors", [], "checkpoint {path} is not a readable safetensors file"),
}  # fmt: skip


@pytest.mark.parametrize("cli", ["predict", "evaluate"])
@pytest.mark.parametrize("case", list(ERRORS))
def test_cli_names_the_file(files, case, cli, tmp_path, capsys):
    name, extra, message = ERRORS[case]
    path = files[name]
    if cli == "predict":
        image = tmp_path / "x.png"
        from PIL import Image

        Image.new("RGB", (40, 30)).save(image)
        argv = [str(path), str(image), "--out", str(tmp_path / "out"), "--no-progress", *extra]
        main = predict.main
    else:
        argv = [str(path), *extra]
        main = evaluate.main
    assert run_cli(main, argv) == 2
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert err == f"error: {message.format(path=path)}" or err.startswith(f"error: {message.format(path=path)}")
    assert "Traceback" not in captured.err and len(err.splitlines()) <= 3
    assert not (tmp_path / "out").exists()
    assert "weights_only" not in err and not (path.parent / "RAN").exists()


def test_released_checkpoint_evaluates(files, tmp_path, capsys):
    """A released DAFormer .pth (19 classes) through evaluate: the network from the keys, the data and
    test pipeline from the published recipe, with overrides."""
    from fastuda.data import _fake

    _, model = network("daformer19")
    path = write_released(tmp_path / "daformer_gta2cs.pth", model)
    cs = _fake.write_fake_cityscapes(tmp_path / "cityscapes")
    assert run_cli(evaluate.main, [str(path), f"data.target_root={cs}", "data.resize=(128,64)"]) == 0
    out = capsys.readouterr().out
    assert "mIoU" in out and "student, whole image, fp32, 2 images, iteration 40000" in out


def test_released_checkpoint_cannot_resume(files):
    for name, kind in (("released", "released DAFormer / HRDA / MIC checkpoint"), ("mit", "SegFormer ImageNet MiT")):
        with pytest.raises(UserError, match=f"{files[name]} is a {kind}.* cannot be resumed: it holds no optimiser"):
            read_training_checkpoint(files[name])
    state = read_training_checkpoint(files["fastuda"])
    assert state["iteration"] == 3 and "numpy" in state["rng"]


def test_load_checkpoint_reads_fastudas_own_checkpoint(files):
    """What a new user tries first: load_checkpoint(model, "runs/x/latest.pt") (NumPy RNG state inside)."""
    cfg, want = network("daformer")
    model = build_model(cfg.model, pretrained=None)
    report = load_checkpoint(model, files["fastuda"], strict=True)
    assert report.layout == "fastuda (student)" and report.loaded == len(want.state_dict())
    for k, v in want.state_dict().items():
        torch.testing.assert_close(model.state_dict()[k], v, rtol=0, atol=0, msg=k)
    teacher = load_checkpoint(model, files["fastuda"], which="ema_model")
    assert teacher.layout == "fastuda (teacher)"
    torch.testing.assert_close(model.decode_head.conv_seg.bias, want.decode_head.conv_seg.bias + 1)


def test_read_and_architecture_of_each_layout(files):
    expect = {"fastuda": ("fastuda", "mit_demo + daformer"), "released": ("uda", "mit_demo + daformer"),
              "released_hrda": ("uda", "mit_demo + hrda"), "mit": ("mit", "mit_demo (encoder only)")}  # fmt: skip
    from fastuda.models.checkpoint import to_model_keys

    for name, (kind, arch) in expect.items():
        found_kind, content = read_checkpoint(files[name])
        assert found_kind == kind
        state, _ = to_model_keys(content)
        assert str(architecture(state)) == arch
    with pytest.raises(UserError, match="no encoder weights"):
        architecture({"decode_head.conv_seg.weight": torch.randn(2, 2, 1, 1)})


@pytest.mark.parametrize("module", ["fastuda.predict", pytest.param("fastuda.evaluate", marks=pytest.mark.slow)])
def test_python_dash_m_prints_one_line(files, module, tmp_path):
    """The real entry point (``python -m``): exit code 2 and one ``error:`` line, no traceback."""
    import subprocess
    import sys

    argv = [sys.executable, "-m", module, str(files["truncated"])]
    if module == "fastuda.predict":
        argv += [str(files["text"]), "--out", str(tmp_path / "out")]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr
    # beside the error, only import-time warnings of an untested torch / triton (make test-latest)
    lines = [line for line in done.stderr.strip().splitlines() if "UnsupportedVersionWarning: " not in line]
    assert lines == [
        f"error: checkpoint {files['truncated']} is truncated or damaged: its zip archive has no central directory "
        f"({files['truncated'].stat().st_size} bytes); copy or download it again"
    ]


# ----------------------------------------------------------------------------- SegFormer head order of old checkpoints
# From 9e7f30b until format 2, fastuda's SegFormerHead concatenated the levels deepest first and its training
# checkpoints carried no "format" entry; before 9e7f30b it concatenated shallowest first, as now. The forward of
# each era is transcribed here on the saved state dict, in float64.

DEEPEST_FIRST_COMMIT = "9e7f30bbc840600d5550ff068bf046833e07a2a3"  # made the head concatenate deepest first
SHALLOWEST_FIRST_COMMIT = "835cf695f29108674479c70dfcaa914136883177"  # 9e7f30b~2: before it


def _head_forward(x, p, deepest_first):
    """fastuda's SegFormerHead of either era on state dict ``p`` (fastuda keys), eval mode."""
    f = torch.nn.functional
    levels = []
    for i, xi in enumerate(x):
        n, _, h, w = xi.shape
        y = f.linear(xi.flatten(2).transpose(1, 2), p[f"decode_head.linear_c.{i}.proj.weight"],
                     p[f"decode_head.linear_c.{i}.proj.bias"]).transpose(1, 2).reshape(n, -1, h, w)  # fmt: skip
        levels.append(f.interpolate(y, size=x[0].shape[2:], mode="bilinear", align_corners=False))
    cat = torch.cat(levels[::-1] if deepest_first else levels, dim=1)
    bn = "decode_head.linear_fuse.bn."
    y = f.batch_norm(f.conv2d(cat, p["decode_head.linear_fuse.conv.weight"]), p[bn + "running_mean"],
                     p[bn + "running_var"], p[bn + "weight"], p[bn + "bias"], training=False, eps=1e-5)  # fmt: skip
    return f.conv2d(torch.relu(y), p["decode_head.linear_pred.weight"], p["decode_head.linear_pred.bias"])


def _segformer(seed):
    torch.manual_seed(seed)
    model = build_model(backbone="mit_demo", decode_head="segformer", num_classes=5, embed_dim=24).double()
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if t.is_floating_point():
                t.copy_(torch.rand_like(t) + 0.5 if name.endswith("running_var") else torch.rand_like(t) - 0.5)
    return model.eval()


def _unmarked_checkpoint(folder, commit):
    """A fastuda training checkpoint as the unmarked eras wrote it (no "format"), with its run record
    (config.json, run.git_commit) beside it when ``commit`` is given."""
    import json

    from fastuda.config import PRESETS, to_dict

    folder.mkdir()
    state = _segformer(11).state_dict()
    cfg = to_dict(PRESETS["demo"]())
    torch.save({"student": state, "teacher": {k: v + 1 for k, v in state.items()}, "imnet": None, "optimizer": {},
                "scheduler": {}, "rng": [], "iteration": 3, "config": cfg}, folder / "latest.pt")  # fmt: skip
    if commit is not None:
        (folder / "config.json").write_text(json.dumps({**cfg, "run": {"git_commit": commit}}))
    return folder / "latest.pt", state


def _features(model):
    g = torch.Generator().manual_seed(2)
    return [torch.randn(2, w, 19 // 2**i + 1, 27 // 2**i + 1, generator=g, dtype=torch.float64)
            for i, w in enumerate(model.backbone.embed_dims)]  # fmt: skip


@pytest.mark.parametrize("which", ["model", "ema_model"])
def test_unmarked_checkpoint_of_the_deepest_first_era_keeps_its_function(tmp_path, which):
    path, state = _unmarked_checkpoint(tmp_path / "run", DEEPEST_FIRST_COMMIT)
    saved = state if which == "model" else {k: v + 1 for k, v in state.items()}
    model = _segformer(0)
    load_checkpoint(model, path, strict=True, which=which)
    x = _features(model)
    with torch.no_grad():
        torch.testing.assert_close(model.decode_head(x), _head_forward(x, saved, deepest_first=True), rtol=1e-12, atol=1e-12)
    _, upgraded = read_checkpoint(path)
    assert upgraded["format"] == 2 and upgraded["fuse_reversed"] is True


def test_unmarked_checkpoint_from_before_9e7f30b_loads_unchanged(tmp_path):
    from fastuda.models.checkpoint_format import _is_ancestor

    if _is_ancestor(DEEPEST_FIRST_COMMIT, SHALLOWEST_FIRST_COMMIT) is None:
        pytest.skip("fastuda is not run from a git checkout that holds its history")
    path, state = _unmarked_checkpoint(tmp_path / "run", SHALLOWEST_FIRST_COMMIT)
    model = _segformer(0)
    load_checkpoint(model, path, strict=True)
    x = _features(model)
    with torch.no_grad():
        torch.testing.assert_close(model.decode_head(x), _head_forward(x, state, deepest_first=False), rtol=1e-12, atol=1e-12)


def test_unmarked_checkpoint_without_run_record_warns_and_assumes_the_newer_era(tmp_path):
    path, state = _unmarked_checkpoint(tmp_path / "run", None)
    model = _segformer(0)
    with pytest.warns(UserWarning, match="no format entry.*assuming commit 9e7f30b"):
        load_checkpoint(model, path, strict=True)
    x = _features(model)
    with torch.no_grad():
        torch.testing.assert_close(model.decode_head(x), _head_forward(x, state, deepest_first=True), rtol=1e-12, atol=1e-12)


def test_marked_checkpoint_loads_unchanged_and_train_marks_its_checkpoints(tmp_path, recwarn):
    from fastuda.config import PRESETS
    from fastuda.runtime.checkpoint import training_state

    model = _segformer(3)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: 1.0)
    state = training_state({"student": model, "teacher": None, "imnet": None}, opt, sched, [], 0, 0, 1, PRESETS["demo"]())
    assert state["format"] == 2
    torch.save(state, tmp_path / "latest.pt")
    fresh = _segformer(0)
    load_checkpoint(fresh, tmp_path / "latest.pt", strict=True)
    x = _features(model)
    with torch.no_grad():
        torch.testing.assert_close(fresh.decode_head(x), _head_forward(x, model.state_dict(), deepest_first=False),
                                   rtol=1e-12, atol=1e-12)  # fmt: skip
    assert not [w for w in recwarn if "format" in str(w.message)]


def test_resume_of_a_deepest_first_checkpoint_reverses_the_optimiser_moments(tmp_path):
    """The upgraded run continues as the saved one would have: weights and AdamW moments of the fuse conv
    both follow the new order (written by hand here: one block per level, reversed)."""
    import json

    from fastuda.config import PRESETS, to_dict
    from fastuda.runtime.checkpoint import restore, rng_state

    key = "decode_head.linear_fuse.conv.weight"
    model = _segformer(4).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.randn(1, 3, 32, 32, dtype=torch.float64)).square().mean().backward()
    opt.step()

    def old(t):  # shallowest-first blocks -> deepest-first
        return torch.cat(list(t.chunk(4, dim=1))[::-1], dim=1)

    student = {**model.state_dict(), key: old(model.state_dict()[key])}
    saved_opt = opt.state_dict()
    index = [name for name, _ in model.named_parameters()].index(key)
    moments = {k: old(v) if torch.is_tensor(v) and v.dim() == 4 else v for k, v in saved_opt["state"][index].items()}
    saved_opt = {**saved_opt, "state": {**saved_opt["state"], index: moments}}
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: 1.0)
    (tmp_path / "config.json").write_text(json.dumps({"run": {"git_commit": DEEPEST_FIRST_COMMIT}}))
    torch.save({"student": student, "teacher": None, "imnet": None, "optimizer": saved_opt, "scheduler": sched.state_dict(),
                "rng": [rng_state(torch.Generator())], "iteration": 1, "draws": 2,
                "config": to_dict(PRESETS["demo"]())}, tmp_path / "latest.pt")  # fmt: skip
    fresh = _segformer(0).train()
    fresh_opt = torch.optim.AdamW(fresh.parameters(), lr=1e-3)
    fresh_sched = torch.optim.lr_scheduler.LambdaLR(fresh_opt, lambda i: 1.0)
    state = read_training_checkpoint(tmp_path / "latest.pt")
    assert restore(state, {"student": fresh, "teacher": None, "imnet": None}, fresh_opt, fresh_sched,
                   torch.Generator(), 0) == (1, 2)  # fmt: skip
    for k, v in model.state_dict().items():
        torch.testing.assert_close(fresh.state_dict()[k], v, rtol=0, atol=0, msg=k)
    fuse = dict(fresh.named_parameters())[key]
    for name in ("exp_avg", "exp_avg_sq"):
        torch.testing.assert_close(fresh_opt.state[fuse][name], opt.state[dict(model.named_parameters())[key]][name],
                                   rtol=0, atol=0)  # fmt: skip


def test_mmsegmentations_own_segformer_head_is_named_and_refused(tmp_path):
    """mmsegmentation's SegformerHead (ConvModule with BN and ReLU per level, then fusion_conv) computes another
    function than the all-MLP head: no key mapping can load it, so the error says so."""
    model = build_model(backbone="mit_demo", decode_head="segformer", num_classes=5, embed_dim=24)
    state = {k: v for k, v in model.state_dict().items() if k.startswith("backbone.")}
    for i, w in enumerate(model.backbone.embed_dims):
        state[f"decode_head.convs.{i}.conv.weight"] = torch.randn(24, w, 1, 1)
        state.update({f"decode_head.convs.{i}.bn.{n}": torch.rand(24) for n in ("weight", "bias", "running_mean", "running_var")})
    state["decode_head.fusion_conv.conv.weight"] = torch.randn(24, 96, 1, 1)
    state["decode_head.conv_seg.weight"], state["decode_head.conv_seg.bias"] = torch.randn(5, 24, 1, 1), torch.randn(5)
    torch.save({"meta": {}, "state_dict": state}, tmp_path / "mmseg_segformer.pth")
    _, content = read_checkpoint(tmp_path / "mmseg_segformer.pth")
    with pytest.raises(UserError, match="mmseg_segformer.pth: mmsegmentation's SegformerHead .* is not SegFormer's all-MLP"):
        architecture(content["state_dict"], tmp_path / "mmseg_segformer.pth")


def test_predict_with_a_training_preset_needs_only_what_inference_reads(files, tmp_path, monkeypatch, capsys):
    """README's ``predict CKPT IMAGES --config mic_hrda_gta2cs``: the preset names the ImageNet
    encoder file (model.pretrained) and the feature distance (uda.fd_lambda), which only training
    reads; the checkpoint holds the weights (issue 20, sharp edge 1: they were demanded)."""
    from PIL import Image

    monkeypatch.chdir(tmp_path)  # no pretrained/mit_b5.pth here
    Image.new("RGB", (40, 30), (90, 120, 60)).save(tmp_path / "x.png")
    small = ["model.backbone=mit_demo", "model.embed_dim=32"]  # the released file's network, at a test's size
    argv = [str(files["released_hrda"]), "x.png", "--out", "out", "--no-progress", "--native", "--config",
            "mic_hrda_gta2cs", *small]  # fmt: skip
    assert run_cli(predict.main, argv) == 0, capsys.readouterr().err
    assert (tmp_path / "out" / "labelTrainIds" / "x.png").is_file()
