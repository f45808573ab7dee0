"""fastuda.ops.weighted_cross_entropy: the pixel-weighted DACS segmentation loss."""

import torch
from torch import Tensor

from . import reference
from ._backend import dispatch
from ._checks import FLOAT_DTYPES, check_bhw, check_int, check_labels, check_tensor


@torch.library.custom_op("fastuda::weighted_cross_entropy", mutates_args=())
def _weighted_cross_entropy(logits: Tensor, target: Tensor, weight: Tensor | None, ignore_index: int) -> Tensor:
    args = (logits, target, weight, ignore_index)
    return dispatch(logits.device, "cross_entropy.cross_entropy_fwd", reference.weighted_cross_entropy, *args)


@_weighted_cross_entropy.register_fake
def _(logits, target, weight, ignore_index):
    return logits.new_empty((), dtype=torch.float64 if logits.dtype == torch.float64 else torch.float32)


@torch.library.custom_op("fastuda::weighted_cross_entropy_backward", mutates_args=())
def _weighted_cross_entropy_backward(
    grad_loss: Tensor, logits: Tensor, target: Tensor, weight: Tensor | None, ignore_index: int
) -> Tensor:
    args = (grad_loss, logits, target, weight, ignore_index)
    return dispatch(logits.device, "cross_entropy.cross_entropy_bwd", reference.weighted_cross_entropy_backward, *args)


@_weighted_cross_entropy_backward.register_fake
def _(grad_loss, logits, target, weight, ignore_index):
    return torch.empty_like(logits, memory_format=torch.contiguous_format)


def _setup_context(ctx, inputs, output):
    logits, target, weight, ignore_index = inputs
    ctx.save_for_backward(logits, target, weight)
    ctx.ignore_index = ignore_index


def _backward(ctx, grad_loss):
    logits, target, weight = ctx.saved_tensors
    grad = None
    if ctx.needs_input_grad[0]:
        grad = torch.ops.fastuda.weighted_cross_entropy_backward(grad_loss, logits, target, weight, ctx.ignore_index)
    return grad, None, None, None


_weighted_cross_entropy.register_autograd(_backward, setup_context=_setup_context)


def weighted_cross_entropy(
    logits: Tensor,
    target: Tensor,
    weight: Tensor | None = None,
    ignore_index: int = 255,
) -> Tensor:
    """Pixel-weighted cross-entropy, averaged over ALL pixels (published reduction).

    loss = sum_p weight_p * CE(logits_p, target_p) / (B * H * W), where an
    ignored pixel adds 0 but still counts in the denominator, as in mmseg's
    ``F.cross_entropy(reduction="none", ignore_index=255) * weight`` then
    ``.mean()``. Resize the logits to the label size first (DAFormer does,
    bilinear, align_corners=False).

    Args:
        logits: (B, C, H, W) float16 / bfloat16 / float32 / float64.
        target: (B, H, W) int64 in [0, C) or ``ignore_index``.
        weight: (B, H, W) floating per-pixel weight, or None for ones (source
            pixels). Not differentiated.
        ignore_index: label that contributes no loss (255).

    Returns:
        0-d float32 loss (float64 for float64 logits); the gradient flows to
        ``logits`` only. The backward recomputes the softmax; nothing of size
        (B, C, H, W) is saved besides the logits themselves.
    """
    check_tensor("logits", logits, 4, "(B, C, H, W)", FLOAT_DTYPES)
    C = logits.shape[1]
    if C == 0:
        raise ValueError(f"logits must have at least one class (C >= 1), got shape {tuple(logits.shape)}")
    check_tensor("target", target, 3, "(B, H, W)", (torch.int64,))
    check_bhw("target", target, logits)
    if weight is not None:
        check_tensor("weight", weight, 3, "(B, H, W)", FLOAT_DTYPES)
        check_bhw("weight", weight, logits)
        weight = weight.detach()
    check_int("ignore_index", ignore_index)
    check_labels("target", target, C, ignore_index)
    return torch.ops.fastuda.weighted_cross_entropy(logits, target, weight, ignore_index)
