"""Exact resume on file datasets: every random draw of the data pipelines (crop, flip,
cat_max_ratio retries, RCS) is a pure function of (seed, draw index), so N + N iterations
equal 2N bit for bit on the released GTA5 / Cityscapes layouts, with any number of workers."""

import torch

from fastuda import config, train
from fastuda.data import _fake
from test_train import assert_same_networks, demo_weights


def _cfg(gta, cs, workers: int) -> config.TrainConfig:
    return config.load_config("daformer_gta2cs", [
        f"data.source_root={gta}", f"data.target_root={cs}", "data.resize=(128,64)", "data.crop_size=(32,32)",
        "data.batch_size=2", f"data.workers={workers}", "data.eval_samples=1", "model.backbone=mit_demo",
        f"model.pretrained={demo_weights()}", "rcs.min_pixels=0", "uda.pseudo_ignore_top=2", "uda.pseudo_ignore_bottom=4",
        "uda.jitter_prob=1.0", "uda.blur_prob=1.0", "max_iters=2", "eval_interval=-1", "checkpoint_interval=0",
        "log_interval=1",
    ])  # fmt: skip


def test_file_datasets_resume_bit_for_bit(tmp_path):
    """1 + 1 iterations with two workers per loader == 2 straight in the main process: RCS on
    the source (its re-crops included), cat_max_ratio crops and flips on both domains; three
    files per domain and batch 2, so the resumed draws (k = 2, 3) cross an epoch boundary."""
    gta = _fake.write_fake_gta(tmp_path / "gta", count=3)
    cs = _fake.write_fake_cityscapes(tmp_path / "cityscapes")
    straight = train.train(_cfg(gta, cs, workers=0), tmp_path / "straight", progress=False)
    first = train.train(_cfg(gta, cs, workers=2), tmp_path / "split", progress=False, max_iters=1)
    assert first["iteration"] == 1
    a, b = first["student"].state_dict(), straight["student"].state_dict()
    assert any(not torch.equal(a[n], b[n]) for n in a)  # the check below compares weights training changed
    resumed = train.train(None, tmp_path / "split", resume=tmp_path / "split" / "latest.pt", progress=False)
    assert resumed["iteration"] == 2
    assert_same_networks(straight, resumed)
