"""The typed configuration of a run, one job per file (torchtitan's ``config/``):

- ``checks``: what a field accepts (``Check``, ``field``) and ``check_fields``;
- ``schema``: the dataclasses, each field with its paper meaning and its check;
- ``recipes``: the published pipelines' sizes (training crop, resize, test windows), one row
  per recipe and dataset, read by validation, the data pipeline and inference;
- ``presets``: the presets, plain functions;
- ``loading``: presets or JSON files, ``key=value`` overrides, saved configs (``MOVED`` keys);
- ``validation``: the rules across fields, and the pretrained-file check.
"""

from .checks import Check, check_fields, field
from .loading import (MOVED, ConfigKeyError, all_keys, apply_overrides, from_dict, load_config, set_value,
                      to_dict)  # fmt: skip
from .presets import (PRESETS, daformer_gta2cs, daformer_synthia2cs, demo, demo_source_only, hrda_gta2cs,
                      hrda_synthia2cs, mic_hrda_gta2cs, preset, source_only_gta2cs)  # fmt: skip
from .recipes import DATASETS, RECIPES, Dataset, Recipe, recipe_resize, resize, test_windows, train_crop
from .schema import (BACKBONES, DATASET_CLASSES, MIT_BACKBONES, CheckpointConfig, DataConfig, HRDAConfig, ModelConfig,
                     OptimConfig, RCSConfig, TrainConfig, UDAConfig)  # fmt: skip
from .validation import check_pretrained, validate

__all__ = [
    "BACKBONES", "DATASETS", "DATASET_CLASSES", "MIT_BACKBONES", "MOVED", "PRESETS", "RECIPES", "Check",
    "CheckpointConfig", "ConfigKeyError", "DataConfig", "Dataset", "HRDAConfig", "ModelConfig", "OptimConfig",
    "RCSConfig", "Recipe", "TrainConfig", "UDAConfig", "all_keys", "apply_overrides", "check_fields",
    "check_pretrained", "daformer_gta2cs", "daformer_synthia2cs", "demo", "demo_source_only", "field", "from_dict",
    "hrda_gta2cs", "hrda_synthia2cs", "load_config", "mic_hrda_gta2cs", "preset", "recipe_resize", "resize",
    "set_value", "source_only_gta2cs", "test_windows", "to_dict", "train_crop", "validate",
]  # fmt: skip
