"""The static kernel audit (kernels/audit.py, kernels/timing.py): every launch at the real shapes,
compiled for sm_90 without a GPU, with no spills and every 16-bit dot on wgmma, and its modelled
time against the ideal (the gate: within 1.3x wherever the ideal exceeds 5 us, SMs busy half the
time). The gate fails on the pre-issue-18 attention backward and on a starved grid. Plus the
audit's parsers and the time model's evaluator on hand-written TTGIR, so that a broken parser
cannot pass everything."""

import dataclasses
import functools
import hashlib
import json
import os
import pathlib
import subprocess
import sys

import pytest
import torch
import triton

from fastuda._versions import _major_minor
from fastuda.kernels import attention as attention_kernels
from fastuda.kernels import audit as A

ROOT = pathlib.Path(__file__).resolve().parents[1]
OPS = list(A.OPS)


def _audit_key(args) -> str:
    """Everything the audit's answer depends on: the kernels and their launchers (kernels/*.py),
    the measured model parameters (bench/RESULTS.md), the arguments and the Python / torch /
    Triton versions. The same key gives the same JSON, so it is computed once per change."""
    h = hashlib.sha256(repr((args, sys.version, torch.__version__, A.triton.__version__)).encode())
    for path in sorted((ROOT / "kernels").glob("*.py")) + [ROOT / "bench" / "RESULTS.md"]:
        if path.exists():
            h.update(path.name.encode() + b"\0" + path.read_bytes())
    return h.hexdigest()[:24]


# Gitignored (.pytest_cache/); pytest's own cache provider is off in pytest.ini.
CACHE = ROOT / ".pytest_cache" / "fastuda-audit"


def _run_audit(*args):
    """``python -m fastuda.kernels.audit --json ARGS`` (a subprocess: the audit needs the real
    Triton compiler, not the interpreter this test session runs under), cached in CACHE under
    _audit_key: a `make test` with unchanged kernels reuses the answer instead of recompiling."""
    path = CACHE / f"{_audit_key(args)}.json"
    if path.exists():
        return json.loads(path.read_text())
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.run(
        [sys.executable, "-m", "fastuda.kernels.audit", "--json", *args], capture_output=True, text=True, env=env, cwd=ROOT
    )
    assert proc.returncode in (0, 1), proc.stderr[-4000:]
    out = json.loads(proc.stdout)
    CACHE.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(proc.stdout)
    os.replace(tmp, path)  # atomic: a concurrent session reads the whole file or none
    return out


@pytest.fixture(scope="module")
def result():
    """One run of the whole audit (cached per source change, see _run_audit)."""
    if torch.cuda.is_available():
        pytest.skip("the CUDA tier measures the kernels themselves")
    cuobjdump = pathlib.Path(A.triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
    if not cuobjdump.exists():
        pytest.skip("this Triton has no bundled cuobjdump (needed to read register use)")
    return _run_audit()


def _is_time_gate(failure: str) -> bool:
    return "the ideal" in failure or "SMs busy" in failure


# Where the new kernels still model over the gate (op -> worst modelled / ideal over its cases
# and both devices, rounded up): a ratchet, not a pass. Each entry is open work listed in
# docs/kernels.md ("Over the gate"); a change that makes any of them worse fails here, one that
# brings an op under the gate should delete its entry. Ops not listed pass the gate outright.
OVER_THE_GATE = {
    "attention_bwd": 1.58,  # 7 products with the dq recompute, 2 exps per score: 1.39-1.43x at B = 8 and
    # 18 (MMA-bound); at B = 2 the split sum's tail (pipelined, 3 partials per round trip): 1.58x
    # at stage 1 (the old backward: 25x)
}


@pytest.mark.parametrize("op", OPS)
def test_audit(result, op):
    """Every launch captured, no spills, every 16-bit dot on wgmma."""
    rows = [r for r in result["launches"] if r["op"] == op]
    assert rows, f"no launch of {op} was captured"
    assert {r["op"] for r in result["ops"]} >= {op}
    failures = [f for f in result["failures"] if f.startswith(op + " ") and not _is_time_gate(f)]
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("op", OPS)
def test_time_gate(result, op):
    """Modelled time within 1.3x of the ideal and SMs busy at least half of it, for every call
    whose ideal exceeds 5 us, on H100 and H200; ops in OVER_THE_GATE within their recorded worst."""
    failures = [f for f in result["failures"] if f.startswith(op + " ") and _is_time_gate(f)]
    if op not in OVER_THE_GATE:
        assert not failures, "\n".join(failures)
        return
    cases = [o for o in result["ops"] if o["op"] == op]
    worst = max(m["ratio"] for o in cases for m in o["model"].values() if m["ideal_us"] > A.IDEAL_GATED_S * 1e6)
    assert worst <= OVER_THE_GATE[op], f"{op}: worst modelled / ideal {worst:.2f} > recorded {OVER_THE_GATE[op]}"


def test_mit_b5_attention_backward_within_1_5x_of_ideal(result):
    """A whole MiT-B5 attention backward at B = 2 (3 / 6 / 40 / 3 layers over the stages): the
    sum of the modelled calls against the sum of their ideals (the old policy: about 13x; 1.41x
    on an H100, 1.49x on an H200 with the partial sum's loop pipelined; 1.45x / 1.54x before)."""
    layers = {16384: 3, 4096: 6, 1024: 40, 256: 3}
    for device in ("H100", "H200"):
        modelled = ideal = 0.0
        for o in result["ops"]:
            if o["op"] == "attention_bwd" and o["case"].startswith("B2 ") and o["case"].endswith("bfloat16"):
                n = int(o["case"].split()[2][1:])
                modelled += layers[n] * o["model"][device]["modelled_us"]
                ideal += layers[n] * o["model"][device]["ideal_us"]
        # Triton 3.6 (the oldest supported) compiles the key loop to more instructions: 1.52x on
        # an H200 there (docs/kernels.md); 3.7 and later reach the target.
        limit = 1.5 if _major_minor(triton.__version__) >= (3, 7) else 1.53
        assert modelled / ideal <= limit, (device, modelled, ideal)


def test_gate_fails_on_the_old_attention_backward():
    """The pre-issue-18 backward (--bwd-policy budget: 256-key fused programs, 32-query steps,
    splits capped by PARTIAL_BUDGET) runs 2 programs at stage 1, B = 2: about 25x its ideal,
    the SMs 4% busy."""
    out = _run_audit(
        "--ops", "attention_bwd", "--match", "B2 H1 N16384 M256 D64 bfloat16", "--bwd-policy", "budget",
    )  # fmt: skip
    (case,) = out["ops"]
    for device, m in case["model"].items():
        assert m["ratio"] > 20 and m["fill"] < 0.1, (device, m)
    assert any("the ideal" in f for f in out["failures"]) and any("SMs busy" in f for f in out["failures"])


def test_gate_fails_on_a_starved_grid():
    """A launch whose work sits on a few SMs: each program's MMA time is right, but 4 programs on
    132 SMs take 33x the ideal of their FLOPs and leave the GPU idle; the same work spread over
    528 programs passes."""
    dev = A.T.DEVICES["H100"]
    flops = 4e9  # 4 ms of one SM at the tensor peak, 4 us of the whole GPU

    def programs(n):
        c = A.T.Cost()
        c.mma[("wgmma", 64, True, "bf16")] = flops / n
        return [c] * n

    ideal = A.T.ideal_time(flops, 0, dev)
    starved = A.T.launch_time(programs(4), [], 1, 4, 0, dev)
    assert starved["sms_used"] == 4 and starved["fill"] < 0.05
    fails = A.gate("starved", starved["time"], ideal, starved["fill"])
    assert len(fails) == 2 and starved["time"] / ideal > 20, fails
    spread = A.T.launch_time(programs(528), [], 2, 4, 0, dev)
    assert A.gate("spread", spread["time"], ideal, spread["fill"]) == [], spread


def test_every_memory_op_is_priced_as_compiled(result):
    """The time model ties every global load, store and cp.async of every audited launch to the
    accesses the backend emitted for it (timing.access_widths), so none falls back to the vector
    its layout promises."""
    for r in result["launches"]:
        mapped, total = r["memory_ops_compiled"]
        assert total and mapped == total, (r["op"], r["case"], r["kernel"], mapped, total)


def test_scale_fusion_forward_takes_16_byte_hr_loads_when_aligned(result):
    """In bf16 the forward's only 16-byte loads can be hr's (its LR rows are 4 elements, 8 bytes,
    per thread): the aligned copy of the walk has them. Before, neither copy did (tl.multiple_of
    on an inlined function's argument set nothing, and the box's column edges made the mask vary
    within a vector)."""
    rows = [r for r in result["launches"] if r["op"] == "scale_fusion_fwd" and r["case"].endswith("bfloat16")]
    assert rows
    for r in rows:
        assert r["load_widths"].get("16", 0) >= 1, (r["case"], r["load_widths"])


def test_loss_kernels_reduce_in_registers(result):
    """The layout the issue asked for: no exp on padding, no barrier per channel, 16-byte loads."""
    for r in result["launches"]:
        if r["op"] in ("pseudo_label", "cross_entropy_fwd") and r["exp_ratio"] is not None:
            assert r["exp_ratio"] == 1.0 and r["exp_mode"] == "total", r
            # No barrier per channel (that would be C = 19 or more): the per-program reduction, the
            # atomic's broadcast and the last program's sum, 4-7 bar.sync from Triton 3.6 to 3.9;
            # pseudo_label's scalar atomics (its ticket, the writers' poll and finish) broadcast
            # their results through shared memory too: 11-13 under Triton 3.8, under C all the same.
            assert r["bar_sync"] <= (18 if r["op"] == "pseudo_label" else 7), r
            assert set(r["load_widths"]) == {"16"}, r  # every global load is 16 bytes



def test_vs_pytorch_rows_and_table(result):
    """--vs-pytorch (the attention tables of README.md and docs/kernels.md) against arithmetic done
    here, at MiT-B5 stage 1, B = 2, bf16, H100: fastuda's column is the audit's attention_fwd +
    attention_bwd modelled us, the ideal theirs; the unfused path is 6 matmuls (q k^T and P v; dv,
    dP, dq and dk), each reading or writing one (N, M) and two (N, D) tensors at 70% of the MMA
    peak or at HBM bandwidth, whichever is slower, plus the softmax (2 (N, M) passes) and its
    backward (3), one launch each. The whole-model line weights the stages by 3 / 6 / 40 / 3."""
    dev = A.T.load_overrides()["H100"]
    rows = A.vs_pytorch(result, "H100")
    assert [(r["B"], r["stage"]) for r in rows] == [(B, stage) for B in (2, 8, 18) for stage in (1, 2, 3, 4)]
    (row,) = [r for r in rows if r["B"] == 2 and r["stage"] == 1]
    case = "B2 H1 N16384 M256 D64 bfloat16"
    model = {o["op"]: o["model"]["H100"] for o in result["ops"] if o["case"] == case}
    fwd, bwd = model["attention_fwd"], model["attention_bwd"]
    assert row["fastuda"] == pytest.approx(fwd["modelled_us"] + bwd["modelled_us"])
    assert row["ideal"] == pytest.approx(fwd["ideal_us"] + bwd["ideal_us"])

    B, H, N, M, D, elem = 2, 1, 16384, 256, 64, 2
    scores, q_size = B * H * N * M * elem, B * H * N * D * elem  # bytes of one (N, M) and one (N, D) tensor
    matmul = max(2 * B * H * N * M * D / (0.7 * dev.mma_flops), (scores + 2 * q_size) / dev.hbm_bytes_s)
    unfused = 6 * (matmul + dev.launch_s) + 5 * scores / dev.hbm_bytes_s + 2 * dev.launch_s
    assert row["unfused (matmul + softmax)"] == pytest.approx(unfused * 1e6, rel=1e-9)
    paths = ("sdpa flash (FA2)", "sdpa efficient", "unfused (matmul + softmax)")
    assert row["fastest"] == min(("fastuda", *paths), key=row.get)

    table = A.vs_pytorch_table(result)
    h100 = table.split("H200:")[0]
    assert f"| 1, B=2 | {row['fastuda']:.1f} | {row['ideal']:.1f} | " in h100
    assert f" | {unfused * 1e6:.1f} | {row['fastest']} |" in h100.split("| 1, B=2 |")[1].splitlines()[0]
    layers = {16384: 3, 4096: 6, 1024: 40, 256: 3}
    whole = sum(
        layers[int(o["case"].split()[2][1:])] * o["model"]["H100"]["modelled_us"]
        for o in result["ops"]
        if o["op"].startswith("attention_") and o["case"].startswith("B2 ") and o["case"].endswith(" bfloat16")
    )
    assert "B = 2, H100: " in h100 and f"fastuda {whole / 1e3:.2f} ms" in h100


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


EVAL_TTGIR = """\
#blocked = #ttg.blocked<{sizePerThread = [4], threadsPerWarp = [32], warpsPerCTA = [4], order = [0]}>
module {
  tt.func public @k(%x_ptr: !tt.ptr<f32> loc("x_ptr"(#loc)), %N: i32 loc("N"(#loc)), %CHUNK: i32 loc("CHUNK"(#loc))) attributes {noinline = false} {
    %c0_i32 = arith.constant 0 : i32 loc(#loc1)
    %c512_i32 = arith.constant 512 : i32 loc(#loc1)
    %pid = tt.get_program_id x : i32 loc(#loc2)
    %start = arith.muli %pid, %CHUNK : i32 loc(#loc3)
    %end0 = arith.addi %start, %CHUNK : i32 loc(#loc3)
    %end = arith.minsi %end0, %N : i32 loc(#loc3)
    scf.for %i = %start to %end step %c512_i32  : i32 {
      %p = tt.splat %x_ptr : !tt.ptr<f32> -> tensor<512x!tt.ptr<f32>, #blocked> loc(#loc4)
      %v = tt.load %p : tensor<512x!tt.ptr<f32>, #blocked> loc(#loc5)
      %e = math.exp %v : tensor<512xf32, #blocked> loc(#loc6)
    } loc(#loc7)
    %done = tt.atomic_rmw add, acq_rel, gpu, %x_ptr, %c0_i32, %true : (!tt.ptr<f32>, i32, i1) -> i32 loc(#loc8)
    %last = arith.cmpi eq, %done, %c0_i32 : i32 loc(#loc9)
    scf.if %last {
      %q = tt.splat %x_ptr : !tt.ptr<f32> -> tensor<512x!tt.ptr<f32>, #blocked> loc(#loc4)
      %w = tt.load %q : tensor<512x!tt.ptr<f32>, #blocked> loc(#loc5)
    } loc(#loc10)
    tt.return loc(#loc11)
  } loc(#loc)
} loc(#loc)
"""


def _evaluator(ttgir: str, stages: int):
    """The time model's evaluator over a hand-written TTGIR, 4 warps, ``stages`` pipeline depth."""
    return A.T.Evaluator(ttgir, A._layouts(ttgir), 128, A._issued, stages)


def test_evaluator_runs_each_program_s_real_trips():
    """Loop bounds from the program id and the arguments: program 0 of N = 5000 in chunks of
    2048 runs 4 trips of a 512-element load (2 KiB, one round trip each), the last program
    (4096..5000) 2; a branch on an atomic's result is the last arriver's tail."""
    ev = _evaluator(EVAL_TTGIR, 1)
    first, tail = ev.program({"N": 5000, "CHUNK": 2048}, (0, 0, 0), (3, 1, 1))
    last, _ = ev.program({"N": 5000, "CHUNK": 2048}, (2, 0, 0), (3, 1, 1))
    assert (first.bytes, first.rounds, first.mufu) == (4 * 2048, 4, 4 * 4)
    assert (last.bytes, last.rounds) == (2 * 2048, 2)
    assert (tail.bytes, tail.rounds) == (2048, 1)


# A loop over heads whose body calls a non-inlined function (Triton 3.6 quotes the name) with
# bounds that depend on the induction variable: head 0 gets 3 blocks, head 1 gets 1.
CALL_TTGIR = """\
#blocked = #ttg.blocked<{sizePerThread = [4], threadsPerWarp = [32], warpsPerCTA = [4], order = [0]}>
module {
  tt.func public @k(%x_ptr: !tt.ptr<f32> loc("x_ptr"(#loc)), %N: i32 loc("N"(#loc))) attributes {noinline = false} {
    %c0_i32 = arith.constant 0 : i32 loc(#loc1)
    %c1_i32 = arith.constant 1 : i32 loc(#loc1)
    %c2_i32 = arith.constant 2 : i32 loc(#loc1)
    scf.for %h = %c0_i32 to %c2_i32 step %c1_i32  : i32 {
      %d = arith.muli %h, %c2_i32 : i32 loc(#loc2)
      %hi = arith.subi %N, %d : i32 loc(#loc2)
      tt.call @"m.head__Pfp32_i32__(2,)cconstexpr_1_"(%x_ptr, %hi) : (!tt.ptr<f32>, i32) -> () loc(#loc3)
    } loc(#loc4)
    tt.return loc(#loc5)
  } loc(#loc)
  tt.func private @"m.head__Pfp32_i32__(2,)cconstexpr_1_"(%x_ptr: !tt.ptr<f32> loc("x_ptr"(#loc)), %hi: i32 loc("hi"(#loc))) attributes {noinline = true} {
    %c0_i32 = arith.constant 0 : i32 loc(#loc1)
    %c1_i32 = arith.constant 1 : i32 loc(#loc1)
    scf.for %i = %c0_i32 to %hi step %c1_i32  : i32 {
      %p = tt.splat %x_ptr : !tt.ptr<f32> -> tensor<512x!tt.ptr<f32>, #blocked> loc(#loc6)
      %v = tt.load %p : tensor<512x!tt.ptr<f32>, #blocked> loc(#loc7)
    } loc(#loc8)
    tt.return loc(#loc9)
  } loc(#loc)
} loc(#loc)
"""


def test_evaluator_follows_calls_per_loop_trip():
    """A call's body runs with the call's arguments, once per trip of the loop around it: 3 + 1
    loads of 2 KiB (not the first trip's 3 twice, nor none when the name is quoted)."""
    ev = _evaluator(CALL_TTGIR, 1)
    cost, _ = ev.program({"N": 3}, (0, 0, 0), (1, 1, 1))
    assert (cost.bytes, cost.rounds) == (4 * 2048, 4)


TICKET_TTGIR = """\
#blocked = #ttg.blocked<{sizePerThread = [4], threadsPerWarp = [32], warpsPerCTA = [4], order = [0]}>
module {
  tt.func public @k(%x_ptr: !tt.ptr<f32> loc("x_ptr"(#loc)), %word: !tt.ptr<i32> loc("word"(#loc)), %launch_ticket_ptr: !tt.ptr<i32> loc("launch_ticket_ptr"(#loc)), %N: i32 loc("N"(#loc))) attributes {noinline = false} {
    %c0_i32 = arith.constant 0 : i32 loc(#loc1)
    %c1_i32 = arith.constant 1 : i32 loc(#loc1)
    %ticket = tt.atomic_rmw add, relaxed, gpu, %launch_ticket_ptr, %c1_i32, %true : (!tt.ptr<i32>, i32, i1) -> i32 loc(#loc2)
    %first = arith.cmpi slt, %ticket, %N : i32 loc(#loc3)
    scf.if %first {
      %p = tt.splat %x_ptr : !tt.ptr<f32> -> tensor<512x!tt.ptr<f32>, #blocked> loc(#loc4)
      %v = tt.load %p : tensor<512x!tt.ptr<f32>, #blocked> loc(#loc5)
    } else {
      %a = tt.atomic_rmw add, relaxed, gpu, %word, %c0_i32, %true : (!tt.ptr<i32>, i32, i1) -> i32 loc(#loc6)
      %seen = scf.while (%s = %a) : (i32) -> i32 {
        %more = arith.cmpi slt, %s, %N : i32 loc(#loc7)
        scf.condition(%more) %s : i32 loc(#loc7)
      } do {
      ^bb0(%s: i32 loc("s"(#loc6))):
        %s2 = tt.atomic_rmw add, relaxed, gpu, %word, %c0_i32, %true : (!tt.ptr<i32>, i32, i1) -> i32 loc(#loc6)
        scf.yield %s2 : i32 loc(#loc8)
      } loc(#loc9)
      %all = arith.cmpi eq, %seen, %N : i32 loc(#loc10)
      scf.if %all {
        %q = tt.splat %x_ptr : !tt.ptr<f32> -> tensor<256x!tt.ptr<f32>, #blocked> loc(#loc4)
        %z = arith.constant dense<0.0> : tensor<256xf32, #blocked> loc(#loc1)
        tt.store %q, %z : tensor<256x!tt.ptr<f32>, #blocked> loc(#loc11)
      } loc(#loc12)
    } loc(#loc13)
    tt.return loc(#loc14)
  } loc(#loc)
} loc(#loc)
"""


def test_evaluator_launch_ticket_and_spin_wait():
    """A ticket taken from ``launch_ticket_ptr`` is the launch index (programs start in launch
    order), so the first N programs take one branch and the rest the other; what follows a loop
    that polls an atomic runs after the body in every waiting program (a tail after a wait), and
    the ticket is a round trip before the program's loads."""
    ev = _evaluator(TICKET_TTGIR, 1)
    grid = (6, 1, 1)
    costs = [ev.program({"N": 4}, (i, 0, 0), grid) for i in range(6)]
    for cost, tail in costs[:4]:
        assert (cost.bytes, cost.rounds, tail.bytes) == (4 + 512 * 4, 2, 0)
    for cost, tail in costs[4:]:
        assert (cost.bytes, tail.bytes, tail.after_wait) == (4, 256 * 4, True)
    dev = A.T.DEVICES["H100"]
    per_program, tails = [c for c, _ in costs], [t for _, t in costs if t.bytes]
    timed = A.T.launch_time(per_program, tails, 4, 4, 4 * 512 * 4 + 2 * 256 * 4, dev)
    # after the body: one poll's latency, then the two writers' stores (each on its own SM)
    assert timed["tail"] == pytest.approx(dev.latency_s + 256 * 4 / (dev.sm_port_bytes_clk * dev.clock_hz))


# A loop whose every trip waits for a flag (a spin-wait on an atomic) and then loads what the
# flag guards (the attention backward's "pair" policy: B waits for A's dq partial per step). As
# Triton emits it when nothing uses the loop's value: an scf.while without a result.
WAIT_PER_TRIP_TTGIR = """\
#blocked = #ttg.blocked<{sizePerThread = [4], threadsPerWarp = [32], warpsPerCTA = [4], order = [0]}>
module {
  tt.func public @k(%x_ptr: !tt.ptr<f32> loc("x_ptr"(#loc)), %flag: !tt.ptr<i32> loc("flag"(#loc)), %N: i32 loc("N"(#loc))) attributes {noinline = false} {
    %c0_i32 = arith.constant 0 : i32 loc(#loc1)
    %c1_i32 = arith.constant 1 : i32 loc(#loc1)
    scf.for %i = %c0_i32 to %N step %c1_i32  : i32 {
      %a = tt.atomic_rmw add, acquire, gpu, %flag, %c0_i32, %true : (!tt.ptr<i32>, i32, i1) -> i32 loc(#loc6)
      scf.while (%s = %a) : (i32) -> () {
        %more = arith.cmpi eq, %s, %c0_i32 : i32 loc(#loc7)
        scf.condition(%more) loc(#loc7)
      } do {
        %s2 = tt.atomic_rmw add, acquire, gpu, %flag, %c0_i32, %true : (!tt.ptr<i32>, i32, i1) -> i32 loc(#loc6)
        scf.yield %s2 : i32 loc(#loc8)
      } loc(#loc9)
      %p = tt.splat %x_ptr : !tt.ptr<f32> -> tensor<512x!tt.ptr<f32>, #blocked> loc(#loc4)
      %v = tt.load %p : tensor<512x!tt.ptr<f32>, #blocked> loc(#loc5)
    } loc(#loc10)
    tt.return loc(#loc14)
  } loc(#loc)
} loc(#loc)
"""


def test_evaluator_charges_a_wait_per_trip_before_its_loads():
    """A wait in a loop body is a round trip per trip before the loads it guards (acquire: they
    cannot be in flight with the poll): 3 trips of poll + 2 KiB load are 6 round trips, not 3."""
    ev = _evaluator(WAIT_PER_TRIP_TTGIR, 1)
    cost, tail = ev.program({"N": 3}, (0, 0, 0), (1, 1, 1))
    assert (cost.bytes, cost.rounds) == (3 * 2048, 6)
    assert tail.bytes == 0 and not tail.after_wait  # nothing branches on the flag: no tail


GATED_TTGIR = """\
#blocked = #ttg.blocked<{sizePerThread = [4], threadsPerWarp = [32], warpsPerCTA = [4], order = [0]}>
module {
  tt.func public @k(%x_ptr: !tt.ptr<f32> loc("x_ptr"(#loc)), %N: i32 loc("N"(#loc))) attributes {noinline = false} {
    %c0_i32 = arith.constant 0 : i32 loc(#loc1)
    %c512_i32 = arith.constant 512 : i32 loc(#loc1)
    %c1024_i32 = arith.constant 1024 : i32 loc(#loc1)
    %p = tt.splat %x_ptr : !tt.ptr<f32> -> tensor<512x!tt.ptr<f32>, #blocked> loc(#loc4)
    %rows = tt.make_range {end = 512 : i32, start = 0 : i32} : tensor<512xi32, #blocked> loc(#loc4)
    %lim = tt.splat %N : i32 -> tensor<512xi32, #blocked> loc(#loc4)
    %inb = arith.cmpi slt, %rows, %lim : tensor<512xi32, #blocked> loc(#loc4)
    %go = arith.cmpi sgt, %N, %c0_i32 : i32 loc(#loc2)
    %go_t = tt.splat %go : i1 -> tensor<512xi1, #blocked> loc(#loc2)
    %m0 = arith.andi %go_t, %inb : tensor<512xi1, #blocked> loc(#loc2)
    %a = tt.load %p, %m0 : tensor<512x!tt.ptr<f32>, #blocked> loc(#loc5)
    %two = arith.cmpi sgt, %N, %c512_i32 : i32 loc(#loc2)
    %two_t = tt.splat %two : i1 -> tensor<512xi1, #blocked> loc(#loc2)
    %b = tt.load %p, %two_t : tensor<512x!tt.ptr<f32>, #blocked> loc(#loc5)
    %ub = arith.subi %N, %c1024_i32 : i32 loc(#loc2)
    scf.for %i = %c0_i32 to %N step %c512_i32  : i32 {
      %ahead = arith.cmpi slt, %i, %ub : i32 loc(#loc2)
      %ahead_t = tt.splat %ahead : i1 -> tensor<512xi1, #blocked> loc(#loc2)
      %c = tt.load %p, %ahead_t : tensor<512x!tt.ptr<f32>, #blocked> loc(#loc5)
      %e = math.exp %c : tensor<512xf32, #blocked> loc(#loc6)
    } loc(#loc7)
    tt.return loc(#loc11)
  } loc(#loc)
} loc(#loc)
"""


def test_evaluator_skips_bytes_under_a_false_scalar_mask():
    """A load whose mask is a splat of a scalar condition (or such a splat and-ed with a tensor
    mask) moves nothing where the condition is false, as the pipeliner's prologue copies: N = 512
    loads one prologue tile of the two, and the loop's copy for trip i + 2 (masked with
    i < N - 1024) moves a tile in all but the last two trips (a pipelined loop of T trips
    moves T tiles). Unknown conditions count, and so do the loads' instructions."""
    ev = _evaluator(GATED_TTGIR, 2)
    tile = 512 * 4
    for n, tiles in ((512, 1 + 0), (1024, 2 + 0), (512 * 7, 2 + 5), (512 * 40, 2 + 38)):
        cost, _ = ev.program({"N": n}, (0, 0, 0), (1, 1, 1))
        assert cost.bytes == tiles * tile, (n, cost.bytes / tile)
    unknown, _ = ev.program({}, (0, 0, 0), (1, 1, 1))
    assert unknown.bytes == 3 * tile  # each load once (the loop's bounds unknown: one trip)
    zero, _ = ev.program({"N": 0}, (0, 0, 0), (1, 1, 1))
    assert zero.bytes == 0 and zero.instr > 0  # the two loads still issue, predicated off


# Two bf16 loads whose layout gives each thread 8 contiguous elements (16 bytes): the first at
# source line 20 (inlined from line 40), the second at line 21 (inlined from line 41); a box
# origin read from device memory decides a branch: the expensive side (8 loads) when it is 0.
WIDTH_TTGIR = """\
#blocked = #ttg.blocked<{sizePerThread = [8], threadsPerWarp = [32], warpsPerCTA = [4], order = [0]}>
module {
  tt.func public @k(%x_ptr: !tt.ptr<bf16> loc("x_ptr"(#loc)), %box_ptr: !tt.ptr<i64> loc("box_ptr"(#loc))) attributes {noinline = false} {
    %c0_i64 = arith.constant 0 : i64 loc(#loc1)
    %c1_i32 = arith.constant 1 : i32 loc(#loc1)
    %p = tt.splat %x_ptr : !tt.ptr<bf16> -> tensor<1024x!tt.ptr<bf16>, #blocked> loc(#loc1)
    %a = tt.load %p : tensor<1024x!tt.ptr<bf16>, #blocked> loc(#loc7)
    %b = tt.load %p : tensor<1024x!tt.ptr<bf16>, #blocked> loc(#loc8)
    %o_ptr = tt.addptr %box_ptr, %c1_i32 : !tt.ptr<i64>, i32 loc(#loc1)
    %o = tt.load %o_ptr : !tt.ptr<i64> loc(#loc1)
    %z = arith.cmpi eq, %o, %c0_i64 : i64 loc(#loc1)
    scf.if %z {
      %c = tt.load %p : tensor<1024x!tt.ptr<bf16>, #blocked> loc(#loc7)
      %d = tt.load %p : tensor<1024x!tt.ptr<bf16>, #blocked> loc(#loc7)
      %e = tt.load %p : tensor<1024x!tt.ptr<bf16>, #blocked> loc(#loc7)
      %f = tt.load %p : tensor<1024x!tt.ptr<bf16>, #blocked> loc(#loc7)
    } else {
      %g = tt.load %p : tensor<1024x!tt.ptr<bf16>, #blocked> loc(#loc8)
    } loc(#loc1)
    tt.return loc(#loc1)
  } loc(#loc)
} loc(#loc)
#loc = loc("k.py":1:0)
#loc1 = loc("k.py":2:3)
#loc3 = loc("k.py":20:9)
#loc4 = loc("k.py":40:5)
#loc5 = loc("k.py":21:9)
#loc6 = loc("k.py":41:5)
#loc7 = loc(callsite(#loc3 at #loc4))
#loc8 = loc("b"(#loc9))
#loc9 = loc(callsite(#loc5 at #loc6))
"""

# What the backend emitted for it: line 20 as eight 2-byte loads, line 21 as one 16-byte load,
# plus a 4-byte load whose inlined-at chain LLVM cut (line 0: code merged from several calls).
WIDTH_LLIR = """\
  %1 = tail call i16 asm sideeffect "mov.u16 $0, 0x0;\\0A\\09ld.global.b16 { $0 }, [ $1 + 0 ];", "=c,l"(ptr addrspace(1) %0) #4, !dbg !10
  %2 = tail call { i32, i32, i32, i32 } asm sideeffect "mov.u32 $0, 0x0;\\0A\\09ld.global.v4.b32 { $0, $1, $2, $3 }, [ $4 + 0 ];", "=r,=r,=r,=r,l"(ptr addrspace(1) %0) #4, !dbg !12
  %3 = tail call i32 asm sideeffect "@$2 ld.global.b32 { $0 }, [ $1 + 0 ];", "=r,l,b"(ptr addrspace(1) %0, i1 true) #4, !dbg !14
!10 = !DILocation(line: 20, column: 9, scope: !5, inlinedAt: !11)
!11 = !DILocation(line: 40, column: 5, scope: !5)
!12 = !DILocation(line: 21, column: 9, scope: !5, inlinedAt: !13)
!13 = !DILocation(line: 41, column: 5, scope: !5)
!14 = !DILocation(line: 21, column: 9, scope: !5, inlinedAt: !15)
!15 = !DILocation(line: 0, scope: !5)
"""


def test_access_widths_from_the_compiled_code():
    """Each TTGIR load gets the narrowest access the LLVM IR shows for its location chain: line
    20 (from 40) compiled to 2-byte loads, line 21 (from 41) to a 16-byte one, but a 4-byte load
    of line 21 whose call site LLVM cut to line 0 may belong to it, so 4 bytes. The evaluator then
    charges 8 / 2 / 1 instructions per thread for such a load; from the layout alone (the model
    before) 1 each."""
    widths = A.T.access_widths(WIDTH_TTGIR, WIDTH_LLIR)
    assert widths == {"#loc7": 2, "#loc8": 4}
    ev = A.T.Evaluator(WIDTH_TTGIR, A._layouts(WIDTH_TTGIR), 128, A._issued, 1, widths)
    plain = _evaluator(WIDTH_TTGIR, 1)
    box = {"box_ptr": [7, 1, 0, 0]}  # origin 1: the cheap side, one load of line 21
    cost, _ = ev.program({}, (0, 0, 0), (1, 1, 1), box)
    before, _ = plain.program({}, (0, 0, 0), (1, 1, 1), box)
    assert cost.instr - before.instr == pytest.approx((8 - 1) + (4 - 1) + (4 - 1))
    assert cost.bytes == before.bytes == 3 * 1024 * 2


def test_evaluator_reads_known_memory_and_charges_unknown_branches_their_worse_side():
    """A branch on a value in device memory: with the memory known (the audit's box) the taken
    side is charged (origin 0: four loads; origin 1: one); unknown, the side that takes longer,
    whichever it is (the model used to take the first side)."""
    ev = _evaluator(WIDTH_TTGIR, 1)
    tile = 1024 * 2
    zero, _ = ev.program({}, (0, 0, 0), (1, 1, 1), {"box_ptr": [5, 0]})
    one, _ = ev.program({}, (0, 0, 0), (1, 1, 1), {"box_ptr": [5, 1]})
    unknown, _ = ev.program({}, (0, 0, 0), (1, 1, 1))
    assert (zero.bytes, one.bytes, unknown.bytes) == (6 * tile, 3 * tile, 6 * tile)
    flipped = WIDTH_TTGIR.replace("arith.cmpi eq, %o", "arith.cmpi ne, %o")
    flipped = flipped.replace("    } else {\n      %g", "    } else {\n      %g0 = tt.load %p : tensor<1024x!tt.ptr<bf16>, #blocked> loc(#loc8)\n      %g1 = tt.load %p : tensor<1024x!tt.ptr<bf16>, #blocked> loc(#loc8)\n      %g2 = tt.load %p : tensor<1024x!tt.ptr<bf16>, #blocked> loc(#loc8)\n      %g2b = tt.load %p : tensor<1024x!tt.ptr<bf16>, #blocked> loc(#loc8)\n      %g")
    worse, _ = _evaluator(flipped, 1).program({}, (0, 0, 0), (1, 1, 1))
    assert worse.bytes == 7 * tile  # the else side: 5 loads against the then side's 4


# Two loops of 512-float tiles in one kernel: the first copies with cp.async (Triton pipelined
# it), the second loads plainly (as _sum_partials' loop over the splits' partials).
ROUNDS_TTGIR = """\
#blocked = #ttg.blocked<{sizePerThread = [4], threadsPerWarp = [32], warpsPerCTA = [4], order = [0]}>
#shared = #ttg.swizzled_shared<{vec = 1, perPhase = 1, maxPhase = 1, order = [0]}>
#smem = #ttg.shared_memory
module {
  tt.func public @k(%x_ptr: !tt.ptr<f32> loc("x_ptr"(#loc)), %N: i32 loc("N"(#loc))) attributes {noinline = false} {
    %c0_i32 = arith.constant 0 : i32 loc(#loc1)
    %c1_i32 = arith.constant 1 : i32 loc(#loc1)
    %buf = ttg.local_alloc : () -> !ttg.memdesc<3x512xf32, #shared, #smem, mutable> loc(#loc2)
    scf.for %i = %c0_i32 to %N step %c1_i32  : i32 {
      %p = tt.splat %x_ptr : !tt.ptr<f32> -> tensor<512x!tt.ptr<f32>, #blocked> loc(#loc3)
      %s = ttg.memdesc_index %buf[%c0_i32] : !ttg.memdesc<3x512xf32, #shared, #smem, mutable> -> !ttg.memdesc<512xf32, #shared, #smem, mutable> loc(#loc3)
      %c = ttg.async_copy_global_to_local %p, %s : tensor<512x!tt.ptr<f32>, #blocked> -> <512xf32, #shared, #smem, mutable> loc(#loc4)
    } loc(#loc5)
    scf.for %j = %c0_i32 to %N step %c1_i32  : i32 {
      %q = tt.splat %x_ptr : !tt.ptr<f32> -> tensor<512x!tt.ptr<f32>, #blocked> loc(#loc3)
      %v = tt.load %q : tensor<512x!tt.ptr<f32>, #blocked> loc(#loc6)
    } loc(#loc7)
    tt.return loc(#loc8)
  } loc(#loc)
} loc(#loc)
"""


def test_only_pipelined_loops_divide_their_round_trips():
    """With 4 stages, the loop that copies with cp.async waits for one round trip per 3 trips;
    the plain loop of loads in the same kernel waits for every trip's (the model used to divide
    every loop's round trips by the pipeline depth once the kernel had cp.async: 12 / 3 + 12 / 3
    = 8 round trips here instead of 16)."""
    ev = _evaluator(ROUNDS_TTGIR, 3)
    cost, _ = ev.program({"N": 12}, (0, 0, 0), (1, 1, 1))
    assert cost.bytes == 2 * 12 * 2048
    assert cost.rounds == pytest.approx(12 / 3 + 12)


def test_pipelined_loop_moves_its_trips_bytes():
    """A tiny kernel (tests/_pipeline_probe.py: a 64 x 64 bf16 tile per trip into a dot, 4
    stages) compiled for sm_90 offline: Triton (3.8 checked) pipelines it with cp.async and predicates
    the prologue's copies with the trip count, so 1, 2, 3, 5 and 8 trips move one tile each
    besides the w tile read and the fp32 result written; the model used to add the prologue's 3
    tiles whatever the trips."""
    out = _pipeline_probe()
    assert out["cp.async"] and out["copies"] >= 2, out  # pipelined: prologue copies and the loop's
    tile, fixed = 64 * 64 * 2, 64 * 64 * 2 + 64 * 64 * 4
    for trips in (1, 2, 3, 5, 8):
        assert out[str(trips)][0] == fixed + trips * tile, (trips, out)


def test_pipelined_loop_waits_on_its_prologue_round_trip():
    """The same probe's round trips: the prologue (with the w tile's load) issues the copies of
    the first 3 trips, which arrive together, one round trip; the loop's later copies go out 3
    trips ahead, one round trip per 3 trips. T trips: 1 + max(0, T - 3) / 3 (Little's law: 3
    trips' bytes in flight). The model used to charge the prologue's round trip and the first
    3 trips' share of the loop's too: 1 + T / 3, a round trip more than the copies wait for."""
    out = _pipeline_probe()
    for trips in (1, 2, 3, 5, 8):
        assert out[str(trips)][1] == pytest.approx(1 + max(0, trips - 3) / 3), (trips, out)


@functools.cache
def _pipeline_probe():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    proc = subprocess.run([sys.executable, str(ROOT / "tests" / "_pipeline_probe.py")], capture_output=True, text=True,
                          env=env, cwd=ROOT)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout)


def test_mma_efficiency_by_tile_width():
    """wgmma with both operands in shared memory: N = 16 / 32 / 64 reach 40 / 67 / 100% of the
    tensor peak (shared-memory bandwidth); A in registers: 100%."""
    dev = A.T.DEVICES["H100"]
    eff = [A.T.mma_efficiency("wgmma", n, False, "bf16", dev) for n in (16, 32, 64, 128)]
    assert [round(e, 2) for e in eff] == [0.4, 0.67, 1.0, 1.0]
    assert A.T.mma_efficiency("wgmma", 16, True, "bf16", dev) == 1.0


def test_device_parameters_take_measured_overrides(tmp_path):
    results = tmp_path / "RESULTS.md"
    results.write_text("text\nmodel-param H100 hbm_bytes_s = 3.0e12\nmodel-param H200 nonsense = 1\n")
    devices = A.T.load_overrides(str(results))
    assert devices["H100"].hbm_bytes_s == 3.0e12 and devices["H200"] == A.T.DEVICES["H200"]


def test_what_if_parameters(tmp_path, monkeypatch):
    """--param FIELD=VALUE / DEVICE.FIELD=VALUE: parsed with one-line errors, applied after the
    measured figures of bench/RESULTS.md."""
    assert A.T.parse_param("latency_s=3.5e-7") == (None, "latency_s", 3.5e-7)
    assert A.T.parse_param("H200.hbm_bytes_s = 4.5e12") == ("H200", "hbm_bytes_s", 4.5e12)
    assert A.T.parse_param("overlap=0") == (None, "overlap", 0.0)
    for bad, why in [("latency_s", "expected FIELD=VALUE"), ("latncy_s=1", "unknown parameter 'latncy_s'"),
                     ("H300.latency_s=1", "unknown device 'H300'"), ("latency_s=fast", "'fast' is not a number"),
                     ("latency_s=-1", "positive"), ("sms=114", "unknown parameter 'sms'"), ("name=x", "unknown parameter"),
                     ("overlap=1.5", "from 0 to 1")]:  # fmt: skip
        with pytest.raises(ValueError, match=why):
            A.T.parse_param(bad)
    results = tmp_path / "RESULTS.md"
    results.write_text("model-param H100 hbm_bytes_s = 3.0e12\nmodel-param H100 latency_s = 5e-7\n")
    monkeypatch.setattr(A.T, "WHAT_IF", [A.T.parse_param("H100.hbm_bytes_s=2.5e12"), A.T.parse_param("launch_s=1e-6")])
    devices = A.T.load_overrides(str(results))
    assert devices["H100"].hbm_bytes_s == 2.5e12 and devices["H100"].latency_s == 5e-7  # what-if over measured
    assert devices["H200"].hbm_bytes_s == A.T.DEVICES["H200"].hbm_bytes_s
    assert devices["H100"].launch_s == devices["H200"].launch_s == 1e-6
    monkeypatch.setattr(A.T, "WHAT_IF", [])
    assert A.T.load_overrides(str(tmp_path / "absent.md")) == A.T.DEVICES


def test_programs_overlap_only_when_they_share_an_sm_at_once():
    """Per SM, programs' MMA and issue times overlap only if the SM holds them at the same time:
    an MMA-bound and an issue-bound program of 10 us each take 10 us side by side (2 slots) and
    20 us one after the other (1 slot; the model used to say 10). Within one program, ``overlap``
    (a Device parameter, 1 by default) says how much of the smaller parts hides under the largest."""
    h100 = A.T.DEVICES["H100"]
    dev = dataclasses.replace(h100, sms=1, mma_flops=h100.mma_per_sm)  # one H100 SM
    mma = A.T.Cost()
    mma.mma[("wgmma", 64, True, "bf16")] = 10e-6 * dev.mma_per_sm  # 10 us of MMA
    issue = A.T.Cost()
    issue.instr = 10e-6 * dev.issue_per_clk * dev.clock_hz / 4  # 10 us of issue at 4 warps
    both = A.T.Cost()
    both.add(mma)
    both.instr = issue.instr / 2  # 10 us of MMA beside 5 us of issue
    assert A.T.launch_time([mma, issue], [], 2, 4, 0, dev)["time"] == pytest.approx(10e-6 + dev.launch_s)
    assert A.T.launch_time([mma, issue], [], 1, 4, 0, dev)["time"] == pytest.approx(20e-6 + dev.launch_s)
    for overlap, us in ((1.0, 10), (0.5, 12.5), (0.0, 15)):
        d = dataclasses.replace(dev, overlap=overlap)
        assert A.T.launch_time([both], [], 1, 4, 0, d)["time"] == pytest.approx(us * 1e-6 + d.launch_s), overlap
    # split_plan's closed form agrees: (mma seconds, bytes, round trips)
    port = dev.sm_port_bytes_clk * dev.clock_hz
    assert attention_kernels._busiest_sm([(10e-6, 0, 0), (0, 10e-6 * port, 0)], 1, 1, port, dev.latency_s) == pytest.approx(20e-6)
    assert attention_kernels._busiest_sm([(10e-6, 0, 0), (0, 10e-6 * port, 0)], 2, 1, port, dev.latency_s) == pytest.approx(10e-6)
    assert attention_kernels._busiest_sm([(10e-6, 5e-6 * port, 0)], 1, 1, port, dev.latency_s, 0.0) == pytest.approx(15e-6)


def test_what_if_reaches_the_model_and_the_launch_plans(result):
    """The pair backward (5 products, B waits on A's partial every step) is latency-bound, the
    default (7 products) MMA-bound: at half the assumed load latency the pair's launcher plans
    fewer chunks, its modelled time drops, and the default's does not move. The pair stays over
    the gate even so (docs/kernels.md, "Why the attention backward stops here")."""
    case = "B18 H1 N16384 M256 D64 bfloat16"
    args = ("--ops", "attention_bwd", "--match", case)
    half = ("--param", f"latency_s={A.T.DEVICES['H100'].latency_s / 2!r}")
    default = next(o for o in result["ops"] if o["op"] == "attention_bwd" and o["case"] == case)["model"]
    default_half = _run_audit(*args, *half)
    assert default_half["what_if"] == [f"every device latency_s = {A.T.DEVICES['H100'].latency_s / 2:g}"]
    pair, pair_half = _run_audit(*args, "--bwd-policy", "pair"), _run_audit(*args, "--bwd-policy", "pair", *half)
    # the launcher plans with the what-if too: split_plan picks 10 chunks at half the latency, not 11
    assert [la["grid"] for la in pair["launches"]] == [[396, 1, 1]]
    assert [la["grid"] for la in pair_half["launches"]] == [[360, 1, 1]]
    for device in ("H100", "H200"):
        assert default_half["ops"][0]["model"][device]["modelled_us"] == pytest.approx(default[device]["modelled_us"], rel=0.01)
        p, p_half = pair["ops"][0]["model"][device], pair_half["ops"][0]["model"][device]
        assert p_half["modelled_us"] < 0.8 * p["modelled_us"], (device, p, p_half)
        assert p_half["ratio"] > 1.3, (device, p_half)


def test_occupancy():
    assert A._occupancy(regs=255, shared=0, warps=8) == 1
    assert A._occupancy(regs=32, shared=0, warps=4) == 16  # the 64-warp limit
    assert A._occupancy(regs=32, shared=100 * 1024, warps=4) == 2


def test_gpu_check_model_section_dry_run():
    """bench/gpu_check.py's model section without a GPU: the modelled figures of the audit's calls,
    no measurement, and the model-param row that a GPU run appends to bench/RESULTS.md."""
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        import gpu_check
    finally:
        sys.path.remove(str(ROOT / "bench"))
    if gpu_check.CUDA:
        pytest.skip("the GPU run measures")
    audit = {"ops": [{"op": "attention_fwd", "case": "B2 H8 N256", "model": {
        d: {"modelled_us": 3.4, "ideal_us": 2.6, "ratio": 1.3, "fill": 0.2} for d in ("H100", "H200")}}]}  # fmt: skip
    rows = gpu_check.model_rows(3000.0, audit)
    assert [r.case for r in rows] == ["attention_fwd B2 H8 N256", "model-param"]
    assert rows[0].baseline.startswith("modelled 3.4 us (H100)") and rows[0].ratio is None
    assert gpu_check.model_params(rows) == "model-param H100 hbm_bytes_s = 3e+12\n"
    assert A.T._OVERRIDE.match(gpu_check.model_params(rows)).groups() == ("H100", "hbm_bytes_s", "3e+12")


def test_gpu_check_pair_section():
    """bench/gpu_check.py's pair backward rows: the pair measured against the default measured in
    the same child (ratio: default / pair, above 1 when the pair wins), its modelled time, its
    agreement with the default and its repeatability; without a GPU, the modelled time only."""
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        import gpu_check
    finally:
        sys.path.remove(str(ROOT / "bench"))
    case = "B18 H1 N16384 M256 D64 bfloat16"
    audit = {"ops": [{"op": "attention_bwd", "case": case, "model": {
        d: {"modelled_us": 133.6, "ideal_us": 50.8, "ratio": 2.63, "fill": 0.9} for d in ("H100", "H200")}}]}  # fmt: skip
    measured = {case: dict(default_us=90.0, pair_us=60.0, rel_diff=3e-3, bitwise_repeat=False)}
    (row,) = gpu_check.pair_rows(1.0, audit, measured)
    assert row.case == case and row.fastuda == "60.0 us" and row.ratio == pytest.approx(1.5)
    assert "default 90.0 us" in row.baseline and "pair modelled 133.6 us" in row.baseline
    assert "modelled / measured 2.23" in row.note and "3.0e-03" in row.note and "NOT bitwise" in row.note
    line = gpu_check.row_lines([row])[0]
    assert line.startswith("| pair backward | " + case + " | 60.0 us |") and "| 1.50 |" in line
    if not gpu_check.CUDA:
        (dry,) = gpu_check.pair_rows(1.0, audit)
        assert dry.fastuda == "- (dry run)" and dry.ratio is None and "133.6" in dry.baseline

