"""The published DeepLabV2 encoder: mmseg's ``ResNetV1c`` (``configs/_base_/models/deeplabv2_r50-d8.py``:
``strides=(1, 2, 1, 1), dilations=(1, 1, 2, 4), contract_dilation=True, style='pytorch'``), and the
key remap of mmcv's ImageNet weights (``open-mmlab://resnet101_v1c``) and mmseg-trained files.

The network is timm's ResNet with the deep stem (``stem_type='deep', stem_width=32``: three 3x3
convs 3 -> 32 -> 32 -> 64, as v1c's) at output stride 8. timm dilates a stage's first block with
the previous stage's dilation (layer3: 1 then 2, layer4: 2 then 4), which is mmseg's
``contract_dilation=True`` (first block at dilation // 2); the stride is on the 3x3 conv
(``style='pytorch'``) and BatchNorm's eps is 1e-5 in both.
"""

import re

import timm
import torch
from torch import nn

# mmcv's deep stem (conv, BN, ReLU) x 3 -> timm's conv1 (the same Sequential without the last BN) + bn1
_STEM = {"stem.0.": "conv1.0.", "stem.1.": "conv1.1.", "stem.3.": "conv1.3.", "stem.4.": "conv1.4.",
         "stem.6.": "conv1.6.", "stem.7.": "bn1."}  # fmt: skip
_MMCV_KEY = re.compile(r"^(stem\.\d+\.|layer[1-4]\.)")


class TimmResNet(nn.Module):
    """ResNetV1c as a dilated encoder (output stride 8), returning its last feature map."""

    def __init__(self, name: str = "resnet101", output_stride: int = 8):
        super().__init__()
        self.body = timm.create_model(name, pretrained=False, features_only=True, output_stride=output_stride,
                                      out_indices=(4,), stem_type="deep", stem_width=32)  # fmt: skip
        self.out_channels = self.body.feature_info.channels()

    def forward(self, img: torch.Tensor) -> list[torch.Tensor]:
        return self.body(img)


# The published DeepLabV2 ResNets have no stochastic depth: model.drop_path_rate is MiT's alone.
def resnet50(drop_path_rate: float = 0.0) -> TimmResNet: return TimmResNet("resnet50")  # noqa: E704
def resnet101(drop_path_rate: float = 0.0) -> TimmResNet: return TimmResNet("resnet101")  # noqa: E704


def is_mmcv_resnet(state: dict) -> bool:
    """A bare mmcv / mmcls ResNetV1c state dict (``stem.0.weight``, ``layer1.0.conv1.weight``, ``fc.*``)."""
    return "stem.0.weight" in state and any(k.startswith("layer1.") for k in state)


def _body_key(key: str) -> str:
    for mmcv, timm in _STEM.items():
        if key.startswith(mmcv):
            return "backbone.body." + timm + key[len(mmcv):]
    return "backbone.body." + key


def mmcv_resnet_to_model_keys(state: dict) -> dict:
    """mmcv's ImageNet ResNetV1c keys (``open-mmlab://resnet101_v1c``: ``stem.*``, ``layer1..4.*``;
    the classifier ``fc.*`` is dropped, as mmseg's ``init_weights`` with ``strict=False`` ignores it)
    -> fastuda's ``backbone.body.*``."""
    return {_body_key(k): v for k, v in state.items() if _MMCV_KEY.match(k)}


def resnet_backbone_keys(state: dict) -> dict:
    """A segmentor state dict whose ResNet is keyed as mmseg's (``backbone.stem.*``, ``backbone.layer1.*``:
    a DeepLabV2 trained by mmseg / DAFormer / HRDA, or mmcls' ``backbone.*`` + ``head.fc.*``) -> fastuda's
    ``backbone.body.*``; other keys pass through (an mmcls classifier head is dropped)."""
    if "backbone.stem.0.weight" not in state:
        return state
    out = {}
    for k, v in state.items():
        if k.startswith("backbone.") and _MMCV_KEY.match(k[len("backbone."):]):
            out[_body_key(k[len("backbone."):])] = v
        elif not k.startswith("head."):
            out[k] = v
    return out
