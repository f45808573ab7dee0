"""The typed configuration: one dataclass per section, each field with its meaning in the
papers (comment) and what it accepts (``check``, applied by ``fastuda.config.validate``)."""

import dataclasses
import os

from fastuda._fields import (NAME, NON_NEGATIVE, POSITIVE, Check, at_least, between, each, field, multiple_of,
                             one_of, optional, path_template)  # fmt: skip
from fastuda.models.config import HRDAConfig, ModelConfig

from .recipes import DATASETS, RECIPES

def default_workers() -> int:
    """4 decoding processes per loader, or fewer: PyTorch warns (twice a run, once per loader) when
    a loader has more workers than the CPUs this process may run on."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        cpus = os.cpu_count() or 1
    return min(4, cpus)


# Classes of each dataset name (tests check these against fastuda.data).
DATASET_CLASSES = {name: d.classes for name, d in DATASETS.items()}
# The datasets each role accepts (BDD100K and Mapillary are for evaluation only).
SOURCE_DATASETS = ("gta", "synthia", "cityscapes", "synthetic")
TARGET_DATASETS = ("cityscapes", "acdc", "acdc_fog", "acdc_night", "acdc_rain", "acdc_snow", "dark_zurich",
                   "synthetic")  # fmt: skip
# The datasets data.eval_datasets and ``fastuda.evaluate --dataset`` can score (those with labelled val splits).
EVAL_DATASETS = ("cityscapes", "acdc", "acdc_fog", "acdc_night", "acdc_rain", "acdc_snow", "dark_zurich", "bdd100k",
                 "mapillary")  # fmt: skip


def parse_dataset_spec(spec: str) -> tuple[str, str]:
    """``NAME=ROOT`` (``data.eval_datasets``, ``fastuda.evaluate --dataset``) as (name, root);
    a ValueError says what is wrong."""
    name, sep, root = spec.partition("=")
    name = name.strip().lower()
    if not sep or not root:
        raise ValueError(f"{spec!r}: expected NAME=ROOT, e.g. bdd100k=data/bdd100k")
    if name not in EVAL_DATASETS:
        raise ValueError(f"{spec!r}: {name!r} is not a dataset with a labelled val split; expected one of "
                         f"{', '.join(EVAL_DATASETS)}")  # fmt: skip
    return name, root


def _is_dataset_spec(v) -> bool:
    try:
        parse_dataset_spec(v)
    except (ValueError, AttributeError):
        return False
    return True


DATASET_SPEC = Check(f"NAME=ROOT with NAME one of {', '.join(EVAL_DATASETS)}", _is_dataset_spec)

# The network's sections (ModelConfig, HRDAConfig) live with the models (fastuda.models.config),
# beside the registry of names they are checked against.


@dataclasses.dataclass
class DataConfig:
    """Source (labelled) and target (unlabelled) data and their pipelines."""

    source: str = field("gta", one_of(*SOURCE_DATASETS))  # S (synthetic: the demo's procedural scenes)
    source_root: str = "data/gta"  # dataset root as released (or converted); checked at start-up
    target: str = field("cityscapes", one_of(*TARGET_DATASETS))  # T (acdc: all four conditions, acdc_night: one)
    target_root: str = "data/cityscapes"  # dataset root, as data.source_root
    # published pipeline: daformer (crop 512) | hrda / mic (crop 1024, valid pseudo mask)
    recipe: str = field("daformer", one_of(*RECIPES))
    # (h, w) training crop; None: the recipe's (the synthetic scenes are not cropped)
    crop_size: tuple[int, int] | None = field(None, optional(each(POSITIVE)))
    # (long, short) keep-ratio resize; None: the recipe's (e.g. 1280x720)
    resize: tuple[int, int] | None = field(None, optional(each(POSITIVE)))
    # the published 'CAug' data (gtaCAug: HRDA experiment 41's AdvSeg / MinEnt, the dg branch's DG sources):
    # PhotoMetricDistortion on the source, a plain random crop of the Cityscapes target (no cat_max_ratio);
    # not read by the synthetic scenes
    caug: bool = False
    batch_size: int = field(2, at_least(1))  # images per domain per iteration (2 source + 2 target)
    workers: int = field(check=at_least(0), factory=lambda: default_workers())  # decoding processes per loader
    eval_split: str = field("val", one_of("val", "train"))  # target split used for evaluation
    eval_samples: int | None = field(None, optional(at_least(1)))  # evaluate on the first N images only (None: all)
    # more datasets scored at every evaluation beside the target, each with its published test pipeline,
    # as "NAME=ROOT" (e.g. ("bdd100k=data/bdd100k", "mapillary=data/mapillary"): the DG benchmarks)
    eval_datasets: tuple[str, ...] = field((), each(DATASET_SPEC))
    # synthetic demo only
    synthetic_size: int = field(64, multiple_of(8))  # scene side in pixels
    synthetic_samples: int = field(256, at_least(1))  # scenes per domain (train); the same number again for validation


@dataclasses.dataclass
class RCSConfig:
    """Rare class sampling (DAFormer Sec. 3.3)."""

    enabled: bool = True  # sample source images by their rare classes
    temperature: float = field(0.01, POSITIVE)  # T in P(c) = softmax((1 - f_c) / T)
    # a file is eligible for class c with more than this many pixels of c (original res.)
    min_pixels: int = field(3000, NON_NEGATIVE)
    # re-crop (up to 10 times) until the crop holds > min_pixels * ratio of c
    min_crop_ratio: float = field(0.5, NON_NEGATIVE)


@dataclasses.dataclass
class UDAConfig:
    """The adaptation method: self-training (DACS) with its DAFormer / HRDA / MIC additions,
    or the baselines the papers compare with (AdvSeg, MinEnt, source-only, target-only)."""

    # dacs: EMA teacher + ClassMix self-training | advseg: adversarial output-space alignment |
    # minent: target entropy minimisation | source_only: the source loss alone |
    # target_only: the oracle, supervised on the target's labels (no source)
    mode: str = field("dacs", one_of("dacs", "advseg", "minent", "source_only", "target_only"))
    alpha: float = field(0.999, between(0, 1, hi_open=True))  # EMA momentum, alpha_t = min(1 - 1/(t + 1), alpha)
    # tau: confidence a pixel must reach to count in the pseudo-weight q
    pseudo_threshold: float = field(0.968, between(0, 1, lo_open=True))
    # batch (published: one q per batch) | image (the paper's per-image q)
    pseudo_weight_mode: str = field("batch", one_of("batch", "image"))
    pseudo_ignore_top: int = field(15, NON_NEGATIVE)  # rows of the crop whose pseudo-weight is 0 (DAFormer: sky)
    pseudo_ignore_bottom: int = field(120, NON_NEGATIVE)  # last rows of the crop whose pseudo-weight is 0
    mix_batch_pool: bool = True  # ClassMix draws from the classes of the whole batch (published) or the image
    mix_include_ignore: bool = True  # the ignore label counts as a class in that pool (published)
    # probability of colour jitter on the mixed image (published: applied if U > 0.2)
    jitter_prob: float = field(0.8, between(0, 1))
    # s: brightness, contrast, saturation and hue strength (kornia ColorJitter; hue at most 0.5)
    jitter_strength: float = field(0.2, between(0, 0.5))
    # probability of Gaussian blur (sigma ~ U(0.15, 1.15), kernel ~ 0.1 x image size)
    blur_prob: float = field(0.5, between(0, 1))
    fd_lambda: float = field(0.005, NON_NEGATIVE)  # lambda_FD, ImageNet feature distance on thing classes (0: off)
    # r: a feature cell takes its majority class if it covers >= r of the cell
    fd_min_ratio: float = field(0.75, between(0, 1, lo_open=True))
    fd_classes: tuple[int, ...] = field((6, 7, 11, 12, 13, 14, 15, 16, 17, 18), each(NON_NEGATIVE))  # thing classes
    mic_lambda: float = field(0.0, NON_NEGATIVE)  # lambda_MIC, masked image consistency (0: off; MIC: 1)
    mic_mask_ratio: float = field(0.7, between(0, 1, hi_open=True))  # r: fraction of patches masked out
    mic_block_size: int = field(64, at_least(1))  # b: masked patch size in pixels (32 for MIC on DAFormer at half res.)
    # AdvSeg (published configs/_base_/uda/advseg.py)
    adv_lambda: float = field(0.001, NON_NEGATIVE)  # lambda_adv: weight of the adversarial term (lambda_adv_target main)
    adv_loss: str = field("ls", one_of("ls", "vanilla"))  # discriminator_type: LS (MSE) | vanilla (BCE with logits)
    adv_lr: float = field(1e-4, POSITIVE)  # lr_D: the discriminator's Adam learning rate
    adv_lr_power: float = field(0.9, POSITIVE)  # lr_D_power: (lr_D - lr_D_min) (1 - t / T)^power + lr_D_min
    adv_lr_min: float = field(0.0, NON_NEGATIVE)  # lr_D_min
    adv_betas: tuple[float, float] = field((0.9, 0.99), each(between(0, 1, hi_open=True)))  # the discriminator's Adam
    # MinEnt (published configs/_base_/uda/minent.py)
    ent_lambda: float = field(0.001, NON_NEGATIVE)  # lambda_ent: weight of the normalised target entropy
    # MIC's mask_mode: separatetrgaug (the masked, colour-augmented target; GTA/Synthia -> Cityscapes) |
    # separate (the first half of the source batch and of the target, no colour augmentation; ACDC, Dark Zurich)
    mic_mode: str = field("separatetrgaug", one_of("separatetrgaug", "separate"))


@dataclasses.dataclass
class OptimConfig:
    """AdamW (or SGD) with parameter groups; linear warm-up then poly decay."""

    # adamw (DAFormer / HRDA / MIC) | sgd (momentum; the published AdvSeg / MinEnt on DeepLabV2)
    name: str = field("adamw", one_of("adamw", "sgd"))
    lr: float = field(6e-5, POSITIVE)  # eta, the encoder's learning rate
    head_lr_mult: float = field(10.0, POSITIVE)  # parameters named *head* learn at lr x this
    weight_decay: float = field(0.01, NON_NEGATIVE)  # AdamW decoupled decay (0 on encoder norms and pos_block)
    betas: tuple[float, float] = field((0.9, 0.999), each(between(0, 1, hi_open=True)))  # AdamW (beta1, beta2)
    momentum: float = field(0.9, between(0, 1, hi_open=True))  # SGD
    warmup_iters: int = field(1500, NON_NEGATIVE)  # t_warm, linear warm-up iterations
    warmup_ratio: float = field(1e-6, between(0, 1, lo_open=True))  # warm-up starts at lr x this
    power: float = field(1.0, POSITIVE)  # poly decay exponent: lr x (1 - t / max_iters) ** power
    grad_clip: float | None = field(None, optional(POSITIVE))  # max gradient norm (None: no clipping, as published)


@dataclasses.dataclass
class CheckpointConfig:
    """What a run keeps on disk besides ``latest.pt`` (and ``best.pt``, the best mIoU so far)."""

    keep_last: int | None = field(None, optional(at_least(1)))  # keep the newest N iter_N.pt checkpoints (None: all)


@dataclasses.dataclass
class TrainConfig:
    """One training run: ``python -m fastuda.train PRESET [key=value ...]``."""

    name: str = field("daformer_gta2cs", NAME)  # the run's name: out's {name}, the progress bar
    model: ModelConfig = field(factory=ModelConfig)
    data: DataConfig = field(factory=DataConfig)
    uda: UDAConfig = field(factory=UDAConfig)
    rcs: RCSConfig = field(factory=RCSConfig)
    hrda: HRDAConfig = field(factory=HRDAConfig)
    optim: OptimConfig = field(factory=OptimConfig)
    max_iters: int = field(40000, at_least(1))  # training iterations (the poly schedule reaches 0 here)
    seed: int = field(0, NON_NEGATIVE)  # DAFormer 0, HRDA 1, MIC 2
    eval_interval: int = field(4000, at_least(-1))  # evaluate every N iterations (0: at the end only, -1: never)
    checkpoint_interval: int = field(4000, NON_NEGATIVE)  # write a checkpoint every N iterations (and at the end)
    checkpoint: CheckpointConfig = field(factory=CheckpointConfig)
    log_interval: int = field(50, at_least(1))  # loss / lr to JSONL every N iterations
    out: str = field("runs/{name}", path_template())  # output directory ({name} is replaced)

