"""fastuda's ResNet encoders are mmseg's ResNetV1c as the published DeepLabV2 builds it
(``configs/_base_/models/deeplabv2_r50-d8.py``: depth 101, ``strides=(1, 2, 1, 1),
dilations=(1, 1, 2, 4), contract_dilation=True, style='pytorch'``, pretrained
``open-mmlab://resnet101_v1c``), and mmcv's ImageNet weights load into them: random weights written
in mmcv's key layout give, through ``load_checkpoint``, the features of an independent fp64
transcription of ``mmseg/models/backbones/resnet.py`` (``ResNetV1c``, ``Bottleneck``) and
``mmseg/models/utils/res_layer.py`` (``ResLayer``) of lhoyer/HRDA."""

import pytest
import torch
import torch.nn.functional as F

from fastuda.errors import UserError
from fastuda.models import build_model, load_checkpoint
from fastuda.models.architecture import architecture
from fastuda.models.config import ModelConfig

DEPTHS = {"resnet50": (3, 4, 6, 3), "resnet101": (3, 4, 23, 3)}
STRIDES, DILATIONS = (1, 2, 1, 1), (1, 1, 2, 4)


def _bn(state, name, c, g):
    state[f"{name}.weight"] = 1 + 0.1 * torch.randn(c, generator=g, dtype=torch.float64)
    state[f"{name}.bias"] = 0.1 * torch.randn(c, generator=g, dtype=torch.float64)
    state[f"{name}.running_mean"] = 0.1 * torch.randn(c, generator=g, dtype=torch.float64)
    state[f"{name}.running_var"] = 0.5 + torch.rand(c, generator=g, dtype=torch.float64)
    state[f"{name}.num_batches_tracked"] = torch.tensor(7)


def _conv(state, name, cout, cin, k, g):
    state[f"{name}.weight"] = torch.randn(cout, cin, k, k, generator=g, dtype=torch.float64) * (2 / (cin * k * k)) ** 0.5


def mmcv_resnet_v1c(depth, seed=0) -> dict:
    """Random weights keyed as mmcv's ``resnet{50,101}_v1c`` ImageNet files (with their ``fc``)."""
    g = torch.Generator().manual_seed(seed)
    s = {}
    _conv(s, "stem.0", 32, 3, 3, g), _bn(s, "stem.1", 32, g)
    _conv(s, "stem.3", 32, 32, 3, g), _bn(s, "stem.4", 32, g)
    _conv(s, "stem.6", 64, 32, 3, g), _bn(s, "stem.7", 64, g)
    inplanes = 64
    for i, n in enumerate(depth):
        planes = 64 * 2**i
        for b in range(n):
            p = f"layer{i + 1}.{b}"
            _conv(s, f"{p}.conv1", planes, inplanes, 1, g), _bn(s, f"{p}.bn1", planes, g)
            _conv(s, f"{p}.conv2", planes, planes, 3, g), _bn(s, f"{p}.bn2", planes, g)
            _conv(s, f"{p}.conv3", planes * 4, planes, 1, g), _bn(s, f"{p}.bn3", planes * 4, g)
            if b == 0:
                _conv(s, f"{p}.downsample.0", planes * 4, inplanes, 1, g), _bn(s, f"{p}.downsample.1", planes * 4, g)
            inplanes = planes * 4
    s["fc.weight"] = torch.randn(1000, 2048, generator=g, dtype=torch.float64)
    s["fc.bias"] = torch.randn(1000, generator=g, dtype=torch.float64)
    return s


def published_resnet_v1c(s, x, depth):
    """mmseg ResNetV1c.forward (eval BN, eps 1e-5), last stage's output."""

    def bn(t, name):
        return F.batch_norm(t, s[f"{name}.running_mean"], s[f"{name}.running_var"], s[f"{name}.weight"],
                            s[f"{name}.bias"], False, 0.0, 1e-5)  # fmt: skip

    # _make_stem_layer (deep_stem): 3x3 s2 p1, 3x3 p1, 3x3 p1, each conv-BN-ReLU; then MaxPool(3, 2, 1)
    x = F.relu(bn(F.conv2d(x, s["stem.0.weight"], stride=2, padding=1), "stem.1"))
    x = F.relu(bn(F.conv2d(x, s["stem.3.weight"], padding=1), "stem.4"))
    x = F.relu(bn(F.conv2d(x, s["stem.6.weight"], padding=1), "stem.7"))
    x = F.max_pool2d(x, 3, 2, 1)
    for i, n in enumerate(depth):
        stride, dilation = STRIDES[i], DILATIONS[i]
        for b in range(n):
            # ResLayer: contract_dilation halves the first block's dilation; the stride is the first block's
            d = (dilation // 2 if dilation > 1 else dilation) if b == 0 else dilation
            st = stride if b == 0 else 1
            p = f"layer{i + 1}.{b}"
            # Bottleneck, style='pytorch': stride on conv2 (3x3, padding = dilation)
            out = F.relu(bn(F.conv2d(x, s[f"{p}.conv1.weight"]), f"{p}.bn1"))
            out = F.relu(bn(F.conv2d(out, s[f"{p}.conv2.weight"], stride=st, padding=d, dilation=d), f"{p}.bn2"))
            out = bn(F.conv2d(out, s[f"{p}.conv3.weight"]), f"{p}.bn3")
            # downsample: conv1x1 with the block's stride (avg_down=False), BN
            identity = bn(F.conv2d(x, s[f"{p}.downsample.0.weight"], stride=st), f"{p}.downsample.1") if b == 0 else x
            x = F.relu(out + identity)
    return x


@pytest.mark.parametrize("backbone, layout", [
    ("resnet101", "state_dict"), ("resnet50", "bare"), ("resnet50", "mmseg")])
def test_mmcv_resnet_v1c_loads_and_matches_published(backbone, layout):
    depth = DEPTHS[backbone]
    state = mmcv_resnet_v1c(depth, seed=len(layout))
    if layout == "state_dict":  # mmcv's open-mmlab files: {"state_dict": ..., "meta": ...}
        obj = {"state_dict": state, "meta": {}}
    elif layout == "mmseg":  # a segmentor's encoder (mmseg / mmcls: backbone.*; mmcls' classifier head.fc.*)
        obj = {"state_dict": {**{f"backbone.{k}": v for k, v in state.items() if not k.startswith("fc.")},
                              "head.fc.weight": state["fc.weight"]}, "meta": {}}  # fmt: skip
    else:
        obj = state
    # an already loaded dict: a file of fp64 ResNet-50 weights is 200 MB (the file path: the test below)
    model = build_model(ModelConfig(backbone=backbone, decode_head="deeplabv2red", pretrained=None)).double().eval()
    report = load_checkpoint(model, obj, strict=True)
    assert not report.missing and not report.unexpected and not report.mismatched
    x = torch.randn(1, 3, 67, 45, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    with torch.no_grad():
        got = model.backbone(x)[-1]
    want = published_resnet_v1c(state, x, depth)
    assert got.shape == want.shape == (1, 2048, 9, 6)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


def test_model_pretrained_reads_mmcv_resnet(tmp_path):
    """model.pretrained=<mmcv resnet101_v1c file>, as the AdvSeg / MinEnt presets set it."""
    path = tmp_path / "resnet50_v1c.pth"  # half precision: a smaller file, the same keys
    torch.save({"state_dict": {k: v.half() if v.is_floating_point() else v
                               for k, v in mmcv_resnet_v1c(DEPTHS["resnet50"]).items()}, "meta": {}}, path)  # fmt: skip
    model = build_model(ModelConfig(backbone="resnet50", decode_head="deeplabv2red", pretrained=str(path)))
    want = torch.load(path)["state_dict"]
    torch.testing.assert_close(model.backbone.body.conv1[3].weight, want["stem.3.weight"].float())
    torch.testing.assert_close(model.backbone.body.bn1.running_var, want["stem.7.running_var"].float())


def test_single_stem_resnet_is_named():
    state = {"backbone.body.conv1.weight": torch.zeros(64, 3, 7, 7), "backbone.body.layer1.0.conv1.weight": torch.zeros(1)}
    with pytest.raises(UserError, match="single 7x7 stem.*ResNetV1c"):
        architecture(state, "old.pth")
