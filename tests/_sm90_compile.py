"""Compiles the attention kernels for an H100 / H200 (sm_90) on a machine without a GPU.

Run as a script (without TRITON_INTERPRET): a stand-in Triton driver reports an sm_90 target, the
launchers run on CPU tensors with every kernel launch replaced by a compile-only warm-up, and each
compiled kernel's resource use is read from its cubin with the cuobjdump that ships with Triton.
Prints one JSON line per kernel launch: name, config, grid, registers, stack (spills), shared
memory, and, per dot product of the TTGIR: its shape, operand width, MMA kind (``wgmma``,
``mma.sync`` or ``fma``), warpsPerCTA and the factor by which the warps' coverage exceeds the tile
(2 means two warpgroups compute the same rows); plus the ``ex2`` instructions per thread of the PTX.

This catches what the interpreter cannot: GPU-only front-end rules (e.g. non-constexpr globals),
lowering failures, register spills and shared-memory overflow of the static config table.
"""

import json
import os
import re
import subprocess
import sys
import tempfile
from collections import Counter

if __name__ == "__main__":  # not when a test imports dots(): its process runs the interpreter
    os.environ.pop("TRITON_INTERPRET", None)

import torch  # noqa: E402
import triton  # noqa: E402
from triton.runtime import driver  # noqa: E402
from triton.runtime.jit import JITFunction  # noqa: E402

from fastuda.kernels.audit import _Sm90Driver  # noqa: E402  (the audit's stand-in driver)


# (B, H, N, M, D, dtype, block_m override): the MiT-B5 / b0 shapes, the general paths, D = 128.
# "stages": the four MiT-B5 stages at a 512 crop, batch 2 (training) and 18 (HRDA's teacher).
CASES = {
    "mit": [
        *[(B, H, N, 256, 64, torch.bfloat16, None) for B in (2, 18) for H, N in ((1, 16384), (2, 4096), (5, 1024), (8, 256))],
        (2, 1, 16384, 256, 32, torch.bfloat16, None),
        (2, 1, 1000, 700, 64, torch.bfloat16, None),
    ],
    "stages": [
        (B, H, N, 256, 64, dtype, None)
        for dtype in (torch.bfloat16, torch.float16)
        for B in (2, 18)
        for H, N in ((1, 16384), (2, 4096), (5, 1024), (8, 256))
    ],
    "all": [
        (2, 1, 16384, 256, 64, torch.bfloat16, None),
        (2, 1, 16384, 256, 32, torch.bfloat16, None),
        (2, 8, 256, 100, 64, torch.float16, None),
        (2, 1, 1000, 700, 64, torch.bfloat16, None),
        (2, 1, 1000, 700, 32, torch.float16, None),
        (1, 2, 100, 60, 128, torch.float16, None),
        (1, 2, 100, 300, 128, torch.bfloat16, None),
        (1, 2, 100, 30, 64, torch.float32, None),
        (1, 2, 100, 300, 64, torch.float32, None),
        (1, 2, 100, 30, 128, torch.float32, None),
        (1, 2, 100, 300, 128, torch.float32, None),
    ],
}


def _loss_kernels() -> None:
    """pseudo_label and weighted cross-entropy at the DAFormer / HRDA shapes, every input dtype,
    one and several channel chunks, contiguous and channels-last logits."""
    from fastuda.kernels.cross_entropy import cross_entropy_bwd, cross_entropy_fwd
    from fastuda.kernels.pseudo_label import pseudo_label_fwd

    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        for C, layout in ((19, "contiguous"), (150, "contiguous"), (19, "channels_last")):
            logits = torch.randn(2, C, 64, 96).to(dtype)
            if layout == "channels_last":
                logits = logits.permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2)
            target = torch.randint(0, C, (2, 64, 96))
            weight = torch.rand(2, 64, 96)
            pseudo_label_fwd(logits, 0.968, 15, 120 % 64, False, torch.rand(2, 64, 96) > 0.5)
            cross_entropy_fwd(logits, target, weight, 255)
            cross_entropy_bwd(torch.ones(()), logits, target, None, 255)


_MMA_DEF = re.compile(r"^(#mma\d*) = #ttg\.nvidia_mma<\{versionMajor = (\d), .*warpsPerCTA = \[(\d+), (\d+)\], instrShape = \[([\d, ]+)\]", re.M)
_DOT = re.compile(r"= (?:ttng\.warp_group_dot|tt\.dot) (.*?) -> tensor<(\d+)x(\d+)x\w+, (#\w+)>")


def dots(ttgir: str) -> list[dict]:
    """Every dot of a TTGIR module: output tile, operand bits, MMA kind, warpsPerCTA and the
    duplication factor, (rows x columns the warps cover per repetition) / (tile), at least 1 per
    axis. For wgmma a warp owns 16 rows and instrShape[1] columns; for mma.sync 16 x 8."""
    mmas = {m[0]: (int(m[1]), [int(m[2]), int(m[3])], [int(x) for x in m[4].split(",")]) for m in _MMA_DEF.findall(ttgir)}
    found = []
    for operands, rows, cols, enc in _DOT.findall(ttgir):
        rows, cols = int(rows), int(cols)
        bits = 16 if re.search(r"x(bf16|f16)", operands) else 64 if "xf64" in operands else 32
        if enc not in mmas:
            found.append(dict(shape=[rows, cols], bits=bits, kind="fma", warps=None, duplication=1.0))
            continue
        version, warps, instr = mmas[enc]
        per_warp = [16, instr[1]] if version == 3 else [16, 8]
        cover = [warps[0] * per_warp[0], warps[1] * per_warp[1]]
        dup = max(1.0, cover[0] / rows) * max(1.0, cover[1] / cols)
        kind = "wgmma" if version == 3 else "mma.sync"
        found.append(dict(shape=[rows, cols], bits=bits, kind=kind, warps=warps, instr=instr, duplication=dup))
    return found


def main(which: str) -> None:
    driver.set_active(_Sm90Driver())
    from fastuda.kernels import attention as A

    compiled = []

    def compile_only(self, grid):
        def run(*args, **kwargs):
            compiled.append((self.fn.__name__, grid, kwargs, self.run(*args, grid=grid, warmup=True, **kwargs)))

        return run

    JITFunction.__getitem__ = compile_only
    if which == "loss":
        _loss_kernels()
    for B, H, N, M, D, dtype, block_m in CASES.get(which, []):
        q = torch.randn(B, N, H * D).to(dtype).view(B, N, H, D).transpose(1, 2)  # (B, H, N, D)
        kv = torch.randn(B, M, 2 * H * D).to(dtype).view(B, M, 2, H, D).permute(2, 0, 3, 1, 4)  # (2, B, H, M, D)
        out, lse = A.attention_fwd(q, kv[0], kv[1], D**-0.5, block_m=block_m)
        A.attention_bwd(torch.randn_like(out), q, kv[0], kv[1], out, lse, D**-0.5, block_m=block_m)

    cuobjdump = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
    with tempfile.TemporaryDirectory() as tmp:
        usages = {}  # launches of one compiled kernel share its resource use
        for i, (name, grid, kwargs, kernel) in enumerate(compiled):
            if id(kernel) not in usages:
                path = os.path.join(tmp, f"{i}.cubin")
                with open(path, "wb") as f:
                    f.write(kernel.asm["cubin"])
                usages[id(kernel)] = subprocess.run([cuobjdump, "-res-usage", path], capture_output=True, text=True, check=True).stdout
            regs, stack = (int(re.search(rf"{key}:(\d+)", usages[id(kernel)]).group(1)) for key in ("REG", "STACK"))
            ttgir = kernel.asm["ttgir"]
            config = {k: v for k, v in kwargs.items() if k.isupper() and k not in ("ACC", "PRECISION")}
            record = dict(
                kernel=name, config=config, acc=str(kwargs.get("ACC")), num_warps=kwargs.get("num_warps", 4),
                registers=regs, stack=stack, shared=kernel.metadata.shared,
                grid=list(grid), dots=dots(ttgir), ex2_per_thread=kernel.asm["ptx"].count("ex2.approx"),
                wgmma_shapes=dict(Counter(re.findall(r"wgmma\.mma_async\.sync\.aligned\.(m\d+n\d+k\d+)", kernel.asm["ptx"]))),
            )  # fmt: skip
            print(json.dumps(record))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "mit")
