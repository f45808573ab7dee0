"""Data loading: PNG decoding + the published pipelines, in images per second.

Fake frames at the released sizes (GTA5 1914 x 1052, Cityscapes 2048 x 1024,
noisy so they compress like photos) are written once per session. Providers:
``decode`` (image + label as stored, no pipeline), ``daformer`` and ``hrda``
(the preset training pipelines: resize, cat_max_ratio crop, flip, normalise;
HRDA's Cityscapes one with the valid pseudo-label mask), each in the main
process (``w0``) and through ``make_loader`` with 2 persistent workers
(``w2``, batch 2). ``extra_info["images/s"]`` is the figure to compare with a
training step: a GPU step of batch 2 source + 2 target needs 4 images.
"""

import pytest
import torch

from fastuda.data import build_dataset, make_loader, preset_pipeline
from fastuda.data._fake import write_fake_cityscapes, write_fake_gta

DATASETS = ["gta", "cityscapes"]
PIPELINES = ["decode", "daformer", "hrda"]
WORKERS = [0, 2]
IMAGES_PER_EPOCH = 8  # 2 files, repeated


@pytest.fixture(scope="session")
def roots(tmp_path_factory):
    root = tmp_path_factory.mktemp("data_bench")
    return {
        "gta": write_fake_gta(root / "gta", count=2, size=(1914, 1052)),
        "cityscapes": write_fake_cityscapes(root / "cityscapes", {"train": 2}, size=(2048, 1024)),
    }


def setup(roots, dataset, pipeline, workers):
    """Returns (fn, images per call); a loader is built, and its workers started, outside the timing."""
    preset = None if pipeline == "decode" else preset_pipeline(pipeline, dataset)
    data = build_dataset(dataset, roots[dataset], pipeline=preset, seed=0)
    data.samples = data.samples * (IMAGES_PER_EPOCH // len(data.samples))
    if workers == 0:
        return (lambda: [data[i] for i in range(len(data))]), len(data)
    loader = make_loader(data, batch_size=2, workers=workers, shuffle=True, seed=0, pin_memory=False)
    iter(loader)  # start the persistent workers
    return (lambda: [batch["image"].shape for batch in loader]), len(data)


@pytest.mark.parametrize("workers", WORKERS, ids=lambda w: f"w{w}")
@pytest.mark.parametrize("pipeline", PIPELINES)
@pytest.mark.parametrize("dataset", DATASETS)
def test_data(benchmark, roots, dataset, pipeline, workers):
    benchmark.group = f"data {dataset}"
    fn, images = setup(roots, dataset, pipeline, workers)
    benchmark.pedantic(fn, rounds=3, warmup_rounds=1)
    if benchmark.disabled:
        return
    seconds = benchmark.stats.stats.median
    benchmark.extra_info.update(
        provider=f"{pipeline} w{workers}",
        device="cpu",
        workers=workers,
        torch_threads=torch.get_num_threads(),
        **{"images/s": round(images / seconds, 1)},
    )
