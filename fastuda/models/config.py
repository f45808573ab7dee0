"""The network's configuration: which backbone and head (names from ``registry``) and HRDA's
two-scale model. Sections of the training config (``TrainConfig.model``, ``TrainConfig.hrda``),
kept with the models so that ``fastuda.models`` needs nothing of the training config. No torch
import: ``fastuda.config`` checks a config with these before anything heavy loads."""

import dataclasses

from fastuda._fields import at_least, between, field, multiple_of, one_of, optional

from .registry import BACKBONES, HEADS


@dataclasses.dataclass
class ModelConfig:
    """The segmentation network (DAFormer: MiT-B5 + DAFormer head). HRDA's two-scale
    model is ``TrainConfig.hrda`` (``build_model(cfg, hrda=...)``)."""

    backbone: str = field("mit_b5", one_of(*BACKBONES))  # encoder: MiT b0..b5 (mit_demo: the demo's), or a ResNet
    # daformer (context-aware fusion) | segformer (all-MLP) | deeplabv2 (ASPP, rates 6, 12, 18, 24) |
    # deeplabv2red (rates 6, 12: the DeepLabV2 of earlier UDA work and the published dlv2red)
    decode_head: str = field("daformer", one_of(*HEADS))
    num_classes: int = field(19, between(1, 254))  # K, the Cityscapes train ids
    drop_path_rate: float = field(0.1, between(0, 1, hi_open=True))  # stochastic depth of the last MiT block
    # head embedding width (every head: DAFormer, its HRDA scale attention, SegFormer);
    # None: DAFormer 256 (32 for mit_demo), SegFormer 768 (256 for b0)
    embed_dim: int | None = field(None, optional(at_least(1)))
    pretrained: str | None = None  # ImageNet encoder weights, e.g. pretrained/mit_b5.pth
    sync_bn: bool = False  # BatchNorm statistics over all GPUs (SyncBatchNorm; with torchrun); published: per GPU


@dataclasses.dataclass
class HRDAConfig:
    """Multi-resolution training (HRDA), the one home of its keys: read by ``build_model``
    (the architecture) and by training. The context crop is the training crop at 0.5
    (fixed: the fused scale_fusion kernel upsamples by 2)."""

    enabled: bool = False  # context + detail crops with learned scale attention
    hr_crop_size: int = field(512, multiple_of(8))  # side of the (square) detail crop from the full-resolution crop
    hr_loss_weight: float = field(0.1, between(0, 1))  # lambda_d: weight of the detail crop's own loss
    crop_coord_divisible: int = field(8, multiple_of(8))  # detail crop offsets are multiples of this
    # ablation: a constant scale attention instead of the learned one (None: learned, as published)
    fixed_attention: float | None = field(None, optional(between(0, 1)))
