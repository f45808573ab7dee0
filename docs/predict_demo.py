"""The pictures of the README's Predict section, from a demo checkpoint.

    python -m fastuda.train demo --out runs/demo
    python docs/predict_demo.py runs/demo/latest.pt

Writes four synthetic target-domain scenes (validation draws, never trained on) to
docs/predict/scenes/, runs ``python -m fastuda.predict`` on that folder, and saves
docs/predict/demo.png: per scene, the image | the colour overlay predict wrote | the
predicted classes | the ground truth, each enlarged 2x.
"""

import sys
from pathlib import Path

import numpy as np
from PIL import Image

from fastuda import predict
from fastuda.data.synthetic import CLASSES, make_scene

DOCS = Path(__file__).resolve().parent / "predict"
SCENES = (1001, 1002, 1003, 1004)  # scene indices far above the 256 training draws


def main(checkpoint: str) -> int:
    scenes = DOCS / "scenes"
    scenes.mkdir(parents=True, exist_ok=True)
    truths = []
    for i in SCENES:
        image, label = make_scene("target", i, size=64, seed=12345)
        pixels = (image.permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)
        Image.fromarray(pixels).save(scenes / f"scene_{i}.png")
        truths.append(label.numpy())
    out = Path("runs/predict_demo")
    rc = predict.main([checkpoint, str(scenes), "--out", str(out), "--side-by-side", "--no-progress"])
    if rc:
        return rc
    colours = predict.palette(CLASSES)
    rows = []
    for i, truth in zip(SCENES, truths):
        name = f"scene_{i}.png"
        image = np.array(Image.open(scenes / name).convert("RGB"))
        overlay = np.array(Image.open(out / "color" / name))
        side = np.array(Image.open(out / "side" / name))
        prediction = side[:, side.shape[1] // 2 :]
        rows.append(np.concatenate([image, overlay, prediction, colours[truth]], axis=1))
    grid = np.concatenate(rows, axis=0)
    grid = grid.repeat(2, axis=0).repeat(2, axis=1)  # 2x nearest: 64 px scenes are small
    Image.fromarray(grid).save(DOCS / "demo.png", optimize=True)
    print(f"wrote {DOCS / 'demo.png'} ({grid.shape[1]}x{grid.shape[0]})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "runs/demo/latest.pt"))
