"""HRDA scale-attention fusion of low- and high-resolution logits, forward and backward.

    a'    = attention, zeroed outside crop_box / S           (LR grid, h x w)
    fused = up((1 - a') * lr) + up(a') * pad(hr)             (output grid, S*h x S*w)

up is bilinear x S with align_corners=False (F.interpolate(scale_factor=S));
pad places hr at the box (output coordinates) and zeros elsewhere; with no box
hr covers the whole output.

Fused (forward): the two upsamplings, the mask, the product and the sum, in
one pass. Each program owns a column tile of BLOCK_J LR columns of one (b, c)
plane and walks BLOCK_I of its LR rows top to bottom, two per step. Output
pixel (S i + ry, S j + rx) samples LR rows (i - 1, i) or (i, i + 1) and likewise
columns, with weights fixed by the phase (ry, rx): so each step reads two new LR
rows (own columns as a vector load, the clamped left / right neighbours as
narrow ones), interpolates them horizontally per column phase with constexpr
weights, and keeps the passes of the two rows above from the previous step;
every output row phase is then one vertical lerp of two kept rows. Each LR row
is read once (plus a row above and below the band), and a step's loads go out
together. The S column phases are interleaved into contiguous output rows
(S = 2, 4) for vector stores and hr loads; hr sits at a runtime box origin, so
the kernel checks the origin's and the box's column edges' alignment itself and
takes 16-byte hr loads when they are aligned, scalar ones otherwise (two copies
of the walk, one branch per program; the compiler is shown the alignment as
(x // VEC) * VEC, since tl.multiple_of on an inlined function's argument sets
nothing: before this, neither copy had vector hr loads). Neither up((1 - a') lr),
up(a') nor pad(hr) is ever stored.

Fused (backward): d_lr, d_attention and d_hr in ONE kernel. The transpose of
bilinear upsampling is a scatter; we compute it as a GATHER per LR pixel
instead, so there are no atomics and the result is deterministic: LR pixel i
receives from exactly the 2S output rows S*i - (S+1)//2 + [0, 2S) (and the
same for columns), and the weight of each is recomputed from the forward tap
formula, which also gives PyTorch's clamped borders for free. Per program: an
LR tile; per channel, sum_k w_k g and sum_k w_k g * pad(hr) over the
(2S x 2S) window give

    d_lr  = (1 - a') * up^T(g)
    d_a'  = up^T(g * pad(hr)) - lr * up^T(g),   d_attention = d_a' inside box / S, else 0
    d_hr  = g * up(a')                          (on the output block the tile owns)

The d_hr part reuses the grad block the gather just pulled through L1.
At scale 2 (HRDA's) a separate kernel does the same as a separable stencil with
constexpr weights (1/4, 3/4 per axis; PyTorch's clamped borders are the same
formula with the neighbour index clamped), walking a column tile's LR rows two
per step like the forward: each step reads output rows 2i + 1 and 2i + 2 of g
(and hr) once, as a vector load of the column pairs split into phases plus two
clamped neighbour columns, and keeps rows 2i - 1, 2i and the a' taps of the
rows above from the previous step. Tiles that do not meet the box skip hr and
d_hr altogether (one branch per program). Output
pixel Y is owned by LR row Y // S, so every in-box pixel is written once; when
a box is given, extra programs zero the parts of d_hr that no in-range output
pixel covers (nothing, for a validated box: their stores are fully masked).

Trade-offs:
* The generic gather (scales 1, 3, 4) reads each grad element (2S)^2 / S^2 = 4
  times, from L1; the scale-2 walk reads it once plus its neighbour columns.
* Walking rows makes a program's loads a chain of dependent round trips (one
  per step): bands of BLOCK_I = 8 rows, two rows per step, keep it at five, and
  one warp per program with under 256 registers keeps 8-17 programs resident.
* S is a compile-time constant and the window loops are unrolled, so the
  supported scales are 1..MAX_SCALE (HRDA uses 2).
* One-channel (not class-wise) attention is broadcast over C with a zero
  channel stride. Its gradient is the sum over C. The kernel can add a group
  of CHANNELS_PER_PROGRAM channels (in registers; the scale-2 walk adds each
  channel into its own rows of the group's plane); the per-group fp32 planes
  (B, G, h, w) are then added by torch. By default G = C (see
  BROADCAST_CHANNELS_PER_PROGRAM): an fp32 workspace of LR size (B, C, h, w),
  1/S^2 of the output, written and read once: about +25% over the backward's
  own traffic in fp32 at HRDA's shape (+50% in bf16), against a
  register-bound channel loop.
  HRDA's default attention is class-wise, which needs neither.
* The box is read from device memory (a 4-element int64 tensor), so a box
  that changes every step neither syncs the host nor recompiles. Coordinates
  are clamped to the output so that a bad box (unvalidated under torch.compile
  or on CUDA) never reads or writes out of bounds.
* Static launch configs (no autotune: see kernels/_pixels.py). fp32
  accumulation, fp64 for fp64 inputs (gradcheck through the interpreter).
"""

import torch
import triton
import triton.language as tl

from ._pixels import and_scalar as _and  # a tensor mask and a scalar condition

# Largest supported upsampling factor: the backward unrolls (2S)^2 gathers.
MAX_SCALE = 4

# Static launch configs, checked by compiling for sm_90 (python -m fastuda.kernels.audit: ptxas
# register counts, no spills, Triton 3.8): forward 113-184 registers at scale 2 (one warp: 11-17
# programs per SM); scale-2 backward 188-255 (8-10 programs per SM); the generic backward about 105
# at scale 3 and 170-215 at 4 (the (2S)^2 window is unrolled).
FWD_BLOCK = {1: (8, 128), 2: (8, 128), 3: (8, 64), 4: (8, 64)}  # LR (rows walked, columns) per program, by scale
FWD_NUM_WARPS = 1
BWD_BLOCK = {1: (4, 32), 2: (4, 128), 3: (4, 16), 4: (4, 16)}  # LR pixels per program, by scale
# Scale 2 runs _scale_fusion_bwd2_kernel (BWD_BLOCK[2] only for planes over 2^31 elements): bands
# of 8 LR rows (even: two per step) x 128 columns.
BWD2_BLOCK = (8, 128)
# A forward program is a chain of dependent round trips (BLOCK_I / 2 + 1 of them): a launch of
# fewer than about 8 programs per SM (an H100 has 132) has them all resident at once and waits on
# one chain, so it walks bands of 4 rows instead (HRDA's 128 x 128 training logits at B = 2). The
# backward keeps 8: its programs are longer, and halving them adds as much issue and port time as
# it saves in latency (modelled).
FEW_PROGRAMS = 1024
BWD_NUM_WARPS = 4
BWD2_NUM_WARPS = 1  # the scale-2 walk: one warp per column tile of BLOCK_J LR columns
ZERO_BLOCK = (16, 64)  # hr pixels per program of the d_hr zero fill
# Channels per program for a one-channel attention. A loop over channels sums d
# attention in registers, but it raised the backward from 64 to 143 registers
# (LLVM hoists the 16 gathers' offsets and masks out of the loop), so by default
# each program takes one channel and torch adds the per-channel fp32 planes.
BROADCAST_CHANNELS_PER_PROGRAM = 1


@triton.jit
def _taps(dst, n_src, S: tl.constexpr, ACC: tl.constexpr):
    """Bilinear taps (align_corners=False) of destination indices ``dst`` (1D, >= 0).

    The source coordinate (dst + 0.5) / S - 0.5 is clamped at 0, as PyTorch
    does; 2S times it is an integer, so the weights are exact for S = 2, 4.
    Returns (i0, i1, w0, w1): source indices in [0, n_src) and their weights.
    """
    num = tl.maximum(2 * dst + 1 - S, 0)  # 2S * source coordinate, >= 0
    i0 = num // (2 * S)
    w1 = (num - i0 * (2 * S)).to(ACC) / (2 * S)
    i1 = tl.minimum(i0 + 1, n_src - 1)  # the last row/column repeats at the border
    return i0, i1, 1.0 - w1, w1


@triton.jit
def _adjoint_weight(dst, src, n_src, S: tl.constexpr, ACC: tl.constexpr):
    """Weight of destination index ``dst`` on source index ``src`` in the forward
    interpolation (0 when src is not one of dst's taps): one row of up^T."""
    i0, i1, w0, w1 = _taps(dst, n_src, S, ACC)
    return tl.where(i0 == src, w0, 0.0) + tl.where(i1 == src, w1, 0.0)


@triton.jit
def _box(box_ptr, H, W, hd, wd, S: tl.constexpr, HAS_BOX: tl.constexpr):
    """The box, read from memory and clamped. Returns

    ay0, ay1, ax0, ax1: the attention box on the LR grid (box / S);
    ey0, ey1, ex0, ex1: the output region where pad(hr) holds hr: inside the
        box, inside the output, and inside hr's own extent;
    oy, ox: the box origin; output pixel (Y, X) reads hr[Y - oy, X - ox].
    Without a box, hr covers the whole output.
    """
    if HAS_BOX:
        # int32 like H and W: the box fits, and mixing int64 coordinates into int32 index math
        # trips Triton 3.9's interpreter (an int64-typed comparison result as a load mask)
        y0 = tl.load(box_ptr).to(tl.int32)
        y1 = tl.load(box_ptr + 1).to(tl.int32)
        x0 = tl.load(box_ptr + 2).to(tl.int32)
        x1 = tl.load(box_ptr + 3).to(tl.int32)
    else:
        y0 = H * 0
        y1 = H
        x0 = W * 0
        x1 = W
    cy0 = tl.minimum(tl.maximum(y0, 0), H)
    cy1 = tl.minimum(tl.maximum(y1, 0), H)
    cx0 = tl.minimum(tl.maximum(x0, 0), W)
    cx1 = tl.minimum(tl.maximum(x1, 0), W)
    ey1 = tl.minimum(cy1, y0 + hd)
    ex1 = tl.minimum(cx1, x0 + wd)
    return cy0 // S, cy1 // S, cx0 // S, cx1 // S, cy0, ey1, cx0, ex1, y0, x0


@triton.jit
def _load2d(base, rows, cols, stride_h, stride_w, mask):
    """(len(rows), len(cols)) gather of a plane at base."""
    return tl.load(base + (rows.to(tl.int64) * stride_h)[:, None] + (cols.to(tl.int64) * stride_w)[None, :], mask=mask, other=0.0)


@triton.jit
def _up_masked_attention(
    att_base, y0, y1, wy0, wy1, x0, x1, wx0, wx1, ay0, ay1, ax0, ax1, stride_ah, stride_aw, mask, ACC: tl.constexpr
):
    """up(a') on an output tile from its taps, a' = attention zeroed outside the LR box."""
    ry0 = (y0 >= ay0) & (y0 < ay1)
    ry1 = (y1 >= ay0) & (y1 < ay1)
    rx0 = (x0 >= ax0) & (x0 < ax1)
    rx1 = (x1 >= ax0) & (x1 < ax1)
    a00 = _load2d(att_base, y0, x0, stride_ah, stride_aw, mask & ry0[:, None] & rx0[None, :]).to(ACC)
    a01 = _load2d(att_base, y0, x1, stride_ah, stride_aw, mask & ry0[:, None] & rx1[None, :]).to(ACC)
    a10 = _load2d(att_base, y1, x0, stride_ah, stride_aw, mask & ry1[:, None] & rx0[None, :]).to(ACC)
    a11 = _load2d(att_base, y1, x1, stride_ah, stride_aw, mask & ry1[:, None] & rx1[None, :]).to(ACC)
    return wy0[:, None] * (wx0[None, :] * a00 + wx1[None, :] * a01) + wy1[:, None] * (
        wx0[None, :] * a10 + wx1[None, :] * a11
    )


@triton.jit
def _interleave(phases, S: tl.constexpr):
    """S (BLOCK_J,) phase tiles -> one (S * BLOCK_J,) tile whose element S * j + r is phase r's
    element j, for S = 2 or 4. tl.join adds the phase as each thread's innermost axis, so the
    reshape moves no data and the output stays contiguous per thread."""
    if S == 2:
        t = tl.join(phases[0], phases[1])
    else:
        t = tl.join(tl.join(phases[0], phases[2]), tl.join(phases[1], phases[3]))
    return tl.reshape(t, (S * phases[0].shape[0],))


@triton.jit
def _row_taps(base, i, left, j, right, j_ok, stride_h, stride_w, ACC: tl.constexpr, mask_l=None, mask_m=None, mask_r=None):
    """LR row ``i`` (a scalar, inside the plane) of a plane at columns (left, j, right): the clamped
    neighbours and the tile's own columns (contiguous, so a vector load). ``mask_*`` replace
    ``j_ok`` per column set (a' uses them to zero the attention outside the box)."""
    row = base + i.to(tl.int64) * stride_h
    ml = j_ok if mask_l is None else mask_l
    mm = j_ok if mask_m is None else mask_m
    mr = j_ok if mask_r is None else mask_r
    return (
        tl.load(row + left * stride_w, mask=ml, other=0.0).to(ACC),
        tl.load(row + j * stride_w, mask=mm, other=0.0).to(ACC),
        tl.load(row + right * stride_w, mask=mr, other=0.0).to(ACC),
    )


@triton.jit
def _att_taps(att_b, i, left, j, right, cols_in, ay0, ay1, stride_ah, stride_aw, ACC: tl.constexpr):
    """a' of LR row ``i`` at columns (left, j, right): the attention, zero outside the LR box (the
    masked loads give it; ``cols_in``: the three column sets' in-box masks)."""
    row_in = (i >= ay0) & (i < ay1)
    return _row_taps(att_b, i, left, j, right, None, stride_ah, stride_aw, ACC, _and(cols_in[0], row_in),
                     _and(cols_in[1], row_in), _and(cols_in[2], row_in))  # fmt: skip


@triton.jit
def _lerp(a, b, w: tl.constexpr):
    """a + w (b - a) for a constexpr weight; a itself at w = 0 (the centre phase of an odd S)."""
    if w == 0:
        return a
    else:
        return tl.fma(b - a, w, a)


@triton.jit
def _fwd_hpass(lr_b, att_b, i, left, j, right, j_ok, cols_in, ay0, ay1, stride_lh, stride_lw, stride_ah, stride_aw,
               S: tl.constexpr, ACC: tl.constexpr):  # fmt: skip
    """Horizontal pass of LR row ``i``: per output column phase r (column S j + r), the
    interpolated (1 - a') lr and a'. Phase r samples the source coordinate j + (2r + 1 - S) / 2S:
    columns (j - 1, j) left of j, else (j, j + 1), with constexpr weights."""
    l0, l1, l2 = _row_taps(lr_b, i, left, j, right, j_ok, stride_lh, stride_lw, ACC)
    a0, a1, a2 = _att_taps(att_b, i, left, j, right, cols_in, ay0, ay1, stride_ah, stride_aw, ACC)
    p0 = (1.0 - a0) * l0
    p1 = (1.0 - a1) * l1
    p2 = (1.0 - a2) * l2
    hp = ()
    ha = ()
    for r in tl.static_range(S):
        if 2 * r + 1 < S:
            hp = hp + (_lerp(p0, p1, (2 * r + 1 + S) / (2 * S)),)
            ha = ha + (_lerp(a0, a1, (2 * r + 1 + S) / (2 * S)),)
        else:
            hp = hp + (_lerp(p1, p2, (2 * r + 1 - S) / (2 * S)),)
            ha = ha + (_lerp(a1, a2, (2 * r + 1 - S) / (2 * S)),)
    return hp, ha


@triton.jit
def _vpass(lo, hi, w: tl.constexpr, S: tl.constexpr):
    """Vertical pass of one output row phase over S column-phase tiles."""
    out = ()
    for r in tl.static_range(S):
        out = out + (_lerp(lo[r], hi[r], w),)
    return out


@triton.jit
def _aligned(x, VEC: tl.constexpr):
    """x, known by the caller's run-time check to be a multiple of VEC, in a form the compiler can
    see is one: (x // VEC) * VEC. (tl.multiple_of cannot say it here: on a function's argument it
    sets nothing, and the inliner passes x in as one.)"""
    return (x // VEC) * VEC


@triton.jit
def _hr_cols(col0, N: tl.constexpr, stride_hw, VEC: tl.constexpr):
    """Offsets of N contiguous output columns in an hr row, the first at hr column ``col0`` (output
    column minus box origin). VEC > 1: the caller has checked that col0 is VEC-aligned and the row
    contiguous (the origin lives in device memory, so only at run time), and the loads vectorise."""
    if VEC > 1:
        return _aligned(col0, VEC) + tl.arange(0, N)
    else:
        return (col0 + tl.arange(0, N)) * stride_hw


@triton.jit
def _fwd_emit(hp, ha, i, row_ok, j0, j, x_ok, x_hr, ey0, ey1, ex0, ex1, oy, ox, hr_b, out_b, W, stride_hh, stride_hw,
              S: tl.constexpr, ACC: tl.constexpr, BLOCK_J: tl.constexpr, VEC: tl.constexpr):  # fmt: skip
    """The S output rows of LR row i from the horizontal passes ``hp``, ``ha`` of rows (i - 1, i,
    i + 1). Output row phase ry samples rows (i - 1, i) when 2 ry + 1 < S, else (i, i + 1);
    ((2 ry + 1 + S) mod 2S) / 2S is the second row's weight."""
    for ry in tl.static_range(S):
        if 2 * ry + 1 < S:
            up_lr = _vpass(hp[0], hp[1], ((2 * ry + 1 + S) % (2 * S)) / (2 * S), S)
            up_att = _vpass(ha[0], ha[1], ((2 * ry + 1 + S) % (2 * S)) / (2 * S), S)
        else:
            up_lr = _vpass(hp[1], hp[2], ((2 * ry + 1 + S) % (2 * S)) / (2 * S), S)
            up_att = _vpass(ha[1], ha[2], ((2 * ry + 1 + S) % (2 * S)) / (2 * S), S)
        Y = S * i + ry
        y_hr = (Y >= ey0) & (Y < ey1)
        out_row = out_b + Y.to(tl.int64) * W
        hr_row = hr_b + (Y - oy).to(tl.int64) * stride_hh
        if S == 2 or S == 4:
            # Phases interleaved into contiguous output rows: vector stores and hr loads.
            X = S * j0 + tl.arange(0, S * BLOCK_J)
            hr = tl.load(hr_row + _hr_cols(S * j0 - ox, S * BLOCK_J, stride_hw, VEC), mask=_and(x_hr, y_hr), other=0.0)
            fused = tl.fma(_interleave(up_att, S), hr.to(ACC), _interleave(up_lr, S))
            tl.store(out_row + X, fused.to(out_b.dtype.element_ty), mask=_and(x_ok, row_ok))
        else:
            for r in tl.static_range(S):
                X = S * j + r  # (BLOCK_J,): contiguous for S = 1, strided by S otherwise
                hr_mask = _and((X < W) & (X >= ex0) & (X < ex1), y_hr)
                hr = tl.load(hr_row + (X - ox).to(tl.int64) * stride_hw, mask=hr_mask, other=0.0)
                tl.store(out_row + X, tl.fma(up_att[r], hr.to(ACC), up_lr[r]).to(out_b.dtype.element_ty), mask=_and(X < W, row_ok))


@triton.jit
def _fwd_rows(lr_b, att_b, hr_b, out_b, i_begin, i_end, j0, left, j, right, j_ok, cols_in, ay0, ay1, ey0, ey1, ex0,
              ex1, oy, ox, h, W, stride_lh, stride_lw, stride_ah, stride_aw, stride_hh, stride_hw,
              S: tl.constexpr, ACC: tl.constexpr, BLOCK_J: tl.constexpr, VEC: tl.constexpr):  # fmt: skip
    """LR rows [i_begin, i_end) of a column tile, walked top to bottom two at a time. The
    horizontal passes of rows (i - 1, i) are kept from the previous step, so each LR row is read
    once (plus one row above and below the band), and every output row phase is a vertical lerp
    of two of them. Each step's loads go out together (one round trip for two LR rows)."""
    if S == 2 or S == 4:
        X = S * j0 + tl.arange(0, S * BLOCK_J)  # the interleaved output columns
    else:
        X = S * j  # (unused: odd scales store phase by phase)
    if VEC > 1:
        # The caller checked that hr's column edges are VEC-aligned too: the hr mask is then
        # constant over each vector, which the backend must know before it issues vector loads.
        ex0 = _aligned(ex0, VEC)
        ex1 = _aligned(ex1, VEC)
    x_ok = X < W
    x_hr = x_ok & (X >= ex0) & (X < ex1)  # hr's columns; its rows are tested per output row
    hp_prev, ha_prev = _fwd_hpass(lr_b, att_b, tl.maximum(i_begin - 1, 0), left, j, right, j_ok, cols_in, ay0, ay1,
                                  stride_lh, stride_lw, stride_ah, stride_aw, S, ACC)  # fmt: skip
    hp_cur, ha_cur = _fwd_hpass(lr_b, att_b, i_begin, left, j, right, j_ok, cols_in, ay0, ay1,
                                stride_lh, stride_lw, stride_ah, stride_aw, S, ACC)  # fmt: skip
    for i in range(i_begin, i_end, 2):
        hp_1, ha_1 = _fwd_hpass(lr_b, att_b, tl.minimum(i + 1, h - 1), left, j, right, j_ok, cols_in, ay0, ay1,
                                stride_lh, stride_lw, stride_ah, stride_aw, S, ACC)  # fmt: skip
        hp_2, ha_2 = _fwd_hpass(lr_b, att_b, tl.minimum(i + 2, h - 1), left, j, right, j_ok, cols_in, ay0, ay1,
                                stride_lh, stride_lw, stride_ah, stride_aw, S, ACC)  # fmt: skip
        _fwd_emit((hp_prev, hp_cur, hp_1), (ha_prev, ha_cur, ha_1), i, True, j0, j, x_ok, x_hr, ey0, ey1, ex0, ex1, oy, ox,
                  hr_b, out_b, W, stride_hh, stride_hw, S, ACC, BLOCK_J, VEC)  # fmt: skip
        # Row i + 1 is past the band only at the bottom of the plane (bands have even heights).
        _fwd_emit((hp_cur, hp_1, hp_2), (ha_cur, ha_1, ha_2), i + 1, i + 1 < h, j0, j, x_ok, x_hr, ey0, ey1, ex0, ex1, oy, ox,
                  hr_b, out_b, W, stride_hh, stride_hw, S, ACC, BLOCK_J, VEC)  # fmt: skip
        hp_prev, ha_prev = hp_1, ha_1
        hp_cur, ha_cur = hp_2, ha_2


@triton.jit
def _scale_fusion_fwd_kernel(
    lr_ptr,  # (B, C, h, w) any strides: context (low-resolution) logits
    att_ptr,  # (B, C, h, w) or (B, 1, h, w) any strides: scale attention in [0, 1] (stride_ac = 0 broadcasts)
    hr_ptr,  # (B, C, hd, wd) any strides: detail logits, at the box (the whole output without HAS_BOX)
    box_ptr,  # (4,) int64 (y0, y1, x0, x1), output coordinates (unused without HAS_BOX)
    out_ptr,  # (B, C, S*h, S*w) contiguous: fused logits
    h,
    w,
    hd,
    wd,
    stride_lb,
    stride_lc,
    stride_lh,
    stride_lw,
    stride_ab,
    stride_ac,
    stride_ah,
    stride_aw,
    stride_hb,
    stride_hc,
    stride_hh,
    stride_hw,
    num_tiles_j,
    ACC: tl.constexpr,  # float32, or float64 for float64 inputs
    S: tl.constexpr,  # upsampling factor
    HAS_BOX: tl.constexpr,
    BLOCK_I: tl.constexpr,  # LR rows per program, walked one at a time (S * BLOCK_I output rows)
    BLOCK_J: tl.constexpr,  # LR columns per program (S * BLOCK_J output columns)
    HR_VEC: tl.constexpr,  # hr elements per 16-byte vector
):
    pid = tl.program_id(0)
    c = tl.program_id(1)
    b = tl.program_id(2).to(tl.int64)
    C = tl.num_programs(1)
    H = S * h
    W = S * w
    i_begin = (pid // num_tiles_j) * BLOCK_I
    i_end = tl.minimum(i_begin + BLOCK_I, h)
    j0 = (pid % num_tiles_j) * BLOCK_J
    j = j0 + tl.arange(0, BLOCK_J)  # (BLOCK_J,) LR columns
    ay0, ay1, ax0, ax1, ey0, ey1, ex0, ex1, oy, ox = _box(box_ptr, H, W, hd, wd, S, HAS_BOX)

    # Neighbours clamped to the plane: PyTorch clamps the source coordinate at 0 and repeats the
    # last row / column, which is what a tap on the clamped index with any weight gives.
    j_ok = j < w
    left = tl.maximum(j - 1, 0)
    right = tl.minimum(j + 1, w - 1)
    cols_in = (j_ok & (left >= ax0) & (left < ax1), j_ok & (j >= ax0) & (j < ax1), j_ok & (right >= ax0) & (right < ax1))
    lr_b = lr_ptr + b * stride_lb + c * stride_lc
    att_b = att_ptr + b * stride_ab + c * stride_ac
    hr_b = hr_ptr + b * stride_hb + c * stride_hc
    out_b = out_ptr + (b * C + c) * H * W
    if ((S * j0 - ox) % HR_VEC == 0) & (ex0 % HR_VEC == 0) & (ex1 % HR_VEC == 0) & (stride_hw == 1) & ((S == 2) | (S == 4)):
        _fwd_rows(lr_b, att_b, hr_b, out_b, i_begin, i_end, j0, left, j, right, j_ok, cols_in, ay0, ay1, ey0, ey1, ex0,
                  ex1, oy, ox, h, W, stride_lh, stride_lw, stride_ah, stride_aw, stride_hh, stride_hw, S, ACC, BLOCK_J, HR_VEC)  # fmt: skip
    else:
        _fwd_rows(lr_b, att_b, hr_b, out_b, i_begin, i_end, j0, left, j, right, j_ok, cols_in, ay0, ay1, ey0, ey1, ex0,
                  ex1, oy, ox, h, W, stride_lh, stride_lw, stride_ah, stride_aw, stride_hh, stride_hw, S, ACC, BLOCK_J, 1)  # fmt: skip


@triton.jit
def _scale_fusion_bwd_kernel(
    grad_ptr,  # (B, C, S*h, S*w) any strides: d loss / d fused
    lr_ptr,  # (B, C, h, w) any strides
    att_ptr,  # (B, C or 1, h, w) any strides (stride_ac = 0 broadcasts)
    hr_ptr,  # (B, C, hd, wd) any strides
    box_ptr,  # (4,) int64 (y0, y1, x0, x1), output coordinates (unused without HAS_BOX)
    dlr_ptr,  # (B, C, h, w) contiguous: d loss / d lr
    datt_ptr,  # (B, num_att_planes, h, w) contiguous: d attention (class-wise), or per-group sums over C
    dhr_ptr,  # (B, C, hd, wd) contiguous: d loss / d hr
    C,
    h,
    w,
    hd,
    wd,
    stride_gb,
    stride_gc,
    stride_gh,
    stride_gw,
    stride_lb,
    stride_lc,
    stride_lh,
    stride_lw,
    stride_ab,
    stride_ac,
    stride_ah,
    stride_aw,
    stride_hb,
    stride_hc,
    stride_hh,
    stride_hw,
    num_att_planes,  # C (class-wise) or the number of channel groups (broadcast)
    num_tiles_j,
    num_lr_tiles,
    num_zero_tiles_v,
    ACC: tl.constexpr,
    S: tl.constexpr,
    HAS_BOX: tl.constexpr,
    BROADCAST_ATT: tl.constexpr,  # one attention channel for all C
    CHANNELS_PER_PROGRAM: tl.constexpr,
    BLOCK_I: tl.constexpr,  # LR rows per program
    BLOCK_J: tl.constexpr,  # LR columns per program
    BLOCK_OY: tl.constexpr,  # next_power_of_2(S * BLOCK_I): output rows the tile owns
    BLOCK_OX: tl.constexpr,  # next_power_of_2(S * BLOCK_J)
    BLOCK_U: tl.constexpr,  # hr rows per zero-fill program
    BLOCK_V: tl.constexpr,  # hr columns per zero-fill program
):
    pid = tl.program_id(0)
    b = tl.program_id(1).to(tl.int64)
    group = tl.program_id(2)
    c_begin = group * CHANNELS_PER_PROGRAM
    c_end = tl.minimum(c_begin + CHANNELS_PER_PROGRAM, C)
    H = S * h
    W = S * w
    ay0, ay1, ax0, ax1, ey0, ey1, ex0, ex1, oy, ox = _box(box_ptr, H, W, hd, wd, S, HAS_BOX)

    if pid < num_lr_tiles:
        ti = pid // num_tiles_j
        tj = pid % num_tiles_j
        i = ti * BLOCK_I + tl.arange(0, BLOCK_I)  # (BLOCK_I,) LR rows
        j = tj * BLOCK_J + tl.arange(0, BLOCK_J)  # (BLOCK_J,) LR columns
        lr_mask = (i < h)[:, None] & (j < w)[None, :]
        in_att_box = ((i >= ay0) & (i < ay1))[:, None] & ((j >= ax0) & (j < ax1))[None, :]
        lr_offs = (i.to(tl.int64) * w)[:, None] + j[None, :]  # contiguous (h, w) planes

        # The output block this tile owns (for d_hr), its taps, and whether it meets the box.
        OY = S * ti * BLOCK_I + tl.arange(0, BLOCK_OY)
        OX = S * tj * BLOCK_J + tl.arange(0, BLOCK_OX)
        oy_ok = (OY < S * (ti * BLOCK_I + BLOCK_I)) & (OY < H)
        ox_ok = (OX < S * (tj * BLOCK_J + BLOCK_J)) & (OX < W)
        blk_mask = oy_ok[:, None] & ox_ok[None, :]
        hr_blk_mask = blk_mask & ((OY >= ey0) & (OY < ey1))[:, None] & ((OX >= ex0) & (OX < ex1))[None, :]
        blk_y_lo = S * ti * BLOCK_I
        blk_x_lo = S * tj * BLOCK_J
        hits_box = (blk_y_lo < ey1) & (blk_y_lo + S * BLOCK_I > ey0) & (blk_x_lo < ex1) & (blk_x_lo + S * BLOCK_J > ex0)
        oy0, oy1, owy0, owy1 = _taps(OY, h, S, ACC)
        ox0, ox1, owx0, owx1 = _taps(OX, w, S, ACC)

        att_b = att_ptr + b * stride_ab
        datt_sum = tl.zeros([BLOCK_I, BLOCK_J], ACC)  # one-channel attention: sum over this group's channels
        for c in range(c_begin, c_end):
            g_base = grad_ptr + b * stride_gb + c * stride_gc
            hr_base = hr_ptr + b * stride_hb + c * stride_hc
            # up^T(g) and up^T(g * pad(hr)) by a gather over the (2S x 2S) output window.
            ut_g = tl.zeros([BLOCK_I, BLOCK_J], ACC)
            ut_gp = tl.zeros([BLOCK_I, BLOCK_J], ACC)
            for ky in tl.static_range(2 * S):
                Yk = S * i - (S + 1) // 2 + ky  # (BLOCK_I,)
                yk_ok = (Yk >= 0) & (Yk < H) & (i < h)
                yk_hr = (Yk >= ey0) & (Yk < ey1)
                wyk = _adjoint_weight(Yk, i, h, S, ACC)
                row_g = tl.zeros([BLOCK_I, BLOCK_J], ACC)
                row_gp = tl.zeros([BLOCK_I, BLOCK_J], ACC)
                for kx in tl.static_range(2 * S):
                    Xk = S * j - (S + 1) // 2 + kx  # (BLOCK_J,)
                    xk_ok = (Xk >= 0) & (Xk < W) & (j < w)
                    xk_hr = (Xk >= ex0) & (Xk < ex1)
                    wxk = _adjoint_weight(Xk, j, w, S, ACC)
                    m = yk_ok[:, None] & xk_ok[None, :]
                    g = _load2d(g_base, Yk, Xk, stride_gh, stride_gw, m).to(ACC)
                    p = _load2d(hr_base, Yk - oy, Xk - ox, stride_hh, stride_hw, m & yk_hr[:, None] & xk_hr[None, :])
                    row_g += wxk[None, :] * g
                    row_gp += wxk[None, :] * (g * p.to(ACC))
                ut_g += wyk[:, None] * row_g
                ut_gp += wyk[:, None] * row_gp

            lr = _load2d(lr_ptr + b * stride_lb + c * stride_lc, i, j, stride_lh, stride_lw, lr_mask).to(ACC)
            # A one-channel attention (stride_ac = 0) is re-read per channel: cache
            # hits, and fewer registers live across the channel loop than keeping it.
            a_lr = _load2d(att_b + c * stride_ac, i, j, stride_ah, stride_aw, lr_mask & in_att_box).to(ACC)
            plane = b * C + c
            tl.store(dlr_ptr + plane * h * w + lr_offs, ((1.0 - a_lr) * ut_g).to(dlr_ptr.dtype.element_ty), mask=lr_mask)
            d_att = tl.where(in_att_box, ut_gp - lr * ut_g, 0.0)  # d a' masked by the box: d attention
            if BROADCAST_ATT:
                datt_sum += d_att
            else:
                datt = datt_ptr + (b * num_att_planes + c) * h * w + lr_offs
                tl.store(datt, d_att.to(datt_ptr.dtype.element_ty), mask=lr_mask)

            if hits_box:
                up_att = _up_masked_attention(
                    att_b + c * stride_ac, oy0, oy1, owy0, owy1, ox0, ox1, owx0, owx1,
                    ay0, ay1, ax0, ax1, stride_ah, stride_aw, blk_mask, ACC,
                )  # fmt: skip
                g_blk = _load2d(g_base, OY, OX, stride_gh, stride_gw, hr_blk_mask).to(ACC)
                dhr = dhr_ptr + plane * hd * wd + ((OY - oy).to(tl.int64) * wd)[:, None] + (OX - ox)[None, :]
                tl.store(dhr, (g_blk * up_att).to(dhr_ptr.dtype.element_ty), mask=hr_blk_mask)

        if BROADCAST_ATT:
            datt = datt_ptr + (b * num_att_planes + group) * h * w + lr_offs
            tl.store(datt, datt_sum.to(datt_ptr.dtype.element_ty), mask=lr_mask)
    else:
        _zero_dhr_outside(dhr_ptr, pid - num_lr_tiles, b, c_begin, c_end, C, hd, wd, oy, ox, ey0, ey1, ex0, ex1,
                          num_zero_tiles_v, BLOCK_U, BLOCK_V)  # fmt: skip


@triton.jit
def _zero_dhr_outside(dhr_ptr, t, b, c_begin, c_end, C, hd, wd, oy, ox, ey0, ey1, ex0, ex1, num_zero_tiles_v,
                      BLOCK_U: tl.constexpr, BLOCK_V: tl.constexpr):  # fmt: skip
    """d_hr where no in-range output pixel reads hr (only for a box that does not match hr or
    leaves the output): zero, so every element is written. ``t``: the zero-fill tile."""
    u = (t // num_zero_tiles_v) * BLOCK_U + tl.arange(0, BLOCK_U)
    v = (t % num_zero_tiles_v) * BLOCK_V + tl.arange(0, BLOCK_V)
    covered = ((oy + u >= ey0) & (oy + u < ey1))[:, None] & ((ox + v >= ex0) & (ox + v < ex1))[None, :]
    mask = (u < hd)[:, None] & (v < wd)[None, :] & ~covered
    offs = (u.to(tl.int64) * wd)[:, None] + v[None, :]
    for c in range(c_begin, c_end):
        tl.store(dhr_ptr + (b * C + c) * hd * wd + offs, tl.zeros([BLOCK_U, BLOCK_V], dhr_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _att_hpass2(att_b, r, left, j, right, cols_in, ay0, ay1, stride_ah, stride_aw, ACC: tl.constexpr, TAPS: tl.constexpr):
    """a' (attention zeroed outside the LR box) of LR row ``r`` at scale 2: its two column-phase
    taps (1/4 left + 3/4 own, 3/4 own + 1/4 right) and its own value. Without TAPS (a tile that
    writes no d_hr) only its own value is read, and stands in for the taps."""
    if TAPS:
        a0, a1, a2 = _att_taps(att_b, r, left, j, right, cols_in, ay0, ay1, stride_ah, stride_aw, ACC)
        return tl.fma(a1, 0.75, 0.25 * a0), tl.fma(a1, 0.75, 0.25 * a2), a1
    else:
        row = att_b + r.to(tl.int64) * stride_ah
        a1 = tl.load(row + j * stride_aw, mask=_and(cols_in[1], (r >= ay0) & (r < ay1)), other=0.0).to(ACC)
        return a1, a1, a1


@triton.jit
def _bwd2_out_row(g_base, hr_base, Y, g_cols, gl_cols, gr_cols, h_cols, hl_cols, hr_cols, x_ok, j_ok, x_hr, xl_hr,
                  xr_hr, ey0, ey1, oy, stride_gh, stride_hh, ACC: tl.constexpr, BLOCK_J: tl.constexpr,
                  WITH_HR: tl.constexpr):  # fmt: skip
    """Output row Y's part of up^T: per LR column j, 3/4 (g[2j] + g[2j + 1]) + 1/4 (g[2j - 1] +
    g[2j + 2]) (clamped neighbours), of g and of g * pad(hr); and the row itself (for d_hr). The
    pair is one contiguous vector load split into phases, the neighbours two narrow loads."""
    g_row = g_base + Y * stride_gh
    g = tl.load(g_row + g_cols, mask=x_ok, other=0.0).to(ACC)
    g_l = tl.load(g_row + gl_cols, mask=j_ok, other=0.0).to(ACC)
    g_r = tl.load(g_row + gr_cols, mask=j_ok, other=0.0).to(ACC)
    g_even, g_odd = tl.split(tl.reshape(g, (BLOCK_J, 2)))
    hg = tl.fma(g_even + g_odd, 0.75, 0.25 * (g_l + g_r))
    if WITH_HR:
        y_hr = (Y >= ey0) & (Y < ey1)
        hr_row = hr_base + (Y - oy) * stride_hh
        p = tl.load(hr_row + h_cols, mask=_and(x_hr, y_hr), other=0.0).to(ACC)
        p_l = tl.load(hr_row + hl_cols, mask=_and(xl_hr, y_hr), other=0.0).to(ACC)
        p_r = tl.load(hr_row + hr_cols, mask=_and(xr_hr, y_hr), other=0.0).to(ACC)
        gp_even, gp_odd = tl.split(tl.reshape(g * p, (BLOCK_J, 2)))
        hgp = tl.fma(gp_even + gp_odd, 0.75, 0.25 * tl.fma(g_l, p_l, g_r * p_r))
    else:
        hgp = tl.zeros([BLOCK_J], ACC)
    return hg, hgp, g


@triton.jit
def _bwd2_lr_row(carry, i, row_ok, g_base, hr_base, lr_b, att_b, dlr_row0, datt_row0, dhr_plane, c, c_begin, h, H, j,
                 left, right, cols_in, g_cols, gl_cols, gr_cols, h_cols, hl_cols, hr_cols, dhr_cols, x_ok, j_ok, x_hr,
                 xl_hr, xr_hr, ay0, ay1, ey0, ey1, oy, w, wd, stride_gh, stride_hh, stride_lh, stride_lw, stride_ah,
                 stride_aw, ACC: tl.constexpr, BLOCK_J: tl.constexpr, WITH_HR: tl.constexpr,
                 ACCUMULATE_DATT: tl.constexpr):  # fmt: skip
    """One LR row i of the walk. ``carry``: up^T rows of output rows 2i - 1 and 2i (g, g * pad(hr)),
    output row 2i of g, the a' taps of LR rows i - 1 and i and a'[i]. Writes d_lr and d_attention
    of row i and d_hr of output rows 2i, 2i + 1; returns the carry of row i + 1."""
    hg_a, hgp_a, hg_b, hgp_b, g_b, ha_prev, ha_cur, a_cur = carry
    hg_1, hgp_1, g_1 = _bwd2_out_row(g_base, hr_base, tl.minimum(2 * i + 1, H - 1), g_cols, gl_cols, gr_cols, h_cols,
                                     hl_cols, hr_cols, x_ok, j_ok, x_hr, xl_hr, xr_hr, ey0, ey1, oy, stride_gh,
                                     stride_hh, ACC, BLOCK_J, WITH_HR)  # fmt: skip
    hg_2, hgp_2, g_2 = _bwd2_out_row(g_base, hr_base, tl.minimum(2 * i + 2, H - 1), g_cols, gl_cols, gr_cols, h_cols,
                                     hl_cols, hr_cols, x_ok, j_ok, x_hr, xl_hr, xr_hr, ey0, ey1, oy, stride_gh,
                                     stride_hh, ACC, BLOCK_J, WITH_HR)  # fmt: skip
    ha_next = _att_hpass2(att_b, tl.minimum(i + 1, h - 1), left, j, right, cols_in, ay0, ay1, stride_ah, stride_aw, ACC, WITH_HR)
    # up^T over the rows: 3/4 (rows 2i, 2i + 1) + 1/4 (rows 2i - 1, 2i + 2), clamped like the columns.
    ut_g = tl.fma(hg_b + hg_1, 0.75, 0.25 * (hg_a + hg_2))
    ut_gp = tl.fma(hgp_b + hgp_1, 0.75, 0.25 * (hgp_a + hgp_2))
    lr_ok = _and(j_ok, row_ok)
    lr = tl.load(lr_b + i * stride_lh + j * stride_lw, mask=lr_ok, other=0.0).to(ACC)
    tl.store(dlr_row0 + i * w + j, ((1.0 - a_cur) * ut_g).to(dlr_row0.dtype.element_ty), mask=lr_ok)
    d_att = tl.where(_and(cols_in[1], (i >= ay0) & (i < ay1)), ut_gp - lr * ut_g, 0.0)  # d a' inside the box
    datt = datt_row0 + i * w + j
    if ACCUMULATE_DATT:  # a one-channel attention summed over this program's channels
        d_att += tl.load(datt, mask=_and(lr_ok, c > c_begin), other=0.0).to(ACC)
    tl.store(datt, d_att.to(datt_row0.dtype.element_ty), mask=lr_ok)
    if WITH_HR:
        # d_hr = g * up(a') on output rows 2i (a' rows i - 1, i at 1/4, 3/4) and 2i + 1 (i, i + 1).
        top = _interleave((tl.fma(ha_cur[0], 0.75, 0.25 * ha_prev[0]), tl.fma(ha_cur[1], 0.75, 0.25 * ha_prev[1])), 2)
        bottom = _interleave((tl.fma(ha_cur[0], 0.75, 0.25 * ha_next[0]), tl.fma(ha_cur[1], 0.75, 0.25 * ha_next[1])), 2)
        for ry in tl.static_range(2):
            Y = 2 * i + ry
            m = _and(x_hr, (Y >= ey0) & (Y < ey1) & row_ok)
            d = g_b * top if ry == 0 else g_1 * bottom
            tl.store(dhr_plane + (Y - oy) * wd + dhr_cols, d.to(dhr_plane.dtype.element_ty), mask=m)
    return hg_1, hgp_1, hg_2, hgp_2, g_2, ha_cur, (ha_next[0], ha_next[1]), ha_next[2]


@triton.jit
def _bwd2_walk(grad_ptr, lr_ptr, att_ptr, hr_ptr, dlr_ptr, datt_ptr, dhr_ptr, b, group, c_begin, c_end, C, h, w, hd,
               wd, i_begin, i_end, j0, ay0, ay1, ax0, ax1, ey0, ey1, ex0, ex1, oy, ox, stride_gb, stride_gc, stride_gh,
               stride_gw, stride_lb, stride_lc, stride_lh, stride_lw, stride_ab, stride_ac, stride_ah, stride_aw,
               stride_hb, stride_hc, stride_hh, stride_hw, num_att_planes, ACC: tl.constexpr,
               BROADCAST_ATT: tl.constexpr, CHANNELS_PER_PROGRAM: tl.constexpr, BLOCK_J: tl.constexpr,
               WITH_HR: tl.constexpr):  # fmt: skip
    """The LR rows [i_begin, i_end) of a column tile, per channel, walked two rows per step: each
    output row of g (and hr) is read once per tile (plus one row above and below the band), the
    up^T rows and the a' taps of the rows above are kept from the previous step."""
    H = 2 * h
    W = 2 * w
    j = j0 + tl.arange(0, BLOCK_J)  # LR columns
    j_ok = j < w
    left = tl.maximum(j - 1, 0)
    right = tl.minimum(j + 1, w - 1)
    cols_in = (j_ok & (left >= ax0) & (left < ax1), j_ok & (j >= ax0) & (j < ax1), j_ok & (right >= ax0) & (right < ax1))
    X = 2 * j0 + tl.arange(0, 2 * BLOCK_J)  # the output columns the tile owns
    x_ok = X < W
    x_hr = x_ok & (X >= ex0) & (X < ex1)
    XL = tl.maximum(2 * j - 1, 0)  # clamped neighbour columns
    XR = tl.minimum(2 * j + 2, W - 1)
    xl_hr = j_ok & (XL >= ex0) & (XL < ex1)
    xr_hr = j_ok & (XR >= ex0) & (XR < ex1)
    # Offsets inside one (H, W) plane are int32 (a plane under 2^31 elements: checked by the
    # launcher); the plane bases are int64.
    g_cols = X * stride_gw
    gl_cols = XL * stride_gw
    gr_cols = XR * stride_gw
    # hr's column offsets as the forward's unaligned path: no vector hr loads here (an aligned copy
    # of the walk spilled, and a box's column edges make the hr mask vary within a vector anyway)
    h_cols = _hr_cols((2 * j0 - ox).to(tl.int32), 2 * BLOCK_J, stride_hw, 1)
    hl_cols = ((XL - ox) * stride_hw).to(tl.int32)
    hr_cols = ((XR - ox) * stride_hw).to(tl.int32)
    dhr_cols = (X - ox).to(tl.int32)
    oy32 = oy.to(tl.int32)
    for c in range(c_begin, c_end):
        g_base = grad_ptr + b * stride_gb + c * stride_gc
        hr_base = hr_ptr + b * stride_hb + c * stride_hc
        lr_b = lr_ptr + b * stride_lb + c * stride_lc
        att_b = att_ptr + b * stride_ab + c * stride_ac
        plane = b * C + c
        dlr_row0 = dlr_ptr + plane * h * w
        datt_row0 = datt_ptr + (b * num_att_planes + (group if BROADCAST_ATT else c)) * h * w
        dhr_plane = dhr_ptr + plane * hd * wd
        hg_a, hgp_a, _ = _bwd2_out_row(g_base, hr_base, tl.maximum(2 * i_begin - 1, 0), g_cols, gl_cols, gr_cols, h_cols,
                                       hl_cols, hr_cols, x_ok, j_ok, x_hr, xl_hr, xr_hr, ey0, ey1, oy32, stride_gh,
                                       stride_hh, ACC, BLOCK_J, WITH_HR)  # fmt: skip
        hg_b, hgp_b, g_b = _bwd2_out_row(g_base, hr_base, 2 * i_begin, g_cols, gl_cols, gr_cols, h_cols, hl_cols,
                                         hr_cols, x_ok, j_ok, x_hr, xl_hr, xr_hr, ey0, ey1, oy32, stride_gh, stride_hh,
                                         ACC, BLOCK_J, WITH_HR)  # fmt: skip
        ha_prev = _att_hpass2(att_b, tl.maximum(i_begin - 1, 0), left, j, right, cols_in, ay0, ay1, stride_ah, stride_aw, ACC,
                              WITH_HR)
        ha_cur = _att_hpass2(att_b, i_begin, left, j, right, cols_in, ay0, ay1, stride_ah, stride_aw, ACC, WITH_HR)
        carry = (hg_a, hgp_a, hg_b, hgp_b, g_b, (ha_prev[0], ha_prev[1]), (ha_cur[0], ha_cur[1]), ha_cur[2])
        for i in range(i_begin, i_end, 2):
            for k in tl.static_range(2):
                # Row i + 1 is past the band only at the bottom of the plane (bands have even heights).
                carry = _bwd2_lr_row(carry, i + k, (i + k) < h, g_base, hr_base, lr_b, att_b, dlr_row0, datt_row0,
                                     dhr_plane, c, c_begin, h, H, j, left, right, cols_in, g_cols, gl_cols, gr_cols,
                                     h_cols, hl_cols, hr_cols, dhr_cols, x_ok, j_ok, x_hr, xl_hr, xr_hr, ay0, ay1, ey0,
                                     ey1, oy32, w, wd, stride_gh, stride_hh, stride_lh, stride_lw, stride_ah, stride_aw,
                                     ACC, BLOCK_J, WITH_HR, BROADCAST_ATT and CHANNELS_PER_PROGRAM > 1)  # fmt: skip


@triton.jit
def _scale_fusion_bwd2_kernel(
    grad_ptr, lr_ptr, att_ptr, hr_ptr, box_ptr, dlr_ptr, datt_ptr, dhr_ptr,  # as _scale_fusion_bwd_kernel
    C, h, w, hd, wd,
    stride_gb, stride_gc, stride_gh, stride_gw, stride_lb, stride_lc, stride_lh, stride_lw,
    stride_ab, stride_ac, stride_ah, stride_aw, stride_hb, stride_hc, stride_hh, stride_hw,
    num_att_planes, num_tiles_j, num_lr_tiles, num_zero_tiles_v,
    ACC: tl.constexpr,
    HAS_BOX: tl.constexpr,
    BROADCAST_ATT: tl.constexpr,
    CHANNELS_PER_PROGRAM: tl.constexpr,
    BLOCK_I: tl.constexpr,  # LR rows per program (even), walked two at a time
    BLOCK_J: tl.constexpr,  # LR columns per program
    BLOCK_U: tl.constexpr,
    BLOCK_V: tl.constexpr,
):
    """Scale 2 only: the backward as a separable stencil with constexpr weights. Interior LR
    column j receives 1/4 g[2j - 1] + 3/4 g[2j] + 3/4 g[2j + 1] + 1/4 g[2j + 2] (rows likewise);
    at the borders PyTorch's clamped source coordinate gives the outer output pixel weight 1,
    which is the same formula with the neighbour index clamped (g[-1] -> g[0], g[W] -> g[W - 1]).
    Each program walks a column tile's LR rows top to bottom (_bwd2_walk); tiles that do not meet
    the box skip hr and d_hr altogether. hr and d_hr take one access per element (see _bwd2_walk)."""
    pid = tl.program_id(0)
    b = tl.program_id(1).to(tl.int64)
    group = tl.program_id(2)
    c_begin = group * CHANNELS_PER_PROGRAM
    c_end = tl.minimum(c_begin + CHANNELS_PER_PROGRAM, C)
    H = 2 * h
    W = 2 * w
    ay0, ay1, ax0, ax1, ey0, ey1, ex0, ex1, oy, ox = _box(box_ptr, H, W, hd, wd, 2, HAS_BOX)

    if pid < num_lr_tiles:
        ti = pid // num_tiles_j
        tj = pid % num_tiles_j
        i_begin = ti * BLOCK_I
        i_end = tl.minimum(i_begin + BLOCK_I, h)
        j0 = tj * BLOCK_J
        blk_y_lo = 2 * i_begin
        blk_x_lo = 2 * j0
        hits_box = (blk_y_lo < ey1) & (blk_y_lo + 2 * BLOCK_I > ey0) & (blk_x_lo < ex1) & (blk_x_lo + 2 * BLOCK_J > ex0)
        args = (grad_ptr, lr_ptr, att_ptr, hr_ptr, dlr_ptr, datt_ptr, dhr_ptr, b, group, c_begin, c_end, C, h, w, hd, wd,
                i_begin, i_end, j0, ay0, ay1, ax0, ax1, ey0, ey1, ex0, ex1, oy, ox, stride_gb, stride_gc, stride_gh,
                stride_gw, stride_lb, stride_lc, stride_lh, stride_lw, stride_ab, stride_ac, stride_ah, stride_aw,
                stride_hb, stride_hc, stride_hh, stride_hw, num_att_planes)  # fmt: skip
        if hits_box:
            _bwd2_walk(*args, ACC, BROADCAST_ATT, CHANNELS_PER_PROGRAM, BLOCK_J, True)
        else:
            _bwd2_walk(*args, ACC, BROADCAST_ATT, CHANNELS_PER_PROGRAM, BLOCK_J, False)
    else:
        _zero_dhr_outside(dhr_ptr, pid - num_lr_tiles, b, c_begin, c_end, C, hd, wd, oy, ox, ey0, ey1, ex0, ex1,
                          num_zero_tiles_v, BLOCK_U, BLOCK_V)  # fmt: skip


def _acc(dtype: torch.dtype):
    return tl.float64 if dtype == torch.float64 else tl.float32


def _plane_fits_int32(t: torch.Tensor) -> bool:
    """Whether every offset inside one (H, W) plane of ``t`` fits int32 (the scale-2 backward's
    in-plane arithmetic)."""
    return sum((n - 1) * abs(st) for n, st in zip(t.shape[2:], t.stride()[2:])) + 1 < 2**31


def _fwd_block(block: tuple[int, int], planes: int, h: int, w: int) -> tuple[int, int]:
    """The forward's (rows, columns) band: ``block``, or half its rows for a small launch."""
    rows, cols = block
    if planes * triton.cdiv(h, rows) * triton.cdiv(w, cols) < FEW_PROGRAMS:
        rows //= 2
    return rows, cols


def _attention_strides(attention: torch.Tensor) -> tuple[int, int, int, int]:
    """Strides of the attention; a one-channel attention gets channel stride 0 (broadcast over C)."""
    sb, sc, sh, sw = attention.stride()
    return sb, (0 if attention.shape[1] == 1 else sc), sh, sw


def scale_fusion_fwd(
    lr_logits: torch.Tensor,
    attention: torch.Tensor,
    hr_logits: torch.Tensor,
    crop_box: torch.Tensor | None,
    scale: int,
    *,
    out: torch.Tensor | None = None,
    block: tuple[int, int] | None = None,
) -> torch.Tensor:
    """Returns the fused (B, C, scale*h, scale*w) logits, contiguous, in the inputs' dtype.

    ``crop_box``: (4,) int64 on the inputs' device, or None (hr covers the output).
    Inputs are assumed validated by fastuda.ops. ``out`` lets a caller (the
    tests) pass a pre-filled contiguous tensor; ``block`` overrides the
    (rows, columns) LR tile.
    """
    B, C, h, w = lr_logits.shape
    H, W = scale * h, scale * w
    if out is None:
        out = torch.empty((B, C, H, W), dtype=lr_logits.dtype, device=lr_logits.device)
    if out.numel() == 0:
        return out
    block_i, block_j = block or _fwd_block(FWD_BLOCK[scale], B * C, h, w)
    assert block_i % 2 == 0, "the forward walks its LR rows two at a time"
    num_tiles_j = triton.cdiv(w, block_j)
    grid = (triton.cdiv(h, block_i) * num_tiles_j, C, B)
    has_box = crop_box is not None
    _scale_fusion_fwd_kernel[grid](
        lr_logits, attention, hr_logits, crop_box if has_box else lr_logits, out,
        h, w, hr_logits.shape[2], hr_logits.shape[3],
        *lr_logits.stride(), *_attention_strides(attention), *hr_logits.stride(), num_tiles_j,
        ACC=_acc(lr_logits.dtype), S=scale, HAS_BOX=has_box,
        BLOCK_I=block_i, BLOCK_J=block_j, HR_VEC=16 // hr_logits.element_size(), num_warps=FWD_NUM_WARPS,
    )  # fmt: skip
    return out


def scale_fusion_bwd(
    grad: torch.Tensor,
    lr_logits: torch.Tensor,
    attention: torch.Tensor,
    hr_logits: torch.Tensor,
    crop_box: torch.Tensor | None,
    scale: int,
    *,
    out: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
    block: tuple[int, int] | None = None,
    channels_per_program: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Returns (d lr_logits, d attention, d hr_logits), contiguous, in the inputs' dtype.

    A one-channel attention gets the sum over C of its per-channel gradient.
    ``out`` lets a caller pass three pre-filled contiguous tensors; ``block``
    overrides the (rows, columns) LR tile and ``channels_per_program`` the
    channel group of the one-channel-attention sum (tests use both to reach the
    multi-tile and multi-group paths on small shapes).
    """
    B, C, h, w = lr_logits.shape
    hd, wd = hr_logits.shape[2:]
    CA = attention.shape[1]
    dev, dtype = lr_logits.device, lr_logits.dtype
    if out is None:
        out = (
            torch.empty((B, C, h, w), dtype=dtype, device=dev),
            torch.empty((B, CA, h, w), dtype=dtype, device=dev),
            torch.empty((B, C, hd, wd), dtype=dtype, device=dev),
        )
    d_lr, d_att, d_hr = out
    if B * C == 0:
        return d_lr, d_att.zero_(), d_hr
    broadcast = CA == 1 and C > 1
    if broadcast:
        cpg = channels_per_program or BROADCAST_CHANNELS_PER_PROGRAM
        groups = triton.cdiv(C, cpg)
        # One group writes d attention itself; several write fp32 partial sums.
        datt_planes = d_att if groups == 1 else torch.empty((B, groups, h, w), dtype=torch.float64 if dtype == torch.float64 else torch.float32, device=dev)
        num_att_planes = groups
    else:
        cpg, groups, datt_planes, num_att_planes = 1, C, d_att, C
    walk = scale == 2 and all(_plane_fits_int32(t) for t in (grad, hr_logits, d_hr))
    block_i, block_j = block or (BWD2_BLOCK if walk else BWD_BLOCK[scale])
    num_tiles_j = triton.cdiv(w, block_j)
    num_lr_tiles = triton.cdiv(h, block_i) * num_tiles_j
    has_box = crop_box is not None
    zero_u, zero_v = ZERO_BLOCK
    num_zero_tiles_v = triton.cdiv(wd, zero_v)
    num_zero_tiles = triton.cdiv(hd, zero_u) * num_zero_tiles_v if has_box else 0
    grid = (num_lr_tiles + num_zero_tiles, B, groups)
    if walk:
        assert block_i % 2 == 0, "the scale-2 backward walks its LR rows two at a time"
        _scale_fusion_bwd2_kernel[grid](
            grad, lr_logits, attention, hr_logits, crop_box if has_box else lr_logits,
            d_lr, datt_planes, d_hr,
            C, h, w, hd, wd,
            *grad.stride(), *lr_logits.stride(), *_attention_strides(attention), *hr_logits.stride(),
            num_att_planes, num_tiles_j, num_lr_tiles, num_zero_tiles_v,
            ACC=_acc(dtype), HAS_BOX=has_box, BROADCAST_ATT=broadcast, CHANNELS_PER_PROGRAM=cpg,
            BLOCK_I=block_i, BLOCK_J=block_j, BLOCK_U=zero_u, BLOCK_V=zero_v,
            num_warps=BWD2_NUM_WARPS,
        )  # fmt: skip
    else:
        _scale_fusion_bwd_kernel[grid](
            grad, lr_logits, attention, hr_logits, crop_box if has_box else lr_logits,
            d_lr, datt_planes, d_hr,
            C, h, w, hd, wd,
            *grad.stride(), *lr_logits.stride(), *_attention_strides(attention), *hr_logits.stride(),
            num_att_planes, num_tiles_j, num_lr_tiles, num_zero_tiles_v,
            ACC=_acc(dtype), S=scale, HAS_BOX=has_box, BROADCAST_ATT=broadcast, CHANNELS_PER_PROGRAM=cpg,
            BLOCK_I=block_i, BLOCK_J=block_j,
            BLOCK_OY=triton.next_power_of_2(scale * block_i), BLOCK_OX=triton.next_power_of_2(scale * block_j),
            BLOCK_U=zero_u, BLOCK_V=zero_v, num_warps=BWD_NUM_WARPS,
        )  # fmt: skip
    if datt_planes is not d_att:
        d_att.copy_(datt_planes.sum(dim=1, keepdim=True))
    return d_lr, d_att, d_hr
