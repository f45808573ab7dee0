"""Tiny fake GTA5 / Synthia / Cityscapes / ACDC / Dark Zurich / BDD100K / Mapillary
folders in the exact released layouts.

For tests and benchmarks (and the training smoke test): random blocks of
released label ids (void ids included) and images whose colour follows the
label, written as the releases store them: GTA5 labels as 8-bit palette PNGs,
Cityscapes, ACDC and Dark Zurich labelIds and train ids as 8-bit grey PNGs,
Synthia labels as 16-bit RGB PNGs (class id in the first channel, an instance
id in the second), BDD100K images as JPEGs with grey train-id masks, Mapillary
images as JPEGs with palette PNGs of its 66 class ids.
"""

import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

from .labels import CITYSCAPES_ID_TO_TRAIN_ID, CITYSCAPES_LABEL_IDS, SYNTHIA_ID_TO_TRAIN_ID

CITYSCAPES_RAW_IDS = (0, 1, 4, *CITYSCAPES_ID_TO_TRAIN_ID)  # 0, 1, 4: void ids -> 255
MAPILLARY_RAW_IDS = tuple(range(66))  # v1.2: 66 classes, 65 = unlabelled
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


def _release_frame(rng, image_path: Path, label_dir: Path | None, stem: str, size, train_ids: bool) -> None:
    """An ACDC / Dark Zurich frame: ``<stem>_rgb_anon.png`` and, with ``label_dir``, its
    ``_gt_labelIds``, ``_gt_labelTrainIds`` (when ``train_ids``), ``_gt_labelColor`` and
    ``_gt_invIds`` files (the last two must be ignored)."""
    label = random_label(rng, size[1], size[0], CITYSCAPES_RAW_IDS)
    image_path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image_for(rng, label)).save(image_path)
    if label_dir is None:
        return
    label_dir.mkdir(parents=True, exist_ok=True)
    Image.fromarray(label.astype(np.uint8)).save(label_dir / f"{stem}_gt_labelIds.png")
    if train_ids:
        Image.fromarray(CITYSCAPES_LABEL_IDS.lookup[label]).save(label_dir / f"{stem}_gt_labelTrainIds.png")
    Image.fromarray(image_for(rng, label, noise=0)).save(label_dir / f"{stem}_gt_labelColor.png")
    Image.fromarray((rng.random(label.shape) < 0.1).astype(np.uint8)).save(label_dir / f"{stem}_gt_invIds.png")


ACDC_SEQUENCES = {"fog": "GOPR0475", "night": "GOPR0351", "rain": "GOPR0400", "snow": "GOPR0122"}


def write_fake_acdc(
    root,
    counts: dict[str, int] | None = None,
    conditions=("fog", "night", "rain", "snow"),
    layout: str = "release",
    size: tuple[int, int] = (96, 54),
    train_ids: bool = True,
    seed: int = 0,
) -> Path:
    """ACDC: ``counts`` frames per condition and split (default train 2, val 1, test 1).

    ``layout``: "release" (``rgb_anon/<cond>/<split>/<seq>/``), "flat" (only the
    published code's rsync copy ``rgb_anon/<split>/``, train ids only, as its README
    makes it) or "both" (the release plus the copy, what that README leaves behind).
    ``train_ids=False`` writes ``_gt_labelIds`` only (read through the lookup table)."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    for condition in conditions:
        seq = ACDC_SEQUENCES[condition]
        for split, count in (counts or {"train": 2, "val": 1, "test": 1}).items():
            for i in range(count):
                stem = f"{seq}_frame_{i * 7 + 1:06d}"
                image = root / "rgb_anon" / condition / split / seq / f"{stem}_rgb_anon.png"
                label_dir = root / "gt" / condition / split / seq if split != "test" else None
                _release_frame(rng, image, label_dir, stem, size, train_ids or layout != "release")
                if layout in ("flat", "both") and split != "test":
                    flat_image = root / "rgb_anon" / split / image.name
                    flat_image.parent.mkdir(parents=True, exist_ok=True)
                    flat_image.write_bytes(image.read_bytes())
                    train_label = label_dir / f"{stem}_gt_labelTrainIds.png"
                    (root / "gt" / split).mkdir(parents=True, exist_ok=True)
                    (root / "gt" / split / train_label.name).write_bytes(train_label.read_bytes())
    if layout == "flat":
        for condition in conditions:
            shutil.rmtree(root / "rgb_anon" / condition)
            shutil.rmtree(root / "gt" / condition)
    return root


def write_fake_dark_zurich(
    root, counts: dict[str, int] | None = None, size: tuple[int, int] = (96, 54), seed: int = 0
) -> Path:
    """Dark Zurich: ``rgb_anon/train/{day,twilight,night}``, ``rgb_anon/val/night`` with
    ``gt/val/night`` labels, ``rgb_anon/test/night``; ``counts`` per folder (default
    train 2 per time of day, val 2, test 1)."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    counts = counts or {"train": 2, "val": 2, "test": 1}
    folders = [("train", t) for t in ("day", "twilight", "night")] + [("val", "night"), ("test", "night")]
    for split, time in folders:
        seq = {"day": "GOPR0348", "twilight": "GOPR0355", "night": "GOPR0356"}[time]
        for i in range(counts.get(split, 0)):
            stem = f"{seq}_frame_{i * 3 + 1:06d}"
            image = root / "rgb_anon" / split / time / seq / f"{stem}_rgb_anon.png"
            label_dir = root / "gt" / split / time / seq if split == "val" else None
            _release_frame(rng, image, label_dir, stem, size, True)
    return root


def write_fake_bdd100k(
    root, count: int = 3, split: str = "val", size: tuple[int, int] = (80, 45), seed: int = 0
) -> Path:
    """BDD100K 10K: ``images/10k/<split>/<id>.jpg`` and ``labels/sem_seg/masks/<split>/<id>.png`` (train ids)."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    images, masks = root / "images" / "10k" / split, root / "labels" / "sem_seg" / "masks" / split
    images.mkdir(parents=True, exist_ok=True)
    masks.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        name = f"{rng.integers(1 << 31):08x}-{rng.integers(1 << 31):08x}"
        label = CITYSCAPES_LABEL_IDS.lookup[random_label(rng, size[1], size[0], CITYSCAPES_RAW_IDS)]
        Image.fromarray(image_for(rng, label.astype(np.int64))).save(images / f"{name}.jpg", quality=90)
        Image.fromarray(label).save(masks / f"{name}.png")
    return root


def write_fake_mapillary(
    root, count: int = 3, split: str = "validation", size: tuple[int, int] = (80, 60), seed: int = 0
) -> Path:
    """Mapillary Vistas v1.2: ``<split>/images/<key>.jpg`` and ``<split>/labels/<key>.png`` (palette,
    the 66 class ids; the first label holds every id) and the ``instances`` the loader must ignore."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    for folder in ("images", "labels", "instances"):
        (root / split / folder).mkdir(parents=True, exist_ok=True)
    for i in range(count):
        key = "".join(rng.choice(list("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-"), 22))
        label = random_label(rng, size[1], size[0], MAPILLARY_RAW_IDS, void=65)
        if i == 0:
            label.reshape(-1)[: len(MAPILLARY_RAW_IDS)] = MAPILLARY_RAW_IDS
        Image.fromarray(image_for(rng, label)).save(root / split / "images" / f"{key}.jpg", quality=90)
        _palette_png(root / split / "labels" / f"{key}.png", label)
        Image.fromarray(label.astype(np.uint16) * 256).save(root / split / "instances" / f"{key}.png")
    return root
