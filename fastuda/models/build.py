"""``build_model``: the segmentor a ``ModelConfig`` (and an ``HRDAConfig``) describes, from the
names in ``registry``."""

import dataclasses

from .checkpoint import load_checkpoint
from .config import HRDAConfig, ModelConfig
from .daformer_head import DLV2_DILATIONS, daformer_width
from .hrda import HRDASegmentor
from .registry import DEEPLAB_HEADS, MIT_BACKBONES, backbone_constructor, head_constructor
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
    if cfg.decode_head not in DEEPLAB_HEADS and len(channels) != 4:
        raise ValueError(f"decode_head {cfg.decode_head!r} needs a 4-level encoder (MiT), got backbone {cfg.backbone!r}")
    if hrda is not None and hrda.enabled:
        # published HRDAHead: a DAFormer head on MiT, or a DeepLabV2 head (experiment 41: dlv2red on ResNet-101)
        dlv2 = cfg.decode_head in DEEPLAB_HEADS
        if not (dlv2 or (cfg.decode_head == "daformer" and cfg.backbone in MIT_BACKBONES)):
            raise ValueError(f"hrda needs the daformer head on a MiT backbone or a deeplabv2 head, got "
                             f"{cfg.backbone!r} + {cfg.decode_head!r}")  # fmt: skip
        model = HRDASegmentor(backbone, cfg.num_classes, detail_crop=hrda.hr_crop_size,
                              crop_divisible=hrda.crop_coord_divisible, detail_loss_weight=hrda.hr_loss_weight,
                              fixed_attention=hrda.fixed_attention,
                              embed_dim=daformer_width(cfg.embed_dim, cfg.backbone),
                              single_scale_head="deeplabv2" if dlv2 else "daformer",
                              dilations=DLV2_DILATIONS.get(cfg.decode_head, (6, 12)))  # fmt: skip
    else:
        model = EncoderDecoder(backbone, make_head(channels, cfg.num_classes, embed_dim=cfg.embed_dim,
                                                   backbone=cfg.backbone))  # fmt: skip
    if cfg.pretrained:
        report = load_checkpoint(model, cfg.pretrained)
        if report.missing and any(k.startswith("backbone.") for k in report.missing):
            raise RuntimeError(f"pretrained weights {cfg.pretrained} do not fit backbone {cfg.backbone}:\n{report}")
    return model
