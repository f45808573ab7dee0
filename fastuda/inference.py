"""``Segmenter``: a trained network and its test-time settings, from a checkpoint to label maps.

    seg = fastuda.Segmenter.from_checkpoint("runs/demo/latest.pt")      # or a released .pth
    labels = seg("street.jpg")                                          # (H, W) int64 train ids
    labels, probs = seg(image, probabilities=True)                      # + (K, H, W) softmax

``python -m fastuda.predict``, ``python -m fastuda.evaluate`` and users' code all build the
network this way. The checkpoint decides the inference, as the published test configs do:
DAFormer runs on the whole image resized into 1024 x 512, HRDA / MIC slide 1024 windows with
stride 512 over the image resized into 2048 x 1024 (each window runs HRDA's two-scale
inference); a fastuda checkpoint follows its own config (the synthetic demo runs at the
image's size). The labels come back at the input image's size.
"""

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fastuda.config import TrainConfig, apply_overrides, config_for, from_dict, load_config, resize, test_windows
from fastuda.data._io import read_image
from fastuda.data.labels import CITYSCAPES_CLASSES
from fastuda.data.synthetic import CLASSES as SYNTHETIC_CLASSES
from fastuda.data.transforms import keep_ratio_size, normalize, resize_image
from fastuda.errors import UserError
from fastuda.models.architecture import architecture, check_architecture
from fastuda.models.checkpoint import load_checkpoint, read_checkpoint, to_model_keys
from fastuda.models.slide import forward_full, slide_inference
from fastuda.runtime.build import amp_dtype, build_segmentor

ImageLike = str | Path | np.ndarray | Tensor  # or a PIL.Image.Image


class Segmenter:
    """A segmentation network in eval mode with its test-time settings.

    Args:
        model: an ``EncoderDecoder`` or ``HRDASegmentor`` (``fastuda.models``).
        num_classes: K, the classes the model predicts.
        class_names: K names (for overlays and tables).
        crop, stride: slide windows (h, w) and their stride; ``crop=None`` infers on the whole image.
        scale: (long, short) keep-ratio test resize applied before inference (mmseg's
            ``Resize(keep_ratio=True)``); None runs at the image's own size.
        device: where the model runs (default: CUDA when available).
        amp: autocast dtype name, ``"bf16"``, ``"fp16"`` or ``"off"``; default bf16 on GPU, off on CPU.
        compile: ``True`` (or a ``torch.compile`` backend name) compiles the model's forward.
    """

    def __init__(self, model: nn.Module, *, num_classes: int, class_names: Sequence[str] | None = None,
                 crop=None, stride=None, scale=None, device=None, amp: str | None = None,
                 compile: bool | str = False, description: str = ""):  # fmt: skip
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model = model.to(self.device).eval()
        self.num_classes = num_classes
        self.class_names = tuple(class_names) if class_names else tuple(f"class {i}" for i in range(num_classes))
        self.crop = tuple(crop) if crop else None
        self.stride = tuple(stride) if stride else self.crop
        self.scale = tuple(scale) if scale else None
        if amp not in (None, "off", "bf16", "fp16"):
            raise UserError(f"amp must be off, bf16 or fp16, got {amp!r}")
        self.autocast_dtype = amp_dtype(amp, self.device)
        self.description = description
        self.config = None  # the TrainConfig, when built from a checkpoint
        self.iteration = None  # the training iteration the checkpoint was written at, when known
        if compile:
            compile_inference(self.model, backend=compile if isinstance(compile, str) else "inductor")

    # -------------------------------------------------------------------------------- building

    @classmethod
    def from_checkpoint(cls, path, device=None, *, config=None, overrides: Sequence[str] = (), teacher: bool = False,
                        scale="config", amp: str | None = None, compile: bool | str = False) -> "Segmenter":  # fmt: skip
        """A Segmenter for any checkpoint ``fastuda.models.checkpoint.read_checkpoint`` knows.

        Args:
            path: a ``fastuda.train`` checkpoint, a released DAFormer / HRDA / MIC ``.pth``, an
                mmseg file or a Hugging Face ``SegformerForSemanticSegmentation`` folder.
            device: default CUDA when available.
            config: a preset name, JSON file or ``TrainConfig`` to use instead of the
                checkpoint's own (fastuda) or the one its keys imply (released files); its
                network must be the checkpoint's.
            overrides: ``key=value`` config overrides (e.g. ``hrda.enabled=true``).
            teacher: the EMA teacher instead of the student (the papers evaluate the student).
            scale: ``"config"`` (the config's test resize), None (the image's own size) or
                (long, short).
        """
        kind, content = read_checkpoint(path)
        which = "ema_model" if teacher else "model"
        try:
            state, _ = to_model_keys(content, which)
        except UserError as e:
            raise UserError(f"{path}: {e}") from None
        found = architecture(state, path)
        try:
            if isinstance(config, TrainConfig):
                cfg = apply_overrides(config, list(overrides))
            elif config is not None:
                cfg = load_config(config, overrides, from_pretrained=False)  # the weights are the checkpoint's
            elif kind == "fastuda":
                cfg = apply_overrides(from_dict(content["config"]), list(overrides))
            else:
                cfg = apply_overrides(config_for(found, path), list(overrides))
        except (KeyError, ValueError) as e:
            raise UserError(str(e).strip("'\"")) from None
        check_architecture(found, cfg, path)
        model = build_segmentor(cfg, pretrained=False)
        try:
            load_checkpoint(model, content, strict=True, which=which)
        except RuntimeError as e:  # strict: the report of what differs
            raise UserError(f"{path}: the checkpoint does not fit {found}: {e}") from None
        crop, stride = test_windows(cfg)
        if scale == "config":
            scale = _test_scale(cfg)
        seg = cls(model, num_classes=cfg.model.num_classes, class_names=_class_names(cfg, content), crop=crop,
                  stride=stride, scale=scale, device=device, amp=amp, compile=compile,
                  description=f"{found} from {Path(path).name} ({'teacher' if teacher else 'student'})")  # fmt: skip
        seg.config = cfg
        meta = content.get("meta") if isinstance(content.get("meta"), dict) else {}
        seg.iteration = content.get("iteration", meta.get("iter"))
        return seg

    # -------------------------------------------------------------------------------- inference

    def __call__(self, image: ImageLike, probabilities: bool = False):
        """Labels (H, W) int64 at the image's size, on the CPU; with ``probabilities`` also the
        softmax (K, H, W) float32. ``image``: a path, a PIL image, an (H, W, 3) NumPy array or a
        (3, H, W) tensor, RGB, uint8 or float in 0..255 (grey and RGBA too; ``to_image_tensor``)."""
        return self.segment([image], probabilities)[0]

    def segment(self, images: Sequence[ImageLike], probabilities: bool = False) -> list:
        """``__call__`` for several images; images of the same (resized) size run as one batch."""
        tensors = [to_image_tensor(im) for im in images]
        results: list = [None] * len(tensors)
        groups: dict[tuple[int, int], list[int]] = {}
        prepared = [self._prepare(t) for t in tensors]
        for i, x in enumerate(prepared):
            groups.setdefault(tuple(x.shape[-2:]), []).append(i)
        for members in groups.values():
            batch = torch.stack([prepared[i] for i in members]).to(self.device, non_blocking=True)
            logits = self.logits(batch)  # (B, K, h, w) float32
            for j, i in enumerate(members):
                out = F.interpolate(logits[j : j + 1], size=tensors[i].shape[-2:], mode="bilinear",
                                    align_corners=False)[0]  # fmt: skip
                labels = out.argmax(0).cpu()
                results[i] = (labels, out.softmax(0).cpu()) if probabilities else labels
        return results

    def _prepare(self, image: Tensor) -> Tensor:
        """(3, H, W) 0..255 -> (3, h, w) normalised float32 at the test scale."""
        if self.scale is not None:
            w, h = keep_ratio_size(image.shape[-1], image.shape[-2], self.scale)
            if image.dtype == torch.uint8:  # as the evaluation pipeline resizes
                image = resize_image(image, (h, w))
            elif (h, w) != tuple(image.shape[-2:]):
                image = F.interpolate(image[None].float(), size=(h, w), mode="bilinear", align_corners=False)[0]
        return normalize(image)

    @torch.no_grad()
    def logits(self, batch: Tensor) -> Tensor:
        """Logits (B, K, h, w) float32 of normalised images (B, 3, h, w) at their size."""
        # Windows slide over the image as it is (mmseg's slide_inference); HRDA's two-scale
        # forward handles any window size itself.
        with torch.autocast(self.device.type, dtype=self.autocast_dtype, enabled=self.autocast_dtype is not None):
            if self.crop is not None:
                out = slide_inference(self.model, batch, self.crop, self.stride)
            else:
                out = forward_full(self.model, batch)
        return out.float()

    def __repr__(self) -> str:
        how = f"slide {self.crop[0]}x{self.crop[1]} stride {self.stride[0]}x{self.stride[1]}" if self.crop else "whole image"
        scale = f"resized into {self.scale[0]}x{self.scale[1]}" if self.scale else "at the image's size"
        return f"Segmenter({self.description or type(self.model).__name__}; {how}, {scale}, {self.device})"


def compile_inference(model: nn.Module, backend: str = "inductor") -> None:
    """``torch.compile`` on the forward that inference calls, in place: ``forward_pseudo`` for
    HRDA (its two-scale inference; ``forward_full`` calls it directly, not through
    ``__call__``), the module's call otherwise."""
    if hasattr(model, "forward_pseudo"):
        model.forward_pseudo = torch.compile(model.forward_pseudo, backend=backend)
    else:
        model.compile(backend=backend)


def to_image_tensor(image: ImageLike) -> Tensor:
    """An RGB (3, H, W) tensor, uint8 or float 0..255, from a path, PIL image, array or tensor.

    Arrays and tensors take the modes PIL images do: grey ((H, W), (H, W, 1) / (1, H, W)), RGB
    and RGBA (alpha dropped, as PIL's ``convert("RGB")``). Float values must lie in 0..255; an
    image whose floats all lie in [0, 1] is refused (0..1 scaled, or too dark to segment)."""
    if isinstance(image, (str, Path)):
        try:
            return read_image(Path(image))
        except (OSError, RuntimeError, ValueError) as e:
            raise UserError(str(e) if str(image) in str(e) else f"{image}: {e}") from e
    if type(image).__module__.startswith("PIL."):
        image = np.asarray(image.convert("RGB"))
    if isinstance(image, np.ndarray):
        if image.dtype == bool or not (np.issubdtype(image.dtype, np.integer) or np.issubdtype(image.dtype, np.floating)):
            raise UserError(f"image array must hold numbers 0..255, got dtype {image.dtype}")
        if image.ndim == 2:
            image = image[..., None]
        if image.ndim != 3 or image.shape[2] not in (1, 3, 4):
            raise UserError(f"image array must be (H, W) grey, (H, W, 3) RGB or (H, W, 4) RGBA, got shape {image.shape}")
        tensor = torch.from_numpy(np.array(image)).permute(2, 0, 1)  # a copy: the caller's array stays theirs
        return _rgb(tensor, "image array")
    if isinstance(image, Tensor):
        if image.dim() == 2:
            image = image[None]
        if image.dim() != 3 or image.shape[0] not in (1, 3, 4):
            raise UserError(f"image tensor must be (H, W) grey, (3, H, W) RGB or (4, H, W) RGBA, got shape "
                            f"{tuple(image.shape)}")  # fmt: skip
        return _rgb(image.detach().cpu(), "image tensor")
    raise UserError(f"image must be a path, PIL image, NumPy array or tensor, got {type(image).__name__}")


def _rgb(image: Tensor, what: str) -> Tensor:
    """(1 | 3 | 4, H, W) -> (3, H, W): grey repeated, alpha dropped; the value range checked."""
    if image.dtype == torch.bool or image.is_complex():
        raise UserError(f"{what} must hold numbers 0..255, got dtype {image.dtype}")
    image = image[:3].expand(3, -1, -1) if image.shape[0] == 1 else image[:3]
    if image.numel() and image.dtype != torch.uint8:
        lo, hi = float(image.min()), float(image.max())
        if image.dtype.is_floating_point and hi <= 1:
            raise UserError(f"{what} of floats in [{lo:g}, {hi:g}]: expected values 0..255 (the 0..1 scale is "
                            "not guessed: multiply by 255)")  # fmt: skip
        if lo < 0 or hi > 255 or (lo != lo or hi != hi):
            raise UserError(f"{what} values in [{lo:g}, {hi:g}]: expected 0..255")
    return image.contiguous() if image.dtype.is_floating_point or image.dtype == torch.uint8 else image.to(torch.uint8)


def _test_scale(cfg) -> tuple[int, int] | None:
    """The config's test resize (long, short): the target's test pipeline; None for the demo."""
    if cfg.data.target == "synthetic":
        return None
    return resize(cfg, cfg.data.target)


def _class_names(cfg, content: dict) -> tuple[str, ...] | None:
    meta = content.get("meta") if isinstance(content, dict) else None
    if isinstance(meta, dict) and len(meta.get("CLASSES") or ()) == cfg.model.num_classes:
        return tuple(meta["CLASSES"])
    if cfg.data.target == "synthetic":
        return SYNTHETIC_CLASSES if len(SYNTHETIC_CLASSES) == cfg.model.num_classes else None
    return CITYSCAPES_CLASSES if cfg.model.num_classes == len(CITYSCAPES_CLASSES) else None
