"""fastuda.ops: fused, torch.compile-friendly ops for domain-adaptive segmentation.

Every op is registered with ``torch.library`` (namespace ``fastuda``), has a
fake implementation for tracing, autograd where it has a backward, and a
pure-PyTorch reference in ``fastuda.ops.reference``. CUDA tensors run the fused
kernels; CPU tensors run the reference (see ``set_backend`` for the switch).
"""

from ._backend import BACKENDS, get_backend, set_backend, use_backend
from ._checks import get_value_checks, set_value_checks
from .classmix import class_presence, classmix, sample_mix_classes
from .cross_entropy import weighted_cross_entropy
from .attention import attention
from .pseudo_label import pseudo_label
from .scale_fusion import scale_fusion

__all__ = [
    "BACKENDS",
    "attention",
    "class_presence",
    "classmix",
    "get_backend",
    "get_value_checks",
    "pseudo_label",
    "sample_mix_classes",
    "scale_fusion",
    "set_backend",
    "set_value_checks",
    "use_backend",
    "weighted_cross_entropy",
]
