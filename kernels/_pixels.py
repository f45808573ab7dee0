"""Launch geometry shared by the per-pixel kernels over (B, C, H, W) logits.

Each program owns BLOCK_P pixels of one image and walks the C channels in
chunks of BLOCK_C, so a (BLOCK_C, BLOCK_P) tile sits in registers and every
row of the tile is a contiguous run of pixels (coalesced, vectorised loads
when the H*W plane is contiguous). The table is static, keyed on C, rather
than @triton.autotune: autotuning under torch.compile has had bugs
(pytorch#164124) and these kernels are memory-bound, so the tile size mostly
decides occupancy, not arithmetic.
"""

import triton
import triton.language as tl

# Largest channel chunk held in registers at once; wider C loops with an
# online (running max / rescaled sum) softmax.
MAX_BLOCK_C = 64
# Elements of the (BLOCK_C, BLOCK_P) tile per program.
TILE_ELEMS = 8192


def pixel_config(num_classes: int, block_c: int | None = None) -> tuple[int, int, int, int]:
    """Returns (BLOCK_C, BLOCK_P, NUM_C_BLOCKS, num_warps) for C classes.

    ``block_c`` overrides the channel chunk (tests use it to reach the
    multi-chunk path with a small C).
    """
    if block_c is None:
        block_c = min(triton.next_power_of_2(num_classes), MAX_BLOCK_C)
    block_p = max(TILE_ELEMS // block_c, 64)
    num_c_blocks = triton.cdiv(num_classes, block_c)
    num_warps = 8 if block_c * block_p >= 8192 else 4
    return block_c, block_p, num_c_blocks, num_warps


def plane_is_contiguous(t, h_dim: int, w_dim: int) -> bool:
    """True when the (H, W) plane of ``t`` is row-major dense, so that pixel
    p = h * W + w sits at offset p (lets the kernels skip the div/mod and
    vectorise)."""
    H, W = t.shape[h_dim], t.shape[w_dim]
    return (W == 1 or t.stride(w_dim) == 1) and (H == 1 or t.stride(h_dim) == W)


@triton.jit
def pixel_offset(p, W, stride_h, stride_w, PLANE_CONTIG: tl.constexpr):
    """Memory offset (int64) of flat pixel index p = h * W + w within a plane."""
    if PLANE_CONTIG:
        return p.to(tl.int64)
    h = p // W
    w = p - h * W
    return h.to(tl.int64) * stride_h + w.to(tl.int64) * stride_w


@triton.jit
def load_logit_chunk(base, cb, C, stride_c, p_mask, ACC: tl.constexpr, BLOCK_C: tl.constexpr):
    """Loads channels [cb * BLOCK_C, (cb + 1) * BLOCK_C) of BLOCK_P pixels as a
    (BLOCK_C, BLOCK_P) tile in ACC; padded channels hold -inf (they vanish from
    max, argmax and exp), padded pixels hold finite values. Returns (tile, c)."""
    c = cb * BLOCK_C + tl.arange(0, BLOCK_C)  # (BLOCK_C,)
    c_mask = c < C
    x = tl.load(
        base[None, :] + c[:, None].to(tl.int64) * stride_c,
        mask=c_mask[:, None] & p_mask[None, :],
        other=0.0,
    ).to(ACC)
    return tl.where(c_mask[:, None], x, float("-inf")), c


@triton.jit
def online_softmax_chunk(x, m, s):
    """One step of the streaming softmax over a (BLOCK_C, BLOCK_P) chunk:
    returns the new running max and the sum of exp(x - max) rescaled to it.
    Padded channels must hold -inf."""
    m_new = tl.maximum(m, tl.max(x, axis=0))
    s = s * tl.exp(m - m_new) + tl.sum(tl.exp(x - m_new[None, :]), axis=0)
    return m_new, s
