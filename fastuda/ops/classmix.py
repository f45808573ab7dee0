"""fastuda.ops.class_presence: the per-image class table that ClassMix samples from.

The kernels are C++ (CPU, ``at::parallel_for``) and CUDA in csrc/classmix/;
this module registers their fake implementation and validates inputs.
"""

import torch
from torch import Tensor

from fastuda._ext import load_extension

from . import reference
from ._backend import get_backend
from ._checks import check_int, check_labels, check_tensor

load_extension()


@torch.library.register_fake("fastuda::class_presence")
def _(label, num_classes, ignore_index):
    return label.new_empty((label.shape[0], num_classes + 1), dtype=torch.bool)


def class_presence(label: Tensor, num_classes: int, ignore_index: int = 255) -> Tensor:
    """Which classes occur in each image.

    Args:
        label: (B, H, W) int64 labels in [0, num_classes) or ``ignore_index``.
        num_classes: number of classes (19 for Cityscapes).
        ignore_index: the ignore label (255).

    Returns:
        (B, num_classes + 1) bool: ``out[b, c]`` is True when class c occurs in
        image b; the last column is True when the ignore label occurs (the
        published ClassMix counts it as a class).
    """
    check_tensor("label", label, 3, "(B, H, W)", (torch.int64,))
    check_int("num_classes", num_classes, 1)
    check_int("ignore_index", ignore_index)
    check_labels("label", label, num_classes, ignore_index)
    if get_backend() == "reference":
        return reference.class_presence(label, num_classes, ignore_index)
    return torch.ops.fastuda.class_presence(label, num_classes, ignore_index)
