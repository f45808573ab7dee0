"""The config: checks declared next to every field, validation at load, the merged HRDA
keys, JSON files and saved configs. (The table of user mistakes: test_bad_input.py;
every key's effect: test_config_effects.py.)"""

import dataclasses
import json

import pytest

from fastuda import config
from fastuda.config import HRDAConfig, ModelConfig, TrainConfig, from_dict, load_config, to_dict, validate
from fastuda.errors import UserError

# fields that take any value of their type: booleans, and paths checked where they are used
FREE = {"data.source_root", "data.target_root", "model.pretrained"}


def _fields(cls, prefix=""):
    for f in dataclasses.fields(cls):
        default = f.default_factory() if f.default is dataclasses.MISSING else f.default
        if dataclasses.is_dataclass(default):
            yield from _fields(type(default), f"{prefix}{f.name}.")
        else:
            yield prefix + f.name, f, default


def test_every_field_declares_what_it_accepts():
    missing = [key for key, f, default in _fields(TrainConfig)
               if key not in FREE and not isinstance(default, bool) and "check" not in f.metadata]  # fmt: skip
    assert missing == []
    for key, f, default in _fields(TrainConfig):  # every default is accepted by its own check
        check = f.metadata.get("check")
        assert check is None or check.test(default), key


@pytest.mark.parametrize("name", list(config.PRESETS))
def test_presets_are_valid(name):
    validate(config.preset(name), from_pretrained=False)


def test_tables_match_the_code_they_describe():
    from fastuda.data import NUM_CLASSES
    from fastuda.data.synthetic import NUM_CLASSES as SYNTHETIC_CLASSES
    from fastuda.data import preset_pipeline
    from fastuda.models import MIT_VARIANTS

    from fastuda.data import DATASET_NAMES

    assert config.DATASET_CLASSES == {**{name: NUM_CLASSES for name in DATASET_NAMES if name != "folder"},
                                      "synthetic": SYNTHETIC_CLASSES}  # fmt: skip
    assert set(config.SOURCE_DATASETS) | set(config.TARGET_DATASETS) <= set(config.DATASET_CLASSES)
    assert set(config.MIT_BACKBONES) == set(MIT_VARIANTS)
    # one recipe table: what validation checks is what the data pipeline crops (published: 512 / 1024)
    for recipe in config.RECIPES:
        cfg = config.preset("daformer_gta2cs")
        cfg.data.recipe, cfg.data.crop_size = recipe, None
        assert preset_pipeline(recipe, "gta").crop_size == config.train_crop(cfg)
    assert {r: config.RECIPES[r].crop for r in config.RECIPES} == {"daformer": (512, 512), "hrda": (1024, 1024),
                                                                  "mic": (1024, 1024), "target_only": (512, 512),
                                                                  "hrda_whole": (1024, 1024)}  # fmt: skip


def test_test_windows_are_the_published_ones():
    """mmseg test_cfg of the published experiments (HRDA experiments.py): DAFormer whole image;
    HRDA / MIC slide 1024 / 512 (id 40); target-only slide 512 / 256 (id 43, inference='slide' with
    stride = crop // 2); HRDA on DeepLabV2 whole image through HRDA's scales (id 41, inference='whole')."""
    def windows(name, *overrides):
        return config.test_windows(config.apply_overrides(config.preset(name), list(overrides)))

    assert windows("daformer_gta2cs") == (None, None)
    assert windows("hrda_gta2cs") == windows("mic_hrda_gta2cs") == ((1024, 1024), (512, 512))
    assert windows("target_only_cs") == ((512, 512), (256, 256))
    assert windows("advseg_gta2cs") == (None, None)
    assert windows("advseg_hrda_gta2cs") == windows("minent_hrda_gta2cs") == (None, None)
    assert windows("target_only_cs", "data.target=synthetic", "data.source=synthetic") == (None, None)


def test_messages_name_key_value_and_expectation():
    cases = {
        "uda.alpha=2": "uda.alpha=2.0: expected a number in [0, 1)",
        "uda.mode=dac": "uda.mode='dac': expected one of dacs, advseg, minent, source_only, target_only; did you mean 'dacs'?",
        "max_iters=0": "max_iters=0: expected a number >= 1",
        "data.crop_size=(1,2,3)": "data.crop_size=(1, 2, 3): expected (int, int) or None",
    }
    for override, message in cases.items():
        with pytest.raises(UserError) as info:
            load_config("demo", [override])
        assert str(info.value) == message


def test_types_are_converted_or_refused():
    cfg = from_dict({"uda": {"alpha": 1 - 1e-3, "jitter_prob": 1}, "data": {"crop_size": [512, 256]}})
    validate(cfg, from_pretrained=False)
    assert cfg.uda.jitter_prob == 1.0 and isinstance(cfg.uda.jitter_prob, float)
    assert cfg.data.crop_size == (512, 256)
    with pytest.raises(UserError, match=r"max_iters=1.5: expected an int"):
        validate(from_dict({"max_iters": 1.5}), from_pretrained=False)
    with pytest.raises(UserError, match=r"rcs.enabled=1: expected a bool"):
        validate(from_dict({"rcs": {"enabled": 1}}), from_pretrained=False)
    with pytest.raises(UserError, match=r"optim.lr=nan"):
        validate(from_dict({"optim": {"lr": float("nan")}}), from_pretrained=False)


def test_json_file_round_trip(tmp_path):
    cfg = load_config("demo", ["uda.alpha=0.9", "hrda.fixed_attention=0.25"])
    path = tmp_path / "run.json"
    path.write_text(json.dumps(to_dict(cfg)))
    assert load_config(str(path)) == cfg
    path.write_text(json.dumps({"name": "mine", "max_iters": 7}))  # partial: over the defaults
    partial = load_config(str(path), ["model.pretrained=None", "uda.fd_lambda=0"])
    assert (partial.name, partial.max_iters, partial.uda.alpha) == ("mine", 7, 0.999)


def test_hrda_keys_have_one_home():
    assert not any(k.startswith("model.hrda") for k in config.all_keys())
    assert {"hrda.enabled", "hrda.hr_crop_size", "hrda.fixed_attention"} <= set(config.all_keys())
    # a config saved before the merge (model.hrda*, data.num_classes, hrda.lr_scale) still reads
    old = {"model": {"hrda": True, "hrda_detail_crop": 256, "hrda_fixed_attention": 0.5},
           "data": {"num_classes": 19}, "hrda": {"lr_scale": 0.5}}  # fmt: skip
    cfg = from_dict(old)
    assert (cfg.hrda.enabled, cfg.hrda.hr_crop_size, cfg.hrda.fixed_attention) == (True, 256, 0.5)
    assert not from_dict({"model": {"hrda": False, "hrda_detail_crop": 512}}).hrda.enabled


def test_fixed_attention_reaches_a_training_run():
    from fastuda.runtime.build import build_segmentor

    cfg = load_config("demo", ["hrda.enabled=true", "hrda.hr_crop_size=32", "hrda.fixed_attention=0.5"])
    model = build_segmentor(cfg)
    assert model.decode_head.fixed_attention == 0.5 and model.decode_head.scale_attention is None


def test_embed_dim_reaches_every_hrda_head():
    from fastuda.models import build_model

    model = build_model(ModelConfig(backbone="mit_demo", embed_dim=24, num_classes=6),
                        hrda=HRDAConfig(enabled=True, hr_crop_size=32))  # fmt: skip
    head, attention = model.decode_head.head, model.decode_head.scale_attention
    assert head.conv_seg.in_channels == 24 and attention.conv_seg.in_channels == 24
    default = build_model(ModelConfig(backbone="mit_demo", num_classes=6), hrda=True)
    assert default.decode_head.head.conv_seg.in_channels == 32  # the demo's width, as without HRDA


def test_the_registry_names_every_model_once():
    from fastuda.models import build_model, registry

    # every registered name resolves to a constructor, and the config accepts exactly these names
    fields = {f.name: f for f in dataclasses.fields(ModelConfig)}
    assert fields["backbone"].metadata["check"].choices == tuple(registry.BACKBONES)
    assert fields["decode_head"].metadata["check"].choices == tuple(registry.HEADS)
    assert all(callable(registry.backbone_constructor(n)) for n in registry.BACKBONES)
    built = {head: type(build_model(backbone="mit_demo", decode_head=head, num_classes=3).decode_head).__name__
             for head in registry.HEADS}  # fmt: skip
    assert built == {"daformer": "DAFormerHead", "segformer": "SegFormerHead", "deeplabv2": "DeepLabV2Head",
                     "deeplabv2red": "DeepLabV2Head"}
    with pytest.raises(UserError, match="model.backbone='mit_b6': expected one of mit_b0, .*resnet101; did you mean"):
        load_config("demo", ["model.backbone=mit_b6"])


def test_the_config_imports_no_torch_and_the_models_no_training_config():
    import subprocess
    import sys

    for code in ("import sys, fastuda.config; assert 'torch' not in sys.modules, 'the config imports torch'",
                 "import sys, fastuda.models.build, fastuda.models.checkpoint, fastuda.models.hrda; "
                 "assert 'fastuda.config' not in sys.modules, 'the models import the training config'"):  # fmt: skip
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
