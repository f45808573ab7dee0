"""Training: each preset's code path for a few iterations at tiny sizes, exact resume,
the CLI (overrides, errors, fake released datasets) and evaluation."""

import json
import os
import tempfile
from pathlib import Path

import pytest
import torch

from fastuda import config, train
from fastuda.models import mit
from fastuda.runtime.build import build_segmentor, build_train_datasets
from fastuda.uda import StepState, uda_step

TINY = [
    "data.source=synthetic", "data.target=synthetic", "data.synthetic_size=32", "data.synthetic_samples=8",
    "data.batch_size=2", "data.workers=0", "data.eval_samples=2", "data.crop_size=None", "model.backbone=mit_demo",
    "model.num_classes=6", "uda.pseudo_ignore_top=2", "uda.pseudo_ignore_bottom=4", "uda.fd_classes=(4,5)",
    "uda.mic_block_size=8", "rcs.min_pixels=4", "max_iters=3", "eval_interval=0", "checkpoint_interval=0",
    "log_interval=1",
]  # fmt: skip


def demo_weights() -> str:
    """An 'ImageNet' mit_demo encoder file (SegFormer's bare MiT layout): FD needs model.pretrained."""
    path = Path(tempfile.gettempdir()) / f"fastuda_test_mit_demo_{os.getpid()}.pth"
    if not path.is_file():
        with torch.random.fork_rng():  # the tests' global RNG stays as it was
            torch.manual_seed(0)
            torch.save(mit("mit_demo").state_dict(), path)
    return str(path)


def tiny(name: str, *extra: str) -> config.TrainConfig:
    return config.load_config(name, TINY + [f"model.pretrained={demo_weights()}"] + list(extra))


def test_presets_carry_published_numbers():
    d = config.preset("daformer_gta2cs")
    assert (d.max_iters, d.data.batch_size, d.seed, d.uda.alpha, d.uda.pseudo_threshold) == (40000, 2, 0, 0.999, 0.968)
    assert (d.uda.pseudo_ignore_top, d.uda.pseudo_ignore_bottom) == (15, 120)
    assert (d.uda.fd_lambda, d.uda.fd_min_ratio, d.rcs.min_crop_ratio, d.rcs.temperature) == (0.005, 0.75, 0.5, 0.01)
    assert (d.optim.lr, d.optim.head_lr_mult, d.optim.weight_decay, d.optim.warmup_iters) == (6e-5, 10.0, 0.01, 1500)
    assert d.model.backbone == "mit_b5" and d.data.recipe == "daformer" and d.data.crop_size == (512, 512)
    h = config.preset("hrda_gta2cs")
    assert (h.seed, h.hrda.enabled, h.rcs.min_crop_ratio, h.uda.pseudo_ignore_bottom) == (1, True, 2.0, 0)
    assert h.data.recipe == "hrda" and h.max_iters == 40000 and h.data.crop_size == (1024, 1024)
    assert h.hrda.hr_loss_weight == 0.1 and h.hrda.hr_crop_size == 512
    m = config.preset("mic_hrda_gta2cs")
    assert (m.seed, m.uda.mic_lambda, m.uda.mic_mask_ratio, m.uda.mic_block_size) == (2, 1.0, 0.7, 64)
    assert config.preset("daformer_synthia2cs").data.source == "synthia"
    assert config.preset("source_only_gta2cs").uda.mode == "source_only"
    assert set(config.PRESETS) >= {"demo", "demo_source_only", "hrda_synthia2cs"}


def test_bad_config_errors_are_clear():
    cfg = config.preset("demo")
    with pytest.raises(KeyError, match="uda.alpha"):
        config.apply_overrides(cfg, ["uda.alpah=0.9"])
    with pytest.raises(ValueError, match="max_iters: cannot parse"):
        config.apply_overrides(cfg, ["max_iters=abc"])
    with pytest.raises(ValueError, match="daformer_gta2cs"):
        config.preset("daformer_gta2c")
    with pytest.raises(ValueError, match="key=value"):
        config.apply_overrides(cfg, ["max_iters"])
    config.apply_overrides(cfg, ["uda.alpha=0.5", "data.crop_size=(16,16)", "rcs.enabled=false", "optim.lr=1"])
    assert (cfg.uda.alpha, cfg.data.crop_size, cfg.rcs.enabled, cfg.optim.lr) == (0.5, (16, 16), False, 1.0)


def test_cli_unknown_key_suggests(capsys):
    assert train.main(["demo", "uda.pseudo_treshold=0.9"]) == 2
    assert "uda.pseudo_threshold" in capsys.readouterr().err


_SAME_PATH = pytest.mark.slow  # on synthetic data these repeat another preset's code path
PATHS = [
    ("daformer_gta2cs", []),
    pytest.param("daformer_synthia2cs", [], marks=_SAME_PATH),
    ("source_only_gta2cs", []),
    ("demo", []),
    pytest.param("demo_source_only", [], marks=_SAME_PATH),
    ("daformer_gta2cs", ["uda.mic_lambda=1.0"]),  # MIC on DAFormer
]


IDS = ["daformer_gta2cs", "daformer_synthia2cs", "source_only_gta2cs", "demo", "demo_source_only",
       "daformer_gta2cs+mic"]


@pytest.mark.parametrize("name,extra", PATHS, ids=IDS)
def test_preset_code_path_three_iterations(name, extra, tmp_path):
    cfg = tiny(name, *extra)
    result = train.train(cfg, tmp_path, progress=False)
    assert result["iteration"] == 3
    records = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    losses = [r for r in records if "loss" in r]
    assert len(losses) == 3 and all(torch.isfinite(torch.tensor(r["loss"])) for r in losses)
    if cfg.uda.mode == "dacs":
        assert "loss_mix" in losses[-1] and "pseudo_weight" in losses[-1]
        assert ("loss_fd" in losses[-1]) == (cfg.uda.fd_lambda > 0)
        assert ("loss_mic" in losses[-1]) == (cfg.uda.mic_lambda > 0)
    else:
        assert "loss_mix" not in losses[-1]
    assert "eval" in records[-1] and 0 <= records[-1]["eval"]["mIoU"] <= 100  # percent
    assert (tmp_path / "latest.pt").is_file()


@pytest.mark.parametrize("name", ["hrda_gta2cs", "mic_hrda_gta2cs"])
def test_hrda_code_path_three_iterations(name, tmp_path):
    pytest.importorskip("fastuda.models.hrda")
    cfg = tiny(name, "data.synthetic_size=64", "hrda.hr_crop_size=32", "uda.mic_block_size=16")
    assert train.train(cfg, tmp_path, progress=False)["iteration"] == 3
    last = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines() if '"loss"' in line][-1]
    assert "loss_fd" in last and "loss_mix" in last and ("loss_mic" in last) == (cfg.uda.mic_lambda > 0)


def assert_same_networks(straight: dict, resumed: dict) -> None:
    """The student and teacher of two ``train`` results are equal bit for bit."""
    for key in ("student", "teacher"):
        a, b = straight[key].state_dict(), resumed[key].state_dict()
        for name in a:
            torch.testing.assert_close(b[name], a[name], rtol=0, atol=0, msg=f"{key}.{name}")


def test_resume_equals_straight_run(tmp_path):
    cfg = tiny("daformer_gta2cs", "max_iters=4", "uda.jitter_prob=1.0", "uda.blur_prob=1.0")
    straight = train.train(cfg, tmp_path / "a", progress=False)
    first = train.train(tiny("daformer_gta2cs", "max_iters=4", "uda.jitter_prob=1.0", "uda.blur_prob=1.0"),
                        tmp_path / "b", progress=False, max_iters=2)  # fmt: skip
    assert first["iteration"] == 2
    resumed = train.train(None, tmp_path / "b", resume=tmp_path / "b" / "latest.pt", progress=False)
    assert resumed["iteration"] == 4
    assert_same_networks(straight, resumed)


def test_checkpoint_contents_and_atomic_write(tmp_path):
    cfg = tiny("demo", "max_iters=1")
    train.train(cfg, tmp_path, progress=False)
    state = torch.load(tmp_path / "latest.pt", weights_only=False)
    assert {"student", "teacher", "optimizer", "scheduler", "rng", "iteration", "config"} <= set(state)
    assert state["iteration"] == 1 and config.from_dict(state["config"]) == cfg
    assert not [p for p in tmp_path.iterdir() if ".tmp" in p.name]


def test_uda_step_logs_and_per_term_backward():
    """Logs stay tensors and every term reaches the gradients (the sync-free proof of the step
    is tests/test_uda.py's detector, which fails on a planted sync)."""
    cfg = tiny("daformer_gta2cs")
    model = build_segmentor(cfg)
    from fastuda.uda import make_imnet_encoder, make_teacher

    teacher, imnet = make_teacher(model), make_imnet_encoder(model.backbone)
    src, tgt = build_train_datasets(cfg)
    batch = {"source": {k: torch.stack([src[i][k] for i in range(2)]) for k in ("image", "label")},
             "target": {"image": torch.stack([tgt[i]["image"] for i in range(2)])}}  # fmt: skip
    g = torch.Generator().manual_seed(0)
    loss, logs = uda_step(StepState(model, teacher, g, imnet), batch, cfg, 0)
    assert all(isinstance(v, torch.Tensor) and not v.requires_grad for v in logs.values())
    torch.testing.assert_close(loss, logs["loss_src"] + logs["loss_fd"] + logs["loss_mix"])
    assert all(p.grad is not None for p in model.decode_head.parameters() if p.requires_grad)


def test_cli_two_iterations_on_fake_released_datasets(tmp_path, capsys):
    from fastuda.data import _fake

    gta = _fake.write_fake_gta(tmp_path / "gta", count=3)
    cs = _fake.write_fake_cityscapes(tmp_path / "cityscapes")
    out = tmp_path / "run"
    args = ["daformer_gta2cs", f"data.source_root={gta}", f"data.target_root={cs}", "data.resize=(128,64)",
            "data.crop_size=(32,32)", "data.workers=0", "model.backbone=mit_demo", "model.pretrained=None",
            "uda.fd_lambda=0",
            "rcs.min_pixels=0", "uda.pseudo_ignore_top=2", "uda.pseudo_ignore_bottom=4", "max_iters=2",
            "log_interval=1", "--out", str(out), "--no-progress"]  # fmt: skip
    assert train.main(args) == 0
    assert "mIoU" in capsys.readouterr().out
    from fastuda import evaluate

    assert evaluate.main([str(out / "latest.pt")]) == 0
    assert "whole image" in capsys.readouterr().out
    assert evaluate.main([str(out / "latest.pt"), "--crop", "64", "64"]) == 0
    assert "slide 64x64 stride 32x32" in capsys.readouterr().out


def test_synthetic_domains_share_layouts_not_looks():
    from fastuda.data.synthetic import NUM_CLASSES, SyntheticScenes, make_scene

    src, tgt = SyntheticScenes("source", 16, 32), SyntheticScenes("target", 16, 32)
    assert src.images.shape == (16, 3, 32, 32) and int(src.labels.max()) < NUM_CLASSES
    a, _ = make_scene("source", 3, 32)
    b, _ = make_scene("source", 3, 32)
    assert torch.equal(a, b)  # a pure function of (seed, domain, index)
    def share(d):
        return torch.bincount(d.labels.flatten(), minlength=NUM_CLASSES).double() / d.labels.numel()

    assert (share(src) - share(tgt)).abs().max() < 0.1  # same layout statistics
    for c in range(NUM_CLASSES):  # different appearance
        mean_s = src.images.permute(0, 2, 3, 1)[src.labels == c].mean(0)
        mean_t = tgt.images.permute(0, 2, 3, 1)[tgt.labels == c].mean(0)
        assert (mean_s - mean_t).abs().max() > 0.1


def test_demo_runner_tiny(tmp_path, capsys):
    from fastuda import train_demo

    args = ["--iters", "2", "--out", str(tmp_path), "data.synthetic_size=32", "data.synthetic_samples=4",
            "data.batch_size=2", "log_interval=1"]  # fmt: skip
    assert train_demo.main(args) == 0
    out = capsys.readouterr().out
    assert "source-only" in out and "UDA" in out and (tmp_path / "demo.png").is_file()


def test_slide_inference_averages_windows():
    from fastuda.evaluate import slide_inference

    class Pixelwise(torch.nn.Module):  # logits at stride 4 that depend on each pixel only
        def forward(self, x):
            return torch.nn.functional.avg_pool2d(x, 4)

    model, x = Pixelwise(), torch.randn(1, 3, 48, 80)
    whole = torch.nn.functional.interpolate(model(x), size=(48, 80), mode="bilinear", align_corners=False)
    torch.testing.assert_close(slide_inference(model, x, (48, 80), (48, 80)), whole)
    slid = slide_inference(model, x, (48, 48), (16, 16))  # 3 overlapping windows
    torch.testing.assert_close(slid[..., 4:44, 20:28], whole[..., 4:44, 20:28], rtol=1e-4, atol=1e-4)


def test_cli_resume(tmp_path, capsys):
    args = ["demo", "data.synthetic_size=32", "data.synthetic_samples=4", "data.batch_size=2", "max_iters=2",
            "--out", str(tmp_path), "--no-progress"]  # fmt: skip
    assert train.main(args + ["--stop-at", "1"]) == 0
    assert torch.load(tmp_path / "latest.pt", weights_only=False)["iteration"] == 1
    assert train.main(args + ["--resume"]) == 0
    assert torch.load(tmp_path / "latest.pt", weights_only=False)["iteration"] == 2
    assert train.main(args + ["--resume-from", str(tmp_path / "missing.pt")]) == 2
    assert "not found" in capsys.readouterr().err
