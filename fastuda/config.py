"""Typed configuration. Each field's comment gives its meaning in the papers, and its
``check`` what it accepts; ``validate`` applies them all, plus the rules across fields,
when a config is loaded, before anything is built."""

import dataclasses
import math
import types
import typing
from collections.abc import Callable
from typing import Any

from fastuda.errors import UserError

# ---------------------------------------------------------------- what a field accepts
# Hand-written checks declared next to each field (dataclasses.field metadata) rather than
# pydantic: the configs stay plain dataclasses (presets assign attributes, checkpoints store
# dataclasses.asdict), the overrides keep their own parser, and every message names the
# dotted key, the value and the expectation in one line, with a close match for names.


@dataclasses.dataclass(frozen=True)
class Check:
    """``test(value) -> bool`` and the words for what it accepts ("an int >= 1")."""

    expected: str
    test: Callable[[Any], bool]
    choices: tuple = ()  # for names: close matches are suggested from these


def one_of(*choices: str) -> Check:
    return Check(f"one of {', '.join(choices)}", lambda v: v in choices, choices)


def between(lo: float, hi: float, lo_open: bool = False, hi_open: bool = False) -> Check:
    left, right = "(" if lo_open else "[", ")" if hi_open else "]"
    return Check(f"a number in {left}{lo:g}, {hi:g}{right}",
                 lambda v: (lo < v if lo_open else lo <= v) and (v < hi if hi_open else v <= hi))  # fmt: skip


def at_least(lo: float) -> Check:
    return Check(f"a number >= {lo:g}", lambda v: v >= lo)


POSITIVE = Check("a number > 0", lambda v: v > 0)
NON_NEGATIVE = at_least(0)


def multiple_of(n: int) -> Check:
    return Check(f"a positive multiple of {n}", lambda v: v > 0 and v % n == 0)


def each(check: Check) -> Check:
    return Check(f"values each {check.expected.removeprefix('a number ')}", lambda v: all(check.test(x) for x in v))


def optional(check: Check) -> Check:
    return Check(f"None or {check.expected}", lambda v: v is None or check.test(v), check.choices)


def path_template() -> Check:
    def ok(v: str) -> bool:
        try:
            return bool(v.format(name="x"))
        except (KeyError, IndexError, ValueError):
            return False

    return Check("a non-empty path, with {name} as its only placeholder", ok)


NAME = Check("a non-empty name of letters, digits, '_', '-' or '.'",
             lambda v: bool(v) and all(c.isalnum() or c in "_-." for c in v))  # fmt: skip


def field(default=dataclasses.MISSING, check: Check | None = None, *, factory=dataclasses.MISSING):
    """A dataclass field whose accepted values are ``check`` (validated at load)."""
    return dataclasses.field(default=default, default_factory=factory, metadata={"check": check} if check else {})


# Classes of each dataset name (tests check these against fastuda.data).
DATASET_CLASSES = {"gta": 19, "synthia": 19, "cityscapes": 19, "synthetic": 6}
BACKBONES = ("mit_b0", "mit_b1", "mit_b2", "mit_b3", "mit_b4", "mit_b5", "mit_demo", "resnet50", "resnet101")
MIT_BACKBONES = tuple(b for b in BACKBONES if b.startswith("mit_"))
RECIPE_CROP = {"daformer": (512, 512), "hrda": (1024, 1024), "mic": (1024, 1024)}


# Training configs first, the model's (ModelConfig) at the end of the file; the
# references to it are lazy.


@dataclasses.dataclass
class DataConfig:
    """Source (labelled) and target (unlabelled) data and their pipelines."""

    source: str = field("gta", one_of("gta", "synthia", "synthetic"))  # S (synthetic: the demo's procedural scenes)
    source_root: str = "data/gta"  # dataset root as released (or converted); checked at start-up
    target: str = field("cityscapes", one_of("cityscapes", "synthetic"))  # T
    target_root: str = "data/cityscapes"
    # published pipeline: daformer (crop 512) | hrda / mic (crop 1024, valid pseudo mask)
    recipe: str = field("daformer", one_of("daformer", "hrda", "mic"))
    # (h, w) training crop; None: the recipe's (the synthetic scenes are not cropped)
    crop_size: tuple[int, int] | None = field(None, optional(each(POSITIVE)))
    # (long, short) keep-ratio resize; None: the recipe's (e.g. 1280x720)
    resize: tuple[int, int] | None = field(None, optional(each(POSITIVE)))
    batch_size: int = field(2, at_least(1))  # images per domain per iteration (2 source + 2 target)
    workers: int = field(4, at_least(0))  # decoding processes per loader
    eval_split: str = field("val", one_of("val", "train"))  # target split used for evaluation
    eval_samples: int | None = field(None, optional(at_least(1)))  # evaluate on the first N images only (None: all)
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
    """Self-training (DACS) and its DAFormer / HRDA / MIC additions."""

    # dacs: EMA teacher + ClassMix self-training | source_only: the source loss alone
    mode: str = field("dacs", one_of("dacs", "source_only"))
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


@dataclasses.dataclass
class HRDAConfig:
    """Multi-resolution training (HRDA), the one home of its keys: read by ``build_model``
    (the architecture) and by training. The context crop is the training crop at 0.5
    (fixed: the fused scale_fusion kernel upsamples by 2)."""

    enabled: bool = False  # context + detail crops with learned scale attention
    hr_crop_size: int = field(512, multiple_of(8))  # side of the (square) detail crop from the full-resolution crop
    hr_loss_weight: float = field(0.1, between(0, 1))  # lambda_d: weight of the detail crop's own loss
    crop_coord_divisible: int = field(8, multiple_of(8))  # detail crop offsets are multiples of this
    # ablation: a constant scale attention instead of the learned one (None: learned, as published)
    fixed_attention: float | None = field(None, optional(between(0, 1)))


@dataclasses.dataclass
class OptimConfig:
    """AdamW with parameter groups; linear warm-up then poly decay."""

    lr: float = field(6e-5, POSITIVE)  # eta, the encoder's learning rate
    head_lr_mult: float = field(10.0, POSITIVE)  # parameters named *head* learn at lr x this
    weight_decay: float = field(0.01, NON_NEGATIVE)  # AdamW decoupled decay (0 on encoder norms and pos_block)
    betas: tuple[float, float] = field((0.9, 0.999), each(between(0, 1, hi_open=True)))
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

    name: str = field("daformer_gta2cs", NAME)
    model: "ModelConfig" = field(factory=lambda: ModelConfig())
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
                          batch_size=4, workers=0, synthetic_size=64)  # fmt: skip (no crop: the scenes are the crops)
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
        raise UserError(f"unknown preset {name!r}.{hint} Presets: {', '.join(PRESETS)} (or a .json config file)")
    return PRESETS[name]()


# ---------------------------------------------------------------- overrides


class ConfigKeyError(UserError, KeyError):
    """An unknown or misplaced config key (a KeyError too, for older callers)."""

    __str__ = Exception.__str__  # KeyError's would quote the message


# Keys that were merged into another (one key per concept). A saved config holding them
# (an older checkpoint) is read with their values moved; typed by a user, they are an error
# naming the new key.
MOVED = {
    "model.hrda": "hrda.enabled",
    "model.hrda_detail_crop": "hrda.hr_crop_size",
    "model.hrda_fixed_attention": "hrda.fixed_attention",
    "data.num_classes": "model.num_classes",
    "hrda.lr_scale": None,  # fixed at 0.5 (the fused kernel upsamples by 2)
}


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


def all_keys() -> list[str]:
    """Every dotted leaf key of a TrainConfig."""
    return _all_keys(TrainConfig())


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
        raise UserError(f"{key}={text}: expected a bool (true/false)")
    if isinstance(current, str):
        return text
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        if current is None:
            return text
        raise UserError(f"{key}: cannot parse {text!r} as {type(current).__name__}") from None
    if isinstance(current, float) and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if isinstance(current, tuple) and isinstance(value, (list, tuple, int)):
        value = tuple(value) if not isinstance(value, int) else (value,)
    if current is not None and not isinstance(value, type(current)):
        raise UserError(f"{key}={text}: expected {type(current).__name__}, got {type(value).__name__}")
    return value


def set_value(cfg: "TrainConfig", key: str, text_or_value) -> None:
    """Sets the dotted ``key`` (e.g. ``uda.alpha``) from a string (parsed to the
    field's type) or a value. An unknown key is an error naming the close matches."""
    import difflib

    if key in MOVED:
        new = MOVED[key]
        raise ConfigKeyError(f"{key} was merged into {new}" if new else f"{key} was removed ({MOVED_WHY[key]})")
    parts = key.split(".")
    node = cfg
    for i, part in enumerate(parts):
        fields = _fields(node)
        if part not in fields:
            close = difflib.get_close_matches(key, _all_keys(cfg), n=3, cutoff=0.5)
            hint = f" Did you mean {', '.join(close)}?" if close else ""
            raise ConfigKeyError(f"unknown config key {key!r}.{hint}")
        if i == len(parts) - 1:
            current = getattr(node, part)
            if dataclasses.is_dataclass(current):
                raise ConfigKeyError(f"{key!r} is a section; set one of its fields, e.g. {key}.{_all_keys(current)[0]}")
            value = _parse(text_or_value, current, key) if isinstance(text_or_value, str) else text_or_value
            setattr(node, part, value)
        else:
            node = getattr(node, part)


MOVED_WHY = {"hrda.lr_scale": "the context scale is fixed at 0.5: the fused scale_fusion kernel upsamples by 2"}


def apply_overrides(cfg: "TrainConfig", overrides: list[str]) -> "TrainConfig":
    """``["uda.alpha=0.99", "max_iters=100"]`` applied in order; returns ``cfg`` (not validated)."""
    for item in overrides:
        if "=" not in item:
            raise UserError(f"override {item!r} is not key=value")
        key, text = item.split("=", 1)
        set_value(cfg, key.strip(), text.strip())
    return cfg


def to_dict(cfg) -> dict:
    return dataclasses.asdict(cfg)


def from_dict(data: dict) -> "TrainConfig":
    """A TrainConfig from nested dicts (a saved config or a JSON file); keys are
    checked like overrides, values by ``validate``. Keys of ``MOVED`` (older
    checkpoints) are read into their new home."""
    cfg = TrainConfig()
    moved = {}
    if isinstance(data, dict):  # config.json's "run" is the record of a run, not a setting
        data = {k: v for k, v in data.items() if k != "run"}

    def walk(d: dict, prefix: str):
        for k, v in d.items():
            key = prefix + k
            if isinstance(v, dict):
                walk(v, f"{key}.")
            elif key in MOVED:
                moved[key] = v
            else:
                set_value(cfg, key, tuple(v) if isinstance(v, list) else v)

    if not isinstance(data, dict):
        raise UserError(f"a config must be a JSON object of sections and fields, got {type(data).__name__}")
    walk(data, "")
    if moved.get("model.hrda"):  # the old model keys mattered only with model.hrda=True
        for old in ("model.hrda", "model.hrda_detail_crop", "model.hrda_fixed_attention"):
            if old in moved:
                set_value(cfg, MOVED[old], moved[old])
    return cfg


def load_config(preset_or_file: str, overrides: list[str] = (), from_pretrained: bool = True) -> "TrainConfig":
    """A preset name, or a JSON file of (partial) nested fields over the defaults, then
    overrides; validated (see ``validate``; ``from_pretrained=False`` when the weights
    come from elsewhere than ``model.pretrained``)."""
    import json
    from pathlib import Path

    if preset_or_file in PRESETS or not preset_or_file.endswith(".json"):
        cfg = preset(preset_or_file)
    else:
        path = Path(preset_or_file)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise UserError(f"config file {path} not found") from None
        except (OSError, UnicodeDecodeError) as e:
            raise UserError(f"config file {path} cannot be read ({e})") from None
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise UserError(f"config file {path}:{e.lineno}:{e.colno}: not valid JSON ({e.msg})") from None
        try:
            cfg = from_dict(data)
            _check_fields(cfg, "")  # the file's own values, named with the file
        except UserError as e:
            raise type(e)(f"config file {path}: {e}") from None
    return validate(apply_overrides(cfg, list(overrides)), from_pretrained)


# ---------------------------------------------------------------- validation


def _type_name(tp) -> str:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in args)
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return f"a tuple of {_type_name(args[0]).removeprefix('an ').removeprefix('a ')}s, e.g. (1,2)"
        return "(" + ", ".join(_type_name(a).removeprefix("an ").removeprefix("a ") for a in args) + ")"
    if tp is type(None):
        return "None"
    return {bool: "a bool", int: "an int", float: "a number", str: "a string"}.get(tp, getattr(tp, "__name__", str(tp)))


def _coerce(value, tp):
    """``value`` as type ``tp`` (ints for floats, lists for tuples), or raise TypeError."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        for arm in args:
            try:
                return _coerce(value, arm)
            except TypeError:
                pass
        raise TypeError
    if tp is type(None):
        if value is None:
            return None
        raise TypeError
    if origin is tuple:
        if not isinstance(value, (tuple, list)):
            raise TypeError
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0]) for v in value)
        if len(value) != len(args):
            raise TypeError
        return tuple(_coerce(v, a) for v, a in zip(value, args))
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise TypeError
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise TypeError
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            return float(value)
        raise TypeError
    if isinstance(value, tp):
        return value
    raise TypeError


def _check_fields(node, prefix: str) -> None:
    import difflib

    hints = typing.get_type_hints(type(node))
    for f in dataclasses.fields(node):
        key, value = prefix + f.name, getattr(node, f.name)
        if dataclasses.is_dataclass(f.type) or dataclasses.is_dataclass(hints[f.name]):
            _check_fields(value, key + ".")
            continue
        try:
            value = _coerce(value, hints[f.name])
        except TypeError:
            raise UserError(f"{key}={value!r}: expected {_type_name(hints[f.name])}") from None
        setattr(node, f.name, value)
        check = f.metadata.get("check")
        if check is not None and not check.test(value):
            close = difflib.get_close_matches(str(value), check.choices, n=1, cutoff=0.5) if check.choices else []
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise UserError(f"{key}={value!r}: expected {check.expected}{hint}")


def train_crop(cfg: "TrainConfig") -> tuple[int, int]:
    """(h, w) of the training crop: data.crop_size, the synthetic scene, or the recipe's."""
    if cfg.data.source == "synthetic":
        return cfg.data.synthetic_size, cfg.data.synthetic_size
    return tuple(cfg.data.crop_size or RECIPE_CROP[cfg.data.recipe])


def _check_across(cfg: "TrainConfig", from_pretrained: bool) -> None:
    d, m, u, h = cfg.data, cfg.model, cfg.uda, cfg.hrda
    synthetic = (d.source == "synthetic", d.target == "synthetic")
    if synthetic[0] != synthetic[1]:
        raise UserError(f"data.source={d.source!r} with data.target={d.target!r}: the synthetic demo needs both "
                        "'synthetic', a released dataset needs neither")  # fmt: skip
    for key, name in (("data.source", d.source), ("data.target", d.target)):
        if m.num_classes != DATASET_CLASSES[name]:
            raise UserError(f"model.num_classes={m.num_classes} but {key}={name!r} has {DATASET_CLASSES[name]} "
                            f"classes; expected model.num_classes={DATASET_CLASSES[name]}")  # fmt: skip
    if synthetic[0]:
        side = d.synthetic_size
        if d.crop_size is not None and tuple(d.crop_size) != (side, side):
            raise UserError(f"data.crop_size={d.crop_size}: the synthetic scenes are not cropped (they are "
                            f"data.synthetic_size={side} square); expected None or ({side}, {side})")  # fmt: skip
        if d.resize is not None:
            raise UserError(f"data.resize={d.resize}: the synthetic scenes are not resized; expected None "
                            "(set data.synthetic_size)")  # fmt: skip
    crop_h, crop_w = train_crop(cfg)
    crop_key = "data.synthetic_size" if synthetic[0] else "data.crop_size"
    if u.mode == "dacs" and u.pseudo_ignore_top + u.pseudo_ignore_bottom >= crop_h:
        raise UserError(f"uda.pseudo_ignore_top={u.pseudo_ignore_top} + uda.pseudo_ignore_bottom="
                        f"{u.pseudo_ignore_bottom} leave no row of the {crop_h}-row training crop ({crop_key}); "
                        f"expected a sum < {crop_h}")  # fmt: skip
    if m.decode_head in ("daformer", "segformer") and m.backbone not in MIT_BACKBONES:
        raise UserError(f"model.decode_head={m.decode_head!r} needs a 4-level MiT encoder, got model.backbone="
                        f"{m.backbone!r}; expected one of {', '.join(MIT_BACKBONES)} (or model.decode_head=deeplabv2)")
    if m.embed_dim is not None and m.decode_head == "deeplabv2":
        raise UserError(f"model.embed_dim={m.embed_dim}: the deeplabv2 head has no embedding; expected None")
    if m.backbone in MIT_BACKBONES and min(crop_h, crop_w) < 32:  # stage 1's spatial reduction is an 8x8 conv
        raise UserError(f"{crop_key}: the MiT encoder needs a training crop of at least 32x32, got {crop_h}x{crop_w}")
    if h.enabled:
        if min(crop_h, crop_w) < 64 or h.hr_crop_size < 32:  # the 0.5 context and the detail crop feed MiT
            raise UserError(f"hrda.hr_crop_size={h.hr_crop_size} with a {crop_h}x{crop_w} crop ({crop_key}): HRDA "
                            "feeds MiT the crop at 0.5 and the detail crop; expected a crop of at least 64x64 "
                            "and hrda.hr_crop_size >= 32")  # fmt: skip
        if m.decode_head != "daformer" or m.backbone not in MIT_BACKBONES:
            raise UserError(f"hrda.enabled=True needs a MiT backbone and the daformer head, got model.backbone="
                            f"{m.backbone!r} and model.decode_head={m.decode_head!r}")  # fmt: skip
        if crop_h % 32 or crop_w % 32:
            raise UserError(f"{crop_key}: HRDA's training crop must be multiples of 32, got {crop_h}x{crop_w}")
        if h.hr_crop_size > min(crop_h, crop_w):
            raise UserError(f"hrda.hr_crop_size={h.hr_crop_size} does not fit the {crop_h}x{crop_w} training crop "
                            f"({crop_key}); expected at most {min(crop_h, crop_w)}")  # fmt: skip
        if h.hr_crop_size % h.crop_coord_divisible:
            raise UserError(f"hrda.hr_crop_size={h.hr_crop_size}: expected a multiple of hrda.crop_coord_divisible="
                            f"{h.crop_coord_divisible}")  # fmt: skip
    if u.fd_lambda > 0:
        if bad := [c for c in u.fd_classes if c >= m.num_classes]:
            raise UserError(f"uda.fd_classes={u.fd_classes}: {bad} are not classes of model.num_classes="
                            f"{m.num_classes}; expected values < {m.num_classes}")  # fmt: skip
        if from_pretrained and not m.pretrained:
            raise UserError(f"uda.fd_lambda={u.fd_lambda} needs ImageNet encoder weights but model.pretrained=None; "
                            "expected model.pretrained=<mit_b*.pth> or uda.fd_lambda=0")  # fmt: skip
    if from_pretrained and m.pretrained:
        from pathlib import Path

        if not Path(m.pretrained).is_file():
            raise UserError(f"model.pretrained={m.pretrained}: file not found; expected the SegFormer ImageNet "
                            "weights (mit_b*.pth) there, or model.pretrained=None to start from scratch")  # fmt: skip


def validate(cfg: "TrainConfig", from_pretrained: bool = True) -> "TrainConfig":
    """Checks every field (type, allowed values or range) and the rules across fields;
    the first problem is a ``UserError`` naming the key, the value and what was expected.
    Ints given for floats and lists for tuples are converted in place. Returns ``cfg``.

    ``from_pretrained``: the run starts from ``model.pretrained`` (a fresh training run), so
    the file must exist and FD needs it. False when the weights come from a checkpoint.
    The data-dependent rules (files, RCS ``min_pixels`` against the class statistics) are
    checked at start-up by ``fastuda.runtime.build``.
    """
    _check_fields(cfg, "")
    _check_across(cfg, from_pretrained)
    return cfg


@dataclasses.dataclass
class ModelConfig:
    """The segmentation network (DAFormer: MiT-B5 + DAFormer head). HRDA's two-scale
    model is ``TrainConfig.hrda`` (``build_model(cfg, hrda=...)``)."""

    backbone: str = field("mit_b5", one_of(*BACKBONES))  # encoder: MiT b0..b5 (mit_demo: the demo's), or a ResNet
    # daformer (context-aware fusion) | segformer (all-MLP) | deeplabv2 (ASPP)
    decode_head: str = field("daformer", one_of("daformer", "segformer", "deeplabv2"))
    num_classes: int = field(19, between(1, 254))  # K, the Cityscapes train ids
    drop_path_rate: float = field(0.1, between(0, 1, hi_open=True))  # stochastic depth of the last MiT block
    # head embedding width (every head: DAFormer, its HRDA scale attention, SegFormer);
    # None: DAFormer 256 (32 for mit_demo), SegFormer 768 (256 for b0)
    embed_dim: int | None = field(None, optional(at_least(1)))
    pretrained: str | None = None  # ImageNet encoder weights, e.g. pretrained/mit_b5.pth
    sync_bn: bool = False  # BatchNorm statistics over all GPUs (SyncBatchNorm; with torchrun); published: per GPU
