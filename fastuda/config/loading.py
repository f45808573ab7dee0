"""From text to a config: presets or JSON files, ``key=value`` overrides, saved configs
(with the ``MOVED`` keys of older checkpoints)."""

import ast
import dataclasses
import difflib
import json
from pathlib import Path

from fastuda._fields import check_fields
from fastuda.errors import UserError

from .presets import PRESETS, preset
from .schema import TrainConfig
from .validation import validate


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


def set_value(cfg: TrainConfig, key: str, text_or_value) -> None:
    """Sets the dotted ``key`` (e.g. ``uda.alpha``) from a string (parsed to the
    field's type) or a value. An unknown key is an error naming the close matches."""
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


def apply_overrides(cfg: TrainConfig, overrides: list[str]) -> TrainConfig:
    """``["uda.alpha=0.99", "max_iters=100"]`` applied in order; returns ``cfg`` (not validated)."""
    for item in overrides:
        if "=" not in item:
            raise UserError(f"override {item!r} is not key=value")
        key, text = item.split("=", 1)
        set_value(cfg, key.strip(), text.strip())
    return cfg


def to_dict(cfg) -> dict:
    return dataclasses.asdict(cfg)


def from_dict(data: dict) -> TrainConfig:
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


def load_config(preset_or_file: str, overrides: list[str] = (), from_pretrained: bool = True) -> TrainConfig:
    """A preset name, or a JSON file of (partial) nested fields over the defaults, then
    overrides; validated (see ``validate``; ``from_pretrained=False`` when the weights
    come from elsewhere than ``model.pretrained``)."""
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
            check_fields(cfg, "")  # the file's own values, named with the file
        except UserError as e:
            raise type(e)(f"config file {path}: {e}") from None
    return validate(apply_overrides(cfg, list(overrides)), from_pretrained)

