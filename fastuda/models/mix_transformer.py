"""Mix Transformer (MiT) encoders b0..b5.

Xie et al., "SegFormer: Simple and Efficient Design for Semantic Segmentation
with Transformers", NeurIPS 2021. Written fresh for fastuda (the original file
carries a non-commercial licence). Module and parameter names follow the
released ImageNet checkpoints ``mit_b*.pth`` (``patch_embed1.proj``,
``block1.0.attn.q``, ``block1.0.mlp.dwconv.dwconv``, ``norm1``, ...), so they
load unchanged; the attention is ``fastuda.nn.EfficientSelfAttention`` and runs
the fused ``fastuda.ops.attention`` kernel on CUDA.
"""

import re
from collections.abc import Sequence

import torch
from timm.layers import DropPath, trunc_normal_
from torch import nn

from fastuda.nn import EfficientSelfAttention

from .daformer_head import FUSE_KEY, fuse_levels, reverse_fuse_blocks


class OverlapPatchEmbed(nn.Module):
    """Overlapping patch embedding: a strided conv (7x7 / 4 at stage 1, 3x3 / 2 after)
    and LayerNorm (eps 1e-5, the published default)."""

    def __init__(self, in_channels: int, embed_dim: int, *, patch_size: int, stride: int):
        super().__init__()
        self.proj = nn.Conv2d(in_channels, embed_dim, patch_size, stride=stride, padding=patch_size // 2)
        self.norm = nn.LayerNorm(embed_dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, int, int]:
        x = self.proj(x)  # (B, D, H, W)
        _, _, H, W = x.shape
        return self.norm(x.flatten(2).transpose(1, 2)), H, W  # (B, H*W, D)


class DWConv(nn.Module):
    """3x3 depthwise conv over the token grid (the "Mix" of Mix-FFN: positional information)."""

    def __init__(self, dim: int):
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)

    def forward(self, x: torch.Tensor, H: int, W: int) -> torch.Tensor:
        B, N, C = x.shape
        x = self.dwconv(x.transpose(1, 2).reshape(B, C, H, W))  # (B, C, H, W)
        return x.flatten(2).transpose(1, 2)  # (B, N, C)


class MixFFN(nn.Module):
    """fc1 -> 3x3 depthwise conv -> GELU -> fc2."""

    def __init__(self, dim: int, hidden_dim: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.dwconv = DWConv(hidden_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dim, dim)

    def forward(self, x: torch.Tensor, H: int, W: int) -> torch.Tensor:
        return self.fc2(self.act(self.dwconv(self.fc1(x), H, W)))


class Block(nn.Module):
    """Pre-norm transformer block: x + DropPath(attn(LN(x))), x + DropPath(ffn(LN(x)))."""

    def __init__(self, dim: int, num_heads: int, *, mlp_ratio: float, sr_ratio: int, drop_path: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = EfficientSelfAttention(dim, num_heads=num_heads, qkv_bias=True, sr_ratio=sr_ratio)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = MixFFN(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor, H: int, W: int) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x), H, W))
        return x + self.drop_path(self.mlp(self.norm2(x), H, W))


class MixVisionTransformer(nn.Module):
    """The MiT encoder: four stages of patch embedding, blocks and LayerNorm.

    Returns the feature maps at strides 4, 8, 16 and 32, (B, embed_dims[i], H/s, W/s).
    Stochastic depth grows linearly from 0 to ``drop_path_rate`` over all blocks.
    """

    def __init__(
        self,
        *,
        embed_dims: Sequence[int] = (64, 128, 320, 512),  # C_i, channels per stage
        num_heads: Sequence[int] = (1, 2, 5, 8),  # N_i, attention heads per stage
        depths: Sequence[int] = (3, 6, 40, 3),  # L_i, blocks per stage
        sr_ratios: Sequence[int] = (8, 4, 2, 1),  # R_i, key/value spatial reduction per stage
        mlp_ratio: float = 4.0,  # E_i, Mix-FFN expansion
        drop_path_rate: float = 0.1,
        in_channels: int = 3,
    ):
        super().__init__()
        self.embed_dims = tuple(embed_dims)
        rates = torch.linspace(0, drop_path_rate, sum(depths)).tolist()
        start = 0
        for i, (dim, heads, depth, sr) in enumerate(zip(embed_dims, num_heads, depths, sr_ratios), start=1):
            prev = in_channels if i == 1 else embed_dims[i - 2]
            patch, stride = (7, 4) if i == 1 else (3, 2)
            setattr(self, f"patch_embed{i}", OverlapPatchEmbed(prev, dim, patch_size=patch, stride=stride))
            blocks = [Block(dim, heads, mlp_ratio=mlp_ratio, sr_ratio=sr, drop_path=rates[start + j]) for j in range(depth)]
            setattr(self, f"block{i}", nn.ModuleList(blocks))
            setattr(self, f"norm{i}", nn.LayerNorm(dim, eps=1e-6))
            start += depth
        self.apply(_init_weights)

    @property
    def out_channels(self) -> list[int]:
        return list(self.embed_dims)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        B = x.shape[0]
        features = []
        for i in range(1, 5):
            x, H, W = getattr(self, f"patch_embed{i}")(x)  # (B, H*W, C_i)
            for block in getattr(self, f"block{i}"):
                x = block(x, H, W)
            x = getattr(self, f"norm{i}")(x)
            x = x.transpose(1, 2).reshape(B, -1, H, W)  # (B, C_i, H, W)
            features.append(x)
        return features


def _init_weights(m: nn.Module) -> None:
    """The published initialisation (used when no ImageNet weights are loaded)."""
    if isinstance(m, nn.Linear):
        trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)
    elif isinstance(m, nn.Conv2d):
        fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
        nn.init.normal_(m.weight, 0.0, (2.0 / fan_out) ** 0.5)
        if m.bias is not None:
            nn.init.zeros_(m.bias)


# ----------------------------------------------------------------------------- checkpoint remapping
# External layouts of MiT into fastuda's keys (the files are read and their layout detected in
# ``checkpoint.py``): SegFormer's ImageNet encoders, and transformers' Segformer (MiT and, for
# ``SegformerForSemanticSegmentation``, its all-MLP head: ``daformer_head.SegFormerHead``).


def imagenet_to_model_keys(state: dict) -> dict:
    """SegFormer's ImageNet ``mit_b*.pth`` -> ``backbone.*`` keys; its classifier (``head.*``) is not ours."""
    return {f"backbone.{k}": v for k, v in state.items() if not k.startswith("head.")}


# Hugging Face transformers' Segformer
# transformers 4.x names -> 5.x names (transformers' own conversion_mapping.py for Segformer)
_HF_V4_TO_V5 = [
    (r"encoder\.patch_embeddings\.(\d+)\.", r"stages.\1.patch_embeddings."),
    (r"encoder\.block\.(\d+)\.", r"stages.\1.blocks."),
    (r"encoder\.layer_norm\.(\d+)\.", r"stages.\1.layer_norm."),
    (r"attention\.self\.query\.", "attention.q_proj."),
    (r"attention\.self\.key\.", "attention.k_proj."),
    (r"attention\.self\.value\.", "attention.v_proj."),
    (r"attention\.self\.sr\.", "attention.sequence_reduction.sequence_reduction."),
    (r"attention\.self\.layer_norm\.", "attention.sequence_reduction.layer_norm."),
    (r"attention\.output\.dense\.", "attention.o_proj."),
    (r"mlp\.dense1\.", "mlp.fc1."),
    (r"mlp\.dense2\.", "mlp.fc2."),
    (r"layer_norm_1\.", "layernorm_before."),
    (r"layer_norm_2\.", "layernorm_after."),
    (r"decode_head\.linear_c\.", "decode_head.linear_projections."),
]
# 5.x block names -> MiT names
_HF_BLOCK = {
    "layernorm_before": "norm1", "layernorm_after": "norm2", "attention.q_proj": "attn.q", "attention.o_proj": "attn.proj",
    "attention.sequence_reduction.sequence_reduction": "attn.sr", "attention.sequence_reduction.layer_norm": "attn.norm",
    "mlp.fc1": "mlp.fc1", "mlp.fc2": "mlp.fc2", "mlp.dwconv.dwconv": "mlp.dwconv.dwconv",
}  # fmt: skip


def hf_v5_name(key: str) -> str:
    """A transformers Segformer key in 5.x naming, without the ``segformer.`` prefix."""
    key = key.removeprefix("segformer.")
    for pattern, repl in _HF_V4_TO_V5:
        key = re.sub(pattern, repl, key)
    return key


def hf_to_model_keys(state: dict) -> dict:
    """A transformers Segformer state dict (4.x or 5.x names) -> fastuda ``EncoderDecoder`` keys
    (MiT ``backbone.*``; the decode head, when present, as ``SegFormerHead``). k and v
    projections are concatenated into MiT's ``kv``; an image-classification head is dropped."""
    out, kv = {}, {}
    for key, value in state.items():
        name = hf_v5_name(key)
        if m := re.fullmatch(r"stages\.(\d+)\.(.+)", name):
            i, rest = int(m.group(1)) + 1, m.group(2)
            if rest.startswith("patch_embeddings."):
                rest = rest.removeprefix("patch_embeddings.").replace("layer_norm.", "norm.")
                out[f"backbone.patch_embed{i}.{rest}"] = value
            elif rest.startswith("layer_norm."):
                out[f"backbone.norm{i}.{rest.removeprefix('layer_norm.')}"] = value
            elif b := re.fullmatch(r"blocks\.(\d+)\.(.+)\.(weight|bias)", rest):
                j, module, param = b.groups()
                if module in ("attention.k_proj", "attention.v_proj"):
                    kv.setdefault((i, j, param), {})[module[-6:]] = value
                elif module in _HF_BLOCK:
                    out[f"backbone.block{i}.{j}.{_HF_BLOCK[module]}.{param}"] = value
                else:
                    out[f"hf.{key}"] = value  # unknown: reported as unexpected
            else:
                out[f"hf.{key}"] = value
        elif m := re.fullmatch(r"decode_head\.linear_projections\.(\d+)\.proj\.(.+)", name):
            out[f"decode_head.linear_c.{m.group(1)}.proj.{m.group(2)}"] = value
        elif name == "decode_head.linear_fuse.weight":
            out[FUSE_KEY] = value  # deepest first: reversed below, once the levels are counted
        elif name.startswith("decode_head.batch_norm."):
            out[f"decode_head.linear_fuse.bn.{name.removeprefix('decode_head.batch_norm.')}"] = value
        elif name.startswith("decode_head.classifier."):
            out[f"decode_head.linear_pred.{name.removeprefix('decode_head.classifier.')}"] = value
        elif name.startswith("classifier."):
            continue  # SegformerForImageClassification's ImageNet classifier
        else:
            out[f"hf.{key}"] = value
    for (i, j, param), parts in kv.items():
        if set(parts) == {"k_proj", "v_proj"}:
            out[f"backbone.block{i}.{j}.attn.kv.{param}"] = torch.cat([parts["k_proj"], parts["v_proj"]])
    if FUSE_KEY in out:  # transformers' SegformerDecodeHead: torch.cat(all_hidden_states[::-1])
        out[FUSE_KEY] = reverse_fuse_blocks(out[FUSE_KEY], fuse_levels(out))
    return out


def model_to_hf_keys(state: dict) -> dict:
    """The inverse of ``hf_to_model_keys``: fastuda MiT (+ SegFormerHead) keys -> transformers 5.x
    names of ``SegformerForSemanticSegmentation`` (encoder keys prefixed ``segformer.``)."""
    block = {v: k for k, v in _HF_BLOCK.items()}
    out = {}
    for key, value in state.items():
        if key.endswith("num_batches_tracked") and not key.startswith("decode_head.linear_fuse.bn"):
            continue
        if m := re.fullmatch(r"backbone\.patch_embed(\d+)\.(proj|norm)\.(.+)", key):
            i, module, param = int(m.group(1)) - 1, m.group(2), m.group(3)
            out[f"segformer.stages.{i}.patch_embeddings.{'layer_norm' if module == 'norm' else 'proj'}.{param}"] = value
        elif m := re.fullmatch(r"backbone\.norm(\d+)\.(.+)", key):
            out[f"segformer.stages.{int(m.group(1)) - 1}.layer_norm.{m.group(2)}"] = value
        elif m := re.fullmatch(r"backbone\.block(\d+)\.(\d+)\.(.+)\.(weight|bias)", key):
            i, j, module, param = int(m.group(1)) - 1, m.group(2), m.group(3), m.group(4)
            prefix = f"segformer.stages.{i}.blocks.{j}."
            if module == "attn.kv":
                k, v = value.chunk(2)
                out[f"{prefix}attention.k_proj.{param}"], out[f"{prefix}attention.v_proj.{param}"] = k, v
            else:
                out[f"{prefix}{block[module]}.{param}"] = value
        elif m := re.fullmatch(r"decode_head\.linear_c\.(\d+)\.proj\.(.+)", key):
            out[f"decode_head.linear_projections.{m.group(1)}.proj.{m.group(2)}"] = value
        elif key == FUSE_KEY:  # transformers concatenates deepest first
            out["decode_head.linear_fuse.weight"] = reverse_fuse_blocks(value, fuse_levels(state))
        elif key.startswith("decode_head.linear_fuse.bn."):
            out[f"decode_head.batch_norm.{key.removeprefix('decode_head.linear_fuse.bn.')}"] = value
        elif key.startswith("decode_head.linear_pred."):
            out[f"decode_head.classifier.{key.removeprefix('decode_head.linear_pred.')}"] = value
        else:
            raise ValueError(f"no transformers Segformer equivalent for {key}")
    return out


# ----------------------------------------------------------------------------- variants

_B1_B5_DIMS = (64, 128, 320, 512)
VARIANTS = {
    # The CPU demo's encoder: MiT-shaped channels, one block per stage (about 0.4M parameters).
    "mit_demo": dict(embed_dims=(16, 32, 64, 128), num_heads=(1, 2, 4, 8), depths=(1, 1, 1, 1)),
    "mit_b0": dict(embed_dims=(32, 64, 160, 256), depths=(2, 2, 2, 2)),
    "mit_b1": dict(embed_dims=_B1_B5_DIMS, depths=(2, 2, 2, 2)),
    "mit_b2": dict(embed_dims=_B1_B5_DIMS, depths=(3, 4, 6, 3)),
    "mit_b3": dict(embed_dims=_B1_B5_DIMS, depths=(3, 4, 18, 3)),
    "mit_b4": dict(embed_dims=_B1_B5_DIMS, depths=(3, 8, 27, 3)),
    "mit_b5": dict(embed_dims=_B1_B5_DIMS, depths=(3, 6, 40, 3)),
}


def mit(name: str, **kwargs) -> MixVisionTransformer:
    """One of ``mit_b0`` .. ``mit_b5`` (or the demo's ``mit_demo``); keyword arguments override the variant's."""
    if name not in VARIANTS:
        raise ValueError(f"MiT variant must be one of {sorted(VARIANTS)}, got {name!r}")
    return MixVisionTransformer(**{**VARIANTS[name], **kwargs})


def mit_b0(**kwargs) -> MixVisionTransformer: return mit("mit_b0", **kwargs)  # noqa: E704
def mit_b1(**kwargs) -> MixVisionTransformer: return mit("mit_b1", **kwargs)  # noqa: E704
def mit_b2(**kwargs) -> MixVisionTransformer: return mit("mit_b2", **kwargs)  # noqa: E704
def mit_b3(**kwargs) -> MixVisionTransformer: return mit("mit_b3", **kwargs)  # noqa: E704
def mit_b4(**kwargs) -> MixVisionTransformer: return mit("mit_b4", **kwargs)  # noqa: E704
def mit_b5(**kwargs) -> MixVisionTransformer: return mit("mit_b5", **kwargs)  # noqa: E704
def mit_demo(**kwargs) -> MixVisionTransformer: return mit("mit_demo", **kwargs)  # noqa: E704
