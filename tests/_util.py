"""Helpers shared by the op tests."""

import torch

# MiT-B5 / HRDA shapes scaled down, plus primes: batch, classes, height, width.
ODD_SHAPES = [(3, 19, 37, 53), (1, 19, 1, 97), (2, 7, 13, 1), (2, 1, 5, 11), (1, 23, 17, 29)]


def make_logits(shape, dtype=torch.float32, device="cpu", scale=4.0, generator=None):
    """Fresh random logits; ``scale`` makes the softmax peaky enough that a real
    share of pixels passes the 0.968 threshold."""
    x = torch.randn(shape, generator=generator, device=device, dtype=torch.float32) * scale
    return x.to(dtype)


def make_target(shape, num_classes, ignore_index=255, ignore_frac=0.1, device="cpu"):
    """Random labels in [0, C) with about ``ignore_frac`` pixels set to ``ignore_index``."""
    target = torch.randint(0, num_classes, shape, device=device)
    return torch.where(torch.rand(shape, device=device) < ignore_frac, ignore_index, target)


def channels_last_view(x):
    """Same values as ``x`` (B, C, H, W), non-contiguous: stored as (B, H, W, C)."""
    return x.permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2)
