"""fastuda.models: MiT encoders, the DAFormer / SegFormer / DeepLabV2 heads, checkpoints.

    model = build_model(ModelConfig(backbone="mit_b5", decode_head="daformer"))
    load_checkpoint(model, "daformer_gta2cs.pth")       # or mit_b5.pth, or an mmseg file
    logits = model(images)                              # (B, 19, H/4, W/4)

Every backbone and head is named once, in ``registry``. The package imports its modules on
first use (PEP 562, as ``fastuda/__init__.py`` does): ``registry`` and ``config`` hold no torch,
so ``fastuda.config`` checks model names without loading torch.
"""

import importlib

from .config import HRDAConfig, ModelConfig
from .registry import BACKBONES, HEADS, MIT_BACKBONES

# public name -> (module, attribute)
_LAZY = {
    "build_model": ("build", "build_model"),
    "LoadReport": ("checkpoint", "LoadReport"),
    "load_checkpoint": ("checkpoint", "load_checkpoint"),
    "DAFormerHead": ("daformer_head", "DAFormerHead"),
    "DeepLabV2Head": ("daformer_head", "DeepLabV2Head"),
    "SegFormerHead": ("daformer_head", "SegFormerHead"),
    "HRDAHead": ("hrda", "HRDAHead"),
    "HRDASegmentor": ("hrda", "HRDASegmentor"),
    "random_detail_box": ("hrda", "random_detail_box"),
    "sliding_windows": ("hrda", "sliding_windows"),
    # MiT lives in mix_transformer.py (mmseg's and NVlabs' name): a module named mit would shadow the
    # constructor fastuda.models.mit once imported
    "MIT_VARIANTS": ("mix_transformer", "VARIANTS"),
    "MixVisionTransformer": ("mix_transformer", "MixVisionTransformer"),
    **{name: ("mix_transformer", name)
       for name in ("mit", "mit_b0", "mit_b1", "mit_b2", "mit_b3", "mit_b4", "mit_b5", "mit_demo")},  # fmt: skip
    "EncoderDecoder": ("segmentor", "EncoderDecoder"),
    "TimmResNet": ("resnet", "TimmResNet"),
}


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'fastuda.models' has no attribute {name!r}")
    module, attribute = _LAZY[name]
    return getattr(importlib.import_module(f".{module}", __name__), attribute)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "BACKBONES", "DAFormerHead", "DeepLabV2Head", "EncoderDecoder", "HEADS", "HRDAConfig", "HRDAHead", "MIT_VARIANTS",
    "HRDASegmentor", "LoadReport", "MIT_BACKBONES", "MixVisionTransformer", "ModelConfig", "SegFormerHead",
    "TimmResNet", "build_model", "load_checkpoint", "mit", "mit_b0", "mit_b1", "mit_b2", "mit_b3", "mit_b4", "mit_b5",
    "mit_demo", "random_detail_box", "sliding_windows",
]  # fmt: skip
