"""Decode heads: DAFormer's context-aware fusion, SegFormer's all-MLP head, DeepLabV2's ASPP.

DAFormer: Hoyer et al., "DAFormer: Improving Network Architectures and Training
Strategies for Domain-Adaptive Semantic Segmentation", CVPR 2022.
SegFormer: Xie et al., "SegFormer: Simple and Efficient Design for Semantic
Segmentation with Transformers", NeurIPS 2021.
DeepLabV2: Chen et al., "DeepLab: Semantic Image Segmentation with Deep
Convolutional Nets, Atrous Convolution, and Fully Connected CRFs", TPAMI 2018.

Every head takes the encoder's list of feature maps (strides 4, 8, 16, 32) and
returns logits at stride 4 (DeepLabV2: at its single input's stride). Module
names match mmseg's (``embed_layers``, ``fuse_layer``, ``conv_seg``,
``linear_c``, ``linear_fuse``, ``linear_pred``, ``aspp_modules``) so that the
released checkpoints load with only the ``decode_head.`` prefix removed.
"""

import re
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ._blocks import ConvBNReLU, LinearEmbed, SeparableConvBNReLU, init_classifier


def _resize_to(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    if tuple(x.shape[2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


class SeparableASPP(nn.Module):
    """ASPP without the image-pooling branch (DAFormer's fusion, ``pool=False``):
    a 1x1 ConvBNReLU at dilation 1, depthwise-separable 3x3 at the others, the
    branches concatenated, then a 3x3 ConvBNReLU ``bottleneck``."""

    def __init__(self, in_channels: int, channels: int, dilations: Sequence[int] = (1, 6, 12, 18)):
        super().__init__()
        self.aspp_modules = nn.ModuleList(
            ConvBNReLU(in_channels, channels, 1) if d == 1 else SeparableConvBNReLU(in_channels, channels, dilation=d)
            for d in dilations
        )
        self.bottleneck = ConvBNReLU(len(dilations) * channels, channels, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bottleneck(torch.cat([branch(x) for branch in self.aspp_modules], dim=1))


class DAFormerHead(nn.Module):
    """Context-aware feature fusion decoder (DAFormer, Sec. 3.2 / Fig. 3).

    Each level is embedded to ``embed_dim`` by a Linear layer (no norm, no
    activation) and resized bilinearly to stride 4; the concatenation goes
    through the separable ASPP fusion, Dropout2d(0.1) and a 1x1 classifier.
    """

    def __init__(
        self,
        in_channels: Sequence[int] = (64, 128, 320, 512),
        num_classes: int = 19,
        *,
        embed_dim: int = 256,  # embedding width per level (DAFormer: 256)
        channels: int = 256,  # fusion width
        dilations: Sequence[int] = (1, 6, 12, 18),  # ASPP rates of the fusion
        dropout: float = 0.1,
        fusion: str = "aspp",  # "aspp" (DAFormer) or "conv" (a 1x1 ConvBNReLU: HRDA's scale-attention head)
    ):
        super().__init__()
        if fusion not in ("aspp", "conv"):
            raise ValueError(f"fusion must be 'aspp' or 'conv', got {fusion!r}")
        self.embed_layers = nn.ModuleDict({str(i): LinearEmbed(c, embed_dim) for i, c in enumerate(in_channels)})
        fused_channels = embed_dim * len(in_channels)
        if fusion == "aspp":
            self.fuse_layer = SeparableASPP(fused_channels, channels, dilations)
        else:
            self.fuse_layer = ConvBNReLU(fused_channels, channels, 1)
        self.dropout = nn.Dropout2d(dropout)
        self.conv_seg = nn.Conv2d(channels, num_classes, 1)
        init_classifier(self.conv_seg)

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        size = features[0].shape[2:]
        embedded = [_resize_to(self.embed_layers[str(i)](f), size) for i, f in enumerate(features)]
        x = self.fuse_layer(torch.cat(embedded, dim=1))  # (B, channels, H/4, W/4)
        return self.conv_seg(self.dropout(x))


class SegFormerHead(nn.Module):
    """SegFormer's all-MLP decoder: Linear embedding of each level to ``embed_dim``,
    resize to stride 4, concatenate (shallowest level first: DAFormer's published head; see
    ``FUSE_ORDER``), 1x1 ConvBNReLU fuse, Dropout2d, 1x1 classifier."""

    def __init__(
        self,
        in_channels: Sequence[int] = (64, 128, 320, 512),
        num_classes: int = 19,
        *,
        embed_dim: int = 768,  # SegFormer-B5: 768 (B0: 256)
        dropout: float = 0.1,
    ):
        super().__init__()
        self.linear_c = nn.ModuleDict({str(i): LinearEmbed(c, embed_dim) for i, c in enumerate(in_channels)})
        self.linear_fuse = ConvBNReLU(embed_dim * len(in_channels), embed_dim, 1)
        self.dropout = nn.Dropout2d(dropout)
        self.linear_pred = nn.Conv2d(embed_dim, num_classes, 1)
        init_classifier(self.linear_pred)

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        size = features[0].shape[2:]
        embedded = [_resize_to(self.linear_c[str(i)](f), size) for i, f in enumerate(features)]
        # shallowest level first, as the published DAFormer / HRDA / MIC segformer_head.py does (so their
        # weights load with only a prefix change). NVlabs' SegFormer and transformers concatenate deepest
        # first: their fuse conv's input blocks are reversed on load / export (segformer_head_keys below).
        return self.linear_pred(self.dropout(self.linear_fuse(torch.cat(embedded, dim=1))))


class _ASPPBranch(nn.Module):
    """One dilated 3x3 conv with bias (mmcv ConvModule without norm / act: key ``conv``).
    Initialised normal(0, 0.01), zero bias: the published DeepLabV2 config's
    ``init_cfg=dict(type='Normal', std=0.01, override=dict(name='aspp_modules'))``."""

    def __init__(self, in_channels: int, num_classes: int, dilation: int):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, num_classes, 3, padding=dilation, dilation=dilation)
        init_classifier(self.conv)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class DeepLabV2Head(nn.Module):
    """DeepLabV2's ASPP classifier: the sum of dilated 3x3 convs (rates 6, 12, 18, 24)
    straight to the classes, on the last feature map only."""

    def __init__(self, in_channels: int = 2048, num_classes: int = 19, *, dilations: Sequence[int] = (6, 12, 18, 24)):
        super().__init__()
        self.aspp_modules = nn.ModuleList(_ASPPBranch(in_channels, num_classes, d) for d in dilations)

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        x = features[-1]
        return torch.stack([branch(x) for branch in self.aspp_modules]).sum(0)


# ----------------------------------------------------------------------------- checkpoint remapping
# The SegFormer head of other layouts into SegFormerHead's keys and fuse order (files are read
# and their layouts detected in ``checkpoint.py``; transformers' keys: ``mix_transformer``).

# fastuda's SegFormerHead input order of the fuse conv: the published DAFormer head's.
FUSE_ORDER = "shallowest first"
FUSE_KEY = "decode_head.linear_fuse.conv.weight"


def reverse_fuse_blocks(weight: torch.Tensor, levels: int) -> torch.Tensor:
    """The SegFormer head's fuse conv ``weight`` (out, levels * embed, 1, 1) with its input-channel
    blocks, one per level, in the other order (shallowest first <-> deepest first; its own inverse)."""
    if levels < 1 or weight.shape[1] % levels:
        raise ValueError(f"fuse conv weight {tuple(weight.shape)} has no {levels} equal input blocks")
    return torch.cat(list(weight.chunk(levels, dim=1))[::-1], dim=1)


def fuse_levels(state: dict) -> int:
    """How many levels a SegFormer head state dict (fastuda keys) embeds."""
    return sum(1 for k in state if re.fullmatch(r"decode_head\.linear_c\.\d+\.proj\.weight", k))


def segformer_head_keys(state: dict) -> dict:
    """An mmseg-style state dict (``backbone.*``, ``decode_head.*``) with a SegFormer head in
    fastuda's keys and order. The published DAFormer head (``linear_c.0..3``) is fastuda's already;
    NVlabs' SegFormer (``linear_c1..4``) concatenates deepest first (``torch.cat([_c4, _c3, _c2,
    _c1])``), so its fuse conv's blocks are reversed. Both heads inherit mmseg's ``conv_seg``, which
    their forward never uses: dropped. Any other state dict is returned as it is."""
    if "decode_head.linear_pred.weight" not in state:
        return state
    out = {}
    for key, value in state.items():
        if key.startswith("decode_head.conv_seg."):
            continue
        if m := re.fullmatch(r"decode_head\.linear_c([1-9])\.(.+)", key):
            key = f"decode_head.linear_c.{int(m.group(1)) - 1}.{m.group(2)}"
        out[key] = value
    if FUSE_KEY in out and any(re.match(r"decode_head\.linear_c[1-9]\.", k) for k in state):
        out[FUSE_KEY] = reverse_fuse_blocks(out[FUSE_KEY], fuse_levels(out))
    return out


# ----------------------------------------------------------------------------- constructors
# (``registry.HEADS``): every head from the encoder's channels, the classes and model.embed_dim


def daformer_width(embed_dim: int | None, backbone: str) -> int:
    """DAFormer head width (its HRDA scale attention's too): model.embed_dim, else 256 (32 for the demo)."""
    return embed_dim or (32 if backbone == "mit_demo" else 256)


def daformer_head(in_channels: Sequence[int], num_classes: int, *, embed_dim: int | None = None,
                  backbone: str = "") -> DAFormerHead:  # fmt: skip
    width = daformer_width(embed_dim, backbone)
    return DAFormerHead(in_channels, num_classes, embed_dim=width, channels=width)


def segformer_head(in_channels: Sequence[int], num_classes: int, *, embed_dim: int | None = None,
                   backbone: str = "") -> SegFormerHead:  # fmt: skip
    # SegFormer's published widths: 768 for B1..B5, 256 for B0
    return SegFormerHead(in_channels, num_classes, embed_dim=embed_dim or (256 if backbone == "mit_b0" else 768))


# DeepLabV2's ASPP rates: the paper's four, and the two that earlier UDA work uses (AdaptSegNet's code
# returns inside its loop over the rates), as the published dlv2red config does (HRDA experiment 41)
DLV2_DILATIONS = {"deeplabv2": (6, 12, 18, 24), "deeplabv2red": (6, 12)}


def deeplabv2_head(in_channels: Sequence[int], num_classes: int, *, embed_dim: int | None = None,
                   backbone: str = "") -> DeepLabV2Head:  # fmt: skip
    return DeepLabV2Head(in_channels[-1], num_classes)  # the last level only; no embedding (embed_dim unused)


def deeplabv2red_head(in_channels: Sequence[int], num_classes: int, *, embed_dim: int | None = None,
                      backbone: str = "") -> DeepLabV2Head:  # fmt: skip
    return DeepLabV2Head(in_channels[-1], num_classes, dilations=DLV2_DILATIONS["deeplabv2red"])
