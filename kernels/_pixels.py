"""Launch geometry and the streaming softmax shared by the per-pixel kernels over (B, C, H, W) logits.

Layout: pixels across threads, channels in a loop. Each program owns BLOCK_P
pixels of one image, VEC consecutive pixels per thread (one vectorised load
per channel when the H*W plane is contiguous), and walks the C channels with
a loop whose trip count is the constexpr C. Every per-pixel statistic (max,
sum of exp, argmax, the target's logit) is a running value in the thread's
own registers: no cross-thread reduction, no shared memory, no barrier per
channel, and no padded channels (a (pow2(C), BLOCK_P) tile would spend
32 / 19 of the exps at C = 19).

The softmax is streamed with ONE exp per logit: for a running max m and sum
s of exp(x_i - m), a new logit x updates

    x >  m:  s = s * exp(m - x) + 1,  m = x
    x <= m:  s = s + exp(x - m)

and both cases take exp(-|x - m|).

The table is static rather than @triton.autotune: autotuning under
torch.compile has had bugs (pytorch#164124) and these kernels are memory-
bound; the block only has to give 16-byte loads and enough programs.
"""

import os

import torch
import triton
import triton.language as tl

# 16-byte loads: 4 fp32 or 8 fp16 / bf16 pixels per thread and channel.
LOAD_BYTES = 16
NUM_WARPS = 4


def pixel_config(elem_size: int, max_vec: int = 8) -> tuple[int, int]:
    """Returns (BLOCK_P, num_warps): VEC pixels per thread with VEC * elem_size = 16 bytes
    (at most ``max_vec``), over NUM_WARPS warps, so the layout covers the block exactly."""
    vec = max(1, min(LOAD_BYTES // elem_size, max_vec))
    return vec * 32 * NUM_WARPS, NUM_WARPS


# Channels whose loads a program issues together. One channel per loop trip keeps 2 KiB per
# program in flight (16 bytes x 128 threads), about 8 KiB per SM at B = 2, 512 x 512 in bf16,
# where an H100 needs about 17 KiB per SM to run at full bandwidth (latency x bandwidth / SMs);
# four channels per trip keep 8 KiB per program.
CHANNEL_GROUP = 4


def channel_group(C: int) -> int:
    return max(1, min(CHANNEL_GROUP, C))


# SMs of an H100 SXM / H200: the target of the offline sm_90 compile (tests/_sm90_compile.py,
# kernels/audit.py), which calls the launchers on CPU tensors without the interpreter.
HOPPER_SMS = 132


def sm_count(device: torch.device) -> int:
    """SMs the launch sizes its grid for (the audit patches every *sm_count* of kernels/)."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).multi_processor_count
    if os.environ.get("TRITON_INTERPRET") == "1":
        return 4  # the interpreter: few programs, so the tests cross image, head and split boundaries
    return HOPPER_SMS


def plane_is_contiguous(t, h_dim: int, w_dim: int) -> bool:
    """True when the (H, W) plane of ``t`` is row-major dense, so that pixel
    p = h * W + w sits at offset p (lets the kernels skip the div/mod and
    vectorise)."""
    H, W = t.shape[h_dim], t.shape[w_dim]
    return (W == 1 or t.stride(w_dim) == 1) and (H == 1 or t.stride(h_dim) == W)



# Triton 3.9's interpreter types a comparison's result as its operands' type, so a scalar
# condition splatted into a tensor mask becomes int32 data, which loads and stores refuse ("mask
# has unsupported dtype"). Under the interpreter these go through int32; compiled code (what the
# audit reads) keeps the plain forms.
INTERPRET = tl.constexpr(os.environ.get("TRITON_INTERPRET") == "1")


@triton.jit
def and_scalar(mask, cond):
    """mask & cond for a tensor mask and a scalar condition (see INTERPRET)."""
    if INTERPRET:
        return (mask.to(tl.int32) & tl.cast(cond, tl.int32)) != 0
    else:
        return mask & cond


@triton.jit
def scalar_mask(cond, like):
    """A scalar condition as the mask of a load or store of ``like``'s shape (see INTERPRET)."""
    if INTERPRET:
        return (tl.zeros(like.shape, tl.int32) + tl.cast(cond, tl.int32)) != 0
    else:
        return cond


@triton.jit
def pixel_offset(p, W, stride_h, stride_w, PLANE_CONTIG: tl.constexpr):
    """Memory offset (int64) of flat pixel index p = h * W + w within a plane."""
    if PLANE_CONTIG:
        return p.to(tl.int64)
    h = p // W
    w = p - h * W
    return h.to(tl.int64) * stride_h + w.to(tl.int64) * stride_w


@triton.jit
def online_softmax_step(x, m, s):
    """Adds logit x to the running (max m, sum s of exp(. - m)) of each pixel with one exp.
    Start from m = -inf, s = 0."""
    e = tl.exp(-tl.abs(x - m))  # exp(m - x) when x is the new max, else exp(x - m)
    s = tl.where(x > m, s * e + 1.0, s + e)
    return tl.maximum(m, x), s


@triton.jit
def _track(x, m, c, target, k, ARGMAX: tl.constexpr):
    if ARGMAX:
        k = tl.where(x > m, c, k)  # strictly larger: the first index wins ties, like torch.argmax
    else:
        k = tl.where(target == c, x, k)
    return k


@triton.jit
def stream_channels(ptr, stride_c, p_mask, target, ACC: tl.constexpr, C: tl.constexpr, G: tl.constexpr,
                    BLOCK_P: tl.constexpr, ARGMAX: tl.constexpr):  # fmt: skip
    """One pass over the C channels of the BLOCK_P pixels at ``ptr``, one exp per logit. Returns
    (m, s, k): the max logit, the sum of exp(x - m) and, with ARGMAX, the argmax (int32, first
    index on ties), else the logit of class ``target``. Channels go in groups of G whose loads
    are issued together (channel_group: the bytes in flight), then the C % G left over."""
    m = tl.full([BLOCK_P], float("-inf"), ACC)
    s = tl.zeros([BLOCK_P], ACC)
    if ARGMAX:
        k = tl.zeros([BLOCK_P], tl.int32)
    else:
        k = tl.zeros([BLOCK_P], ACC)
    for c0 in range(0, C - C % G, G):
        xs = ()
        for g in tl.static_range(G):
            xs = xs + (tl.load(ptr + tl.cast(c0 + g, tl.int64) * stride_c, mask=p_mask, other=0.0),)
        for g in tl.static_range(G):
            x = xs[g].to(ACC)
            k = _track(x, m, c0 + g, target, k, ARGMAX)
            m, s = online_softmax_step(x, m, s)
    for c in tl.static_range(C - C % G, C):
        x = tl.load(ptr + c * tl.cast(stride_c, tl.int64), mask=p_mask, other=0.0).to(ACC)
        k = _track(x, m, c, target, k, ARGMAX)
        m, s = online_softmax_step(x, m, s)
    return m, s, k


# (device, stream) -> int32 buffer of zeros; see zeroed_workspace.
_WORKSPACES: dict = {}


def _capturing(device: torch.device) -> bool:
    """True while the current stream of ``device`` is being captured into a CUDA graph."""
    return device.type == "cuda" and torch.cuda.is_current_stream_capturing()


def zeroed_workspace(device: torch.device, numel: int) -> torch.Tensor:
    """An int32 buffer of at least ``numel`` zeros for counters and arrival tickets, kept per
    (device, stream). Every kernel that uses it leaves it zeroed (its last-arriving program
    resets what the launch used), so a call needs no zero-fill launch: only the first call, or
    one that needs a larger buffer, allocates. Per stream, because two launches running at once
    on different streams would share the counters.

    Under CUDA graph capture (``torch.cuda.graph``, ``torch.compile(mode="reduce-overhead")``)
    each call gets a fresh buffer that is not kept: its zero fill is only recorded there, so a
    cached one would hold garbage for the next eager call and belong to the graph's memory pool.
    The fill becomes part of the graph, so every replay starts from zeros."""
    if _capturing(device):
        return torch.zeros(max(numel, 64), dtype=torch.int32, device=device)
    stream = torch.cuda.current_stream(device).cuda_stream if device.type == "cuda" else 0
    key = (device, stream)
    buf = _WORKSPACES.get(key)
    if buf is None or buf.numel() < numel:
        buf = _WORKSPACES[key] = torch.zeros(max(numel, 64), dtype=torch.int32, device=device)
    return buf


def reset_workspaces() -> None:
    """Zeroes every cached workspace. For tests: a kernel that raises midway under the interpreter
    leaves its counters behind, and the next launch sharing them would take the wrong roles."""
    for buf in _WORKSPACES.values():
        buf.zero_()
