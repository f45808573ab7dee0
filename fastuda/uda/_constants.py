"""Small constant tensors (ImageNet mean / std, FD's thing classes) on the step's device.

``torch.tensor(values, device="cuda")`` copies from pageable host memory, which
ends in a stream synchronisation, every call. Here each constant is built once
per (values, device, dtype) and reused. The build itself writes each value with
a ``fill_`` kernel (the value travels as a kernel argument), so even the first
step copies nothing from the host: there is no start-up sync either.

Nothing is cached while a FakeTensorMode or torch.compile trace is active (a
fake or traced tensor must not outlive its trace); those get a fresh build.
"""

import torch
from torch import Tensor

_CACHE: dict[tuple, Tensor] = {}


def _build(values: tuple, device: torch.device, dtype: torch.dtype) -> Tensor:
    out = torch.empty(len(values), dtype=dtype, device=device)
    for i, v in enumerate(values):
        out[i].fill_(v)  # a scalar kernel argument, no host-to-device copy
    return out


def device_constant(values, device, dtype: torch.dtype) -> Tensor:
    """A (len(values),) tensor of ``values`` on ``device``; do not modify it (it is shared)."""
    values, device = tuple(values), torch.device(device)
    if torch.compiler.is_compiling() or torch._guards.detect_fake_mode() is not None:
        return _build(values, device, dtype)
    key = (values, device, dtype)
    cached = _CACHE.get(key)
    if cached is None:
        # a plain tensor even if the first caller is under inference_mode / no_grad
        with torch.inference_mode(False), torch.no_grad():
            cached = _CACHE[key] = _build(values, device, dtype)
    return cached
