"""A cp.async-pipelined loop of a tiny kernel, compiled for sm_90 without a GPU (as the audit does)
and walked by kernels/timing.py's evaluator at several trip counts. Run as a script (without
TRITON_INTERPRET): prints one JSON object {trips: [bytes, rounds]}, plus the masks of the copies
in the TTGIR (the pipeliner's predicates) and whether the PTX has cp.async, for
tests/test_audit.py."""

import json
import os
import re
import sys

if __name__ == "__main__":
    os.environ.pop("TRITON_INTERPRET", None)

import torch  # noqa: E402
import triton  # noqa: E402
import triton.language as tl  # noqa: E402

from fastuda.kernels import audit as A  # noqa: E402

BLOCK = 64
STAGES = 4


@triton.jit
def _probe(x_ptr, w_ptr, y_ptr, N, BLOCK: tl.constexpr):
    rows = tl.arange(0, BLOCK)
    tile = rows[:, None] * BLOCK + rows[None, :]
    w = tl.load(w_ptr + tile)
    acc = tl.zeros((BLOCK, BLOCK), tl.float32)
    for n in range(0, N, BLOCK):
        x = tl.load(x_ptr + n * BLOCK + tile)
        acc = tl.dot(x, w, acc)
    tl.store(y_ptr + tile, acc)


def main():
    launches = []
    x = torch.empty(8 * BLOCK, BLOCK, dtype=torch.bfloat16)
    w = torch.empty(BLOCK, BLOCK, dtype=torch.bfloat16)
    y = torch.empty(BLOCK, BLOCK, dtype=torch.float32)
    with A._CompileOnly(132, launches):
        _probe[(1,)](x, w, y, BLOCK, BLOCK=BLOCK, num_warps=4, num_stages=STAGES)
    (launch,) = launches
    ttgir, ptx = launch.compiled.asm["ttgir"], launch.compiled.asm["ptx"]
    launch.grid, launch.args = (1, 1, 1), dict(launch.args)
    out = {"cp.async": "cp.async" in ptx, "copies": len(re.findall(r"async_copy_global_to_local .* mask ", ttgir))}
    for trips in (1, 2, 3, 5, 8):
        launch.args["N"] = trips * BLOCK
        A._EVALUATORS.clear()
        (cost,), _ = A._program_costs(launch, {})
        out[trips] = [cost.bytes, cost.rounds]
    print(json.dumps(out))


if __name__ == "__main__":
    sys.exit(main())
