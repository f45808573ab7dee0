"""What a run needs around the UDA step, one job per module; train, evaluate and predict
share them and nothing here imports those entry points.

- ``build``: the model, datasets, loaders (each rank's share of the draw order) and numeric settings;
- ``checkpoint``: durable atomic checkpoint writes, retention, RNG state, resuming a run;
- ``distributed``: torchrun's process group, gradient averaging, SyncBN, stop signals;
- ``evaluation``: the confusion matrix over a split (sharded over ranks) and its report;
- ``logging``: the run's JSONL log and TensorBoard events.
"""
