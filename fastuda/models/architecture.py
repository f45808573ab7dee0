"""What a state dict's keys and shapes say about the network that wrote it (backbone, head,
classes, width), and whether that network is the one a config asks for. The state dict is keyed
like the model already (``checkpoint.to_model_keys``)."""

import dataclasses

from fastuda.errors import UserError

from .checkpoint import _short
from .mix_transformer import VARIANTS


@dataclasses.dataclass(frozen=True)
class Architecture:
    """What a state dict's keys and shapes say about the network that wrote it."""

    backbone: str  # mit_demo, mit_b0 .. mit_b5, resnet101
    head: str | None  # daformer | segformer | deeplabv2 | deeplabv2red | hrda; None: an encoder alone
    num_classes: int | None = None  # K, the classifier's outputs
    embed_dim: int | None = None  # the head's embedding width (daformer / segformer)

    def __str__(self) -> str:
        return f"{self.backbone} + {self.head}" if self.head else f"{self.backbone} (encoder only)"


def architecture(state: dict, path="checkpoint") -> Architecture:
    """The ``Architecture`` of a state dict keyed like the model (``to_model_keys``)."""
    if "backbone.patch_embed1.proj.weight" in state:
        dims = tuple(state[f"backbone.patch_embed{i}.proj.weight"].shape[0] for i in range(1, 5)
                     if f"backbone.patch_embed{i}.proj.weight" in state)  # fmt: skip
        depths = tuple(1 + max((int(k.split(".")[2]) for k in state if k.startswith(f"backbone.block{i}.")), default=-1)
                       for i in range(1, len(dims) + 1))  # fmt: skip
        backbone = next((n for n, v in VARIANTS.items() if tuple(v["embed_dims"]) == dims and tuple(v["depths"]) == depths),
                        None)  # fmt: skip
        if backbone is None:
            raise UserError(f"{path}: a MiT encoder with widths {dims} and depths {depths} is none of "
                            f"{', '.join(VARIANTS)}")  # fmt: skip
    elif "backbone.body.conv1.weight" in state:  # timm's 7x7 stem: what fastuda built before the v1c stem
        raise UserError(f"{path}: a ResNet with the single 7x7 stem; fastuda's ResNets are mmseg's ResNetV1c "
                        "(deep stem, as the published DeepLabV2): retrain, or load the encoder from mmcv's "
                        "resnet101_v1c weights")  # fmt: skip
    elif any(k.startswith("backbone.body.") for k in state):
        blocks = {k.split(".")[3] for k in state if k.startswith("backbone.body.layer3.")}
        backbone = {6: "resnet50", 23: "resnet101", 36: "resnet152"}.get(len(blocks), "resnet101")
    else:
        raise UserError(f"{path}: no encoder weights (expected backbone.patch_embed1.* of a MiT or backbone.body.* "
                        f"of a ResNet; keys: {_short(sorted(state), 4)})")  # fmt: skip

    def rows(key):
        return state[key].shape[0] if key in state else None

    if any(k.startswith("decode_head.scale_attention.") for k in state):
        return Architecture(backbone, "hrda", rows("decode_head.head.conv_seg.weight"),
                            rows("decode_head.head.embed_layers.0.proj.weight"))  # fmt: skip
    if "decode_head.conv_seg.weight" in state and any(k.startswith("decode_head.fuse_layer.") for k in state):
        return Architecture(backbone, "daformer", rows("decode_head.conv_seg.weight"),
                            rows("decode_head.embed_layers.0.proj.weight"))  # fmt: skip
    if "decode_head.linear_pred.weight" in state:
        return Architecture(backbone, "segformer", rows("decode_head.linear_pred.weight"),
                            rows("decode_head.linear_c.0.proj.weight"))  # fmt: skip
    if "decode_head.fusion_conv.conv.weight" in state:  # mmsegmentation's own SegformerHead
        raise UserError(f"{path}: mmsegmentation's SegformerHead (convs.*, fusion_conv) is not SegFormer's all-MLP "
                        "head: each level goes through a 1x1 conv, BatchNorm and ReLU before the resize; fastuda "
                        "has the head of NVlabs' SegFormer and DAFormer (linear_c*, linear_fuse, linear_pred)")  # fmt: skip
    if "decode_head.aspp_modules.0.conv.weight" in state:
        rates = len({k.split(".")[2] for k in state if k.startswith("decode_head.aspp_modules.")})
        return Architecture(backbone, "deeplabv2red" if rates == 2 else "deeplabv2",
                            rows("decode_head.aspp_modules.0.conv.weight"))  # fmt: skip
    if any(k.startswith("decode_head.") for k in state):
        raise UserError(f"{path}: a decode head fastuda does not know "
                        f"({_short(sorted(k for k in state if k.startswith('decode_head.')), 3)})")  # fmt: skip
    return Architecture(backbone, None)


def config_architecture(cfg) -> Architecture:
    """The ``Architecture`` a ``TrainConfig`` builds."""
    m = cfg.model
    head = "hrda" if cfg.hrda.enabled else m.decode_head
    return Architecture(m.backbone, head, m.num_classes)


def check_architecture(found: Architecture, cfg, path) -> None:
    """A UserError when ``cfg`` asks for another network than the checkpoint at ``path`` holds."""
    want = config_architecture(cfg)
    if (found.backbone, found.head) != (want.backbone, want.head):
        raise UserError(f"{path}: checkpoint is {found}, config asks for {want}")
    if found.num_classes is not None and found.num_classes != want.num_classes:
        raise UserError(f"{path}: checkpoint predicts {found.num_classes} classes, config asks for {want.num_classes} "
                        f"(model.num_classes)")  # fmt: skip
