"""Pictures of a run, read back from the PNG files: prediction grids (titles, tiles in the
class colours, legend) and the training curves."""

import json

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from fastuda.data.labels import CITYSCAPES_CLASSES
from fastuda.runtime.pictures import palette, prediction_grid, render_curves, render_grid, save_curves, save_png

# written out from cityscapesScripts' labels.py, not taken from fastuda
ROAD, CAR, BICYCLE, SKY = (128, 64, 128), (0, 0, 142), (119, 11, 32), (70, 130, 180)
DEMO = ("sky", "road", "building", "vegetation", "car", "pole")


def find_tile(grid: np.ndarray, tile: np.ndarray, x: int) -> int:
    """The row at which ``tile`` sits in ``grid`` at column ``x`` (exact pixels), else -1."""
    h, w = tile.shape[:2]
    for y in range(grid.shape[0] - h + 1):
        if np.array_equal(grid[y, x : x + w], tile[0]) and np.array_equal(grid[y : y + h, x : x + w], tile):
            return y
    return -1


def has_block(region: np.ndarray, colour, size: int = 8) -> bool:
    """Whether ``region`` holds a size x size block of exactly ``colour`` (a legend swatch)."""
    hit = np.all(region == np.array(colour, np.uint8), axis=-1).astype(np.int32)
    if hit.shape[0] < size or hit.shape[1] < size:
        return False
    s = np.pad(hit, ((1, 0), (1, 0))).cumsum(0).cumsum(1)  # box sums through an integral image
    box = s[size:, size:] - s[:-size, size:] - s[size:, :-size] + s[:-size, :-size]
    return bool((box == size * size).any())


def test_palette_cityscapes_demo_and_unknown_names():
    cs = palette(CITYSCAPES_CLASSES)
    assert cs.shape == (19, 3) and cs.dtype == np.uint8
    assert tuple(cs[0]) == ROAD and tuple(cs[13]) == CAR and tuple(cs[18]) == BICYCLE and tuple(cs[10]) == SKY
    demo = palette(DEMO)
    assert tuple(demo[0]) == SKY and tuple(demo[5]) == (220, 220, 0)  # the demo's yellow poles
    other = palette(["alpha", "beta", "gamma"])
    assert len({tuple(c) for c in other}) == 3


def test_grid_png_has_titles_tiles_in_class_colours_and_legend(tmp_path):
    g = torch.Generator().manual_seed(0)
    h, w, tile_width = 12, 20, 40  # tiles are scaled x2 with nearest neighbours
    rows = []
    for _ in range(2):
        image = torch.randint(0, 256, (h, w, 3), generator=g, dtype=torch.uint8).numpy()
        label = torch.randint(0, 19, (h, w), generator=g)
        label[0, :5] = 255
        pred = torch.randint(0, 19, (h, w), generator=g)
        rows.append([image, label, pred])
    save_png(render_grid(rows, ["image", "ground truth", "prediction"], CITYSCAPES_CLASSES, tile_width=tile_width),
             tmp_path / "grid.png")  # fmt: skip
    grid = np.asarray(Image.open(tmp_path / "grid.png").convert("RGB"))
    cell = tile_width + 4
    assert grid.shape[1] == 3 * cell

    table = np.array([CITYSCAPES_COLOURS_BY_ID[k] for k in range(19)], np.uint8)
    tops = []
    for r, (_, label, pred) in enumerate(rows):
        want_pred = table[pred.numpy()].repeat(2, 0).repeat(2, 1)  # nearest x2, colours exact
        y = find_tile(grid, want_pred, 2 * cell + 2)
        assert y >= 0, f"row {r}: prediction tile not found in the palette colours"
        lab = label.numpy()
        want_gt = np.where((lab == 255)[..., None], 0, table[np.clip(lab, 0, 18)]).astype(np.uint8)
        assert np.array_equal(grid[y : y + 2 * h, cell + 2 : cell + 2 + 2 * w], want_gt.repeat(2, 0).repeat(2, 1))
        tops.append(y)
    assert tops[1] > tops[0]
    title = grid[: tops[0] - 2]
    assert title.shape[0] >= 10, "no title strip above the tiles"
    for c in range(3):  # dark text pixels over every column
        assert (title[:, c * cell : (c + 1) * cell].max(-1) < 100).sum() > 20, f"column {c} has no title"
    legend = grid[tops[1] + 2 * h + 2 :]
    assert legend.shape[0] >= 12, "no legend strip below the tiles"
    for k, colour in CITYSCAPES_COLOURS_BY_ID.items():
        assert has_block(legend, colour), f"legend misses the swatch of class {k}"
    assert (legend.max(-1) < 60).sum() > 200  # the class names


CITYSCAPES_COLOURS_BY_ID = {
    0: ROAD, 1: (244, 35, 232), 2: (70, 70, 70), 3: (102, 102, 156), 4: (190, 153, 153), 5: (153, 153, 153),
    6: (250, 170, 30), 7: (220, 220, 0), 8: (107, 142, 35), 9: (152, 251, 152), 10: SKY, 11: (220, 20, 60),
    12: (255, 0, 0), 13: CAR, 14: (0, 0, 70), 15: (0, 60, 100), 16: (0, 80, 100), 17: (0, 0, 230), 18: BICYCLE,
}  # fmt: skip


class StripeModel(nn.Module):
    """Logits at the input resolution whose argmax is class (x // 3) % K."""

    def __init__(self, k: int):
        super().__init__()
        self.k = k
        self.p = nn.Parameter(torch.zeros(()))

    def forward(self, x):
        b, _, h, w = x.shape
        cls = (torch.arange(w) // 3) % self.k
        logits = torch.nn.functional.one_hot(cls, self.k).T.float()[None, :, None, :].expand(b, self.k, h, w)
        return logits * 10 + self.p


def test_prediction_grid_columns_and_prediction_colours(tmp_path):
    from fastuda.data.synthetic import SyntheticScenes

    dataset = SyntheticScenes("target", 3, 24, seed=0, split="val")
    model = StripeModel(6).train()
    img = prediction_grid(model, dataset, dataset.class_names, count=2, tile_width=48)
    assert model.training  # restored
    save_png(img, tmp_path / "pred.png")
    grid = np.asarray(Image.open(tmp_path / "pred.png").convert("RGB"))
    colours = np.array([SKY, ROAD, (70, 70, 70), (107, 142, 35), CAR, (220, 220, 0)], np.uint8)
    want = colours[(np.arange(24) // 3) % 6][None].repeat(24, 0).repeat(2, 0).repeat(2, 1)
    assert find_tile(grid, want, 2 * 52 + 2) >= 0
    gt = colours[dataset[0]["label"].numpy()].repeat(2, 0).repeat(2, 1)
    assert find_tile(grid, gt, 52 + 2) >= 0


def records(n: int = 20):
    out = []
    for it in range(10, 10 * n + 1, 10):
        out.append({"iter": it, "loss": 2 / (1 + it / 50), "loss_src": 1.0, "lr": 6e-5 * it / (10 * n),
                    "pseudo_weight": 0.3 + it / 1000, "it_per_s": 3.0})  # fmt: skip
        if it % 50 == 0:
            out.append({"iter": it, "eval": {"mIoU": it / 10}, "iou": {"road": 50.0}})  # percent
    return out


def test_curves_png_panels_and_series(tmp_path):
    log = tmp_path / "log.jsonl"
    log.write_text("".join(json.dumps(r) + "\n" for r in records()) + '{"iter": 210, "lo')  # a cut last line
    assert save_curves(log, tmp_path / "curves.png")
    img = np.asarray(Image.open(tmp_path / "curves.png").convert("RGB"))
    assert img.shape == (600, 960, 3)  # 2 x 2 panels of 480 x 300
    blue, orange = (31, 119, 180), (255, 127, 14)
    for name, (y0, x0) in {"losses": (0, 0), "lr": (0, 480), "weight": (300, 0), "mIoU": (300, 480)}.items():
        panel = img[y0 + 44 : y0 + 260, x0 + 64 : x0 + 468]  # the plot area
        assert np.all(panel == blue, axis=-1).sum() > 100, f"{name}: no curve drawn"
    assert np.all(img[44:260, 64:468] == orange, axis=-1).sum() > 100  # the second loss
    assert np.all(img[300:, 480:] == orange, axis=-1).sum() == 0


def test_curves_skip_missing_panels_and_empty_logs(tmp_path):
    img = render_curves([{"iter": 1, "loss": 1.0}, {"iter": 2, "loss": 0.5}])
    assert img.size == (480, 300)
    assert render_curves([{"iter": 1, "it_per_s": 2.0}]) is None
    (tmp_path / "log.jsonl").write_text("")
    assert not save_curves(tmp_path / "log.jsonl", tmp_path / "curves.png")
    assert not (tmp_path / "curves.png").exists()


def test_render_grid_rejects_ragged_rows():
    with pytest.raises(ValueError, match="one tile per title"):
        render_grid([[np.zeros((2, 2), np.int64)]], ["a", "b"], DEMO)
