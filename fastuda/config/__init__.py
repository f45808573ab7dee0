"""The typed configuration of a run, one job per file (torchtitan's ``config/``):

- ``schema``: the dataclasses, each field with its paper meaning and its check (the network's
  sections, ``ModelConfig`` and ``HRDAConfig``, live with the models: ``fastuda.models.config``);
- ``recipes``: the published pipelines' sizes (training crop, resize, test windows), one row
  per recipe and dataset, read by validation, the data pipeline and inference;
- ``presets``: the presets, plain functions;
- ``loading``: presets or JSON files, ``key=value`` overrides, saved configs (``MOVED`` keys);
- ``validation``: the rules across fields, and the pretrained-file check.
"""

from fastuda._fields import Check, check_fields, field
from fastuda.models.config import HRDAConfig, ModelConfig
from fastuda.models.registry import BACKBONES, HEADS, MIT_BACKBONES

from .loading import (MOVED, ConfigKeyError, all_keys, apply_overrides, from_dict, load_config, set_value,
                      to_dict)  # fmt: skip
from .presets import (PRESETS, advseg_gta2cs, advseg_hrda_gta2cs, config_for, daformer_cs2acdc, daformer_cs2darkzurich, daformer_gta2cs,
                      daformer_gta_dg, daformer_synthia2cs, demo, demo_source_only, hrda_cs2acdc, hrda_cs2darkzurich,
                      hrda_gta2cs, hrda_gta_dg, hrda_synthia2cs, mic_hrda_cs2acdc, mic_hrda_cs2darkzurich,
                      mic_hrda_gta2cs, minent_gta2cs, minent_hrda_gta2cs, preset, source_only_cs2acdc, source_only_cs2darkzurich,
                      source_only_gta2cs, target_only_cs)  # fmt: skip
from .recipes import DATASETS, RECIPES, Dataset, Recipe, recipe_resize, resize, test_windows, train_crop
from .schema import (DATASET_CLASSES, EVAL_DATASETS, SOURCE_DATASETS, TARGET_DATASETS, CheckpointConfig, DataConfig,
                     OptimConfig, RCSConfig, TrainConfig, UDAConfig, parse_dataset_spec)  # fmt: skip
from .validation import check_pretrained, validate

__all__ = [
    "BACKBONES", "Check", "CheckpointConfig", "ConfigKeyError", "DATASETS", "DATASET_CLASSES", "DataConfig",
    "Dataset", "EVAL_DATASETS", "HEADS", "HRDAConfig", "MIT_BACKBONES", "MOVED", "ModelConfig", "OptimConfig",
    "PRESETS", "RCSConfig", "RECIPES", "Recipe", "SOURCE_DATASETS", "TARGET_DATASETS", "TrainConfig", "UDAConfig",
    "advseg_gta2cs", "advseg_hrda_gta2cs", "all_keys", "apply_overrides", "check_fields", "check_pretrained", "config_for",
    "daformer_cs2acdc", "daformer_cs2darkzurich", "daformer_gta2cs", "daformer_gta_dg", "daformer_synthia2cs", "demo",
    "demo_source_only", "field", "from_dict", "hrda_cs2acdc", "hrda_cs2darkzurich", "hrda_gta2cs", "hrda_gta_dg",
    "hrda_synthia2cs", "load_config", "mic_hrda_cs2acdc", "mic_hrda_cs2darkzurich", "mic_hrda_gta2cs",
    "minent_gta2cs", "minent_hrda_gta2cs", "parse_dataset_spec", "preset", "recipe_resize", "resize", "set_value", "source_only_cs2acdc",
    "source_only_cs2darkzurich", "source_only_gta2cs", "target_only_cs", "test_windows", "to_dict", "train_crop",
    "validate",
]  # fmt: skip
