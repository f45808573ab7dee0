"""What a run needs around the UDA step, one job per module; train, evaluate and predict
share them and nothing here imports those entry points.

- ``build``: the model, datasets, loaders and numeric settings of a config;
- ``checkpoint``: atomic checkpoint writes, RNG state, loading a training checkpoint;
- ``logging``: the run's JSONL log and TensorBoard events.
"""
