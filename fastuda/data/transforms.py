"""The published training and test pipelines, on tensors.

mmseg 0.16's pipeline (DAFormer / HRDA configs) is, in order:
``Resize(img_scale, keep_ratio=True)`` -> ``RandomCrop(crop, cat_max_ratio)`` ->
``RandomFlip(0.5)`` -> [``PhotoMetricDistortion``: target-only and DG only] ->
``Normalize(ImageNet mean/std, RGB)`` -> ``Pad(crop, pad_val=0, seg_pad_val=255)``. ``Pipeline`` does the same steps on
torch tensors:

- resize: the image bilinearly (align_corners=False, no antialiasing: what
  ``cv2.INTER_LINEAR`` in ``mmcv.imresize`` does), the label and the HRDA
  valid-pseudo-label mask by nearest neighbour (``cv2.INTER_NEAREST``);
  images stay uint8 and channels-last, torch's fast path for this;
- crop with mmseg's ``cat_max_ratio`` rule, flip, then normalise only the crop.

Randomness comes from a ``torch.Generator`` passed in, so a pipeline is a pure
function of (image, label, generator state). In training, ``SegmentationDataset``
seeds that generator from (seed, dataset, draw index), so every draw is
reproducible in any worker and after a resume (see there and ``sampler.py``).

Known difference: mmseg pads every segmentation field with 255, the valid mask
included (which would make padded pixels weigh 255). The mask here pads with 0
(not valid). It never matters for the published sizes: no crop needs padding.
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from .labels import IGNORE_INDEX
from .photometric import photometric_distortion

IMAGENET_MEAN = (123.675, 116.28, 103.53)  # RGB, 0..255 (mmseg img_norm_cfg)
IMAGENET_STD = (58.395, 57.12, 57.375)

# HRDA / MIC's valid pseudo-label mask: built at Cityscapes' 1024 x 2048 with
# these margins (top, bottom, left, right) zeroed ("rectification artifacts";
# HRDA mmseg/datasets/cityscapes.py, crop_pseudo_margins), then resized,
# cropped and flipped with the image.
HRDA_PSEUDO_MARGINS = (30, 240, 30, 30)
PSEUDO_MASK_SIZE = (1024, 2048)  # (H, W) the margins refer to


def keep_ratio_size(width: int, height: int, scale: tuple[int, int]) -> tuple[int, int]:
    """Output (width, height) of mmseg's ``Resize(img_scale=scale, keep_ratio=True)``.

    mmcv's ``rescale_size``: the largest factor that fits the long edge into
    max(scale) and the short edge into min(scale), then ``int(x * f + 0.5)``.
    So GTA5's 1914 x 1052 with scale (1280, 720) gives 1280 x 704, not 720.
    """
    factor = min(max(scale) / max(width, height), min(scale) / min(width, height))
    return int(width * factor + 0.5), int(height * factor + 0.5)


def resize_image(image: Tensor, size: tuple[int, int]) -> Tensor:
    """uint8 (3, H, W) -> uint8 (3, h, w), bilinear (align_corners=False, no antialias)."""
    if tuple(image.shape[-2:]) == tuple(size):
        return image
    x = image.unsqueeze(0)  # (1, 3, H, W)
    # torch's vectorised uint8 resize needs channels-last; PIL-decoded images already are.
    x = x.contiguous(memory_format=torch.channels_last)
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=False)[0]


def resize_label(label: Tensor, size: tuple[int, int]) -> Tensor:
    """(H, W) -> (h, w), nearest neighbour (source index floor(i * in / out))."""
    if tuple(label.shape) == tuple(size):
        return label
    return F.interpolate(label[None, None], size=size, mode="nearest")[0, 0]


def _nearest_index(in_size: int, out_size: int) -> Tensor:
    """Source index of each output position under ``mode="nearest"``, int64 (out_size,).

    Taken from F.interpolate itself so the valid mask is resized exactly like
    a label would be.
    """
    grid = torch.arange(in_size, dtype=torch.float32)[None, None]  # (1, 1, in_size)
    return F.interpolate(grid, size=out_size, mode="nearest")[0, 0].long()


def valid_pseudo_mask(size: tuple[int, int], margins: tuple[int, int, int, int]) -> Tensor:
    """bool (h, w): HRDA's valid pseudo-label mask after the resize to ``size``.

    Equal to building the (1024, 2048) mask with ``margins`` (top, bottom,
    left, right) set to 0 and resizing it by nearest neighbour, computed from
    the separable row and column masks instead.
    """
    top, bottom, left, right = margins
    full_h, full_w = PSEUDO_MASK_SIZE
    rows = _nearest_index(full_h, size[0])
    cols = _nearest_index(full_w, size[1])
    row_ok = (rows >= top) & (rows < full_h - bottom)
    col_ok = (cols >= left) & (cols < full_w - right)
    return row_ok[:, None] & col_ok[None, :]


def random_crop_box(
    height: int,
    width: int,
    crop: tuple[int, int],
    generator: torch.Generator,
    label: Tensor | None = None,
    cat_max_ratio: float = 1.0,
    max_tries: int = 10,
    ignore_index: int = IGNORE_INDEX,
) -> tuple[int, int]:
    """Top-left corner (y, x) of a random crop, mmseg ``RandomCrop`` semantics.

    Offsets are uniform in [0, max(H - crop_h, 0)] (and likewise for x). With
    ``cat_max_ratio < 1`` and a label, a box is accepted when the crop holds
    more than one class and the largest class covers less than
    ``cat_max_ratio`` of the non-ignored pixels; after ``max_tries`` rejected
    boxes, one more box is drawn and kept unchecked (mmseg's loop).
    """
    crop_h, crop_w = crop

    def draw() -> tuple[int, int]:
        y = int(torch.randint(0, max(height - crop_h, 0) + 1, (), generator=generator))
        x = int(torch.randint(0, max(width - crop_w, 0) + 1, (), generator=generator))
        return y, x

    y, x = draw()
    if cat_max_ratio >= 1.0 or label is None:
        return y, x
    for _ in range(max_tries):
        counts = torch.bincount(label[y : y + crop_h, x : x + crop_w].reshape(-1), minlength=256)
        counts[ignore_index] = 0
        counts = counts[counts > 0]
        # float64 division, as numpy does in mmseg
        if counts.numel() > 1 and int(counts.max()) / int(counts.sum()) < cat_max_ratio:
            break
        y, x = draw()
    return y, x


def normalize(image: Tensor, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> Tensor:
    """uint8 or float (..., 3, H, W) in 0..255 -> float32 (x - mean) / std, per RGB channel."""
    mean_t = torch.tensor(mean, dtype=torch.float32, device=image.device).view(3, 1, 1)
    inv_std = (1.0 / torch.tensor(std, dtype=torch.float64)).to(device=image.device, dtype=torch.float32).view(3, 1, 1)
    # One converting copy into a fresh contiguous (..., 3, H, W) buffer, then in place: a
    # crop of a channels-last image keeps its strides under .float(), and broadcasting
    # over those is several times slower.
    out = torch.empty(image.shape, dtype=torch.float32, device=image.device).copy_(image)
    return out.sub_(mean_t).mul_(inv_std)  # mmcv multiplies by 1/std too


def pad_to(x: Tensor, size: tuple[int, int], value: float) -> Tensor:
    """Pads the last two dims at the bottom and right to at least ``size`` (mmcv.impad)."""
    pad_h = max(size[0] - x.shape[-2], 0)
    pad_w = max(size[1] - x.shape[-1], 0)
    if pad_h == 0 and pad_w == 0:
        return x
    return F.pad(x, (0, pad_w, 0, pad_h), value=value)


@dataclass(frozen=True)
class Pipeline:
    """One dataset's training or test pipeline (mmseg semantics, see the module doc)."""

    # Resize(img_scale, keep_ratio=True): (long, short) edge bounds, e.g. (1280, 720); None: no resize.
    scale: tuple[int, int] | None = None
    # RandomCrop size (h, w); None: no crop (and no padding).
    crop_size: tuple[int, int] | None = None
    # RandomCrop's cat_max_ratio: largest class share allowed in a crop (1.0: any crop).
    cat_max_ratio: float = 1.0
    # boxes checked against cat_max_ratio before one is kept unchecked (mmseg: 10).
    crop_tries: int = 10
    # RandomFlip probability of a horizontal flip.
    flip_prob: float = 0.0
    # PhotoMetricDistortion after the flip (target-only and domain-generalisation configs; see photometric.py)
    photometric: bool = False
    # Normalize: RGB mean and std in 0..255.
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    # False for evaluation: the label stays at its original resolution (logits are resized to it).
    resize_label: bool = True
    # HRDA/MIC valid pseudo-label mask margins (top, bottom, left, right) at 1024 x 2048; None: no mask.
    pseudo_margins: tuple[int, int, int, int] | None = None
    ignore_index: int = IGNORE_INDEX

    def __post_init__(self):
        if self.scale is not None and (len(self.scale) != 2 or min(self.scale) <= 0):
            raise ValueError(f"scale must be two positive ints (long, short), got {self.scale}")
        if self.crop_size is not None and (len(self.crop_size) != 2 or min(self.crop_size) <= 0):
            raise ValueError(f"crop_size must be two positive ints (h, w), got {self.crop_size}")
        if not 0.0 < self.cat_max_ratio <= 1.0:
            raise ValueError(f"cat_max_ratio must be in (0, 1], got {self.cat_max_ratio}")
        if not 0.0 <= self.flip_prob <= 1.0:
            raise ValueError(f"flip_prob must be in [0, 1], got {self.flip_prob}")
        if self.crop_size is not None and not self.resize_label:
            raise ValueError("a crop needs the label resized with the image (resize_label=True)")

    def __call__(self, image: Tensor, label: Tensor | None, generator: torch.Generator) -> dict[str, Tensor]:
        """image uint8 (3, H, W), label uint8 (H, W) train ids or None.

        Returns ``image`` float32 (3, h, w) normalised, ``label`` int64 (h, w)
        (when given) and ``valid_mask`` bool (h, w) (when ``pseudo_margins``).
        A label of another size than the image follows the image's resize, as
        mmseg's keep-ratio resize of each does; without a resize it is an error.
        """
        H, W = image.shape[-2:]
        size = (H, W)
        if self.scale is not None:
            w, h = keep_ratio_size(W, H, self.scale)
            size = (h, w)
            image = resize_image(image, size)
        if label is not None and self.resize_label:
            if self.scale is None and tuple(label.shape) != (H, W):
                raise ValueError(f"label size {tuple(label.shape)} differs from the image size {(H, W)}")
            label = resize_label(label, size)
        mask = valid_pseudo_mask(size, self.pseudo_margins) if self.pseudo_margins is not None else None

        if self.crop_size is not None:
            y, x = random_crop_box(
                *size, self.crop_size, generator, label, self.cat_max_ratio, self.crop_tries, self.ignore_index
            )
            ch, cw = self.crop_size
            image = image[:, y : y + ch, x : x + cw]
            if label is not None:
                label = label[y : y + ch, x : x + cw]
            if mask is not None:
                mask = mask[y : y + ch, x : x + cw]

        if self.flip_prob > 0 and float(torch.rand((), generator=generator)) < self.flip_prob:
            image = image.flip(-1)
            label = label.flip(-1) if label is not None else None
            mask = mask.flip(-1) if mask is not None else None

        if self.photometric:
            image = photometric_distortion(image, generator)
        out = {"image": normalize(image, self.mean, self.std).contiguous()}
        if label is not None:
            out["label"] = label.long()
        if mask is not None:
            out["valid_mask"] = mask.contiguous()
        if self.crop_size is not None:  # Pad after Normalize: 0 is the mean colour
            out["image"] = pad_to(out["image"], self.crop_size, 0.0)
            if "label" in out:
                out["label"] = pad_to(out["label"], self.crop_size, self.ignore_index)
            if mask is not None:
                out["valid_mask"] = pad_to(out["valid_mask"], self.crop_size, False)
        return out


# The published recipes' table lives in published.py; its names stay importable from here. Looked
# up on first use: published.py imports Pipeline from this module, so an import here would fail
# whenever published.py is imported first.
_PUBLISHED = ("DATASET_ALIASES", "DEFAULT_ROLE", "PUBLISHED_PIPELINES", "ROLES", "PublishedPipeline",
              "preset_pipeline", "published_pipeline")  # fmt: skip


def __getattr__(name: str):
    if name in _PUBLISHED:
        from . import published

        return getattr(published, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
