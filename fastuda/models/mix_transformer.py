"""Mix Transformer (MiT) encoders b0..b5.

Xie et al., "SegFormer: Simple and Efficient Design for Semantic Segmentation
with Transformers", NeurIPS 2021. Written fresh for fastuda (the original file
carries a non-commercial licence). Module and parameter names follow the
released ImageNet checkpoints ``mit_b*.pth`` (``patch_embed1.proj``,
``block1.0.attn.q``, ``block1.0.mlp.dwconv.dwconv``, ``norm1``, ...), so they
load unchanged; the attention is ``fastuda.nn.EfficientSelfAttention`` and runs
the fused ``fastuda.ops.attention`` kernel on CUDA.
"""

from collections.abc import Sequence

import torch
from timm.layers import DropPath, trunc_normal_
from torch import nn

from fastuda.nn import EfficientSelfAttention


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
