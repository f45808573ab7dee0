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


def _loader(dataset, cfg: TrainConfig, seed: int, start_iter: int, identity: bool = False) -> DataLoader:
    sampler = IterationSampler(len(dataset), seed, start_iter * cfg.data.batch_size, identity)
    workers = cfg.data.workers
    return DataLoader(dataset, batch_size=cfg.data.batch_size, sampler=sampler, num_workers=workers,
                      pin_memory=torch.cuda.is_available(), drop_last=True, persistent_workers=workers > 0,
                      generator=torch.Generator().manual_seed(seed))  # own stream: the global RNG stays untouched


def build_loaders(cfg: TrainConfig, start_iter: int) -> tuple[DataLoader, DataLoader]:
    """(source, target) loaders that resume at iteration ``start_iter``."""
    from fastuda.uda.rcs import RareClassSampling

    source, target = build_train_datasets(cfg)
    if cfg.rcs.enabled:
        r = cfg.rcs
        source = RareClassSampling(source, cfg.model.num_classes, r.temperature, r.min_pixels, r.min_crop_ratio,
                                   cfg.seed)  # fmt: skip
        src_loader = _loader(source, cfg, cfg.seed, start_iter, identity=True)
    else:
        src_loader = _loader(source, cfg, cfg.seed, start_iter)
    return src_loader, _loader(target, cfg, cfg.seed + 1, start_iter)
