"""fastuda.integrations.hf.patch_segformer against an unpatched copy of a randomly initialised Hugging
Face Segformer: logits (and hidden states), the gradient of every parameter, output_attentions,
state-dict keys. Runs with the installed transformers (5.x: attention registry; 4.x: module swap)."""

import copy

import pytest
import torch

import fastuda.ops as ops

transformers = pytest.importorskip("transformers")
from transformers import SegformerConfig, SegformerForSemanticSegmentation, SegformerModel  # noqa: E402

from fastuda.integrations.hf import patch_segformer  # noqa: E402
from fastuda.models import load_checkpoint  # noqa: E402

TRANSFORMERS_MAJOR = int(transformers.__version__.split(".")[0])


def tiny_config(**kwargs):
    """Two stages (16 and 32 channels, 1 and 2 heads, sr 2 and 1), one block each: on a 64 x 64
    image, stage 1 has 256 queries and 64 keys, stage 2 64 and 64. Dropouts off so that train mode
    is deterministic."""
    cfg = dict(
        num_encoder_blocks=2, depths=[1, 1], sr_ratios=[2, 1], hidden_sizes=[16, 32], num_attention_heads=[1, 2],
        patch_sizes=[7, 3], strides=[4, 2], mlp_ratios=[2, 2], decoder_hidden_size=32, num_labels=5,
        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, classifier_dropout_prob=0.0, drop_path_rate=0.0,
    )  # fmt: skip
    cfg.update(kwargs)
    return SegformerConfig(**cfg)


def make_pair(model_cls, dtype=torch.float64, device="cpu"):
    """(patched, reference): the same random weights; the reference keeps the library's default
    attention."""
    torch.manual_seed(0)
    reference = model_cls(tiny_config()).to(device, dtype).train()
    patched = copy.deepcopy(reference)
    assert patch_segformer(patched) is patched
    return patched, reference


def outputs_and_grads(model, pixels):
    model.zero_grad()
    out = model(pixels)
    y = out.logits if hasattr(out, "logits") else out.last_hidden_state
    y.backward(torch.linspace(-1, 1, y.numel(), dtype=y.dtype, device=y.device).view_as(y))
    grads = {name: p.grad.clone() for name, p in model.named_parameters()}
    return y.detach(), grads


def assert_same_model_function(patched, reference, pixels, **tol):
    y, grads = outputs_and_grads(patched, pixels)
    want_y, want_grads = outputs_and_grads(reference, pixels)
    torch.testing.assert_close(y, want_y, **tol)
    assert grads.keys() == want_grads.keys()
    for name, g in want_grads.items():
        torch.testing.assert_close(grads[name], g, **tol, msg=lambda m: f"{name}: {m}")


def attention_calls():
    """(counter, mode): inside ``mode``, counter["n"] counts calls of fastuda's attention op."""
    from torch.utils._python_dispatch import TorchDispatchMode

    counter = {"n": 0}

    class Count(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            counter["n"] += func is torch.ops.fastuda.attention.default
            return func(*args, **(kwargs or {}))

    return counter, Count()


# ----------------------------------------------------------------------------- tier 1: CPU


@pytest.mark.parametrize("model_cls", [SegformerForSemanticSegmentation, SegformerModel])
def test_patched_matches_unpatched_float64(model_cls):
    """In float64 the two differ only by rounding, so every parameter's gradient is compared tightly."""
    patched, reference = make_pair(model_cls)
    assert_same_model_function(patched, reference, torch.randn(2, 3, 64, 64, dtype=torch.float64))


def test_patched_matches_unpatched_float32_and_uses_the_op():
    patched, reference = make_pair(SegformerForSemanticSegmentation, torch.float32)
    # float32 rounding, amplified by the decode head's train-mode BatchNorm over a tiny batch
    assert_same_model_function(patched, reference, torch.randn(2, 3, 64, 64), rtol=1e-3, atol=1e-4)
    counter, mode = attention_calls()
    with mode:
        patched(torch.randn(1, 3, 64, 64))
    assert counter["n"] == 2  # one attention layer per stage


def test_output_attentions_takes_the_eager_path():
    patched, reference = make_pair(SegformerForSemanticSegmentation)
    if TRANSFORMERS_MAJOR >= 5:
        reference.set_attn_implementation("eager")  # the library's default (sdpa) returns no weights
    pixels = torch.randn(2, 3, 64, 64, dtype=torch.float64)
    got = patched(pixels, output_attentions=True)
    want = reference(pixels, output_attentions=True)
    assert len(got.attentions) == 2
    assert got.attentions[0].shape == (2, 1, 256, 64) and got.attentions[1].shape == (2, 2, 64, 64)
    for g, w in zip(got.attentions, want.attentions):
        torch.testing.assert_close(g, w)
    torch.testing.assert_close(got.logits, want.logits)
    counter, mode = attention_calls()
    with mode:
        patched(pixels, output_attentions=True)
    assert counter["n"] == 0


def test_weights_and_state_dict_are_kept():
    patched, reference = make_pair(SegformerForSemanticSegmentation)
    assert list(patched.state_dict()) == list(reference.state_dict())
    for (name, p), (_, r) in zip(patched.named_parameters(), reference.named_parameters()):
        torch.testing.assert_close(p, r, rtol=0, atol=0, msg=name)
    fresh = SegformerForSemanticSegmentation(tiny_config()).double()
    patch_segformer(fresh).load_state_dict(reference.state_dict(), strict=True)
    pixels = torch.randn(1, 3, 64, 64, dtype=torch.float64)
    torch.testing.assert_close(fresh.eval()(pixels).logits, reference.eval()(pixels).logits)


def test_patching_twice_and_bad_models():
    patched, reference = make_pair(SegformerModel)
    patch_segformer(patched)
    pixels = torch.randn(1, 3, 64, 64, dtype=torch.float64)
    torch.testing.assert_close(patched(pixels).last_hidden_state, reference(pixels).last_hidden_state)
    with pytest.raises(TypeError, match="expects a transformers SegformerModel or SegformerForSemanticSegmentation"):
        patch_segformer(torch.nn.Linear(2, 2))


@pytest.mark.skipif(TRANSFORMERS_MAJOR < 5, reason="transformers 5.x attention registry")
def test_v5_uses_the_attention_registry():
    patched, _ = make_pair(SegformerModel)
    assert patched.config._attn_implementation == "fastuda"
    assert "fastuda" in transformers.AttentionInterface._global_mapping


@pytest.mark.skipif(TRANSFORMERS_MAJOR >= 5, reason="transformers 4.x SegformerEfficientSelfAttention")
def test_v4_replaces_every_self_attention_module():
    from transformers.models.segformer import modeling_segformer as seg

    patched, reference = make_pair(SegformerModel)
    originals = [n for n, m in reference.named_modules() if type(m) is seg.SegformerEfficientSelfAttention]
    replaced = [n for n, m in patched.named_modules() if isinstance(m, seg.SegformerEfficientSelfAttention)]
    assert originals == replaced and len(originals) == 2
    assert all(type(patched.get_submodule(n)) is not seg.SegformerEfficientSelfAttention for n in replaced)


# ----------------------------------------------------------------------------- tier 2: interpreter


@pytest.mark.interpreter
def test_patched_on_triton_kernels_matches_unpatched(triton_cpu):
    """The Triton kernels (interpreter) inside the patched model, float32."""
    patched, reference = make_pair(SegformerForSemanticSegmentation, torch.float32)
    pixels = torch.randn(2, 3, 64, 64)
    y, grads = outputs_and_grads(patched, pixels)
    want_y, want_grads = outputs_and_grads(reference, pixels)  # the library's own attention
    torch.testing.assert_close(y, want_y, rtol=1e-3, atol=1e-4)
    for name, g in want_grads.items():
        torch.testing.assert_close(grads[name], g, rtol=1e-3, atol=1e-4, msg=lambda m: f"{name}: {m}")


# ----------------------------------------------------------------------------- tier 3: CUDA


@pytest.mark.cuda
def test_cuda_patched_matches_unpatched_float32():
    patched, reference = make_pair(SegformerForSemanticSegmentation, torch.float32, "cuda")
    assert_same_model_function(patched, reference, torch.randn(2, 3, 256, 256, device="cuda"), rtol=1e-3, atol=1e-3)


@pytest.mark.cuda
def test_cuda_patched_bfloat16_within_library_error():
    """bfloat16: the patched model's logits and parameter gradients are within 2x the unpatched
    model's own bfloat16 error (both against a float64 copy), plus a small atol."""
    patched, reference = make_pair(SegformerForSemanticSegmentation, torch.bfloat16, "cuda")
    exact = copy.deepcopy(reference).double()
    pixels = torch.randn(2, 3, 256, 256, device="cuda")
    y, grads = outputs_and_grads(patched, pixels.bfloat16())
    ref_y, ref_grads = outputs_and_grads(reference, pixels.bfloat16())
    exact_y, exact_grads = outputs_and_grads(exact, pixels.double())
    pairs = [("logits", y, ref_y, exact_y)] + [(n, grads[n], ref_grads[n], g) for n, g in exact_grads.items()]
    for name, got, lib, want in pairs:
        err = (got.double() - want).abs().max().item()
        lib_err = (lib.double() - want).abs().max().item()
        assert err <= 2 * lib_err + 1e-2 * want.abs().max().item(), f"{name}: {err:.3g} vs library {lib_err:.3g}"


# ----------------------------------------------------------------------------- export_hf / loading HF weights


def fastuda_segformer(num_classes=5):
    """A MiT (demo widths) + SegFormer head with random weights and BatchNorm statistics, eval mode."""
    from fastuda.models import build_model

    torch.manual_seed(0)
    model = build_model(backbone="mit_demo", decode_head="segformer", num_classes=num_classes, embed_dim=32)
    with torch.no_grad():
        model.decode_head.linear_fuse.bn.running_mean.uniform_(-0.5, 0.5)
        model.decode_head.linear_fuse.bn.running_var.uniform_(0.5, 1.5)
        for p in model.parameters():  # away from the init (zero biases, unit norms)
            p.add_(0.02 * torch.randn_like(p))
    return model.eval()


def test_export_segformer_head_matches_transformers_logits(tmp_path):
    import fastuda

    model = fastuda_segformer()
    folder = fastuda.export_hf(model, tmp_path / "hf")
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors"]
    hf = SegformerForSemanticSegmentation.from_pretrained(folder).eval()
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        # transformers' LayerNorms use eps 1e-5 where MiT's blocks use 1e-6: rounding-level differences
        torch.testing.assert_close(hf(x).logits, model(x), rtol=1e-4, atol=1e-4)
    # and back: the folder, its safetensors file and the state dict in transformers 4.x names load exactly
    for source in (folder, folder / "model.safetensors", v4_names(hf.state_dict())):
        fresh = fastuda_segformer()
        for p in fresh.parameters():
            p.data.normal_()
        report = load_checkpoint(fresh, source, strict=True)
        assert report.layout == "Hugging Face Segformer" and report.loaded == len(model.state_dict())
        for k, v in model.state_dict().items():
            torch.testing.assert_close(fresh.state_dict()[k], v, rtol=0, atol=0, msg=k)


def v4_names(state):
    """transformers 4.x key names (the ones on the Hub), written out by hand from 4.x's modules."""
    import re

    out = {}
    for k, v in state.items():
        k = re.sub(r"stages\.(\d+)\.patch_embeddings\.", r"encoder.patch_embeddings.\1.", k)
        k = re.sub(r"stages\.(\d+)\.blocks\.", r"encoder.block.\1.", k)
        k = re.sub(r"stages\.(\d+)\.layer_norm\.", r"encoder.layer_norm.\1.", k)
        for new, old in (("attention.q_proj", "attention.self.query"), ("attention.k_proj", "attention.self.key"),
                         ("attention.v_proj", "attention.self.value"), ("attention.o_proj", "attention.output.dense"),
                         ("attention.sequence_reduction.sequence_reduction", "attention.self.sr"),
                         ("attention.sequence_reduction.layer_norm", "attention.self.layer_norm"),
                         ("mlp.fc1", "mlp.dense1"), ("mlp.fc2", "mlp.dense2"), ("layernorm_before", "layer_norm_1"),
                         ("layernorm_after", "layer_norm_2"), ("linear_projections", "linear_c")):  # fmt: skip
            k = k.replace(new, old)
        out[k] = v
    assert any(k.startswith("segformer.encoder.block.0.0.attention.self.key") for k in out)
    return out


def test_export_encoder_matches_transformers_features(tmp_path):
    import fastuda
    from fastuda.errors import UserError

    from _checkpoints import network, write_released

    _, daformer = network("daformer")
    path = write_released(tmp_path / "daformer.pth", daformer)
    with pytest.raises(UserError, match="is a mit_demo \\+ daformer: transformers has no daformer head .* encoder_only=True"):
        fastuda.export_hf(path, tmp_path / "no")
    assert not (tmp_path / "no").exists()
    folder = fastuda.export_hf(path, tmp_path / "encoder", encoder_only=True)
    hf = SegformerModel.from_pretrained(folder).eval()
    x = torch.randn(1, 3, 61, 83)  # odd sizes
    with torch.no_grad():
        got = hf(x, output_hidden_states=True).hidden_states
        want = daformer.backbone(x)
    assert len(got) == 4
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-4)
    with pytest.raises(UserError, match="exists and is not empty"):
        fastuda.export_hf(path, tmp_path / "encoder", encoder_only=True)


def test_predict_from_a_transformers_folder(tmp_path):
    """A SegformerForSemanticSegmentation folder goes straight into predict (architecture from its keys)."""
    import numpy as np
    from PIL import Image

    import fastuda
    from fastuda import Segmenter, predict
    from fastuda.data.transforms import normalize

    model = fastuda_segformer(num_classes=19)
    folder = fastuda.export_hf(model, tmp_path / "hf")
    image = np.random.default_rng(0).integers(0, 256, (37, 50, 3), dtype=np.uint8)
    Image.fromarray(image).save(tmp_path / "x.png")
    args = [str(folder), str(tmp_path / "x.png"), "--out", str(tmp_path / "out"), "--native", "--no-progress"]
    assert predict.main(args) == 0
    labels = torch.from_numpy(np.array(Image.open(tmp_path / "out" / "labelTrainIds" / "x.png"))).long()
    x = normalize(torch.from_numpy(image).permute(2, 0, 1))[None]
    with torch.no_grad():
        want = torch.nn.functional.interpolate(model(x), size=(37, 50), mode="bilinear", align_corners=False).argmax(1)[0]
    assert torch.equal(labels, want)
    seg = Segmenter.from_checkpoint(folder, "cpu")
    assert "mit_demo + segformer" in repr(seg) and (tmp_path / "out" / "labelIds" / "x.png").is_file()


def test_segformer_head_both_ways_is_transformers_decode_head():
    """transformers' SegformerDecodeHead, run directly (it concatenates the levels deepest first), in float64:
    its weights loaded into fastuda's head give its logits, and fastuda's head exported (model_to_hf_keys)
    into a fresh SegformerDecodeHead gives fastuda's, both to rounding."""
    from transformers.models.segformer.modeling_segformer import SegformerDecodeHead

    from fastuda.models import build_model
    from fastuda.models.mix_transformer import model_to_hf_keys

    model = build_model(backbone="mit_demo", decode_head="segformer", num_classes=5, embed_dim=24).double().eval()
    widths = list(model.backbone.embed_dims)
    config = tiny_config(num_encoder_blocks=4, hidden_sizes=widths, depths=[1] * 4, sr_ratios=[1] * 4,
                         num_attention_heads=[1] * 4, decoder_hidden_size=24)  # fmt: skip
    torch.manual_seed(5)
    hf = SegformerDecodeHead(config).double().eval()
    with torch.no_grad():
        for name, t in hf.state_dict().items():
            if t.is_floating_point():
                t.copy_(torch.rand_like(t) + 0.5 if name.endswith(("running_var", "weight")) and t.dim() == 1
                        else torch.rand_like(t) - 0.5)  # fmt: skip
    x = [torch.randn(2, w, 19 // 2**i + 1, 27 // 2**i + 1, dtype=torch.float64) for i, w in enumerate(widths)]
    encoder = {k: v for k, v in model_to_hf_keys(model.state_dict()).items() if not k.startswith("decode_head.")}
    load_checkpoint(model, {**encoder, **{f"decode_head.{k}": v for k, v in hf.state_dict().items()}}, strict=True)
    with torch.no_grad():
        torch.testing.assert_close(model.decode_head(x), hf(x), rtol=1e-12, atol=1e-12)
        for p in model.decode_head.parameters():  # new weights, then out to transformers
            p.add_(torch.randn_like(p))
        fresh = SegformerDecodeHead(config).double().eval()
        exported = model_to_hf_keys(model.state_dict())
        fresh.load_state_dict({k.removeprefix("decode_head."): v for k, v in exported.items()
                               if k.startswith("decode_head.")}, strict=True)  # fmt: skip
        torch.testing.assert_close(fresh(x), model.decode_head(x), rtol=1e-12, atol=1e-12)


@pytest.mark.skipif(TRANSFORMERS_MAJOR < 5, reason="transformers 5.x attention registry")
def test_explicit_choice_and_callers_config_are_respected():
    """Issue 20 #10: the patch replaced an explicit attn_implementation="eager", and wrote "fastuda"
    into the caller's config object, so models built from it later started patched."""
    config = tiny_config()
    model = SegformerModel(config)
    patch_segformer(model)
    assert model.config._attn_implementation == "fastuda" and model.config is not config
    assert config._attn_implementation_internal in (None, "sdpa")
    assert SegformerModel(config).config._attn_implementation != "fastuda"
    eager = SegformerModel(tiny_config(attn_implementation="eager"))
    with pytest.warns(UserWarning, match="attn_implementation='eager', an explicit choice; it is left unpatched"):
        patch_segformer(eager)
    assert eager.config._attn_implementation == "eager"
    counter, mode = attention_calls()
    with mode:
        eager(torch.randn(1, 3, 64, 64))
    assert counter["n"] == 0
    assert patch_segformer(eager, force=True).config._attn_implementation == "fastuda"


def test_fallbacks_say_why_once(monkeypatch):
    """Issue 20 #10: attention dropout in training and output_attentions=True fell back in silence."""
    import warnings

    from fastuda.integrations import hf

    monkeypatch.setattr(hf, "_SAID", set())
    torch.manual_seed(0)
    model = patch_segformer(SegformerModel(tiny_config(attention_probs_dropout_prob=0.1)).train())
    pixels = torch.randn(1, 3, 64, 64)
    with pytest.warns(UserWarning) as said:
        model(pixels)
        model(pixels)
        model(pixels, output_attentions=True)
        model(pixels, output_attentions=True)
    messages = [str(w.message) for w in said if "patch_segformer" in str(w.message)]
    assert len(messages) == 2, messages
    assert "attention dropout" in messages[0] and "no dropout" in messages[0]
    assert "output_attentions=True" in messages[1]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model.eval()(pixels)  # fused, nothing to say


# ----------------------------------------------------------------------------- transformers' own suite


def _suite_module():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "bench" / "hf_segformer_suite.py"
    spec = importlib.util.spec_from_file_location("hf_segformer_suite", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.skipif(TRANSFORMERS_MAJOR < 5, reason="transformers 5.x attention registry")
def test_suite_harness_patches_every_outer_model_once(monkeypatch):
    """bench/hf_segformer_suite.py's plugin (the patched run of transformers' Segformer tests):
    every model built, however built, comes out patched; an explicit eager stays eager; unwrapping
    restores the plain classes."""
    import tempfile

    from fastuda.integrations import hf

    monkeypatch.setattr(hf, "_SAID", set())
    undo = _suite_module()._install_patch()
    try:
        config = tiny_config()
        head = SegformerForSemanticSegmentation(config)
        assert head.config._attn_implementation == "fastuda" and head.segformer.config is head.config
        assert config._attn_implementation_internal in (None, "sdpa")
        assert SegformerModel._from_config(config).config._attn_implementation == "fastuda"
        with tempfile.TemporaryDirectory() as folder:
            head.save_pretrained(folder)
            assert SegformerForSemanticSegmentation.from_pretrained(folder).config._attn_implementation == "fastuda"
            with pytest.warns(UserWarning, match="explicit choice"):
                eager = SegformerForSemanticSegmentation.from_pretrained(folder, attn_implementation="eager")
            assert eager.config._attn_implementation == "eager"
    finally:
        undo()
    assert SegformerModel(tiny_config()).config._attn_implementation == "sdpa"


@pytest.mark.slow
def test_transformers_segformer_suite_same_with_the_patch():
    """transformers' own tests/models/segformer/test_modeling_segformer.py, plain and with every model
    patched (~20 min on 2 cores): no difference besides EXPECTED. Needs FASTUDA_TRANSFORMERS_TESTS, a
    transformers checkout at the installed version, and FASTUDA_TRANSFORMERS_SITE if `parameterized`
    is not installed (see docs/testing.md)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    checkout = os.environ.get("FASTUDA_TRANSFORMERS_TESTS")
    if not checkout:
        pytest.skip("FASTUDA_TRANSFORMERS_TESTS (a transformers checkout with tests/) is not set")
    site = os.environ.get("FASTUDA_TRANSFORMERS_SITE")
    script = Path(__file__).resolve().parent.parent / "bench" / "hf_segformer_suite.py"
    cmd = [sys.executable, str(script), checkout] + (["--site", site] if site else [])
    run = subprocess.run(cmd, capture_output=True, text=True)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
