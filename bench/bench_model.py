"""MiT + DAFormer head: forward and forward + backward, fused ops vs the reference ops.

GPU: MiT-B5 + DAFormer at 512x512, B=2 (the DAFormer training crop), bf16
autocast. CPU: MiT-B0 at 64x64 (the path, not a speed claim).
"""

import pytest
import torch

import fastuda.ops
from fastuda.models import build_model

from .conftest import CUDA, DEVICE

BACKBONE, SIZE = ("mit_b5", 512) if CUDA else ("mit_b0", 64)


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
