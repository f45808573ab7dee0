"""``build_model``: the segmentor a ``ModelConfig`` (and an ``HRDAConfig``) describes, from the
names in ``registry``."""

import dataclasses

from .checkpoint import load_checkpoint
from .config import HRDAConfig, ModelConfig
from .daformer_head import daformer_width
from .hrda import HRDASegmentor
from .registry import MIT_BACKBONES, backbone_constructor, head_constructor
from .segmentor import EncoderDecoder


def build_model(cfg: ModelConfig | None = None, hrda: HRDAConfig | bool | None = None, **overrides) -> EncoderDecoder:
    """Builds the segmentor of ``cfg`` (fields may be overridden by keyword). An
    ``EncoderDecoder``'s ``forward(img)`` returns logits at stride 4 (stride 8 for
    DeepLabV2); with ``hrda`` enabled (``HRDAConfig(enabled=True, ...)``, the training
    config's ``hrda`` section; ``True``: its defaults) an ``HRDASegmentor`` (see its modes). ``cfg`` is
    assumed valid (``fastuda.config.validate``); the checks here guard direct callers."""
    cfg = dataclasses.replace(cfg or ModelConfig(), **overrides)
    if isinstance(hrda, bool):
        hrda = HRDAConfig(enabled=hrda)
    make_head = head_constructor(cfg.decode_head)  # an unknown name fails before any weight is made
    backbone = backbone_constructor(cfg.backbone)(drop_path_rate=cfg.drop_path_rate)
    channels = backbone.out_channels
    if cfg.decode_head != "deeplabv2" and len(channels) != 4:
        raise ValueError(f"decode_head {cfg.decode_head!r} needs a 4-level encoder (MiT), got backbone {cfg.backbone!r}")
    if hrda is not None and hrda.enabled:
        if cfg.decode_head != "daformer" or cfg.backbone not in MIT_BACKBONES:
            raise ValueError(f"hrda needs a MiT backbone and the daformer head, got {cfg.backbone!r} + {cfg.decode_head!r}")
        model = HRDASegmentor(backbone, cfg.num_classes, detail_crop=hrda.hr_crop_size,
                              crop_divisible=hrda.crop_coord_divisible, detail_loss_weight=hrda.hr_loss_weight,
                              fixed_attention=hrda.fixed_attention,
                              embed_dim=daformer_width(cfg.embed_dim, cfg.backbone))  # fmt: skip
    else:
        model = EncoderDecoder(backbone, make_head(channels, cfg.num_classes, embed_dim=cfg.embed_dim,
                                                   backbone=cfg.backbone))  # fmt: skip
    if cfg.pretrained:
        report = load_checkpoint(model, cfg.pretrained)
        if report.missing and any(k.startswith("backbone.") for k in report.missing):
            raise RuntimeError(f"pretrained weights {cfg.pretrained} do not fit backbone {cfg.backbone}:\n{report}")
    return model
