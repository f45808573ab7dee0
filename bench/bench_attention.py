"""attention: MiT-B5 efficient self-attention at a 512 crop, forward / backward / forward + backward.

Shapes (B, H, N, M, D): the four MiT-B5 stages at batch 2 (training) and at batch 18 (HRDA's
sliding-window teacher: 9 detail crops of 2 images in one call). Providers: ``fastuda``
(fastuda.ops.attention), ``reference`` (eager softmax(q k^T * scale) v in the input dtype, as the
published MiT computes it, materialising the N x M matrix) and every PyTorch SDPA backend that
accepts the inputs (``sdpa-flash``, ``sdpa-efficient``, ``sdpa-cudnn``, ``sdpa-math``; a backend
with no kernel for them is skipped). ``extra_info`` gets TFLOP/s (4 B H N M D forward, 2.5x that
backward, as flash attention counts) next to the conftest's time, GB/s and peak extra memory.
``test_attention_mit_b5_encoder`` times all 52 attention calls of one MiT-B5 encoder pass.
"""

import pytest
import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

import fastuda.ops

from conftest import CUDA, DEVICE

if CUDA:
    STAGES = [(1, 16384, 256, 64), (2, 4096, 256, 64), (5, 1024, 256, 64), (8, 256, 256, 64)]  # (H, N, M, D)
    BATCHES = [2, 18]
    DTYPES = [torch.bfloat16, torch.float16]
else:  # CPU: the same structure at toy sizes (this measures the CPU reference path, not the kernels)
    STAGES = [(1, 1024, 16, 64), (8, 64, 16, 64)]
    BATCHES = [2]
    DTYPES = [torch.float32]
SHAPES = [(B, *stage) for B in BATCHES for stage in STAGES]
DEPTHS = [3, 6, 40, 3]  # MiT-B5 blocks per stage

SDPA_BACKENDS = {
    "sdpa-flash": SDPBackend.FLASH_ATTENTION,
    "sdpa-efficient": SDPBackend.EFFICIENT_ATTENTION,
    "sdpa-cudnn": SDPBackend.CUDNN_ATTENTION,
    "sdpa-math": SDPBackend.MATH,
}
PROVIDERS = ["fastuda", "reference", *SDPA_BACKENDS]
MODE_FLOPS = {"forward": 1.0, "backward": 2.5, "full": 3.5}  # x 4 B H N M D


def eager_attention(q, k, v):
    """The published MiT attention: softmax(q k^T * scale) v in the input dtype."""
    attn = (q @ k.transpose(-2, -1)) * q.shape[-1] ** -0.5  # (B, H, N, M)
    return attn.softmax(dim=-1) @ v


def attention_fn(provider):
    """(q, k, v) -> out for a provider; pytest.skip when an SDPA backend has no kernel here."""
    if provider == "fastuda":
        return fastuda.ops.attention
    if provider == "reference":
        return eager_attention
    backend = SDPA_BACKENDS[provider]

    def fn(q, k, v):
        with sdpa_kernel(backend):
            return F.scaled_dot_product_attention(q, k, v)

    return fn


def make_inputs(shape, dtype, requires_grad):
    """(q, k, v, leaves): q, k, v as MiT builds them, views of the (B, N, C) q and (B, M, 2C) kv
    projections (the leaves, which receive the gradients)."""
    B, H, N, M, D = shape
    q_proj = torch.randn(B, N, H * D, device=DEVICE, dtype=dtype).requires_grad_(requires_grad)
    kv_proj = torch.randn(B, M, 2 * H * D, device=DEVICE, dtype=dtype).requires_grad_(requires_grad)
    q = q_proj.view(B, N, H, D).transpose(1, 2)  # (B, H, N, D)
    kv = kv_proj.view(B, M, 2, H, D).permute(2, 0, 3, 1, 4)  # (2, B, H, M, D)
    return q, kv[0], kv[1], (q_proj, kv_proj)


def setup(shape, provider, mode, dtype):
    """Returns (fn, bytes moved at least once, flops). ``mode``: "forward", "backward" or "full"."""
    B, H, N, M, D = shape
    attn = attention_fn(provider)
    elem = torch.finfo(dtype).bits // 8
    q_bytes, kv_bytes = B * H * N * D * elem, 2 * B * H * M * D * elem
    flops = 4 * B * H * N * M * D * MODE_FLOPS[mode]
    q, k, v, leaves = make_inputs(shape, dtype, requires_grad=mode != "forward")
    try:
        out = attn(q, k, v)
    except RuntimeError as e:
        message = str(e).lower()  # wording varies across torch versions
        if "no available kernel" in message or "no viable backend" in message:
            pytest.skip(f"{provider}: no kernel for {dtype} on {DEVICE}")
        raise
    grad_out = torch.randn_like(out)

    def zero_grads():
        for x in leaves:
            x.grad = None

    if mode == "forward":

        def forward():
            with torch.no_grad():
                return attn(q, k, v)

        return forward, q_bytes * 2 + kv_bytes, flops
    if mode == "backward":

        def backward():
            zero_grads()
            out.backward(grad_out, retain_graph=True)

        # reads q, k, v, out, dO; writes dq, dk, dv
        return backward, 4 * q_bytes + 2 * kv_bytes, flops

    def full():
        zero_grads()
        attn(q, k, v).backward(grad_out)

    return full, 5 * q_bytes + 3 * kv_bytes, flops


def record_tflops(benchmark, flops):
    if benchmark.disabled:
        return
    seconds = benchmark.extra_info.get("event_ms", benchmark.stats.stats.median * 1e3) / 1e3
    benchmark.extra_info["flops"] = flops
    benchmark.extra_info["TFLOP/s"] = float(f"{flops / seconds / 1e12:.4g}")


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("mode", list(MODE_FLOPS))
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_attention(benchmark, measure, shape, dtype, mode, provider):
    benchmark.group = f"attention {mode} {'x'.join(map(str, shape))} {str(dtype).removeprefix('torch.')}"
    fn, nbytes, flops = setup(shape, provider, mode, dtype)
    measure(fn, nbytes, provider=provider, mode=mode)
    record_tflops(benchmark, flops)


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("dtype", DTYPES[:1], ids=str)
def test_attention_mit_b5_encoder(benchmark, measure, dtype, provider):
    """Forward + backward of every attention call of one MiT-B5 encoder pass at batch 2 (52 calls;
    stage 4 alone launches few programs, so single-call timings flatter or hide it)."""
    benchmark.group = f"attention mit-b5 encoder full {str(dtype).removeprefix('torch.')}"
    calls, total_bytes, total_flops = [], 0, 0
    for stage, depth in zip(STAGES, DEPTHS):
        fn, nbytes, flops = setup((BATCHES[0], *stage), provider, "full", dtype)
        calls += [fn] * (depth if CUDA else 1)  # CPU: one block per stage
        total_bytes += nbytes * (depth if CUDA else 1)
        total_flops += flops * (depth if CUDA else 1)

    def encoder():
        for fn in calls:
            fn()

    measure(encoder, total_bytes, provider=provider, mode="full", rounds=10 if CUDA else 2)
    record_tflops(benchmark, total_flops)
