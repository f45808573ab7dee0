"""fastuda.ops.scale_fusion: HRDA's scale-attention fusion of context and detail logits."""

import torch
from torch import Tensor

from . import reference
from ._backend import dispatch
from ._checks import FLOAT_DTYPES, check_same_device, check_tensor, value_checks_enabled

# The Triton backward unrolls a (2 * scale)^2 gather window at compile time.
MAX_SCALE = 4


@torch.library.custom_op("fastuda::scale_fusion", mutates_args=())
def _scale_fusion(
    lr_logits: Tensor, attention: Tensor, hr_logits: Tensor, crop_box: Tensor | None, scale: int
) -> Tensor:
    args = (lr_logits, attention, hr_logits, crop_box, scale)
    return dispatch(lr_logits.device, "scale_fusion.scale_fusion_fwd", reference.scale_fusion, *args)


@_scale_fusion.register_fake
def _(lr_logits, attention, hr_logits, crop_box, scale):
    B, C, h, w = lr_logits.shape
    return lr_logits.new_empty((B, C, scale * h, scale * w))


@torch.library.custom_op("fastuda::scale_fusion_backward", mutates_args=())
def _scale_fusion_backward(
    grad: Tensor, lr_logits: Tensor, attention: Tensor, hr_logits: Tensor, crop_box: Tensor | None, scale: int
) -> tuple[Tensor, Tensor, Tensor]:
    args = (grad, lr_logits, attention, hr_logits, crop_box, scale)
    return dispatch(lr_logits.device, "scale_fusion.scale_fusion_bwd", reference.scale_fusion_backward, *args)


@_scale_fusion_backward.register_fake
def _(grad, lr_logits, attention, hr_logits, crop_box, scale):
    def like(x):
        return torch.empty_like(x, memory_format=torch.contiguous_format)

    return like(lr_logits), like(attention), like(hr_logits)


def _setup_context(ctx, inputs, output):
    lr_logits, attention, hr_logits, crop_box, scale = inputs
    ctx.save_for_backward(lr_logits, attention, hr_logits, crop_box)
    ctx.scale = scale


def _backward(ctx, grad):
    lr_logits, attention, hr_logits, crop_box = ctx.saved_tensors
    if not any(ctx.needs_input_grad[:3]):
        return None, None, None, None, None
    # One kernel gives all three gradients: the gather it shares dominates the cost.
    d_lr, d_att, d_hr = torch.ops.fastuda.scale_fusion_backward(grad, lr_logits, attention, hr_logits, crop_box, ctx.scale)
    needs = ctx.needs_input_grad
    return (d_lr if needs[0] else None), (d_att if needs[1] else None), (d_hr if needs[2] else None), None, None


_scale_fusion.register_autograd(_backward, setup_context=_setup_context)


def _same_dtype(name: str, x: Tensor, ref: Tensor) -> None:
    if x.dtype != ref.dtype:
        raise TypeError(f"{name} must have the same dtype as lr_logits ({ref.dtype}), got {x.dtype}")


def _check_box_values(box: tuple[int, ...], scale: int, out_hw: tuple[int, int], hr_hw: tuple[int, int]) -> None:
    """A known (host) box must lie in the output, be aligned to ``scale`` and match hr's size."""
    y0, y1, x0, x1 = box
    H, W = out_hw
    if not (0 <= y0 < y1 <= H and 0 <= x0 < x1 <= W):
        raise ValueError(
            f"crop_box (y0, y1, x0, x1) = {box} must satisfy 0 <= y0 < y1 <= {H} and 0 <= x0 < x1 <= {W} "
            f"(the output size scale * (h, w) = {(H, W)})"
        )
    # A box not divisible by scale is allowed: the attention is then kept on floor(box / scale)
    # of the LR grid, as HRDA's scale_box (int(y / scale)) does. HRDA on DeepLabV2 (output
    # stride 8, offsets divisible by 8) gives such boxes half of the time.
    if tuple(hr_hw) != (y1 - y0, x1 - x0):
        raise ValueError(
            f"hr_logits must have spatial size (y1 - y0, x1 - x0) = {(y1 - y0, x1 - x0)} to match crop_box {box}, "
            f"got {tuple(hr_hw)}"
        )


def _crop_box_tensor(crop_box, scale: int, lr_logits: Tensor, hr_logits: Tensor) -> Tensor:
    """Validates the box and returns it as a (4,) int64 tensor on the logits' device."""
    out_hw = (scale * lr_logits.shape[2], scale * lr_logits.shape[3])
    hr_hw = tuple(hr_logits.shape[2:])
    if isinstance(crop_box, torch.Tensor):
        if crop_box.dtype.is_floating_point or crop_box.dtype.is_complex or crop_box.dtype == torch.bool:
            raise TypeError(f"crop_box must be an integer tensor, got dtype {crop_box.dtype}")
        if crop_box.shape != (4,):
            raise ValueError(f"crop_box must have shape (4,) = (y0, y1, x0, x1), got shape {tuple(crop_box.shape)}")
        # Reading the values is a sync for a CUDA box: only where value checks run (see _checks).
        if value_checks_enabled(crop_box.device):
            _check_box_values(tuple(crop_box.tolist()), scale, out_hw, hr_hw)
        return crop_box.to(device=lr_logits.device, dtype=torch.int64).contiguous()
    if not isinstance(crop_box, (tuple, list)) or len(crop_box) != 4:
        raise TypeError(f"crop_box must be None, 4 ints (y0, y1, x0, x1) or a (4,) integer tensor, got {crop_box!r}")
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in crop_box):
        raise TypeError(f"crop_box must hold 4 ints (y0, y1, x0, x1), got {crop_box!r}")
    _check_box_values(tuple(crop_box), scale, out_hw, hr_hw)
    device = lr_logits.device
    if device.type != "cuda" or torch.compiler.is_compiling() or torch._guards.detect_fake_mode() is not None:
        return torch.tensor(crop_box, dtype=torch.int64, device=device)
    # torch.tensor(..., device="cuda") copies from pageable memory and waits for the stream
    # (a host sync per call). A pinned source copies asynchronously; the caching host
    # allocator keeps the pinned block alive until the copy has run.
    return torch.tensor(crop_box, dtype=torch.int64).pin_memory().to(device, non_blocking=True)


def scale_fusion(
    lr_logits: Tensor,
    attention: Tensor,
    hr_logits: Tensor,
    crop_box: Tensor | tuple[int, int, int, int] | None = None,
    scale: int = 2,
) -> Tensor:
    """HRDA's fusion of context (low-resolution) and detail (high-resolution) logits.

        a'    = attention, zeroed outside crop_box / scale
        fused = up((1 - a') * lr_logits) + up(a') * pad(hr_logits)

    as in HRDA's ``HRDAHead.forward`` (mmseg/models/decode_heads/hrda_head.py):
    up is bilinear with align_corners=False (``F.interpolate(scale_factor=scale)``),
    taken over the whole output; pad places hr_logits at the box and zeros
    elsewhere. HRDA: scale = 2 (context at half resolution), box = the detail
    crop at stride 4 (the image box / 4, so box / 8 on the LR grid).

    Args:
        lr_logits: (B, C, h, w) float16 / bfloat16 / float32 / float64.
        attention: (B, C, h, w) class-wise or (B, 1, h, w) scale attention,
            already in [0, 1] (HRDA: a sigmoid), same dtype and device.
        hr_logits: (B, C, y1 - y0, x1 - x0) detail logits, or (B, C, scale*h,
            scale*w) without a box (HRDA's pseudo-labels and test: the slid
            detail logits cover the whole crop).
        crop_box: (y0, y1, x0, x1) in output coordinates (the attention is kept
            on floor(box / scale) of the LR grid, as HRDA's ``scale_box``), as 4 ints or a (4,) integer tensor on any device; None:
            hr_logits covers the whole output (a' = attention). Pass a tensor
            when the box changes every step: under torch.compile a tensor box
            traces once, while Python ints are baked into the graph. A host
            box reaches a CUDA device by an asynchronous pinned copy (no sync).
        scale: the upsampling factor, an int in [1, 4].

    Returns:
        (B, C, scale*h, scale*w) fused logits, contiguous, in the inputs' dtype,
        computed in float32 (float64 for float64 inputs). Gradients flow to all
        three inputs; no upsampled intermediate is stored for the backward.

    A box outside the output or not matching hr_logits raises
    ValueError when its values are on the host (ints, or a CPU tensor); a CUDA
    box is checked only under ``set_value_checks("always")`` (a sync). An
    unchecked bad box never reads or writes out of bounds: it is clamped to the
    output, and hr pixels no output pixel reads get gradient 0.
    """
    check_tensor("lr_logits", lr_logits, 4, "(B, C, h, w)", FLOAT_DTYPES)
    B, C, h, w = lr_logits.shape
    if C == 0 or h == 0 or w == 0:
        raise ValueError(f"lr_logits must have C, h, w >= 1, got shape {tuple(lr_logits.shape)}")
    if isinstance(scale, bool) or not isinstance(scale, int):
        raise TypeError(f"scale must be an int, got {type(scale).__name__}")
    if not 1 <= scale <= MAX_SCALE:
        raise ValueError(
            f"scale must be in [1, {MAX_SCALE}] (HRDA uses 2; the Triton backward unrolls a "
            f"(2 * scale)^2 window), got {scale}"
        )
    check_tensor("attention", attention, 4, "(B, C, h, w) or (B, 1, h, w)", FLOAT_DTYPES)
    _same_dtype("attention", attention, lr_logits)
    if tuple(attention.shape) not in ((B, C, h, w), (B, 1, h, w)):
        raise ValueError(
            f"attention must have shape (B, C, h, w) = {(B, C, h, w)} or (B, 1, h, w) = {(B, 1, h, w)} "
            f"to match lr_logits, got {tuple(attention.shape)}"
        )
    check_same_device("attention", attention, "lr_logits", lr_logits)
    check_tensor("hr_logits", hr_logits, 4, "(B, C, hd, wd)", FLOAT_DTYPES)
    _same_dtype("hr_logits", hr_logits, lr_logits)
    check_same_device("hr_logits", hr_logits, "lr_logits", lr_logits)
    H, W = scale * h, scale * w
    hd, wd = hr_logits.shape[2:]
    if tuple(hr_logits.shape[:2]) != (B, C):
        raise ValueError(f"hr_logits must have (B, C) = {(B, C)} like lr_logits, got shape {tuple(hr_logits.shape)}")
    if crop_box is None:
        if (hd, wd) != (H, W):
            raise ValueError(
                f"hr_logits must cover the output, spatial size scale * (h, w) = {(H, W)}, when crop_box is None; "
                f"got {(hd, wd)}"
            )
    else:
        # Shape rules that need no box values (they hold under torch.compile too).
        if not (1 <= hd <= H and 1 <= wd <= W and hd % scale == 0 and wd % scale == 0):
            raise ValueError(
                f"hr_logits with a crop_box must have a spatial size in [1, {(H, W)}] divisible by scale={scale}, "
                f"got {(hd, wd)}"
            )
        crop_box = _crop_box_tensor(crop_box, scale, lr_logits, hr_logits)
    return torch.ops.fastuda.scale_fusion(lr_logits, attention, hr_logits, crop_box, scale)
