"""Pictures of a run, drawn with PIL: prediction grids with titled columns and a class legend,
and the training curves.

- ``prediction_grid``: image | ground truth | prediction for the first images of a split;
- ``render_grid``: any such grid (the demo adds one prediction column per model);
- ``render_curves`` / ``save_curves``: losses, learning rate, pseudo-label weight and mIoU
  from the records of ``log.jsonl``.

Label maps are coloured with the Cityscapes palette (by class name, so GTA5 / Synthia /
Cityscapes runs agree), the synthetic demo's own colours for its six classes, and
generated colours for names neither knows; the ignore label is black. Plain PIL keeps
matplotlib out of the dependencies: four line plots do not need it.
"""

import colorsys
import json
import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from fastuda._io import atomic_write
from fastuda.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from fastuda.models.slide import predict

# the Cityscapes colours of the 19 evaluation classes (cityscapesScripts labels.py)
CITYSCAPES_COLOURS = {
    "road": (128, 64, 128), "sidewalk": (244, 35, 232), "building": (70, 70, 70), "wall": (102, 102, 156),
    "fence": (190, 153, 153), "pole": (153, 153, 153), "traffic light": (250, 170, 30),
    "traffic sign": (220, 220, 0), "vegetation": (107, 142, 35), "terrain": (152, 251, 152),
    "sky": (70, 130, 180), "person": (220, 20, 60), "rider": (255, 0, 0), "car": (0, 0, 142),
    "truck": (0, 0, 70), "bus": (0, 60, 100), "train": (0, 80, 100), "motorcycle": (0, 0, 230),
    "bicycle": (119, 11, 32),
}  # fmt: skip
# the synthetic demo's classes; its poles are yellow so they stand out from the grey buildings
DEMO_COLOURS = {"sky": (70, 130, 180), "road": (128, 64, 128), "building": (70, 70, 70),
                "vegetation": (107, 142, 35), "car": (0, 0, 142), "pole": (220, 220, 0)}  # fmt: skip
IGNORE_COLOUR = (0, 0, 0)

_BACKGROUND = (255, 255, 255)
_TEXT = (0, 0, 0)
_GAP = 2  # white pixels around each tile
_SERIES = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75)]


def _font(size: int = 14):
    try:
        return ImageFont.load_default(size=size)  # a scalable font (Pillow >= 10.1 with FreeType)
    except (TypeError, ValueError, OSError):
        return ImageFont.load_default()


def _text_size(draw: ImageDraw.ImageDraw, text: str, font) -> tuple[int, int]:
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    return right - left, bottom - top


def palette(class_names) -> np.ndarray:
    """(K, 3) uint8 colours for ``class_names``: the demo's for the demo's classes, else
    Cityscapes' by name, else evenly spaced hues."""
    names = [str(n) for n in class_names]
    known = DEMO_COLOURS if set(names) <= set(DEMO_COLOURS) else CITYSCAPES_COLOURS
    colours = []
    for i, name in enumerate(names):
        if name in known:
            colours.append(known[name])
        else:  # golden-ratio hue steps keep neighbours apart
            r, g, b = colorsys.hsv_to_rgb((i * 0.618034) % 1.0, 0.65, 0.9)
            colours.append((int(255 * r), int(255 * g), int(255 * b)))
    return np.array(colours, np.uint8).reshape(-1, 3)


def colourise(label, colours: np.ndarray) -> np.ndarray:
    """(H, W) class indices -> (H, W, 3) uint8; the ignore label and anything out of range is black."""
    label = np.asarray(label.cpu() if isinstance(label, torch.Tensor) else label).astype(np.int64)
    table = np.concatenate([colours, np.array([IGNORE_COLOUR], np.uint8)])
    return table[np.where((label >= 0) & (label < len(colours)), label, len(colours))]


def to_rgb(image: torch.Tensor) -> np.ndarray:
    """A normalised (3, H, W) image (ImageNet mean / std) -> (H, W, 3) uint8."""
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    return (image.float().cpu() * std + mean).round().clamp(0, 255).byte().permute(1, 2, 0).numpy()


def render_grid(rows: list[list], titles: list[str], class_names, colours: np.ndarray | None = None,
                tile_width: int = 256) -> Image.Image:  # fmt: skip
    """One row per sample; a tile is an (H, W, 3) uint8 image or an (H, W) label map
    (coloured with ``colours``, default ``palette(class_names)``). Every tile is resized to
    ``tile_width`` (label maps with nearest neighbours, so their colours stay exact).
    A title strip names the columns; a legend strip below shows each class's colour."""
    colours = palette(class_names) if colours is None else colours
    if not rows or any(len(r) != len(titles) for r in rows):
        raise ValueError(f"render_grid: every row needs one tile per title ({len(titles)})")
    font = _font()
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    line = _text_size(probe, "Ag", font)[1]

    tiles = []
    for row in rows:
        out = []
        for tile in row:
            tile = np.asarray(tile.cpu() if isinstance(tile, torch.Tensor) else tile)
            is_label = tile.ndim == 2
            img = Image.fromarray(colourise(tile, colours) if is_label else tile.astype(np.uint8))
            height = max(1, round(img.height * tile_width / img.width))
            out.append(img.resize((tile_width, height), Image.NEAREST if is_label else Image.BILINEAR))
        tiles.append(out)
    cell_w = tile_width + 2 * _GAP
    width = cell_w * len(titles)
    title_h = line + 10
    row_heights = [max(t.height for t in row) + 2 * _GAP for row in tiles]

    # legend: swatch + name, wrapped into lines as wide as the grid
    items, x, y, swatch = [], 8, 6, line
    for k, name in enumerate(class_names):
        item_w = swatch + 6 + _text_size(probe, str(name), font)[0] + 16
        if x + item_w > width and x > 8:
            x, y = 8, y + line + 8
        items.append((x, y, k, str(name)))
        x += item_w
    legend_h = y + line + 10

    grid = Image.new("RGB", (width, title_h + sum(row_heights) + legend_h), _BACKGROUND)
    draw = ImageDraw.Draw(grid)
    for c, title in enumerate(titles):
        tw = _text_size(draw, title, font)[0]
        draw.text((c * cell_w + (cell_w - tw) // 2, 5), title, fill=_TEXT, font=font)
    top = title_h
    for row, height in zip(tiles, row_heights):
        for c, tile in enumerate(row):
            grid.paste(tile, (c * cell_w + _GAP, top + _GAP))
        top += height
    for x, y, k, name in items:
        y0 = top + y
        draw.rectangle([x, y0, x + swatch - 1, y0 + swatch - 1], fill=tuple(int(v) for v in colours[k]),
                       outline=(120, 120, 120))  # fmt: skip
        draw.text((x + swatch + 6, y0), name, fill=_TEXT, font=font)
    return grid


@torch.no_grad()
def prediction_grid(model, dataset, class_names, device="cpu", crop=None, stride=None, autocast_dtype=None,
                    count: int = 4, tile_width: int = 256) -> Image.Image:  # fmt: skip
    """image | ground truth | prediction for the first ``count`` samples of ``dataset``
    (predicted the way ``evaluate`` does; the model's train/eval mode is restored)."""
    was_training = model.training
    model.eval()
    rows = []
    try:
        for i in range(min(count, len(dataset))):
            sample = dataset[i]
            image, label = sample["image"], sample["label"]
            with torch.autocast(torch.device(device).type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
                pred = predict(model, image[None].to(device), label.shape[-2:], crop, stride)[0]
            rows.append([to_rgb(image), label, pred.cpu()])
    finally:
        model.train(was_training)
    return render_grid(rows, ["image", "ground truth", "prediction"], class_names, tile_width=tile_width)


def save_png(image: Image.Image, path: Path) -> None:
    """Writes a PNG atomically (a temporary file in the same directory, then a rename)."""
    atomic_write(path, lambda tmp: image.save(tmp, format="PNG"))


# ---- curves


def _curve_panels(records: list[dict]) -> list[tuple[str, dict[str, list[tuple[int, float]]]]]:
    """[(panel title, {series name: [(iteration, value), ...]})] for the panels that have data."""
    losses: dict[str, list] = {}
    lr, weight, miou = [], [], []
    for r in records:
        it = r.get("iter")
        if not isinstance(it, (int, float)):
            continue
        for key, value in r.items():
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not np.isfinite(value):
                continue
            if key.startswith("loss"):
                losses.setdefault(key, []).append((it, value))
            elif key == "lr":
                lr.append((it, value))
            elif key == "pseudo_weight":
                weight.append((it, value))
        ev = r.get("eval")
        if isinstance(ev, dict) and isinstance(ev.get("mIoU"), (int, float)):
            miou.append((it, ev["mIoU"]))  # percent
    panels = [("losses", losses), ("learning rate", {"lr": lr}), ("pseudo-label weight", {"pseudo_weight": weight}),
              ("target mIoU (%)", {"mIoU": miou})]  # fmt: skip
    return [(title, {k: v for k, v in series.items() if v}) for title, series in panels
            if any(series.values())]  # fmt: skip


def _ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """Round values (1, 2, 2.5 or 5 times a power of ten apart) inside [lo, hi], about ``n`` of them."""
    raw = (hi - lo) / (n - 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw * (1 - 1e-9))
    first = math.ceil(lo / step - 1e-9)
    return [k * step for k in range(first, math.floor(hi / step + 1e-9) + 1)]


def _draw_panel(img: Image.Image, box: tuple[int, int, int, int], title: str, series: dict, xlim: tuple, font) -> None:
    draw = ImageDraw.Draw(img)
    x0, y0, x1, y1 = box
    left, right, top, bottom = x0 + 64, x1 - 12, y0 + 44, y1 - 40  # the plot area inside the panel
    draw.text((x0 + 8, y0 + 4), title, fill=_TEXT, font=font)
    # series names in their colours under the title (the legend)
    lx = x0 + 8
    for k, name in enumerate(series):
        colour = _SERIES[k % len(_SERIES)]
        draw.line([lx, y0 + 31, lx + 14, y0 + 31], fill=colour, width=3)
        draw.text((lx + 18, y0 + 23), name, fill=_TEXT, font=font)
        lx += 18 + _text_size(draw, name, font)[0] + 14
    ys = [p[1] for pts in series.values() for p in pts]
    xmin, xmax = xlim
    ymin, ymax = min(ys), max(ys)
    if xmax == xmin:
        xmin, xmax = xmin - 1, xmax + 1
    if ymax == ymin:
        pad = abs(ymax) * 0.05 or 1.0
        ymin, ymax = ymin - pad, ymax + pad

    def px(x: float, y: float) -> tuple[float, float]:
        return (left + (x - xmin) / (xmax - xmin) * (right - left), bottom - (y - ymin) / (ymax - ymin) * (bottom - top))

    for v in _ticks(ymin, ymax):  # y grid and labels
        _, yy = px(xmin, v)
        draw.line([left, yy, right, yy], fill=(225, 225, 225))
        label = f"{v:.3g}"
        draw.text((left - 6 - _text_size(draw, label, font)[0], yy - 7), label, fill=_TEXT, font=font)
    for v in _ticks(xmin, xmax):  # x ticks and labels
        xx, _ = px(v, ymin)
        draw.line([xx, bottom, xx, bottom + 4], fill=_TEXT)
        label = f"{v:g}"
        draw.text((xx - _text_size(draw, label, font)[0] / 2, bottom + 6), label, fill=_TEXT, font=font)
    draw.text(((left + right) / 2 - 28, bottom + 22), "iteration", fill=_TEXT, font=font)
    draw.rectangle([left, top, right, bottom], outline=_TEXT)
    for k, pts in enumerate(series.values()):
        colour = _SERIES[k % len(_SERIES)]
        pts = sorted(pts)
        if len(pts) == 1:
            cx, cy = px(*pts[0])
            draw.ellipse([cx - 3, cy - 3, cx + 3, cy + 3], fill=colour)
        else:
            draw.line([px(x, y) for x, y in pts], fill=colour, width=2)


def render_curves(records: list[dict], panel_size: tuple[int, int] = (480, 300)) -> Image.Image | None:
    """Panels (two per row) of the losses, lr, pseudo-label weight and mIoU found in ``records``
    (the dicts of ``log.jsonl``); None when there is nothing to plot."""
    panels = _curve_panels(records)
    if not panels:
        return None
    pw, ph = panel_size
    cols = min(2, len(panels))
    rows = (len(panels) + cols - 1) // cols
    img = Image.new("RGB", (cols * pw, rows * ph), _BACKGROUND)
    font = _font(13)
    xs = [p[0] for _, series in panels for pts in series.values() for p in pts]
    for i, (title, series) in enumerate(panels):  # one iteration axis for all panels
        x0, y0 = (i % cols) * pw, (i // cols) * ph
        _draw_panel(img, (x0, y0, x0 + pw, y0 + ph), title, series, (min(xs), max(xs)), font)
    return img


def save_curves(log_path: Path, png_path: Path) -> bool:
    """Draws ``png_path`` from the records in ``log_path`` (a ``log.jsonl``); False when it has none."""
    records = []
    with open(log_path, encoding="utf-8") as f:
        for line in f:
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:  # a line cut short by a killed run
                continue
    image = render_curves(records)
    if image is None:
        return False
    save_png(image, png_path)
    return True
