"""Tiny fake GTA5 / Synthia / Cityscapes folders in the exact released layouts.

For tests and benchmarks (and the training smoke test): random blocks of
released label ids (void ids included) and images whose colour follows the
label, written as the releases store them: GTA5 labels as 8-bit palette PNGs,
Cityscapes labelIds as 8-bit grey PNGs, Synthia labels as 16-bit RGB PNGs
(class id in the first channel, an instance id in the second).
"""

import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

from .labels import CITYSCAPES_ID_TO_TRAIN_ID, SYNTHIA_ID_TO_TRAIN_ID

CITYSCAPES_RAW_IDS = (0, 1, 4, *CITYSCAPES_ID_TO_TRAIN_ID)  # 0, 1, 4: void ids -> 255
SYNTHIA_RAW_IDS = (0, 13, 14, 22, *(k for k, v in SYNTHIA_ID_TO_TRAIN_ID.items() if v not in (9, 14, 16)))


def random_label(rng: np.random.Generator, height: int, width: int, ids, void: int = 1, blocks: int = 6) -> np.ndarray:
    """(H, W) raw ids: a background id, a few random rectangles of others, and
    the bottom eighth ``void`` (like the ego vehicle)."""
    ids = np.asarray(ids)
    label = np.full((height, width), rng.choice(ids), dtype=np.int64)
    for _ in range(blocks):
        y, x = rng.integers(0, height), rng.integers(0, width)
        h, w = rng.integers(height // 8 + 1, height // 2 + 2), rng.integers(width // 8 + 1, width // 2 + 2)
        label[y : y + h, x : x + w] = rng.choice(ids)
    label[height - height // 8 :] = void
    return label


def image_for(rng: np.random.Generator, label: np.ndarray, noise: float = 20.0) -> np.ndarray:
    """(H, W, 3) uint8: a colour per id plus noise, so images compress like photos, not like flat art."""
    palette = np.random.default_rng(7).integers(0, 256, (256, 3))
    image = palette[label % 256] + rng.normal(0, noise, (*label.shape, 3))
    return np.clip(image, 0, 255).astype(np.uint8)


def write_png16(path: Path, array: np.ndarray) -> None:
    """(H, W, 3) uint16 as a 16-bit RGB PNG (PIL cannot write these)."""
    height, width, channels = array.shape
    assert channels == 3
    rows = array.astype(">u2").reshape(height, width * 3)
    raw = b"".join(b"\x00" + row.tobytes() for row in rows)  # filter type 0 per row

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)
    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b"")
    Path(path).write_bytes(png)


def _palette_png(path: Path, label: np.ndarray) -> None:
    image = Image.frombytes("P", (label.shape[1], label.shape[0]), label.astype(np.uint8).tobytes())  # indices = ids
    image.putpalette(np.random.default_rng(3).integers(0, 256, 768, dtype=np.uint8).tobytes())
    image.save(path)


def write_fake_gta(root, count: int = 3, size: tuple[int, int] = (96, 64), seed: int = 0) -> Path:
    """``root/images/0000N.png`` and ``root/labels/0000N.png`` (palette, Cityscapes labelIds); size (W, H)."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "labels").mkdir(parents=True, exist_ok=True)
    for i in range(1, count + 1):
        label = random_label(rng, size[1], size[0], CITYSCAPES_RAW_IDS)
        Image.fromarray(image_for(rng, label)).save(root / "images" / f"{i:05d}.png")
        _palette_png(root / "labels" / f"{i:05d}.png", label)
    return root


def write_fake_synthia(root, count: int = 3, size: tuple[int, int] = (96, 64), seed: int = 0) -> Path:
    """``root/RGB/000000N.png`` and ``root/GT/LABELS/000000N.png`` (16-bit RGB)."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    (root / "RGB").mkdir(parents=True, exist_ok=True)
    (root / "GT" / "LABELS").mkdir(parents=True, exist_ok=True)
    for i in range(count):
        label = random_label(rng, size[1], size[0], SYNTHIA_RAW_IDS, void=0)
        Image.fromarray(image_for(rng, label)).save(root / "RGB" / f"{i:07d}.png")
        instance = rng.integers(0, 1000, label.shape)  # the second channel: never read as a class
        write_png16(root / "GT" / "LABELS" / f"{i:07d}.png", np.stack([label, instance, np.zeros_like(label)], -1))
    return root


def write_fake_cityscapes(
    root, counts: dict[str, int] | None = None, size: tuple[int, int] = (128, 64), seed: int = 0
) -> Path:
    """``root/leftImg8bit/<split>/<city>/..._leftImg8bit.png`` and ``gtFine`` labelIds
    (plus the _color and _polygons files the release has, which must be ignored)."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    for split, count in (counts or {"train": 3, "val": 2}).items():
        for i in range(count):
            city = ("aachen", "bochum")[i % 2] if split == "train" else "frankfurt"
            stem = f"{city}_{i:06d}_000019"
            image_dir = root / "leftImg8bit" / split / city
            label_dir = root / "gtFine" / split / city
            image_dir.mkdir(parents=True, exist_ok=True)
            label_dir.mkdir(parents=True, exist_ok=True)
            label = random_label(rng, size[1], size[0], CITYSCAPES_RAW_IDS)
            Image.fromarray(image_for(rng, label)).save(image_dir / f"{stem}_leftImg8bit.png")
            Image.fromarray(label.astype(np.uint8)).save(label_dir / f"{stem}_gtFine_labelIds.png")
            Image.fromarray(image_for(rng, label, noise=0)).save(label_dir / f"{stem}_gtFine_color.png")
            (label_dir / f"{stem}_gtFine_polygons.json").write_text("{}")
    return root
