"""Pseudo-labels with confidence weighting (DACS self-training, DAFormer / HRDA / MIC).

Fused: the fp32 softmax over classes, argmax, max probability, the count of
pixels with max probability >= threshold and the confidence weight, in ONE read
of the (B, C, H, W) logits. No probability tensor is written.

Trade-off: the published weight is one fraction for the whole batch, which
needs a grid-wide reduction. The first kernel accumulates per-image counts with
int32 atomics (integers, so the result is deterministic); a second, tiny kernel
writes the (B, H, W) weight (4 bytes per pixel) from those counts, the ignored
rows and the optional valid mask. Nothing goes back to the host. The counts live
in a per-stream workspace that is zero between calls (kernels/_pixels.zeroed_workspace):
the last weight program to arrive resets them, so no zero-fill launch is needed.
"""

import torch
import triton
import triton.language as tl

from ._pixels import channel_group, online_softmax_step, pixel_config, pixel_offset, plane_is_contiguous, zeroed_workspace


@triton.jit
def _pseudo_label_fwd_kernel(
    logits_ptr,  # (B, C, H, W) fp16 / bf16 / fp32 / fp64, any strides
    label_ptr,  # (B, H, W) int64, contiguous: argmax over C
    count_ptr,  # (B,) int32, zeroed: pixels with max prob >= threshold
    H,
    W,
    stride_b,
    stride_c,
    stride_h,
    stride_w,
    threshold,  # tau in the DACS paper (0.968)
    ACC: tl.constexpr,  # float32, or float64 for float64 logits
    C: tl.constexpr,  # classes: the channel loop's static trip count
    BLOCK_P: tl.constexpr,
    PLANE_CONTIG: tl.constexpr,
    G: tl.constexpr,  # channels loaded together
):
    pid_p = tl.program_id(0)
    b = tl.program_id(1).to(tl.int64)
    HW = H * W
    p = pid_p * BLOCK_P + tl.arange(0, BLOCK_P)  # (BLOCK_P,)
    p_mask = p < HW
    ptr = logits_ptr + b * stride_b + pixel_offset(p, W, stride_h, stride_w, PLANE_CONTIG)

    m = tl.full([BLOCK_P], float("-inf"), ACC)  # running max logit
    s = tl.zeros([BLOCK_P], ACC)  # running sum of exp(x - m)
    label = tl.zeros([BLOCK_P], tl.int32)
    # Channels in groups of G whose loads go out together (channel_group: the bytes in flight),
    # then the C % G left over.
    for c0 in range(0, C - C % G, G):
        xs = ()
        for g in tl.static_range(G):
            xs = xs + (tl.load(ptr + tl.cast(c0 + g, tl.int64) * stride_c, mask=p_mask, other=0.0),)
        for g in tl.static_range(G):
            x = xs[g].to(ACC)
            label = tl.where(x > m, c0 + g, label)  # strictly larger: the first index wins ties, like torch.argmax
            m, s = online_softmax_step(x, m, s)
    for c in tl.static_range(C - C % G, C):
        x = tl.load(ptr + c * tl.cast(stride_c, tl.int64), mask=p_mask, other=0.0).to(ACC)
        label = tl.where(x > m, c, label)
        m, s = online_softmax_step(x, m, s)

    conf = 1.0 / s  # max softmax probability = exp(m - m) / s
    hit = (conf >= threshold) & p_mask
    tl.store(label_ptr + b * HW + p, label.to(tl.int64), mask=p_mask)
    tl.atomic_add(count_ptr + b, tl.sum(hit.to(tl.int32), axis=0))


@triton.jit
def _pseudo_label_weight_kernel(
    count_ptr,  # (B + 1,) int32: confident pixels per image, then the arrival ticket; zeroed on exit
    valid_ptr,  # (B, H, W) bool / uint8 / float valid mask, any strides (unused without HAS_VALID)
    weight_ptr,  # (B, H, W) float32, contiguous
    B,
    H,
    W,
    stride_vb,
    stride_vh,
    stride_vw,
    ignore_top,
    ignore_bottom,
    inv_pixels,  # 1 / (H * W) per image, or 1 / (B * H * W) for the batch
    PER_IMAGE: tl.constexpr,
    HAS_VALID: tl.constexpr,
    BLOCK_B: tl.constexpr,
    BLOCK_P: tl.constexpr,
):
    pid_p = tl.program_id(0)
    b = tl.program_id(1).to(tl.int64)
    HW = H * W
    p = pid_p * BLOCK_P + tl.arange(0, BLOCK_P)
    p_mask = p < HW
    if PER_IMAGE:
        frac = tl.load(count_ptr + b).to(tl.float32) * inv_pixels
    else:
        counts = tl.load(count_ptr + tl.arange(0, BLOCK_B), mask=tl.arange(0, BLOCK_B) < B, other=0)
        frac = tl.sum(counts, axis=0).to(tl.float32) * inv_pixels
    row = p // W
    keep = (row >= ignore_top) & (row < H - ignore_bottom)
    weight = tl.where(keep, frac, 0.0)
    if HAS_VALID:
        col = p - row * W
        v = tl.load(valid_ptr + b * stride_vb + row.to(tl.int64) * stride_vh + col.to(tl.int64) * stride_vw, mask=p_mask, other=0)
        weight = weight * v.to(tl.float32)
    tl.store(weight_ptr + b * HW + p, weight, mask=p_mask)
    # acq_rel: every program has read the counts before the last one to arrive zeroes them.
    arrived = tl.atomic_add(count_ptr + B, 1, sem="acq_rel")
    if arrived == tl.num_programs(0) * tl.num_programs(1) - 1:
        r = tl.arange(0, BLOCK_B)
        tl.store(count_ptr + r, tl.zeros([BLOCK_B], tl.int32), mask=r <= B)


def pseudo_label_fwd(
    logits: torch.Tensor,
    threshold: float,
    ignore_top: int,
    ignore_bottom: int,
    per_image: bool,
    valid_mask: torch.Tensor | None = None,
    *,
    out: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Launches both kernels. Inputs are assumed validated by fastuda.ops.

    Returns (label int64 (B, H, W), weight float32 (B, H, W)); ``out`` lets a
    caller (the tests) pass pre-filled output tensors.
    """
    B, C, H, W = logits.shape
    if out is None:
        label = torch.empty((B, H, W), dtype=torch.int64, device=logits.device)
        weight = torch.empty((B, H, W), dtype=torch.float32, device=logits.device)
    else:
        label, weight = out
    if B * H * W == 0:
        return label, weight
    count = zeroed_workspace(logits.device, B + 1)
    acc = tl.float64 if logits.dtype == torch.float64 else tl.float32
    block_p, num_warps = pixel_config(logits.element_size())
    grid = (triton.cdiv(H * W, block_p), B)
    _pseudo_label_fwd_kernel[grid](
        logits, label, count, H, W, *logits.stride(), float(threshold),
        ACC=acc, C=C, BLOCK_P=block_p, PLANE_CONTIG=plane_is_contiguous(logits, 2, 3), G=channel_group(C),
        num_warps=num_warps,
    )  # fmt: skip
    has_valid = valid_mask is not None
    valid = valid_mask if has_valid else weight  # dummy pointer, never read
    if valid.dtype == torch.bool:
        valid = valid.view(torch.uint8)
    inv_pixels = 1.0 / (H * W) if per_image else 1.0 / (B * H * W)
    wblock = 1024
    _pseudo_label_weight_kernel[(triton.cdiv(H * W, wblock), B)](
        count, valid, weight, B, H, W, *(valid.stride() if has_valid else (0, 0, 0)),
        ignore_top, ignore_bottom, inv_pixels,
        PER_IMAGE=per_image, HAS_VALID=has_valid, BLOCK_B=triton.next_power_of_2(B + 1), BLOCK_P=wblock,
        num_warps=4,
    )  # fmt: skip
    return label, weight
