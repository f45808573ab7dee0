"""Inference over a whole image: one forward, or mmseg's ``slide_inference`` over crop windows."""

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .hrda import paste_average, sliding_windows


def forward_full(model: nn.Module, image: Tensor) -> Tensor:
    """Logits at the input size (HRDA: its own two-scale inference)."""
    if hasattr(model, "forward_pseudo"):
        return model.forward_pseudo(image)
    return F.interpolate(model(image), size=image.shape[-2:], mode="bilinear", align_corners=False)


@torch.no_grad()
def slide_inference(model: nn.Module, image: Tensor, crop: tuple[int, int], stride: tuple[int, int]) -> Tensor:
    """Logits (B, K, H, W) averaged over crop windows (mmseg ``slide_inference``), all
    windows of an image in one batched call."""
    B, _, H, W = image.shape
    boxes = sliding_windows(H, W, tuple(crop), tuple(stride))
    windows = torch.cat([image[:, :, y0:y1, x0:x1] for y0, y1, x0, x1 in boxes])  # (n*B, 3, ch, cw)
    return paste_average(forward_full(model, windows).float(), boxes, B, (H, W))


@torch.no_grad()
def predict(model: nn.Module, image: Tensor, out_size=None, crop=None, stride=None) -> Tensor:
    """Predicted classes (B, H, W) at ``out_size`` (default: the image's); whole image, or
    slide windows of ``crop`` with ``stride`` (default: the crop)."""
    if crop is not None:
        logits = slide_inference(model, image, crop, stride or crop)
    else:
        logits = forward_full(model, image)
    if out_size is not None and tuple(logits.shape[-2:]) != tuple(out_size):
        logits = F.interpolate(logits.float(), size=out_size, mode="bilinear", align_corners=False)
    return logits.argmax(1)
