"""Masked image consistency (MIC, Hoyer et al. 2023).

Published (seg/mmseg/models/utils/masking_transforms.py ``BlockMaskGenerator``):
a (B, 1, round(H / b), round(W / b)) uniform field > mask_ratio (0.7) keeps a
block, so each b x b block (b = 64) survives with probability 0.3; the mask is
nearest-upsampled to (H, W) and multiplied into the NORMALISED image (masked
pixels become 0, the mean colour). The student learns the teacher's
pseudo-labels of the unmasked image from it, with the unmixed pseudo-weight,
lambda_MIC = 1.
"""

import torch
import torch.nn.functional as F
from torch import Tensor


def block_mask(shape: tuple[int, int, int, int], block_size: int = 64, mask_ratio: float = 0.7,
               generator: torch.Generator | None = None, device=None) -> Tensor:  # fmt: skip
    """float (B, 1, H, W) of 0 / 1: each block kept (1) with probability 1 - mask_ratio."""
    B, _, H, W = shape
    grid = (B, 1, max(round(H / block_size), 1), max(round(W / block_size), 1))
    keep = (torch.rand(grid, generator=generator, device=device) > mask_ratio).float()
    return F.interpolate(keep, size=(H, W), mode="nearest")


def mask_image(image: Tensor, block_size: int = 64, mask_ratio: float = 0.7,
               generator: torch.Generator | None = None) -> Tensor:  # fmt: skip
    """The normalised image with masked blocks set to 0."""
    return image * block_mask(image.shape, block_size, mask_ratio, generator, image.device).to(image.dtype)
