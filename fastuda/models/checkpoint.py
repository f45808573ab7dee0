"""Loading the checkpoints users already have.

Three layouts are recognised from their keys:

1. SegFormer's ImageNet encoders ``mit_b0..b5.pth``: a bare MiT state dict
   (``patch_embed1.proj.weight``, ``block1.0.attn.q.weight``, ...); its
   classification ``head.*`` is skipped and the rest goes to ``backbone``.
2. mmseg files: ``{"state_dict": {"backbone.*", "decode_head.*"}, "meta": ...}``.
3. DAFormer / HRDA / MIC UDA checkpoints: mmseg files whose keys carry the
   ``model.`` (student), ``ema_model.`` (teacher) and ``imnet_model.`` (the
   frozen ImageNet encoder of the feature distance) prefixes; ``which`` picks one.

A ``module.`` prefix (DataParallel) is dropped everywhere.
"""

import dataclasses
import os

import torch
from torch import nn

UDA_MODELS = ("model", "ema_model", "imnet_model")


@dataclasses.dataclass
class LoadReport:
    """What a load did not match. ``mismatched`` holds (key, checkpoint shape, model shape)."""

    layout: str
    loaded: int
    missing: list[str]
    unexpected: list[str]
    mismatched: list[tuple[str, tuple, tuple]]

    def __str__(self) -> str:
        lines = [f"loaded {self.loaded} tensors from a {self.layout} checkpoint"]
        if self.missing:
            lines.append(f"{len(self.missing)} model tensors were not in the checkpoint (left as initialised): "
                         + _short(self.missing))  # fmt: skip
        if self.unexpected:
            lines.append(f"{len(self.unexpected)} checkpoint tensors have no place in the model (ignored): "
                         + _short(self.unexpected))  # fmt: skip
        if self.mismatched:
            shown = ", ".join(f"{k} {tuple(a)} vs model {tuple(b)}" for k, a, b in self.mismatched[:5])
            lines.append(f"{len(self.mismatched)} tensors differ in shape (not loaded): {shown}")
        return "\n".join(lines)


def _short(keys: list[str], n: int = 8) -> str:
    return ", ".join(keys[:n]) + (f", ... ({len(keys) - n} more)" if len(keys) > n else "")


def _read(path_or_state_dict) -> dict:
    if isinstance(path_or_state_dict, dict):
        return path_or_state_dict
    path = os.fspath(path_or_state_dict)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a truncated file, or one pickling arbitrary objects
        raise RuntimeError(f"could not read checkpoint {path}: {e}") from e


def to_model_keys(checkpoint: dict, which: str = "model") -> tuple[dict, str]:
    """Returns (state dict keyed like ``EncoderDecoder``, layout name)."""
    if which not in UDA_MODELS:
        raise ValueError(f"which must be one of {UDA_MODELS}, got {which!r}")
    state = checkpoint.get("state_dict", checkpoint)
    if not isinstance(state, dict) or not state:
        raise ValueError("checkpoint holds no state dict (expected tensors keyed by parameter name)")
    state = {k.removeprefix("module."): v for k, v in state.items() if isinstance(v, torch.Tensor)}
    prefixes = {k.split(".", 1)[0] for k in state}
    if prefixes & {"ema_model", "imnet_model"} or any(k.startswith("model.backbone.") for k in state):
        if which not in prefixes:
            raise ValueError(f"UDA checkpoint has no {which!r} weights; it has {sorted(prefixes & set(UDA_MODELS))}")
        return {k.removeprefix(which + "."): v for k, v in state.items() if k.startswith(which + ".")}, f"UDA ({which})"
    if prefixes & {"backbone", "decode_head"}:
        return state, "mmseg"
    # A bare encoder (SegFormer ImageNet MiT): its classifier is not ours.
    return {f"backbone.{k}": v for k, v in state.items() if not k.startswith("head.")}, "ImageNet MiT"


def load_checkpoint(model: nn.Module, path_or_state_dict, strict: bool = False, which: str = "model") -> LoadReport:
    """Loads a SegFormer ImageNet, mmseg or DAFormer / HRDA / MIC checkpoint into ``model``
    (an ``EncoderDecoder``, or any module with ``backbone`` / ``decode_head``).

    Args:
        model: the model to fill in place.
        path_or_state_dict: a file path, or an already loaded dict.
        strict: raise instead of reporting when any tensor is missing, unexpected
            or of another shape. For an ImageNet MiT file, only the backbone's
            tensors are required.
        which: for UDA checkpoints, ``"model"`` (the student, the default and
            what the papers evaluate), ``"ema_model"`` (the teacher) or
            ``"imnet_model"``.

    Returns:
        a ``LoadReport``; ``print(report)`` explains what was not matched.
    """
    state, layout = to_model_keys(_read(path_or_state_dict), which)
    own = model.state_dict()
    # BatchNorm's num_batches_tracked is absent from older files and unused in training.
    required = [
        k
        for k in own
        if (layout != "ImageNet MiT" or k.startswith("backbone.")) and not k.endswith("num_batches_tracked")
    ]
    matched, mismatched = {}, []
    for key, value in state.items():
        if key in own:
            if own[key].shape == value.shape:
                matched[key] = value
            else:
                mismatched.append((key, tuple(value.shape), tuple(own[key].shape)))
    report = LoadReport(
        layout=layout,
        loaded=len(matched),
        missing=[k for k in required if k not in state],
        unexpected=[k for k in state if k not in own],
        mismatched=mismatched,
    )
    if strict and (report.missing or report.unexpected or report.mismatched):
        raise RuntimeError(f"checkpoint does not match the model (strict=True):\n{report}")
    model.load_state_dict(matched, strict=False)
    return report
