"""Hugging Face transformers Segformer: fastuda's fused MiT attention inside it, and export to it.

``patch_segformer(model)`` routes the efficient self-attention of every layer of a
``SegformerModel`` / ``SegformerForSemanticSegmentation`` (any ``SegformerPreTrainedModel``)
through ``fastuda.ops.attention``, in place, with the model's own weights:

* transformers 5.x computes Segformer's attention (``SegformerAttention``: q_proj, k_proj, v_proj,
  o_proj) through its attention-function registry. The patch registers a ``"fastuda"`` function
  with ``AttentionInterface`` and selects it with ``model.set_attn_implementation("fastuda")``, the
  library's own hook; no module is replaced.
* transformers 4.x has ``SegformerEfficientSelfAttention`` modules (query, key, value, sr,
  layer_norm) that compute attention inline. The patch replaces each with a subclass that keeps the
  same submodules (same parameters, same state-dict keys) and a fused forward.

Requests that the fused op does not cover take the model's eager path, which materialises the
attention probabilities: ``output_attentions=True`` (it needs them), attention dropout while
training (the op has no dropout), and an attention mask; the first two say so once, as a warning.

``export_hf(checkpoint, folder)`` writes a fastuda (or released, or mmseg) network as a
transformers ``save_pretrained`` folder: a SegFormer-head network as a whole
``SegformerForSemanticSegmentation``, a MiT encoder as a ``SegformerModel``. Reading the other
way, ``fastuda.models.load_checkpoint`` takes such folders. transformers builds every LayerNorm
with eps 1e-5 where MiT uses 1e-6 in its blocks and stage norms (also so in transformers' own
conversion of the SegFormer weights), so the exported network computes the same function up to
that rounding.
"""

import copy
import os
import warnings
from pathlib import Path

import torch
from torch import nn

from fastuda import ops
from fastuda._io import atomic_write
from fastuda.data.labels import CITYSCAPES_CLASSES
from fastuda.errors import UserError
from fastuda.models.architecture import architecture
from fastuda.models.checkpoint import read_model_state
from fastuda.models.mix_transformer import hf_v5_name, mit, model_to_hf_keys

IMPLEMENTATION = "fastuda"


def _segformer_module():
    try:
        from transformers.models.segformer import modeling_segformer
    except ImportError as e:  # pragma: no cover - the hf extra is part of [dev]
        raise ImportError(
            "fastuda.integrations.hf needs Hugging Face transformers: pip install 'fastuda[hf]'"
        ) from e
    return modeling_segformer


def patch_segformer(model: nn.Module, *, force: bool = False) -> nn.Module:
    """Makes every Segformer attention layer of ``model`` run fastuda's fused attention (in place);
    returns ``model``. Logits and gradients match the unpatched model up to float rounding.

    transformers 5.x: a model built with an explicit ``attn_implementation`` other than the
    default ``"sdpa"`` (say ``"eager"``) is left as it is, with a warning, unless ``force``. The
    model gets its own copy of its config: the caller's config object, and models built from it
    later, are not patched."""
    seg = _segformer_module()
    if not isinstance(model, seg.SegformerPreTrainedModel):
        raise TypeError(
            "patch_segformer expects a transformers SegformerModel or SegformerForSemanticSegmentation "
            f"(a SegformerPreTrainedModel), got {type(model).__name__}"
        )
    if hasattr(seg, "SegformerEfficientSelfAttention"):
        _replace_v4_modules(model, seg.SegformerEfficientSelfAttention)
    else:
        from transformers import AttentionInterface

        chosen = getattr(model.config, "_attn_implementation_internal", None)
        if chosen not in (None, "sdpa", IMPLEMENTATION) and not force:
            _say_once(f"patch_segformer: the model was built with attn_implementation={chosen!r}, an explicit "
                      "choice; it is left unpatched (patch_segformer(model, force=True) replaces it)")  # fmt: skip
            return model
        caller = model.config
        own = copy.deepcopy(caller)
        for module in model.modules():  # every layer reads its implementation from the shared config
            if getattr(module, "config", None) is caller:
                module.config = own
        AttentionInterface.register(IMPLEMENTATION, _attention_forward)
        model.set_attn_implementation(IMPLEMENTATION)
    return model


_SAID: set[str] = set()


def _say_once(message: str) -> None:
    """A UserWarning the first time ``message`` comes up in this process (forwards repeat them)."""
    if message not in _SAID:
        _SAID.add(message)
        warnings.warn(message, UserWarning, stacklevel=3)


_WEIGHTS = ("patch_segformer: output_attentions=True takes transformers' eager attention (the fused op never "
            "materialises the probabilities it would return)")  # fmt: skip
_DROPOUT = ("patch_segformer: attention dropout (config.attention_probs_dropout_prob > 0) while training takes "
            "transformers' eager attention: the fused op has no dropout; eval mode, or a probability of 0, is fused")


# ----------------------------------------------------------------------------- transformers 5.x


def _attention_forward(
    module: nn.Module,
    query: torch.Tensor,  # (B, heads, N, d)
    key: torch.Tensor,  # (B, heads, M, d)
    value: torch.Tensor,  # (B, heads, M, d)
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    **kwargs,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The ``"fastuda"`` entry of transformers' AttentionInterface: returns ((B, N, heads, d), None)
    like the library's sdpa function, or the eager function's result when the probabilities are
    needed or the call is outside the op's contract."""
    config = getattr(module, "config", None)
    wants_weights = kwargs.get("output_attentions", getattr(config, "output_attentions", False))
    causal = kwargs.get("is_causal") or getattr(module, "is_causal", False)
    if wants_weights or attention_mask is not None or dropout > 0.0 or causal:
        if wants_weights or dropout > 0.0:
            _say_once(_WEIGHTS if wants_weights else _DROPOUT)
        eager = _segformer_module().eager_attention_forward
        return eager(module, query, key, value, attention_mask, scaling=scaling, dropout=dropout, **kwargs)
    out = ops.attention(query, key, value, scale=scaling)  # (B, heads, N, d), stored (B, N, heads, d)
    return out.transpose(1, 2), None  # (B, N, heads, d): a contiguous view


# ----------------------------------------------------------------------------- transformers 4.x

_V4_CLASSES: dict[type, type] = {}


def _v4_class(base: type) -> type:
    """A subclass of transformers 4.x ``SegformerEfficientSelfAttention`` with a fused forward; the
    base class's forward stays the path for ``output_attentions`` and attention dropout."""
    if base in _V4_CLASSES:
        return _V4_CLASSES[base]

    class FastudaSegformerEfficientSelfAttention(base):
        @classmethod
        def adopt(cls, original: nn.Module) -> nn.Module:
            """A new module holding ``original``'s submodules, parameters and settings."""
            new = cls.__new__(cls)
            new.__dict__.update(original.__dict__)
            for name in ("_parameters", "_buffers", "_modules"):
                new.__dict__[name] = dict(original.__dict__[name])
            return new

        def _heads(self, x: torch.Tensor) -> torch.Tensor:
            B, L, _ = x.shape
            return x.view(B, L, self.num_attention_heads, self.attention_head_size).transpose(1, 2)  # (B, heads, L, d)

        def forward(self, hidden_states, height, width, output_attentions=False):
            if output_attentions or (self.training and self.dropout.p > 0):
                _say_once(_WEIGHTS if output_attentions else _DROPOUT)
                return super().forward(hidden_states, height, width, output_attentions)
            B, N, C = hidden_states.shape
            query = self._heads(self.query(hidden_states))  # (B, heads, N, d)
            if self.sr_ratio > 1:
                x = hidden_states.permute(0, 2, 1).reshape(B, C, height, width)  # (B, C, H, W)
                x = self.sr(x).reshape(B, C, -1).permute(0, 2, 1)  # (B, M, C)
                hidden_states = self.layer_norm(x)
            key = self._heads(self.key(hidden_states))  # (B, heads, M, d)
            value = self._heads(self.value(hidden_states))  # (B, heads, M, d)
            context = ops.attention(query, key, value, scale=self.attention_head_size**-0.5)
            return (context.transpose(1, 2).reshape(B, N, self.all_head_size),)  # (B, N, C)

    _V4_CLASSES[base] = FastudaSegformerEfficientSelfAttention
    return FastudaSegformerEfficientSelfAttention


def _replace_v4_modules(model: nn.Module, base: type) -> None:
    fused = _v4_class(base)
    targets = [(name, m) for name, m in model.named_modules() if type(m) is base]
    for name, module in targets:
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name), child, fused.adopt(module))


# ----------------------------------------------------------------------------- export


def export_hf(checkpoint, folder, *, which: str = "model", encoder_only: bool = False) -> Path:
    """Writes ``checkpoint`` as a Hugging Face transformers folder (``config.json`` +
    ``model.safetensors``) that ``from_pretrained`` loads; returns the folder.

    Args:
        checkpoint: a path (any file ``fastuda.models.checkpoint.read_checkpoint`` reads) or a
            fastuda model (``EncoderDecoder`` with a MiT encoder).
        folder: the output folder; it must not exist, or be empty. It is written under a
            temporary name and renamed, so it never holds a partial export.
        which: for UDA and fastuda checkpoints, ``"model"`` (student), ``"ema_model"`` (teacher)
            or ``"imnet_model"``.
        encoder_only: export the MiT encoder alone as a ``SegformerModel`` even when the
            network has a head. Without it, a SegFormer head goes out as a
            ``SegformerForSemanticSegmentation``, and a DAFormer, HRDA or DeepLabV2 head is an
            error: transformers has no such head.
    """
    seg = _segformer_module()
    if isinstance(checkpoint, nn.Module):
        state, name = checkpoint.state_dict(), type(checkpoint).__name__
    else:
        state, _, _ = read_model_state(checkpoint, which)
        name = os.fspath(checkpoint)
    arch = architecture(state, name)
    if not arch.backbone.startswith("mit"):
        raise UserError(f"{name}: only MiT encoders have a transformers equivalent (Segformer), not {arch.backbone}")
    whole = arch.head == "segformer" and not encoder_only
    if arch.head not in (None, "segformer") and not encoder_only:
        raise UserError(f"{name} is a {arch}: transformers has no {arch.head.upper() if arch.head == 'hrda' else arch.head}"
                        " head (its Segformer has the all-MLP SegFormer head only); export the MiT encoder with "
                        "export_hf(..., encoder_only=True)")  # fmt: skip
    state = {k: v for k, v in state.items() if k.startswith("backbone.") or (whole and k.startswith("decode_head."))}
    config = _segformer_config(state, arch, whole)
    model = (seg.SegformerForSemanticSegmentation if whole else seg.SegformerModel)(config)
    # our names in 5.x form -> this transformers' own names (4.x or 5.x)
    own = {hf_v5_name(k): k for k in model.state_dict()}
    converted = model_to_hf_keys(state)
    mapped = {own[hf_v5_name(k)]: v for k, v in converted.items() if hf_v5_name(k) in own}
    missing, _ = model.load_state_dict(mapped, strict=False)
    if missing or len(mapped) != len(converted):  # a bug in the key mapping, not the user's
        raise RuntimeError(f"export to transformers: {sorted(missing)[:5]} unset, "
                           f"{sorted(set(map(hf_v5_name, converted)) - set(own))[:5]} without a place")  # fmt: skip
    folder = Path(folder)
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise UserError(f"export folder {folder} exists and is not empty")
    return atomic_write(folder, model.save_pretrained, folder=True)


def _segformer_config(state: dict, arch, whole: bool):
    """The transformers ``SegformerConfig`` of a MiT (+ SegFormer head) state dict."""
    from transformers import SegformerConfig

    encoder = mit(arch.backbone, drop_path_rate=0.0)  # heads, reduction ratios and MLP widths of the variant
    blocks = [getattr(encoder, f"block{i}")[0] for i in range(1, 5)]
    kwargs = dict(
        num_encoder_blocks=4, depths=[len(getattr(encoder, f"block{i}")) for i in range(1, 5)],
        hidden_sizes=list(encoder.embed_dims), num_attention_heads=[b.attn.num_heads for b in blocks],
        sr_ratios=[b.attn.sr_ratio for b in blocks], patch_sizes=[7, 3, 3, 3], strides=[4, 2, 2, 2],
        mlp_ratios=[b.mlp.fc1.out_features // b.mlp.fc1.in_features for b in blocks], hidden_act="gelu",
        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, drop_path_rate=0.0, layer_norm_eps=1e-6,
    )  # fmt: skip
    if whole:
        kwargs.update(decoder_hidden_size=arch.embed_dim, num_labels=arch.num_classes, classifier_dropout_prob=0.1)
        if arch.num_classes == len(CITYSCAPES_CLASSES):
            kwargs["id2label"] = dict(enumerate(CITYSCAPES_CLASSES))
            kwargs["label2id"] = {n: i for i, n in enumerate(CITYSCAPES_CLASSES)}
    return SegformerConfig(**kwargs)
