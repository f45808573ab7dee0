"""pseudo_label: one read of the logits, label (int64) and weight (fp32) written."""

import pytest
import torch

import fastuda.ops
from fastuda.ops import reference

from conftest import CUDA, DEVICE, PROVIDERS

SHAPES = [(2, 19, 512, 512), (2, 19, 1024, 1024)] if CUDA else [(2, 19, 64, 64), (2, 19, 128, 128)]
DTYPES = [torch.float32, torch.bfloat16] if CUDA else [torch.float32]


def setup(shape, dtype, provider):
    """Returns (fn, bytes moved at least once)."""
    B, C, H, W = shape
    logits = torch.randn(shape, device=DEVICE, dtype=torch.float32).mul_(4).to(dtype)
    # DAFormer's margins (15 / 120 rows at a 512 crop), scaled to the crop.
    ARGS = (0.968, 15 * H // 512, 120 * H // 512, "batch", None)
    if provider == "fastuda":
        fn = lambda: fastuda.ops.pseudo_label(logits, *ARGS)  # noqa: E731
    elif provider == "reference":
        fn = lambda: reference.pseudo_label(logits, *ARGS)  # noqa: E731
    else:
        compiled = torch.compile(reference.pseudo_label, dynamic=False)
        fn = lambda: compiled(logits, *ARGS)  # noqa: E731
    nbytes = logits.numel() * logits.element_size() + B * H * W * (8 + 4)
    return fn, nbytes


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_pseudo_label(benchmark, measure, shape, dtype, provider):
    benchmark.group = f"pseudo_label {'x'.join(map(str, shape))} {str(dtype).removeprefix('torch.')}"
    fn, nbytes = setup(shape, dtype, provider)
    measure(fn, nbytes, provider=provider)
