"""Typed configuration. Each field's comment gives its meaning in the papers."""

import dataclasses


# Training configs first, the model's (ModelConfig) at the end of the file; the
# references to it are lazy.


@dataclasses.dataclass
class DataConfig:
    """Source (labelled) and target (unlabelled) data and their pipelines."""

    source: str = "gta"  # S: gta | synthia | synthetic (the demo's procedural scenes)
    source_root: str = "data/gta"  # dataset root as released (or converted)
    target: str = "cityscapes"  # T: cityscapes | synthetic
    target_root: str = "data/cityscapes"
    recipe: str = "daformer"  # published pipeline: daformer (crop 512) | hrda / mic (crop 1024, valid pseudo mask)
    crop_size: tuple[int, int] | None = None  # (h, w) training crop; None: the recipe's (512 or 1024)
    resize: tuple[int, int] | None = None  # (long, short) keep-ratio resize; None: the recipe's (e.g. 1280x720)
    batch_size: int = 2  # images per domain per iteration (2 source + 2 target)
    workers: int = 4  # decoding processes per loader
    num_classes: int = 19  # K; the synthetic demo sets its own
    eval_split: str = "val"  # target split used for evaluation
    eval_samples: int | None = None  # evaluate on the first N images only (None: all)
    # synthetic demo only
    synthetic_size: int = 64  # scene side in pixels
    synthetic_samples: int = 256  # scenes per domain (train); the same number again for validation


@dataclasses.dataclass
class RCSConfig:
    """Rare class sampling (DAFormer Sec. 3.3)."""

    enabled: bool = True  # sample source images by their rare classes
    temperature: float = 0.01  # T in P(c) = softmax((1 - f_c) / T)
    min_pixels: int = 3000  # a file is eligible for class c with more than this many pixels of c (original res.)
    min_crop_ratio: float = 0.5  # re-crop (up to 10 times) until the crop holds > min_pixels * ratio of c


@dataclasses.dataclass
class UDAConfig:
    """Self-training (DACS) and its DAFormer / HRDA / MIC additions."""

    mode: str = "dacs"  # dacs: EMA teacher + ClassMix self-training | source_only: the source loss alone
    alpha: float = 0.999  # EMA momentum, alpha_t = min(1 - 1/(t + 1), alpha)
    pseudo_threshold: float = 0.968  # tau: confidence a pixel must reach to count in the pseudo-weight q
    pseudo_weight_mode: str = "batch"  # batch (published: one q per batch) | image (the paper's per-image q)
    pseudo_ignore_top: int = 15  # rows of the crop whose pseudo-weight is 0 (DAFormer: ego-car / sky margins)
    pseudo_ignore_bottom: int = 120  # last rows of the crop whose pseudo-weight is 0
    mix_batch_pool: bool = True  # ClassMix draws from the classes of the whole batch (published) or the image
    mix_include_ignore: bool = True  # the ignore label counts as a class in that pool (published)
    jitter_prob: float = 0.8  # probability of colour jitter on the mixed image (published: applied if U > 0.2)
    jitter_strength: float = 0.2  # s: brightness, contrast, saturation and hue strength (kornia ColorJitter)
    blur_prob: float = 0.5  # probability of Gaussian blur (sigma ~ U(0.15, 1.15), kernel ~ 0.1 x image size)
    fd_lambda: float = 0.005  # lambda_FD, ImageNet feature distance on thing classes (0: off)
    fd_min_ratio: float = 0.75  # r: a feature cell takes its majority class if it covers >= r of the cell
    fd_classes: tuple[int, ...] = (6, 7, 11, 12, 13, 14, 15, 16, 17, 18)  # thing classes (Cityscapes train ids)
    mic_lambda: float = 0.0  # lambda_MIC, masked image consistency (0: off; MIC: 1)
    mic_mask_ratio: float = 0.7  # r: fraction of patches masked out (each kept with prob 1 - r)
    mic_block_size: int = 64  # b: masked patch size in pixels (32 for MIC on DAFormer at half resolution)


@dataclasses.dataclass
class HRDAConfig:
    """Multi-resolution training (HRDA). Used when ``enabled``; needs fastuda.models.hrda."""

    enabled: bool = False  # context + detail crops with learned scale attention
    hr_crop_size: int = 512  # side of the (square) detail crop taken from the full-resolution crop
    lr_scale: float = 0.5  # the context crop is the training crop resized by this factor
    hr_loss_weight: float = 0.1  # lambda_d: weight of the detail crop's own loss
    crop_coord_divisible: int = 8  # detail crop offsets are multiples of this


@dataclasses.dataclass
class OptimConfig:
    """AdamW with parameter groups; linear warm-up then poly decay."""

    lr: float = 6e-5  # eta, the encoder's learning rate
    head_lr_mult: float = 10.0  # parameters named *head* learn at lr x this
    weight_decay: float = 0.01  # AdamW decoupled decay (0 on encoder norms and pos_block)
    betas: tuple[float, float] = (0.9, 0.999)
    warmup_iters: int = 1500  # t_warm, linear warm-up iterations
    warmup_ratio: float = 1e-6  # warm-up starts at lr x this
    power: float = 1.0  # poly decay exponent: lr x (1 - t / max_iters) ** power
    grad_clip: float | None = None  # max gradient norm (None: no clipping, as published)


@dataclasses.dataclass
class CheckpointConfig:
    """What a run keeps on disk besides ``latest.pt`` (and ``best.pt``, the best mIoU so far)."""

    keep_last: int | None = None  # keep the newest N iter_N.pt checkpoints (None: all)


@dataclasses.dataclass
class TrainConfig:
    """One training run: ``python -m fastuda.train PRESET [key=value ...]``."""

    name: str = "daformer_gta2cs"
    model: "ModelConfig" = dataclasses.field(default_factory=lambda: ModelConfig())
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    uda: UDAConfig = dataclasses.field(default_factory=UDAConfig)
    rcs: RCSConfig = dataclasses.field(default_factory=RCSConfig)
    hrda: HRDAConfig = dataclasses.field(default_factory=HRDAConfig)
    optim: OptimConfig = dataclasses.field(default_factory=OptimConfig)
    max_iters: int = 40000  # training iterations (the poly schedule reaches 0 here)
    seed: int = 0  # DAFormer 0, HRDA 1, MIC 2
    eval_interval: int = 4000  # evaluate the student every N iterations (0: only at the end)
    checkpoint_interval: int = 4000  # write a checkpoint every N iterations (and at the end)
    checkpoint: CheckpointConfig = dataclasses.field(default_factory=CheckpointConfig)
    log_interval: int = 50  # loss / lr to JSONL every N iterations
    out: str = "runs/{name}"  # output directory ({name} is replaced)


# ---------------------------------------------------------------- presets
# Plain functions returning a fresh config with the published hyper-parameters
# (DAFormer configs/daformer/gta2cs_uda_warm_fdthings_rcs_croppl_a999_daformer_mitb5_s0.py,
# HRDA configs/hrda/gtaHR2csHR_hrda.py, MIC configs/mic/gtaHR2csHR_mic_hrda.py).


def daformer_gta2cs() -> TrainConfig:
    cfg = TrainConfig(name="daformer_gta2cs", model=ModelConfig(pretrained="pretrained/mit_b5.pth"))
    cfg.data.crop_size = (512, 512)
    return cfg


def daformer_synthia2cs() -> TrainConfig:
    cfg = daformer_gta2cs()
    cfg.name = "daformer_synthia2cs"
    cfg.data.source, cfg.data.source_root = "synthia", "data/synthia"
    return cfg


def hrda_gta2cs() -> TrainConfig:
    cfg = daformer_gta2cs()
    cfg.name, cfg.seed = "hrda_gta2cs", 1
    cfg.data.recipe = "hrda"
    cfg.data.crop_size = (1024, 1024)
    cfg.hrda.enabled = True
    # HRDA multiplies the pseudo-weight by the valid mask (30/240/30/30 at full res.) instead of row margins
    cfg.uda.pseudo_ignore_top = cfg.uda.pseudo_ignore_bottom = 0
    cfg.rcs.min_crop_ratio = 2.0
    return cfg


def hrda_synthia2cs() -> TrainConfig:
    cfg = hrda_gta2cs()
    cfg.name = "hrda_synthia2cs"
    cfg.data.source, cfg.data.source_root = "synthia", "data/synthia"
    return cfg


def mic_hrda_gta2cs() -> TrainConfig:
    cfg = hrda_gta2cs()
    cfg.name, cfg.seed = "mic_hrda_gta2cs", 2
    cfg.data.recipe = "mic"
    cfg.uda.mic_lambda = 1.0
    return cfg


def source_only_gta2cs() -> TrainConfig:
    cfg = daformer_gta2cs()
    cfg.name = "source_only_gta2cs"
    cfg.uda.mode = "source_only"
    cfg.uda.fd_lambda = 0.0
    cfg.rcs.enabled = False
    return cfg


def demo() -> TrainConfig:
    """DAFormer-style UDA on the synthetic two-domain scenes, sized for a CPU in minutes."""
    cfg = TrainConfig(name="demo", seed=0, max_iters=400, eval_interval=0, checkpoint_interval=0, log_interval=25)
    # mit_demo: MiT-shaped (16, 32, 64, 128) channels, one block per stage, DAFormer head of width 32
    cfg.model = ModelConfig(backbone="mit_demo", decode_head="daformer", num_classes=6, drop_path_rate=0.0,
                            embed_dim=32)  # fmt: skip
    cfg.data = DataConfig(source="synthetic", source_root="", target="synthetic", target_root="", recipe="daformer",
                          crop_size=(64, 64), batch_size=4, workers=0, num_classes=6, synthetic_size=64)  # fmt: skip
    cfg.uda.alpha = 0.99  # a short run: the teacher must follow the student within tens of iterations
    cfg.uda.pseudo_ignore_top = cfg.uda.pseudo_ignore_bottom = 0
    cfg.uda.fd_lambda = 0.0  # no ImageNet encoder offline
    cfg.rcs.enabled = False
    cfg.optim = OptimConfig(lr=6e-4, warmup_iters=50)
    return cfg


def demo_source_only() -> TrainConfig:
    cfg = demo()
    cfg.name = "demo_source_only"
    cfg.uda.mode = "source_only"
    return cfg


PRESETS = {
    f.__name__: f
    for f in (daformer_gta2cs, daformer_synthia2cs, hrda_gta2cs, hrda_synthia2cs, mic_hrda_gta2cs, source_only_gta2cs,
              demo, demo_source_only)
}  # fmt: skip


def preset(name: str) -> TrainConfig:
    """The preset ``name``; an unknown name is an error listing the close matches."""
    if name not in PRESETS:
        import difflib

        close = difflib.get_close_matches(name, PRESETS, n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise ValueError(f"unknown preset {name!r}.{hint} Presets: {', '.join(PRESETS)}")
    return PRESETS[name]()


# ---------------------------------------------------------------- overrides


def _fields(cfg) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(cfg)}


def _all_keys(cfg, prefix: str = "") -> list[str]:
    keys = []
    for name, f in _fields(cfg).items():
        value = getattr(cfg, name)
        if dataclasses.is_dataclass(value):
            keys += _all_keys(value, f"{prefix}{name}.")
        else:
            keys.append(prefix + name)
    return keys


def _parse(text: str, current, key: str):
    """``text`` as the type of ``current`` (the field's present value)."""
    import ast

    if text.lower() in ("none", "null"):
        return None
    if isinstance(current, bool):
        if text.lower() in ("1", "true", "yes", "on"):
            return True
        if text.lower() in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"{key}: expected a bool (true/false), got {text!r}")
    if isinstance(current, str):
        return text
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        if current is None:
            return text
        raise ValueError(f"{key}: cannot parse {text!r} as {type(current).__name__}") from None
    if isinstance(current, float) and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if isinstance(current, tuple) and isinstance(value, (list, tuple, int)):
        value = tuple(value) if not isinstance(value, int) else (value,)
    if current is not None and not isinstance(value, type(current)):
        raise ValueError(f"{key}: expected {type(current).__name__}, got {text!r} ({type(value).__name__})")
    return value


def set_value(cfg: "TrainConfig", key: str, text_or_value) -> None:
    """Sets the dotted ``key`` (e.g. ``uda.alpha``) from a string (parsed to the
    field's type) or a value. An unknown key is an error naming the close matches."""
    import difflib

    parts = key.split(".")
    node = cfg
    for i, part in enumerate(parts):
        fields = _fields(node)
        if part not in fields:
            close = difflib.get_close_matches(key, _all_keys(cfg), n=3, cutoff=0.5)
            hint = f" Did you mean {', '.join(close)}?" if close else ""
            raise KeyError(f"unknown config key {key!r}.{hint}")
        if i == len(parts) - 1:
            current = getattr(node, part)
            if dataclasses.is_dataclass(current):
                raise KeyError(f"{key!r} is a section; set one of its fields, e.g. {key}.{_all_keys(current)[0]}")
            value = _parse(text_or_value, current, key) if isinstance(text_or_value, str) else text_or_value
            setattr(node, part, value)
        else:
            node = getattr(node, part)


def apply_overrides(cfg: "TrainConfig", overrides: list[str]) -> "TrainConfig":
    """``["uda.alpha=0.99", "max_iters=100"]`` applied in order; returns ``cfg``."""
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"override {item!r} is not key=value")
        key, text = item.split("=", 1)
        set_value(cfg, key.strip(), text.strip())
    return cfg


def to_dict(cfg) -> dict:
    return dataclasses.asdict(cfg)


def from_dict(data: dict) -> "TrainConfig":
    """A TrainConfig from nested dicts (a saved config or a JSON file); keys are
    checked like overrides."""
    cfg = TrainConfig()

    def walk(d: dict, prefix: str):
        for k, v in d.items():
            if isinstance(v, dict):
                walk(v, f"{prefix}{k}.")
            else:
                set_value(cfg, prefix + k, tuple(v) if isinstance(v, list) else v)

    walk(data, "")
    return cfg


def load_config(preset_or_file: str, overrides: list[str] = ()) -> "TrainConfig":
    """A preset name, or a JSON file of (partial) nested fields over the defaults, then overrides."""
    import json
    from pathlib import Path

    if preset_or_file in PRESETS or not preset_or_file.endswith(".json"):
        cfg = preset(preset_or_file)
    else:
        cfg = from_dict(json.loads(Path(preset_or_file).read_text()))
    return apply_overrides(cfg, list(overrides))


@dataclasses.dataclass
class ModelConfig:
    """The segmentation network (DAFormer: MiT-B5 + DAFormer head)."""

    backbone: str = "mit_b5"  # encoder: mit_b0 .. mit_b5, or resnet101 (DeepLabV2's dilated ResNet)
    decode_head: str = "daformer"  # daformer (context-aware fusion) | segformer (all-MLP) | deeplabv2 (ASPP)
    num_classes: int = 19  # K, the Cityscapes train ids
    drop_path_rate: float = 0.1  # stochastic depth of the last MiT block (linear from 0)
    embed_dim: int | None = None  # head embedding width; None: DAFormer 256, SegFormer 768 (256 for b0)
    pretrained: str | None = None  # ImageNet encoder weights, e.g. pretrained/mit_b5.pth
    hrda: bool = False  # HRDA: context crop at 0.5 + high-resolution detail crop, fused by scale attention
    hrda_detail_crop: int = 512  # HRDA detail crop size (full-resolution pixels)
    hrda_fixed_attention: float | None = None  # HRDA ablation: a constant attention instead of the learned one
    sync_bn: bool = False  # BatchNorm statistics over all GPUs (SyncBatchNorm); published: per GPU
