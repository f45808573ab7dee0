"""Every backbone and decode head fastuda builds, named once (timm's ``models/_registry.py``):
a plain dict from name to constructor each, read by ``build_model`` and by the config's checks.

The constructors are written ``"module:function"`` and imported when one is called
(``backbone_constructor``, ``head_constructor``): reading the names costs no torch import, so a config
is checked in milliseconds, before anything heavy loads.

Adding a model: write its constructor beside the model (``mit.mit_b0``,
``daformer_head.daformer_head``) and add one line here.
"""

import importlib

# name -> constructor(drop_path_rate: float) -> encoder returning its list of feature maps
BACKBONES = {
    # SegFormer's Mix Transformer: 4 levels at strides 4, 8, 16, 32
    "mit_b0": "fastuda.models.mix_transformer:mit_b0",
    "mit_b1": "fastuda.models.mix_transformer:mit_b1",
    "mit_b2": "fastuda.models.mix_transformer:mit_b2",
    "mit_b3": "fastuda.models.mix_transformer:mit_b3",
    "mit_b4": "fastuda.models.mix_transformer:mit_b4",
    "mit_b5": "fastuda.models.mix_transformer:mit_b5",
    "mit_demo": "fastuda.models.mix_transformer:mit_demo",  # the CPU demo's: MiT-shaped, one block per stage
    # mmseg's ResNetV1c (deep stem) dilated to stride 8: its last level only (DeepLabV2)
    "resnet50": "fastuda.models.resnet:resnet50",
    "resnet101": "fastuda.models.resnet:resnet101",
}
# the backbones with the 4 levels that the daformer / segformer heads and HRDA's daformer head fuse
MIT_BACKBONES = tuple(name for name, ctor in BACKBONES.items() if ctor.startswith("fastuda.models.mix_transformer:"))

# name -> constructor(in_channels, num_classes, *, embed_dim: int | None, backbone: str) -> head
HEADS = {
    "daformer": "fastuda.models.daformer_head:daformer_head",  # context-aware fusion (DAFormer)
    "segformer": "fastuda.models.daformer_head:segformer_head",  # all-MLP (SegFormer)
    "deeplabv2": "fastuda.models.daformer_head:deeplabv2_head",  # ASPP on the last level (DeepLabV2)
    "deeplabv2red": "fastuda.models.daformer_head:deeplabv2red_head",  # rates 6, 12 only (published dlv2red)
}


def backbone_constructor(name: str):
    """The constructor of backbone ``name``: ``(drop_path_rate) -> encoder`` (``encoder.out_channels``
    lists its levels' widths)."""
    if name not in BACKBONES:
        raise ValueError(f"backbone must be one of {tuple(BACKBONES)}, got {name!r}")
    return _import(BACKBONES[name])


def head_constructor(name: str):
    """The constructor of decode head ``name``: ``(in_channels, num_classes, *, embed_dim, backbone) -> head``."""
    if name not in HEADS:
        raise ValueError(f"decode_head must be one of {tuple(HEADS)}, got {name!r}")
    return _import(HEADS[name])


def _import(where: str):
    module, function = where.split(":")
    return getattr(importlib.import_module(module), function)

# the heads that take the last level only (any backbone) and that HRDA also runs on (experiment 41)
DEEPLAB_HEADS = tuple(name for name in HEADS if name.startswith("deeplabv2"))
