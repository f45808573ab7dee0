"""The segmentor: an encoder, a decode head, logits at the head's stride."""

from collections.abc import Sequence

import torch
from torch import nn


class EncoderDecoder(nn.Module):
    """``backbone`` (image -> list of feature maps) followed by ``decode_head``
    (features -> logits). The attribute names are mmseg's, so released
    checkpoints map onto this module key for key."""

    def __init__(self, backbone: nn.Module, decode_head: nn.Module):
        super().__init__()
        self.backbone = backbone
        self.decode_head = decode_head

    def extract_features(self, img: torch.Tensor) -> Sequence[torch.Tensor]:
        return self.backbone(img)

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) normalised image -> (B, num_classes, H/4, W/4) logits
        (H/8 for DeepLabV2)."""
        return self.decode_head(self.extract_features(img))
