"""``make demo``: source-only vs DAFormer-style UDA on the synthetic two-domain scenes, on CPU.

    python -m fastuda.train_demo [--iters 400] [--out runs/demo] [key=value ...]

Trains the ``demo_source_only`` preset, then the ``demo`` preset (EMA teacher,
confidence-weighted pseudo-labels, ClassMix, colour jitter and blur: the real
recipe, a small MiT), both with ``fastuda.train``; prints the target-domain
mIoU of each and saves a PNG grid (target image, ground truth, source-only
prediction, UDA prediction) to ``OUT/demo.png``.
"""

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

from fastuda.config import load_config
from fastuda.models.slide import predict

# class colours for the grid (sky, road, building, vegetation, car, pole)
_COLOURS = np.array([[70, 130, 180], [128, 64, 128], [70, 70, 70], [107, 142, 35], [0, 0, 142], [220, 220, 0]],
                    np.uint8)  # fmt: skip


def _to_rgb(image: torch.Tensor) -> np.ndarray:
    from fastuda.data.transforms import IMAGENET_MEAN, IMAGENET_STD

    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    return (image * std + mean).clamp(0, 255).byte().permute(1, 2, 0).numpy()


def save_grid(path: Path, dataset, models: list, rows: int = 6, scale: int = 3) -> None:
    """One row per target image: image, ground truth, then each model's prediction."""
    from PIL import Image

    tiles = []
    for i in range(min(rows, len(dataset))):
        sample = dataset[i]
        row = [_to_rgb(sample["image"]), _COLOURS[sample["label"].numpy() % len(_COLOURS)]]
        for model in models:
            model.eval()
            pred = predict(model, sample["image"][None])[0]
            row.append(_COLOURS[pred.numpy()])
        tiles.append(np.concatenate([np.pad(t, ((2, 2), (2, 2), (0, 0)), constant_values=255) for t in row], 1))
    grid = np.concatenate(tiles, 0)
    Image.fromarray(grid).resize((grid.shape[1] * scale, grid.shape[0] * scale), Image.NEAREST).save(path)


def main(argv: list[str] | None = None) -> int:
    from fastuda import train
    from fastuda.runtime.build import build_eval_dataset

    parser = argparse.ArgumentParser(prog="python -m fastuda.train_demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("overrides", nargs="*", help="key=value overrides for both runs")
    parser.add_argument("--iters", type=int, default=None, help="iterations of each run (default: the preset's)")
    parser.add_argument("--out", default="runs/demo")
    args = parser.parse_args(argv)
    overrides = list(args.overrides) + ([f"max_iters={args.iters}"] if args.iters else [])
    out = Path(args.out)
    results, models, times = {}, [], {}
    for name in ("demo_source_only", "demo"):
        cfg = load_config(name, overrides)
        print(f"== {name}: {cfg.max_iters} iterations, {cfg.model.backbone}, batch {cfg.data.batch_size}+"
              f"{cfg.data.batch_size}, {cfg.data.synthetic_size} px", flush=True)  # fmt: skip
        t0 = time.perf_counter()
        result = train.train(cfg, out / name, device="cpu", progress=True)
        times[name] = time.perf_counter() - t0
        results[name] = result["eval"]["mIoU"]
        models.append(result["student"])
    val, _ = build_eval_dataset(cfg)
    print(f"\ntarget-domain mIoU on {len(val)} synthetic 'target' val scenes (per-class tables above):")
    print("| run                        | target mIoU | time   |")
    print("|----------------------------|-------------|--------|")
    for label, name in (("source-only", "demo_source_only"), ("UDA (DAFormer-style, DACS)", "demo")):
        print(f"| {label:<26} |    {100 * results[name]:6.2f}   | {times[name]:5.0f} s |")
    gain = 100 * (results["demo"] - results["demo_source_only"])
    print(f"UDA - source-only: {gain:+.2f} mIoU points")
    save_grid(out / "demo.png", val, models)
    print(f"grid (image | ground truth | source-only | UDA): {out / 'demo.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
