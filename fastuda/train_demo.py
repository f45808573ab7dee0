"""``make demo``: source-only vs DAFormer-style UDA on the synthetic two-domain scenes, on CPU.

    python -m fastuda.train_demo [--iters 400] [--out runs/demo] [key=value ...]

Trains the ``demo_source_only`` preset, then the ``demo`` preset (EMA teacher,
confidence-weighted pseudo-labels, ClassMix, colour jitter and blur: the real
recipe, a small MiT), both with ``fastuda.train``; prints the target-domain
mIoU of each and saves a PNG grid (target image, ground truth, source-only
prediction, UDA prediction; titled columns and a class legend) to
``OUT/demo.png``. Each run keeps its outputs, ``train.log`` included, in
``OUT/demo_source_only`` and ``OUT/demo``.
"""

import argparse
import sys
import time
from pathlib import Path

from fastuda.config import load_config
from fastuda.models.slide import predict
from fastuda.runtime.pictures import render_grid, save_png, to_rgb


def save_grid(path: Path, dataset, models: list, rows: int = 6, tile_width: int = 192) -> None:
    """One row per target image: image, ground truth, source-only and UDA predictions,
    with titled columns and a legend of the demo's classes."""
    grid = []
    for i in range(min(rows, len(dataset))):
        sample = dataset[i]
        row = [to_rgb(sample["image"]), sample["label"]]
        for model in models:
            model.eval()
            row.append(predict(model, sample["image"][None])[0])
        grid.append(row)
    titles = ["target image", "ground truth", "source-only", "UDA"][: 2 + len(models)]
    save_png(render_grid(grid, titles, dataset.class_names, tile_width=tile_width), path)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m fastuda.train_demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("overrides", nargs="*", help="key=value overrides for both runs")
    parser.add_argument("--iters", type=int, default=None, help="iterations of each run (default: the preset's)")
    parser.add_argument("--out", default="runs/demo")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # after the arguments: the training loop's modules take seconds to import
    from fastuda import train
    from fastuda.runtime.build import build_eval_dataset
    from fastuda.runtime.logging import tee_output

    overrides = list(args.overrides) + ([f"max_iters={args.iters}"] if args.iters else [])
    out = Path(args.out)
    results, models, times = {}, [], {}
    for name in ("demo_source_only", "demo"):
        cfg = load_config(name, overrides)
        print(f"== {name}: {cfg.max_iters} iterations, {cfg.model.backbone}, batch {cfg.data.batch_size}+"
              f"{cfg.data.batch_size}, {cfg.data.synthetic_size} px", flush=True)  # fmt: skip
        t0 = time.perf_counter()
        with tee_output(out / name / "train.log", header=f"fastuda.train_demo: {name}"):
            result = train.train(cfg, out / name, device="cpu", progress=True)
        times[name] = time.perf_counter() - t0
        results[name] = result["eval"]["mIoU"]
        models.append(result["student"])
    val, _ = build_eval_dataset(cfg)
    print(f"\ntarget-domain mIoU on {len(val)} synthetic 'target' val scenes (per-class tables above):")
    print("| run                        | target mIoU | time   |")
    print("|----------------------------|-------------|--------|")
    for label, name in (("source-only", "demo_source_only"), ("UDA (DAFormer-style, DACS)", "demo")):
        print(f"| {label:<26} |    {results[name]:6.2f}   | {times[name]:5.0f} s |")
    gain = results["demo"] - results["demo_source_only"]
    print(f"UDA - source-only: {gain:+.2f} mIoU points")
    save_grid(out / "demo.png", val, models)
    print(f"grid (image | ground truth | source-only | UDA): {out / 'demo.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
