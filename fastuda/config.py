"""Typed configuration. Each field's comment gives its meaning in the papers."""

import dataclasses


@dataclasses.dataclass
class ModelConfig:
    """The segmentation network (DAFormer: MiT-B5 + DAFormer head)."""

    backbone: str = "mit_b5"  # encoder: mit_b0 .. mit_b5, or resnet101 (DeepLabV2's dilated ResNet)
    decode_head: str = "daformer"  # daformer (context-aware fusion) | segformer (all-MLP) | deeplabv2 (ASPP)
    num_classes: int = 19  # K, the Cityscapes train ids
    drop_path_rate: float = 0.1  # stochastic depth of the last MiT block (linear from 0)
    embed_dim: int | None = None  # head embedding width; None: DAFormer 256, SegFormer 768 (256 for b0)
    pretrained: str | None = None  # ImageNet encoder weights, e.g. pretrained/mit_b5.pth
    hrda: bool = False  # HRDA: context crop at 0.5 + high-resolution detail crop, fused by scale attention
    hrda_detail_crop: int = 512  # HRDA detail crop size (full-resolution pixels)
    hrda_fixed_attention: float | None = None  # HRDA ablation: a constant attention instead of the learned one
