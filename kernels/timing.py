"""Modelled time of a compiled Triton launch on a Hopper GPU, and the ideal it is held to.

kernels/audit.py captures every launch (kernel, grid, arguments, TTGIR, PTX, registers); this
module turns one into microseconds, without a GPU:

1. Work per program. ``Evaluator`` walks the kernel's TTGIR for every program id of the grid
   (a sample of 512 when there are more than 1024), evaluating the scalar integer ops (program
   ids, arguments, ``arith``) so that every ``scf.for`` runs its real trip count and every
   ``scf.if`` its real branch: persistent ranges, query splits and box tests come out per
   program. Scalar loads from small tensors whose contents the caller passes (``memory``: the
   audit's box) evaluate; a branch on any other value in device memory is charged its costlier
   side. A call (a function not inlined) runs the callee's body with the call's arguments,
   per trip of the loop around it. A branch whose condition depends on an atomic's result ("the last program to
   arrive") is run by one program per group after all the others: a serial tail. A spin-wait (a
   loop polling an atomic) costs a round trip per execution, before the loads that follow it. Per program it
   adds up
   * MMA work: 2 M N K per dot execution (times the warps' duplication), divided by the
     efficiency of the instruction (``mma_efficiency``);
   * memory bytes: the bytes every load and store moves (tensor extent x element size), scratch
     included, so a partial sum written and read back counts twice; none where the op's mask is a
     splat of a scalar condition (broadcast or and-ed with other masks) known false, as Triton's
     pipeliner predicates its prologue's and its loop's copies ahead (``_gate_memory_ops``): a
     pipelined loop of T trips moves T trips' bytes;
   * issued instructions (per thread): the elements each tensor op holds per thread (from its
     layout), global loads and stores per access as compiled (``access_widths``: the LLVM IR's
     inline-asm accesses, tied to each TTGIR op by source location; the layout's vector, 16
     bytes at most, only where the LLVM IR does not name the op), plus the exps separately (the
     MUFU unit issues 16 per clock per SM, an eighth of the ALU rate);
   * round trips to memory: one per execution of a region (loop body, straight-line code) that
     loads, divided by num_stages - 1 for a loop whose own body issues cp.async copies
     (``ttg.async_copy_global_to_local``: Triton pipelined that loop; when the PTX shows cp.async
     the kernel's other loops still wait for every trip): a program waits for each, so its
     loads move at most one round's bytes per latency (Little's law). The first num_stages - 1
     trips of a pipelined loop wait on its prologue's copies, whose round trip the region around
     the loop already counts: T trips cost max(0, T - (num_stages - 1)) / (num_stages - 1).
2. Placement. Programs start in launch order, each on the SM that frees a slot first
   (``ctas_per_sm`` slots per SM, occupancy from registers, shared memory and warps), as the
   hardware's block scheduler does. Per SM, the time is
   the largest of its MMA time (work / per-SM peak), its memory time (the larger of bytes / per-SM
   port and round trips / resident programs x latency) and its issue time (instructions / issue
   rate), summed over its programs, or of its programs' own times over its slots (programs that
   cannot be resident together do not overlap). A program's own time is its three run side by
   side: the largest, plus the share ``1 - overlap`` of the other two (``overlap`` = 1, the
   default: all of it hides; an assumption that `make gpu-check` can test).
3. Launch time = max over SMs, then max with (bytes the launch touches / HBM bandwidth), plus
   the serial tail, plus ``launch_s``. SM fill = sum of SM busy times / (SMs x launch time), an
   SM being busy while it works or while its bytes stream at its share of HBM bandwidth.

The ideal of an op: max(essential FLOPs / peak, essential bytes / HBM bandwidth) + one launch.

Parameters (``DEVICES``, each figure's source next to it): H100 SXM and H200 share the SM (132
SMs at the 1.83 GHz that NVIDIA's dense-bf16 figure implies) and differ in HBM. Figures labelled
"assumed" are not from a datasheet; ``bench/gpu_check.py`` measures the bandwidths and writes
``model-param`` lines to bench/RESULTS.md, which ``load_overrides`` applies. ``WHAT_IF`` (the
audit's ``--param``) goes on top of both, for questions such as "what if the latency were half".
"""

import dataclasses
import math
import operator
import os
import re
from collections import Counter
from typing import NamedTuple


@dataclasses.dataclass(frozen=True)
class Device:
    name: str
    # NVIDIA H100 SXM5 / H200 SXM datasheets: 989 TFLOP/s dense bf16 / fp16 tensor (1,979 sparse).
    mma_flops: float
    # Datasheets: H100 SXM 3.35 TB/s HBM3, H200 4.8 TB/s HBM3e.
    hbm_bytes_s: float
    sms: int = 132  # both SXM parts
    # 989.4e12 / (132 SMs x 4096 dense bf16 FLOP per clock per SM): the clock behind the peak.
    clock_hz: float = 1.83e9
    # Assumed: the SM's L1 <-> L2 port, 64 bytes per clock (what one SM can pull from L2).
    sm_port_bytes_clk: float = 64.0
    # Assumed: global-load latency under load. 0.7 us x 3.35 TB/s / 132 SMs = 17.8 KB: the bytes
    # in flight per SM that an H100 needs to run at full HBM bandwidth.
    latency_s: float = 0.7e-6
    launch_s: float = 2e-6  # assumed: launch overhead and ramp per kernel or torch op
    # Assumed: how much of a program's non-dominant time (MMA, issue, memory: all but the largest)
    # hides under the largest. 1: all of it (a program's time is the largest); 0: none (their
    # sum). Programs sharing an SM overlap each other whatever this is. `make gpu-check`'s
    # modelled / measured column is what can set it.
    overlap: float = 1.0
    issue_per_clk: float = 4.0  # warp instructions per clock per SM (4 schedulers)
    mufu_per_clk: float = 16.0  # exp2 / rcp lanes per clock per SM (CUDA guide, throughput table)
    smem_bytes_clk: float = 128.0  # shared-memory bandwidth per SM per clock (CUDA guide)
    fma_flops_per_clk: float = 256.0  # fp32 FMA lanes x 2 per SM per clock (128 cores)

    @property
    def mma_per_sm(self) -> float:
        return self.mma_flops / self.sms


DEVICES = {
    "H100": Device("H100", mma_flops=989.4e12, hbm_bytes_s=3.35e12),
    "H200": Device("H200", mma_flops=989.4e12, hbm_bytes_s=4.8e12),
}

_OVERRIDE = re.compile(r"^\s*model-param\s+(\w+)\s+(\w+)\s*=\s*([0-9.eE+-]+)")


# What-if parameters, (device or None for every device, field, value), applied after the measured
# ones by load_overrides (the audit's --param sets them; nothing else does).
WHAT_IF: list = []


def load_overrides(path: str | None = None, devices: dict | None = None) -> dict:
    """DEVICES with the measured figures of ``path`` (default: bench/RESULTS.md next to kernels/,
    if present) applied: lines ``model-param H100 hbm_bytes_s = 3.1e12`` (the last one wins);
    then WHAT_IF."""
    devices = dict(devices or DEVICES)
    if path is None:
        path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "bench", "RESULTS.md")
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                m = _OVERRIDE.match(line)
                if m and m.group(1) in devices and m.group(2) in Device.__dataclass_fields__:
                    devices[m.group(1)] = dataclasses.replace(devices[m.group(1)], **{m.group(2): float(m.group(3))})
    return with_params(devices, WHAT_IF)


# Device fields a what-if may set: not the name, nor the SM count (the audit launches its grids
# for 132 SMs whatever the model's figure).
_NUMERIC = tuple(f for f in Device.__dataclass_fields__ if f not in ("name", "sms"))


def parse_param(text: str) -> tuple:
    """``FIELD=VALUE`` (every device) or ``DEVICE.FIELD=VALUE`` -> (device or None, field, value).
    ValueError with a one-line reason for anything else."""
    name, sep, value = text.partition("=")
    device, dot, field = name.strip().rpartition(".")
    if not sep or not field:
        raise ValueError(f"{text!r}: expected FIELD=VALUE or DEVICE.FIELD=VALUE, e.g. latency_s=3.5e-7")
    if dot and device not in DEVICES:
        raise ValueError(f"{text!r}: unknown device {device!r}; expected one of {list(DEVICES)}")
    if field not in _NUMERIC:
        raise ValueError(f"{text!r}: unknown parameter {field!r}; expected one of {list(_NUMERIC)}")
    try:
        number = float(value)
    except ValueError:
        raise ValueError(f"{text!r}: {value.strip()!r} is not a number") from None
    if field == "overlap" and not 0 <= number <= 1:
        raise ValueError(f"{text!r}: expected a share from 0 to 1")
    if field != "overlap" and not (number > 0 and math.isfinite(number)):
        raise ValueError(f"{text!r}: expected a positive number")
    return (device or None, field, number)


def plan_device() -> Device:
    """The parameters the launchers plan with (attention's split_plan) and the costlier-branch
    rule prices with: the H100's, with WHAT_IF (not bench/RESULTS.md's measured figures)."""
    return with_params(DEVICES, WHAT_IF)["H100"]


def with_params(devices: dict, params) -> dict:
    """``devices`` with each (device or None, field, value) of ``params`` set, in order."""
    devices = dict(devices)
    for device, field, value in params:
        for name in [device] if device else list(devices):
            devices[name] = dataclasses.replace(devices[name], **{field: value})
    return devices


def mma_efficiency(instr: str, n: int, a_in_registers: bool, dtype: str, dev: Device) -> float:
    """Share of the tensor peak a dot can reach. wgmma m64nNk16 does 64 N 16 x 2 FLOPs in N / 2
    clocks of an SM's tensor cores (4096 FLOP per clock) and reads B (N x 16 x 2 bytes) and, when
    A is in shared memory, A (64 x 16 x 2 bytes) at 128 bytes per clock: with both operands in
    shared memory N = 16 / 32 / 64 reach 40 / 67 / 100%; A in registers always 100%. mma.sync
    (assumed): half the wgmma peak. FMA dots (fp32 IEEE): the fp32 FMA rate."""
    if instr == "fma" or dtype in ("f32", "f64"):
        return dev.fma_flops_per_clk * dev.sms * dev.clock_hz / dev.mma_flops
    if instr == "mma.sync":
        return 0.5
    compute_clk = 64 * n * 16 * 2 / (dev.mma_per_sm / dev.clock_hz)
    smem = n * 16 * 2 + (0 if a_in_registers else 64 * 16 * 2)
    return min(1.0, compute_clk / (smem / dev.smem_bytes_clk))


# ----------------------------------------------------------------------------- TTGIR evaluator


@dataclasses.dataclass
class Cost:
    mma: Counter = dataclasses.field(default_factory=Counter)  # (instr, N, a_regs, dtype) -> FLOPs
    bytes: float = 0.0
    loaded: float = 0.0  # the part of bytes that loads move (stores do not wait on latency)
    instr: float = 0.0  # per thread
    mufu: float = 0.0  # per thread
    rounds: float = 0.0  # dependent round trips to memory: one per execution of a region that loads
    inflight: float = 0.0  # scratch: loads of the region being walked
    exps: float = 0.0  # exp elements issued (kernels/audit.py's exp ratio)
    loads: float = 0.0  # bytes of tt.load ops (kernels/audit.py's load / input bytes)
    after_wait: bool = False  # a tail that every program runs after a spin-wait, not one last arriver

    def add(self, other, times=1):
        for k, v in other.mma.items():
            self.mma[k] += v * times
        self.bytes += other.bytes * times
        self.loaded += other.loaded * times
        self.instr += other.instr * times
        self.mufu += other.mufu * times
        self.rounds += other.rounds * times
        self.exps += other.exps * times
        self.loads += other.loads * times


class _Pointer(NamedTuple):
    """A scalar pointer into an argument whose contents are known (Evaluator.program's memory)."""

    arg: str
    offset: int


_ATOMIC = "atomic"  # a scalar value that depends on an atomic's result
_WAITED = "waited"  # a scalar value that a spin-wait on other programs returned
# The pointer argument of a launch-order ticket (kernels/pseudo_label.py): an atomic add on it
# evaluates to the program's launch index.
LAUNCH_TICKET = "%launch_ticket_ptr"
_LAYOUT_REF = r"(#ttg\.slice<\{[^}]*\}>|#\w+)"
_TENSOR = re.compile(r"tensor<([0-9x]+)x([a-z!][\w.<>!]*?)(?:, " + _LAYOUT_REF + r")?>")
_FREE = ("tt.splat", "tt.broadcast", "tt.expand_dims", "tt.reshape", "tt.trans", "ttg.memdesc", "tt.make_range",
         "arith.constant", "ttng.warp_group_dot_wait", "ttg.async_wait", "ttg.async_commit_group", "tt.join",
         "ttg.local_dealloc", "tt.return", "scf.yield", "tt.get_program_id", "tt.get_num_programs")  # fmt: skip
_ELEM = {"f16": 2, "bf16": 2, "f32": 4, "f64": 8, "i1": 1, "i8": 1, "i16": 2, "i32": 4, "i64": 8}
_BINOPS = {
    "addi": lambda a, b: a + b,
    "subi": lambda a, b: a - b,
    "muli": lambda a, b: a * b,
    "divsi": lambda a, b: int(a / b) if b else None,
    "divui": lambda a, b: a // b if b else None,
    "remsi": lambda a, b: a - b * int(a / b) if b else None,
    "remui": lambda a, b: a % b if b else None,
    "ceildivsi": lambda a, b: -(-a // b) if b else None,
    "floordivsi": lambda a, b: a // b if b else None,
    "minsi": min, "maxsi": max, "minui": min, "maxui": max,
    "andi": lambda a, b: a & b, "ori": lambda a, b: a | b, "xori": lambda a, b: a ^ b,
    "shli": lambda a, b: a << b, "shrsi": lambda a, b: a >> b, "shrui": lambda a, b: a >> b,
}  # fmt: skip
_CMP = {"eq": operator.eq, "ne": operator.ne, "slt": operator.lt, "sle": operator.le, "sgt": operator.gt,
        "sge": operator.ge, "ult": operator.lt, "ule": operator.le, "ugt": operator.gt, "uge": operator.ge}  # fmt: skip


def _parse_body(lines, i):
    """Parses lines[i:] up to the closing '}' of the current region. Returns (nodes, next index)."""
    nodes = []
    while i < len(lines):
        line = lines[i].strip()
        if line.startswith("}"):
            return nodes, i
        if line.endswith("({"):  # a combiner region (tt.reduce, tt.scan): one op, region skipped
            depth, j = 1, i + 1
            while depth:
                s = lines[j].strip()
                depth += s.endswith("({") - s.startswith("})")
                j += 1
            nodes.append(("op", line + " " + lines[j - 1].strip()))
            i = j
            continue
        m = re.search(r"scf\.for (%[\w.]+) = (%[\w.]+) to (%[\w.]+) step (%[\w.]+)", line)
        if m and line.endswith("{"):
            body, i = _parse_body(lines, i + 1)
            nodes.append(("for", *m.groups(), body))
            i += 1
            continue
        m = re.search(r"scf\.if (%[\w.]+)", line)
        if m and line.endswith("{"):
            then, i = _parse_body(lines, i + 1)
            other = []
            if lines[i].strip().startswith("} else {"):
                other, i = _parse_body(lines, i + 1)
            nodes.append(("if", m.group(1), then, other))
            i += 1
            continue
        if line.endswith("{"):  # scf.while and others: run each region once
            region, i = _parse_body(lines, i + 1)
            while lines[i].strip().startswith("}") and lines[i].strip().endswith("{"):
                more, i = _parse_body(lines, i + 1)
                region += more
            nodes.append(("region", region, line))
            i += 1
            continue
        nodes.append(("op", line))
        i += 1
    return nodes, i


class Evaluator:
    """Per-program work of a compiled kernel (see the module docstring)."""

    def __init__(self, ttgir: str, layouts: dict, threads: int, issued, pipelined_stages: int, widths: dict | None = None):
        self.layouts, self.threads, self.issued, self.stages = layouts, threads, issued, pipelined_stages
        # TTGIR location alias -> bytes per access as compiled (access_widths); without it (or
        # for an op it does not name) the layout's vector width, at most 16 bytes
        self.widths = widths or {}
        self.funcs = {}
        lines = ttgir.splitlines()
        for i, raw in enumerate(lines):
            m = re.match(r'\s*tt\.func (?:public |private )?@("[^"]+"|[\w.$]+)\((.*)\)(?:\s*->\s*[^{]*?)?\s+attributes', raw)
            if m:
                args = re.findall(r"%(\w+): ", m.group(2))
                body, _ = _parse_body(lines, i + 1)
                _gate_memory_ops(body, {})
                self.funcs[m.group(1)] = (args, body, "public" in raw)
        self.entry = next(n for n, f in self.funcs.items() if f[2])
        self._prepared = {}
        self._regions = {}
        self.consts = {m.group(1): int(m.group(2)) for m in re.finditer(r"(%[\w.]+) = arith\.constant (-?\d+) : i(?:1|32|64)\b", ttgir)}
        self.consts.update({m.group(1): int(m.group(2) == "true") for m in re.finditer(r"(%[\w.]+) = arith\.constant (true|false)", ttgir)})

    def program(self, args: dict, pid: tuple, grid: tuple, memory: dict | None = None):
        """(cost, tail cost) of program ``pid`` with the launch's scalar ``args``. ``memory``: the
        contents of small pointer arguments the caller knows (argument name -> list of ints, such
        as scale_fusion's box): scalar loads from them evaluate, so the branches on them are known."""
        names, body, _ = self.funcs[self.entry]
        env = {"%" + n: (args.get(n) if isinstance(args.get(n), int) and not isinstance(args.get(n), bool) else None) for n in names}
        self.memory = memory or {}
        env.update({"%" + n: _Pointer(n, 0) for n in names if n in self.memory})
        self.pid, self.grid = pid, grid
        cost, tail = Cost(), Cost()
        self._run(body, env, cost, tail, in_tail=False, depth=0)
        return cost, tail

    def _val(self, env, name):
        if name in env:
            return env[name]
        return self.consts.get(name)

    def _prep(self, line):
        """(scalar op spec, call spec, static Cost) of an op line, parsed once."""
        prepared = self._prepared.get(line)
        if prepared is not None:
            return prepared
        scalar = call = None
        m = re.match(r"(%[\w.#:]+) = (\w+)\.(\w+) (.*?)(?: loc\(|$)", line)
        if m:
            name, dialect, op, rest = m.groups()
            if not ("tensor<" in rest or "memdesc" in rest or (dialect == "arith" and op == "constant")):
                scalar = (name.split(":")[0], dialect, op, re.findall(r"%[\w.#]+", rest.split(" : ")[0]), rest)
        m = re.match(r'(?:%[\w.#:]+ = )?tt\.call @("[^"]+"|[\w.$]+)\((.*?)\)', line)
        cost = Cost()
        if m and m.group(1) in self.funcs:
            call = (m.group(1), [a.strip() for a in m.group(2).split(",")])
        else:
            self._tensor_cost(line, cost)
        prepared = self._prepared[line] = (scalar, call, cost)
        return prepared

    def _scalar(self, spec, env):
        name, dialect, op, ops, rest = spec
        vals = [self._val(env, o) for o in ops]
        res = None
        if dialect == "tt" and op == "get_program_id":
            res = self.pid["xyz".index(rest.split()[0])]
        elif dialect == "tt" and op == "get_num_programs":
            res = self.grid["xyz".index(rest.split()[0])]
        elif dialect == "tt" and op == "atomic_rmw" and LAUNCH_TICKET in ops:
            # a ticket taken at start from a counter zero at launch: programs start in launch
            # order (the placement below assumes it), so the ticket is the launch index
            res = self.pid[0] + self.grid[0] * (self.pid[1] + self.grid[1] * self.pid[2])
        elif dialect == "tt" and op == "atomic_rmw":
            res = _ATOMIC
        elif any(isinstance(v, _Pointer) for v in vals):  # a pointer into known memory
            base = vals[0]
            if dialect == "tt" and op == "addptr" and isinstance(base, _Pointer) and isinstance(vals[1], int):
                res = _Pointer(base.arg, base.offset + vals[1])
            elif dialect == "tt" and op == "load" and isinstance(base, _Pointer) and len(vals) == 1:
                known = self.memory[base.arg]
                res = known[base.offset] if 0 <= base.offset < len(known) else None
        elif _ATOMIC in vals:
            res = _ATOMIC
        elif _WAITED in vals:
            res = _WAITED
        elif None in vals:
            res = None
        elif dialect == "arith" and op in _BINOPS and len(vals) == 2:
            res = _BINOPS[op](*vals)
        elif dialect == "arith" and op in ("extsi", "extui", "trunci", "index_cast", "bitcast") and vals:
            res = vals[0]
        elif dialect == "arith" and op == "cmpi":
            pred = rest.split(",")[0].strip()
            res = int(_CMP[pred](vals[0], vals[1])) if pred in _CMP else None
        elif dialect == "arith" and op == "select" and len(vals) == 3:
            res = vals[1] if vals[0] else vals[2]
        env[name] = res

    def _tensor_cost(self, line, cost):
        m = re.match(r"(?:%[\w.#:]+ = )?\"?([\w.]+)\"?", line)
        op = m.group(1) if m else ""
        if op.startswith(_FREE) or op in _FREE:
            return
        if op in ("ttng.warp_group_dot", "tt.dot"):
            ops = re.findall(r"(tensor|!ttg\.memdesc)<([0-9x]+)x(\w+)", line.split(" : ", 1)[1])
            res = re.search(r"-> tensor<([0-9x]+)x\w+, (#\w+)>", line)
            M, N = (int(x) for x in res.group(1).split("x"))
            K = int(ops[0][1].split("x")[-1])
            lay = self.layouts.get(res.group(2), {})
            instr = "wgmma" if op == "ttng.warp_group_dot" or lay.get("version") == 3 else ("mma.sync" if lay.get("kind") == "nvidia_mma" else "fma")
            dup = 1.0
            if lay.get("kind") == "nvidia_mma":
                cols = lay["instr"][1] if lay["version"] == 3 else 8
                cm, cn = 16 * lay["wpc"][0], cols * lay["wpc"][1]
                dup = math.ceil(M / cm) * cm * math.ceil(N / cn) * cn / (M * N)
            n_instr = lay["instr"][1] if lay.get("version") == 3 else N
            cost.mma[(instr, min(N, n_instr), ops[0][0] == "tensor", ops[0][2])] += 2 * M * N * K * dup
            return
        types = list(_TENSOR.finditer(line))
        if not types:
            cost.instr += 1  # a scalar op (uniform: once per thread)
            scalar_load = re.search(r": !tt\.ptr<(\w+)>", line) if op == "tt.load" else None
            if scalar_load:  # uniform: counted in the audit's load bytes, not in the traffic
                cost.loads += _ELEM.get(scalar_load.group(1), 4)
            if op == "tt.atomic_rmw" and LAUNCH_TICKET in line:
                cost.rounds += 1  # the program's loads wait for its ticket
                cost.bytes += 4
            return
        memory = op in ("tt.load", "tt.store", "ttg.async_copy_global_to_local", "tt.atomic_rmw")
        ptr = re.search(r"tensor<([0-9x]+)x!tt\.ptr<(\w+)>, " + _LAYOUT_REF + ">", line) if memory else None
        if ptr:  # a memory op: its pointer tensor gives the elements, their size and the layout
            shape, elem, lay_text = [int(x) for x in ptr.group(1).split("x")], _ELEM.get(ptr.group(2), 4), ptr.group(3)
        else:
            t = types[-1]
            shape, elem_name, lay_text = [int(x) for x in t.group(1).split("x")], t.group(2), t.group(3) or ""
            elem = 8 if "ptr" in elem_name else _ELEM.get(elem_name, 4)
        lay, sliced = _layout_of(lay_text, self.layouts)
        issued = self.issued(shape, lay, sliced, self.threads) if lay else None
        per_thread = (issued or math.prod(shape)) / self.threads
        run = 1  # contiguous elements per thread: one vector access, one address
        if lay and lay.get("kind") == "blocked" and sliced is None and lay.get("order"):
            run = lay["spt"][lay["order"][0]]
        if memory:
            moved = math.prod(shape) * elem
            cost.bytes += moved
            if op == "tt.load":
                cost.loads += moved
            if op != "tt.store":
                cost.inflight += moved  # the caller counts a region's loads as one round trip
                cost.loaded += moved
            vector = min(run, 16 // elem)
            loc = _OP_LOC.search(line) if op in _MEMORY_OPS else None
            if loc and loc.group(1) in self.widths:
                vector = min(vector, self.widths[loc.group(1)] // elem)
            cost.instr += per_thread / max(1, vector)
        elif op in ("ttg.local_alloc", "ttg.local_load", "ttg.local_store"):
            cost.instr += per_thread / max(1, min(run, 16 // elem))
        elif op == "ttg.convert_layout":
            cost.instr += per_thread  # through shared memory: a store and a load, 2-wide
        elif op in ("math.exp", "math.exp2", "math.log", "math.log2", "arith.divf", "math.rsqrt", "math.sqrt"):
            if op in ("math.exp", "math.exp2"):
                cost.exps += issued or math.prod(shape)
            cost.instr += per_thread
            cost.mufu += per_thread
        elif op in ("arith.truncf", "arith.extf"):
            cost.instr += per_thread / 2  # packed pairs (cvt.rn.bf16x2.f32)
        elif op == "tt.addptr" or re.search(r"x(?:i32|i64|!tt\.ptr<\w+>), #", line.rsplit(":", 1)[-1]):
            # address arithmetic: one per contiguous run (the backend keeps a base and constant
            # offsets for the rest)
            cost.instr += per_thread / max(1, min(run, 4))
        else:
            cost.instr += per_thread

    def _region(self, nodes):
        """(static Cost of the region's own tensor ops, whether they load, the nodes to walk: scalar
        ops, calls and nested regions, in order), built once per region."""
        key = id(nodes)
        region = self._regions.get(key)
        if region is None:
            static, walk, loads = Cost(), [], False
            for node in nodes:
                if node[0] == "gated":  # its instructions issue, its bytes move unless the gate is off
                    c = self._prep(node[1])[2]
                    moved = Cost(bytes=c.bytes, loaded=c.loaded)
                    static.add(dataclasses.replace(c, bytes=0.0, loaded=0.0))
                    walk.append(("gated", node[2], moved))
                    loads = loads or c.inflight > 0
                    continue
                if node[0] != "op":
                    walk.append(node)
                    continue
                scalar, call, c = self._prep(node[1])
                if scalar or call:
                    walk.append(("scalar", scalar, call))
                static.add(c)
                static.inflight += c.inflight
            # Only a loop whose own body issues cp.async copies (ttg.async_copy_global_to_local)
            # was pipelined by Triton; its other loops wait for every round trip.
            pipelined = any(n[0] in ("op", "gated") and "async_copy_global_to_local" in n[1] for n in nodes)
            region = self._regions[key] = (static, loads or static.inflight > 0, walk, nodes, pipelined)
        return region

    def _run(self, nodes, env, cost, tail, in_tail, depth, loop=False):
        static, loads, walk, _, pipelined = self._region(nodes)
        target = tail if in_tail else cost
        target.add(static)
        if loads:  # this region's loads go out together: one round trip (fewer when pipelined)
            target.rounds += 1 / (self.stages if loop and pipelined else 1)
        for node in walk:
            kind = node[0]
            if kind == "gated":
                if not any(self._val(env, g) == 0 for g in node[1]):  # 0: known false (None: unknown)
                    target.add(node[2])
            elif kind == "scalar":
                _, scalar, call = node
                if scalar:
                    self._scalar(scalar, env)
                if call:
                    names, body, _ = self.funcs[call[0]]
                    callee = {"%" + n: self._val(env, a) for n, a in zip(names, call[1])}
                    self._run(body, callee, cost, tail, in_tail, depth + 1, loop=False)
            elif kind == "for":
                _, iv, lb, ub, st, body = node
                lb, ub, st = (self._val(env, x) for x in (lb, ub, st))
                if None in (lb, ub, st) or _ATOMIC in (lb, ub, st) or st <= 0:
                    trips, lb = 1, lb if isinstance(lb, int) else 0  # unknown bounds: once
                else:
                    trips = max(0, -(-(ub - lb) // st))
                if trips == 0:
                    continue
                # per trip where the trips can differ: nested control flow, or a call (its
                # arguments may depend on the induction variable)
                structured = any(n[0] in ("for", "if") or (n[0] == "op" and " tt.call @" in " " + n[1]) for n in body)
                if structured and trips <= 64:
                    for t in range(trips):
                        env[iv] = lb + t * (st or 1)
                        self._run(body, env, cost, tail, in_tail, depth + 1, loop=True)
                else:
                    first = self._trip(body, env, iv, lb, in_tail, depth)
                    switch = trips  # trips that cost what the first does; the rest cost the last's
                    if trips > 1 and any(n[0] == "gated" for n in self._region(body)[2]):
                        last = self._trip(body, env, iv, lb + (trips - 1) * st, in_tail, depth)
                        if last[0].bytes != first[0].bytes or last[1].bytes != first[1].bytes:
                            # a gate that turns once (the pipeliner's iv < ub - k * step): bisect
                            lo, switch = 0, trips - 1
                            while switch - lo > 1:
                                mid = (lo + switch) // 2
                                c, tl_ = self._trip(body, env, iv, lb + mid * st, in_tail, depth)
                                lo, switch = (mid, switch) if (c.bytes, tl_.bytes) == (first[0].bytes, first[1].bytes) else (lo, mid)
                            target.add(last[0], trips - switch)
                            tail.add(last[1], trips - switch)
                    target.add(first[0], switch)
                    tail.add(first[1], switch)
                _, body_loads, _, _, pipelined = self._region(body)
                if loads and body_loads and pipelined:
                    # The pipeliner's prologue (its copies in the region around the loop, charged
                    # one round trip above) issued the first `stages` trips' copies: those trips
                    # wait on that round trip, not on one of their own. T trips after a prologue:
                    # 1 + max(0, T - stages) / stages round trips.
                    target.rounds -= min(trips, self.stages) / self.stages
            elif kind == "if":
                cond = self._val(env, node[1])
                if cond == _WAITED:  # every program runs it, after the programs it waited on
                    tail.after_wait = True
                    self._run(node[2], env, cost, tail, True, depth + 1)
                elif cond == _ATOMIC:
                    self._run(node[2], env, cost, tail, True, depth + 1)
                elif cond is None:
                    self._run_worse(node[2], node[3], env, cost, tail, in_tail, depth + 1)
                elif cond:
                    self._run(node[2], env, cost, tail, in_tail, depth + 1)
                else:
                    self._run(node[3], env, cost, tail, in_tail, depth + 1)
            else:
                self._run(node[1], env, cost, tail, in_tail, depth + 1)
                # A loop that polls an atomic waits on other programs (a spin-wait): what branches
                # on its results runs after them, in every program that waited (a tail).
                m = re.match(r"(?:(%[\w.]+)(?::(\d+))? = )?scf\.while", node[2])  # no result: nothing uses it
                if m and any(n[0] == "op" and "tt.atomic_rmw" in n[1] for n in node[1]):
                    # The poll that sees the flag is a round trip of its own: what the program
                    # loads after it waits for it (acquire), so those loads are a second round
                    # trip, not in flight with the poll. (Per execution: a wait in a loop body
                    # costs a latency per trip.)
                    (tail if in_tail else cost).rounds += 1
                    if m.group(1):
                        env[m.group(1)] = _WAITED
                        env.update({f"{m.group(1)}#{k}": _WAITED for k in range(int(m.group(2) or 1))})

    def _run_worse(self, then, other, env, cost, tail, in_tail, depth):
        """A branch on a value the evaluator cannot know (data in device memory): both sides are
        walked and the one that takes longer (H100 parameters, this program alone; on a tie, the one
        that moves more bytes, then issues more) is charged."""
        runs = []
        for nodes in (then, other):
            scope, c, t = dict(env), Cost(), Cost()
            self._run(nodes, scope, c, t, in_tail, depth)
            c_time = _alone(c, self.threads // 32) + _alone(t, self.threads // 32)
            runs.append(((c_time, c.bytes + t.bytes, c.instr + t.instr), scope, c, t))
        _, scope, c, t = max(runs, key=lambda r: r[0])  # ties (both latency-bound): more bytes, then more instructions
        env.update(scope)
        cost.add(c)
        tail.add(t)
        tail.after_wait = tail.after_wait or t.after_wait

    def _trip(self, body, env, iv, value, in_tail, depth):
        """(cost, tail cost) of one trip of a loop body at induction value ``value``."""
        env[iv] = value
        c, tl_ = Cost(), Cost()
        self._run(body, env, c, tl_, in_tail, depth + 1, loop=True)
        return c, tl_


# ----------------------------------------------------------------------------- compiled memory ops

# A source location chain, innermost first: ((line, column), (line, column) of the call it was
# inlined at, ...). The TTGIR and the LLVM IR both carry it, so it ties each TTGIR memory op to
# the global-memory instructions the backend emitted for it.
_TTGIR_LOC = re.compile(r"^(#loc\d*) = loc\((.*)\)\s*$")
_OP_LOC = re.compile(r"loc\((#loc\d*)\)\s*$")
_DILOC = re.compile(r"^!(\d+) = !DILocation\(line: (\d+)(?:, column: (\d+))?(?:, scope: ![0-9]+)?(?:, inlinedAt: !(\d+))?")
_LLVM_DBG = re.compile(r"!dbg !(\d+)")
# a global-memory access in the NVIDIA backend's inline asm (after a "\09" tab escape: no \b), and
# the bytes it moves per thread
_GLOBAL_ACCESS = re.compile(r"(?<![A-Za-z.])(?:ld|st)\.global((?:\.[\w:]+)*)|(?<![A-Za-z.])cp\.async\.c[ag]\.shared\.global \[[^]]*\], \[[^]]*\], (0x[0-9a-f]+|\d+)")


def _access_bytes(m) -> int:
    if m.group(2):  # cp.async: the copy size operand
        return int(m.group(2), 0)
    parts = m.group(1).split(".")
    vec = next((int(p[1:]) for p in parts if re.fullmatch(r"v\d", p)), 1)
    bits = next((int(p[1:]) for p in parts if re.fullmatch(r"[bufs]\d+", p)), 32)
    return vec * bits // 8


_MEMORY_OPS = ("tt.load", "tt.store", "ttg.async_copy_global_to_local")


def _ttgir_chains(ttgir: str) -> dict:
    """TTGIR location alias -> its chain (innermost first)."""
    exprs = {m.group(1): m.group(2) for m in map(_TTGIR_LOC.match, ttgir.splitlines()) if m}
    chains = {}

    def chain(expr, depth=0):
        expr = expr.strip()
        if depth > 64:
            return ()
        if expr.startswith("#loc"):
            if expr not in chains:
                chains[expr] = chain(exprs.get(expr, "unknown"), depth + 1)
            return chains[expr]
        m = re.fullmatch(r'"[^"]*":(\d+):(\d+)', expr)
        if m:
            return ((int(m.group(1)), int(m.group(2))),)
        m = re.fullmatch(r"callsite\((#loc\d*) at (#loc\d*)\)", expr)
        if m:
            return chain(m.group(1), depth + 1) + chain(m.group(2), depth + 1)
        m = re.fullmatch(r'"[^"]*"\((#loc\d*)\)', expr)  # a name on a location
        if m:
            return chain(m.group(1), depth + 1)
        m = re.fullmatch(r"fused\[(#loc\d*).*\]", expr)
        if m:
            return chain(m.group(1), depth + 1)
        return ()

    for alias in exprs:
        chain(alias)
    return chains


def access_widths(ttgir: str, llir: str) -> dict:
    """Bytes per thread that each TTGIR global-memory op moves per instruction as compiled, from
    the LLVM IR: TTGIR location alias -> the narrowest access the backend emitted for it.

    The layout alone promises vector accesses (up to 16 bytes per thread) wherever a thread holds
    contiguous elements; the backend emits them only where it can prove the addresses aligned and
    the mask constant over the vector. A pointer offset or a mask bound that lives in device
    memory (scale_fusion's box) gives one access per element. Where LLVM merged code of several
    inlined calls (a line-0 call site), its accesses count for every op they may belong to, so the
    narrowest one wins. Locations the LLVM IR does not carry are left out (the evaluator then
    takes the layout's width)."""
    if not llir:
        return {}
    dilocs = {}
    for line in llir.splitlines():
        m = _DILOC.match(line)
        if m:
            dilocs[m.group(1)] = (int(m.group(2)), int(m.group(3) or 0), m.group(4))

    def llvm_chain(ref, depth=0):
        # LLVM gives code it merged or hoisted out of several inlined calls a line-0 call site:
        # the chain stops there, and matches every TTGIR chain it is a prefix of
        if ref not in dilocs or depth > 64 or dilocs[ref][0] == 0:
            return ()
        line, col, parent = dilocs[ref]
        return ((line, col),) + (llvm_chain(parent, depth + 1) if parent else ())

    emitted = {}  # LLVM chain -> narrowest access there (bytes)
    for line in llir.splitlines():
        if "asm" not in line:
            continue
        widths = [_access_bytes(m) for m in _GLOBAL_ACCESS.finditer(line)]
        dbg = _LLVM_DBG.search(line) if widths else None
        if dbg:
            key = llvm_chain(dbg.group(1))
            emitted[key] = min(widths + ([emitted[key]] if key in emitted else []))
    chains = _ttgir_chains(ttgir)
    aliases = {}  # TTGIR chain -> the location aliases of its memory ops
    for alias in memory_op_aliases(ttgir):
        if chains.get(alias):
            aliases.setdefault(chains[alias], set()).add(alias)
    out = {}
    for key, width in emitted.items():
        for chain in aliases if key else ():  # (a key cut at its innermost location matches nothing)
            if chain[: len(key)] == key:
                for alias in aliases[chain]:
                    out[alias] = min(width, out.get(alias, width))
    return out


def memory_op_aliases(ttgir: str) -> list:
    """The location alias of every global-memory op (tensor load, store or cp.async) of a TTGIR."""
    out = []
    for line in ttgir.splitlines():
        text = line.strip()
        m = re.match(r"(?:%[\w.#:]+ = )?\"?([\w.]+)\"?", text)
        loc = _OP_LOC.search(text) if m and m.group(1) in _MEMORY_OPS and "tensor<" in text else None
        if loc:
            out.append(loc.group(1))
    return out


_MASK = {
    "ttg.async_copy_global_to_local": re.compile(r"async_copy_global_to_local %[\w.#]+, %[\w.#]+ mask (%[\w.#]+)"),
    "tt.load": re.compile(r"tt\.load %[\w.#]+, (%[\w.#]+)"),
    "tt.store": re.compile(r"tt\.store %[\w.#]+, %[\w.#]+, (%[\w.#]+)"),
}
_SPLAT_I1 = re.compile(r"(%[\w.#]+) = tt\.splat (%[\w.#]+) : i1 ->")
_SAME_MASK = re.compile(r"(%[\w.#]+) = (?:tt\.broadcast|tt\.expand_dims|tt\.reshape|ttg\.convert_layout) (%[\w.#]+)\b")
_AND_MASK = re.compile(r"(%[\w.#]+) = arith\.andi (%[\w.#]+), (%[\w.#]+) : tensor<")


def _gate_memory_ops(nodes, gates):
    """Marks the loads and stores whose mask is a splat of a scalar condition (broadcast, or
    and-ed with other masks): ("gated", line, scalar conditions). The pipeliner predicates its
    copies so: the prologue's k-th with lb + k * step < ub, the loop's with iv < ub - (stages - 1)
    * step, so a loop of T trips moves T trips' bytes. ``gates``: mask name -> its conditions, over
    one function (SSA names are unique there)."""
    for i, node in enumerate(nodes):
        if node[0] == "for":
            _gate_memory_ops(node[5], gates)
        elif node[0] == "if":
            _gate_memory_ops(node[2], gates)
            _gate_memory_ops(node[3], gates)
        elif node[0] == "region":
            _gate_memory_ops(node[1], gates)
        elif node[0] == "op":
            line = node[1]
            m = _SPLAT_I1.match(line)
            if m:
                gates[m.group(1)] = (m.group(2),)
                continue
            m = _SAME_MASK.match(line)
            if m and m.group(2) in gates:
                gates[m.group(1)] = gates[m.group(2)]
                continue
            m = _AND_MASK.match(line)
            if m and (m.group(2) in gates or m.group(3) in gates):
                gates[m.group(1)] = gates.get(m.group(2), ()) + gates.get(m.group(3), ())
                continue
            for op, pattern in _MASK.items():
                m = pattern.search(line) if op in line else None
                if m and m.group(1) in gates:
                    nodes[i] = ("gated", line, gates[m.group(1)])
                    break


def _layout_of(text: str, layouts: dict):
    m = re.match(r"#ttg\.slice<\{dim = (\d+), parent = (#\w+)\}>", text.strip())
    if m:
        return layouts.get(m.group(2)), int(m.group(1))
    return layouts.get(text.strip()), None


# ----------------------------------------------------------------------------- placement


def _program_parts(c: Cost, ctas_per_sm: int, num_warps: int, dev: Device):
    mma = sum(f / mma_efficiency(k[0], k[1], k[2], k[3], dev) for k, f in c.mma.items()) / dev.mma_per_sm
    issue = c.instr * num_warps / (dev.issue_per_clk * dev.clock_hz)
    mufu = c.mufu * 32 * num_warps / (dev.mufu_per_clk * dev.clock_hz)
    return mma, max(issue, mufu)


def exposed(parts, overlap: float) -> float:
    """Seconds of work whose ``parts`` (MMA, issue, memory) run side by side: the largest, plus
    the share ``1 - overlap`` of the others that does not hide under it."""
    top = max(parts)
    return top + (1.0 - overlap) * (sum(parts) - top)


def _program_time(c: Cost, num_warps: int, dev: Device) -> tuple:
    """(MMA, issue, busy) seconds of one program on an SM of its own: busy is its MMA time, its
    issue time and its memory time (round trips x latency, or bytes over the SM's port) run side
    by side (``exposed``: the largest at ``dev.overlap`` = 1)."""
    mma, issue = _program_parts(c, 1, num_warps, dev)
    mem = max(c.rounds * dev.latency_s, c.bytes / (dev.sm_port_bytes_clk * dev.clock_hz))
    return mma, issue, exposed((mma, issue, mem), dev.overlap)


def _alone(c: Cost, num_warps: int, dev: Device | None = None) -> float:
    """Seconds of one program's Cost on an SM of its own (plan_device() by default)."""
    return _program_time(c, num_warps, dev or plan_device())[2]


def sm_times(per_program: list, ctas_per_sm: int, num_warps: int, dev: Device):
    """Per-SM busy seconds of a launch. ``per_program``: one Cost per program in launch order.

    Placement follows the hardware's: programs start in launch order, each on the SM that frees
    a slot first (ctas_per_sm slots per SM), so an SM that drew long programs gets fewer. Per SM,
    its programs' MMA, issue and memory times add up (they share the SM), and the SM's time is
    the largest of the three, or of its programs' own times over the slots they can share at
    once (programs that cannot be resident together cannot overlap each other)."""
    import heapq

    port = dev.sm_port_bytes_clk * dev.clock_hz
    sms = min(dev.sms, len(per_program))
    parts = {}
    # (time the SM's load frees a slot, SM): an SM is as free as its work so far over its slots
    heap = [(0.0, j) for j in range(sms)]
    mine = [[] for _ in range(sms)]
    for c in per_program:
        key = id(c)
        if key not in parts:
            parts[key] = _program_time(c, num_warps, dev)
        load, j = heapq.heappop(heap)
        mine[j].append(c)
        heapq.heappush(heap, (load + parts[key][2] / ctas_per_sm, j))
    times = []
    for j in range(sms):
        progs = mine[j]
        if not progs:
            continue
        mma = sum(parts[id(c)][0] for c in progs)
        issue = sum(parts[id(c)][1] for c in progs)
        resident = min(ctas_per_sm, len(progs))
        # Loads wait on latency: the resident programs overlap their round trips, each program's
        # trips are serial (Little's law with the bytes a round keeps in flight). Stores are
        # posted: only the port limits them.
        latency = max(sum(c.rounds for c in progs) / resident, max(c.rounds for c in progs)) * dev.latency_s
        nbytes = sum(c.bytes for c in progs)
        mem = max(latency, nbytes / port)
        alone = sum(parts[id(c)][2] for c in progs) / resident
        times.append(dict(mma=mma, mem=mem, issue=issue, busy=max(mma, mem, issue, alone), bytes=nbytes))
    return times


def launch_time(per_program: list, tails: list, ctas_per_sm: int, num_warps: int, touched_bytes: int, dev: Device) -> dict:
    """Modelled seconds of one launch: max over SMs, max with HBM, plus the serial tail and the
    launch overhead; and its SM fill. ``tails``: the tail Costs of the programs that have one.
    A last arriver's (run after the rest, one per group, in parallel over SMs) adds the longest
    one program's time. Tails after a spin-wait (``after_wait``: every waiting program runs its
    own, once the programs it waited on are done) start one load latency after the body (the poll
    that sees the last arrival), are placed over the SMs like programs and held to HBM bandwidth,
    and their bytes leave the body's."""
    if not per_program or ctas_per_sm == 0:
        return dict(time=float("inf"), busy=0.0, fill=0.0, bound="-", hbm=0.0, tail=0.0, sms_used=0)
    times = sm_times(per_program, ctas_per_sm, num_warps, dev)
    worst = max(times, key=lambda t: t["busy"])
    waited = [c for c in tails if c.after_wait]
    last = [c for c in tails if not c.after_wait]
    waited_bytes = sum(c.bytes for c in waited)
    hbm = max(0.0, touched_bytes - waited_bytes) / dev.hbm_bytes_s
    body = max(worst["busy"], hbm)
    tail = tail_busy = 0.0
    if last:
        tail = tail_busy = max(t["busy"] for t in sm_times([max(last, key=lambda c: c.bytes + sum(c.mma.values()))], 1, num_warps, dev))
    if waited:
        after = sm_times(waited, ctas_per_sm, num_warps, dev)
        # a waiting program sees the last arrival one round trip after it (its next poll)
        span = dev.latency_s + max(max(t["busy"] for t in after), waited_bytes / dev.hbm_bytes_s)
        tail += span
        tail_busy += span * len(after)
    total = body + tail + dev.launch_s
    # An SM is busy while it works or while its share of the launch's bytes streams through HBM
    # (shared by the SMs that have programs): a memory-bound launch on every SM fills the GPU, a
    # launch on a few SMs does not, however long they take.
    share = dev.hbm_bytes_s / len(times)
    busy = sum(min(body, max(t["busy"], t["bytes"] / share)) for t in times) + tail_busy
    bound = "hbm" if hbm >= worst["busy"] else max(("mma", "mem", "issue"), key=lambda k: worst[k])
    return dict(time=total, busy=busy, fill=busy / (dev.sms * total), bound=bound, hbm=hbm, tail=tail, sms_used=len(times))


def torch_op_time(bytes_moved: int, dev: Device) -> float:
    """A torch op between launches (zero-fill, sum, copy): memory-bound, one launch."""
    return bytes_moved / dev.hbm_bytes_s + dev.launch_s


def ideal_time(flops: float, bytes_: float, dev: Device) -> float:
    return max(flops / dev.mma_flops, bytes_ / dev.hbm_bytes_s) + dev.launch_s


# ----------------------------------------------------------------------------- PyTorch's paths

# Assumed shares of the tensor peak, for the docs' comparison only (estimates, not measured here):
# FlashAttention-2 (SDPA's flash backend on sm_90) reaches about a third of an H100's dense peak
# forward and a quarter backward at head dim 64 (FlashAttention-3 paper, figures 5-7); the
# memory-efficient (CUTLASS) kernels less; cuBLAS batched matmuls about 70%.
FA2_EFFICIENCY = (0.33, 0.25)
MEM_EFFICIENT_EFFICIENCY = (0.25, 0.18)
CUBLAS_EFFICIENCY = 0.7


def _grid_time(programs: int, flops_per_program: float, eff: float, dev: Device) -> float:
    """Equal programs, one per SM at a time: whole waves of per-program time."""
    per = flops_per_program / (dev.mma_per_sm * eff)
    return math.ceil(programs / dev.sms) * per


def pytorch_attention_times(B: int, H: int, N: int, M: int, D: int, elem: int, dev: Device) -> dict:
    """Modelled (forward, backward) seconds of PyTorch's attention paths at one shape, by the same
    roofline as the kernels (programs on SMs, bytes over HBM, 2 us per launch) with the assumed
    efficiencies above. The backward kernels of both SDPA backends own key blocks (128 / 64 keys)
    and loop over every query, so at MiT's M = 256 they run B * H * 2 (or 4) programs."""
    bh = B * H
    io = 4 * (N + M) * D * elem * bh  # q, out, dO, dq and k, v, dk, dv, once each
    out = {}
    f_fwd, f_bwd = FA2_EFFICIENCY
    fwd = max(_grid_time(bh * math.ceil(N / 128), 4 * 128 * M * D, f_fwd, dev), io / 2 / dev.hbm_bytes_s) + dev.launch_s
    # backward: dot(dO, out) preprocess, the main kernel (dq accumulated in fp32 with atomics), dq
    # conversion: three launches
    dq_acc = 2 * N * D * 4 * bh
    bwd = max(_grid_time(bh * math.ceil(M / 128), 5 * 2 * 128 * N * D, f_bwd, dev), (io + dq_acc) / dev.hbm_bytes_s)
    out["sdpa flash (FA2)"] = (fwd, bwd + 3 * dev.launch_s)
    e_fwd, e_bwd = MEM_EFFICIENT_EFFICIENCY
    fwd = max(_grid_time(bh * math.ceil(N / 64), 4 * 64 * M * D, e_fwd, dev), io / 2 / dev.hbm_bytes_s) + dev.launch_s
    bwd = max(_grid_time(bh * math.ceil(M / 64), 5 * 2 * 64 * N * D, e_bwd, dev), (io + dq_acc) / dev.hbm_bytes_s)
    out["sdpa efficient"] = (fwd, bwd + 2 * dev.launch_s)
    # unfused: S = q k^T, P = softmax(S), out = P v; backward dv = P^T dO, dP = dO v^T,
    # dS = P * (dP - rowsum(dP * P)), dq = dS k, dk = dS^T q; each an N x M tensor in and out.
    nm = N * M * elem * bh
    mm = 2 * N * M * D * bh / (dev.mma_flops * CUBLAS_EFFICIENCY)
    q_bytes = N * D * elem * bh

    def op(flops_s, nbytes):
        return max(flops_s, nbytes / dev.hbm_bytes_s) + dev.launch_s

    fwd = op(mm, 2 * q_bytes + nm) + op(0, 2 * nm) + op(mm, nm + 2 * q_bytes)
    bwd = op(mm, nm + 2 * q_bytes) + op(mm, nm + 2 * q_bytes) + op(0, 3 * nm) + op(mm, nm + 2 * q_bytes) * 2
    out["unfused (matmul + softmax)"] = (fwd, bwd)
    return out
