"""``--compile``: torch.compile of the parts of a run that compile whole.

Training compiles two functions of ``fastuda.uda.step``:

- the student's forward + loss (``segmentation_loss``: encoder, decode head, HRDA's
  two scales and fused scale attention, resize and weighted CE), forward and backward;
- the teacher's forward (``teacher_logits``; HRDA: the sliding detail windows too);
- AdvSeg / MinEnt: the student's main prediction (``main_prediction``) and the source
  loss with it (``main_prediction_loss``).

Both trace without a graph break for DAFormer and HRDA (``tests/test_compile.py``).
The rest of the step stays eager on purpose: random draws take the step's generator
(a ``generator=`` argument breaks a graph), and EMA, ClassMix, augmentation and the
optimiser are a few fused ops each, already kernels.

Each function is compiled once and guards on the module it is called with, so the
student's three passes (source, mix, MIC) share one compiled graph per input
signature (the source pass has no pixel weight: a second graph).
"""

from collections.abc import Callable

import torch
from torch import nn

from fastuda.runtime import COMPILE_BACKENDS
from fastuda.uda.step import StepFunctions, main_prediction, main_prediction_loss, segmentation_loss, teacher_logits

BACKENDS = COMPILE_BACKENDS


def _check_backend(backend: str) -> None:
    if backend not in BACKENDS:
        raise ValueError(f"compile backend must be one of {BACKENDS}, got {backend!r}")


def compile_student_teacher(backend: str = "inductor", mode: str | None = None) -> StepFunctions:
    """The step's model calls compiled with ``torch.compile(backend=, mode=)``; pass the result
    as ``StepState(..., fns=)``. ``backend``: "inductor" (kernels; needs a C++ compiler on CPU),
    "aot_eager" (traced forward + backward, eager kernels: checks tracing quickly), "eager"."""
    _check_backend(backend)
    return StepFunctions(
        student_loss=torch.compile(segmentation_loss, backend=backend, mode=mode),
        teacher_logits=torch.compile(teacher_logits, backend=backend, mode=mode),
        student_prediction=torch.compile(main_prediction, backend=backend, mode=mode),
        student_prediction_loss=torch.compile(main_prediction_loss, backend=backend, mode=mode),
    )


def compile_model(model: nn.Module, backend: str = "inductor", mode: str | None = None) -> Callable:
    """``model``'s forward compiled for inference (evaluate / predict): a callable taking the
    image batch. The module itself is left as it is (its state dict keeps its names)."""
    _check_backend(backend)
    return torch.compile(model, backend=backend, mode=mode)


def graph_breaks() -> int:
    """Graph breaks torch.compile has met in this process so far (0 is the goal)."""
    from torch._dynamo.utils import counters  # seconds to import: only once something is compiled or counted

    return sum(counters["graph_break"].values())
