"""The static kernel audit (kernels/audit.py): every launch at the real shapes, compiled for sm_90
without a GPU, within 1.05 of the minimum work and traffic, with no spills and every 16-bit dot
on wgmma. Plus the audit's own parsers on hand-written TTGIR, so that a broken parser cannot
pass everything."""

import json
import os
import pathlib
import subprocess
import sys

import pytest
import torch

from fastuda.kernels import audit as A

ROOT = pathlib.Path(__file__).resolve().parents[1]
ATTENTION_REWORK = pytest.mark.xfail(strict=False, reason="attention is being reworked on branch kern-attn")
OPS = [pytest.param(op, marks=ATTENTION_REWORK) if op.startswith("attention") else op for op in A.OPS]


@pytest.fixture(scope="module")
def result():
    """One run of ``python -m fastuda.kernels.audit --json`` (a subprocess: the audit needs the
    real Triton compiler, not the interpreter this test session runs under)."""
    if torch.cuda.is_available():
        pytest.skip("the CUDA tier measures the kernels themselves")
    cuobjdump = pathlib.Path(A.triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
    if not cuobjdump.exists():
        pytest.skip("this Triton has no bundled cuobjdump (needed to read register use)")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.run(
        [sys.executable, "-m", "fastuda.kernels.audit", "--json"], capture_output=True, text=True, env=env, cwd=ROOT
    )
    assert proc.returncode in (0, 1), proc.stderr[-4000:]
    return json.loads(proc.stdout)


@pytest.mark.parametrize("op", OPS)
def test_audit(result, op):
    rows = [r for r in result["launches"] if r["op"] == op]
    assert rows, f"no launch of {op} was captured"
    assert {r["op"] for r in result["ops"]} >= {op}
    failures = [f for f in result["failures"] if f.startswith(op + " ")]
    assert not failures, "\n".join(failures)


def test_loss_kernels_reduce_in_registers(result):
    """The layout the issue asked for: no exp on padding, no barrier per channel, 16-byte loads."""
    for r in result["launches"]:
        if r["op"] in ("pseudo_label", "cross_entropy_fwd") and r["exp_ratio"] is not None:
            assert r["exp_ratio"] == 1.0 and r["exp_mode"] == "total", r
            assert r["bar_sync"] <= 5, r  # the per-program partial sums only
            assert set(r["load_widths"]) == {"16"}, r  # every global load is 16 bytes


# ----------------------------------------------------------------------------- the parsers

TTGIR = """\
#blocked = #ttg.blocked<{sizePerThread = [1, 4], threadsPerWarp = [1, 32], warpsPerCTA = [8, 1], order = [1, 0]}>
#blocked1 = #ttg.blocked<{sizePerThread = [2], threadsPerWarp = [32], warpsPerCTA = [8], order = [0]}>
#mma = #ttg.nvidia_mma<{versionMajor = 3, versionMinor = 0, warpsPerCTA = [8, 1], instrShape = [16, 128, 16]}>
#mma1 = #ttg.nvidia_mma<{versionMajor = 2, versionMinor = 0, warpsPerCTA = [2, 4], instrShape = [16, 8]}>
module {
  tt.func public @k(%x_ptr: !tt.ptr<f16> loc("x_ptr"(#loc)), %y_ptr: !tt.ptr<f32> loc("y_ptr"(#loc))) attributes {noinline = false} {
    %c0_i32 = arith.constant 0 : i32 loc(#loc1)
    %c19_i32 = arith.constant 19 : i32 loc(#loc1)
    %c1_i32 = arith.constant 1 : i32 loc(#loc1)
    %s = ttng.warp_group_dot %q, %k, %cst {isAsync = true} : !ttg.memdesc<64x64xf16, #shared1, #smem> * !ttg.memdesc<64x256xf16, #shared, #smem> -> tensor<64x256xf32, #mma> loc(#loc2)
    %p = math.exp2 %s : tensor<64x256xf32, #mma> loc(#loc3)
    %d = tt.dot %a, %b, %cst2 : tensor<32x256xf16, #ttg.dot_op<{opIdx = 0, parent = #mma1, kWidth = 2}>> * tensor<256x64xf16, #ttg.dot_op<{opIdx = 1, parent = #mma1, kWidth = 2}>> -> tensor<32x64xf32, #mma1> loc(#loc4)
    %r = scf.for %i = %c0_i32 to %c19_i32 step %c1_i32 iter_args(%a0 = %z) -> (tensor<512xf32, #blocked1>)  : i32 {
      %e = math.exp %a0 : tensor<512xf32, #blocked1> loc(#loc5)
      %t = math.exp %a0 : tensor<32x256xf32, #blocked> loc(#loc5)
      scf.yield %e : tensor<512xf32, #blocked1> loc(#loc6)
    } loc(#loc7)
    %w = math.exp %r : tensor<512xf32, #ttg.slice<{dim = 0, parent = #blocked}>> loc(#loc8)
    tt.store %y_ptr, %w : !tt.ptr<f32> loc(#loc9)
    tt.return loc(#loc10)
  } loc(#loc)
} loc(#loc)
"""


def test_dot_work_ratio_and_instruction():
    """A 64-row tile under warpsPerCTA = [8, 1] (two warpgroups of 64 rows) does the work twice;
    a 16-bit tt.dot on an nvidia_mma v2 layout is mma.sync."""
    dots = A._dots(TTGIR, A._layouts(TTGIR), k_pad=1.0)
    assert [(d["shape"], d["instr"], d["dtype"], d["ratio"]) for d in dots] == [
        ([64, 256, 64], "wgmma", "f16", 2.0),
        ([32, 64, 256], "mma.sync", "f16", 1.0),
    ]


def test_exp_issue_counts_padding_duplicates_and_static_loops():
    layouts = A._layouts(TTGIR)
    exps = A._exps(TTGIR, layouts, threads=256)
    # (issued per execution, elements, trips)
    assert exps[0] == (2 * 64 * 256, 64 * 256, 1)  # mma tile covers 128 rows: every score twice
    assert exps[1] == (512, 512, 19)  # exact: 2 per thread x 256 threads
    assert exps[2] == (256 * 32, 32 * 256, 19)
    assert exps[3] == (256 * 4 * 4, 512, 1)  # a slice: the 8 warps along dim 0 all hold the row


def test_pointer_use_and_load_widths():
    assert A._used_pointer_args(TTGIR) == {"y_ptr"}
    ptx = "ld.global.v4.b32 {...}; ld.global.b32 %r1; @%p ld.global.nc.v2.b16 {%h0, %h1};"
    assert dict(A._ptx_loads(ptx)) == {16: 1, 4: 2}


def test_traffic_counts_torch_ops_and_skips_views():
    x = torch.randn(4, 8)
    with A._TorchTraffic() as traffic:
        y = x.t()  # a view: nothing moves
        torch.empty(100)
        s = y.sum(0)  # reads 128 bytes, writes 16
        x.zero_()
    assert [(n, b) for n, b in traffic.ops] == [("sum", 128 + 16), ("zero_", 128)]
    assert s.shape == (4,)


def test_occupancy():
    assert A._occupancy(regs=255, shared=0, warps=8) == 1
    assert A._occupancy(regs=32, shared=0, warps=4) == 16  # the 64-warp limit
    assert A._occupancy(regs=32, shared=100 * 1024, warps=4) == 2
