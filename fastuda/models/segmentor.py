"""The segmentor: an encoder, a decode head, logits at the head's stride."""

from collections.abc import Sequence

import timm
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


class TimmResNet(nn.Module):
    """A timm ResNet as a dilated encoder (output stride 8), returning its last feature map."""

    def __init__(self, name: str = "resnet101", output_stride: int = 8):
        super().__init__()
        self.body = timm.create_model(name, pretrained=False, features_only=True, output_stride=output_stride,
                                      out_indices=(4,))  # fmt: skip
        self.out_channels = self.body.feature_info.channels()

    def forward(self, img: torch.Tensor) -> list[torch.Tensor]:
        return self.body(img)


# The published DeepLabV2 ResNets have no stochastic depth: model.drop_path_rate is MiT's alone.
def resnet50(drop_path_rate: float = 0.0) -> TimmResNet: return TimmResNet("resnet50")  # noqa: E704
def resnet101(drop_path_rate: float = 0.0) -> TimmResNet: return TimmResNet("resnet101")  # noqa: E704
