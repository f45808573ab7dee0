"""Input validation shared by the ops: errors name the argument and what was expected.

Shape, dtype and device checks cost nothing and always run. Checks that read
tensor values (label ranges) need the values on the host, which on CUDA is a
device sync. So by default they run on CPU tensors only (mode ``"cpu"``);
``FASTUDA_DEBUG=1`` or ``set_value_checks("always")`` adds CUDA tensors, and
``"off"`` drops them. They never run under torch.compile tracing. Without them
the kernels still never read or write out of bounds: bad labels make a loss
NaN, or count as "not chosen" in ClassMix.
"""

import os

import torch

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
VALUE_CHECK_MODES = ("cpu", "always", "off")

_value_checks = "always" if os.environ.get("FASTUDA_DEBUG", "0") == "1" else "cpu"


def set_value_checks(mode: str) -> None:
    """Where label-range checks run: "cpu" (default), "always" (CUDA too: one
    device sync per call), or "off"."""
    global _value_checks
    if mode not in VALUE_CHECK_MODES:
        raise ValueError(f"mode must be one of {VALUE_CHECK_MODES}, got {mode!r}")
    _value_checks = mode


def get_value_checks() -> str:
    return _value_checks


def value_checks_enabled(device: torch.device) -> bool:
    if torch.compiler.is_compiling() or _value_checks == "off":
        return False
    return _value_checks == "always" or device.type == "cpu"


def _names(dtypes) -> str:
    return ", ".join(str(d).removeprefix("torch.") for d in dtypes)


def check_tensor(name: str, x, ndim: int, layout: str, dtypes) -> None:
    """``x`` must be a tensor of rank ``ndim`` (shape described by ``layout``) and one of ``dtypes``."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape {layout}, got {type(x).__name__}")
    if x.dim() != ndim:
        raise ValueError(f"{name} must have shape {layout} ({ndim} dims), got shape {tuple(x.shape)}")
    if x.dtype not in dtypes:
        raise TypeError(f"{name} must have dtype in ({_names(dtypes)}), got {x.dtype}")


def check_same_device(name: str, x: torch.Tensor, ref_name: str, ref: torch.Tensor) -> None:
    if x.device != ref.device:
        raise ValueError(f"{name} must be on the same device as {ref_name} ({ref.device}), got {x.device}")


def check_bhw(name: str, x: torch.Tensor, logits: torch.Tensor) -> None:
    """``x`` (B, H, W) must match the batch and spatial size of ``logits`` (B, C, H, W)."""
    B, _, H, W = logits.shape
    if tuple(x.shape) != (B, H, W):
        raise ValueError(
            f"{name} must have shape (B, H, W) = {(B, H, W)} to match logits {tuple(logits.shape)}, "
            f"got {tuple(x.shape)}"
        )
    check_same_device(name, x, "logits", logits)


def check_int(name: str, value, low: int | None = None, high: int | None = None) -> int:
    """``value`` must be an int in [low, high] (bounds optional)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if (low is not None and value < low) or (high is not None and value > high):
        lo = "-inf" if low is None else low
        hi = "inf" if high is None else high
        raise ValueError(f"{name} must be in [{lo}, {hi}], got {value}")
    return value


def check_labels(name: str, label: torch.Tensor, num_classes: int, ignore_index: int) -> None:
    """Every value of ``label`` must be in [0, num_classes) or equal ``ignore_index``."""
    if not value_checks_enabled(label.device) or label.numel() == 0:
        return
    bad = ((label < 0) | (label >= num_classes)) & (label != ignore_index)
    if bool(bad.any()):
        values = torch.unique(label[bad])[:8].tolist()
        raise ValueError(
            f"{name} must hold class indices in [0, {num_classes}) or ignore_index={ignore_index}, "
            f"found {values}"
        )
