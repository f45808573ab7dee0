"""fastuda.models: MiT encoders, the DAFormer / SegFormer / DeepLabV2 heads, checkpoints.

    model = build_model(ModelConfig(backbone="mit_b5", decode_head="daformer"))
    load_checkpoint(model, "daformer_gta2cs.pth")       # or mit_b5.pth, or an mmseg file
    logits = model(images)                              # (B, 19, H/4, W/4)
"""

from fastuda.config import ModelConfig

from .checkpoint import LoadReport, load_checkpoint
from .daformer_head import DAFormerHead, DeepLabV2Head, SegFormerHead
from .hrda import HRDAHead, HRDASegmentor, random_detail_box, sliding_windows
from .mit import VARIANTS as MIT_VARIANTS
from .mit import MixVisionTransformer, mit, mit_b0, mit_b1, mit_b2, mit_b3, mit_b4, mit_b5
from .segmentor import EncoderDecoder, TimmResNet

HEADS = ("daformer", "segformer", "deeplabv2")


def build_model(cfg: ModelConfig | None = None, **overrides) -> EncoderDecoder:
    """Builds the segmentor of ``cfg`` (fields may be overridden by keyword). An
    ``EncoderDecoder``'s ``forward(img)`` returns logits at stride 4 (stride 8 for
    DeepLabV2); with ``hrda=True`` an ``HRDASegmentor`` (see its modes)."""
    cfg = ModelConfig(**{**vars(cfg or ModelConfig()), **overrides})
    if cfg.decode_head not in HEADS:
        raise ValueError(f"decode_head must be one of {HEADS}, got {cfg.decode_head!r}")
    if cfg.backbone in MIT_VARIANTS:
        backbone = mit(cfg.backbone, drop_path_rate=cfg.drop_path_rate)
    elif cfg.backbone.startswith("resnet"):
        backbone = TimmResNet(cfg.backbone)
    else:
        raise ValueError(f"backbone must be one of {sorted(MIT_VARIANTS)} or a timm resnet name, got {cfg.backbone!r}")
    channels = backbone.out_channels
    if cfg.decode_head != "deeplabv2" and len(channels) != 4:
        raise ValueError(f"decode_head {cfg.decode_head!r} needs a 4-level encoder (MiT), got backbone {cfg.backbone!r}")
    if cfg.hrda:
        if cfg.decode_head != "daformer" or cfg.backbone not in MIT_VARIANTS:
            raise ValueError(f"hrda needs a MiT backbone and the daformer head, got {cfg.backbone!r} + {cfg.decode_head!r}")
        model = HRDASegmentor(backbone, cfg.num_classes, detail_crop=cfg.hrda_detail_crop,
                              fixed_attention=cfg.hrda_fixed_attention)  # fmt: skip
    elif cfg.decode_head == "daformer":
        width = cfg.embed_dim or (32 if cfg.backbone == "mit_demo" else 256)  # the demo's head is narrow
        model = EncoderDecoder(backbone, DAFormerHead(channels, cfg.num_classes, embed_dim=width, channels=width))
    elif cfg.decode_head == "segformer":
        embed_dim = cfg.embed_dim or (256 if cfg.backbone == "mit_b0" else 768)
        model = EncoderDecoder(backbone, SegFormerHead(channels, cfg.num_classes, embed_dim=embed_dim))
    else:
        model = EncoderDecoder(backbone, DeepLabV2Head(channels[-1], cfg.num_classes))
    if cfg.pretrained:
        report = load_checkpoint(model, cfg.pretrained)
        if report.missing and any(k.startswith("backbone.") for k in report.missing):
            raise RuntimeError(f"pretrained weights {cfg.pretrained} do not fit backbone {cfg.backbone}:\n{report}")
    return model


__all__ = [
    "DAFormerHead", "DeepLabV2Head", "EncoderDecoder", "HRDAHead", "HRDASegmentor", "LoadReport", "MixVisionTransformer", "ModelConfig",
    "SegFormerHead", "TimmResNet", "build_model", "load_checkpoint", "mit", "mit_b0", "mit_b1", "mit_b2", "mit_b3",
    "mit_b4", "mit_b5", "random_detail_box", "sliding_windows",
]  # fmt: skip
