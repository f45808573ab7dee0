"""What a run needs around the UDA step, one job per module; train, evaluate and predict
share them and nothing here imports those entry points.

- ``build``: the model, datasets, loaders (each rank's share of the draw order) and numeric settings;
- ``checkpoint``: durable atomic checkpoint writes, retention, RNG state, resuming a run;
- ``distributed``: torchrun's process group, gradient averaging, SyncBN, stop signals;
- ``evaluation``: the confusion matrix over a split (sharded over ranks) and its report;
- ``logging``: the run's JSONL log and TensorBoard events;
- ``loop``: the training loop itself (``fastuda.train.train``).
"""

# torch.compile backends the CLIs offer; here, not in ``compile``, so that the command line
# can check them without importing torch
COMPILE_BACKENDS = ("inductor", "aot_eager", "eager")
