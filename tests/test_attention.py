"""fastuda.ops.attention and fastuda.nn.EfficientSelfAttention: reference vs PyTorch SDPA, Triton vs
reference (forward and backward, both softmax paths, both backward paths), gradcheck, opcheck,
torch.compile, strided views, input validation, the MiT module against the published forward."""

import pytest
import torch
import torch.nn.functional as F

import fastuda.ops as ops
from fastuda.nn import EfficientSelfAttention
from fastuda.ops import reference

from _util import HOPPER_SHARED_MEMORY, check_sm90_records, compile_for_sm90

# (B, H, N, M, D): odd query / key counts (MiT-B5 at a 512 crop has M = 256 and N from 256 to 16384),
# a single key, every MiT head count and both MiT head dims.
SHAPES = [(2, 1, 37, 5, 32), (1, 2, 300, 1, 64), (2, 5, 19, 23, 32), (1, 8, 16, 40, 64)]


def shape_id(shape):
    return "x".join(map(str, shape))


def make_qkv(shape, dtype=torch.float32, device="cpu", layout="contiguous"):
    """Fresh random q (B, H, N, D), k and v (B, H, M, D).

    layout "kv_views": k and v are views of one (B, M, 2 * H * D) projection, q a view of
    (B, N, H * D), as MiT builds them; "transposed": stored (B, H, D, L) and transposed back.
    """
    B, H, N, M, D = shape
    if layout == "kv_views":
        q = torch.randn(B, N, H * D, device=device).to(dtype).reshape(B, N, H, D).permute(0, 2, 1, 3)  # (B, H, N, D)
        kv = torch.randn(B, M, 2 * H * D, device=device).to(dtype)
        kv = kv.reshape(B, M, 2, H, D).permute(2, 0, 3, 1, 4)  # (2, B, H, M, D)
        return q, kv[0], kv[1]
    q, k, v = (torch.randn(B, H, L, D, device=device).to(dtype) for L in (N, M, M))
    if layout == "transposed":
        q, k, v = (x.transpose(2, 3).contiguous().transpose(2, 3) for x in (q, k, v))
    return q, k, v


def leaf(*xs):
    return [x.detach().clone().requires_grad_() for x in xs]


def run_with_grads(fn, q, k, v, grad_out):
    """(out, dq, dk, dv) of fn(q, k, v) for the upstream gradient grad_out."""
    q, k, v = leaf(q, k, v)
    out = fn(q, k, v)
    out.backward(grad_out)
    return out.detach(), q.grad, k.grad, v.grad


def sdpa(q, k, v, scale=None):
    return F.scaled_dot_product_attention(q, k, v, scale=scale)


# ----------------------------------------------------------------------------- tier 1: CPU


@pytest.mark.parametrize("shape", SHAPES, ids=shape_id)
def test_reference_matches_sdpa(shape):
    q, k, v = make_qkv(shape, torch.float64)
    scale = 0.3
    grad_out = torch.randn(q.shape, dtype=torch.float64)
    want = run_with_grads(lambda q, k, v: sdpa(q, k, v, scale), q, k, v, grad_out)
    got = run_with_grads(lambda q, k, v: reference.attention(q, k, v, scale), q, k, v, grad_out)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w)
    out, lse = reference.attention_forward(q, k, v, scale)
    torch.testing.assert_close(out, want[0])
    torch.testing.assert_close(lse, torch.logsumexp(q @ k.transpose(-1, -2) * scale, dim=-1))
    explicit = reference.attention_backward(grad_out, q, k, v, out, lse, scale)
    for g, w in zip(explicit, want[1:]):
        torch.testing.assert_close(g, w)


@pytest.mark.parametrize("shape", [(1, 2, 7, 3, 4), (2, 1, 5, 1, 3)], ids=shape_id)
def test_gradcheck_float64(shape):
    """Finite differences through the reference (autograd) and through the op (its own backward
    formulas, reference.attention_backward on CPU)."""
    q, k, v = leaf(*make_qkv(shape, torch.float64))
    assert torch.autograd.gradcheck(lambda q, k, v: reference.attention(q, k, v, 0.7), (q, k, v))
    assert torch.autograd.gradcheck(lambda q, k, v: ops.attention(q, k, v, 0.7), (q, k, v))


@pytest.mark.parametrize("layout", ["kv_views", "transposed"])
def test_op_matches_sdpa_on_strided_inputs(layout):
    q, k, v = make_qkv((2, 2, 21, 6, 32), layout=layout)
    assert not k.is_contiguous()
    grad_out = torch.randn(q.shape).transpose(2, 3).contiguous().transpose(2, 3)  # strided too
    want = run_with_grads(sdpa, q, k, v, grad_out)
    got = run_with_grads(ops.attention, q, k, v, grad_out)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w)


def test_output_layout_and_saved_state():
    """out is (B, H, N, D) stored as (B, N, H, D), so MiT's transpose + reshape is a view; the
    backward keeps no N x M tensor."""
    B, H, N, M, D = 2, 3, 11, 4, 16
    q, k, v = leaf(*make_qkv((B, H, N, M, D)))
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.shape) or t, lambda t: t):
        out = ops.attention(q, k, v)
    assert out.shape == (B, H, N, D) and out.transpose(1, 2).is_contiguous()
    assert out.transpose(1, 2).reshape(B, N, H * D).data_ptr() == out.data_ptr()
    assert all(s[-1] != M or len(s) != 4 or s[-2] != N for s in saved), saved
    assert torch.Size((B, H, N)) in saved  # the log-sum-exp
    out.sum().backward()
    assert q.grad.shape == q.shape and k.grad.shape == k.shape and v.grad.shape == v.shape


def test_default_scale_and_partial_grads():
    q, k, v = make_qkv((1, 2, 9, 4, 32))
    torch.testing.assert_close(ops.attention(q, k, v), sdpa(q, k, v))
    k.requires_grad_()
    ops.attention(q, k, v, scale=2.0).sum().backward()
    assert k.grad is not None and q.grad is None and v.grad is None


def test_low_precision_cpu_path():
    """float16 / bfloat16 on CPU (reference path, fp32 math): output in the input dtype."""
    q, k, v = make_qkv((2, 2, 13, 5, 32))
    want = sdpa(q, k, v)
    for dtype in (torch.float16, torch.bfloat16):
        got = ops.attention(q.to(dtype), k.to(dtype), v.to(dtype))
        assert got.dtype == dtype
        torch.testing.assert_close(got.float(), want, atol=2e-2, rtol=2e-2)


def test_empty_batch():
    q, k, v = make_qkv((0, 2, 5, 3, 8))
    assert ops.attention(q, k, v).shape == (0, 2, 5, 8)


def test_opcheck():
    for layout, dtype in [("contiguous", torch.float32), ("kv_views", torch.float32), ("transposed", torch.float16)]:
        q, k, v = leaf(*make_qkv((2, 2, 9, 5, 16), dtype, layout=layout))
        torch.library.opcheck(torch.ops.fastuda.attention.default, (q, k, v, 0.25))
    q, k, v = make_qkv((2, 2, 9, 5, 16), layout="kv_views")
    out, lse = torch.ops.fastuda.attention(q, k, v, 0.25)
    grad_out = torch.randn(q.shape).transpose(2, 3).contiguous().transpose(2, 3)
    torch.library.opcheck(torch.ops.fastuda.attention_backward.default, (grad_out, q, k, v, out, lse, 0.25))


def test_compile_fullgraph_with_backward():
    compiled = torch.compile(lambda q, k, v: ops.attention(q, k, v) * 2, fullgraph=True, dynamic=True)
    for shape in [(2, 2, 19, 7, 32), (1, 2, 33, 4, 32)]:
        q, k, v = make_qkv(shape, layout="kv_views")
        grad_out = torch.randn(q.shape)
        got = run_with_grads(compiled, q, k, v, grad_out)
        want = run_with_grads(lambda q, k, v: sdpa(q, k, v) * 2, q, k, v, grad_out)
        for g, w in zip(got, want):
            torch.testing.assert_close(g, w)


def _qkv(**override):
    args = dict(q=torch.randn(2, 3, 7, 16), k=torch.randn(2, 3, 5, 16), v=torch.randn(2, 3, 5, 16))
    args.update(override)
    return args


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (_qkv(q=torch.randn(3, 7, 16)), ValueError, r"q must have shape \(B, H, N, D\) \(4 dims\)"),
        (_qkv(q=[1.0]), TypeError, "q must be a torch.Tensor"),
        (_qkv(k=torch.randn(2, 3, 5, 16).long()), TypeError, "k must have dtype in"),
        (_qkv(v=torch.randn(2, 3, 5, 16).half()), TypeError, r"v must have the same dtype as q \(torch.float32\)"),
        (_qkv(k=torch.randn(2, 3, 5, 8)), ValueError, r"k must have shape \(B, H, M, D\) = \(2, 3, M, 16\)"),
        (_qkv(k=torch.randn(2, 2, 5, 16)), ValueError, "to match q"),
        (_qkv(v=torch.randn(2, 3, 6, 16)), ValueError, r"v must have the same shape as k \(2, 3, 5, 16\)"),
        (_qkv(q=torch.randn(2, 3, 0, 16)), ValueError, r"N, M >= 1"),
        (_qkv(k=torch.randn(2, 3, 0, 16), v=torch.randn(2, 3, 0, 16)), ValueError, r"N, M >= 1"),
        (_qkv(q=torch.randn(1, 1, 4, 160), k=torch.randn(1, 1, 4, 160), v=torch.randn(1, 1, 4, 160)), ValueError, r"D must be in \[1, 128\]"),
        (_qkv(k=torch.randn(2, 3, 5, 16, device="meta")), ValueError, "k must be on the same device as q"),
        (_qkv(scale="0.5"), TypeError, "scale must be a float or None"),
        (_qkv(scale=True), TypeError, "scale must be a float or None"),
        (_qkv(scale=float("inf")), ValueError, "scale must be finite"),
    ],
)
def test_bad_inputs(kwargs, error, match):
    with pytest.raises(error, match=match):
        ops.attention(**kwargs)


HOPPER_SMS = 132
HOPPER_REGISTERS = 65536  # 32-bit registers per SM, allocated per warp in units of 8 per thread


def _mma_work(record):
    """(MMA FLOPs issued, FLOPs needed) per step of a program's loop: the wgmma instructions of the
    PTX times the warpgroups that issue them, against the products' true sizes."""
    c = record["config"]
    issued = sum(n * 2 * m * nn * k for shape, n in record["wgmma_shapes"].items() for m, nn, k in [_mnk(shape)])
    issued *= record["num_warps"] // 4
    if record["kernel"] == "_attention_fwd_kernel":
        return issued, 2 * 2 * c["BLOCK_N"] * c["BLOCK_M"] * c["RESIDENT"] * c["BLOCK_D"]  # q k^T and P v
    return issued, 5 * 2 * c["BLOCK_M"] * c["BLOCK_N"] * c["BLOCK_D"]  # S, dP, dv, dk, dq


def _mnk(shape):
    import re

    return [int(x) for x in re.fullmatch(r"m(\d+)n(\d+)k(\d+)", shape).groups()]


def check_attention_records(records, limit=1.05):
    """The compiled MiT kernels do each piece of work once: every 16-bit dot on wgmma with no
    warpgroup duplicating another's rows, MMA FLOPs issued and exps issued within ``limit`` of
    what is needed, no spills, and registers / shared memory that let the forward's persistent
    grid run its programs at once."""
    check_sm90_records(records)
    for r in records:
        c, threads = r["config"], 32 * r["num_warps"]
        where = f"{r['kernel']} {c} warps={r['num_warps']}"
        for d in r["dots"]:
            if d["bits"] == 16:
                assert d["kind"] == "wgmma", f"{where}: a 16-bit {d['shape']} dot compiled to {d['kind']}"
            assert d["duplication"] == 1, (
                f"{where}: the {d['shape']} dot's warps (warpsPerCTA={d['warps']}) cover the tile {d['duplication']:g} times"
            )
        if not r["dots"] or any(d["bits"] != 16 for d in r["dots"]):
            continue  # fp32 / fp64 run on FMA units: not the fast path
        if r["kernel"] == "_attention_fwd_kernel" and c["RESIDENT"]:
            scores = c["BLOCK_N"] * c["BLOCK_M"] * c["RESIDENT"]
        elif r["kernel"] == "_attention_bwd_kernel" and (c["FUSED_DQ"] or c.get("PAIR")):
            scores = c["BLOCK_M"] * c["BLOCK_N"]
        else:
            continue  # the streaming paths (M > 256) are not work-checked
        exps = r["ex2_per_thread"] * threads
        assert exps <= limit * scores, f"{where}: {exps} exps per {scores} scores"
        issued, needed = _mma_work(r)
        assert needed <= issued <= limit * needed, f"{where}: {issued} MMA FLOPs issued for {needed}"
        ctas = -(-r["grid"][0] // HOPPER_SMS) if r["kernel"] == "_attention_fwd_kernel" else 1
        registers = -(-r["registers"] // 8) * 8 * threads
        assert registers * ctas <= HOPPER_REGISTERS, f"{where}: {ctas} programs per SM need {registers * ctas} registers"
        assert (r["shared"] + 1024) * ctas <= HOPPER_SHARED_MEMORY, f"{where}: {ctas} programs per SM overflow shared memory"


@pytest.mark.skipif(torch.cuda.is_available(), reason="the CUDA tier compiles and runs the kernels for real")
def test_pair_policy_compiles_for_sm90_without_gpu(monkeypatch):
    """The "pair" backward (a prototype) at the MiT configs: each piece of work once (five
    products per step, its dq partial included), no spills, one 8-warp program per SM."""
    monkeypatch.setenv("FASTUDA_ATTENTION_BWD_POLICY", "pair")
    records = [r for r in compile_for_sm90("mit") if r["kernel"] == "_attention_bwd_kernel"]
    check_attention_records(records)
    pair = [r for r in records if r["config"]["PAIR"]]
    assert {r["config"]["BLOCK_D"] for r in pair} == {32, 64}
    assert all(r["config"]["BLOCK_M"] == 128 and r["num_warps"] == 8 for r in pair)


@pytest.mark.skipif(torch.cuda.is_available(), reason="the CUDA tier compiles and runs the kernels for real")
def test_kernels_compile_for_sm90_without_gpu():
    """The MiT-B5 configs (bf16, the four stages at batch 2 and 18, D 64 and 32, M = 256; and the
    general path) compile for Hopper and do each piece of work once (check_attention_records).
    The interpreter cannot check any of this. The forward's grid is one wave of the persistent
    programs, or every query block when there are fewer."""
    records = compile_for_sm90("mit")
    check_attention_records(records)
    assert {r["kernel"] for r in records} >= {"_attention_fwd_kernel", "_attention_bwd_kernel"}
    from fastuda.kernels.attention import fwd_config

    cfg = fwd_config(256, 64, torch.bfloat16)
    forward = [r for r in records if r["kernel"] == "_attention_fwd_kernel" and r["config"]["RESIDENT"]]
    grids = sorted({r["grid"][0] for r in forward if r["config"]["BLOCK_D"] == 64})
    # B * H * N / 64 query blocks at the stages (2 x (1, 2, 5, 8) heads; 16384 .. 256 queries),
    # capped at one wave: 132 SMs x ctas_per_sm.
    assert grids == [64, 160, 256, HOPPER_SMS * cfg.ctas_per_sm], grids


def test_duplicated_warpgroups_and_mma_sync_are_caught():
    """The checker fails on what the previous forward and backward compiled to (TTGIR lines of
    the 64 x 256 score tile over 8 warps, and the dq product on mma.sync)."""
    from _sm90_compile import dots

    old = """#mma = #ttg.nvidia_mma<{versionMajor = 3, versionMinor = 0, warpsPerCTA = [8, 1], instrShape = [16, 128, 16]}>
#mma1 = #ttg.nvidia_mma<{versionMajor = 2, versionMinor = 0, warpsPerCTA = [1, 8], instrShape = [16, 8]}>
      %s = ttng.warp_group_dot %q, %k, %c {isAsync = true} : !ttg.memdesc<64x64xbf16, #shared1, #smem, mutable> * !ttg.memdesc<64x256xbf16, #shared, #smem> -> tensor<64x256xf32, #mma>
      %dq = tt.dot %a, %b, %c : tensor<32x256xbf16, #ttg.dot_op<{opIdx = 0, parent = #mma1, kWidth = 2}>> * tensor<256x64xbf16, #ttg.dot_op<{opIdx = 1, parent = #mma1, kWidth = 2}>> -> tensor<32x64xf32, #mma1>
"""
    found = dots(old)
    assert [(d["kind"], d["duplication"], d["bits"]) for d in found] == [("wgmma", 2.0, 16), ("mma.sync", 1.0, 16)]
    record = dict(kernel="_attention_fwd_kernel", config={}, num_warps=8, stack=0, shared=0, dots=found)
    with pytest.raises(AssertionError, match="cover the tile 2 times"):
        check_attention_records([record])
    with pytest.raises(AssertionError, match="compiled to mma.sync"):
        check_attention_records([dict(record, dots=found[1:])])


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.is_available(), reason="the CUDA tier compiles and runs the kernels for real")
def test_kernels_compile_for_sm90_every_table_entry():
    check_attention_records(compile_for_sm90("all"))


def test_backward_splits_are_chosen_for_time():
    """The backward's query splits come from its time model (split_plan), not from a cap on the
    partial sums' bytes: at MiT-B5 stage 1, B = 2 (one head, 16384 queries) the key programs are
    split until the GPU is busy; at stage 4 (256 queries) not at all. More splits than the plan's
    must not model faster, and the "budget" policy (the pre-issue-18 choice, kept for the audit)
    still gives its 3 splits."""
    from fastuda.kernels.attention import bwd_config, num_splits, split_plan

    cfg = bwd_config(256, 64, torch.bfloat16)
    assert (cfg.block_m, cfg.block_n, cfg.num_warps) == (64, 64, 4)
    plan1 = split_plan(2, 1, 16384, 256, 64, torch.bfloat16, cfg, HOPPER_SMS)
    s1, t1 = plan1.splits, plan1.seconds
    s4 = split_plan(2, 8, 256, 256, 64, torch.bfloat16, cfg, HOPPER_SMS).splits
    assert s1 > 3 and s4 == 1, (s1, s4)  # more than the budget policy's 3
    for more in (2 * s1, 4 * s1):
        worse = split_plan(2, 1, 16384, 256, 64, torch.bfloat16, cfg, HOPPER_SMS, candidates=[more])
        assert worse.seconds >= t1, (more, worse, t1)
    legacy = bwd_config(256, 64, torch.bfloat16, policy="budget")
    assert (legacy.block_m, legacy.block_n, legacy.num_warps) == (256, 32, 8)
    assert num_splits(2, 1, 16384, 256, 64, torch.bfloat16, 32, 1, HOPPER_SMS) == 3


def test_kernels_reject_a_head_beyond_32_bit_offsets():
    from fastuda.kernels.attention import attention_bwd, attention_fwd

    q = torch.empty_strided((1, 1, 3, 64), (0, 0, 2**30, 1), device="meta")  # rows 2**30 apart
    k = v = torch.empty((1, 1, 5, 64), device="meta")
    with pytest.raises(ValueError, match=r"q spans 2147483711 elements within one \(batch, head\)"):
        attention_fwd(q, k, v, 0.1)
    out, lse = torch.empty((1, 1, 3, 64), device="meta"), torch.empty((1, 1, 3), device="meta")
    with pytest.raises(ValueError, match="q spans"):
        attention_bwd(out, q, k, v, out, lse, 0.1)


def test_kernel_launches_run_under_the_inputs_device(monkeypatch):
    """Triton launches on the current CUDA device, not on the tensors', so the op enters q's device
    around both launches. Without a GPU this checks the wiring: the guard is built from the
    tensors' device (cuda:1) and each launcher runs inside it. That Triton then uses that device
    needs two GPUs to show."""
    import contextlib
    import importlib

    import fastuda.kernels.attention as kernels
    from fastuda.ops import _backend

    op = importlib.import_module("fastuda.ops.attention")  # the module, not the function it exports

    entered = []
    monkeypatch.setattr(torch.cuda, "device", lambda device: entered.append(device) or contextlib.nullcontext())
    with _backend.device_guard(torch.device("cpu")):
        pass
    assert entered == []  # not a CUDA tensor: no guard
    with _backend.device_guard(torch.device("cuda", 1)):
        pass
    assert entered == [torch.device("cuda", 1)]

    events = []

    @contextlib.contextmanager
    def guard(device):
        events.append(("enter", device))
        yield
        events.append("exit")

    def fwd(q, k, v, scale):
        events.append("fwd")
        out, lse = reference.attention_forward(q, k, v, scale)
        return op._empty_bnhd(q).copy_(out), lse

    def bwd(grad_out, q, k, v, out, lse, scale):
        events.append("bwd")
        grads = reference.attention_backward(grad_out, q, k, v, out, lse, scale)
        return tuple(op._empty_bnhd(x).copy_(g) for x, g in zip((q, k, v), grads))

    monkeypatch.setattr(_backend, "device_guard", guard)
    monkeypatch.setattr(op, "use_triton", lambda device: True)
    monkeypatch.setattr(kernels, "attention_fwd", fwd)
    monkeypatch.setattr(kernels, "attention_bwd", bwd)
    q, k, v = leaf(*make_qkv((1, 2, 5, 3, 8)))
    ops.attention(q, k, v).sum().backward()
    assert events == [("enter", q.device), "fwd", "exit", ("enter", q.device), "bwd", "exit"]


# ----------------------------------------------------------------------------- the MiT module


def published_forward(m: EfficientSelfAttention, x, H, W):
    """mmseg/models/backbones/mix_transformer.py ``Attention.forward`` (SegFormer, as DAFormer
    uses it), transcribed: explicit softmax(q k^T * scale) with attn_drop, then v."""
    B, N, C = x.shape
    heads = m.num_heads
    q = m.q(x).reshape(B, N, heads, C // heads).permute(0, 2, 1, 3)
    if m.sr_ratio > 1:
        x_ = x.permute(0, 2, 1).reshape(B, C, H, W)
        x_ = m.sr(x_).reshape(B, C, -1).permute(0, 2, 1)
        x_ = m.norm(x_)
        kv = m.kv(x_).reshape(B, -1, 2, heads, C // heads).permute(2, 0, 3, 1, 4)
    else:
        kv = m.kv(x).reshape(B, -1, 2, heads, C // heads).permute(2, 0, 3, 1, 4)
    k, v = kv[0], kv[1]
    attn = (q @ k.transpose(-2, -1)) * m.scale
    attn = m.attn_drop(attn.softmax(dim=-1))
    out = (attn @ v).transpose(1, 2).reshape(B, N, C)
    return m.proj_drop(m.proj(out))


def module_grads(fn, module, x):
    module.zero_grad()
    x = x.detach().clone().requires_grad_()
    out = fn(x)
    out.backward(torch.ones_like(out) + torch.linspace(0, 1, out.numel()).view_as(out))
    return out.detach(), x.grad, {n: p.grad.clone() for n, p in module.named_parameters()}


def assert_module_matches_published(m, x, H, W, **tol):
    got = module_grads(lambda x: m(x, H, W), m, x)
    want = module_grads(lambda x: published_forward(m, x, H, W), m, x)
    torch.testing.assert_close(got[0], want[0], **tol)
    torch.testing.assert_close(got[1], want[1], **tol)
    assert got[2].keys() == want[2].keys()
    for name in want[2]:
        torch.testing.assert_close(got[2][name], want[2][name], **tol, msg=lambda m: f"{name}: {m}")


@pytest.mark.parametrize("dim, heads, sr, H, W", [(64, 1, 8, 24, 16), (64, 2, 4, 12, 20), (40, 5, 2, 9, 7), (64, 8, 1, 5, 6)])
def test_module_matches_published(dim, heads, sr, H, W):
    """In float64, so any difference is semantics, not rounding."""
    m = EfficientSelfAttention(dim, num_heads=heads, qkv_bias=True, sr_ratio=sr).double()
    assert_module_matches_published(m, torch.randn(2, H * W, dim, dtype=torch.float64), H, W)
    assert_module_matches_published(m.float(), torch.randn(2, H * W, dim), H, W, rtol=1e-3, atol=1e-3)


def test_module_state_dict_keys_are_the_published_ones():
    m = EfficientSelfAttention(64, num_heads=2, qkv_bias=True, sr_ratio=4)
    published = ["q.weight", "q.bias", "kv.weight", "kv.bias", "proj.weight", "proj.bias",
                 "sr.weight", "sr.bias", "norm.weight", "norm.bias"]  # fmt: skip
    assert sorted(m.state_dict()) == sorted(published)
    assert tuple(m.state_dict()["kv.weight"].shape) == (128, 64)
    assert m.norm.eps == 1e-5
    other = EfficientSelfAttention(64, num_heads=2, qkv_bias=True, sr_ratio=4)
    other.load_state_dict(m.state_dict(), strict=True)
    assert sorted(EfficientSelfAttention(32, num_heads=1).state_dict()) == ["kv.weight", "proj.bias", "proj.weight", "q.weight"]


def test_module_options():
    x = torch.randn(2, 6 * 5, 32, dtype=torch.float64)
    m = EfficientSelfAttention(32, num_heads=2, qk_scale=0.1, sr_ratio=2).double()
    assert m.scale == 0.1
    assert_module_matches_published(m, x, 6, 5)
    assert EfficientSelfAttention(32, num_heads=2, qk_scale=0.0).scale == 16**-0.5  # `qk_scale or`, as published
    with pytest.raises(ValueError, match=r"dim \(30\) must be divisible by num_heads \(4\)"):
        EfficientSelfAttention(30, num_heads=4)


def test_module_attn_drop_takes_the_reference_path():
    m = EfficientSelfAttention(32, num_heads=2, attn_drop=0.5, sr_ratio=2).train()
    x = torch.randn(2, 36, 32)
    torch.manual_seed(0)
    got = m(x, 6, 6)
    torch.manual_seed(0)
    want = published_forward(m, x, 6, 6)
    torch.testing.assert_close(got, want)
    m.eval()  # dropout is the identity in eval: the fused path, same function
    torch.testing.assert_close(m(x, 6, 6), published_forward(m, x, 6, 6))


# ----------------------------------------------------------------------------- tier 2: interpreter


def _poisoned(B, H, L, D, dtype):
    from fastuda.kernels.attention import empty_bnhd

    return empty_bnhd(B, H, L, D, dtype, "cpu").fill_(float("nan"))


def _triton_fwd_bwd(q, k, v, grad_out, scale, block_m=None, splits=None):
    """Both launchers with NaN-poisoned outputs (every element must be written)."""
    from fastuda.kernels.attention import attention_bwd, attention_fwd

    B, H, N, D = q.shape
    M = k.shape[2]
    lse = torch.full((B, H, N), float("nan"), dtype=torch.float64 if q.dtype == torch.float64 else torch.float32)
    out, lse = attention_fwd(q, k, v, scale, out=_poisoned(B, H, N, D, q.dtype), lse=lse, block_m=block_m, splits=splits)
    grads = attention_bwd(
        grad_out, q, k, v, out, lse, scale, block_m=block_m, splits=splits,
        dq=_poisoned(B, H, N, D, q.dtype), dk=_poisoned(B, H, M, D, q.dtype), dv=_poisoned(B, H, M, D, q.dtype),
    )  # fmt: skip
    return (out, lse, *grads)


def _exact(q, k, v, grad_out, scale):
    """float64 oracle: (out, lse, dq, dk, dv)."""
    q, k, v, g = (x.double() for x in (q, k, v, grad_out))
    out, dq, dk, dv = run_with_grads(lambda q, k, v: reference.attention(q, k, v, scale), q, k, v, g)
    lse = torch.logsumexp(q @ k.transpose(-1, -2) * scale, dim=-1)
    return out, lse, dq, dk, dv


def _assert_within_torch_error(got, exact, torch_result, atol, names=("out", "lse", "dq", "dk", "dv")):
    """|got - exact| <= 2 |torch - exact| + atol, elementwise maximum over each tensor: the
    flash-attention test rule, with PyTorch's own error in the same dtype as the yardstick."""
    for name, g, e, t in zip(names, got, exact, torch_result):
        assert torch.isfinite(g).all(), f"{name}: non-finite (unwritten?) elements"
        err = (g.double() - e).abs().max().item()
        torch_err = (t.double() - e).abs().max().item()
        assert err <= 2 * torch_err + atol, f"{name}: error {err:.3g} vs PyTorch's {torch_err:.3g} (+{atol})"


@pytest.mark.interpreter
@pytest.mark.parametrize("shape", SHAPES, ids=shape_id)
@pytest.mark.parametrize("path", ["single_pass", "online"])
def test_triton_matches_reference_float32(shape, path):
    """All keys in one tile (resident forward, fused-dq backward) and block_m = 16 < M (two
    resident key tiles at M = 23, the streaming online softmax at M = 40; separate dq kernel),
    each with one and several programs / query chunks per (b, h); several chunks take the
    backward's in-kernel reduction of the partial dk, dv."""
    from fastuda.kernels.attention import _pow2

    M = shape[3]
    if path == "online" and M <= 16:
        pytest.skip("M fits one 16-key tile: there is no online path to take")
    block_m = _pow2(M) if path == "single_pass" else 16
    q, k, v = make_qkv(shape)
    grad_out = torch.randn(q.shape)
    scale = shape[-1] ** -0.5
    want = _exact(q, k, v, grad_out, scale)
    for splits in (None, 3):  # None: the launchers' choice (8 forward programs here)
        got = _triton_fwd_bwd(q, k, v, grad_out, scale, block_m=block_m, splits=splits)
        assert got[0].dtype == torch.float32 and got[1].dtype == torch.float32
        for name, g, w in zip(("out", "lse", "dq", "dk", "dv"), got, want):
            torch.testing.assert_close(g.double(), w, rtol=1e-5, atol=2e-5, msg=lambda m: f"{name} splits={splits}: {m}")


def _float16_case(shape):
    """Fresh float16 (q, k, v, grad_out, scale), the float64 oracle (out, lse, dq, dk, dv), and
    PyTorch's eager float16 result in the same order (the yardstick of its own error)."""
    q, k, v = make_qkv(shape, torch.float16)
    grad_out = torch.randn(q.shape).half()
    scale = shape[-1] ** -0.5
    eager = run_with_grads(lambda q, k, v: torch.softmax(q @ k.transpose(-1, -2) * scale, -1) @ v, q, k, v, grad_out)
    eager_lse = torch.logsumexp((q @ k.transpose(-1, -2) * scale).float(), dim=-1)
    return (q, k, v, grad_out, scale), _exact(q, k, v, grad_out, scale), (eager[0], eager_lse, *eager[1:])


@pytest.mark.interpreter
@pytest.mark.parametrize("shape", [(2, 1, 37, 5, 32), (1, 2, 300, 1, 64), (1, 5, 33, 40, 64), (1, 5, 100, 32, 64)], ids=shape_id)
def test_triton_float16_within_torch_error(shape):
    """float16 (the interpreter has no bfloat16 math): error vs a float64 oracle within 2x that of
    PyTorch's eager float16 attention and its gradients. With block_m = 16, M = 32 takes the
    two-tile resident forward; its 10 query blocks over the interpreter's 8 persistent programs
    make a program cross heads."""
    inputs, exact, eager = _float16_case(shape)
    for block_m in (None, 16):
        got = _triton_fwd_bwd(*inputs, block_m=block_m)
        assert all(g.dtype == torch.float16 for g in got[:1] + got[2:])
        _assert_within_torch_error(got, exact, eager, atol=2e-3)


@pytest.mark.interpreter
@pytest.mark.parametrize("splits", [3, 5, 6])
def test_triton_backward_split_sums(splits):
    """The key programs' query splits summed in the kernel: one level (3 splits) and two halves
    (5: 3 + 2, 6: 3 + 3, each half summed by its last arriver, then the halves), with separate
    query programs (M = 100: two key blocks, a masked one) and fused dq (M = 40). The result is
    within PyTorch's float16 error, and the split counters are zero again afterwards (the
    workspace is shared by every call on the stream)."""
    from fastuda.kernels._pixels import zeroed_workspace

    for shape in [(1, 2, 300, 100, 64), (2, 1, 330, 40, 64)]:
        inputs, exact, eager = _float16_case(shape)
        got = _triton_fwd_bwd(*inputs, splits=splits)
        _assert_within_torch_error(got, exact, eager, atol=2e-3)
        assert not zeroed_workspace(torch.device("cpu"), 1).any(), "a split counter was left non-zero"


@pytest.mark.interpreter
@pytest.mark.parametrize("splits", [3, 6])
def test_triton_backward_split_sum_whoever_arrives_last(splits, monkeypatch):
    """The last arriver adds its own partial from its registers, in its split's place (its trip of
    the pipelined loop over the partials): the sum must not depend on which split that is. The interpreter runs programs in order (the last
    split arrives last), so a second call starts with the counters one short of done: split 0
    arrives "last" (of its half, and of the halves at 6 splits) and sums the others' partials
    that the first call left in the same scratch buffer (same inputs: same values). dk and dv
    must match the first call's bit for bit."""
    from fastuda.kernels._pixels import zeroed_workspace
    from fastuda.kernels.attention import TWO_LEVEL_SPLITS

    shape = (1, 1, 300, 100, 64)  # 2 key blocks (a masked one), separate query programs
    q, k, v = make_qkv(shape)  # float32: dk and dv keep the fp32 sums' last bits
    grad_out, scale = torch.randn(q.shape), 64**-0.5
    scratch = {}
    empty = torch.empty

    def keep_partials(size, *args, **kwargs):  # the (programs, 2, BLOCK_M, BLOCK_D) fp32 partials
        if isinstance(size, tuple) and len(size) == 4 and size[1] == 2 and kwargs.get("dtype") == torch.float32:
            return scratch.setdefault(size, empty(size, *args, **kwargs))
        return empty(size, *args, **kwargs)

    monkeypatch.setattr(torch, "empty", keep_partials)
    first = _triton_fwd_bwd(q, k, v, grad_out, scale, splits=splits)
    assert len(scratch) == 1
    count = zeroed_workspace(torch.device("cpu"), 3 * 2)
    two_level = splits >= TWO_LEVEL_SPLITS
    half = (splits + 1) // 2 if two_level else splits
    try:
        for key_block in range(2):
            count[3 * key_block] = half - 1  # split 0's group (one level: every split)
            if two_level:
                count[3 * key_block + 1] = 0
                count[3 * key_block + 2] = 1  # the halves: split 0's half finishes second
        again = _triton_fwd_bwd(q, k, v, grad_out, scale, splits=splits)
    finally:
        count.zero_()
    for a, b in zip(first[3:], again[3:]):  # dk, dv
        assert torch.equal(a, b)


@pytest.mark.interpreter
@pytest.mark.parametrize("scratch", ["fp32", "in_dq"])
def test_triton_backward_pair_policy(scratch, monkeypatch):
    """BWD_POLICY "pair" (a prototype): two 128-key programs per query chunk, key block 1 adding
    key block 0's dq partial to its own. Within PyTorch's float16 error of the float64 oracle at
    odd N, a masked second key block (M = 200), D = 32 (the partial with queries as rows), one
    chunk (dk, dv direct) and several (one level, two levels); bitwise the same over two runs;
    the flags and tickets zero again afterwards. ``in_dq``: the partials go through dq itself
    (float16 standing in for bfloat16, which the interpreter cannot compute in)."""
    from fastuda.kernels import attention as A
    from fastuda.kernels._pixels import zeroed_workspace

    monkeypatch.setattr(A, "BWD_POLICY", "pair")
    if scratch == "in_dq":
        monkeypatch.setattr(A, "PAIR_SCRATCH_IN_DQ", (torch.bfloat16, torch.float16))
    taken = []
    pair = A._pair
    monkeypatch.setattr(A, "_pair", lambda *args: taken.append(pair(*args)) or taken[-1])
    for shape, splits in [((1, 2, 300, 200, 64), 1), ((1, 2, 300, 200, 64), 3), ((2, 1, 130, 256, 32), None), ((1, 1, 400, 256, 64), 6)]:
        inputs, exact, eager = _float16_case(shape)
        got = _triton_fwd_bwd(*inputs, splits=splits)
        _assert_within_torch_error(got, exact, eager, atol=2e-3)
        again = _triton_fwd_bwd(*inputs, splits=splits)
        for name, a, b in zip(("dq", "dk", "dv"), got[2:], again[2:]):
            assert torch.equal(a, b), f"{shape} splits={splits}: {name} differs between two runs"
        assert not zeroed_workspace(torch.device("cpu"), 1).any(), "a flag, ticket or counter was left non-zero"
    assert taken and all(taken), "the pair path was not taken"


@pytest.mark.interpreter
def test_triton_backward_pair_policy_leaves_other_shapes_alone(monkeypatch):
    """Outside its shapes (float32; M <= 128) the "pair" policy is the default path."""
    from fastuda.kernels import attention as A

    monkeypatch.setattr(A, "BWD_POLICY", "pair")
    for shape, dtype in [((1, 2, 100, 200, 64), torch.float32), ((1, 2, 100, 100, 64), torch.float16)]:
        assert not A._pair(shape[3], shape[4], dtype, A.bwd_config(shape[3], shape[4], dtype))
    q, k, v = make_qkv((1, 2, 70, 200, 64))
    grad_out = torch.randn(q.shape)
    got = _triton_fwd_bwd(q, k, v, grad_out, 64**-0.5)
    for name, g, w in zip(("out", "lse", "dq", "dk", "dv"), got, _exact(q, k, v, grad_out, 64**-0.5)):
        torch.testing.assert_close(g.double(), w, rtol=1e-5, atol=2e-5, msg=lambda m: f"{name}: {m}")


@pytest.mark.interpreter
@pytest.mark.parametrize("D", [1, 8, 20, 48, 80, 128])
def test_triton_any_head_dim(D):
    """Head dims that are not 32 / 64 (padded to a power of two >= 16 inside the kernels)."""
    shape = (1, 2, 19, 9, D)
    q, k, v = make_qkv(shape)
    grad_out = torch.randn(q.shape)
    want = _exact(q, k, v, grad_out, D**-0.5)
    for block_m in (None, 16):
        got = _triton_fwd_bwd(q, k, v, grad_out, D**-0.5, block_m=block_m, splits=2)
        for g, w in zip(got, want):
            torch.testing.assert_close(g.double(), w, rtol=1e-5, atol=2e-5)


@pytest.mark.interpreter
@pytest.mark.parametrize("layout", ["kv_views", "transposed"])
def test_triton_strided_inputs(layout, triton_cpu):
    """Through the op (Triton backend): q, k, v as MiT builds them (views of the q and kv
    projections) or transposed storage, and a strided upstream gradient."""
    q, k, v = make_qkv((2, 2, 29, 7, 32), layout=layout)
    grad_out = torch.randn(q.shape).transpose(2, 3).contiguous().transpose(2, 3)
    got = run_with_grads(ops.attention, q, k, v, grad_out)
    want = run_with_grads(sdpa, q, k, v, grad_out)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-5, atol=2e-5)


@pytest.mark.interpreter
def test_triton_gradcheck_float64(triton_cpu):
    """Finite differences through the Triton forward and backward kernels (float64 accumulation),
    both paths (all keys in one tile: single pass + fused dq; M > 32 keys: online + dq kernel).
    Full Jacobians on tiny shapes, gradcheck's fast mode (random projections) on larger ones."""
    from fastuda.kernels.attention import bwd_config, fwd_config

    for shape, fast in [((1, 1, 3, 5, 2), False), ((1, 1, 2, 65, 1), False), ((1, 2, 5, 17, 4), True), ((1, 1, 5, 70, 8), True)]:
        M, D = shape[3], shape[4]
        single = fwd_config(M, D, torch.float64).block_m >= M
        assert single == (bwd_config(M, D, torch.float64).block_m >= M) == (M <= 32)
        q, k, v = leaf(*make_qkv(shape, torch.float64))
        assert torch.autograd.gradcheck(lambda q, k, v: ops.attention(q, k, v, 0.6), (q, k, v), fast_mode=fast)


@pytest.mark.interpreter
def test_triton_opcheck_and_module(triton_cpu):
    q, k, v = leaf(*make_qkv((2, 2, 9, 5, 16), layout="kv_views"))
    torch.library.opcheck(torch.ops.fastuda.attention.default, (q, k, v, 0.25))
    m = EfficientSelfAttention(32, num_heads=2, qkv_bias=True, sr_ratio=2)
    assert_module_matches_published(m, torch.randn(2, 7 * 6, 32), 7, 6, rtol=1e-3, atol=1e-3)


# ----------------------------------------------------------------------------- tier 3: CUDA

# MiT-B5 at a 512 crop, batch 2 (stages 1-4), plus odd and out-of-table shapes.
CUDA_SHAPES = [
    (2, 1, 16384, 256, 64),
    (2, 2, 4096, 256, 64),
    (2, 5, 1024, 256, 64),
    (2, 8, 256, 256, 64),
    (2, 1, 16384, 256, 32),
    (3, 2, 37, 5, 64),
    (1, 5, 300, 1, 32),
    (2, 2, 1000, 700, 64),
    (1, 3, 257, 129, 128),
    (2, 2, 99, 33, 40),
]


@pytest.mark.cuda
@pytest.mark.parametrize("shape", CUDA_SHAPES, ids=shape_id)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
def test_cuda_within_sdpa_error(shape, dtype):
    """Error vs a float64 oracle within 2x PyTorch SDPA's own error in the same dtype (+ atol)."""
    q, k, v = make_qkv(shape, dtype, device="cuda", layout="kv_views")
    grad_out = torch.randn(q.shape, device="cuda").to(dtype)
    scale = shape[-1] ** -0.5
    exact = _exact(q, k, v, grad_out, scale)
    torch_out = run_with_grads(sdpa, q, k, v, grad_out)
    got = run_with_grads(ops.attention, q, k, v, grad_out)
    assert all(g.dtype == dtype for g in got)
    atol = 1e-5 if dtype == torch.float32 else 2e-3
    _assert_within_torch_error(got, exact[:1] + exact[2:], torch_out, atol, names=("out", "dq", "dk", "dv"))
    _, lse = torch.ops.fastuda.attention(q, k, v, scale)  # fp32 statistics whatever the dtype
    assert lse.dtype == torch.float32
    torch.testing.assert_close(lse.double(), exact[1], rtol=1e-5, atol=1e-4)


@pytest.mark.cuda
@pytest.mark.parametrize("block_m, splits", [(None, 1), (None, 7), (64, None), (64, 1)])
def test_cuda_kernel_paths(block_m, splits):
    """Every kernel path on the GPU: single-pass / online forward, fused / separate dq, direct /
    split dk dv; outputs poisoned first."""
    from fastuda.kernels.attention import attention_bwd, attention_fwd, empty_bnhd

    B, H, N, M, D = 2, 2, 1037, 256, 64
    q, k, v = make_qkv((B, H, N, M, D), torch.bfloat16, device="cuda", layout="kv_views")
    grad_out = torch.randn(q.shape, device="cuda", dtype=torch.bfloat16)
    scale = D**-0.5
    nan = lambda L: empty_bnhd(B, H, L, D, torch.bfloat16, "cuda").fill_(float("nan"))  # noqa: E731
    out, lse = attention_fwd(q, k, v, scale, out=nan(N), block_m=block_m, splits=splits)
    grads = attention_bwd(grad_out, q, k, v, out, lse, scale, dq=nan(N), dk=nan(M), dv=nan(M), block_m=block_m, splits=splits)
    exact = _exact(q, k, v, grad_out, scale)
    torch_out = run_with_grads(sdpa, q, k, v, grad_out)
    _assert_within_torch_error((out, *grads), exact[:1] + exact[2:], torch_out, 2e-3, names=("out", "dq", "dk", "dv"))


@pytest.mark.cuda
def test_cuda_backward_split_path_is_deterministic_and_graph_safe():
    """MiT-B5 stage 1 at B = 2 takes the split path (several query chunks per key block, partials
    summed by the last program to arrive): repeated runs are bit-identical whatever the arrival
    order, and a CUDA-graph capture of the backward replays to the same bits (the count buffer is
    zeroed inside the graph)."""
    from fastuda.kernels.attention import attention_bwd, attention_fwd, bwd_config, split_plan

    B, H, N, M, D = 2, 1, 16384, 256, 64
    splits = split_plan(B, H, N, M, D, torch.bfloat16, bwd_config(M, D, torch.bfloat16),
                        torch.cuda.get_device_properties(0).multi_processor_count).splits  # fmt: skip
    assert splits > 1, "stage 1 at B = 2 should split its queries"
    q, k, v = make_qkv((B, H, N, M, D), torch.bfloat16, device="cuda", layout="kv_views")
    grad_out = torch.randn(q.shape, device="cuda", dtype=torch.bfloat16)
    out, lse = attention_fwd(q, k, v, D**-0.5)
    first = attention_bwd(grad_out, q, k, v, out, lse, D**-0.5)
    for _ in range(5):
        again = attention_bwd(grad_out, q, k, v, out, lse, D**-0.5)
        for a, b in zip(first, again):
            assert torch.equal(a, b)
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        attention_bwd(grad_out, q, k, v, out, lse, D**-0.5)  # warm-up (compile) outside the capture
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        captured = attention_bwd(grad_out, q, k, v, out, lse, D**-0.5)
    for _ in range(3):
        graph.replay()
        torch.cuda.synchronize()
        for a, b in zip(first, captured):
            assert torch.equal(a, b)


def _peak_extra_bytes(fn, *args):
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    fn(*args)
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() - base


@pytest.mark.cuda
def test_cuda_memory_has_no_n_by_m_term():
    """Stage 1 of MiT-B5 at batch 2, fwd + bwd: peak extra memory is out, lse, the gradients and
    the backward's per-split dk / dv partial sums (at most 2 x SMs x M x D fp32, independent of N),
    and well under the eager attention that materialises N x M matrices."""
    B, H, N, M, D = 2, 1, 16384, 256, 64
    q, k, v = make_qkv((B, H, N, M, D), torch.bfloat16, device="cuda", layout="kv_views")
    q, kv = q.detach().requires_grad_(), k._base.detach().requires_grad_()  # kv: (B, M, 2 * H * D)
    grad_out = torch.randn(q.shape, device="cuda", dtype=torch.bfloat16)

    def fwd_bwd(attn):
        q.grad = kv.grad = None
        k, v = kv.view(B, M, 2, H, D).permute(2, 0, 3, 1, 4)  # (B, H, M, D) each
        attn(q, k, v).backward(grad_out)

    ours = _peak_extra_bytes(fwd_bwd, ops.attention)
    eager = _peak_extra_bytes(fwd_bwd, lambda q, k, v: torch.softmax(q @ k.transpose(-1, -2) * D**-0.5, -1) @ v)
    per_query = B * H * N * (3 * D * 2 + 4)  # out, dq, q.grad (bf16) and lse (fp32)
    partials = 2 * torch.cuda.get_device_properties(0).multi_processor_count * M * D * 4 + 2 * B * H * M * D * 4
    assert ours <= 2 * per_query + partials + 2**20, f"{ours / 2**20:.1f} MiB"
    assert ours < 0.6 * eager, f"fastuda {ours / 2**20:.1f} MiB vs eager {eager / 2**20:.1f} MiB"


@pytest.mark.cuda
def test_cuda_compile_opcheck_and_module():
    q, k, v = make_qkv((2, 5, 1024, 256, 64), torch.bfloat16, device="cuda", layout="kv_views")
    grad_out = torch.randn(q.shape, device="cuda", dtype=torch.bfloat16)
    compiled = torch.compile(lambda q, k, v: ops.attention(q, k, v), fullgraph=True)
    got = run_with_grads(compiled, q, k, v, grad_out)
    want = run_with_grads(ops.attention, q, k, v, grad_out)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=0, atol=0)  # same kernels, deterministic
    torch.library.opcheck(torch.ops.fastuda.attention.default, (*leaf(q, k, v), 0.125))
    m = EfficientSelfAttention(64, num_heads=1, qkv_bias=True, sr_ratio=8).cuda()
    assert_module_matches_published(m, torch.randn(2, 128 * 128, 64, device="cuda"), 128, 128, rtol=1e-3, atol=1e-3)
