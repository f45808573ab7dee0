"""Whole models, fused ops vs the reference ops: time and peak memory.

* MiT + DAFormer head, forward and forward + backward. GPU: MiT-B5 at 512x512,
  B=2 (the DAFormer training crop), bf16 autocast. CPU: MiT-B0 at 64x64.
* HRDA training forward + backward (context 0.5 of the crop + one detail crop,
  the 0.9 / 0.1 loss). GPU: MiT-B5, 1024 crop, 512 detail, B=2. CPU: MiT-B0,
  128 crop, 64 detail.

The CPU sizes exercise the path; they are not a speed claim.
"""

import pytest
import torch

import fastuda.ops
from fastuda.config import HRDAConfig
from fastuda.models import build_model

from conftest import CUDA, DEVICE

BACKBONE, SIZE = ("mit_b5", 512) if CUDA else ("mit_b0", 64)
HRDA_CROP, HRDA_DETAIL = (1024, 512) if CUDA else (128, 64)


def setup(provider, mode):
    """Returns (fn, info). ``provider``: "fastuda" (fused ops) or "reference"."""
    torch.manual_seed(0)
    model = build_model(backbone=BACKBONE, decode_head="daformer").to(DEVICE)
    x = torch.randn(2, 3, SIZE, SIZE, device=DEVICE)
    backend = "auto" if provider == "fastuda" else "reference"
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=CUDA)

    def forward():
        with fastuda.ops.use_backend(backend), autocast, torch.no_grad():
            model(x)

    def full():
        with fastuda.ops.use_backend(backend), autocast:
            model(x).float().mean().backward()
        model.zero_grad(set_to_none=True)

    return (forward if mode == "forward" else full), dict(backbone=BACKBONE, size=SIZE)


@pytest.mark.parametrize("provider", ["fastuda", "reference"])
@pytest.mark.parametrize("mode", ["forward", "full"])
def test_model(benchmark, measure, mode, provider):
    benchmark.group = f"model {BACKBONE}+daformer {SIZE}x{SIZE} B=2 {mode}"
    fn, info = setup(provider, mode)
    measure(fn, 0, rounds=20 if CUDA else 3, provider=provider, mode=mode, **info)


def setup_hrda(provider):
    """One HRDA training forward + backward on a labelled batch."""
    torch.manual_seed(0)
    model = build_model(backbone=BACKBONE, hrda=HRDAConfig(enabled=True, hr_crop_size=HRDA_DETAIL)).to(DEVICE)
    x = torch.randn(2, 3, HRDA_CROP, HRDA_CROP, device=DEVICE)
    label = torch.randint(0, 19, (2, HRDA_CROP, HRDA_CROP), device=DEVICE)
    backend = "auto" if provider == "fastuda" else "reference"
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=CUDA)
    gen = torch.Generator(DEVICE).manual_seed(0)  # the detail box is drawn on the device

    def step():
        with fastuda.ops.use_backend(backend), autocast:
            fused, detail, box = model.forward_train(x, gen)
            loss = model.loss(fused.float(), detail.float(), box, label)
        loss.backward()
        model.zero_grad(set_to_none=True)

    return step


@pytest.mark.parametrize("provider", ["fastuda", "reference"])
def test_hrda_train_step(benchmark, measure, provider):
    benchmark.group = f"model HRDA {BACKBONE} {HRDA_CROP} crop, {HRDA_DETAIL} detail, B=2 fwd+bwd"
    measure(setup_hrda(provider), 0, rounds=10 if CUDA else 2, provider=provider, backbone=BACKBONE)
