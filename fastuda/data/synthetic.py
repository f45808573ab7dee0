"""Procedural street-like scenes in two domains, for the CPU demo and the tests.

A scene's layout (horizon, buildings, vegetation, cars, poles on a road under
a sky) is drawn from the same statistics in both domains; only its rendering
differs, so there is a real appearance gap to adapt across:

- source: a clean palette, flat colours with a soft vertical gradient, little noise;
- target: another palette (shifted hues, lower contrast), class-specific
  textures (stripes, speckle), stronger sensor noise and a blur.

Scene ``i`` of a dataset is a pure function of (seed, domain, i), so a dataset
is reproducible and draws by index are resumable. Labels use 0..K-1 and 255
for nothing (unused here). Images come normalised with the ImageNet mean / std
like the real pipelines.
"""

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from .transforms import IMAGENET_MEAN, IMAGENET_STD

CLASSES = ("sky", "road", "building", "vegetation", "car", "pole")
NUM_CLASSES = len(CLASSES)

# RGB 0..1 per class and domain
_PALETTES = {
    "source": np.array([
        [0.45, 0.65, 0.95],  # sky
        [0.40, 0.40, 0.42],  # road
        [0.70, 0.45, 0.35],  # building
        [0.25, 0.60, 0.25],  # vegetation
        [0.85, 0.15, 0.15],  # car
        [0.95, 0.85, 0.20],  # pole
    ]),
    "target": np.array([
        [0.70, 0.72, 0.80],  # hazy sky
        [0.30, 0.27, 0.25],  # darker, warmer road
        [0.55, 0.50, 0.55],  # greyer buildings
        [0.35, 0.50, 0.20],  # yellower vegetation
        [0.60, 0.25, 0.45],  # magenta-ish cars
        [0.75, 0.70, 0.45],  # paler poles
    ]),
}
_DOMAIN_SEED = {"source": 11, "target": 23}


def _layout(rng: np.random.Generator, size: int) -> np.ndarray:
    """uint8 (size, size) class map; the same statistics in both domains."""
    H = W = size
    label = np.zeros((H, W), np.uint8)  # sky
    horizon = int(rng.uniform(0.35, 0.6) * H)
    label[horizon:] = 1  # road
    yy, xx = np.mgrid[0:H, 0:W]
    x = 0
    while x < W:  # buildings along the horizon
        w = int(rng.uniform(0.1, 0.3) * W)
        if rng.random() < 0.75:
            top = int(rng.uniform(0.05, 0.9) * horizon)
            label[top:horizon + int(0.05 * H), x:x + w] = 2
        x += w
    for _ in range(rng.integers(1, 4)):  # vegetation blobs
        cy, cx = horizon - rng.uniform(0, 0.15) * H, rng.uniform(0, W)
        r = rng.uniform(0.06, 0.16) * H
        label[(yy - cy) ** 2 + ((xx - cx) * 0.8) ** 2 < r * r] = 3
    for _ in range(rng.integers(1, 4)):  # poles
        px = int(rng.uniform(0, W))
        pw = max(1, int(0.025 * W))
        base = int(rng.uniform(horizon + 0.05 * H, H))
        label[max(0, base - int(0.45 * H)):base, px:px + pw] = 5
    for _ in range(rng.integers(1, 4)):  # cars on the road, larger when nearer
        cy = rng.uniform(horizon + 0.05 * H, H * 0.95)
        scale = (cy - horizon) / max(H - horizon, 1)
        ch, cw = (0.06 + 0.14 * scale) * H, (0.12 + 0.25 * scale) * W
        cx = rng.uniform(0, W - cw)
        label[int(cy - ch):int(cy), int(cx):int(cx + cw)] = 4
    return label


def _render(rng: np.random.Generator, label: np.ndarray, domain: str) -> np.ndarray:
    """float32 (3, H, W) in [0, 1]."""
    H, W = label.shape
    palette = _PALETTES[domain] * rng.uniform(0.9, 1.1, size=(1, 3))  # per-scene illumination
    image = palette[label].transpose(2, 0, 1)  # (3, H, W)
    yy, xx = np.mgrid[0:H, 0:W] / H
    if domain == "source":
        image = image * (0.9 + 0.2 * yy)[None] + rng.normal(0, 0.02, image.shape)
    else:
        stripes = 0.5 + 0.5 * np.sin(2 * np.pi * (xx * 6 + yy * 2))
        speckle = rng.random((H, W))
        texture = np.where(np.isin(label, (2, 4)), stripes, np.where(np.isin(label, (1, 3)), speckle, 0.5))
        image = image * (0.8 + 0.4 * texture)[None]
        image = 0.5 + 0.8 * (image - 0.5)  # lower contrast
        image = image + rng.normal(0, 0.07, image.shape)
        t = torch.from_numpy(image).float()[None]
        k = torch.tensor([1.0, 2.0, 1.0]) / 4  # a light optical blur
        t = F.conv2d(F.pad(t, (1, 1, 1, 1), mode="replicate"), (k[:, None] * k[None])[None, None].repeat(3, 1, 1, 1),
                     groups=3)  # fmt: skip
        image = t[0].numpy()
    return np.clip(image, 0, 1).astype(np.float32)


def make_scene(domain: str, index: int, size: int = 64, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(image float32 (3, size, size) in [0, 1], label int64 (size, size)) of scene ``index``."""
    if domain not in _PALETTES:
        raise ValueError(f"domain must be 'source' or 'target', got {domain!r}")
    rng = np.random.default_rng([seed, _DOMAIN_SEED[domain], index])
    label = _layout(rng, size)
    return torch.from_numpy(_render(rng, label, domain)), torch.from_numpy(label.astype(np.int64))


class SyntheticScenes(Dataset):
    """``count`` scenes of one domain, generated once and kept in memory.

    Items are dicts like the real datasets': ``image`` (3, S, S) normalised,
    ``label`` int64 (S, S), ``index``, ``name``. ``split`` "val" draws other
    scenes than "train".
    """

    class_names = CLASSES
    num_classes = NUM_CLASSES

    def __init__(self, domain: str, count: int = 256, size: int = 64, seed: int = 0, split: str = "train"):
        self.domain, self.size, self.split = domain, size, split
        self.name = f"synthetic-{domain}-{split}"
        offset = 0 if split == "train" else 1_000_000
        scenes = [make_scene(domain, offset + i, size, seed) for i in range(count)]
        mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1) / 255
        std = torch.tensor(IMAGENET_STD).view(3, 1, 1) / 255
        self.images = torch.stack([(img - mean) / std for img, _ in scenes])  # (N, 3, S, S)
        self.labels = torch.stack([lbl for _, lbl in scenes])  # (N, S, S)

    def __len__(self) -> int:
        return len(self.labels)

    def read_label(self, index: int) -> np.ndarray:
        return self.labels[index].numpy().astype(np.uint8)

    def __getitem__(self, index: int) -> dict:
        return {"image": self.images[index], "label": self.labels[index], "index": index,
                "name": f"{self.name}/{index:06d}"}  # fmt: skip
