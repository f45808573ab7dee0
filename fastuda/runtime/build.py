"""Building what a config describes: the segmentor, the datasets and the training loaders.

Shared by ``fastuda.train``, ``fastuda.evaluate`` and ``fastuda.predict``.
"""

import dataclasses
import signal

import torch
from torch.utils.data import DataLoader

from fastuda.config import TrainConfig, check_pretrained, parse_dataset_spec, resize, train_crop
from fastuda.data import build_dataset, preset_pipeline
from fastuda.data.check import check_files
from fastuda.data.dataset import SegmentationDataset
from fastuda.data.sampler import IterationSampler
from fastuda.data.synthetic import SyntheticScenes
from fastuda.errors import UserError
from fastuda.models import build_model
from fastuda.uda.rcs import RareClassSampling, dataset_class_stats


def build_segmentor(cfg: TrainConfig, pretrained: bool = True) -> torch.nn.Module:
    """The student network of ``cfg`` (HRDA when ``hrda.enabled``); ``pretrained=False``
    skips ``model.pretrained`` (the weights come from a checkpoint)."""
    model_cfg = cfg.model if pretrained else dataclasses.replace(cfg.model, pretrained=None)
    check_pretrained(model_cfg.pretrained)
    # HRDA: the (pretrained) MiT encoder shared by both scales, fresh HRDA heads
    return build_model(model_cfg, hrda=cfg.hrda)


def amp_dtype(amp: str | None, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of ``--amp`` (default: bf16 on GPU, off on CPU)."""
    if amp is None:
        amp = "bf16" if torch.device(device).type == "cuda" else "off"
    return {"off": None, "bf16": torch.bfloat16, "fp16": torch.float16}[amp]


# ---------------------------------------------------------------- data


def _pipeline(cfg: TrainConfig, dataset: str, train: bool, role: str | None = None):
    """The published pipeline of ``dataset`` in ``role`` ("source" / "target"; Cityscapes has both)."""
    pipe = preset_pipeline(cfg.data.recipe, dataset, train, role=role)
    # the recipe's sizes unless data.resize / data.crop_size say otherwise (fastuda.config.recipes)
    sizes = {"scale": resize(cfg, dataset), "crop_size": train_crop(cfg)} if train else {"scale": resize(cfg, dataset)}
    return dataclasses.replace(pipe, **sizes)


def _dataset(cfg: TrainConfig, which: str, split: str, train: bool, seed: int | None = None,
             role: str | None = None):  # fmt: skip
    """``data.<which>`` at ``data.<which>_root`` in pipeline ``role`` (default: ``which``); a layout
    problem names the key and the root."""
    name, root = getattr(cfg.data, which), getattr(cfg.data, f"{which}_root")
    try:
        return build_dataset(name, root, split, _pipeline(cfg, name, train, role or which), seed=seed)
    except (FileNotFoundError, ValueError) as e:  # a missing root or folder, an unpaired file, an empty split
        raise UserError(f"data.{which}_root={root}: {e}") from None


def build_train_datasets(cfg: TrainConfig):
    """(source, target) training datasets; target-only (oracle) training: (labelled target, None);
    source-only training has no target images (None): the domain-generalisation presets never see
    one, and data.target_root needs only its val split."""
    d = cfg.data
    if cfg.uda.mode == "target_only":
        return _labelled_target(cfg), None
    if d.source == "synthetic":  # validate() has checked that both are
        return (SyntheticScenes("source", d.synthetic_samples, d.synthetic_size, cfg.seed),
                SyntheticScenes("target", d.synthetic_samples, d.synthetic_size, cfg.seed))  # fmt: skip
    roles = ("caug_source", "caug_target") if d.caug else ("source", "target")  # the published gtaCAug pair
    source = _dataset(cfg, "source", "train", True, cfg.seed, role=roles[0])
    if cfg.uda.mode == "source_only":
        return source, None
    return source, _dataset(cfg, "target", "train", True, cfg.seed + 1, role=roles[1])


def _labelled_target(cfg: TrainConfig):
    """The target's training split with its labels (published experiment 43: Cityscapes train)."""
    d = cfg.data
    if d.target == "synthetic":
        return SyntheticScenes("target", d.synthetic_samples, d.synthetic_size, cfg.seed)
    ds = _dataset(cfg, "target", "train", True, cfg.seed, role="target_only")  # with PhotoMetricDistortion
    unlabelled = [s.image for s in getattr(ds, "samples", ()) if s.label is None]
    if unlabelled:
        raise UserError(f"data.target_root={d.target_root}: uda.mode=target_only trains on the target's labels, but "
                        f"{len(unlabelled)} training images have none (e.g. {unlabelled[0]}); expected a labelled "
                        "train split")  # fmt: skip
    return ds


def build_eval_dataset(cfg: TrainConfig, check: bool = False):
    """(target evaluation dataset, class names); ``check``: every file's header first (``check_data``)."""
    d = cfg.data
    if d.target == "synthetic":
        ds = SyntheticScenes("target", d.eval_samples or d.synthetic_samples, d.synthetic_size, cfg.seed, split="val")
        return ds, ds.class_names
    ds = _dataset(cfg, "target", d.eval_split, False)
    if check:
        check_data(ds, f"data.target_root={d.target_root} (split {d.eval_split})")
    return ds, ds.class_names


def build_named_eval_dataset(cfg: TrainConfig, name: str, root: str, key: str, check: bool = False):
    """(dataset, class names): the val split of dataset ``name`` at ``root`` with its published test
    pipeline under ``cfg``'s recipe (``data.eval_datasets``, ``fastuda.evaluate --dataset``); a
    problem is a one-line error naming ``key`` and the root."""
    try:
        ds = build_dataset(name, root, "val", _pipeline(cfg, name, False))
    except (FileNotFoundError, ValueError) as e:
        raise UserError(f"{key}: {e}") from None
    if check:
        check_data(ds, f"{key} (split val)")
    return ds, ds.class_names


def build_extra_eval_datasets(cfg: TrainConfig, check: bool = False) -> dict[str, tuple]:
    """{name: (dataset, class names)} of ``data.eval_datasets``, scored beside the target."""
    out = {}
    for spec in cfg.data.eval_datasets:
        name, root = parse_dataset_spec(spec)
        if name in out or name == cfg.data.target:
            raise UserError(f"data.eval_datasets: {name} is listed twice (the target, data.target={cfg.data.target}, "
                            "is always scored); expected each dataset once")  # fmt: skip
        out[name] = build_named_eval_dataset(cfg, name, root, f"data.eval_datasets {spec}", check)
    return out


def check_data(dataset, key: str) -> None:
    """The start-up check of every file of ``dataset`` (headers, sizes, label kinds; see
    ``fastuda.data.check``); a problem is a one-line error naming ``key`` and the file."""
    check_files(dataset, key)


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


def _rare_class_sampling(cfg: TrainConfig, source):
    """RCS over ``source``, after checking that ``rcs.min_pixels`` leaves every class a file."""
    r, K = cfg.rcs, cfg.model.num_classes
    stats, _ = dataset_class_stats(source, K)
    most: dict[int, int] = {}
    for s in stats:
        for c, n in s.counts.items():
            most[c] = max(most.get(c, 0), n)
    if short := sorted(c for c, n in most.items() if n and n <= r.min_pixels):
        names = getattr(source, "class_names", ())
        shown = ", ".join(f"{c} ({names[c]}: at most {most[c]})" if c < len(names) else f"{c} ({most[c]})"
                          for c in short[:4])  # fmt: skip
        raise UserError(f"rcs.min_pixels={r.min_pixels}: no {cfg.data.source} label has more than that many pixels "
                        f"of class {shown}; expected rcs.min_pixels < {min(most[c] for c in short)}, "
                        "or rcs.enabled=false")  # fmt: skip
    # file datasets take the statistics just read; in-memory ones map entries to indices themselves
    known = stats if isinstance(source, SegmentationDataset) else None
    return RareClassSampling(source, K, r.temperature, r.min_pixels, r.min_crop_ratio, cfg.seed, stats=known)


def build_loaders(cfg: TrainConfig, start_iter: int, rank: int = 0, world: int = 1,
                  start_draw: int | None = None) -> tuple[DataLoader, DataLoader | None]:  # fmt: skip
    """(source, target) loaders of rank ``rank`` of ``world``, resuming at iteration ``start_iter``:
    at global draw ``start_draw`` (the draws the run has consumed; default ``start_iter x world x
    data.batch_size``, which a resume across world sizes must not assume). At start-up both
    datasets are listed, paired and their files checked (the evaluation split: by the run, with
    ``build_eval_dataset(cfg, check=True)``), and the RCS statistics checked against
    ``rcs.min_pixels``: a mistake costs seconds, not a run."""
    if start_draw is None:
        start_draw = start_iter * world * cfg.data.batch_size
    source, target = build_train_datasets(cfg)
    d = cfg.data
    source_key = "data.target_root" if cfg.uda.mode == "target_only" else "data.source_root"  # the labelled data
    check_data(source, f"{source_key}={getattr(d, source_key.removeprefix('data.'))}")
    if target is not None:
        check_data(target, f"data.target_root={d.target_root}")
    if cfg.rcs.enabled:
        source = _rare_class_sampling(cfg, source)
    src_loader = _loader(source, cfg, cfg.seed, start_draw, cfg.rcs.enabled, rank, world)
    if target is None:
        return src_loader, None
    return src_loader, _loader(target, cfg, cfg.seed + 1, start_draw, False, rank, world)
