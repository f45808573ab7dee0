"""Pseudo-labels with confidence weighting (DACS self-training, DAFormer / HRDA / MIC).

Fused: the fp32 softmax over classes, argmax, max probability, the count of
pixels with max probability >= threshold and the confidence weight, in ONE
launch and one read of the (B, C, H, W) logits. No probability tensor is
written.

Trade-off: the published weight is one fraction for the whole batch, which
needs a grid-wide reduction before any weight can be written. The launch has
two kinds of program, chosen by a ticket each takes from a counter as it
starts (its launch order, not its program id):

* the first ``B * tiles`` tickets are label programs: one tile of pixels each,
  the label written, the tile's confident-pixel count added with one int64
  atomic to a word that packs (label programs arrived << 32) + confident pixels
  (integers, so the count is deterministic);
* the last ``B * writers`` tickets are weight writers: each waits until that
  word says every label program has arrived, then writes its slice of the
  (B, H, W) weight from the count, the ignored rows and the optional valid mask.

A writer only waits on programs whose tickets are lower than its own, and a
program holds a ticket only once it runs, so every program a writer waits on
is resident or finished: the wait cannot deadlock, whatever the grid size, the
occupancy or the order the hardware starts programs in (no grid-wide barrier
over programs that may not be resident). Nothing goes back to the host. The
counters live in a per-stream workspace that is zero between calls
(kernels/_pixels.zeroed_workspace): the last writer to finish resets them, so no
zero-fill launch is needed. The weight used to be a second launch (2 us of
modelled launch overhead at B = 2, 512 x 512).
"""

import torch
import triton
import triton.language as tl

from ._pixels import (
    channel_group, pixel_config, pixel_offset, plane_is_contiguous, sm_count, stream_channels, zeroed_workspace,
)  # fmt: skip

# Weight pixels a writer stores per loop step, and the writers per launch (about one per SM:
# they run after the label programs, so their stores spread over the GPU).
WEIGHT_BLOCK = 1024
# A count word: label programs arrived << ARRIVED_SHIFT, plus confident pixels (under 2^32).
ARRIVED_SHIFT = tl.constexpr(32)


@triton.jit
def _pseudo_label_kernel(
    logits_ptr,  # (B, C, H, W) fp16 / bf16 / fp32 / fp64, any strides
    label_ptr,  # (B, H, W) int64, contiguous: argmax over C
    valid_ptr,  # (B, H, W) bool / uint8 / float valid mask, any strides (unused without HAS_VALID)
    weight_ptr,  # (B, H, W) float32, contiguous
    count_ptr,  # (B,) int64, zero on entry and exit: (label programs arrived << 32) + confident
    # pixels, per image (PER_IMAGE) or for the batch in word 0
    launch_ticket_ptr,  # (1,) int32, zero on entry and exit: programs started
    done_ptr,  # (1,) int32, zero on entry and exit: writers finished
    B,
    H,
    W,
    stride_b,
    stride_c,
    stride_h,
    stride_w,
    stride_vb,
    stride_vh,
    stride_vw,
    threshold,  # tau in the DACS paper (0.968)
    ignore_top,
    ignore_bottom,
    inv_pixels,  # 1 / (H * W) per image, or 1 / (B * H * W) for the batch
    tiles,  # label programs per image
    writers,  # weight writers per image
    chunk,  # weight pixels per writer, a multiple of BLOCK_W
    ACC: tl.constexpr,  # float32, or float64 for float64 logits
    C: tl.constexpr,  # classes: the channel loop's static trip count
    BLOCK_P: tl.constexpr,
    PLANE_CONTIG: tl.constexpr,
    G: tl.constexpr,  # channels loaded together
    PER_IMAGE: tl.constexpr,
    HAS_VALID: tl.constexpr,
    BLOCK_W: tl.constexpr,
    BLOCK_B: tl.constexpr,
):
    HW = H * W
    labellers = B * tiles
    # Launch order: every lower ticket belongs to a program that has started.
    ticket = tl.atomic_add(launch_ticket_ptr, 1, sem="relaxed")
    if ticket < labellers:
        b = ticket // tiles  # int32 across the channel loop: one register, not two
        p = (ticket % tiles) * BLOCK_P + tl.arange(0, BLOCK_P)  # (BLOCK_P,)
        p_mask = p < HW
        ptr = logits_ptr + b.to(tl.int64) * stride_b + pixel_offset(p, W, stride_h, stride_w, PLANE_CONTIG)
        m, s, label = stream_channels(ptr, stride_c, p_mask, 0, ACC, C, G, BLOCK_P, ARGMAX=True)
        conf = 1.0 / s  # max softmax probability = exp(m - m) / s
        hit = (conf >= threshold) & p_mask
        # b * HW + p, from the ticket and b alone: the tile index does not live across the
        # channel loop (ptxas 12.8, Triton 3.6, spilled it at C = 150 with a valid mask)
        first = ticket.to(tl.int64) * BLOCK_P + b.to(tl.int64) * (HW - tiles * BLOCK_P)
        tl.store(label_ptr + first + tl.arange(0, BLOCK_P), label.to(tl.int64), mask=p_mask)
        one = tl.full([], 1, tl.int64) << ARRIVED_SHIFT  # this program's arrival
        tl.atomic_add(count_ptr + b * PER_IMAGE, one + tl.sum(hit.to(tl.int32), axis=0), sem="relaxed")
    else:
        writer = ticket - labellers
        b = writer // writers
        word = count_ptr + b * PER_IMAGE
        expected = labellers
        if PER_IMAGE:
            expected = tiles
        # Every label program this writer waits on took a lower ticket: it is running or done.
        packed = tl.atomic_add(word, 0, sem="relaxed")
        while (packed >> ARRIVED_SHIFT) < expected:
            packed = tl.atomic_add(word, 0, sem="relaxed")
        arrived = packed >> ARRIVED_SHIFT
        if arrived == expected:  # always true here; the time model (kernels/timing.py) reads
            # what depends on an atomic's result as a tail, run after the other programs
            frac = (packed - (arrived << ARRIVED_SHIFT)).to(tl.float32) * inv_pixels
            start = (writer % writers) * chunk
            valid_image = valid_ptr + b.to(tl.int64) * stride_vb
            weight_image = weight_ptr + b.to(tl.int64) * HW
            # bounds from the arguments, not from the ticket (a runtime scalar the interpreter
            # of Triton 3.6 cannot take as a range bound); chunk is a multiple of BLOCK_W
            for p0 in range(0, chunk, BLOCK_W):
                p = start + p0 + tl.arange(0, BLOCK_W)
                p_mask = p < HW
                row = p // W
                keep = (row >= ignore_top) & (row < H - ignore_bottom)
                weight = tl.where(keep, frac, 0.0)
                if HAS_VALID:
                    col = p - row * W
                    v_ptr = valid_image + row.to(tl.int64) * stride_vh + col.to(tl.int64) * stride_vw
                    weight = weight * tl.load(v_ptr, mask=p_mask, other=0).to(tl.float32)
                tl.store(weight_image + p, weight, mask=p_mask)
            # acq_rel: every writer has read its count before the last one to finish zeroes them.
            finished = tl.atomic_add(done_ptr, 1, sem="acq_rel")
            if finished == B * writers - 1:
                r = tl.arange(0, BLOCK_B)
                tl.store(count_ptr + r, tl.zeros([BLOCK_B], tl.int64), mask=r < B)
                tl.store(launch_ticket_ptr, 0)
                tl.store(done_ptr, 0)


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
    """One launch. Inputs are assumed validated by fastuda.ops.

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
    workspace = zeroed_workspace(logits.device, 2 * B + 2)  # B int64 count words, then 2 int32
    count = workspace[: 2 * B].view(torch.int64)
    ticket, done = workspace[2 * B : 2 * B + 1], workspace[2 * B + 1 : 2 * B + 2]
    acc = tl.float64 if logits.dtype == torch.float64 else tl.float32
    plane_contig = plane_is_contiguous(logits, 2, 3)
    # A strided plane loads one pixel at a time, so 8 pixels per thread buy no vector width; 4
    # keep 16-bit logits at 56 registers (8 per thread spilled 8 bytes at 96 registers).
    block_p, num_warps = pixel_config(logits.element_size(), max_vec=8 if plane_contig else 4)
    tiles = triton.cdiv(H * W, block_p)
    writers = max(1, min(triton.cdiv(sm_count(logits.device), B), triton.cdiv(H * W, WEIGHT_BLOCK)))
    chunk = triton.cdiv(triton.cdiv(H * W, writers), WEIGHT_BLOCK) * WEIGHT_BLOCK
    writers = triton.cdiv(H * W, chunk)  # none without pixels to write
    has_valid = valid_mask is not None
    valid = valid_mask if has_valid else weight  # dummy pointer, never read
    if valid.dtype == torch.bool:
        valid = valid.view(torch.uint8)
    inv_pixels = 1.0 / (H * W) if per_image else 1.0 / (B * H * W)
    _pseudo_label_kernel[(B * (tiles + writers),)](
        logits, label, valid, weight, count, ticket, done, B, H, W, *logits.stride(),
        *(valid.stride() if has_valid else (0, 0, 0)), float(threshold), ignore_top, ignore_bottom, inv_pixels,
        tiles, writers, chunk,
        ACC=acc, C=C, BLOCK_P=block_p, PLANE_CONTIG=plane_contig, G=channel_group(C),
        PER_IMAGE=per_image, HAS_VALID=has_valid, BLOCK_W=WEIGHT_BLOCK, BLOCK_B=triton.next_power_of_2(B),
        num_warps=num_warps,
    )  # fmt: skip
    return label, weight
