"""Reading the checkpoints users have, loading them into a model, and naming what they hold.

One reader, ``read_checkpoint(path) -> (kind, state)``, recognises every layout from its keys:

* ``"fastuda"``: a ``fastuda.train`` checkpoint (``student``, ``teacher``, ``imnet``,
  optimiser, RNG states, ``iteration``, ``config``).
* ``"uda"``: a released DAFormer / HRDA / MIC checkpoint, mmseg's ``{"meta", "state_dict"}``
  whose keys carry the ``model.`` (student), ``ema_model.`` (teacher) and ``imnet_model.``
  (the frozen ImageNet encoder of the feature distance) prefixes.
* ``"mmseg"``: an mmseg file, ``{"state_dict": {"backbone.*", "decode_head.*"}, "meta": ...}``.
* ``"mit"``: SegFormer's ImageNet encoders ``mit_b0..b5.pth``, a bare MiT state dict
  (``patch_embed1.proj.weight``, ``block1.0.attn.q.weight``, ...) with a classifier ``head.*``.
* ``"resnet"``: mmcv's ImageNet ResNetV1c (``open-mmlab://resnet101_v1c``, the published DeepLabV2
  encoder): ``stem.*``, ``layer1..4.*``, ``fc.*``, bare or under ``state_dict``.
* ``"hf"``: a Hugging Face transformers Segformer: a ``save_pretrained`` folder
  (``model.safetensors`` or ``pytorch_model.bin``), a ``.safetensors`` file or a state dict,
  in the key names of transformers 4.x or 5.x (``SegformerModel``, ``...ForSemanticSegmentation``,
  ``...ForImageClassification``).

This file reads the files and tells their layouts apart; the key remaps of the external layouts
live beside the model they load into (``mix_transformer``: SegFormer's ImageNet encoders and
transformers' Segformer; ``daformer_head``: the SegFormer head of NVlabs and mmseg files; ``resnet``:
mmcv's ResNetV1c keys, bare or under mmseg's ``backbone.``).

SegFormer head: fastuda's ``SegFormerHead`` concatenates the levels shallowest first, as the
published DAFormer / HRDA / MIC ``segformer_head.py`` does (``daformer_head.FUSE_ORDER``). A
layout that concatenates deepest first (NVlabs' SegFormer, keys ``linear_c1..4``; transformers) has the
input-channel blocks of its fuse conv reversed on load and on export, and so do fastuda
checkpoints written while fastuda concatenated deepest first (``checkpoint_format``).

A ``module.`` prefix (DataParallel, DDP) is dropped everywhere. Files are read with
``torch.load(weights_only=True)`` (no arbitrary code runs), with NumPy's array and scalar
types allowed: fastuda's checkpoints keep NumPy's RNG state. Anything that is not a
checkpoint, a truncated file, an empty one, a folder or another architecture is a
``UserError`` that names the path and what was expected.
"""

import dataclasses
import os
import re
import zipfile

import numpy as np
import torch
from torch import nn

from fastuda.errors import UserError

from .checkpoint_format import upgrade_fastuda
from .daformer_head import segformer_head_keys
from .mix_transformer import hf_to_model_keys, imagenet_to_model_keys
from .resnet import is_mmcv_resnet, mmcv_resnet_to_model_keys, resnet_backbone_keys

UDA_MODELS = ("model", "ema_model", "imnet_model")
# which= of a released UDA checkpoint -> the entry of a fastuda.train checkpoint
_FASTUDA_ENTRY = {"model": "student", "ema_model": "teacher", "imnet_model": "imnet"}
KINDS = {
    "fastuda": "fastuda training checkpoint",
    "uda": "released DAFormer / HRDA / MIC checkpoint",
    "mmseg": "mmseg checkpoint",
    "mit": "SegFormer ImageNet MiT encoder",
    "hf": "Hugging Face Segformer",
    "resnet": "mmcv ImageNet ResNetV1c encoder",
}
HF_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")



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


# ----------------------------------------------------------------------------- reading


def _numpy_globals() -> list:
    """The NumPy objects a fastuda checkpoint pickles (``np.random.get_state()``, NumPy scalars),
    under the module names of NumPy 1.x and 2.x, whichever wrote the file."""
    multiarray = np._core.multiarray if hasattr(np, "_core") else np.core.multiarray
    found = [np.ndarray, np.dtype]
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        found += [(multiarray._reconstruct, f"{module}._reconstruct"), (multiarray.scalar, f"{module}.scalar")]
    # dtype classes (numpy.dtypes.UInt32DType, ...) that newer NumPy pickles by name
    for name in dir(getattr(np, "dtypes", object)):
        obj = getattr(np.dtypes, name)
        if isinstance(obj, type) and issubclass(obj, np.dtype):
            found.append(obj)
    return found


def _torch_load(path: str):
    with torch.serialization.safe_globals(_numpy_globals()):
        return torch.load(path, map_location="cpu", weights_only=True)


def _read_file(path: str):
    """The object stored in a checkpoint file, or a UserError saying why it is not one."""
    size = os.path.getsize(path)
    if size == 0:
        raise UserError(f"checkpoint {path} is empty (0 bytes): the file is not a checkpoint, or it was cut off")
    if path.endswith(".safetensors"):
        try:
            from safetensors.torch import load_file  # optional: comes with transformers
        except ImportError:
            raise UserError(f"checkpoint {path} is a safetensors file: pip install safetensors") from None
        try:
            return load_file(path)
        except Exception as e:  # safetensors raises SafetensorError (header too large, incomplete, ...)
            raise UserError(f"checkpoint {path} is not a readable safetensors file (truncated or damaged: {e})") from e
    with open(path, "rb") as f:
        head = f.read(8)
    is_zip = head.startswith(b"PK")
    if is_zip and not zipfile.is_zipfile(path):
        raise UserError(f"checkpoint {path} is truncated or damaged: its zip archive has no central directory "
                        f"({size} bytes); copy or download it again")  # fmt: skip
    if not is_zip and not head.startswith(b"\x80"):  # torch.save: a zip archive, or a protocol-2+ pickle (legacy)
        raise UserError(f"{path} is not a checkpoint (expected a file written by torch.save, a .safetensors file "
                        f"or a Hugging Face folder; it starts with {head!r})")  # fmt: skip
    try:
        return _torch_load(path)
    except Exception as e:  # torch.load raises UnpicklingError, EOFError, RuntimeError, ... for bad files
        text = str(e)
        # torch words it "Unsupported global: GLOBAL x" for an unknown class and "unsupported GLOBAL
        # posix.system whose module posix is blocked" for a call; both are pickled code, not damage.
        # Its message also advises weights_only=False, which must not be repeated for such a file.
        found = re.search(r"unsupported global:? (?:GLOBAL )?([\w.]+)", text, re.IGNORECASE)
        if found:
            raise UserError(f"checkpoint {path} pickles {found.group(1)}, which fastuda does not unpickle: it never "
                            "unpickles code, only tensors, containers and NumPy arrays (nothing in the file ran)") from e
        # torch prefixes weights-only errors with advice for its issue tracker; the cause is the last line
        cause = re.search(r"WeightsUnpickler error: (.*)", text)
        cause = cause.group(1) if cause else text.strip().splitlines()[0] if text.strip() else type(e).__name__
        raise UserError(f"checkpoint {path} is truncated or damaged ({cause})") from e


def _read_folder(path: str):
    for name in HF_WEIGHT_FILES:
        file = os.path.join(path, name)
        if os.path.isfile(file):
            return _read_file(file)
    if any(n.startswith("model-") and n.endswith(".safetensors") for n in os.listdir(path)):
        raise UserError(f"{path} holds a sharded Hugging Face checkpoint; fastuda reads a single model.safetensors")
    raise UserError(f"{path} is a folder, not a checkpoint (a Hugging Face folder holds {' or '.join(HF_WEIGHT_FILES)})")


def read_checkpoint(path) -> tuple[str, dict]:
    """(kind, content) of the checkpoint at ``path`` (a file, or a Hugging Face folder).

    ``kind`` is one of ``KINDS``; ``content`` is the stored dict (for ``"fastuda"`` the whole
    training state, otherwise what holds the tensors). Raises ``UserError`` naming the path for
    a missing file, a folder without weights, an empty, truncated or foreign file, or a dict of
    keys that no known layout has.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise UserError(f"checkpoint {path} not found")
    obj = _read_folder(path) if os.path.isdir(path) else _read_file(path)
    kind = classify(obj, path)
    return kind, upgrade_fastuda(obj, path) if kind == "fastuda" else obj


def classify(obj, path: str = "checkpoint") -> str:
    """The kind (see ``KINDS``) of a loaded checkpoint object; ``UserError`` if it is none."""
    if not isinstance(obj, dict):
        raise UserError(f"{path} is not a checkpoint: it holds a {type(obj).__name__}, expected a dict of tensors")
    if "student" in obj and "config" in obj:
        return "fastuda"
    state = _tensors(obj)
    if not state:
        raise UserError(f"{path} holds no weights (no tensors keyed by parameter name; top-level keys: "
                        f"{_short(sorted(map(str, obj)), 6) or 'none'})")  # fmt: skip
    prefixes = {k.split(".", 1)[0] for k in state}
    if prefixes & {"ema_model", "imnet_model"} or any(k.startswith("model.backbone.") for k in state):
        return "uda"
    if _is_hf(state):  # before mmseg: a SegformerForSemanticSegmentation has decode_head.* keys too
        return "hf"
    if prefixes & {"backbone", "decode_head"}:
        return "mmseg"
    if "patch_embed1.proj.weight" in state:
        return "mit"
    if is_mmcv_resnet(state):
        return "resnet"
    raise UserError(f"{path} is not a checkpoint fastuda knows: its keys ({_short(sorted(state), 4)}) match none "
                    f"of {', '.join(KINDS.values())}")  # fmt: skip


def _is_hf(state: dict) -> bool:
    return any(re.match(r"(segformer\.)?(encoder\.patch_embeddings|stages\.\d+\.patch_embeddings)\.", k) for k in state)


def _tensors(obj: dict) -> dict:
    state = obj.get("state_dict", obj) if isinstance(obj.get("state_dict"), dict) else obj
    return {k.removeprefix("module."): v for k, v in state.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}


def read_training_checkpoint(path) -> dict:
    """A ``fastuda.train`` checkpoint, for ``--resume``; any other kind is a UserError (``resumable``)."""
    kind, state = read_checkpoint(path)
    resumable(kind, path)
    return state


def resumable(kind: str, path) -> None:
    """Raises a UserError unless a checkpoint of ``kind`` can resume training."""
    if kind != "fastuda":
        raise UserError(
            f"{path} is a {KINDS[kind]} and cannot be resumed: it holds no optimiser / iteration / config. Start a new "
            f"run from its weights with model.pretrained={path}, or evaluate it with python -m fastuda.evaluate"
        )


# ----------------------------------------------------------------------------- keys


def to_model_keys(checkpoint: dict, which: str = "model") -> tuple[dict, str]:
    """Returns (state dict keyed like ``EncoderDecoder`` / ``HRDASegmentor``, layout name)."""
    if which not in UDA_MODELS:
        raise ValueError(f"which must be one of {UDA_MODELS}, got {which!r}")
    if not isinstance(checkpoint, dict) or not checkpoint:
        raise UserError("checkpoint holds no state dict (expected tensors keyed by parameter name)")
    kind = classify(checkpoint)
    if kind == "fastuda":
        entry = _FASTUDA_ENTRY[which]
        state = checkpoint.get(entry)
        if state is None:
            raise UserError(f"fastuda checkpoint holds no {entry} (which={which!r})")
        if entry == "imnet":  # the frozen encoder alone
            state = {f"backbone.{k}": v for k, v in state.items()}
        return dict(state), f"fastuda ({entry})"
    state = _tensors(checkpoint)
    if kind == "uda":
        prefixes = {k.split(".", 1)[0] for k in state}
        if which not in prefixes:
            raise UserError(f"UDA checkpoint has no {which!r} weights; it has {sorted(prefixes & set(UDA_MODELS))}")
        picked = {k.removeprefix(which + "."): v for k, v in state.items() if k.startswith(which + ".")}
        return resnet_backbone_keys(segformer_head_keys(picked)), f"UDA ({which})"
    if kind == "mmseg":
        return resnet_backbone_keys(segformer_head_keys(state)), "mmseg"
    if kind == "hf":
        return hf_to_model_keys(state), "Hugging Face Segformer"
    if kind == "resnet":
        return mmcv_resnet_to_model_keys(state), "mmcv ImageNet ResNetV1c"
    return imagenet_to_model_keys(state), "ImageNet MiT"


def read_model_state(path_or_state_dict, which: str = "model") -> tuple[dict, str, str]:
    """(state dict keyed like the model, layout name, kind) of a path or an already loaded dict."""
    if which not in UDA_MODELS:
        raise ValueError(f"which must be one of {UDA_MODELS}, got {which!r}")
    if isinstance(path_or_state_dict, dict):
        kind, obj = classify(path_or_state_dict), path_or_state_dict
        obj = upgrade_fastuda(obj) if kind == "fastuda" else obj
    else:
        kind, obj = read_checkpoint(path_or_state_dict)
    try:
        state, layout = to_model_keys(obj, which)
    except UserError as e:
        raise UserError(f"{_name(path_or_state_dict)}: {e}") from None
    return state, layout, kind


def _name(path_or_state_dict) -> str:
    return "checkpoint" if isinstance(path_or_state_dict, dict) else os.fspath(path_or_state_dict)


# ----------------------------------------------------------------------------- loading


def load_checkpoint(model: nn.Module, path_or_state_dict, strict: bool = False, which: str = "model") -> LoadReport:
    """Loads any checkpoint ``read_checkpoint`` knows into ``model`` (an ``EncoderDecoder``,
    ``HRDASegmentor``, or any module with ``backbone`` / ``decode_head``).

    Args:
        model: the model to fill in place.
        path_or_state_dict: a file or Hugging Face folder path, or an already loaded dict.
        strict: raise instead of reporting when any tensor is missing, unexpected
            or of another shape. For an encoder-only file (ImageNet MiT, Hugging Face
            ``SegformerModel``), only the backbone's tensors are required.
        which: for UDA checkpoints, ``"model"`` (the student, the default and
            what the papers evaluate), ``"ema_model"`` (the teacher) or
            ``"imnet_model"``; for fastuda checkpoints the same names pick ``student``,
            ``teacher`` or ``imnet``.

    Returns:
        a ``LoadReport``; ``print(report)`` explains what was not matched.

    Raises:
        UserError: the file is not a checkpoint, or the load matched no tensor, or left more
            than half of the encoder's tensors missing (another architecture, or an unknown
            key layout); the message holds the report.
    """
    state, layout, _ = read_model_state(path_or_state_dict, which)
    own = model.state_dict()
    encoder_only = not any(k.startswith("decode_head.") for k in state)
    # BatchNorm's num_batches_tracked is absent from older files and unused in training.
    required = [
        k
        for k in own
        if (not encoder_only or k.startswith("backbone.")) and not k.endswith("num_batches_tracked")
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
    encoder = [k for k in own if k.startswith("backbone.") and not k.endswith("num_batches_tracked")]
    encoder_missing = sum(k not in matched for k in encoder)
    if not matched or (encoder and encoder_missing > len(encoder) / 2):
        what = "matched no tensor of the model" if not matched else \
            f"left {encoder_missing} of the encoder's {len(encoder)} tensors missing"  # fmt: skip
        raise UserError(f"{_name(path_or_state_dict)}: the load {what}:\n{report}")
    if strict and (report.missing or report.unexpected or report.mismatched):
        raise RuntimeError(f"checkpoint does not match the model (strict=True):\n{report}")
    model.load_state_dict(matched, strict=False)
    return report

