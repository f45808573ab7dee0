"""Pixel-weighted cross-entropy over (B, C, H, W) logits (the DACS / DAFormer loss).

loss = sum_p w_p * CE_p / (B * H * W): ignored pixels add 0 but count in the
denominator (the published `.mean()` over all pixels).

Fused: log-sum-exp, the target logit, the weight and the per-program partial
sum in one read of the logits (forward); softmax minus one-hot times the
weight in one read of the logits and one write of the gradient (backward).
Neither stores a (B, C, H, W) probability tensor: the backward recomputes the
softmax, which costs exps but no memory traffic, and these kernels are
memory-bound. Layout (kernels/_pixels.py): pixels across threads, a static
channel loop, one exp per logit; the backward keeps a pixel's C logits in
registers up to MAX_REGISTER_C classes (two passes and two exps above).

Trade-offs: the forward writes one partial sum per program; the last program
to arrive (an int32 ticket, kernels/_pixels.zeroed_workspace, which it resets)
adds them in a fixed order and writes the loss. So the loss is deterministic
(no float atomics) and one launch: the partial sum and the division were two
more launches of about 2 us each at B = 2, 512 x 512. A target outside
[0, C) other than ignore_index never reads out of bounds; it turns the loss and
that pixel's gradient into NaN, so bad labels are loud even where fastuda.ops
skips its value check (under torch.compile).
"""

import torch
import triton
import triton.language as tl

from ._pixels import (
    channel_group, online_softmax_step, pixel_config, pixel_offset, plane_is_contiguous, stream_channels, zeroed_workspace,
)  # fmt: skip

# Largest C whose logits the backward holds in registers per pixel (C x VEC fp32 values per
# thread); above it, two passes over the channels.
MAX_REGISTER_C = 32
# Pixels per thread in the backward: 4 x 19 held logits fit the register budget.
BWD_VEC = 4


@triton.jit
def _load_pixels(ptr, b, p, p_mask, W, stride_b, stride_h, stride_w, other, PLANE_CONTIG: tl.constexpr):
    """Loads one (B, H, W) value per pixel of image b."""
    return tl.load(ptr + b * stride_b + pixel_offset(p, W, stride_h, stride_w, PLANE_CONTIG), mask=p_mask, other=other)


@triton.jit
def _cross_entropy_fwd_kernel(
    logits_ptr,  # (B, C, H, W) fp16 / bf16 / fp32 / fp64, any strides
    target_ptr,  # (B, H, W) int64, any strides
    weight_ptr,  # (B, H, W) float, any strides (unused without HAS_WEIGHT)
    partial_ptr,  # (B, num_programs_p) ACC: sum of w * CE over each program's pixels
    loss_ptr,  # () ACC: the mean, written by the last program to arrive
    ticket_ptr,  # (1,) int32, zero on entry and on exit: programs that have stored their partial
    H,
    W,
    strides,  # ((b, c, h, w) of the logits, (b, h, w) of the target, (b, h, w) of the weight)
    ignore_index,
    num_pixels,  # B * H * W: the mean's denominator
    num_partials,  # B * programs per image; an argument, so that Triton sees it divisible by 16
    # and the last program's masked loads of the partials stay 16-byte vectors
    ACC: tl.constexpr,
    C: tl.constexpr,  # classes: the channel loop's static trip count
    HAS_WEIGHT: tl.constexpr,
    BLOCK_P: tl.constexpr,
    BLOCK_R: tl.constexpr,  # partial sums the last program adds per step
    PLANE_CONTIG: tl.constexpr,
    TARGET_CONTIG: tl.constexpr,
    WEIGHT_CONTIG: tl.constexpr,
    G: tl.constexpr,  # channels loaded together
):
    stride_b, stride_c, stride_h, stride_w = strides[0]
    stride_tb, stride_th, stride_tw = strides[1]
    stride_wb, stride_wh, stride_ww = strides[2]
    pid_p = tl.program_id(0)
    b = tl.program_id(1).to(tl.int64)
    p = pid_p * BLOCK_P + tl.arange(0, BLOCK_P)  # (BLOCK_P,)
    p_mask = p < H * W
    ptr = logits_ptr + b * stride_b + pixel_offset(p, W, stride_h, stride_w, PLANE_CONTIG)
    t = _load_pixels(target_ptr, b, p, p_mask, W, stride_tb, stride_th, stride_tw, ignore_index, TARGET_CONTIG)

    m, s, x_t = stream_channels(ptr, stride_c, p_mask, t, ACC, C, G, BLOCK_P, ARGMAX=False)  # x_t: the target's logit
    ce = m + tl.log(s) - x_t  # (BLOCK_P,) -log softmax at the target
    if HAS_WEIGHT:
        ce = ce * _load_pixels(weight_ptr, b, p, p_mask, W, stride_wb, stride_wh, stride_ww, 0.0, WEIGHT_CONTIG).to(ACC)
    valid = (t != ignore_index) & p_mask
    bad = valid & ((t < 0) | (t >= C))
    ce = tl.where(valid, ce, 0.0)
    ce = tl.where(bad, float("nan"), ce)
    tl.store(partial_ptr + b * tl.num_programs(0) + pid_p, tl.sum(ce, axis=0))
    # acq_rel: our partial is visible before the ticket, and the last program sees every partial.
    arrived = tl.atomic_add(ticket_ptr, 1, sem="acq_rel")
    if arrived == num_partials - 1:
        total = tl.zeros([BLOCK_R], ACC)
        for r0 in range(0, num_partials, BLOCK_R):
            r = r0 + tl.arange(0, BLOCK_R)
            total += tl.load(partial_ptr + r, mask=r < num_partials, other=0.0, cache_modifier=".cg")
        tl.store(loss_ptr, tl.sum(total, axis=0) / num_pixels.to(ACC))
        tl.store(ticket_ptr, 0)  # for the next launch on this stream


@triton.jit
def _cross_entropy_bwd_kernel(
    grad_loss_ptr,  # () ACC: upstream gradient of the scalar loss
    logits_ptr,  # (B, C, H, W) any strides
    target_ptr,  # (B, H, W) int64, any strides
    weight_ptr,  # (B, H, W) float, any strides (unused without HAS_WEIGHT)
    grad_ptr,  # (B, C, H, W) logits dtype, contiguous: d loss / d logits
    H,
    W,
    strides,  # ((b, c, h, w) of the logits, (b, h, w) of the target, (b, h, w) of the weight)
    ignore_index,
    inv_pixels,  # 1 / (B * H * W): the mean over all pixels
    ACC: tl.constexpr,
    C: tl.constexpr,
    HAS_WEIGHT: tl.constexpr,
    BLOCK_P: tl.constexpr,
    IN_REGISTERS: tl.constexpr,  # hold the C logits of each pixel in registers (one exp per logit)
    PLANE_CONTIG: tl.constexpr,
    TARGET_CONTIG: tl.constexpr,
    WEIGHT_CONTIG: tl.constexpr,
):
    stride_b, stride_c, stride_h, stride_w = strides[0]
    stride_tb, stride_th, stride_tw = strides[1]
    stride_wb, stride_wh, stride_ww = strides[2]
    pid_p = tl.program_id(0)
    b = tl.program_id(1).to(tl.int64)
    HW = H * W
    p = pid_p * BLOCK_P + tl.arange(0, BLOCK_P)
    p_mask = p < HW
    base = logits_ptr + b * stride_b + pixel_offset(p, W, stride_h, stride_w, PLANE_CONTIG)
    out = grad_ptr + b * C * HW + p
    t = _load_pixels(target_ptr, b, p, p_mask, W, stride_tb, stride_th, stride_tw, ignore_index, TARGET_CONTIG)

    # d loss / d x_c = g * w / N * (softmax_c - [c == t]); 0 for ignored pixels.
    coef = tl.load(grad_loss_ptr).to(ACC) * inv_pixels + tl.zeros([BLOCK_P], ACC)
    if HAS_WEIGHT:
        coef = coef * _load_pixels(weight_ptr, b, p, p_mask, W, stride_wb, stride_wh, stride_ww, 0.0, WEIGHT_CONTIG).to(ACC)
    valid = t != ignore_index
    coef = tl.where(valid, coef, 0.0)
    coef = tl.where(valid & ((t < 0) | (t >= C)), float("nan"), coef)

    if IN_REGISTERS:
        # One read of the logits and one exp per logit: the C values of each pixel stay in the
        # thread's registers (a tuple, unrolled) between the max, the exps and the stores.
        xs = ()
        m = tl.full([BLOCK_P], float("-inf"), ACC)
        for c in tl.static_range(C):
            x = tl.load(base + c * stride_c, mask=p_mask, other=0.0).to(ACC)
            xs = xs + (x,)
            m = tl.maximum(m, x)
        es = ()
        s = tl.zeros([BLOCK_P], ACC)
        for c in tl.static_range(C):
            e = tl.exp(xs[c] - m)
            es = es + (e,)
            s += e
        scale = coef / s
        for c in tl.static_range(C):
            grad = es[c] * scale - tl.where(t == c, coef, 0.0)
            tl.store(out + c * HW, grad.to(grad_ptr.dtype.element_ty), mask=p_mask)
    else:
        # Many classes: two passes over the channels (log-sum-exp, then the gradient), two exps
        # per logit and a second read that the L2 absorbs.
        m = tl.full([BLOCK_P], float("-inf"), ACC)
        s = tl.zeros([BLOCK_P], ACC)
        ptr = base
        for c in range(C):
            m, s = online_softmax_step(tl.load(ptr, mask=p_mask, other=0.0).to(ACC), m, s)
            ptr += stride_c
        lse = m + tl.log(s)
        ptr = base
        for c in range(C):
            x = tl.load(ptr, mask=p_mask, other=0.0).to(ACC)
            grad = (tl.exp(x - lse) - (t == c).to(ACC)) * coef
            tl.store(out + c * HW, grad.to(grad_ptr.dtype.element_ty), mask=p_mask)
            ptr += stride_c


def _acc(dtype: torch.dtype):
    return tl.float64 if dtype == torch.float64 else tl.float32


def _pixel_args(logits, target, weight):
    """Strides and contiguity flags shared by both kernels."""
    has_weight = weight is not None
    w = weight if has_weight else target  # dummy pointer, never read
    args = (logits.stride(), target.stride(), w.stride() if has_weight else (0, 0, 0))
    flags = dict(
        HAS_WEIGHT=has_weight,
        PLANE_CONTIG=plane_is_contiguous(logits, 2, 3),
        TARGET_CONTIG=plane_is_contiguous(target, 1, 2),
        WEIGHT_CONTIG=has_weight and plane_is_contiguous(weight, 1, 2),
    )
    return w, args, flags


def cross_entropy_fwd(
    logits: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor | None,
    ignore_index: int,
) -> torch.Tensor:
    """Returns the 0-d loss (float32, float64 for float64 logits).
    Inputs are assumed validated by fastuda.ops."""
    B, C, H, W = logits.shape
    acc_dtype = torch.float64 if logits.dtype == torch.float64 else torch.float32
    if B * H * W == 0:
        return torch.full((), float("nan"), dtype=acc_dtype, device=logits.device)
    block_p, num_warps = pixel_config(logits.element_size())
    grid = (triton.cdiv(H * W, block_p), B)
    partial = torch.empty((B, grid[0]), dtype=acc_dtype, device=logits.device)
    loss = torch.empty((), dtype=acc_dtype, device=logits.device)
    w, strides, flags = _pixel_args(logits, target, weight)
    _cross_entropy_fwd_kernel[grid](
        logits, target, w, partial, loss, zeroed_workspace(logits.device, 1), H, W, strides, ignore_index, B * H * W, B * grid[0],
        ACC=_acc(logits.dtype), C=C, BLOCK_P=block_p, BLOCK_R=4096, G=channel_group(C), num_warps=num_warps, **flags,
    )  # fmt: skip
    return loss


def cross_entropy_bwd(
    grad_loss: torch.Tensor,
    logits: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor | None,
    ignore_index: int,
    *,
    out: torch.Tensor | None = None,
    max_register_c: int = MAX_REGISTER_C,
) -> torch.Tensor:
    """Returns d loss / d logits, contiguous, in the logits' dtype.
    ``out`` lets a caller (the tests) pass a pre-filled contiguous tensor; ``max_register_c``
    overrides MAX_REGISTER_C (tests reach the two-pass path with a small C)."""
    B, C, H, W = logits.shape
    grad = torch.empty((B, C, H, W), dtype=logits.dtype, device=logits.device) if out is None else out
    if grad.numel() == 0:
        return grad
    block_p, num_warps = pixel_config(logits.element_size(), max_vec=BWD_VEC)
    grid = (triton.cdiv(H * W, block_p), B)
    w, strides, flags = _pixel_args(logits, target, weight)
    _cross_entropy_bwd_kernel[grid](
        grad_loss, logits, target, w, grad, H, W, strides, ignore_index, 1.0 / (B * H * W),
        ACC=_acc(logits.dtype), C=C, BLOCK_P=block_p, IN_REGISTERS=C <= max_register_c,
        num_warps=num_warps, **flags,
    )  # fmt: skip
    return grad
