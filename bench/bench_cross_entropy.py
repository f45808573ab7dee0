"""weighted_cross_entropy: forward, and forward + backward (the training cost)."""

import pytest
import torch

import fastuda.ops
from fastuda.ops import reference

from conftest import CUDA, DEVICE, PROVIDERS

SHAPES = [(2, 19, 512, 512), (2, 19, 1024, 1024)] if CUDA else [(2, 19, 64, 64), (2, 19, 128, 128)]
DTYPES = [torch.float32, torch.bfloat16] if CUDA else [torch.float32]


def _reference_loss(logits, target, weight):
    return reference.weighted_cross_entropy(logits, target, weight, 255)


def setup(shape, dtype, provider, mode):
    """Returns (fn, bytes moved at least once). ``mode``: "forward" or "full" (fwd + bwd)."""
    B, C, H, W = shape
    logits = torch.randn(shape, device=DEVICE, dtype=torch.float32).mul_(2).to(dtype)
    target = torch.randint(0, C, (B, H, W), device=DEVICE)
    target[:, :8] = 255
    weight = torch.rand(B, H, W, device=DEVICE)
    if provider == "fastuda":
        loss_fn = lambda x: fastuda.ops.weighted_cross_entropy(x, target, weight)  # noqa: E731
    elif provider == "reference":
        loss_fn = lambda x: _reference_loss(x, target, weight)  # noqa: E731
    else:
        compiled = torch.compile(_reference_loss, dynamic=False)
        loss_fn = lambda x: compiled(x, target, weight)  # noqa: E731
    pixel_bytes = B * H * W * (8 + 4)  # target + weight
    logit_bytes = logits.numel() * logits.element_size()
    if mode == "forward":
        return (lambda: loss_fn(logits)), logit_bytes + pixel_bytes
    x = logits.requires_grad_()

    def full():
        x.grad = None
        loss_fn(x).backward()

    # fwd reads the logits, bwd reads them again and writes the gradient.
    return full, 3 * logit_bytes + 2 * pixel_bytes


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("mode", ["forward", "full"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_cross_entropy(benchmark, measure, shape, dtype, mode, provider):
    benchmark.group = f"cross_entropy {mode} {'x'.join(map(str, shape))} {str(dtype).removeprefix('torch.')}"
    fn, nbytes = setup(shape, dtype, provider, mode)
    measure(fn, nbytes, provider=provider, mode=mode)
