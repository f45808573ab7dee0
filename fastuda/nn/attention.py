"""MiT efficient self-attention (SegFormer, Xie et al., NeurIPS 2021), on fastuda.ops.attention.

Spatial-reduction attention from PVT: queries come from every token, keys and values from the
tokens after a strided convolution that shrinks the H x W grid by sr_ratio in each direction, so
M = N / sr_ratio^2 keys (256 at every MiT stage for a 512 crop). Written fresh after the published
mmseg ``mix_transformer.py`` ``Attention``; the submodule names (q, kv, proj, sr, norm) are kept so
that the SegFormer ImageNet and DAFormer / HRDA / MIC checkpoints load unchanged.
"""

import torch
from torch import Tensor, nn

from fastuda import ops


class EfficientSelfAttention(nn.Module):
    """The MiT attention block: q / kv projections, optional spatial reduction, fused attention,
    output projection.

    Args:
        dim: channels C of the tokens.
        num_heads: attention heads; C must divide by it (head dim d = C / heads).
        qkv_bias: bias in the q and kv projections (True in every MiT variant).
        qk_scale: multiplies q k^T; None (or 0, as published: ``qk_scale or d ** -0.5``) means d^-0.5.
        attn_drop: dropout on the attention probabilities. When > 0 and training, the forward takes
            the reference path (the fused kernel has no dropout); in eval it is the identity and the
            fused path runs.
        proj_drop: dropout after the output projection.
        sr_ratio: spatial reduction R of keys and values (8, 4, 2, 1 over MiT's four stages).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int = 8,
        qkv_bias: bool = False,
        qk_scale: float | None = None,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        sr_ratio: int = 1,
    ):
        super().__init__()
        if dim % num_heads != 0:
            raise ValueError(f"dim ({dim}) must be divisible by num_heads ({num_heads})")
        self.dim = dim
        self.num_heads = num_heads
        head_dim = dim // num_heads
        self.scale = qk_scale or head_dim**-0.5
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.kv = nn.Linear(dim, dim * 2, bias=qkv_bias)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        self.sr_ratio = sr_ratio
        if sr_ratio > 1:
            self.sr = nn.Conv2d(dim, dim, kernel_size=sr_ratio, stride=sr_ratio)
            self.norm = nn.LayerNorm(dim)  # eps 1e-5, as published

    def forward(self, x: Tensor, H: int, W: int) -> Tensor:
        """x (B, N, C) tokens of an H x W grid (N = H * W) -> (B, N, C)."""
        B, N, C = x.shape
        heads = self.num_heads
        q = self.q(x).reshape(B, N, heads, C // heads).permute(0, 2, 1, 3)  # (B, heads, N, d)
        if self.sr_ratio > 1:
            x_ = x.permute(0, 2, 1).reshape(B, C, H, W)  # (B, C, H, W)
            x_ = self.sr(x_).reshape(B, C, -1).permute(0, 2, 1)  # (B, M, C), M = HW / R^2
            x_ = self.norm(x_)
        else:
            x_ = x
        kv = self.kv(x_).reshape(B, -1, 2, heads, C // heads).permute(2, 0, 3, 1, 4)  # (2, B, heads, M, d)
        k, v = kv[0], kv[1]  # strided views of the kv projection: the op reads them in place

        if self.attn_drop.p > 0 and self.training:
            attn = torch.softmax((q @ k.transpose(-2, -1)) * self.scale, dim=-1)  # (B, heads, N, M)
            out = self.attn_drop(attn) @ v  # (B, heads, N, d)
        else:
            out = ops.attention(q, k, v, scale=self.scale)  # (B, heads, N, d), stored (B, N, heads, d)
        out = out.transpose(1, 2).reshape(B, N, C)  # (B, N, C)
        return self.proj_drop(self.proj(out))

    def extra_repr(self) -> str:
        return f"dim={self.dim}, num_heads={self.num_heads}, sr_ratio={self.sr_ratio}"
