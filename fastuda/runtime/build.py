"""Building what a config describes: the segmentor, the datasets and the training loaders.

Shared by ``fastuda.train``, ``fastuda.evaluate`` and ``fastuda.predict``.
"""

import dataclasses
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from fastuda.config import TrainConfig
from fastuda.data.sampler import IterationSampler


def build_segmentor(cfg: TrainConfig, pretrained: bool = True) -> torch.nn.Module:
    """The student network of ``cfg`` (HRDA when ``hrda.enabled``); ``pretrained=False``
    skips ``model.pretrained`` (the weights come from a checkpoint)."""
    from fastuda.models import build_model

    model_cfg = cfg.model if pretrained else dataclasses.replace(cfg.model, pretrained=None)
    if model_cfg.pretrained and not Path(model_cfg.pretrained).is_file():
        raise FileNotFoundError(
            f"model.pretrained={model_cfg.pretrained} not found: download the SegFormer ImageNet weights "
            "(mit_b*.pth) there, or pass model.pretrained=None to start from scratch"
        )
    model = build_model(model_cfg)
    if cfg.hrda.enabled:
        from fastuda.models.hrda import HRDASegmentor

        h = cfg.hrda
        # the (pretrained) encoder of the plain model, shared by both scales; fresh HRDA heads
        model = HRDASegmentor(model.backbone, cfg.model.num_classes, lr_scale=h.lr_scale, detail_crop=h.hr_crop_size,
                              crop_divisible=h.crop_coord_divisible, detail_loss_weight=h.hr_loss_weight)  # fmt: skip
    return model


def amp_dtype(amp: str | None, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of ``--amp`` (default: bf16 on GPU, off on CPU)."""
    if amp is None:
        amp = "bf16" if torch.device(device).type == "cuda" else "off"
    return {"off": None, "bf16": torch.bfloat16, "fp16": torch.float16}[amp]


def test_settings(cfg: TrainConfig) -> tuple[tuple[int, int] | None, tuple[int, int] | None]:
    """(crop, stride) for slide inference: HRDA 1024 / 512; None (whole image) otherwise."""
    if cfg.hrda.enabled and cfg.data.target != "synthetic":
        return (1024, 1024), (512, 512)
    return None, None


# ---------------------------------------------------------------- data


def _pipeline(cfg: TrainConfig, dataset: str, train: bool):
    from fastuda.data import preset_pipeline

    pipe = preset_pipeline(cfg.data.recipe, dataset, train)
    changes = {}
    if cfg.data.resize is not None:
        changes["scale"] = tuple(cfg.data.resize)
    if train and cfg.data.crop_size is not None:
        changes["crop_size"] = tuple(cfg.data.crop_size)
    return dataclasses.replace(pipe, **changes) if changes else pipe


def build_train_datasets(cfg: TrainConfig):
    """(source, target) training datasets."""
    d = cfg.data
    if d.source == "synthetic" or d.target == "synthetic":
        from fastuda.data.synthetic import SyntheticScenes

        if not (d.source == d.target == "synthetic"):
            raise ValueError("the synthetic demo needs data.source and data.target both 'synthetic'")
        return (SyntheticScenes("source", d.synthetic_samples, d.synthetic_size, cfg.seed),
                SyntheticScenes("target", d.synthetic_samples, d.synthetic_size, cfg.seed))  # fmt: skip
    from fastuda.data import build_dataset

    source = build_dataset(d.source, d.source_root, "train", _pipeline(cfg, d.source, True), seed=cfg.seed)
    target = build_dataset(d.target, d.target_root, "train", _pipeline(cfg, d.target, True), seed=cfg.seed + 1)
    return source, target


def build_eval_dataset(cfg: TrainConfig):
    """(target evaluation dataset, class names)."""
    d = cfg.data
    if d.target == "synthetic":
        from fastuda.data.synthetic import SyntheticScenes

        ds = SyntheticScenes("target", d.eval_samples or d.synthetic_samples, d.synthetic_size, cfg.seed, split="val")
        return ds, ds.class_names
    from fastuda.data import build_dataset

    ds = build_dataset(d.target, d.target_root, d.eval_split, _pipeline(cfg, d.target, False))
    return ds, ds.class_names


class _RankShare(torch.utils.data.Sampler):
    """Rank ``rank``'s share of the global draw order: of each iteration's ``world x batch``
    consecutive draws, the ``batch`` ones at ``rank x batch``. Global draw k = start + t x world
    x batch + rank x batch + i, so 2 ranks x batch 1 draw what 1 process x batch 2 draws."""

    def __init__(self, base: IterationSampler, rank: int, world: int, batch: int):
        self.base, self.rank, self.world, self.batch = base, rank, world, batch

    def __iter__(self):
        lo, hi = self.rank * self.batch, (self.rank + 1) * self.batch
        for j, k in enumerate(self.base):
            if lo <= j % (self.world * self.batch) < hi:
                yield k


def _ignore_stop_signals(worker_id: int) -> None:
    """Ctrl-C reaches the workers too (one process group): they leave the stop to the loop,
    which checkpoints and exits (they end with the main process)."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def _loader(dataset, cfg: TrainConfig, seed: int, start_draw: int, identity: bool, rank: int, world: int):
    sampler = IterationSampler(len(dataset), seed, start_draw, identity)
    if world > 1:
        sampler = _RankShare(sampler, rank, world, cfg.data.batch_size)
    workers = cfg.data.workers
    return DataLoader(dataset, batch_size=cfg.data.batch_size, sampler=sampler, num_workers=workers,
                      pin_memory=torch.cuda.is_available(), drop_last=True, persistent_workers=workers > 0,
                      worker_init_fn=_ignore_stop_signals if workers > 0 else None,
                      generator=torch.Generator().manual_seed(seed))  # own stream: the global RNG stays untouched


def build_loaders(cfg: TrainConfig, start_iter: int, rank: int = 0, world: int = 1,
                  start_draw: int | None = None) -> tuple[DataLoader, DataLoader]:  # fmt: skip
    """(source, target) loaders of rank ``rank`` of ``world``, resuming at iteration ``start_iter``:
    at global draw ``start_draw`` (the draws the run has consumed; default ``start_iter x world x
    data.batch_size``, which a resume across world sizes must not assume)."""
    from fastuda.uda.rcs import RareClassSampling

    if start_draw is None:
        start_draw = start_iter * world * cfg.data.batch_size
    source, target = build_train_datasets(cfg)
    if cfg.rcs.enabled:
        r = cfg.rcs
        source = RareClassSampling(source, cfg.model.num_classes, r.temperature, r.min_pixels, r.min_crop_ratio,
                                   cfg.seed)  # fmt: skip
    src_loader = _loader(source, cfg, cfg.seed, start_draw, cfg.rcs.enabled, rank, world)
    return src_loader, _loader(target, cfg, cfg.seed + 1, start_draw, False, rank, world)
