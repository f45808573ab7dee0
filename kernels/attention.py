"""Scaled-dot-product attention without mask or dropout, forward and backward (MiT efficient
self-attention).

    out = softmax(q k^T * scale) v,   q (B, H, N, D), k and v (B, H, M, D), any N, M >= 1, D <= 128.

Fused (forward): q k^T, the softmax and the product with v for a block of BLOCK_N queries in one
program. Besides `out`, the only thing written is the log-sum-exp of each query's scores, (B, H, N)
in fp32 (fp64 for fp64 inputs): nothing of size N x M ever reaches device memory.

Fused (backward): with P = exp(scale q k^T - lse) recomputed from q, k and the lse,
    dv = P^T dO,   dS = P * (dO v^T - delta),   delta = rowsum(dO * out),
    dk = scale dS^T q,   dq = scale dS k.

Trade-offs, shaped by MiT at a 512 crop (every stage has M = 256 keys, and N from 256 to 16384
queries, head dim D = 64, 32 for b0). Register, spill, layout and instruction figures below are
what Triton 3.8 compiles for sm_90 (tests/_sm90_compile.py reads them from the TTGIR, PTX and
cubin without a GPU; none of this has been timed).

* Forward, resident keys. When the keys fit two 128-key tiles (M <= 256 at D <= 64, a multiple of
  128 above 128 keys), a program holds its head's K and V in shared memory and walks query blocks
  of 64 rows with 4 warps: one warpgroup per 64 rows, wgmma's m64 tile, so each score is computed
  once. (With 8 warps on 64 rows Triton gives these chained dots warpsPerCTA = [8, 1]: two
  warpgroups computed the same 64 x 256 tile, 32768 exps for 16384 scores and 1.5x the MMA work;
  the tile also cost 233 registers.) The second key tile takes one online rescale, 64 exps per
  block on top of 16384 (1.016 exps per score), and keeps the fp32 score tile at 64 x 128, 64
  registers per thread: the kernel compiles to 212 registers, no spills, 72 KiB of shared memory,
  so two programs share an SM. The grid is persistent: min(query blocks in all, 2 x SMs)
  programs, each taking an equal contiguous share of the flattened (b, h, query block) range and
  loading K and V once per head it touches. At B = 2 that is 264 programs at stage 1, 256, 160
  and 64 (one per block) at stages 2-4; at B = 18, 264 everywhere. Larger M streams K and V
  through an online softmax (128 rows over 8 warps, one block per program).
* Backward, one launch of key programs and query programs (issue 18; the time model of
  kernels/timing.py chose it, docs/kernels.md has the figures). A key program owns 64 keys of one
  (b, h) and a chunk of queries, one warpgroup, 64 queries per step in the transposed orientation
  (keys as rows): S^T, dP^T, dv and dk are all 64 x 64 wgmma tiles (N = 64 reaches the tensor peak
  even with both operands in shared memory, where the previous 32- and 16-wide tiles reached 67%
  and 40%), loads go through a cp.async pipeline (2-4 stages), 243-254 registers, two programs per
  SM. A query program owns 64 queries and computes dq over all keys (P and dP recomputed: 7
  products in all instead of 5, the price of needing no dq partial sums); with up to 4 key tiles
  (MiT's 256 keys) it loads all of K and V before its products, so those loads and its query
  rows' are one round trip, with no pipeline prologue. Both kinds of program compute delta =
  rowsum(dO * out) from their own rows, so there is no preprocessing launch; the scale is folded
  into one fma per score. The key programs come first in the grid, the long ones start first.
  When B * H is small the key programs split their queries (split_plan: the chunking that
  kernels/timing.py's model, replayed in closed form, finds fastest; at
  MiT-B5, B = 2: 10 / 4 / 2 / 1 chunks, at stage 3 of 9 and 7 query blocks, so the shorter key
  program shares its SM with a query program); the splits' fp32 partials (32 KiB each) are
  summed deterministically in the kernel: every split writes its partial and counts itself done
  with an atomic on a counter of kernels/_pixels.zeroed_workspace (no zero-fill launch), the
  last one sums the partials in split order (no float atomics) and resets the counter. Where the
  tiles are up to 64 wide, its loop over the partials is cp.async-pipelined (3 partials in
  flight through shared memory: one round trip per 3 partials, not one each) and takes its own
  from its registers. From 5 splits the two halves are summed
  so by their own last arrivers and the second to finish adds the other's sum (a + b == b + a:
  still deterministic), which halves the serial tail. The earlier policy
  (all 256 keys in one program with dq written directly, splits capped by PARTIAL_BUDGET so the
  partials stay within 5% of the bytes moved: 6 / 4 / 10 / 16 programs at B = 2, 25x its ideal
  at stage 1) stays selectable as BWD_POLICY = "budget" so the audit can model it. Keys beyond
  256 take the same path. fp32 / fp64 keep the fused path (dq in the key program) when the keys
  fit one block.
* Backward, "pair" policy (BWD_POLICY / FASTUDA_ATTENTION_BWD_POLICY = "pair", a prototype, not
  the default; docs/kernels.md "A 5-product backward"): at 128 < M <= 256 keys, 16-bit inputs and
  D <= 64, two key programs of 128 keys (8 warps, one warpgroup per 64 key rows) cover each
  (b, h, query chunk), and each also takes its dq partial over its keys per 64-query step: 5
  products, no query programs. Roles are static, so dq is deterministic: key block 0 ("A") stores
  its partial and releases a per-query-block flag; key block 1 ("B") acquires it, adds A's partial
  to its own in fp32 and writes dq. Roles come from a launch-order ticket (A the even one), so a
  waiting B's A has started. Precision: dq = bf16(float(bf16(p_A)) + p_B) for bf16 (A's partial
  goes through dq itself), fp32 scratch for fp16. The extra rounding of p_A is at most 2^-8 |p_A|
  per element, and |p_A| <= sum over A's keys of |dS_ij| |k_j|: within the bound that rounding
  dS to bf16 before dS k (every flash-style backward does) already puts on dq, 2^-8 sum over all
  keys of |dS_ij| |k_j|; the error bound at most doubles, and the tests hold it to the same
  tolerance as the default path. Compiled for sm_90: 240-255 registers (one program per SM),
  no spill but 8 bytes at fp16 with one chunk; modelled, B's wait per step (a poll, then the
  partial's load: two round trips no other program on its SM hides) makes it 2.6-2.7x the ideal
  at B = 18, stages 1-2, against 1.40-1.43x for the default.
* fp32 inputs use IEEE fp32 dot products (not tf32), matching PyTorch's SDPA accuracy in fp32;
  fp16 / bf16 are the fast path (16-bit tensor-core operands, fp32 accumulators, and P and dS
  rounded to the input dtype before their products, as flash attention does).
* Block sizes come from a static table keyed on M, D and dtype (no @triton.autotune: it has had
  bugs under torch.compile), checked by compiling the MiT-B5 configs for sm_90 on a CPU machine
  (tests/test_attention.py: no spills, shared memory within Hopper's limit, every 16-bit dot on
  wgmma with no warpgroup duplicating another's rows, MMA and exp work within 5% of the need).
  Their speed has not been measured: tune the table on a GPU.
* The launchers run under the inputs' CUDA device (fastuda.ops.attention enters it): Triton
  launches on the current device, not on the tensors'.
"""

import functools
import heapq
import os
from typing import NamedTuple

import torch
import triton
import triton.language as tl

from ._pixels import sm_count as _sm_count  # the audit patches every *sm_count* of kernels/
from ._pixels import scalar_mask, zeroed_workspace

# Scores are kept in base 2 so the kernels use exp2. constexpr: a @triton.jit function may only
# read constexpr globals (the interpreter does not enforce this; the GPU compiler does).
LOG2E = tl.constexpr(1.4426950408889634)  # log2(e)
LN2 = tl.constexpr(0.6931471805599453)

# Keys held by the resident-key forward (two tiles) and the fused-dq backward (one block).
MAX_SINGLE_PASS_M = 256


class FwdConfig(NamedTuple):
    block_n: int  # queries per block
    block_m: int  # keys per tile
    num_warps: int
    num_stages: int
    key_tiles: int = 1  # up to this many key tiles are held for the whole program (K and V loaded
    # once per head, persistent grid); more keys take the online softmax streaming K and V
    ctas_per_sm: int = 1  # programs per SM of the persistent grid (registers and shared memory
    # allow this many; tests/_sm90_compile.py checks it for every table entry)


class BwdConfig(NamedTuple):
    block_m: int  # keys per program; block_m >= M means the fused-dq single kernel
    block_n: int  # queries per step of a program's loop
    num_warps: int
    num_stages: int
    dq_block_n: int  # queries per program of the separate dq kernel
    dq_block_m: int  # keys per step of its loop
    ctas_per_sm: int = 1  # programs per SM (registers and shared memory allow this many; split_plan's placement)


def _pow2(x: int, low: int = 16) -> int:
    return max(low, triton.next_power_of_2(x))


def fwd_config(M: int, D: int, dtype: torch.dtype, block_n: int | None = None, block_m: int | None = None) -> FwdConfig:
    """Static launch table for the forward. ``block_n`` / ``block_m`` override it (tests reach the
    two-tile and the streaming paths with a small M through a small block_m)."""
    block_d = _pow2(D)
    if dtype in (torch.float16, torch.bfloat16):
        tile = 128 if block_d <= 64 else 64
        if M <= tile or (M <= MAX_SINGLE_PASS_M and block_d <= 64 and M % tile == 0):
            # One warpgroup (4 warps) per 64 query rows, wgmma's m64 tile, so every score is
            # computed once (64 rows over 8 warps makes Triton put all 8 warps on the rows of these
            # chained dots, warpsPerCTA = [8, 1]: two warpgroups computing the same tile). Keys in
            # tiles of 128 (two for MiT's 256): a 64 x 128 fp32 score tile is 64 registers per
            # thread, about 220 in all, so two programs share an SM. A masked second tile (M not
            # a multiple of 128) would spill, so those M stream instead. num_stages=1: prefetching
            # the next q block spills too; the SM's second program hides the load.
            cfg = FwdConfig(64, min(_pow2(M), tile), 4, 1, key_tiles=2, ctas_per_sm=2)
        else:
            # Online softmax, K and V streamed: 128 rows over 8 warps, one warpgroup per 64 rows.
            cfg = FwdConfig(128, tile, 8, 3)
    else:
        # fp32 / fp64: IEEE dot products run on FMA units, operands in registers: small tiles.
        bm = _pow2(M) if _pow2(M) <= 32 else 32
        cfg = FwdConfig(32, bm, 4, 2, key_tiles=2) if block_d <= 64 else FwdConfig(16, bm, 8, 2)
    return cfg._replace(
        block_n=cfg.block_n if block_n is None else block_n,
        block_m=cfg.block_m if block_m is None else block_m,
    )


def bwd_config(
    M: int, D: int, dtype: torch.dtype, block_m: int | None = None, block_n: int | None = None, policy: str | None = None
) -> BwdConfig:
    """Static launch table for the backward (overrides as for ``fwd_config``; ``policy``
    "budget" gives the pre-issue-18 fused 256-key tiles, see BWD_POLICY)."""
    block_d = _pow2(D)
    policy = policy or BWD_POLICY
    if dtype in (torch.float16, torch.bfloat16):
        if policy == "pair" and block_d <= 64 and 128 < M <= MAX_SINGLE_PASS_M:
            # Two key programs of 128 keys (one warpgroup per 64 key rows) share each query chunk
            # and sum their dq partials as a pair (_bwd_keys, PAIR): 5 products, no query programs.
            cfg = BwdConfig(128, PAIR_BLOCK_N, 8, PAIR_STAGES, 64, 64)
        elif policy == "budget" and block_d <= 64 and _pow2(M) <= MAX_SINGLE_PASS_M:
            # All keys in one program (dq complete, written directly), 32 queries per step: the
            # 256 x 64 fp32 dk and dv accumulators take 255 registers at 8 warps.
            bm = _pow2(M)
            bn = 64 if bm < 128 or block_d <= 32 else 32
            cfg = BwdConfig(bm, bn, 8 if bm >= 128 else 4, 1, 128, 64)
        elif block_d <= 64:
            # 64 keys x 64 queries per step, one warpgroup: every product is a 64 x 64 tile
            # (wgmma N = 64, which runs at the tensor peak even with both operands in shared
            # memory, where N = 32 / 16 reach 67% / 40%), and the accumulators leave room for
            # two programs per SM and a two-stage load pipeline. dq comes from query programs in
            # the same launch (64 queries, 64 keys per step), not from partial sums.
            bm = min(_pow2(M), 64)
            cfg = BwdConfig(bm, 64, 4, 4, 64, 64, ctas_per_sm=2)
        else:
            # 64 keys: one warpgroup (8 warps would put two on the same 64 rows).
            bm = _pow2(M) if _pow2(M) <= 64 else 64
            cfg = BwdConfig(bm, 32, 4, 1, 64, 32)
    elif block_d <= 64:
        bm = _pow2(M) if _pow2(M) <= 32 else 32
        cfg = BwdConfig(bm, 16, 4, 2, 32, 32)
    else:
        cfg = BwdConfig(16, 16, 8, 2, 16, 16)
    return cfg._replace(
        block_m=cfg.block_m if block_m is None else block_m,
        block_n=cfg.block_n if block_n is None else block_n,
    )


# ----------------------------------------------------------------------------- helpers


@triton.jit
def _split_pid(num_inner):
    """(inner, outer) of a flat 1-D program id: the grid is flattened so that B * H is not capped
    by CUDA's 65535 limit on grid axes 1 and 2; the inner index varies fastest, so consecutive
    programs share one head's K and V in L2."""
    pid = tl.program_id(0)
    return pid % num_inner, pid // num_inner


@triton.jit
def _load_tile(base, rows, cols, stride_r, stride_c, row_mask, col_mask):
    """(len(rows), len(cols)) tile of a strided 2-D view; out-of-range entries read as 0."""
    ptrs = base + rows[:, None] * stride_r + cols[None, :] * stride_c
    return tl.load(ptrs, mask=row_mask[:, None] & col_mask[None, :], other=0.0)


# Not inlined: inlined into the forward's persistent loop over heads, the compiler hoists these
# tiles' address arithmetic out of that loop and keeps it in registers through the inner loop,
# where it spills. (noinline functions take scalar arguments only.) Triton before 3.8 cannot lower
# a noinline function that returns a tensor (3.6, the GPU machines' release: "type of return
# operand 0 ... doesn't match function result type"), so there they are inlined and _fwd_head,
# one head's part of the forward (it returns nothing), is not: the hoisted offsets are then
# computed per call and dead before its query loop.
_KEYS_NOINLINE = tuple(int(part) for part in triton.__version__.split(".")[:2]) >= (3, 8)


@triton.jit(noinline=_KEYS_NOINLINE)
def _load_key_tile(
    k_base, v_base, start, stride_km, stride_kd, stride_vm, stride_vd, M, D, BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr
):  # fmt: skip
    """Rows [start, start + BLOCK_M) of one head's keys, transposed (BLOCK_D, BLOCK_M), and values
    (BLOCK_M, BLOCK_D): one call, so that both loads are in flight together (each call waits for
    its loads before it returns)."""
    offs_m = start + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    d_mask = offs_d < D
    k_t = _load_tile(k_base, offs_d, offs_m, stride_kd, stride_km, d_mask, offs_m < M)
    v = _load_tile(v_base, offs_m, offs_d, stride_vm, stride_vd, offs_m < M, d_mask)
    return k_t, v


@triton.jit
def _store_tile(base, value, rows, cols, stride_r, stride_c, row_mask, col_mask):
    ptrs = base + rows[:, None] * stride_r + cols[None, :] * stride_c
    tl.store(ptrs, value.to(base.dtype.element_ty), mask=row_mask[:, None] & col_mask[None, :])


# ----------------------------------------------------------------------------- forward


@triton.jit
def _store_out_lse(out_base, lse_row, acc, m_i, l_i, offs_n, offs_d, stride_on, stride_od, n_mask, d_mask):
    """Normalises the accumulator and writes out and the natural-log lse of a block of queries."""
    _store_tile(out_base, acc / l_i[:, None], offs_n, offs_d, stride_on, stride_od, n_mask, d_mask)
    tl.store(lse_row + offs_n, (m_i + tl.log2(l_i)) * LN2, mask=n_mask)


@triton.jit
def _first_tile(q, k_t, v, qk_scale, key_mask, MASKED: tl.constexpr, PRECISION: tl.constexpr):
    """Softmax statistics and P V of the first key tile: (m_i, l_i, acc), base-2 scores."""
    s = tl.dot(q, k_t, input_precision=PRECISION) * qk_scale  # (BLOCK_N, BLOCK_M)
    if MASKED:
        s = tl.where(key_mask[None, :], s, float("-inf"))
    m_i = tl.max(s, axis=1)  # finite: every tile holds a real key
    p = tl.exp2(s - m_i[:, None])
    acc = tl.dot(p.to(v.dtype), v, input_precision=PRECISION)  # (BLOCK_N, BLOCK_D)
    return m_i, tl.sum(p, axis=1), acc


@triton.jit
def _next_tile(q, k_t, v, m_i, l_i, acc, qk_scale, key_mask, MASKED: tl.constexpr, PRECISION: tl.constexpr):
    """Online-softmax update by one more key tile: the sum and accumulator are rescaled by
    exp2(old max - new max) (one exp per row, against BLOCK_M per row for the scores)."""
    s = tl.dot(q, k_t, input_precision=PRECISION) * qk_scale
    if MASKED:
        s = tl.where(key_mask[None, :], s, float("-inf"))
    m_new = tl.maximum(m_i, tl.max(s, axis=1))
    alpha = tl.exp2(m_i - m_new)
    p = tl.exp2(s - m_new[:, None])
    acc = tl.dot(p.to(v.dtype), v, acc * alpha[:, None], input_precision=PRECISION, out_dtype=acc.dtype)
    return m_new, l_i * alpha + tl.sum(p, axis=1), acc


# Inlined from Triton 3.8 (the same code as before it existed); not inlined before, see
# _KEYS_NOINLINE: under 3.6, inlined, the key tiles' 64-bit offsets were hoisted out of the loop
# over heads and spilled (128-136 bytes at 255 registers); not inlined, 174 registers, no spill.
@triton.jit(noinline=not _KEYS_NOINLINE)
def _fwd_head(
    q_base, out_base, lse_row, k_base, v_base, blk_lo, blk_hi, qk_scale, N, M,
    stride_qn, stride_qd, stride_km, stride_kd, stride_vm, stride_vd, stride_on, stride_od,
    D: tl.constexpr, PRECISION: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr,
    RESIDENT: tl.constexpr, EVEN_M: tl.constexpr,
):  # fmt: skip
    """Query blocks [blk_lo, blk_hi) of one head with its keys resident: K and V loaded once (one or
    two tiles), then per block the exact softmax of one tile or one online rescale for two."""
    offs_d = tl.arange(0, BLOCK_D)
    d_mask = offs_d < D
    offs_m = tl.arange(0, BLOCK_M)
    k0, v0 = _load_key_tile(k_base, v_base, 0, stride_km, stride_kd, stride_vm, stride_vd, M, D, BLOCK_M, BLOCK_D)
    if RESIDENT == 2:
        k1, v1 = _load_key_tile(k_base, v_base, BLOCK_M, stride_km, stride_kd, stride_vm, stride_vd, M, D, BLOCK_M, BLOCK_D)
    for blk in range(blk_lo, blk_hi):
        offs_n = blk * BLOCK_N + tl.arange(0, BLOCK_N)
        n_mask = offs_n < N
        # Padded head-dim columns read as 0, so they add nothing to q k^T.
        q = _load_tile(q_base, offs_n, offs_d, stride_qn, stride_qd, n_mask, d_mask)  # (BLOCK_N, BLOCK_D)
        m_i, l_i, acc = _first_tile(q, k0, v0, qk_scale, offs_m < M, RESIDENT == 1 and not EVEN_M, PRECISION)
        if RESIDENT == 2:
            m_i, l_i, acc = _next_tile(q, k1, v1, m_i, l_i, acc, qk_scale, offs_m + BLOCK_M < M, not EVEN_M, PRECISION)
        _store_out_lse(out_base, lse_row, acc, m_i, l_i, offs_n, offs_d, stride_on, stride_od, n_mask, d_mask)


@triton.jit
def _attention_fwd_kernel(
    q_ptr,  # (B, H, N, D) any strides
    k_ptr,  # (B, H, M, D) any strides
    v_ptr,  # (B, H, M, D) any strides
    out_ptr,  # (B, H, N, D) any strides (the launcher allocates (B, N, H, D) memory)
    lse_ptr,  # (B, H, N) ACC, contiguous: natural-log log-sum-exp of scale * q k^T per query
    qk_scale,  # scale * log2(e): scores in base 2
    H,
    N,
    M,
    D: tl.constexpr,  # constexpr: a head-dim mask that is all true (D == BLOCK_D) folds away
    TOTAL,  # RESIDENT: query blocks in all, B * H * cdiv(N, BLOCK_N)
    PROGRAMS,  # RESIDENT: the grid, 1 <= PROGRAMS <= TOTAL
    stride_qb, stride_qh, stride_qn, stride_qd,
    stride_kb, stride_kh, stride_km, stride_kd,
    stride_vb, stride_vh, stride_vm, stride_vd,
    stride_ob, stride_oh, stride_on, stride_od,
    ACC: tl.constexpr,
    PRECISION: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_D: tl.constexpr,
    RESIDENT: tl.constexpr,  # 0: online softmax streaming K and V; 1 or 2: that many key tiles held
    EVEN_M: tl.constexpr,  # M % BLOCK_M == 0: the last key tile needs no mask
):  # fmt: skip
    offs_d = tl.arange(0, BLOCK_D)
    d_mask = offs_d < D
    offs_m = tl.arange(0, BLOCK_M)

    if RESIDENT > 0:
        # Every key in one or two tiles, loaded once per head. The grid is persistent: program p
        # walks the contiguous range [p * TOTAL / PROGRAMS, (p + 1) * TOTAL / PROGRAMS) of the
        # flattened (b * H + h, query block) index space, so every program gets the same number of
        # blocks to within one whatever B, H and N are, and loads K and V once per head its range
        # touches (usually one) instead of once per block. Per block: one tile is the exact
        # softmax; two tiles (MiT's 256 keys) take one online rescale, so each thread holds a
        # 64 x 128 score tile (64 registers) instead of 64 x 256.
        pid = tl.program_id(0).to(tl.int64)
        first = (pid * TOTAL // PROGRAMS).to(tl.int32)
        last = ((pid + 1) * TOTAL // PROGRAMS).to(tl.int32)
        n_blocks = tl.cdiv(N, BLOCK_N)
        for bh in range(first // n_blocks, (last - 1) // n_blocks + 1):
            bh64 = tl.cast(bh, tl.int64)  # a plain int under the interpreter
            b = bh64 // H
            h = bh64 % H
            q_base = q_ptr + b * stride_qb + h * stride_qh
            out_base = out_ptr + b * stride_ob + h * stride_oh
            lse_row = lse_ptr + bh64 * N
            k_base = k_ptr + b * stride_kb + h * stride_kh
            v_base = v_ptr + b * stride_vb + h * stride_vh
            head_first = bh * n_blocks
            _fwd_head(
                q_base, out_base, lse_row, k_base, v_base,
                tl.maximum(first, head_first) - head_first, tl.minimum(last, head_first + n_blocks) - head_first,
                qk_scale, N, M, stride_qn, stride_qd, stride_km, stride_kd, stride_vm, stride_vd, stride_on, stride_od,
                D, PRECISION, BLOCK_N, BLOCK_M, BLOCK_D, RESIDENT, EVEN_M,
            )  # fmt: skip
    else:
        # Online softmax over key tiles streamed from memory, one block of queries per program.
        pid_n, bh = _split_pid(tl.cdiv(N, BLOCK_N))
        b = (bh // H).to(tl.int64)
        h = (bh % H).to(tl.int64)
        k_base = k_ptr + b * stride_kb + h * stride_kh
        v_base = v_ptr + b * stride_vb + h * stride_vh
        offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
        n_mask = offs_n < N
        q = _load_tile(q_ptr + b * stride_qb + h * stride_qh, offs_n, offs_d, stride_qn, stride_qd, n_mask, d_mask)
        k_t = _load_tile(k_base, offs_d, offs_m, stride_kd, stride_km, d_mask, offs_m < M)
        v = _load_tile(v_base, offs_m, offs_d, stride_vm, stride_vd, offs_m < M, d_mask)
        # The launcher takes this path only when M > BLOCK_M: the first tile is full.
        m_i, l_i, acc = _first_tile(q, k_t, v, qk_scale, offs_m < M, False, PRECISION)
        for start_m in range(BLOCK_M, M, BLOCK_M):
            keys = start_m + offs_m
            k_t = _load_tile(k_base, offs_d, keys, stride_kd, stride_km, d_mask, keys < M)  # (BLOCK_D, BLOCK_M)
            v = _load_tile(v_base, keys, offs_d, stride_vm, stride_vd, keys < M, d_mask)  # (BLOCK_M, BLOCK_D)
            m_i, l_i, acc = _next_tile(q, k_t, v, m_i, l_i, acc, qk_scale, keys < M, not EVEN_M, PRECISION)
        out_base = out_ptr + b * stride_ob + h * stride_oh
        lse_row = lse_ptr + bh.to(tl.int64) * N
        _store_out_lse(out_base, lse_row, acc, m_i, l_i, offs_n, offs_d, stride_on, stride_od, n_mask, d_mask)


# ----------------------------------------------------------------------------- backward


@triton.jit(noinline=True)
def _sum_partials_apart(
    partial_ptr, count_ptr, dk_ptr, dv_ptr, key_block, lo, hi, SPLITS, H, M,
    stride_dkb, stride_dkh, stride_dkm, stride_dkd, stride_dvb, stride_dvh, stride_dvm, stride_dvd,
    D: tl.constexpr, ACC: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr, TWO_LEVEL: tl.constexpr,
):  # fmt: skip
    """_sum_partials not inlined and not pipelined, for tiles over 64 wide (D = 128): its registers
    do not add to the main loop's, and a pipeline of 64 KiB partials would not fit shared memory."""
    _sum_partials(
        0.0, 0.0, hi, partial_ptr, count_ptr, dk_ptr, dv_ptr, key_block, lo, hi, SPLITS, H, M,
        stride_dkb, stride_dkh, stride_dkm, stride_dkd, stride_dvb, stride_dvh, stride_dvm, stride_dvd,
        D, ACC, BLOCK_M, BLOCK_D, TWO_LEVEL, 1,
    )  # fmt: skip


@triton.jit
def _sum_partials(
    own_dk, own_dv, me, partial_ptr, count_ptr, dk_ptr, dv_ptr, key_block, lo, hi, SPLITS, H, M,
    stride_dkb, stride_dkh, stride_dkm, stride_dkd, stride_dvb, stride_dvh, stride_dvm, stride_dvd,
    D: tl.constexpr, ACC: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr, TWO_LEVEL: tl.constexpr,
    STAGES: tl.constexpr,
):  # fmt: skip
    """dk and dv of one key block (key_block = (b * H + h) * cdiv(M, BLOCK_M) + key tile), by the
    last of splits [lo, hi) to arrive: the sum of their fp32 partials in split order, that of split
    ``me`` (the last arriver's own) from own_dk / own_dv, the values it stored, so the same sum in
    the same order whichever split arrives last (me == hi: every partial read). One level: [lo, hi) is
    every split, and the sum is stored. TWO_LEVEL: the splits are two halves, each summed by its
    last arriver into its first split's slot; the second half to finish adds the other half's sum
    to its own (a + b == b + a in floating point, so the result does not depend on which) and
    stores. Each last arriver then reads half of the partials: the serial tail halves. STAGES > 1:
    the loop over the partials is cp.async-pipelined (STAGES - 1 partials in flight, through
    shared memory rather than registers), so it waits for one round trip per STAGES - 1 partials
    instead of one per partial."""
    m_blocks = tl.cdiv(M, BLOCK_M)
    bh = key_block // m_blocks
    offs_m = (key_block % m_blocks) * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    tile = tl.arange(0, BLOCK_M)[:, None] * BLOCK_D + offs_d[None, :]
    # Program (bh, split, key tile) wrote slot (bh * SPLITS + split) * m_blocks + key tile.
    first = partial_ptr + (bh.to(tl.int64) * SPLITS * m_blocks + key_block % m_blocks) * (2 * BLOCK_M * BLOCK_D)
    dk = tl.zeros([BLOCK_M, BLOCK_D], ACC)
    dv = tl.zeros([BLOCK_M, BLOCK_D], ACC)
    for i in tl.range(lo, hi, num_stages=STAGES):
        # From L2 (.cg): other SMs wrote these, and L1 is not coherent. The last arriver's own
        # partial (split me) comes from its registers, in its place; its copy is predicated off.
        slot = first + i * m_blocks * (2 * BLOCK_M * BLOCK_D)
        other_dk = tl.load(slot + tile, mask=scalar_mask(i != me, tile), other=0.0, cache_modifier=".cg")
        other_dv = tl.load(slot + BLOCK_M * BLOCK_D + tile, mask=scalar_mask(i != me, tile), other=0.0, cache_modifier=".cg")
        dk += tl.where(i == me, own_dk, other_dk)
        dv += tl.where(i == me, own_dv, other_dv)
    last = True
    if TWO_LEVEL:
        mine = first + lo * m_blocks * (2 * BLOCK_M * BLOCK_D)  # summed above, by this program only
        tl.store(mine + tile, dk)
        tl.store(mine + BLOCK_M * BLOCK_D + tile, dv)
        tl.debug_barrier()  # as in _bwd_keys: the stores, then the release
        last = tl.atomic_add(count_ptr + key_block * 3 + 2, 1, sem="acq_rel", scope="gpu") == 1
        if last:
            tl.store(count_ptr + key_block * 3 + 2, 0)
            other = first + tl.where(lo == 0, (SPLITS + 1) // 2, 0) * m_blocks * (2 * BLOCK_M * BLOCK_D)
            dk += tl.load(other + tile, cache_modifier=".cg")
            dv += tl.load(other + BLOCK_M * BLOCK_D + tile, cache_modifier=".cg")
    if last:
        b = (bh // H).to(tl.int64)
        h = (bh % H).to(tl.int64)
        m_mask = offs_m < M
        d_mask = offs_d < D
        _store_tile(dk_ptr + b * stride_dkb + h * stride_dkh, dk, offs_m, offs_d, stride_dkm, stride_dkd, m_mask, d_mask)
        _store_tile(dv_ptr + b * stride_dvb + h * stride_dvh, dv, offs_m, offs_d, stride_dvm, stride_dvd, m_mask, d_mask)


@triton.jit
def _rows(base, start, stride_r, stride_c, R, C, BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr, EVEN: tl.constexpr):
    """Rows [start, start + BLOCK_R) of a strided (R, C) view: (BLOCK_R, BLOCK_C). EVEN (no
    partial block, C == BLOCK_C) drops the masks and adds the start to the scalar base, so the
    tile's offsets do not depend on it (the compiler keeps them out of the loop). With masks the
    offsets include the start: hoisted, the masked tiles' offsets spill at D = 128."""
    rows = tl.arange(0, BLOCK_R)
    cols = tl.arange(0, BLOCK_C)
    if EVEN:
        return tl.load(base + start * stride_r + rows[:, None] * stride_r + cols[None, :] * stride_c)
    return _load_tile(base, start + rows, cols, stride_r, stride_c, start + rows < R, cols < C)


@triton.jit
def _query_rows(
    q_base, o_base, do_base, lse_row, start, N, stride_qn, stride_qd, stride_on, stride_od, stride_gn, stride_gd,
    D: tl.constexpr, ACC: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, EVEN: tl.constexpr,
):  # fmt: skip
    """What the backward needs of queries [start, start + BLOCK_N): q and dO (BLOCK_N, BLOCK_D),
    -lse in base 2 and delta = rowsum(dO * out) (BLOCK_N,). Padded rows read as 0."""
    q = _rows(q_base, start, stride_qn, stride_qd, N, D, BLOCK_N, BLOCK_D, EVEN)
    do = _rows(do_base, start, stride_gn, stride_gd, N, D, BLOCK_N, BLOCK_D, EVEN)
    o = _rows(o_base, start, stride_on, stride_od, N, D, BLOCK_N, BLOCK_D, EVEN)
    offs_n = start + tl.arange(0, BLOCK_N)
    if EVEN:
        lse = tl.load(lse_row + offs_n)
    else:
        lse = tl.load(lse_row + offs_n, mask=offs_n < N, other=0.0)
    return q, do, lse * -LOG2E, tl.sum(o.to(ACC) * do.to(ACC), axis=1)


@triton.jit
def _probs(s, qk_scale, neg_lse2):
    """P = exp(scale s - lse) in base 2, one fma and one exp per score (neg_lse2 broadcast to s)."""
    return tl.exp2(tl.fma(s, qk_scale, neg_lse2))


@triton.jit
def _bwd_keys(
    pid, q_ptr, k_ptr, v_ptr, out_ptr, do_ptr, lse_ptr, dq_ptr, dk_ptr, dv_ptr, partial_ptr, count_ptr,
    scratch_ptr, flag_ptr, qk_scale, scale, H, N, M, CHUNK_N, SPLITS,
    stride_qb, stride_qh, stride_qn, stride_qd,
    stride_kb, stride_kh, stride_km, stride_kd,
    stride_vb, stride_vh, stride_vm, stride_vd,
    stride_ob, stride_oh, stride_on, stride_od,
    stride_gb, stride_gh, stride_gn, stride_gd,
    stride_dqb, stride_dqh, stride_dqn, stride_dqd,
    stride_dkb, stride_dkh, stride_dkm, stride_dkd,
    stride_dvb, stride_dvh, stride_dvm, stride_dvd,
    stride_sb, stride_sh, stride_sn, stride_sd,
    D: tl.constexpr, ACC: tl.constexpr, PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
    FUSED_DQ: tl.constexpr, DQ_T: tl.constexpr, DIRECT_DKV: tl.constexpr, EVEN: tl.constexpr, TWO_LEVEL: tl.constexpr,
    SUM_STAGES: tl.constexpr, PAIR: tl.constexpr,
):  # fmt: skip
    """Key program ``pid``: BLOCK_M keys x one chunk of queries of one (b, h): dk and dv (and dq
    when FUSED_DQ). Works in the transposed orientation (keys as rows) so the key block is the M
    side of every product. delta = rowsum(dO * out) is computed on the fly from the same rows.

    PAIR (the "pair" policy, two key blocks): per step, each of the two key programs of a (b, h,
    query chunk) also takes its dq partial over its keys, and the pair sums them with static roles:
    key block 0 ("A") stores its partial (scaled, in the scratch's dtype) and sets the step's flag
    with release semantics; key block 1 ("B") waits for the flag (acquire), adds A's partial to
    its own in fp32, writes dq and resets the flag (the workspace is zero between launches). B
    waits only on A, and A, the lower launch ticket of the pair, has always started: no deadlock
    whatever the occupancy."""
    m_blocks = tl.cdiv(M, BLOCK_M)
    pid_m = pid % m_blocks
    rest = pid // m_blocks
    split = rest % SPLITS
    bh = rest // SPLITS
    b = (bh // H).to(tl.int64)
    h = (bh % H).to(tl.int64)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    if EVEN:
        # Constant masks fold away: otherwise the (BLOCK_M, BLOCK_D) mask of the k and v loads,
        # reused by the dk and dv stores, stays in registers through the loop and spills.
        m_mask = tl.full([BLOCK_M], 1, tl.int1)
        d_mask = tl.full([BLOCK_D], 1, tl.int1)
    else:
        m_mask = offs_m < M
        d_mask = offs_d < D
    k = _load_tile(k_ptr + b * stride_kb + h * stride_kh, offs_m, offs_d, stride_km, stride_kd, m_mask, d_mask)
    v = _load_tile(v_ptr + b * stride_vb + h * stride_vh, offs_m, offs_d, stride_vm, stride_vd, m_mask, d_mask)
    q_base = q_ptr + b * stride_qb + h * stride_qh
    o_base = out_ptr + b * stride_ob + h * stride_oh
    do_base = do_ptr + b * stride_gb + h * stride_gh
    dq_base = dq_ptr + b * stride_dqb + h * stride_dqh
    lse_row = lse_ptr + bh.to(tl.int64) * N
    scratch_base = scratch_ptr + b * stride_sb + h * stride_sh

    dk = tl.zeros([BLOCK_M, BLOCK_D], ACC)
    dv = tl.zeros([BLOCK_M, BLOCK_D], ACC)
    n_start = split * CHUNK_N
    n_end = tl.minimum(n_start + CHUNK_N, N)
    for start_n in range(n_start, n_end, BLOCK_N):
        q, do, neg_lse2, delta = _query_rows(
            q_base, o_base, do_base, lse_row, start_n, N, stride_qn, stride_qd, stride_on, stride_od, stride_gn, stride_gd,
            D, ACC, BLOCK_N, BLOCK_D, EVEN,
        )  # fmt: skip
        s_t = tl.dot(k, tl.trans(q), input_precision=PRECISION)  # (BLOCK_M, BLOCK_N)
        p_t = _probs(s_t, qk_scale, neg_lse2[None, :])  # P^T, exact probabilities (the lse is the full row's)
        if not EVEN:
            offs_n = start_n + tl.arange(0, BLOCK_N)
            p_t = tl.where(m_mask[:, None] & (offs_n < N)[None, :], p_t, 0.0)
        dv = tl.dot(p_t.to(do.dtype), do, dv, input_precision=PRECISION, out_dtype=dv.dtype)  # (BLOCK_M, BLOCK_D)
        dp_t = tl.dot(v, tl.trans(do), input_precision=PRECISION)  # (BLOCK_M, BLOCK_N)
        ds_t = p_t * (dp_t - delta[None, :])  # dS^T
        dk = tl.dot(ds_t.to(q.dtype), q, dk, input_precision=PRECISION, out_dtype=dk.dtype)  # (BLOCK_M, BLOCK_D)
        if FUSED_DQ:
            # This program saw every key of these queries: dq is complete. wgmma needs 64 rows
            # per warpgroup: with BLOCK_N < 64 queries the product is taken transposed, with the
            # head dim as its rows, and stored transposed.
            offs_n = start_n + tl.arange(0, BLOCK_N)
            n_mask = tl.full([BLOCK_N], 1, tl.int1) if EVEN else offs_n < N
            if DQ_T:
                dq_t = tl.dot(tl.trans(k), ds_t.to(k.dtype), input_precision=PRECISION) * scale  # (BLOCK_D, BLOCK_N)
                _store_tile(dq_base, dq_t, offs_d, offs_n, stride_dqd, stride_dqn, d_mask, n_mask)
            else:
                dq = tl.dot(tl.trans(ds_t.to(k.dtype)), k, input_precision=PRECISION) * scale  # (BLOCK_N, BLOCK_D)
                _store_tile(dq_base, dq, offs_n, offs_d, stride_dqn, stride_dqd, n_mask, d_mask)
        if PAIR:
            # This program's share of dq for these queries, over its BLOCK_M keys. wgmma needs 64
            # rows per warpgroup: at D >= 64 transposed (head dim as rows, as DQ_T above), else
            # with the queries as rows.
            offs_n = start_n + tl.arange(0, BLOCK_N)
            n_mask = tl.full([BLOCK_N], 1, tl.int1) if EVEN else offs_n < N
            if DQ_T:
                part = tl.dot(tl.trans(k), ds_t.to(k.dtype), input_precision=PRECISION) * scale  # (BLOCK_D, BLOCK_N)
                rows, cols, row_mask, col_mask = offs_d, offs_n, d_mask, n_mask
                s_r, s_c, dq_r, dq_c = stride_sd, stride_sn, stride_dqd, stride_dqn
            else:
                part = tl.dot(tl.trans(ds_t.to(k.dtype)), k, input_precision=PRECISION) * scale  # (BLOCK_N, BLOCK_D)
                rows, cols, row_mask, col_mask = offs_n, offs_d, n_mask, d_mask
                s_r, s_c, dq_r, dq_c = stride_sn, stride_sd, stride_dqn, stride_dqd
            flag = flag_ptr + bh * tl.cdiv(N, BLOCK_N) + start_n // BLOCK_N
            if pid_m == 0:
                _store_tile(scratch_base, part, rows, cols, s_r, s_c, row_mask, col_mask)
                tl.debug_barrier()  # every thread's stores, then the release (as the partials' below)
                tl.atomic_xchg(flag, 1, sem="release", scope="gpu")
            else:
                # A took the lower ticket: it has started, and it never waits.
                ready = tl.atomic_add(flag, 0, sem="acquire", scope="gpu")
                while ready == 0:
                    ready = tl.atomic_add(flag, 0, sem="acquire", scope="gpu")
                ptrs = scratch_base + rows[:, None] * s_r + cols[None, :] * s_c
                other = tl.load(ptrs, mask=row_mask[:, None] & col_mask[None, :], other=0.0, cache_modifier=".cg")
                _store_tile(dq_base, other.to(ACC) + part, rows, cols, dq_r, dq_c, row_mask, col_mask)
                tl.store(flag, 0)  # for the next launch; nothing else reads it in this one

    dk = dk * scale
    if DIRECT_DKV:
        dk_out = dk_ptr + b * stride_dkb + h * stride_dkh
        dv_out = dv_ptr + b * stride_dvb + h * stride_dvh
        _store_tile(dk_out, dk, offs_m, offs_d, stride_dkm, stride_dkd, m_mask, d_mask)
        _store_tile(dv_out, dv, offs_m, offs_d, stride_dvm, stride_dvd, m_mask, d_mask)
    else:
        # Deterministic reduction over the splits in the kernel: every split writes its fp32
        # partials, then counts itself done; the last one to arrive (whichever it is) sums all
        # SPLITS partials in split order, so the result does not depend on arrival order. The
        # partials are whole tiles indexed by program id, and everything below is recomputed
        # from the program id: values kept from before the loop would spill across it. The
        # launcher keeps SPLITS small (split_plan): the last program reads SPLITS x 2 x BLOCK_M
        # x BLOCK_D x 4 bytes, 32 KiB per split at 64 keys and D = 64, and the key blocks'
        # reductions run on different SMs at once.
        tile = tl.arange(0, BLOCK_M)[:, None] * BLOCK_D + tl.arange(0, BLOCK_D)[None, :]
        slot = partial_ptr + pid.to(tl.int64) * (2 * BLOCK_M * BLOCK_D)
        tl.store(slot + tile, dk)
        tl.store(slot + BLOCK_M * BLOCK_D + tile, dv)
        # Every thread's stores precede the release of the count (the barrier, then the atomic's
        # release semantics at GPU scope); the acquire orders the last program's loads after
        # every other split's release.
        tl.debug_barrier()
        key_block = pid // (SPLITS * m_blocks) * m_blocks + pid % m_blocks  # bh * m_blocks + pid_m
        # Three counters per key block: the two halves' (one level: the first only), the halves'.
        if TWO_LEVEL:
            half = (SPLITS + 1) // 2
            group = pid // m_blocks % SPLITS // half
            lo = group * half
            hi = tl.minimum(lo + half, SPLITS)
        else:
            group = 0
            lo = 0
            hi = SPLITS
        done = tl.atomic_add(count_ptr + key_block * 3 + group, 1, sem="acq_rel", scope="gpu")
        if done == hi - lo - 1:
            # Every split of [lo, hi) has counted itself: reset the counter for the next launch
            # (the workspace is zero between calls, kernels/_pixels.zeroed_workspace).
            tl.store(count_ptr + key_block * 3 + group, 0)
            if BLOCK_D <= 64:  # split_plan's tail assumes the same
                _sum_partials(
                    dk, dv, pid // m_blocks % SPLITS, partial_ptr, count_ptr, dk_ptr, dv_ptr, key_block, lo, hi, SPLITS, H, M,
                    stride_dkb, stride_dkh, stride_dkm, stride_dkd, stride_dvb, stride_dvh, stride_dvm, stride_dvd,
                    D, ACC, BLOCK_M, BLOCK_D, TWO_LEVEL, SUM_STAGES,
                )  # fmt: skip
            else:
                _sum_partials_apart(
                    partial_ptr, count_ptr, dk_ptr, dv_ptr, key_block, lo, hi, SPLITS, H, M,
                    stride_dkb, stride_dkh, stride_dkm, stride_dkd, stride_dvb, stride_dvh, stride_dvm, stride_dvd,
                    D, ACC, BLOCK_M, BLOCK_D, TWO_LEVEL,
                )  # fmt: skip


@triton.jit
def _dq_step(dq, q, do, neg_lse2, delta, k, v, start_m, M, qk_scale, PRECISION: tl.constexpr, BLOCK_M: tl.constexpr, EVEN: tl.constexpr):
    """dq += dS k over the keys [start_m, start_m + BLOCK_M) of tiles k and v, P and dP recomputed."""
    s = tl.dot(q, tl.trans(k), input_precision=PRECISION)  # (BLOCK_N, BLOCK_M)
    p = _probs(s, qk_scale, neg_lse2[:, None])
    if not EVEN:
        p = tl.where((start_m + tl.arange(0, BLOCK_M) < M)[None, :], p, 0.0)
    dp = tl.dot(do, tl.trans(v), input_precision=PRECISION)  # (BLOCK_N, BLOCK_M)
    ds = p * (dp - delta[:, None])
    return tl.dot(ds.to(k.dtype), k, dq, input_precision=PRECISION, out_dtype=dq.dtype)  # (BLOCK_N, BLOCK_D)


@triton.jit
def _bwd_queries(
    pid, q_ptr, k_ptr, v_ptr, out_ptr, do_ptr, lse_ptr, dq_ptr, qk_scale, scale, H, N, M,
    stride_qb, stride_qh, stride_qn, stride_qd,
    stride_kb, stride_kh, stride_km, stride_kd,
    stride_vb, stride_vh, stride_vm, stride_vd,
    stride_ob, stride_oh, stride_on, stride_od,
    stride_gb, stride_gh, stride_gn, stride_gd,
    stride_dqb, stride_dqh, stride_dqn, stride_dqd,
    D: tl.constexpr, ACC: tl.constexpr, PRECISION: tl.constexpr,
    BLOCK_N: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr, EVEN: tl.constexpr, KEY_TILES: tl.constexpr,
):  # fmt: skip
    """Query program ``pid``: dq for a block of BLOCK_N queries, looping over the keys (P and dP
    recomputed: the flash-attention 2 recipe), delta from its own rows of out and dO."""
    n_blocks = tl.cdiv(N, BLOCK_N)
    pid_n = pid % n_blocks
    bh = pid // n_blocks
    b = (bh // H).to(tl.int64)
    h = (bh % H).to(tl.int64)
    start_n = pid_n * BLOCK_N
    k_base = k_ptr + b * stride_kb + h * stride_kh
    v_base = v_ptr + b * stride_vb + h * stride_vh
    q, do, neg_lse2, delta = _query_rows(
        q_ptr + b * stride_qb + h * stride_qh, out_ptr + b * stride_ob + h * stride_oh, do_ptr + b * stride_gb + h * stride_gh,
        lse_ptr + bh.to(tl.int64) * N, start_n, N, stride_qn, stride_qd, stride_on, stride_od, stride_gn, stride_gd,
        D, ACC, BLOCK_N, BLOCK_D, EVEN,
    )  # fmt: skip

    dq = tl.zeros([BLOCK_N, BLOCK_D], ACC)
    if KEY_TILES > 0:
        # Up to 4 key tiles (MiT: 256 keys): all of K and V is loaded first, so that these loads
        # are in flight together (one round trip, as the query rows'), then the tiles' products.
        k0 = _rows(k_base, 0, stride_km, stride_kd, M, D, BLOCK_M, BLOCK_D, EVEN)  # (BLOCK_M, BLOCK_D)
        v0 = _rows(v_base, 0, stride_vm, stride_vd, M, D, BLOCK_M, BLOCK_D, EVEN)
        k1 = _rows(k_base, BLOCK_M, stride_km, stride_kd, M, D, BLOCK_M, BLOCK_D, EVEN) if KEY_TILES > 1 else k0
        v1 = _rows(v_base, BLOCK_M, stride_vm, stride_vd, M, D, BLOCK_M, BLOCK_D, EVEN) if KEY_TILES > 1 else v0
        k2 = _rows(k_base, 2 * BLOCK_M, stride_km, stride_kd, M, D, BLOCK_M, BLOCK_D, EVEN) if KEY_TILES > 2 else k0
        v2 = _rows(v_base, 2 * BLOCK_M, stride_vm, stride_vd, M, D, BLOCK_M, BLOCK_D, EVEN) if KEY_TILES > 2 else v0
        k3 = _rows(k_base, 3 * BLOCK_M, stride_km, stride_kd, M, D, BLOCK_M, BLOCK_D, EVEN) if KEY_TILES > 3 else k0
        v3 = _rows(v_base, 3 * BLOCK_M, stride_vm, stride_vd, M, D, BLOCK_M, BLOCK_D, EVEN) if KEY_TILES > 3 else v0
        dq = _dq_step(dq, q, do, neg_lse2, delta, k0, v0, 0, M, qk_scale, PRECISION, BLOCK_M, EVEN)
        if KEY_TILES > 1:
            dq = _dq_step(dq, q, do, neg_lse2, delta, k1, v1, BLOCK_M, M, qk_scale, PRECISION, BLOCK_M, EVEN)
        if KEY_TILES > 2:
            dq = _dq_step(dq, q, do, neg_lse2, delta, k2, v2, 2 * BLOCK_M, M, qk_scale, PRECISION, BLOCK_M, EVEN)
        if KEY_TILES > 3:
            dq = _dq_step(dq, q, do, neg_lse2, delta, k3, v3, 3 * BLOCK_M, M, qk_scale, PRECISION, BLOCK_M, EVEN)
    else:
        for start_m in range(0, M, BLOCK_M):
            k = _rows(k_base, start_m, stride_km, stride_kd, M, D, BLOCK_M, BLOCK_D, EVEN)
            v = _rows(v_base, start_m, stride_vm, stride_vd, M, D, BLOCK_M, BLOCK_D, EVEN)
            dq = _dq_step(dq, q, do, neg_lse2, delta, k, v, start_m, M, qk_scale, PRECISION, BLOCK_M, EVEN)
    offs_n = start_n + tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    dq_out = dq_ptr + b * stride_dqb + h * stride_dqh
    _store_tile(dq_out, dq * scale, offs_n, offs_d, stride_dqn, stride_dqd, offs_n < N, offs_d < D)


@triton.jit
def _attention_bwd_kernel(
    q_ptr,  # (B, H, N, D) any strides
    k_ptr,  # (B, H, M, D) any strides
    v_ptr,  # (B, H, M, D) any strides
    out_ptr,  # (B, H, N, D) any strides (for delta = rowsum(dO * out))
    do_ptr,  # (B, H, N, D) any strides: d loss / d out
    lse_ptr,  # (B, H, N) ACC, contiguous: natural-log log-sum-exp from the forward
    dq_ptr,  # (B, H, N, D) any strides, q's dtype
    dk_ptr,  # (B, H, M, D) any strides, k's dtype
    dv_ptr,  # (B, H, M, D) any strides, v's dtype
    partial_ptr,  # (key programs, 2, BLOCK_M, BLOCK_D) ACC: each key program's dk, dv (SPLITS > 1 only)
    count_ptr,  # (>= B * H * cdiv(M, BLOCK_M),) int32, zero on entry and on exit: splits done per key block
    scratch_ptr,  # PAIR: (B, H, N, D) key block 0's dq partials (dq itself for bf16, fp32 for fp16)
    flag_ptr,  # PAIR: (B * H * cdiv(N, BLOCK_N),) int32, zero on entry and exit: partial ready per query block
    launch_ticket_ptr,  # PAIR: (2,) int32, zero on entry and exit: programs started, programs done
    qk_scale,  # scale * log2(e)
    scale,
    H,
    N,
    M,
    D: tl.constexpr,  # constexpr: a head-dim mask that is all true (D == BLOCK_D) folds away
    CHUNK_N,  # queries per split, a multiple of BLOCK_N
    SPLITS,  # query chunks: the key programs are key blocks x SPLITS x B * H, flattened
    KEY_PROGRAMS,  # programs [0, KEY_PROGRAMS) do dk, dv; the rest (without FUSED_DQ) dq
    stride_qb, stride_qh, stride_qn, stride_qd,
    stride_kb, stride_kh, stride_km, stride_kd,
    stride_vb, stride_vh, stride_vm, stride_vd,
    stride_ob, stride_oh, stride_on, stride_od,
    stride_gb, stride_gh, stride_gn, stride_gd,
    stride_dqb, stride_dqh, stride_dqn, stride_dqd,
    stride_dkb, stride_dkh, stride_dkm, stride_dkd,
    stride_dvb, stride_dvh, stride_dvm, stride_dvd,
    stride_sb, stride_sh, stride_sn, stride_sd,
    ACC: tl.constexpr,
    PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr,
    DQ_BLOCK_N: tl.constexpr,  # query programs: queries per program
    DQ_BLOCK_M: tl.constexpr,  # query programs: keys per step
    FUSED_DQ: tl.constexpr,  # BLOCK_M >= M: the key programs write dq too, no query programs
    DQ_T: tl.constexpr,  # FUSED_DQ / PAIR: compute dq^T = k^T dS^T (BLOCK_D rows) instead of dS k (BLOCK_N rows)
    DIRECT_DKV: tl.constexpr,  # SPLITS == 1: dk and dv written directly, no partials
    TWO_LEVEL: tl.constexpr,  # the partials are summed in two halves, then the halves (SPLITS >= TWO_LEVEL_SPLITS)
    SUM_STAGES: tl.constexpr,  # the partial sum's pipeline depth (tiles up to 64 wide: the kernel's num_stages)
    EVEN: tl.constexpr,  # M % BLOCK_M == 0, N % BLOCK_N == 0 and D == BLOCK_D: no masks
    DQ_KEY_TILES: tl.constexpr,  # query programs: > 0 unrolls their loop over this many key tiles
    EVEN_DQ: tl.constexpr,  # N % DQ_BLOCK_N == 0, M % DQ_BLOCK_M == 0 and D == BLOCK_D: query programs unmasked
    PAIR: tl.constexpr,  # two key blocks, dq summed by the pair (_bwd_keys): no query programs
):  # fmt: skip
    """One launch for the whole backward: the key programs first (the long ones, so the hardware
    starts them first), then the query programs, which need nothing from the key programs."""
    pid = tl.program_id(0)
    if PAIR:
        # Work by launch order: a program takes the next ticket as it starts, so the A of a
        # waiting B (ticket - 1) has started, whatever order the hardware starts programs in.
        pid = tl.atomic_add(launch_ticket_ptr, 1, sem="relaxed")
    if pid < KEY_PROGRAMS:
        _bwd_keys(
            pid, q_ptr, k_ptr, v_ptr, out_ptr, do_ptr, lse_ptr, dq_ptr, dk_ptr, dv_ptr, partial_ptr, count_ptr,
            scratch_ptr, flag_ptr, qk_scale, scale, H, N, M, CHUNK_N, SPLITS,
            stride_qb, stride_qh, stride_qn, stride_qd, stride_kb, stride_kh, stride_km, stride_kd,
            stride_vb, stride_vh, stride_vm, stride_vd, stride_ob, stride_oh, stride_on, stride_od,
            stride_gb, stride_gh, stride_gn, stride_gd, stride_dqb, stride_dqh, stride_dqn, stride_dqd,
            stride_dkb, stride_dkh, stride_dkm, stride_dkd, stride_dvb, stride_dvh, stride_dvm, stride_dvd,
            stride_sb, stride_sh, stride_sn, stride_sd,
            D, ACC, PRECISION, BLOCK_M, BLOCK_N, BLOCK_D, FUSED_DQ, DQ_T, DIRECT_DKV, EVEN, TWO_LEVEL, SUM_STAGES, PAIR,
        )  # fmt: skip
        if PAIR:
            # The last program to finish resets the tickets for the next launch.
            if tl.atomic_add(launch_ticket_ptr + 1, 1, sem="acq_rel", scope="gpu") == KEY_PROGRAMS - 1:
                tl.store(launch_ticket_ptr, 0)
                tl.store(launch_ticket_ptr + 1, 0)
    elif not FUSED_DQ and not PAIR:  # FUSED_DQ / PAIR: the grid is the key programs
        _bwd_queries(
            pid - KEY_PROGRAMS, q_ptr, k_ptr, v_ptr, out_ptr, do_ptr, lse_ptr, dq_ptr, qk_scale, scale, H, N, M,
            stride_qb, stride_qh, stride_qn, stride_qd, stride_kb, stride_kh, stride_km, stride_kd,
            stride_vb, stride_vh, stride_vm, stride_vd, stride_ob, stride_oh, stride_on, stride_od,
            stride_gb, stride_gh, stride_gn, stride_gd, stride_dqb, stride_dqh, stride_dqn, stride_dqd,
            D, ACC, PRECISION, DQ_BLOCK_N, DQ_BLOCK_M, BLOCK_D, EVEN_DQ, DQ_KEY_TILES,
        )  # fmt: skip


# ----------------------------------------------------------------------------- launchers


def _acc(dtype: torch.dtype):
    return tl.float64 if dtype == torch.float64 else tl.float32


def _acc_torch(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _check_head_spans(**tensors: torch.Tensor) -> None:
    """The kernels add a head's base offset in 64 bits but index within a head (rows x strides)
    in 32 bits, which keeps address arithmetic out of the registers the score tiles need."""
    for name, t in tensors.items():
        span = sum((size - 1) * abs(stride) for size, stride in zip(t.shape[2:], t.stride()[2:]))
        if span >= 2**31:
            raise ValueError(
                f"attention: {name} spans {span} elements within one (batch, head); the kernels "
                "index within a head with 32-bit offsets (at most 2**31 - 1)"
            )


def empty_bnhd(B: int, H: int, N: int, D: int, dtype: torch.dtype, device) -> torch.Tensor:
    """A (B, H, N, D) tensor stored as (B, N, H, D): the layout the kernels write out, dq, dk and
    dv in, so that ``x.transpose(1, 2).reshape(B, N, H * D)`` (MiT's next step) is free."""
    return torch.empty((B, N, H, D), dtype=dtype, device=device).transpose(1, 2)




# How the backward picks its query splits. "time" (the default): the split count that the time
# model below (split_plan) finds fastest. "budget": the policy before issue 18, kept so that the
# audit can model it (python -m fastuda.kernels.audit --bwd-policy budget): one fused program per
# (b, h) holding all 256 keys with 32-query steps, and only as many splits as keep the fp32
# partials within PARTIAL_BUDGET of the bytes the backward must move: 6 / 4 / 10 / 16 programs
# at MiT-B5's stages at B = 2, 3-12% of an H100.
BWD_POLICY = os.environ.get("FASTUDA_ATTENTION_BWD_POLICY", "time")
PARTIAL_BUDGET = 0.05
# "pair" (a prototype, docs/kernels.md "A 5-product backward"): at 128 < M <= 256 keys, 16-bit
# inputs and D <= 64, two 128-key programs per query chunk, each with its dq partial, summed by
# the pair (_bwd_keys, PAIR); otherwise as "time". Its queries per step and pipeline depth:
PAIR_BLOCK_N = int(os.environ.get("FASTUDA_ATTENTION_PAIR_BLOCK_N", "64"))
PAIR_STAGES = int(os.environ.get("FASTUDA_ATTENTION_PAIR_STAGES", "2"))
PAIR_SCRATCH_IN_DQ = (torch.bfloat16,)  # dtypes whose partials go through dq itself (tests add float16)


def _pair(M: int, D: int, dtype: torch.dtype, cfg: BwdConfig) -> bool:
    """Whether the backward takes the pair path (BWD_POLICY "pair" and its shapes)."""
    sixteen_bit = dtype in (torch.float16, torch.bfloat16)
    return BWD_POLICY == "pair" and sixteen_bit and _pow2(D) <= 64 and 128 < M <= MAX_SINGLE_PASS_M and cfg.block_m == 128


def num_splits(B: int, H: int, N: int, M: int, D: int, dtype: torch.dtype, block_n: int, m_blocks: int, sms: int) -> int:
    """The "budget" policy's split count: as many as fill one wave, but no more than keep the
    partial sums within PARTIAL_BUDGET of the essential traffic."""
    elem = torch.finfo(dtype).bits // 8
    essential = 4 * (N + M) * D * elem + N * 4  # per (b, h)
    budget = int(PARTIAL_BUDGET * essential // (2 * M * D * 4))
    fill = sms // (B * H * m_blocks)
    return max(1, min(triton.cdiv(N, block_n), fill, budget))


class SplitPlan(NamedTuple):
    splits: int  # query chunks per key block
    seconds: float  # modelled time of the launch (H100)
    chunk_n: int  # queries per chunk, a multiple of BLOCK_N (the last chunk takes the rest)


def split_plan(
    B: int, H: int, N: int, M: int, D: int, dtype: torch.dtype, cfg: BwdConfig, sms: int, candidates=None
) -> SplitPlan:
    """The query chunks of the backward's key programs with the least modelled time, among even
    chunks and chunks one or two query blocks longer than even (a shorter last chunk: its key
    program has room for a query program on its SM). The model is kernels/timing.py's (H100
    figures, the device's SM count) in closed form per program, with its placement replayed: each program costs the larger of its MMA time and
    its memory time (bytes over one SM's port: the steps of its chunk, the pipeline's predicated
    prologue among them, or its round trips times the latency); programs go in launch order (key programs first) to the SM that
    frees a slot first, and an SM's time is the larger of its programs' summed MMA time and
    their memory time. The launch takes the busiest SM, at least its bytes over HBM, then the
    last arriver's sum of the SPLITS fp32 partials (split > 1), then the launch overhead. More
    splits shorten the key programs, and cost partials and a longer tail. ``candidates``
    restricts the split counts tried (tests)."""
    return _split_plan(B, H, N, M, D, dtype, cfg, sms, None if candidates is None else tuple(candidates), _pair(M, D, dtype, cfg))


@functools.lru_cache(maxsize=256)
def _split_plan(B, H, N, M, D, dtype, cfg, sms, candidates, pair=False):
    from .timing import mma_efficiency, plan_device

    dev = plan_device()
    elem = torch.finfo(dtype).bits // 8
    eff = mma_efficiency("wgmma", 64, False, {2: "bf16", 4: "f32", 8: "f64"}[elem], dev)
    peak = dev.mma_per_sm * eff
    port = dev.sm_port_bytes_clk * dev.clock_hz
    block_d = _pow2(D)
    fused = cfg.block_m >= M or pair  # pair: 5 products per step and no query programs
    m_blocks = triton.cdiv(M, cfg.block_m)
    n_blocks = triton.cdiv(N, cfg.block_n)
    bh = B * H
    step_bytes = 3 * cfg.block_n * block_d * elem + cfg.block_n * 4  # q, dO, out, lse
    step_flops = (5 if fused else 4) * 2 * cfg.block_m * cfg.block_n * block_d
    tile = cfg.block_m * block_d
    partial = 2 * tile * 4  # fp32 dk, dv of one key program
    essential = (4 * N + 4 * M) * block_d * elem * bh
    options = []  # (splits, query blocks per split): even chunks, and the last split a little shorter
    for splits in candidates or range(1, min(n_blocks, max(1, 4 * sms // (bh * m_blocks))) + 1):
        even = triton.cdiv(n_blocks, splits)
        options += [(splits, steps) for steps in ((even,) if candidates else range(even, even + 3))
                    if triton.cdiv(n_blocks, steps) == splits or (candidates and steps == even)]  # fmt: skip
    best = None
    # Round trips per loop step: 1 / pipe, the first pipe steps' in the prologue's round trip
    # (kernels/timing.py). The pipeline's copies are predicated with the trip count, so a chunk
    # of n steps loads n steps (its prologue's included).
    pipe = max(1, cfg.num_stages - 1)
    query = []
    if not fused:
        keys = triton.cdiv(M, cfg.dq_block_m) * cfg.dq_block_m
        tiles = triton.cdiv(M, cfg.dq_block_m)
        q_bytes = 4 * cfg.dq_block_n * block_d * elem + cfg.dq_block_n * 4 + 2 * keys * block_d * elem
        q_rounds = 1 if _dq_key_tiles(M, cfg, dtype) else 1 + max(0, tiles - pipe) / pipe
        q_cost = (3 * 2 * cfg.dq_block_n * keys * block_d / peak, q_bytes, q_rounds)
        query = [q_cost] * (bh * triton.cdiv(N, cfg.dq_block_n))
    for splits, steps in options:
        chunks = [steps] * (n_blocks // steps) + ([n_blocks % steps] if n_blocks % steps else [])
        programs = []
        for _ in range(bh):
            for n in chunks:
                out = partial if splits > 1 else 2 * tile * elem
                cost = (n * step_flops / peak, n * step_bytes + 2 * tile * elem + out,
                        1 + max(0, n - pipe) / pipe)  # fmt: skip
                if pair:
                    # key block 1 waits for key block 0's partial each step: the poll, then the
                    # partial's load, two round trips more per step (kernels/timing.py)
                    programs += [cost, (cost[0], cost[1] + n * cfg.block_n * block_d * elem, cost[2] + 2 * n)]
                else:
                    programs += [cost] * m_blocks
        body = _busiest_sm(programs + query, cfg.ctas_per_sm, min(sms, len(programs) + len(query)), port, dev.latency_s, dev.overlap)
        tail = 0.0
        if len(chunks) > 1:
            # The last arriver reads the partials of its group, in one loop over the group's
            # splits: tiles up to 64 wide through a cp.async pipeline (round trips as the model
            # counts a pipelined loop: the first `pipe` trips wait on the prologue's), its own
            # partial from its registers (that trip's copy predicated off); wider tiles one
            # round trip per partial, its own read back. Two levels: a half's partials, its sum
            # written, the other half's sum read.
            two = len(chunks) >= TWO_LEVEL_SPLITS
            n = triton.cdiv(len(chunks), 2) if two else len(chunks)
            own = 1 if block_d <= 64 else 0
            rounds = (1 + max(0, n - pipe) / pipe if own else n) + two
            tail = max(rounds * dev.latency_s, ((n - own + 2 * two) * partial + 2 * tile * elem) / port)
        scratch = 0 if len(chunks) == 1 else len(programs) * partial
        t = max(body, (essential + scratch) / dev.hbm_bytes_s) + tail + dev.launch_s
        if best is None or t < best.seconds * 0.98:  # fewer splits unless clearly faster
            best = SplitPlan(len(chunks), t, steps * cfg.block_n)
    return best


def _busiest_sm(programs, slots: int, sms: int, port: float, latency: float, overlap: float = 1.0) -> float:
    """kernels/timing.sm_times in brief: programs (mma seconds, bytes, round trips) in launch
    order, each on the SM whose slots free first; the busiest SM's seconds."""
    from .timing import exposed

    heap = [(0.0, j) for j in range(sms)]
    mine = [[0.0, 0.0, 0.0, 0.0, 0, 0.0] for _ in range(sms)]  # mma, bytes, rounds, max rounds, count, own times
    for mma, nbytes, rounds in programs:
        load, j = heapq.heappop(heap)
        acc = mine[j]
        own = exposed((mma, max(nbytes / port, rounds * latency)), overlap)
        acc[0] += mma
        acc[1] += nbytes
        acc[2] += rounds
        acc[3] = max(acc[3], rounds)
        acc[4] += 1
        acc[5] += own
        heapq.heappush(heap, (load + own / slots, j))
    return max(max(m, max(r / min(slots, c), top) * latency, b / port, t / min(slots, c)) for m, b, r, top, c, t in mine if c)


# From this many splits the partials are summed in two halves (_sum_partials): two last arrivers
# read half of them each, then one adds the other half's sum. With the pipelined sum, 4 splits
# are quicker in one level (4 partials, one round trip and a third; two levels: two).
TWO_LEVEL_SPLITS = 5

# Query programs unroll their key loop up to this many tiles (MiT: 256 keys, 4 tiles).
MAX_UNROLLED_KEY_TILES = 4


def _dq_key_tiles(M: int, cfg: BwdConfig, dtype: torch.dtype) -> int:
    """Key tiles a query program unrolls (0: its loop). 16-bit only: their tiles wait in shared
    memory for wgmma; fp32 / fp64 dots take their operands from registers, where 4 tiles spill."""
    tiles = triton.cdiv(M, cfg.dq_block_m)
    return tiles if tiles <= MAX_UNROLLED_KEY_TILES and dtype in (torch.float16, torch.bfloat16) else 0


def attention_fwd(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    scale: float,
    *,
    out: torch.Tensor | None = None,
    lse: torch.Tensor | None = None,
    block_n: int | None = None,
    block_m: int | None = None,
    splits: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Returns (out (B, H, N, D) in q's dtype, stored (B, N, H, D); lse (B, H, N) fp32, fp64 for
    fp64 inputs). ``out`` / ``lse`` let a caller (the tests) pass pre-filled tensors; with
    ``block_m`` keys per tile, M <= key_tiles * block_m keeps the keys resident, more streams them
    (online softmax); ``splits`` sets the resident path's persistent grid to ``splits * B * H``
    programs (default: one wave, ``ctas_per_sm`` per SM). Inputs are assumed validated by
    fastuda.ops."""
    B, H, N, D = q.shape
    M = k.shape[2]
    if out is None:
        out = empty_bnhd(B, H, N, D, q.dtype, q.device)
    if lse is None:
        lse = torch.empty((B, H, N), dtype=_acc_torch(q.dtype), device=q.device)
    if out.numel() == 0:
        return out, lse
    _check_head_spans(q=q, k=k, v=v, out=out)
    cfg = fwd_config(M, D, q.dtype, block_n, block_m)
    key_tiles = triton.cdiv(M, cfg.block_m)
    resident = key_tiles if key_tiles <= cfg.key_tiles else 0
    total = B * H * triton.cdiv(N, cfg.block_n)
    if resident:
        # Persistent: one wave of programs (fewer when there are fewer blocks), each taking an
        # equal share of the blocks.
        programs = splits * B * H if splits else _sm_count(q.device) * cfg.ctas_per_sm
        programs = max(1, min(programs, total))
    else:
        programs = total
    grid = (programs,)
    _attention_fwd_kernel[grid](
        q, k, v, out, lse, scale * LOG2E.value, H, N, M, D, total, programs,
        *q.stride(), *k.stride(), *v.stride(), *out.stride(),
        ACC=_acc(q.dtype), PRECISION="ieee", BLOCK_N=cfg.block_n, BLOCK_M=cfg.block_m, BLOCK_D=_pow2(D),
        RESIDENT=resident, EVEN_M=M % cfg.block_m == 0,
        num_warps=cfg.num_warps, num_stages=cfg.num_stages,
    )  # fmt: skip
    return out, lse


def attention_bwd(
    grad_out: torch.Tensor,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    out: torch.Tensor,
    lse: torch.Tensor,
    scale: float,
    *,
    dq: torch.Tensor | None = None,
    dk: torch.Tensor | None = None,
    dv: torch.Tensor | None = None,
    block_m: int | None = None,
    block_n: int | None = None,
    splits: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Returns (dq, dk, dv) in the inputs' dtype, stored (B, N, H, D) / (B, M, H, D).

    ``dq`` / ``dk`` / ``dv`` let a caller pass pre-filled tensors; ``block_m`` < M selects the
    two-kernel path (separate dq kernel), ``splits`` the number of even query chunks (default:
    split_plan's chunking).
    """
    B, H, N, D = q.shape
    M = k.shape[2]
    dev = q.device
    dq = empty_bnhd(B, H, N, D, q.dtype, dev) if dq is None else dq
    dk = empty_bnhd(B, H, M, D, k.dtype, dev) if dk is None else dk
    dv = empty_bnhd(B, H, M, D, v.dtype, dev) if dv is None else dv
    if B * H == 0:
        return dq, dk, dv
    _check_head_spans(grad_out=grad_out, q=q, k=k, v=v, out=out, dq=dq, dk=dk, dv=dv)
    cfg = bwd_config(M, D, q.dtype, block_m, block_n)
    block_d = _pow2(D)
    acc, acc_torch = _acc(q.dtype), _acc_torch(q.dtype)
    fused_dq = cfg.block_m >= M
    m_blocks = triton.cdiv(M, cfg.block_m)
    n_blocks = triton.cdiv(N, cfg.block_n)
    if splits is None:
        if BWD_POLICY == "budget":
            splits = num_splits(B, H, N, M, D, q.dtype, cfg.block_n, m_blocks, _sm_count(dev))
        else:
            plan = split_plan(B, H, N, M, D, q.dtype, cfg, _sm_count(dev))
            chunk_n = plan.chunk_n
    if splits is not None:
        splits = max(1, min(splits, n_blocks))
        chunk_n = triton.cdiv(n_blocks, splits) * cfg.block_n
    splits = triton.cdiv(N, chunk_n)  # no empty split

    direct = splits == 1
    pair = _pair(M, D, q.dtype, cfg)
    partial = count = dk  # placeholder pointers, never read when direct
    counts = 0 if direct else 3 * B * H * m_blocks
    flags = B * H * n_blocks if pair else 0
    workspace = zeroed_workspace(dev, counts + 2 + flags) if counts or pair else None  # no zero-fill launch
    if not direct:
        partial = torch.empty((m_blocks * splits * B * H, 2, cfg.block_m, block_d), dtype=acc_torch, device=dev)
        count = workspace[:counts]  # reset by the last arrivers
    ticket = flag = scratch = dk  # placeholders, never read without PAIR
    if pair:
        ticket, flag = workspace[counts : counts + 2], workspace[counts + 2 : counts + 2 + flags]
        # bf16: key block 0's partials go through dq itself (no scratch allocation, the same
        # rounding as a bf16 scratch); fp16: an fp32 scratch (a partial can exceed the sum,
        # the two halves cancelling, and fp16 stops at 65504).
        scratch = dq if q.dtype in PAIR_SCRATCH_IN_DQ else torch.empty((B, H, N, D), dtype=torch.float32, device=dev)
    # the dq product with the head dim as its rows (wgmma's 64 per warpgroup): the fused path's
    # below 64 queries per step, the pair's from D = 64
    dq_t = q.dtype in (torch.float16, torch.bfloat16) and (block_d >= 64 if pair else cfg.block_n < 64 <= block_d)
    key_programs = m_blocks * splits * B * H
    query_programs = 0 if fused_dq or pair else triton.cdiv(N, cfg.dq_block_n) * B * H
    _attention_bwd_kernel[(key_programs + query_programs,)](
        q, k, v, out, grad_out, lse, dq, dk, dv, partial, count, scratch, flag, ticket,
        scale * LOG2E.value, scale, H, N, M, D, chunk_n, splits, key_programs,
        *q.stride(), *k.stride(), *v.stride(), *out.stride(), *grad_out.stride(),
        *dq.stride(), *dk.stride(), *dv.stride(), *(scratch.stride() if pair else (0, 0, 0, 0)),
        ACC=acc, PRECISION="ieee", BLOCK_M=cfg.block_m, BLOCK_N=cfg.block_n, BLOCK_D=block_d,
        DQ_BLOCK_N=cfg.dq_block_n, DQ_BLOCK_M=cfg.dq_block_m,
        TWO_LEVEL=splits >= TWO_LEVEL_SPLITS, SUM_STAGES=cfg.num_stages if block_d <= 64 else 1, FUSED_DQ=fused_dq, DQ_T=dq_t, DIRECT_DKV=direct,
        EVEN=(M % cfg.block_m == 0) and (N % cfg.block_n == 0) and D == block_d, DQ_KEY_TILES=_dq_key_tiles(M, cfg, q.dtype), EVEN_DQ=(M % cfg.dq_block_m == 0) and (N % cfg.dq_block_n == 0) and D == block_d,
        PAIR=pair, num_warps=cfg.num_warps, num_stages=cfg.num_stages,
    )  # fmt: skip
    return dq, dk, dv
