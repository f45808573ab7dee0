"""Small building blocks shared by the decode heads.

Submodule names follow mmcv's ``ConvModule`` / ``DepthwiseSeparableConvModule``
(``conv``, ``bn``; ``depthwise_conv``, ``pointwise_conv``) and mmseg's ``MLP``
(``proj``), so released DAFormer / HRDA / MIC state dicts load unchanged.
"""

import torch
from torch import nn


class ConvBNReLU(nn.Module):
    """Conv2d -> BatchNorm2d -> ReLU, as mmcv's ConvModule with norm_cfg=BN (no conv bias)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, *, dilation: int = 1, groups: int = 1):
        super().__init__()
        padding = dilation * (kernel_size // 2)
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=padding, dilation=dilation,
                              groups=groups, bias=False)  # fmt: skip
        self.bn = nn.BatchNorm2d(out_channels)
        self.activate = nn.ReLU(inplace=True)
        init_conv(self.conv)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.activate(self.bn(self.conv(x)))


class SeparableConvBNReLU(nn.Module):
    """Depthwise 3x3 (dilated) + BN + ReLU, then pointwise 1x1 + BN + ReLU
    (mmcv's DepthwiseSeparableConvModule with norm and act on both convs)."""

    def __init__(self, in_channels: int, out_channels: int, *, dilation: int):
        super().__init__()
        self.depthwise_conv = ConvBNReLU(in_channels, in_channels, 3, dilation=dilation, groups=in_channels)
        self.pointwise_conv = ConvBNReLU(in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise_conv(self.depthwise_conv(x))


class LinearEmbed(nn.Module):
    """Per-pixel Linear projection of a feature map (mmseg's ``MLP``): (B, C, H, W) -> (B, D, H, W)."""

    def __init__(self, in_channels: int, embed_dim: int):
        super().__init__()
        self.proj = nn.Linear(in_channels, embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, _, H, W = x.shape
        x = self.proj(x.flatten(2).transpose(1, 2))  # (B, H*W, D)
        return x.transpose(1, 2).reshape(B, -1, H, W)  # (B, D, H, W)


def init_conv(conv: nn.Conv2d) -> None:
    """mmcv ConvModule's init: Kaiming normal (fan_out, ReLU gain), zero bias."""
    nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)


def init_classifier(conv: nn.Conv2d) -> None:
    """mmseg's BaseDecodeHead.init_weights: normal(0, 0.01) weight, zero bias."""
    nn.init.normal_(conv.weight, mean=0.0, std=0.01)
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)
