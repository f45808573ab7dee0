"""scale_fusion (HRDA's scale-attention fusion): forward, and forward + backward.

Shapes (GPU), class-wise attention as in HRDA:

* ``train``: the training step. A 1024 crop gives stride-4 logits of 256 x 256:
  the context branch (the crop at half resolution) has lr / attention of
  (2, 19, 128, 128), fused x2 to (2, 19, 256, 256); the 512 detail crop gives a
  128-wide hr box (2, 19, 128, 128) at (64:192, 32:160).
* ``train-lr256``: the same with lr at (2, 19, 256, 256), fused to 512 x 512,
  and a 128-wide box (the other reading of "(2, 19, 256, 256) upsampled x2").
* ``train-offset``, ``train-lr256-offset``: the same with the box at HRDA's more common
  origins (multiples of 8 image pixels are 2 logits here: 3 boxes in 4 miss the 16-byte bf16
  alignment that takes the forward's vector hr loads).
* ``pseudo``: the teacher's pseudo-labels. The 9 slid 512 detail crops,
  averaged, cover the whole 1024 crop: hr (2, 19, 256, 256), no box; forward
  only (no gradient flows to the teacher).

GB/s counts each tensor the op must touch once: forward reads lr, attention and
hr and writes the output; backward reads the incoming gradient, lr, attention
and hr and writes the three gradients.
"""

import pytest
import torch

import fastuda.ops
from fastuda.kernels.audit import SCALE_FUSION_SHAPES
from fastuda.ops import reference

from conftest import CUDA, DEVICE, PROVIDERS

# name: (lr shape (B, C, h, w), box (y0, y1, x0, x1) in output coordinates or None): on a GPU the
# static audit's cases (what bench/gpu_check.py holds the time model to), on a CPU small ones
CASES = (
    dict(SCALE_FUSION_SHAPES)
    if CUDA
    else {
        "train": ((2, 19, 32, 32), (16, 48, 8, 40)),
        "train-offset": ((2, 19, 32, 32), (18, 50, 10, 42)),
        "pseudo": ((2, 19, 32, 32), None),
    }
)
DTYPES = [torch.float32, torch.bfloat16] if CUDA else [torch.float32]
SCALE = 2


def _reference(lr, att, hr, box):
    return reference.scale_fusion(lr, att, hr, box, SCALE)


def setup(case, dtype, provider, mode):
    """Returns (fn, bytes moved at least once). ``mode``: "forward" or "full" (fwd + bwd)."""
    (B, C, h, w), box = CASES[case]
    H, W = SCALE * h, SCALE * w
    hr_hw = (H, W) if box is None else (box[1] - box[0], box[3] - box[2])
    lr = torch.randn(B, C, h, w, device=DEVICE).mul_(2).to(dtype)
    att = torch.rand(B, C, h, w, device=DEVICE).to(dtype)
    hr = torch.randn(B, C, *hr_hw, device=DEVICE).mul_(2).to(dtype)
    box_t = None if box is None else torch.tensor(box, device=DEVICE)
    if provider == "fastuda":
        fused = lambda *x: fastuda.ops.scale_fusion(*x, box_t, SCALE)  # noqa: E731
    elif provider == "reference":
        fused = lambda *x: _reference(*x, box_t)  # noqa: E731
    else:
        compiled = torch.compile(_reference, dynamic=False)
        fused = lambda *x: compiled(*x, box_t)  # noqa: E731
    size = dtype.itemsize
    in_bytes = (lr.numel() + att.numel() + hr.numel()) * size
    out_bytes = B * C * H * W * size
    if mode == "forward":
        return (lambda: fused(lr, att, hr)), in_bytes + out_bytes
    inputs = [x.requires_grad_() for x in (lr, att, hr)]
    grad = torch.randn(B, C, H, W, device=DEVICE).to(dtype)

    def full():
        for x in inputs:
            x.grad = None
        fused(*inputs).backward(grad)

    # forward: inputs + output; backward: grad + inputs + their gradients.
    return full, (in_bytes + out_bytes) + (out_bytes + 2 * in_bytes)


PARAMS = [(case, mode) for case in CASES for mode in (["forward"] if case == "pseudo" else ["forward", "full"])]


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize(
    "case, mode",
    PARAMS,
    ids=[f"{c}-{'x'.join(map(str, (*CASES[c][0][:2], SCALE * CASES[c][0][2], SCALE * CASES[c][0][3])))}-{m}" for c, m in PARAMS],
)
def test_scale_fusion(benchmark, measure, case, mode, dtype, provider):
    (B, C, h, w), box = CASES[case]
    out = "x".join(map(str, (B, C, SCALE * h, SCALE * w)))
    benchmark.group = f"scale_fusion {case} {mode} {out} {str(dtype).removeprefix('torch.')}"
    fn, nbytes = setup(case, dtype, provider, mode)
    measure(fn, nbytes, provider=provider, mode=mode, case=case, box=str(box))
