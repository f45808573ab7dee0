"""fastuda.ops.attention: scaled-dot-product attention (no mask, no dropout), fused forward and
backward; the MiT efficient self-attention's core."""

import math
import numbers

import torch
from torch import Tensor

from . import reference
from ._backend import launch, use_triton
from ._checks import FLOAT_DTYPES, check_same_device, check_tensor

# All MiT variants use head dims 32 and 64; the kernels hold one head dim in a single tile.
MAX_HEAD_DIM = 128


def _use_kernel(q: Tensor) -> bool:
    # float64 is for gradcheck: it runs the kernels (float64 accumulation) under the interpreter; on
    # a GPU it takes the reference, so no float64 kernel is compiled there.
    return use_triton(q.device) and not (q.dtype == torch.float64 and q.device.type == "cuda")


def _empty_bnhd(x: Tensor, dtype: torch.dtype | None = None) -> Tensor:
    """Uninitialised (B, H, L, D) like ``x``, stored as (B, L, H, D): the layout the kernels write
    (see kernels/attention.py, ``empty_bnhd``)."""
    B, H, L, D = x.shape
    return x.new_empty((B, L, H, D), dtype=dtype or x.dtype).transpose(1, 2)


def _lse_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


@torch.library.custom_op("fastuda::attention", mutates_args=())
def _attention(q: Tensor, k: Tensor, v: Tensor, scale: float) -> tuple[Tensor, Tensor]:
    if _use_kernel(q):
        return launch("attention.attention_fwd", q.device, q, k, v, scale)
    out, lse = reference.attention_forward(q, k, v, scale)
    return _empty_bnhd(q).copy_(out), lse


@_attention.register_fake
def _(q, k, v, scale):
    B, H, N, _ = q.shape
    return _empty_bnhd(q), q.new_empty((B, H, N), dtype=_lse_dtype(q.dtype))


@torch.library.custom_op("fastuda::attention_backward", mutates_args=())
def _attention_backward(
    grad_out: Tensor, q: Tensor, k: Tensor, v: Tensor, out: Tensor, lse: Tensor, scale: float
) -> tuple[Tensor, Tensor, Tensor]:
    if _use_kernel(q):
        return launch("attention.attention_bwd", q.device, grad_out, q, k, v, out, lse, scale)
    dq, dk, dv = reference.attention_backward(grad_out, q, k, v, out, lse, scale)
    return _empty_bnhd(q).copy_(dq), _empty_bnhd(k).copy_(dk), _empty_bnhd(v).copy_(dv)


@_attention_backward.register_fake
def _(grad_out, q, k, v, out, lse, scale):
    return _empty_bnhd(q), _empty_bnhd(k), _empty_bnhd(v)


def _setup_context(ctx, inputs, output):
    q, k, v, scale = inputs
    out, lse = output
    ctx.mark_non_differentiable(lse)
    ctx.save_for_backward(q, k, v, out, lse)
    ctx.scale = scale


def _backward(ctx, grad_out, _grad_lse):
    q, k, v, out, lse = ctx.saved_tensors
    if not any(ctx.needs_input_grad[:3]):
        return None, None, None, None
    dq, dk, dv = torch.ops.fastuda.attention_backward(grad_out, q, k, v, out, lse, ctx.scale)
    need_q, need_k, need_v = ctx.needs_input_grad[:3]
    return dq if need_q else None, dk if need_k else None, dv if need_v else None, None


_attention.register_autograd(_backward, setup_context=_setup_context)


def attention(q: Tensor, k: Tensor, v: Tensor, scale: float | None = None) -> Tensor:
    """softmax(q k^T * scale) v, the same function as
    ``torch.nn.functional.scaled_dot_product_attention(q, k, v, scale=scale)`` without mask or
    dropout, with a fused backward.

    Args:
        q: (B, H, N, D) queries, float16 / bfloat16 / float32 (float64 for gradient checks), any
            strides (views of a fused qkv / kv projection need no copy).
        k: (B, H, M, D) keys, same dtype and device as q.
        v: (B, H, M, D) values.
        scale: multiplies q k^T; None means D ** -0.5 (MiT's qk_scale default).

    Returns:
        (B, H, N, D) in q's dtype, stored as (B, N, H, D) memory (like SDPA's flash backend), so
        ``out.transpose(1, 2).reshape(B, N, H * D)`` is a view. Autograd saves only q, k, v, out and
        the (B, H, N) float32 log-sum-exp; no N x M matrix is kept for the backward.

    CUDA tensors run the Triton kernels (kernels/attention.py); CPU tensors the reference (see
    ``fastuda.ops.set_backend``). N, M >= 1; D <= 128 (32 and 64 are the tuned sizes).
    """
    check_tensor("q", q, 4, "(B, H, N, D)", FLOAT_DTYPES)
    check_tensor("k", k, 4, "(B, H, M, D)", FLOAT_DTYPES)
    check_tensor("v", v, 4, "(B, H, M, D)", FLOAT_DTYPES)
    for name, x in (("k", k), ("v", v)):
        check_same_device(name, x, "q", q)
        if x.dtype != q.dtype:
            raise TypeError(f"{name} must have the same dtype as q ({q.dtype}), got {x.dtype}")
    B, H, N, D = q.shape
    if tuple(k.shape[:2]) != (B, H) or k.shape[3] != D:
        raise ValueError(
            f"k must have shape (B, H, M, D) = ({B}, {H}, M, {D}) to match q {tuple(q.shape)}, got {tuple(k.shape)}"
        )
    if tuple(v.shape) != tuple(k.shape):
        raise ValueError(f"v must have the same shape as k {tuple(k.shape)}, got {tuple(v.shape)}")
    if N == 0 or k.shape[2] == 0:
        raise ValueError(f"attention needs at least one query and one key (N, M >= 1), got N={N}, M={k.shape[2]}")
    if not 1 <= D <= MAX_HEAD_DIM:
        raise ValueError(f"head dim D must be in [1, {MAX_HEAD_DIM}], got D={D}")
    if scale is None:
        scale = D**-0.5
    elif isinstance(scale, bool) or not isinstance(scale, numbers.Real):
        raise TypeError(f"scale must be a float or None, got {type(scale).__name__}")
    elif not math.isfinite(scale):
        raise ValueError(f"scale must be finite, got {scale}")
    out, _ = torch.ops.fastuda.attention(q, k, v, float(scale))
    return out
