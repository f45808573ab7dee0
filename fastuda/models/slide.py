"""Inference over a whole image: one forward, or mmseg's ``slide_inference`` over crop windows.

The one slide implementation of the package: ``fastuda.evaluate`` uses it for every
model and ``HRDASegmentor`` for its test mode, and HRDA's detail windows use the
same grid and averaging. Published semantics (mmseg 0.16
``EncoderDecoder.slide_inference``, as HRDA and MIC run it): windows of ``crop``
every ``stride``, over the image as it is (no padding to a multiple of anything);
the last window of a row or column is shifted back to end at the border; a window
larger than the image is clipped to it ("the small patch will be used to decode
without padding"); each window's logits are summed at its place and divided by
the count of windows covering the pixel.
"""

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def sliding_windows(height: int, width: int, crop, stride) -> list[tuple[int, int, int, int]]:
    """mmseg's slide grid: windows of ``crop`` (an int or (h, w), clipped to the image) every
    ``stride`` (int or (h, w)), the last one flush with the border; (y0, y1, x0, x1) each."""
    crop_h, crop_w = (crop, crop) if isinstance(crop, int) else crop
    stride_h, stride_w = (stride, stride) if isinstance(stride, int) else stride
    crop_h, crop_w = min(crop_h, height), min(crop_w, width)
    rows = max(height - crop_h + stride_h - 1, 0) // stride_h + 1
    cols = max(width - crop_w + stride_w - 1, 0) // stride_w + 1
    boxes = []
    for r in range(rows):
        for c in range(cols):
            y1, x1 = min(r * stride_h + crop_h, height), min(c * stride_w + crop_w, width)
            boxes.append((y1 - crop_h, y1, x1 - crop_w, x1))
    return boxes


def paste_average(parts: Tensor, boxes, batch: int, size: tuple[int, int], stride: int = 1) -> Tensor:
    """Averages per-window maps into one canvas: ``parts`` (len(boxes) * batch, C, h, w) holds
    window i's map for every image at rows [i * batch, (i + 1) * batch); each box (y0, y1, x0, x1)
    is in input pixels and maps to box / stride on the (batch, C, *size) canvas. Every canvas
    pixel must be covered by some box."""
    canvas = parts.new_zeros((batch, parts.shape[1], *size))
    count = parts.new_zeros((1, 1, *size))
    for i, (y0, y1, x0, x1) in enumerate(boxes):
        rows, cols = slice(y0 // stride, y1 // stride), slice(x0 // stride, x1 // stride)
        canvas[:, :, rows, cols] += parts[i * batch : (i + 1) * batch]
        count[:, :, rows, cols] += 1
    return canvas / count


def forward_full(model: nn.Module, image: Tensor) -> Tensor:
    """Logits at the input size (HRDA: its own two-scale inference)."""
    if hasattr(model, "forward_pseudo"):
        return model.forward_pseudo(image)
    return F.interpolate(model(image), size=image.shape[-2:], mode="bilinear", align_corners=False)


def slide_inference(model: nn.Module, image: Tensor, crop, stride) -> Tensor:
    """Logits (B, K, H, W) averaged over crop windows (see the module doc), for any H, W; all
    windows of an image in one batched call (mmseg's ``batched_slide``, as HRDA configures it).
    ``crop`` and ``stride``: an int or (h, w). The result has the image's dtype (the logits' where
    those are wider: float32 logits of an autocast model on a float32 image stay float32)."""
    if image.dim() != 4:
        raise ValueError(f"image must have shape (B, 3, H, W), got {tuple(image.shape)}")
    B, _, H, W = image.shape
    boxes = sliding_windows(H, W, crop, stride)
    windows = torch.cat([image[:, :, y0:y1, x0:x1] for y0, y1, x0, x1 in boxes])  # (n*B, 3, ch, cw)
    logits = forward_full(model, windows)
    # sums of overlapping windows: at least float32 (bf16 / fp16 logits of autocast), float64 kept as it is
    summed = paste_average(logits.to(torch.promote_types(logits.dtype, torch.float32)), boxes, B, (H, W))
    return summed.to(torch.promote_types(image.dtype, logits.dtype))


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
