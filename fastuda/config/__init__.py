"""The typed configuration of a run, one job per file (torchtitan's ``config/``):

- ``checks``: what a field accepts (``Check``, ``field``) and ``check_fields``;
- ``schema``: the dataclasses, each field with its paper meaning and its check;
- ``recipes``: the published pipelines' sizes (training crop, resize, test windows), one row
  per recipe and dataset, read by validation, the data pipeline and inference;
- ``presets``: the presets, plain functions;
- ``loading``: presets or JSON files, ``key=value`` overrides, saved configs (``MOVED`` keys);
- ``validation``: the rules across fields.
"""

from .checks import Check, check_fields, field
from .loading import (MOVED, ConfigKeyError, all_keys, apply_overrides, from_dict, load_config, set_value,
                      to_dict)  # fmt: skip
from .presets import (PRESETS, daformer_gta2cs, daformer_synthia2cs, demo, demo_source_only, hrda_gta2cs,
                      hrda_synthia2cs, mic_hrda_gta2cs, preset, source_only_gta2cs)  # fmt: skip
from .schema import (BACKBONES, DATASET_CLASSES, MIT_BACKBONES, CheckpointConfig, DataConfig, HRDAConfig, ModelConfig,
                     OptimConfig, RCSConfig, TrainConfig, UDAConfig)  # fmt: skip
from .recipes import DATASETS, RECIPES, Dataset, Recipe, recipe_resize, resize, test_windows, train_crop
from .validation import validate

__all__ = [
    "BACKBONES", "DATASETS", "DATASET_CLASSES", "Dataset", "RECIPES", "Recipe", "recipe_resize", "resize", "test_windows", "MIT_BACKBONES", "MOVED", "PRESETS", "Check", "CheckpointConfig", "ConfigKeyError",
    "DataConfig", "HRDAConfig", "ModelConfig", "OptimConfig", "RCSConfig", "TrainConfig", "UDAConfig", "all_keys",
    "apply_overrides", "check_fields", "daformer_gta2cs", "daformer_synthia2cs", "demo", "demo_source_only", "field",
    "from_dict", "hrda_gta2cs", "hrda_synthia2cs", "load_config", "mic_hrda_gta2cs", "preset", "set_value",
    "source_only_gta2cs", "to_dict", "train_crop", "validate",
]  # fmt: skip
