"""Compiles the attention kernels for an H100 / H200 (sm_90) on a machine without a GPU.

Run as a script (without TRITON_INTERPRET): a stand-in Triton driver reports an sm_90 target, the
launchers run on CPU tensors with every kernel launch replaced by a compile-only warm-up, and each
compiled kernel's resource use is read from its cubin with the cuobjdump that ships with Triton.
Prints one JSON line per kernel: name, config, registers, stack (spills), shared memory, and
whether the products compiled to Hopper's warpgroup MMA.

This catches what the interpreter cannot: GPU-only front-end rules (e.g. non-constexpr globals),
lowering failures, register spills and shared-memory overflow of the static config table.
"""

import json
import os
import re
import subprocess
import sys
import tempfile

os.environ.pop("TRITON_INTERPRET", None)

import torch  # noqa: E402
import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.runtime import driver  # noqa: E402
from triton.runtime.jit import JITFunction  # noqa: E402


class _Sm90Driver:
    """Just enough of a Triton driver for compiling: the target, a device and a stream id."""

    def get_current_target(self):
        return GPUTarget("cuda", 90, 32)

    def get_current_device(self):
        return 0

    def get_current_stream(self, device=None):
        return 0


# (B, H, N, M, D, dtype, block_m override): the MiT-B5 / b0 shapes, the general paths, D = 128.
CASES = {
    "mit": [
        (2, 1, 16384, 256, 64, torch.bfloat16, None),
        (2, 1, 16384, 256, 32, torch.bfloat16, None),
        (2, 1, 1000, 700, 64, torch.bfloat16, None),
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


def main(which: str) -> None:
    driver.set_active(_Sm90Driver())
    from fastuda.kernels import attention as A

    compiled = []

    def compile_only(self, grid):
        def run(*args, **kwargs):
            compiled.append((self.fn.__name__, kwargs, self.run(*args, grid=grid, warmup=True, **kwargs)))

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
        for i, (name, kwargs, kernel) in enumerate(compiled):
            path = os.path.join(tmp, f"{i}.cubin")
            with open(path, "wb") as f:
                f.write(kernel.asm["cubin"])
            usage = subprocess.run([cuobjdump, "-res-usage", path], capture_output=True, text=True, check=True).stdout
            regs, stack = (int(re.search(rf"{key}:(\d+)", usage).group(1)) for key in ("REG", "STACK"))
            ttgir = kernel.asm["ttgir"]
            config = {k: v for k, v in kwargs.items() if k.isupper() and k not in ("ACC", "PRECISION")}
            record = dict(
                kernel=name, config=config, acc=str(kwargs.get("ACC")), num_warps=kwargs.get("num_warps", 4),
                registers=regs, stack=stack, shared=kernel.metadata.shared,
                wgmma="warp_group_dot" in ttgir or "versionMajor = 3" in ttgir,
            )  # fmt: skip
            print(json.dumps(record))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "mit")
