"""Static kernel audit: what every Triton launch would cost on an H100 / H200, without a GPU.

    python -m fastuda.kernels.audit            # the tables: every launch, every op case
    python -m fastuda.kernels.audit --summary  # one row per op, dtype and config (worst shape)
    python -m fastuda.kernels.audit --model    # modelled time against the ideal, per op call
    python -m fastuda.kernels.audit --json     # one JSON object: launches, ops, failures
    python -m fastuda.kernels.audit --vs-pytorch   # attention per MiT-B5 stage against PyTorch's paths
    python -m fastuda.kernels.audit --ops pseudo_label,cross_entropy_bwd --match "B2 "
    python -m fastuda.kernels.audit --ops attention_bwd --bwd-policy budget   # the pre-issue-18 backward
    python -m fastuda.kernels.audit --model --param latency_s=3.5e-7   # what-if: a model parameter changed

How. A stand-in Triton driver reports an sm_90 target; the public launchers (``*_fwd`` /
``*_bwd`` in kernels/) run on CPU tensors at the real shapes (``torch.empty``: untouched pages
cost no memory) with every ``kernel[grid](...)`` replaced by a compile-only warm-up that records
the kernel, its grid, its arguments and the compiled artefacts. Launchers that size their grid
from the device's SM count see an H200's 132 SMs. Torch work the launchers do between kernels
(zero-fills, partial sums, copies) is recorded by a TorchDispatchMode. Every figure is derived
from what is captured (kernel names, grids, constexprs, TTGIR, PTX, cubin); nothing is keyed on
a kernel's name, so a launcher may change its blocks, kernels or number of launches freely.

Per launch:
* registers, spill stack bytes (``cuobjdump -res-usage`` on the cubin), shared memory;
* CTAs per SM from registers / shared memory / warps (H200: 64 K registers, 228 KiB shared
  memory, 64 warps, 32 CTAs per SM), waves over 132 SMs and the fill of the last wave;
* per dot (TTGIR): the instruction (``wgmma`` for ``ttng.warp_group_dot``, ``mma.sync`` for a
  ``tt.dot`` on an ``nvidia_mma`` v2 layout, ``fma`` otherwise) and its work ratio: FLOPs
  issued / FLOPs needed per execution = (result tile the layout's warps cover, rounded up to
  whole warp tiles, e.g. a 64-row tile under ``warpsPerCTA = [8, 1]`` covers 128 rows: 2.0) /
  (result tile) x K padding (``BLOCK_D*`` constexpr / head dim);
* exp work ratio: exps issued / exps needed, counting every ``math.exp`` / ``math.exp2`` of the
  TTGIR at the elements its layout gives each thread times the threads (padding channels and
  lanes or warps holding duplicates count as issued). When every exp sits in straight-line code
  or in loops with constant bounds (the loss kernels' channel loop) the total is exact:
  programs x per-program exps / the op's needed exps (one per logit). When an exp sits in a
  loop with runtime bounds (attention's query loop) the ratio is per iteration: exps issued
  in the loop body / scores the iteration needs (BLOCK_N queries x the keys it covers, capped
  at M; without those constexprs, the elements of the body's largest exp);
* global load widths (PTX ``ld.global`` and ``cp.async`` bytes per thread) and ``bar.sync``
  count;
* load re-reads: bytes the loads request (layout elements x element size x programs x trips)
  / unique bytes of the tensors read; only where every load has static trips. Re-reads are L2
  / L1 hits, reported, not gated.

Per op: minimum-traffic ratio = bytes the launches touch / bytes the op must move. A launch
touches the whole span of every tensor argument its compiled TTGIR still uses (pointer
arguments folded away by constexprs do not count; aliasing arguments count once); torch ops
between launches count their inputs and outputs (views and ``empty`` count zero). The op must
read its inputs once and write its outputs once.

Modelled time (kernels/timing.py, docs/kernels.md): per launch, the work of every program (the
TTGIR evaluated per program id) placed on the SMs, against HBM bandwidth, plus launch overhead;
per op call, the sum against the ideal (essential FLOPs / peak or essential bytes / bandwidth,
plus one launch), with H100 and H200 parameters.

Gate (``failures`` in the JSON; ``tests/test_audit.py``): any spill, any 16-bit dot that is not
wgmma, and for every op call whose ideal exceeds 5 us a modelled time over 1.3x the ideal or SMs
busy less than half of it. The work and traffic ratios above are information, not gated: they
rewarded doing less work on fewer SMs.
"""

import argparse
import dataclasses
import json
import math
import os
import re
import subprocess
import sys
import tempfile
from collections import Counter

if __name__ == "__main__":
    # Compile for real: Triton reads this when it is imported. Only when run as a program: a test
    # session under the interpreter imports this module for its parsers.
    os.environ.pop("TRITON_INTERPRET", None)

import torch  # noqa: E402
import triton  # noqa: E402
from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402

from . import timing as T  # noqa: E402

LIMIT = 1.05  # traffic and work ratios: reported, not gated
TIME_LIMIT = 1.3  # modelled / ideal time, for every op call whose ideal exceeds IDEAL_GATED_S
IDEAL_GATED_S = 5e-6
FILL_LIMIT = 0.5  # SM-busy time / (SMs x modelled time), same calls
H200 = dict(sms=132, regs=65536, shared=228 * 1024, shared_reserved=1024, warps=64, ctas=32)


# ----------------------------------------------------------------------------- the cases


# MiT-B5 at a 512 crop, per stage: queries N, heads, attention layers (the model's depths).
MIT_B5_STAGES = ((16384, 1, 3), (4096, 2, 6), (1024, 5, 40), (256, 8, 3))


def _attention_cases():
    """MiT-B5 at a 512 crop: stage i has N = 16384 / 4^i queries, M = 256 keys (spatial
    reduction), heads 1, 2, 5, 8, head dim 64; batch 2 (a UDA step's half), 8 and 18."""
    for dtype in (torch.float16, torch.bfloat16):
        for B in (2, 8, 18):
            for N, H, _ in MIT_B5_STAGES:
                yield dict(B=B, H=H, N=N, M=256, D=64, dtype=dtype)


def _empty(*shape, dtype=torch.float32, device="cpu", high=None):
    """Uninitialised on the CPU (the audit only compiles: untouched pages cost nothing); random
    values on a GPU (bench/gpu_check.py times the same calls), integers in [0, high)."""
    if device == "cpu":
        return torch.empty(*shape, dtype=dtype)
    if high is not None:
        return torch.randint(0, high, shape, dtype=dtype, device=device)
    return torch.randn(*shape, device=device).to(dtype)


def _mit_qkv(B, H, N, M, D, dtype, device="cpu"):
    """q (B, H, N, D) and k, v (B, H, M, D) with MiT's strides (views of its linear layers)."""
    q = _empty(B, N, H * D, dtype=dtype, device=device).view(B, N, H, D).transpose(1, 2)
    kv = _empty(B, M, 2 * H * D, dtype=dtype, device=device).view(B, M, 2, H, D).permute(2, 0, 3, 1, 4)
    return q, kv[0], kv[1]


def _attention_fwd(B, H, N, M, D, dtype, device="cpu"):
    from . import attention as A

    q, k, v = _mit_qkv(B, H, N, M, D, dtype, device)
    return (q, k, v), lambda: A.attention_fwd(q, k, v, D**-0.5)


def _attention_bwd(B, H, N, M, D, dtype, device="cpu"):
    from . import attention as A

    q, k, v = _mit_qkv(B, H, N, M, D, dtype, device)
    if device == "cpu":
        with _CompileOnly(H200["sms"]):
            out, lse = A.attention_fwd(q, k, v, D**-0.5)
    else:
        out, lse = A.attention_fwd(q, k, v, D**-0.5)
    do = torch.randn_like(out) if device != "cpu" else torch.empty_like(out)
    return (do, q, k, v, out, lse), lambda: A.attention_bwd(do, q, k, v, out, lse, D**-0.5)


LOSS_SHAPES = ((2, 19, 512, 512), (2, 19, 1024, 1024), (18, 19, 1024, 1024))
LOSS_DTYPES = (torch.float32, torch.bfloat16)


def _loss_cases():
    for dtype in LOSS_DTYPES:
        for B, C, H, W in LOSS_SHAPES:
            yield dict(B=B, C=C, H=H, W=W, dtype=dtype)


def _pseudo_label(B, C, H, W, dtype, device="cpu"):
    from .pseudo_label import pseudo_label_fwd

    logits = _empty(B, C, H, W, dtype=dtype, device=device)
    # DAFormer's teacher pass: 15 / 120 ignored rows, one weight for the batch.
    return (logits,), lambda: pseudo_label_fwd(logits, 0.968, 15, 120, False, None)


def _ce_inputs(B, C, H, W, dtype, device="cpu"):
    return (
        _empty(B, C, H, W, dtype=dtype, device=device),
        _empty(B, H, W, dtype=torch.int64, device=device, high=C),
        _empty(B, H, W, device=device),
    )


def _cross_entropy_fwd(B, C, H, W, dtype, device="cpu"):
    from .cross_entropy import cross_entropy_fwd

    logits, target, weight = _ce_inputs(B, C, H, W, dtype, device)
    return (logits, target, weight), lambda: cross_entropy_fwd(logits, target, weight, 255)


def _cross_entropy_bwd(B, C, H, W, dtype, device="cpu"):
    from .cross_entropy import cross_entropy_bwd

    logits, target, weight = _ce_inputs(B, C, H, W, dtype, device)
    g = torch.ones((), dtype=torch.float32, device=device)
    return (g, logits, target, weight), lambda: cross_entropy_bwd(g, logits, target, weight, 255)


# HRDA (gtaHR2csHR): a 1024 x 1024 training crop seen at 0.5 (lr 512 -> 128 x 128 logits at
# 1/4), a 512 x 512 detail crop (128 x 128 hr logits) at a box of the 256 x 256 output; the
# pseudo-label pass fuses over the whole output (no box). Class-wise attention.
SCALE_FUSION_SHAPES = {
    "train": ((2, 19, 128, 128), (64, 192, 32, 160)),
    "train-lr256": ((2, 19, 256, 256), (192, 320, 64, 192)),
    # HRDA's detail offsets are multiples of 8 image pixels, 2 logits on the fused grid: 3 boxes in
    # 4 miss the 8-element (16-byte bf16) alignment of the boxes above
    "train-offset": ((2, 19, 128, 128), (66, 194, 34, 162)),
    "train-lr256-offset": ((2, 19, 256, 256), (194, 322, 66, 194)),
    "pseudo": ((2, 19, 128, 128), None),
}


def _scale_fusion_cases():
    for dtype in (torch.float32, torch.bfloat16):
        for name in SCALE_FUSION_SHAPES:
            yield dict(case=name, dtype=dtype)


def _scale_fusion_inputs(case, dtype, device="cpu"):
    (B, C, h, w), box = SCALE_FUSION_SHAPES[case]
    hd, wd = (2 * h, 2 * w) if box is None else (box[1] - box[0], box[3] - box[2])
    lr, att = _empty(B, C, h, w, dtype=dtype, device=device), _empty(B, C, h, w, dtype=dtype, device=device)
    hr = _empty(B, C, hd, wd, dtype=dtype, device=device)
    return lr, att, hr, (None if box is None else torch.tensor(box, device=device))


def _scale_fusion_fwd(case, dtype, device="cpu"):
    from .scale_fusion import scale_fusion_fwd

    lr, att, hr, box = _scale_fusion_inputs(case, dtype, device)
    inputs = (lr, att, hr) if box is None else (lr, att, hr, box)
    return inputs, lambda: scale_fusion_fwd(lr, att, hr, box, 2)


def _scale_fusion_bwd(case, dtype, device="cpu"):
    from .scale_fusion import scale_fusion_bwd

    lr, att, hr, box = _scale_fusion_inputs(case, dtype, device)
    g = _empty(lr.shape[0], lr.shape[1], 2 * lr.shape[2], 2 * lr.shape[3], dtype=dtype, device=device)
    inputs = (g, lr, att, hr) if box is None else (g, lr, att, hr, box)
    return inputs, lambda: scale_fusion_bwd(g, lr, att, hr, box, 2)


def calls(ops=None, match=None, device="cpu"):
    """(op, case label, inputs, call) of every audited op call, built on ``device``: the CPU for
    the audit, a GPU for bench/gpu_check.py, which times the same calls against the model."""
    for op in ops or OPS:
        cases, build = OPS[op][:2]
        for case in cases():
            label = _case_label(case)
            if match and match not in label:
                continue
            inputs, call = build(**case, device=device)
            yield op, label, inputs, call


def _logits(c):
    return c["B"] * c["C"] * c["H"] * c["W"]


# op: (cases, builder, exps needed for a case or None, head dim for the dot K padding or None)
OPS = {
    "attention_fwd": (_attention_cases, _attention_fwd, lambda c: c["B"] * c["H"] * c["N"] * c["M"], "D"),
    "attention_bwd": (_attention_cases, _attention_bwd, lambda c: c["B"] * c["H"] * c["N"] * c["M"], "D"),
    "pseudo_label": (_loss_cases, _pseudo_label, _logits, None),
    "cross_entropy_fwd": (_loss_cases, _cross_entropy_fwd, _logits, None),
    "cross_entropy_bwd": (_loss_cases, _cross_entropy_bwd, _logits, None),
    "scale_fusion_fwd": (_scale_fusion_cases, _scale_fusion_fwd, None, None),
    "scale_fusion_bwd": (_scale_fusion_cases, _scale_fusion_bwd, None, None),
}


# ----------------------------------------------------------------------------- capture


class _Sm90Driver:
    """Just enough of a Triton driver for compiling: the target, a device and a stream id."""

    def get_current_target(self):
        from triton.backends.compiler import GPUTarget

        return GPUTarget("cuda", 90, 32)

    def get_current_device(self):
        return 0

    def get_current_stream(self, device=None):
        return 0


@dataclasses.dataclass
class Launch:
    kernel: str
    grid: tuple
    args: dict  # parameter name -> value (tensors included)
    constexprs: dict
    num_warps: int
    compiled: object


@dataclasses.dataclass
class _H200Properties:
    multi_processor_count: int
    name: str = "NVIDIA H200 (audit stand-in)"
    major: int = 9
    minor: int = 0
    total_memory: int = 141 * 2**30


class _CompileOnly:
    """Within the block: kernel[grid](...) compiles for sm_90 and records a Launch instead of
    running; functions named *sm_count* in kernels/ modules and torch.cuda.get_device_properties
    report ``sms`` SMs."""

    def __init__(self, sms, launches=None):
        self.sms, self.launches = sms, launches if launches is not None else []

    def __enter__(self):
        from triton.runtime import driver
        from triton.runtime.jit import JITFunction

        driver.set_active(_Sm90Driver())
        self._saved = [(JITFunction, "__getitem__", JITFunction.__getitem__)]
        launches = self.launches

        def compile_only(fn, grid):
            def run(*args, **kwargs):
                named = dict(zip(fn.arg_names, args))
                named.update({k: v for k, v in kwargs.items() if k in fn.arg_names})
                grid_t = grid(dict(named, **kwargs)) if callable(grid) else grid
                grid_t = tuple(grid_t) + (1,) * (3 - len(grid_t))
                compiled = fn.run(*args, grid=grid_t, warmup=True, **kwargs)
                cx = {p.name: named[p.name] for p in fn.params if p.is_constexpr and p.name in named}
                launches.append(Launch(fn.fn.__name__, grid_t, named, cx, kwargs.get("num_warps", 4), compiled))

            return run

        JITFunction.__getitem__ = compile_only
        # A launcher that asks CUDA for the SM count gets an H200's.
        self._saved.append((torch.cuda, "get_device_properties", torch.cuda.get_device_properties))
        torch.cuda.get_device_properties = lambda *a, **k: _H200Properties(self.sms)
        for mod in [m for name, m in sys.modules.items() if name.startswith(__package__ + ".") and m is not None]:
            for attr in dir(mod):
                if "sm_count" in attr and callable(getattr(mod, attr)):
                    self._saved.append((mod, attr, getattr(mod, attr)))
                    setattr(mod, attr, lambda *a, **k: self.sms)
        return self

    def __exit__(self, *exc):
        for obj, attr, value in reversed(self._saved):
            setattr(obj, attr, value)


def _span(t: torch.Tensor) -> tuple[int, int]:
    """[start, end) bytes of the storage a tensor view can touch."""
    if t.numel() == 0:
        return t.data_ptr(), t.data_ptr()
    extent = 1 + sum((n - 1) * abs(s) for n, s in zip(t.shape, t.stride()))
    return t.data_ptr(), t.data_ptr() + extent * t.element_size()


def _tensor_args(launch):
    """(name, tensor) of a launch's tensor arguments; a host tensor descriptor counts as its base."""
    for name, value in launch.args.items():
        value = getattr(value, "base", value)
        if isinstance(value, torch.Tensor):
            yield name, value


def _union_bytes(spans) -> int:
    total, end = 0, -1
    for a, b in sorted(spans):
        if b <= end:
            continue
        total += b - max(a, end)
        end = b
    return total


class _TorchTraffic(TorchDispatchMode):
    """Bytes moved by the torch ops a launcher runs (views and ``empty`` move nothing)."""

    FREE = ("empty", "empty_like", "empty_strided", "new_empty", "new_empty_strided", "lift_fresh", "detach", "alias")

    def __init__(self):
        super().__init__()
        self.ops = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        name = func.overloadpacket.__name__
        returns = func._schema.returns
        is_view = bool(returns) and returns[0].alias_info is not None and not returns[0].alias_info.is_write
        if name not in self.FREE and not is_view:
            tensors = [a for a in torch.utils._pytree.tree_leaves((args, kwargs)) if isinstance(a, torch.Tensor)]
            outs = [o for o in torch.utils._pytree.tree_leaves(out) if isinstance(o, torch.Tensor)]
            seen = {_span(o) for o in outs}
            read = [_span(t) for t in tensors if _span(t) not in seen]
            self.ops.append((name, _union_bytes(read) + _union_bytes(seen)))
        return out


# ----------------------------------------------------------------------------- TTGIR / PTX


_LAYOUT_DEF = re.compile(r"^#(\w+) = #ttg\.(\w+)<\{(.*)\}>")
_TENSOR = re.compile(r"tensor<([0-9x]+)x([a-z!][^,>]*?)(?:, (#[^>]*>?[^>]*))?>")


def _ints(text, key):
    m = re.search(key + r" = \[([0-9, ]+)\]", text)
    return [int(x) for x in m.group(1).split(",")] if m else None


def _layouts(ttgir: str) -> dict:
    out = {}
    for line in ttgir.splitlines():
        m = _LAYOUT_DEF.match(line)
        if m:
            name, kind, body = m.groups()
            registers = re.search(r"register = \[(.*?)\], lane", body)
            out["#" + name] = dict(
                registers=None if registers is None else len(re.findall(r"\[[-0-9, ]*\]", registers.group(1))),
                kind=kind, spt=_ints(body, "sizePerThread"), tpw=_ints(body, "threadsPerWarp"),
                wpc=_ints(body, "warpsPerCTA"), instr=_ints(body, "instrShape"), order=_ints(body, "order"),
                version=int(re.search(r"versionMajor = (\d+)", body).group(1)) if "versionMajor" in body else None,
            )  # fmt: skip
    return out


def _layout_of(text: str, layouts: dict):
    """The layout dict of a tensor type's encoding text ('#blocked1' or '#ttg.slice<{dim = 0,
    parent = #blocked}>'), with 'slice' resolved to its parent and the sliced dim."""
    m = re.match(r"#ttg\.slice<\{dim = (\d+), parent = (#\w+)\}>", text.strip())
    if m:
        return layouts.get(m.group(2)), int(m.group(1))
    return layouts.get(text.strip()), None


def _mma_tile(lay):
    """(rows, cols) one warp covers and the elements per thread in it, for nvidia_mma."""
    if lay["version"] == 3:
        return 16, lay["instr"][1], 16 * lay["instr"][1] // 32
    return 16, 8, 4


def _issued(shape, lay, sliced, threads):
    """Elements a tensor op issues in all threads (duplicates and padding included)."""
    if lay is None:
        return None
    if lay["kind"] == "blocked":
        spt, tpw, wpc = lay["spt"], lay["tpw"], lay["wpc"]
        dims = [d for d in range(len(spt)) if d != sliced]
        per_thread = 1
        for i, d in enumerate(dims):
            tile = spt[d] * tpw[d] * wpc[d]
            per_thread *= math.ceil(shape[i] / tile) * spt[d]
        return threads * per_thread
    if lay["kind"] == "linear" and sliced is None and lay["registers"] is not None:
        return threads * 2 ** lay["registers"]  # a linear layout maps exactly this shape
    if lay["kind"] == "nvidia_mma":
        rows, cols, per_warp_tile = _mma_tile(lay)
        cover = [rows * lay["wpc"][0], cols * lay["wpc"][1]]
        if sliced is None:
            return threads * math.ceil(shape[0] / cover[0]) * math.ceil(shape[1] / cover[1]) * per_warp_tile
        kept = 1 - sliced  # a row (or column) vector of the tile: 2 rows / per-thread columns
        per_thread = math.ceil(shape[0] / cover[kept]) * (2 if kept == 0 else per_warp_tile // 2)
        return threads * per_thread
    return None


def _const_ints(ttgir: str) -> dict:
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"(%[\w.]+) = arith\.constant (-?\d+) : i(?:32|64)", ttgir)}


def _walk(ttgir: str):
    """Yields (line, trips) for each op line of the kernel body: trips is the product of the
    enclosing scf.for trip counts, None when one of them has runtime bounds."""
    consts = _const_ints(ttgir)
    stack = []
    for raw in ttgir.splitlines():
        line = raw.strip()
        if line.startswith("}"):
            if stack:
                stack.pop()
            if line.endswith("{"):
                stack.append(1)
            continue
        m = re.search(r"scf\.for %\S+ = (%[\w.]+) to (%[\w.]+) step (%[\w.]+)", line)
        if m and line.endswith("{"):
            lb, ub, st = (consts.get(x) for x in m.groups())
            trips = None if None in (lb, ub, st) else max(0, -(-(ub - lb) // st))
            stack.append(trips)
            continue
        if line.endswith("{"):
            stack.append(1)
        trips = 1
        for t in stack:
            trips = None if (trips is None or t is None) else trips * t
        yield line, trips


def _dots(ttgir, layouts, k_pad):
    dots = []
    for line, _ in _walk(ttgir):
        m = re.search(r"= (ttng\.warp_group_dot|tt\.dot) (.*)", line)
        if not m or "dot_wait" in line:
            continue
        op, rest = m.groups()
        operands = re.findall(r"(?:tensor|!ttg\.memdesc)<([0-9x]+)x(\w+)", rest)
        (a_shape, a_ty), (_, _) = operands[0], operands[1]
        res = re.search(r"-> tensor<([0-9x]+)x\w+, (#\w+)>", rest)
        M, N = (int(x) for x in res.group(1).split("x"))
        K = int(a_shape.split("x")[-1])
        lay = layouts.get(res.group(2))
        if op == "ttng.warp_group_dot":
            instr = "wgmma"
        elif lay and lay["kind"] == "nvidia_mma":
            instr = "wgmma" if lay["version"] == 3 else "mma.sync"
        else:
            instr = "fma"
        dup = None
        if lay and lay["kind"] == "nvidia_mma":
            rows, cols, _ = _mma_tile(lay)
            cover_m, cover_n = rows * lay["wpc"][0], cols * lay["wpc"][1]
            dup = (math.ceil(M / cover_m) * cover_m * math.ceil(N / cover_n) * cover_n) / (M * N)
        elif lay and lay["kind"] == "blocked":
            dup = 1.0  # FMA dots: the blocked layout's own duplication is not modelled
        ratio = None if dup is None else dup * k_pad
        dots.append(dict(shape=[M, N, K], dtype=a_ty, instr=instr, dup=dup, ratio=ratio))
    return dots


def _exps(ttgir, layouts, threads):
    """[(issued elements per execution, elements, trips)] of every exp op."""
    out = []
    for line, trips in _walk(ttgir):
        if not re.search(r"= math\.exp2? ", line):
            continue
        m = re.search(r": tensor<([0-9x]+)x\w+, (.*)>\s*(?:loc|$)", line)
        shape = [int(x) for x in m.group(1).split("x")]
        lay, sliced = _layout_of(m.group(2), layouts)
        out.append((_issued(shape, lay, sliced, threads), math.prod(shape), trips))
    return out


_ELEM_BYTES = {"f16": 2, "bf16": 2, "f32": 4, "f64": 8, "i1": 1, "i8": 1, "i16": 2, "i32": 4, "i64": 8}


def _load_bytes(ttgir, layouts, threads):
    """Bytes one program's tt.load ops request (None when a load sits in a runtime loop or its
    layout is not modelled)."""
    total = 0
    for line, trips in _walk(ttgir):
        if re.search(r"= (?:ttng\.async_tma_copy_global_to_local|tt\.descriptor_load|tt\.descriptor_gather) ", line):
            return None  # TMA: not modelled
        if not re.search(r"= (?:tt\.load|ttg\.async_copy_global_to_local) ", line):
            continue
        m = re.search(r": tensor<([0-9x]+)x!tt\.ptr<(\w+)>, (#[^>]*>?)>", line)
        if m is None:  # a scalar load
            total += 8 * (trips or 0)
            if trips is None:
                return None
            continue
        shape = [int(x) for x in m.group(1).split("x")]
        lay, sliced = _layout_of(m.group(3), layouts)
        issued = _issued(shape, lay, sliced, threads)
        if issued is None or trips is None:
            return None
        total += issued * _ELEM_BYTES.get(m.group(2), 4) * trips
    return total


def _ptx_loads(ptx: str) -> Counter:
    widths = Counter()
    for m in re.finditer(r"ld\.global(?:\.[a-z]+)*?(?:\.v(\d))?\.[bfus](\d+)", ptx):
        if ".relaxed." in m.group(0) or ".acquire." in m.group(0):
            continue  # an atomic read (a poll of a counter), not a data load
        widths[int(m.group(1) or 1) * int(m.group(2)) // 8] += 1
    for m in re.finditer(r"cp\.async\.c[ag]\.shared\.global[^,]*,[^,]*, (0x[0-9a-f]+|\d+)", ptx):
        widths[int(m.group(1), 0)] += 1
    return widths


def _used_pointer_args(ttgir: str) -> set:
    sig = re.search(r"tt\.func public @\w+\((.*?)\) attributes", ttgir, re.S)
    names = re.findall(r"%(\w+): !tt\.(?:ptr|tensordesc)", sig.group(1)) if sig else []
    body = ttgir[sig.end():] if sig else ttgir
    return {n for n in names if re.search(rf"%{n}\b", body)}


_RES_USAGE = {}


def _res_usage(compiled) -> tuple[int, int]:
    key = compiled.hash if hasattr(compiled, "hash") else id(compiled)
    if key not in _RES_USAGE:
        cuobjdump = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
        with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
            f.write(compiled.asm["cubin"])
            f.flush()
            usage = subprocess.run([cuobjdump, "-res-usage", f.name], capture_output=True, text=True, check=True).stdout
        _RES_USAGE[key] = tuple(int(re.search(rf"{k}:(\d+)", usage).group(1)) for k in ("REG", "STACK"))
    return _RES_USAGE[key]


# ----------------------------------------------------------------------------- analysis


def _occupancy(regs, shared, warps):
    per_warp = math.ceil(regs * 32 / 256) * 256
    by_regs = H200["regs"] // max(per_warp * warps, 1)
    by_shared = H200["shared"] // (shared + H200["shared_reserved"]) if shared else H200["ctas"]
    return max(0, min(H200["ctas"], H200["warps"] // warps, by_regs, by_shared))


def _fmt_cx(cx: dict) -> str:
    def short(v):
        return {True: "T", False: "F"}.get(v, v) if isinstance(v, bool) else getattr(v, "name", v)

    return " ".join(f"{k}={short(v)}" for k, v in cx.items() if k not in ("ACC", "PRECISION"))


def _iteration_scores(case: dict, cx: dict) -> int | None:
    """Scores one iteration of attention's query loop needs: BLOCK_N queries x the keys it covers
    (all M when the keys are resident in RESIDENT tiles of BLOCK_M; one tile when streaming).
    Tile padding beyond M is not needed work, so it counts as issued only."""
    if "BLOCK_N" not in cx or "BLOCK_M" not in cx or "M" not in case:
        return None
    return cx["BLOCK_N"] * min(case["M"], cx["BLOCK_M"] * cx.get("RESIDENT", 1))


def _analyse_launch(launch: Launch, exps_needed, k_pad, iter_needed=None):
    c = launch.compiled
    ttgir, ptx = c.asm["ttgir"], c.asm["ptx"]
    regs, stack = _res_usage(c)
    shared = c.metadata.shared
    warps = c.metadata.num_warps
    threads = 32 * warps
    layouts = _layouts(ttgir)
    programs = math.prod(launch.grid)
    ctas = _occupancy(regs, shared, warps)
    capacity = ctas * H200["sms"]
    waves = programs / capacity if capacity else float("inf")
    last = programs % capacity if capacity else 0
    dots = _dots(ttgir, layouts, k_pad)
    exps = _exps(ttgir, layouts, threads)
    exp_ratio, exp_mode, exps_static = None, None, None
    if exps:
        if any(e[0] is None for e in exps):
            exp_ratio, exp_mode = float("inf"), "unmodelled layout"
        elif all(e[2] is not None for e in exps) and exps_needed:
            exps_static = programs * sum(e[0] * e[2] for e in exps)
            exp_ratio, exp_mode = exps_static / exps_needed, "total"
        else:
            looped = [e for e in exps if e[2] is None]
            needed = iter_needed or max(e[1] for e in looped)
            exp_ratio, exp_mode = sum(e[0] for e in looped) / needed, "per iteration"
    req = _load_bytes(ttgir, layouts, threads)
    loads = _ptx_loads(ptx)
    # the time model prices each global load and store by its compiled accesses: how many of the
    # kernel's memory ops it could tie to them (the rest take their layout's vector)
    widths = _evaluator(c).widths
    mem_ops = T.memory_op_aliases(ttgir)
    return dict(
        kernel=launch.kernel, config=_fmt_cx(launch.constexprs), num_warps=warps, grid=list(launch.grid),
        programs=programs, registers=regs, spill_bytes=stack, shared_bytes=shared, ctas_per_sm=ctas,
        waves=round(waves, 2), last_wave_fill=round(last / capacity, 2) if last else 1.0,
        dots=dots, mma_ratio=max((d["ratio"] for d in dots if d["ratio"] is not None), default=None),
        exp_ratio=None if exp_ratio is None else round(exp_ratio, 3), exp_mode=exp_mode, exps_static=exps_static,
        ptx_ex2=ptx.count("ex2.approx"), load_widths={str(k): v for k, v in sorted(loads.items())},
        bar_sync=len(re.findall(r"\bbar\.sync\b|\bbarrier\.sync\b", ptx)),
        memory_ops_compiled=[sum(a in widths for a in mem_ops), len(mem_ops)],
        load_bytes=None if req is None else programs * req,
    )  # fmt: skip


def _case_label(case: dict) -> str:
    parts = []
    for k, v in case.items():
        parts.append(str(v).replace("torch.", "") if k in ("dtype", "case") else f"{k}{v}")
    return " ".join(parts)


_EVALUATORS = {}
KNOWN_TENSOR_NUMEL = 16  # at most this many elements: a box, not data (workspaces have 64 and up)
EXACT_PROGRAMS = 1024
EXACT_TAIL = 512


def _evaluator(c) -> T.Evaluator:
    """The time model's evaluator of a compiled kernel (built once per kernel): its TTGIR, the
    pipeline depth of its cp.async loops, and the widths of its memory accesses as compiled."""
    key = c.hash if hasattr(c, "hash") else id(c)
    if key not in _EVALUATORS:
        stages = getattr(c.metadata, "num_stages", 1) or 1
        pipelined = "cp.async" in c.asm["ptx"]
        ttgir = c.asm["ttgir"]
        _EVALUATORS[key] = T.Evaluator(ttgir, _layouts(ttgir), 32 * c.metadata.num_warps, _issued,
                                       max(1, stages - 1) if pipelined else 1,
                                       T.access_widths(ttgir, c.asm.get("llir", "")))  # fmt: skip
    return _EVALUATORS[key]


def _program_costs(launch: Launch, row: dict):
    """Per-program Cost (and the tails of last-arriver branches) of a launch, in launch order; more
    than EXACT_PROGRAMS programs are sampled (512 evenly spaced, the last included) and each
    takes its nearest sample's cost."""
    c = launch.compiled
    ev = _evaluator(c)
    gx, gy, gz = launch.grid
    P = gx * gy * gz
    scalars = {k: v for k, v in launch.args.items() if isinstance(v, int) and not isinstance(v, bool)}
    # small integer tensors the audit built (scale_fusion's box): their values decide branches
    memory = {n: t.tolist() for n, t in _tensor_args(launch)
              if t.numel() <= KNOWN_TENSOR_NUMEL and not t.is_floating_point() and t.device.type == "cpu"}  # fmt: skip
    ids = list(range(P)) if P <= EXACT_PROGRAMS else sorted({round(i * (P - 1) / 511) for i in range(512)})
    if P > EXACT_PROGRAMS and T.LAUNCH_TICKET in c.asm["ttgir"]:
        # roles by launch order (pseudo_label's weight writers are the last programs): the
        # last EXACT_TAIL programs exactly, so that no program takes the other role's cost
        ids = sorted(set(ids) | set(range(P - EXACT_TAIL, P)))
    sampled, sampled_tails, tails, waited = {}, {}, [], []
    for i in ids:
        pid = (i % gx, (i // gx) % gy, i // (gx * gy))
        cost, tail = ev.program(scalars, pid, launch.grid, memory)
        sampled[i], sampled_tails[i] = cost, tail
        if tail.bytes or tail.instr:
            tails.append(tail)
    if P <= EXACT_PROGRAMS:
        return [sampled[i] for i in range(P)], tails
    keys = sorted(sampled)
    out, k = [], 0
    for i in range(P):
        while k + 1 < len(keys) and abs(keys[k + 1] - i) <= abs(keys[k] - i):
            k += 1
        out.append(sampled[keys[k]])
        if sampled_tails[keys[k]].after_wait:  # every waiting program runs its own tail
            waited.append(sampled_tails[keys[k]])
    return out, [t for t in tails if not t.after_wait] + waited


def _program_kinds(per_program, row: dict, dev) -> list[dict]:
    """The launch's distinct program costs (H100), in order of first appearance, at most 4: how
    many programs cost that, and each part of a program alone, in us (mma, issue, round trips x
    latency, bytes over one SM's port). For a grid whose programs differ (the attention
    backward's pair roles, pseudo_label's writers)."""
    kinds = {}
    for c in per_program:
        mma, issue = T._program_parts(c, row["ctas_per_sm"] or 1, row["num_warps"], dev)
        key = (round(mma * 1e6, 2), round(issue * 1e6, 2), round(c.rounds, 1), round(c.bytes))
        if key not in kinds and len(kinds) == 4:
            continue
        k = kinds.setdefault(key, dict(count=0, mma_us=key[0], issue_us=key[1], rounds=key[2],
                                       latency_us=round(c.rounds * dev.latency_s * 1e6, 2),
                                       port_us=round(c.bytes / (dev.sm_port_bytes_clk * dev.clock_hz) * 1e6, 2)))  # fmt: skip
        k["count"] += 1
    return list(kinds.values())


def gate(where: str, modelled: float, ideal: float, fill: float) -> list[str]:
    """The gate on one op call (seconds): within TIME_LIMIT of its ideal and the SMs busy for at
    least FILL_LIMIT of the modelled time, wherever the ideal exceeds IDEAL_GATED_S (below it the
    launch overhead is most of the time and the ratio says little)."""
    if ideal <= IDEAL_GATED_S:
        return []
    out = []
    if modelled / ideal > TIME_LIMIT:
        out.append(f"{where}: modelled {modelled * 1e6:.1f} us is {modelled / ideal:.2f}x the ideal {ideal * 1e6:.1f} us (limit {TIME_LIMIT})")
    if fill < FILL_LIMIT:
        out.append(f"{where}: SMs busy {fill:.0%} of the modelled time (limit {FILL_LIMIT:.0%})")
    return out


def _essential_flops(op: str, case: dict) -> float:
    """FLOPs an op cannot avoid: attention's forward 2 products (q k^T, P v), the backward 5 (the
    scores recomputed, dv, dP, dk, dq); the per-pixel ops none that matter."""
    if op.startswith("attention"):
        per_product = 2 * case["B"] * case["H"] * case["N"] * case["M"] * case["D"]
        return per_product * (2 if op == "attention_fwd" else 5)
    return 0.0


def audit(ops=None, devices=None, match=None) -> dict:
    """Runs every case of ``ops`` (default: all) whose label contains ``match`` and returns
    {launches, ops, failures}."""
    devices = devices or T.load_overrides()
    launches_out, ops_out, failures = [], [], []
    compiled_cache = {}
    for op in ops or OPS:
        cases, build, needed_fn, k_dim = OPS[op]
        for case in cases():
            if match and match not in _case_label(case):
                continue
            launches = []
            inputs, call = build(**case)
            # A training step's steady state: one-time allocations (the zeroed counter workspace
            # of kernels/_pixels.py, kept per stream) happen in this uncounted call. Compiles
            # are cached, so the measured call below reuses them.
            with _CompileOnly(H200["sms"], []):
                call()
            traffic = _TorchTraffic()
            with _CompileOnly(H200["sms"], launches), traffic:
                outputs = call()
            outs = [o for o in torch.utils._pytree.tree_leaves(outputs) if isinstance(o, torch.Tensor)]
            needed_bytes = _union_bytes([_span(t) for t in inputs]) + _union_bytes([_span(t) for t in outs])
            label = _case_label(case)
            moved = sum(b for _, b in traffic.ops)
            op_time = {name: sum(T.torch_op_time(b, dev) for _, b in traffic.ops) for name, dev in devices.items()}
            op_busy = {name: sum(b / dev.hbm_bytes_s for _, b in traffic.ops) * dev.sms for name, dev in devices.items()}
            for launch in launches:
                k_pad = 1.0
                if k_dim:
                    blocks = [v for k, v in launch.constexprs.items() if k.startswith("BLOCK_D")]
                    k_pad = max(blocks) / case[k_dim] if blocks else 1.0
                key = (launch.compiled.hash, launch.grid, tuple(sorted((k, str(v)) for k, v in launch.constexprs.items())))
                row = compiled_cache.get(key) or _analyse_launch(
                    launch, needed_fn(case) if needed_fn else None, k_pad, _iteration_scores(case, launch.constexprs))
                compiled_cache[key] = row
                # touched bytes depend on the tensors, not only on the compiled kernel
                used = _used_pointer_args(launch.compiled.asm["ttgir"])
                touched = _union_bytes([_span(t) for n, t in _tensor_args(launch) if n in used])
                per_program, tails = _program_costs(launch, row)
                # Exps and loads of the programs as they run (branches taken, real trips): a grid
                # whose programs do different work (pseudo_label's label programs and weight
                # writers) is not programs x one program's static count.
                if row["exp_mode"] == "total":
                    row = dict(row, exp_ratio=round(row["exp_ratio"] * sum(c.exps for c in per_program) / row["exps_static"], 3))
                if row["load_bytes"] is not None:
                    row = dict(row, load_bytes=sum(c.loads for c in per_program) + sum(c.loads for c in tails if c.after_wait))
                timing = {}
                for name, dev in devices.items():
                    t = T.launch_time(per_program, tails, row["ctas_per_sm"], row["num_warps"], touched, dev)
                    timing[name] = {k: (round(v * 1e6, 3) if k in ("time", "hbm", "tail") else v) for k, v in t.items()}
                    timing[name]["busy"] = round(t["busy"] * 1e6, 3)
                    timing[name]["fill"] = round(t["fill"], 3)
                    op_time[name] += t["time"]
                    op_busy[name] += t["busy"]
                row = dict(row, op=op, case=label, touched_bytes=touched, timing=timing,
                           program_kinds=_program_kinds(per_program, row, devices["H100"]))
                moved += touched
                launches_out.append(row)
                where = f"{op} [{label}] {row['kernel']} {row['config']}"
                if row["spill_bytes"]:
                    failures.append(f"{where}: {row['spill_bytes']} bytes of register spills")
                for d in row["dots"]:
                    if d["dtype"] in ("f16", "bf16") and d["instr"] != "wgmma":
                        failures.append(f"{where}: 16-bit dot {d['shape']} runs on {d['instr']}, not wgmma")
            ratio = moved / needed_bytes if needed_bytes else None
            rows = launches_out[len(launches_out) - len(launches):]
            loaded = [r["load_bytes"] for r in rows]
            read_once = _union_bytes([_span(t) for t in inputs])
            reread = None if None in loaded or not read_once else sum(loaded) / read_once
            flops = _essential_flops(op, case)
            model = {}
            for name, dev in devices.items():
                ideal = T.ideal_time(flops, needed_bytes, dev)
                modelled = op_time[name]
                fill = op_busy[name] / (dev.sms * modelled) if modelled else 0.0
                model[name] = dict(modelled_us=round(modelled * 1e6, 3), ideal_us=round(ideal * 1e6, 3),
                                   ratio=round(modelled / ideal, 3), fill=round(fill, 3))  # fmt: skip
                failures += gate(f"{op} [{label}] {name}", modelled, ideal, fill)
            ops_out.append(dict(
                op=op, case=label, launches=len(launches), torch_ops=[n for n, _ in traffic.ops],
                needed_bytes=needed_bytes, moved_bytes=moved, traffic_ratio=None if ratio is None else round(ratio, 3),
                reread=None if reread is None else round(reread, 2), flops=flops, model=model,
            ))  # fmt: skip
    return dict(launches=launches_out, ops=ops_out, failures=failures)


# ----------------------------------------------------------------------------- report


def _table(rows, columns) -> str:
    cells = [[str(c[0]) for c in columns]] + [[str(c[1](r)) for c in columns] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    lines = ["| " + " | ".join(v.ljust(w) for v, w in zip(row, widths)) + " |" for row in cells]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def _r(x):
    return "-" if x is None else f"{x:.2f}"


def report(result: dict) -> str:
    launch_cols = [
        ("op", lambda r: r["op"]),
        ("case", lambda r: r["case"]),
        ("kernel", lambda r: r["kernel"].strip("_").replace("_kernel", "")),
        ("config", lambda r: r["config"]),
        ("warps", lambda r: r["num_warps"]),
        ("regs", lambda r: r["registers"]),
        ("spill", lambda r: r["spill_bytes"]),
        ("smem KiB", lambda r: round(r["shared_bytes"] / 1024, 1)),
        ("programs", lambda r: r["programs"]),
        ("CTA/SM", lambda r: r["ctas_per_sm"]),
        ("waves (last)", lambda r: f"{r['waves']} ({r['last_wave_fill']:.0%})"),
        ("dots", lambda r: " ".join(f"{d['instr']}:{_r(d['ratio'])}" for d in r["dots"]) or "-"),
        ("exp ratio", lambda r: _r(r["exp_ratio"]) + ("/it" if r["exp_mode"] == "per iteration" else "")),
        ("ld bytes:count", lambda r: " ".join(f"{k}:{v}" for k, v in r["load_widths"].items())),
        ("bar.sync", lambda r: r["bar_sync"]),
    ]
    op_cols = [
        ("op", lambda r: r["op"]),
        ("case", lambda r: r["case"]),
        ("launches", lambda r: r["launches"]),
        ("torch ops", lambda r: ",".join(r["torch_ops"]) or "-"),
        ("needed MB", lambda r: f"{r['needed_bytes'] / 1e6:.1f}"),
        ("moved MB", lambda r: f"{r['moved_bytes'] / 1e6:.1f}"),
        ("traffic ratio", lambda r: _r(r["traffic_ratio"])),
        ("load / input bytes", lambda r: _r(r["reread"])),
    ]
    out = [_table(result["launches"], launch_cols), "", _table(result["ops"], op_cols), ""]
    fails = result["failures"]
    out.append(f"{len(fails)} failure(s) (the gate: spills, 16-bit dots off wgmma, modelled time over {TIME_LIMIT}x the ideal, SMs under {FILL_LIMIT:.0%} busy)" + (":" if fails else ""))
    out += [f"  {f}" for f in fails]
    return "\n".join(out)


def summary(result: dict) -> str:
    """One row per (op, dtype, kernel, config), worst case over the shapes (docs/testing.md's table)."""
    groups = {}
    for r in result["launches"]:
        dtype = r["case"].split()[-1]
        key = (r["op"], dtype, r["kernel"], r["config"])
        groups.setdefault(key, []).append(r)
    traffic = {}
    for o in result["ops"]:
        key = (o["op"], o["case"].split()[-1])
        traffic[key] = max(traffic.get(key, 0.0), o["traffic_ratio"] or 0.0)
    rows = []
    for (op, dtype, kernel, config), rs in groups.items():
        dots = [max(d["ratio"] or float("inf") for d in ds) for ds in zip(*(r["dots"] for r in rs))]
        instrs = [d["instr"] for d in rs[0]["dots"]]
        exps = [r["exp_ratio"] for r in rs if r["exp_ratio"] is not None]
        rows.append(dict(
            op=op, dtype=dtype, kernel=kernel.strip("_").replace("_kernel", ""), config=config, shapes=len(rs),
            warps=rs[0]["num_warps"], regs=max(r["registers"] for r in rs), spill=max(r["spill_bytes"] for r in rs),
            smem=max(r["shared_bytes"] for r in rs), ctas=min(r["ctas_per_sm"] for r in rs),
            dots=" ".join(f"{i}:{d:.2f}" for i, d in zip(instrs, dots)) or "-",
            exp=(_r(max(exps)) + ("/it" if rs[0]["exp_mode"] == "per iteration" else "")) if exps else "-",
            loads=" ".join(f"{k}:{v}" for k, v in rs[0]["load_widths"].items()), bar=rs[0]["bar_sync"],
            traffic=_r(traffic.get((op, dtype))),
        ))  # fmt: skip
    cols = [
        ("op", lambda r: r["op"]),
        ("dtype", lambda r: r["dtype"]),
        ("kernel", lambda r: r["kernel"]),
        ("constexprs", lambda r: r["config"]),
        ("shapes", lambda r: r["shapes"]),
        ("warps", lambda r: r["warps"]),
        ("regs", lambda r: r["regs"]),
        ("spill", lambda r: r["spill"]),
        ("smem KiB", lambda r: round(r["smem"] / 1024, 1)),
        ("CTA/SM", lambda r: r["ctas"]),
        ("dot: work", lambda r: r["dots"]),
        ("exp work", lambda r: r["exp"]),
        ("ld bytes:count", lambda r: r["loads"]),
        ("bar.sync", lambda r: r["bar"]),
        ("op traffic", lambda r: r["traffic"]),
    ]
    fails = result["failures"]
    return _table(rows, cols) + f"\n\n{len(fails)} gate failure(s) (see --model)"


def model_table(result: dict) -> str:
    """One row per op call: modelled and ideal microseconds, their ratio and the SM fill, per
    device (docs/kernels.md's table)."""
    devices = list(result["ops"][0]["model"]) if result["ops"] else []
    cols = [("op", lambda r: r["op"]), ("case", lambda r: r["case"]), ("launches", lambda r: r["launches"])]
    for d in devices:
        cols += [
            (f"{d} us", lambda r, d=d: f"{r['model'][d]['modelled_us']:.1f}"),
            (f"{d} ideal", lambda r, d=d: f"{r['model'][d]['ideal_us']:.1f}"),
            (f"{d} ratio", lambda r, d=d: f"{r['model'][d]['ratio']:.2f}"),
            (f"{d} fill", lambda r, d=d: f"{r['model'][d]['fill']:.0%}"),
        ]
    fails = result["failures"]
    return _table(result["ops"], cols) + f"\n\n{len(fails)} gate failure(s)" + (":\n" + "\n".join("  " + f for f in fails) if fails else "")


def vs_pytorch(result: dict, device: str) -> list[dict]:
    """Attention forward + backward per MiT-B5 stage in bf16 on ``device`` ("H100" / "H200"), in
    modelled us: fastuda (the audit's attention_fwd + attention_bwd calls), their ideal, and each
    of PyTorch's paths (timing.pytorch_attention_times: the same roofline, assumed efficiencies),
    then the fastest of those. One row per bf16 case holding both calls, in the audit's order."""
    dev = T.load_overrides()[device]
    bwd = {o["case"]: o["model"][device] for o in result["ops"] if o["op"] == "attention_bwd"}
    stages = {N: i for i, (N, _, _) in enumerate(MIT_B5_STAGES, start=1)}
    rows = []
    for o in result["ops"]:
        if o["op"] != "attention_fwd" or not o["case"].endswith(" bfloat16") or o["case"] not in bwd:
            continue
        B, H, N, M, D = (int(part[1:]) for part in o["case"].split()[:5])  # "B2 H1 N16384 M256 D64"
        fwd = o["model"][device]
        row = dict(stage=stages[N], B=B, N=N, fastuda=fwd["modelled_us"] + bwd[o["case"]]["modelled_us"],
                   ideal=fwd["ideal_us"] + bwd[o["case"]]["ideal_us"])  # fmt: skip
        paths = T.pytorch_attention_times(B, H, N, M, D, torch.bfloat16.itemsize, dev)
        row.update({name: (f + b) * 1e6 for name, (f, b) in paths.items()})
        row["fastest"] = min(["fastuda", *paths], key=row.get)
        rows.append(row)
    return rows


def _whole_mit_b5(rows: list[dict], B: int) -> dict | None:
    """Each column of ``rows`` summed over MiT-B5's attention layers at batch ``B``, in ms; None
    unless every stage is there."""
    at_b = {r["N"]: r for r in rows if r["B"] == B}
    if set(at_b) != {N for N, _, _ in MIT_B5_STAGES}:
        return None
    columns = [k for k in rows[0] if k not in ("stage", "B", "N", "fastest")]
    return {k: sum(layers * at_b[N][k] for N, _, layers in MIT_B5_STAGES) / 1e3 for k in columns}


def _md_row(cells) -> str:
    return "| " + " | ".join(cells) + " |"


def vs_pytorch_table(result: dict) -> str:
    """docs/kernels.md's tables of attention against PyTorch's paths (one per device, with the
    whole model at B = 2), then README.md's (B = 2, H100 / H200 where they differ)."""
    devices = [d for d in ("H100", "H200") if result["ops"] and d in result["ops"][0]["model"]]
    per_device = {d: vs_pytorch(result, d) for d in devices}
    if not devices or not per_device[devices[0]]:
        return "no bfloat16 attention_fwd and attention_bwd call of the same case in the audit"
    columns = [k for k in per_device[devices[0]][0] if k not in ("stage", "B", "N", "fastest")]  # fastuda, ideal, paths
    layers = " / ".join(str(n) for _, _, n in MIT_B5_STAGES)
    wholes = {d: _whole_mit_b5(per_device[d], 2) for d in devices}
    out = []
    for d in devices:
        out += [f"{d}:", "", _md_row(["stage, B", "fastuda fwd + bwd", *columns[1:], "fastest"])]
        out.append("|---|" + "---:|" * len(columns) + "---|")
        for r in per_device[d]:
            out.append(_md_row([f"{r['stage']}, B={r['B']}", *(f"{r[k]:.1f}" for k in columns), r["fastest"]]))
        if wholes[d]:
            order = columns[2:] + columns[:2]  # PyTorch's paths, then fastuda and the ideal
            figures = ", ".join(f"{k} {wholes[d][k]:.2f} ms" for k in order)
            out += ["", f"Whole MiT-B5 ({layers} layers), B = 2, {d}: {figures}"]
        out.append("")

    def both(values):  # one figure where the devices agree to the digits shown
        return values[0] if len(set(values)) == 1 else " / ".join(values)

    out += [f"B = 2, {' / '.join(devices)} where they differ (README.md):", "", _md_row(["stage", *columns])]
    out.append("|---|" + "---:|" * len(columns))
    for i, r in enumerate(per_device[devices[0]]):  # the same cases, in the same order, per device
        if r["B"] == 2:
            cells = (both([f"{per_device[d][i][k]:.1f}" for d in devices]) for k in columns)
            out.append(_md_row([str(r["stage"]), *cells]))
    if all(wholes.values()):
        cells = (both([f"{wholes[d][k]:.2f}" for d in devices]) for k in columns)
        out.append(_md_row([f"whole MiT-B5 ({layers} layers), ms", *cells]))
    return "\n".join(out)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m fastuda.kernels.audit", description=__doc__.split("\n")[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the tables")
    parser.add_argument("--summary", action="store_true", help="one row per op, dtype and kernel config (worst shape)")
    parser.add_argument("--model", action="store_true", help="only the modelled-time table (one row per op call)")
    parser.add_argument("--vs-pytorch", action="store_true",
                        help="attention forward + backward per MiT-B5 stage (bf16) against PyTorch's SDPA backends and "
                        "the unfused path, modelled: the tables of docs/kernels.md and README.md")  # fmt: skip
    parser.add_argument("--ops", default=None, help=f"comma-separated subset of {','.join(OPS)}")
    parser.add_argument("--match", default=None, help="only the cases whose label contains this, e.g. 'B2 H1 '")
    parser.add_argument("--bwd-policy", choices=("time", "budget", "pair"), default=None,
                        help="attention backward split policy to model (budget: the pre-issue-18 one; pair: the "
                        "5-product prototype of docs/kernels.md)")  # fmt: skip
    parser.add_argument("--param", action="append", default=[], metavar="[DEVICE.]FIELD=VALUE",
                        help="what-if: set a model parameter (kernels/timing.py Device) for this run, on every device "
                        "or on one, over the measured figures of bench/RESULTS.md; the kernels' own launch plans see "
                        "the H100's. E.g. --param latency_s=3.5e-7 (repeatable)")  # fmt: skip
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if triton.knobs.runtime.interpret:
        parser.error("TRITON_INTERPRET is set: the audit compiles for sm_90 and needs Triton's compiler")
    ops = None
    if args.ops:
        ops = args.ops.split(",")
        unknown = [o for o in ops if o not in OPS]
        if unknown:
            parser.error(f"--ops: unknown op(s) {unknown}; expected some of {list(OPS)}")
    if args.vs_pytorch:
        if ops is not None and not {"attention_fwd", "attention_bwd"} <= set(ops):
            parser.error("--vs-pytorch needs both attention_fwd and attention_bwd (leave out --ops)")
        ops = ops or ["attention_fwd", "attention_bwd"]
        args.match = args.match or "bfloat16"  # the tables are bf16
    from . import attention

    if args.bwd_policy:
        attention.BWD_POLICY = args.bwd_policy
    try:
        params = [T.parse_param(p) for p in args.param]
    except ValueError as e:
        parser.error(f"--param {e}")
    if params:
        T.WHAT_IF[:] = params  # the audit's devices (load_overrides) and the launchers' plans (plan_device)
        attention._split_plan.cache_clear()
    result = audit(ops, match=args.match)
    result["what_if"] = [f"{d or 'every device'} {f} = {v:g}" for d, f, v in params]
    if args.json:
        print(json.dumps(result))
    else:
        if params:
            print("what-if (not the model's parameters): " + "; ".join(result["what_if"]) + "\n")
        print(vs_pytorch_table(result) if args.vs_pytorch else model_table(result) if args.model
              else summary(result) if args.summary else report(result))  # fmt: skip
    return 1 if result["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
