"""Checkpoints in the layouts users have, written by the tests: fastuda.train's, and the released
DAFormer / HRDA / MIC files (mmseg's runner format), around tiny networks with random weights."""

import random

import torch

from fastuda.config import PRESETS, apply_overrides, load_config, to_dict
from fastuda.models.checkpoint_format import FORMAT
from fastuda.runtime.build import build_segmentor
from fastuda.runtime.checkpoint import rng_state

NETWORKS = {
    # DAFormer head on the demo MiT, 6 synthetic classes, whole-image inference
    "daformer": ["demo"],
    # HRDA (two-scale, 64 px detail crops slid with stride 32), 19 classes (label-id PNGs too)
    # the same with the 19 Cityscapes classes (a released DAFormer at a tiny size)
    "daformer19": ["demo", "model.num_classes=19"],
    "hrda": ["demo", "hrda.enabled=true", "hrda.hr_crop_size=64", "model.num_classes=19"],
}


def network(kind):
    if kind == "daformer":
        cfg = load_config(NETWORKS[kind][0], NETWORKS[kind][1:])
    else:  # 19 classes on the 6-class synthetic scenes: a network for predict, which does not validate
        cfg = apply_overrides(PRESETS[NETWORKS[kind][0]](), NETWORKS[kind][1:])  # a checkpoint's training data
    torch.manual_seed(1)
    model = build_segmentor(cfg, pretrained=False)
    with torch.no_grad():  # BatchNorm statistics away from 0 / 1, so that a missed buffer shows
        for name, buffer in model.named_buffers():
            if name.endswith(("running_mean", "running_var")):
                buffer.copy_(torch.rand_like(buffer) + (0.5 if name.endswith("var") else -0.5))
    return cfg, model.eval()


def write_fastuda(path, cfg, model):
    """What fastuda.train's checkpoint() writes (NumPy and Python RNG states included)."""
    opt = torch.optim.AdamW(model.parameters())
    teacher = {k: v + 1 for k, v in model.state_dict().items()}
    torch.save({"student": model.state_dict(), "teacher": teacher, "imnet": None, "optimizer": opt.state_dict(),
                "scheduler": {"last_epoch": 3}, "rng": rng_state(torch.Generator()), "iteration": 3,
                "config": to_dict(cfg), "format": FORMAT}, path)  # fmt: skip
    random.random()  # the rng state above is a snapshot, not a reference
    return path


def write_released(path, model, classes=None):
    """mmseg's runner checkpoint of a DAFormer / HRDA / MIC run: the student, the EMA teacher
    and the frozen ImageNet encoder under their prefixes, plus meta and an optimiser."""
    state = {}
    for prefix, delta in (("model", 0.0), ("ema_model", 1.0)):
        state.update({f"{prefix}.{k}": v + delta for k, v in model.state_dict().items()})
    state.update({f"imnet_model.{k}": v for k, v in model.state_dict().items() if k.startswith("backbone.")})
    meta = {"mmseg_version": "0.16.0+e6f6e04", "config": "norm_cfg = dict(type='BN')\n...", "iter": 40000,
            "CLASSES": classes, "PALETTE": [[128, 64, 128]] * len(classes or ())}  # fmt: skip
    torch.save({"meta": meta, "state_dict": state, "optimizer": {"state": {}, "param_groups": []}}, path)
    return path


