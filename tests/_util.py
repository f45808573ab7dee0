"""Helpers shared by the op tests."""

import json
import os
import pathlib
import subprocess
import sys

import pytest
import torch

# MiT-B5 / HRDA shapes scaled down, plus primes: batch, classes, height, width.
ODD_SHAPES = [(3, 19, 37, 53), (1, 19, 1, 97), (2, 7, 13, 1), (2, 1, 5, 11), (1, 23, 17, 29)]


def make_logits(shape, dtype=torch.float32, device="cpu", scale=4.0, generator=None):
    """Fresh random logits; ``scale`` makes the softmax peaky enough that a real
    share of pixels passes the 0.968 threshold."""
    x = torch.randn(shape, generator=generator, device=device, dtype=torch.float32) * scale
    return x.to(dtype)


def make_target(shape, num_classes, ignore_index=255, ignore_frac=0.1, device="cpu"):
    """Random labels in [0, C) with about ``ignore_frac`` pixels set to ``ignore_index``."""
    target = torch.randint(0, num_classes, shape, device=device)
    return torch.where(torch.rand(shape, device=device) < ignore_frac, ignore_index, target)


def channels_last_view(x):
    """Same values as ``x`` (B, C, H, W), non-contiguous: stored as (B, H, W, C)."""
    return x.permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2)


HOPPER_SHARED_MEMORY = 227 * 1024  # opt-in shared memory per block on H100 / H200


def compile_for_sm90(which):
    """Records of tests/_sm90_compile.py: every kernel the launchers pick for ``which`` cases,
    compiled for sm_90 without a GPU."""
    import triton

    cuobjdump = pathlib.Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
    if not cuobjdump.exists():
        pytest.skip("this Triton has no bundled cuobjdump (needed to read register use)")
    script = pathlib.Path(__file__).with_name("_sm90_compile.py")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    result = subprocess.run([sys.executable, str(script), which], capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr[-4000:]
    return [json.loads(line) for line in result.stdout.splitlines()]


def check_sm90_records(records):
    assert records
    for r in records:
        where = f"{r['kernel']} {r['config']} warps={r['num_warps']}"
        assert r["stack"] == 0, f"{where}: {r['stack']} bytes of register spills"
        assert r["shared"] <= HOPPER_SHARED_MEMORY, f"{where}: {r['shared']} bytes of shared memory"
