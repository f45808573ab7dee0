"""fastuda.ops.pseudo_label: DACS pseudo-labels with confidence weighting."""

import torch
from torch import Tensor

from . import reference
from ._backend import launch, use_triton
from ._checks import FLOAT_DTYPES, check_bhw, check_int, check_tensor

WEIGHT_MODES = ("batch", "image")
_MASK_DTYPES = (torch.bool, torch.uint8, *FLOAT_DTYPES)


@torch.library.custom_op("fastuda::pseudo_label", mutates_args=())
def _pseudo_label(
    logits: Tensor,
    threshold: float,
    ignore_top: int,
    ignore_bottom: int,
    weight_mode: str,
    valid_mask: Tensor | None,
) -> tuple[Tensor, Tensor]:
    if use_triton(logits.device):  # the launcher takes the mode as a flag, per_image
        args = (logits, threshold, ignore_top, ignore_bottom, weight_mode == "image", valid_mask)
        return launch("pseudo_label.pseudo_label_fwd", logits.device, *args)
    return reference.pseudo_label(logits, threshold, ignore_top, ignore_bottom, weight_mode, valid_mask)


@_pseudo_label.register_fake
def _(logits, threshold, ignore_top, ignore_bottom, weight_mode, valid_mask):
    B, _, H, W = logits.shape
    return logits.new_empty((B, H, W), dtype=torch.int64), logits.new_empty((B, H, W), dtype=torch.float32)


def pseudo_label(
    logits: Tensor,
    threshold: float = 0.968,
    ignore_top: int = 0,
    ignore_bottom: int = 0,
    weight_mode: str = "batch",
    valid_mask: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Pseudo-labels and their confidence weight from teacher logits.

    Args:
        logits: (B, C, H, W) float16 / bfloat16 / float32 / float64 teacher
            logits, already at label resolution. Not differentiated.
        threshold: tau in (0, 1]; a pixel is confident when its max softmax
            probability is >= tau (DACS / DAFormer: 0.968).
        ignore_top, ignore_bottom: rows [0, ignore_top) and the last
            ignore_bottom rows get weight 0 (DAFormer: 15 and 120 at a 512 crop).
        weight_mode: "batch" (published): the fraction of confident pixels over
            all B*H*W pixels, ONE value for the batch. "image": that fraction per
            image (the paper's formula).
        valid_mask: optional (B, H, W) bool / uint8 / float mask multiplied into
            the weight (HRDA / MIC's valid_pseudo_mask).

    Returns:
        label: (B, H, W) int64 argmax over C (first index on ties).
        weight: (B, H, W) float32. Low-confidence pixels keep the weight of
            their image / batch, as published; they are not ignored.

    The softmax runs in float32 (float64 for float64 logits). No host sync.
    """
    check_tensor("logits", logits, 4, "(B, C, H, W)", FLOAT_DTYPES)
    if logits.shape[1] == 0:
        raise ValueError("logits must have at least one class (C >= 1), got shape " f"{tuple(logits.shape)}")
    H = logits.shape[2]
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)):
        raise TypeError(f"threshold must be a float in (0, 1], got {type(threshold).__name__}")
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"threshold must be in (0, 1], got {threshold}")
    check_int("ignore_top", ignore_top, 0, H)
    check_int("ignore_bottom", ignore_bottom, 0, H)
    if weight_mode not in WEIGHT_MODES:
        raise ValueError(f"weight_mode must be one of {WEIGHT_MODES}, got {weight_mode!r}")
    if valid_mask is not None:
        check_tensor("valid_mask", valid_mask, 3, "(B, H, W)", _MASK_DTYPES)
        check_bhw("valid_mask", valid_mask, logits)
    return torch.ops.fastuda.pseudo_label(
        logits.detach(), float(threshold), ignore_top, ignore_bottom, weight_mode, valid_mask
    )
