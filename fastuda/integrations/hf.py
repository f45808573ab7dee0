"""Hugging Face transformers Segformer on fastuda's fused MiT attention.

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
training, and an attention mask.
"""

import torch
from torch import nn

from fastuda import ops

IMPLEMENTATION = "fastuda"


def _segformer_module():
    try:
        from transformers.models.segformer import modeling_segformer
    except ImportError as e:  # pragma: no cover - the hf extra is part of [dev]
        raise ImportError(
            "fastuda.integrations.hf needs Hugging Face transformers: pip install 'fastuda[hf]'"
        ) from e
    return modeling_segformer


def patch_segformer(model: nn.Module) -> nn.Module:
    """Makes every Segformer attention layer of ``model`` run fastuda's fused attention (in place);
    returns ``model``. Logits and gradients match the unpatched model up to float rounding."""
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

        AttentionInterface.register(IMPLEMENTATION, _attention_forward)
        model.set_attn_implementation(IMPLEMENTATION)
    return model


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
