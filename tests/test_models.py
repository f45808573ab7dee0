"""fastuda.models: MiT b0..b5, the heads, build_model and checkpoint loading."""

import pytest
import torch

import fastuda.ops as ops
from fastuda.errors import UserError

from fastuda.models import (
    DAFormerHead,
    ModelConfig,
    build_model,
    load_checkpoint,
    mit,
)

# Published encoder widths/depths (mmseg/models/backbones/mix_transformer.py, mit_b0..b5).
PUBLISHED_MIT = {
    "mit_b0": ((32, 64, 160, 256), (2, 2, 2, 2)),
    "mit_b1": ((64, 128, 320, 512), (2, 2, 2, 2)),
    "mit_b2": ((64, 128, 320, 512), (3, 4, 6, 3)),
    "mit_b3": ((64, 128, 320, 512), (3, 4, 18, 3)),
    "mit_b4": ((64, 128, 320, 512), (3, 8, 27, 3)),
    "mit_b5": ((64, 128, 320, 512), (3, 6, 40, 3)),
}


def published_mit_state_dict(name, with_head=True):
    """Key names and shapes of SegFormer's ImageNet mit_b*.pth, written from the published
    module structure (patch embeds, blocks with attn.q / kv / sr / norm, Mix-FFN with
    dwconv.dwconv, stage norms, and the classification head), filled with random values."""
    dims, depths = PUBLISHED_MIT[name]
    sr_ratios, mlp = (8, 4, 2, 1), 4
    shapes = {}
    for s, (dim, depth, sr) in enumerate(zip(dims, depths, sr_ratios), start=1):
        prev, k = (3, 7) if s == 1 else (dims[s - 2], 3)
        shapes[f"patch_embed{s}.proj.weight"] = (dim, prev, k, k)
        shapes[f"patch_embed{s}.proj.bias"] = (dim,)
        shapes[f"patch_embed{s}.norm.weight"] = shapes[f"patch_embed{s}.norm.bias"] = (dim,)
        for i in range(depth):
            p = f"block{s}.{i}."
            for norm in ("norm1", "norm2"):
                shapes[p + norm + ".weight"] = shapes[p + norm + ".bias"] = (dim,)
            shapes[p + "attn.q.weight"], shapes[p + "attn.q.bias"] = (dim, dim), (dim,)
            shapes[p + "attn.kv.weight"], shapes[p + "attn.kv.bias"] = (2 * dim, dim), (2 * dim,)
            shapes[p + "attn.proj.weight"], shapes[p + "attn.proj.bias"] = (dim, dim), (dim,)
            if sr > 1:
                shapes[p + "attn.sr.weight"], shapes[p + "attn.sr.bias"] = (dim, dim, sr, sr), (dim,)
                shapes[p + "attn.norm.weight"] = shapes[p + "attn.norm.bias"] = (dim,)
            shapes[p + "mlp.fc1.weight"], shapes[p + "mlp.fc1.bias"] = (mlp * dim, dim), (mlp * dim,)
            shapes[p + "mlp.dwconv.dwconv.weight"], shapes[p + "mlp.dwconv.dwconv.bias"] = (mlp * dim, 1, 3, 3), (mlp * dim,)
            shapes[p + "mlp.fc2.weight"], shapes[p + "mlp.fc2.bias"] = (dim, mlp * dim), (dim,)
        shapes[f"norm{s}.weight"] = shapes[f"norm{s}.bias"] = (dim,)
    if with_head:
        shapes["head.weight"], shapes["head.bias"] = (1000, dims[-1]), (1000,)
    return {k: torch.randn(v) for k, v in shapes.items()}


def published_daformer_head_state_dict(in_dims, num_classes=19, embed=256, channels=256):
    """decode_head.* keys of DAFormer's DAFormerHead with the sep-ASPP fusion (mmcv ConvModule names)."""
    shapes = {}
    for i, c in enumerate(in_dims):
        shapes[f"embed_layers.{i}.proj.weight"], shapes[f"embed_layers.{i}.proj.bias"] = (embed, c), (embed,)

    def conv_module(prefix, cin, cout, k, groups=1):
        shapes[prefix + ".conv.weight"] = (cout, cin // groups, k, k)
        for n in ("weight", "bias", "running_mean", "running_var"):
            shapes[prefix + ".bn." + n] = (cout,)

    conv_module("fuse_layer.aspp_modules.0", 4 * embed, channels, 1)
    for j in (1, 2, 3):
        conv_module(f"fuse_layer.aspp_modules.{j}.depthwise_conv", 4 * embed, 4 * embed, 3, groups=4 * embed)
        conv_module(f"fuse_layer.aspp_modules.{j}.pointwise_conv", 4 * embed, channels, 1)
    conv_module("fuse_layer.bottleneck", 4 * channels, channels, 3)
    shapes["conv_seg.weight"], shapes["conv_seg.bias"] = (num_classes, channels, 1, 1), (num_classes,)
    state = {k: torch.randn(v) for k, v in shapes.items()}
    for k in state:
        if k.endswith("running_var"):
            state[k] = state[k].abs() + 0.5
    return state


def count(module):
    return sum(p.numel() for p in module.parameters())


# ----------------------------------------------------------------------------- MiT


@pytest.mark.parametrize("name", list(PUBLISHED_MIT))
def test_mit_matches_published_layout_and_size(name):
    encoder = mit(name)
    published = published_mit_state_dict(name, with_head=False)
    own = encoder.state_dict()
    assert set(own) == set(published)
    assert all(tuple(own[k].shape) == tuple(v.shape) for k, v in published.items())
    # SegFormer paper, Table 1 / 6 encoder sizes in millions (no ImageNet head).
    paper = {"mit_b0": 3.4, "mit_b1": 13.1, "mit_b2": 24.2, "mit_b3": 44.0, "mit_b4": 60.8, "mit_b5": 81.4}[name]
    assert abs(count(encoder) / 1e6 - paper) < 0.15, count(encoder)


@pytest.mark.parametrize("name", ["mit_b0", "mit_b1"])
def test_mit_features_at_odd_sizes(name):
    encoder = mit(name)
    x = torch.randn(1, 3, 96, 160)
    feats = encoder(x)
    dims, _ = PUBLISHED_MIT[name]
    assert [tuple(f.shape) for f in feats] == [(1, d, 96 // s, 160 // s) for d, s in zip(dims, (4, 8, 16, 32))]
    feats = encoder(torch.randn(2, 3, 70, 90))  # not a multiple of 32: convs round up
    assert [tuple(f.shape[2:]) for f in feats] == [(18, 23), (9, 12), (5, 6), (3, 3)]


@pytest.mark.parametrize(
    "backbone, head",
    [(f"mit_b{i}", "daformer") for i in range(6)] + [("mit_b0", "segformer"), ("resnet101", "deeplabv2")],
)
def test_forward_backward_every_parameter_gets_a_gradient(backbone, head):
    torch.manual_seed(0)
    model = build_model(backbone=backbone, decode_head=head, num_classes=7)
    H, W = (64, 96) if backbone in ("mit_b0", "mit_b1") else (32, 64)  # the big encoders at a smaller size
    logits = model(torch.randn(2, 3, H, W))
    stride = 8 if head == "deeplabv2" else 4
    assert logits.shape == (2, 7, H // stride, W // stride)
    assert torch.isfinite(logits).all()
    ops.weighted_cross_entropy(logits, torch.randint(0, 7, (2, H // stride, W // stride))).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing, missing


def test_compile_fullgraph_mit_b0_daformer():
    model = build_model(backbone="mit_b0", decode_head="daformer").eval()
    x = torch.randn(1, 3, 64, 64)
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), model(x), rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_compile_fullgraph_mit_b0_daformer_inductor():
    model = build_model(backbone="mit_b0", decode_head="daformer").eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(torch.compile(model, fullgraph=True)(x), model(x), rtol=1e-4, atol=1e-4)


@pytest.mark.interpreter
def test_fused_and_reference_attention_give_the_same_logits():
    torch.manual_seed(0)
    model = build_model(backbone="mit_b0", decode_head="daformer", num_classes=5).eval()
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad(), ops.use_backend("reference"):
        want = model(x)
    with torch.no_grad(), ops.use_backend("triton"):
        got = model(x)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


# ----------------------------------------------------------------------------- checkpoints


def test_loads_imagenet_mit_and_skips_its_head(tmp_path):
    state = published_mit_state_dict("mit_b0")
    path = tmp_path / "mit_b0.pth"
    torch.save(state, path)
    model = build_model(backbone="mit_b0", decode_head="daformer")
    report = load_checkpoint(model, path, strict=True)
    assert report.layout == "ImageNet MiT" and report.unexpected == [] and report.missing == []
    torch.testing.assert_close(model.backbone.block1[1].attn.kv.weight, state["block1.1.attn.kv.weight"])
    assert report.loaded == len(state) - 2
    # build_model(pretrained=...) goes through the same path.
    model = build_model(backbone="mit_b0", pretrained=str(path))
    torch.testing.assert_close(model.backbone.norm4.bias, state["norm4.bias"])


def test_loads_mmseg_and_uda_checkpoints(tmp_path):
    def full(seed):
        torch.manual_seed(seed)
        state = {f"backbone.{k}": v for k, v in published_mit_state_dict("mit_b0", with_head=False).items()}
        state.update({f"decode_head.{k}": v for k, v in published_daformer_head_state_dict((32, 64, 160, 256)).items()})
        return state

    mmseg = full(0)
    torch.save({"state_dict": mmseg, "meta": {"CLASSES": ("road",), "iter": 40000}}, tmp_path / "mmseg.pth")
    model = build_model(backbone="mit_b0", decode_head="daformer")
    report = load_checkpoint(model, tmp_path / "mmseg.pth", strict=True)
    assert report.layout == "mmseg" and report.loaded == len(mmseg)
    torch.testing.assert_close(model.decode_head.fuse_layer.aspp_modules[2].pointwise_conv.bn.running_var,
                               mmseg["decode_head.fuse_layer.aspp_modules.2.pointwise_conv.bn.running_var"])  # fmt: skip

    uda = {}
    for i, prefix in enumerate(("model", "ema_model", "imnet_model")):
        uda.update({f"{prefix}.{k}": v for k, v in full(i + 1).items()})
    torch.save({"state_dict": uda}, tmp_path / "daformer.pth")
    for i, which in enumerate(("model", "ema_model", "imnet_model")):
        report = load_checkpoint(model, tmp_path / "daformer.pth", strict=True, which=which)
        assert report.layout == f"UDA ({which})"
        torch.testing.assert_close(model.decode_head.conv_seg.weight, uda[f"{which}.decode_head.conv_seg.weight"])


def test_load_reports_mismatches_in_plain_words(tmp_path):
    model = build_model(backbone="mit_b0", decode_head="daformer", num_classes=7)
    state = {f"backbone.{k}": v for k, v in published_mit_state_dict("mit_b0", with_head=False).items()}
    del state["backbone.patch_embed1.proj.weight"]
    state.update({f"decode_head.{k}": v for k, v in published_daformer_head_state_dict((32, 64, 160, 256)).items()})
    state["decode_head.extra.weight"] = torch.randn(3)
    report = load_checkpoint(model, {"state_dict": state})
    text = str(report)
    assert "conv_seg.weight (19, 256, 1, 1) vs model (7, 256, 1, 1)" in text
    assert "have no place in the model" in text and "decode_head.extra.weight" in text
    assert "were not in the checkpoint" in text and "backbone.patch_embed1.proj.weight" in text
    # without the encoder the load is an error that carries the report
    head_only = {k: v for k, v in state.items() if k.startswith("decode_head.")}
    with pytest.raises(UserError, match="left 176 of the encoder.s 176 tensors missing(.|\n)*were not in the"):
        load_checkpoint(model, {"state_dict": head_only})
    with pytest.raises(RuntimeError, match="strict=True"):
        load_checkpoint(model, {"state_dict": state}, strict=True)


def test_checkpoint_errors(tmp_path):
    model = build_model(backbone="mit_b0")
    with pytest.raises(UserError, match="nothing.pth not found"):
        load_checkpoint(model, tmp_path / "nothing.pth")
    (tmp_path / "broken.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="broken.pth is not a checkpoint"):
        load_checkpoint(model, tmp_path / "broken.pth")
    with pytest.raises(ValueError, match="no 'ema_model' weights"):
        load_checkpoint(model, {"state_dict": {"model.backbone.norm1.weight": torch.ones(32)}}, which="ema_model")
    with pytest.raises(ValueError, match="which must be one of"):
        load_checkpoint(model, {}, which="teacher")


def test_build_model_errors():
    with pytest.raises(ValueError, match="decode_head must be one of"):
        build_model(decode_head="upernet")
    with pytest.raises(ValueError, match="backbone must be one of"):
        build_model(backbone="vit_b")
    with pytest.raises(ValueError, match="needs a 4-level encoder"):
        build_model(backbone="resnet101", decode_head="daformer")
    with pytest.raises(TypeError):
        build_model(ModelConfig(), depth=3)
    assert isinstance(build_model(backbone="mit_b0").decode_head, DAFormerHead)


# ----------------------------------------------------------------------------- SegFormer head vs the published heads
# Each checkpoint layout against its own published forward, transcribed independently of fastuda, in float64:
# lhoyer/DAFormer mmseg/models/decode_heads/segformer_head.py ("Model construction with loop": levels
# concatenated in in_index order, shallowest first) and NVlabs/SegFormer's (linear_c1..4,
# torch.cat([_c4, _c3, _c2, _c1])). Both: MLP = flatten(2).transpose(1, 2) -> Linear; resize = bilinear,
# align_corners=False to c1's size; linear_fuse = mmcv ConvModule (1x1 conv without bias, BN, ReLU); dropout
# (identity in eval); linear_pred 1x1 conv. Transformers' SegformerDecodeHead is run directly in test_hf.py.


def _mlp(x, p, prefix):
    n, _, h, w = x.shape
    y = torch.nn.functional.linear(x.flatten(2).transpose(1, 2), p[prefix + "proj.weight"], p[prefix + "proj.bias"])
    return y.permute(0, 2, 1).reshape(n, -1, h, w)


def _conv_module_and_pred(c, p):
    bn = "decode_head.linear_fuse.bn."
    y = torch.nn.functional.conv2d(c, p["decode_head.linear_fuse.conv.weight"])
    y = torch.nn.functional.batch_norm(y, p[bn + "running_mean"], p[bn + "running_var"], p[bn + "weight"], p[bn + "bias"],
                                       training=False, eps=1e-5)  # fmt: skip
    return torch.nn.functional.conv2d(torch.relu(y), p["decode_head.linear_pred.weight"], p["decode_head.linear_pred.bias"])


def _resize(x, like):
    return torch.nn.functional.interpolate(x, size=like.shape[2:], mode="bilinear", align_corners=False)


def daformer_segformer_head(x, p):
    """The published DAFormer / HRDA / MIC SegFormerHead.forward (in_index 0..3), on state dict ``p``."""
    _c = {}
    for i in range(len(x)):
        _c[i] = _mlp(x[i], p, f"decode_head.linear_c.{i}.")
        if i != 0:
            _c[i] = _resize(_c[i], x[0])
    return _conv_module_and_pred(torch.cat(list(_c.values()), dim=1), p)


def nvlabs_segformer_head(x, p):
    """NVlabs SegFormer's SegFormerHead.forward, on state dict ``p``."""
    c1, c2, c3, c4 = x
    _c4 = _resize(_mlp(c4, p, "decode_head.linear_c4."), c1)
    _c3 = _resize(_mlp(c3, p, "decode_head.linear_c3."), c1)
    _c2 = _resize(_mlp(c2, p, "decode_head.linear_c2."), c1)
    _c1 = _mlp(c1, p, "decode_head.linear_c1.")
    return _conv_module_and_pred(torch.cat([_c4, _c3, _c2, _c1], dim=1), p)


def published_segformer_file(path, layout, embed=24, classes=5):
    """An mmseg checkpoint ({"meta", "state_dict"}) of a mit_demo + SegFormer head in ``layout``'s keys
    ("daformer": linear_c.0..3, "nvlabs": linear_c1..4), random float64 weights and BN statistics, with the
    unused conv_seg that both heads inherit from BaseDecodeHead. Returns (path, state, level widths)."""
    g = torch.Generator().manual_seed(7)
    model = build_model(backbone="mit_demo", decode_head="segformer", num_classes=classes, embed_dim=embed)
    state = {k: v.double() for k, v in model.state_dict().items() if k.startswith("backbone.")}
    widths = tuple(model.backbone.embed_dims)

    def rand(*shape, lo=-0.5, hi=0.5):
        return torch.rand(*shape, generator=g, dtype=torch.float64) * (hi - lo) + lo

    for i, w in enumerate(widths):
        name = f"decode_head.linear_c.{i}." if layout == "daformer" else f"decode_head.linear_c{i + 1}."
        state[name + "proj.weight"], state[name + "proj.bias"] = rand(embed, w), rand(embed)
    state["decode_head.linear_fuse.conv.weight"] = rand(embed, embed * len(widths), 1, 1)
    for k, (lo, hi) in {"weight": (0.5, 1.5), "bias": (-0.5, 0.5), "running_mean": (-0.5, 0.5),
                        "running_var": (0.5, 1.5)}.items():  # fmt: skip
        state[f"decode_head.linear_fuse.bn.{k}"] = rand(embed, lo=lo, hi=hi)
    state["decode_head.linear_fuse.bn.num_batches_tracked"] = torch.tensor(100)
    state["decode_head.linear_pred.weight"], state["decode_head.linear_pred.bias"] = rand(classes, embed, 1, 1), rand(classes)
    state["decode_head.conv_seg.weight"], state["decode_head.conv_seg.bias"] = rand(classes, embed, 1, 1), rand(classes)
    torch.save({"meta": {"mmseg_version": "0.16.0"}, "state_dict": state}, path)
    return path, state, widths


@pytest.mark.parametrize("layout, published", [("daformer", daformer_segformer_head), ("nvlabs", nvlabs_segformer_head)])
def test_segformer_head_is_each_published_head(tmp_path, layout, published):
    """A published SegFormer-head file loads (strict) into fastuda's head, which then computes that file's own
    published forward to float64 rounding; sizes that make every level's resize non-trivial."""
    path, state, widths = published_segformer_file(tmp_path / f"{layout}.pth", layout)
    model = build_model(backbone="mit_demo", decode_head="segformer", num_classes=5, embed_dim=24).double().eval()
    report = load_checkpoint(model, path, strict=True)
    assert report.loaded == len([k for k in model.state_dict()])
    g = torch.Generator().manual_seed(3)
    x = [torch.randn(2, w, 19 // 2**i + 1, 27 // 2**i + 1, generator=g, dtype=torch.float64) for i, w in enumerate(widths)]
    with torch.no_grad():
        got = model.decode_head(x)
    want = published(x, state)
    assert got.dtype == torch.float64 and got.shape == want.shape
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


# ----------------------------------------------------------------------------- slide inference dtype


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
def test_slide_inference_returns_the_images_dtype(dtype):
    """Windows of 16 every 8 (up to 4 overlap a pixel); each window's "logits" are its pixels doubled, so the
    average is 2 x the image to an ulp: in float64 no float32 rounding, in bfloat16 exactly, although
    bfloat16 could not hold the sums of 3 (accumulated in float32, returned in bfloat16)."""
    from fastuda.models.slide import slide_inference

    class Doubling(torch.nn.Module):
        def forward(self, x):
            return x * 2

    img = torch.randn(2, 3, 37, 53, dtype=torch.float64).to(dtype)
    with torch.no_grad():
        got = slide_inference(Doubling(), img, 16, 8)
    assert got.dtype == dtype
    # (3x) / 3 rounds by an ulp in float64 / float32; float32 sums of bfloat16 values round back to them exactly
    rtol = 0 if dtype == torch.bfloat16 else 2 * torch.finfo(dtype).eps
    torch.testing.assert_close(got, img * 2, rtol=rtol, atol=0)
