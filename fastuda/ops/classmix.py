"""ClassMix ops: the class table, the class draw and the mix.

``class_presence`` and ``classmix`` run C++ (CPU, ``at::parallel_for``) and
CUDA kernels from csrc/classmix/; this module registers their fake
implementations and autograd, and validates inputs. ``sample_mix_classes`` is
plain torch on fixed shapes. Together they replace the published per-image
loop of ``torch.unique`` + ``np.random.choice`` (a host sync every step) with
three device ops that torch.compile traces in one graph:

    presence = class_presence(source_label, num_classes)      # (B, K + 1) bool
    chosen = sample_mix_classes(presence)                      # (B, K + 1) bool
    image, label, weight, mask = classmix(src_img, tgt_img, source_label, pseudo_label,
                                          chosen, target_weight=pseudo_weight)
"""

import torch
from torch import Tensor

from fastuda._ext import load_extension

from . import reference
from ._backend import get_backend
from ._checks import FLOAT_DTYPES, check_int, check_labels, check_tensor

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


def sample_mix_classes(
    presence: Tensor,
    generator: torch.Generator | None = None,
    batch_pool: bool = True,
    include_ignore: bool = True,
) -> Tensor:
    """Draws, for each image, ceil(n / 2) of the n classes in its pool, uniformly
    without replacement (DACS ``get_class_masks``).

    Args:
        presence: (B, num_classes + 1) bool from ``class_presence``.
        generator: a ``torch.Generator`` on presence's device, or None for the
            global RNG (use None inside ``torch.compile``).
        batch_pool: True (published): the pool is every class present in the
            WHOLE batch, so an image may draw classes it does not contain
            (they select nothing). False: the image's own classes.
        include_ignore: True (published): the ignore label counts as a class
            in the pool (last column). False: it is never drawn.

    Returns:
        (B, num_classes + 1) bool table of the drawn classes, each image drawn
        independently. Fixed shapes, no host sync: the k smallest of iid
        uniform keys over the pool are a uniform k-subset.
    """
    check_tensor("presence", presence, 2, "(B, num_classes + 1)", (torch.bool,))
    if presence.shape[1] < 2:
        raise ValueError(f"presence must have at least 2 columns (num_classes + 1), got shape {tuple(presence.shape)}")
    if generator is not None:
        if not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
        if generator.device.type != presence.device.type:
            raise ValueError(f"generator must be on presence's device ({presence.device}), got {generator.device}")
    pool = presence.any(0, keepdim=True).expand_as(presence) if batch_pool else presence
    if not include_ignore:
        not_ignore = torch.ones(presence.shape[1], dtype=torch.bool, device=presence.device)
        not_ignore[-1] = False
        pool = pool & not_ignore
    take = (pool.sum(1, keepdim=True) + 1) // 2  # ceil(n / 2) per image, (B, 1)
    if generator is None:  # no generator kwarg at all: torch.compile traces rand() with symbolic shapes then
        keys = torch.rand(presence.shape, device=presence.device)
    else:
        keys = torch.rand(presence.shape, generator=generator, device=presence.device)
    keys = keys.masked_fill(~pool, 2.0)  # outside the pool: after every pool class
    rank = keys.argsort(1).argsort(1)  # (B, K + 1) position of each class in key order
    return (rank < take) & pool


@torch.library.register_fake("fastuda::classmix")
def _(source_image, target_image, source_label, target_label, chosen, source_weight, target_weight, ignore_index):
    B, _, H, W = source_image.shape
    return (
        torch.empty_like(source_image, memory_format=torch.contiguous_format),
        source_label.new_empty((B, H, W)),
        source_label.new_empty((B, H, W), dtype=torch.float32),
        source_label.new_empty((B, H, W), dtype=torch.bool),
    )


def _classmix_setup_context(ctx, inputs, output):
    ctx.save_for_backward(output[3])
    ctx.set_materialize_grads(False)


def _classmix_backward(ctx, grad_image, grad_label, grad_weight, grad_mask):
    (mask,) = ctx.saved_tensors
    grad_source = grad_target = None
    if grad_image is not None:
        m = mask.unsqueeze(1)  # (B, 1, H, W)
        zero = grad_image.new_zeros(())
        if ctx.needs_input_grad[0]:
            grad_source = torch.where(m, grad_image, zero)
        if ctx.needs_input_grad[1]:
            grad_target = torch.where(m, zero, grad_image)
    return grad_source, grad_target, None, None, None, None, None, None


torch.library.register_autograd("fastuda::classmix", _classmix_backward, setup_context=_classmix_setup_context)


def _check_bhw_like(name: str, x: Tensor, shape: tuple, device: torch.device) -> None:
    if tuple(x.shape) != shape:
        raise ValueError(f"{name} must have shape (B, H, W) = {shape} to match source_image, got {tuple(x.shape)}")
    if x.device != device:
        raise ValueError(f"{name} must be on the same device as source_image ({device}), got {x.device}")


def classmix(
    source_image: Tensor,
    target_image: Tensor,
    source_label: Tensor,
    target_label: Tensor,
    chosen: Tensor,
    source_weight: Tensor | None = None,
    target_weight: Tensor | None = None,
    ignore_index: int = 255,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Mixes source pixels of the chosen classes into the target batch (ClassMix).

    Args:
        source_image, target_image: (B, C, H, W) float16 / bfloat16 / float32 /
            float64, same dtype; any channel count.
        source_label: (B, H, W) int64 ground truth of the source, in
            [0, num_classes) or ``ignore_index``.
        target_label: (B, H, W) int64, the target's pseudo-labels.
        chosen: (B, num_classes + 1) bool from ``sample_mix_classes``; the last
            column is the ignore label.
        source_weight, target_weight: (B, H, W) float32 pixel weights, None for
            ones (the published mix uses ones for the source and the pseudo
            weight for the target).
        ignore_index: the ignore label (255).

    Returns:
        image (B, C, H, W) in the input dtype, label (B, H, W) int64,
        weight (B, H, W) float32 and mask (B, H, W) bool, where
        ``mask[b, p] = chosen[b, column of source_label[b, p]]`` and each output
        is the source where the mask is set, the target elsewhere. Gradients
        flow to the two images.
    """
    check_tensor("source_image", source_image, 4, "(B, C, H, W)", FLOAT_DTYPES)
    check_tensor("target_image", target_image, 4, "(B, C, H, W)", FLOAT_DTYPES)
    if target_image.shape != source_image.shape:
        raise ValueError(
            f"target_image must have the shape of source_image {tuple(source_image.shape)}, got {tuple(target_image.shape)}"
        )
    if target_image.dtype != source_image.dtype:
        raise TypeError(f"target_image must have the dtype of source_image ({source_image.dtype}), got {target_image.dtype}")
    B, _, H, W = source_image.shape
    device = source_image.device
    if target_image.device != device:
        raise ValueError(f"target_image must be on the same device as source_image ({device}), got {target_image.device}")
    for name, label in (("source_label", source_label), ("target_label", target_label)):
        check_tensor(name, label, 3, "(B, H, W)", (torch.int64,))
        _check_bhw_like(name, label, (B, H, W), device)
    for name, weight in (("source_weight", source_weight), ("target_weight", target_weight)):
        if weight is not None:
            check_tensor(name, weight, 3, "(B, H, W)", (torch.float32,))
            _check_bhw_like(name, weight, (B, H, W), device)
    check_tensor("chosen", chosen, 2, "(B, num_classes + 1)", (torch.bool,))
    if chosen.shape[0] != B or chosen.shape[1] < 2:
        raise ValueError(f"chosen must have shape (B, num_classes + 1) with B = {B}, got {tuple(chosen.shape)}")
    if chosen.device != device:
        raise ValueError(f"chosen must be on the same device as source_image ({device}), got {chosen.device}")
    check_int("ignore_index", ignore_index)
    check_labels("source_label", source_label, chosen.shape[1] - 1, ignore_index)
    args = (source_image, target_image, source_label, target_label, chosen, source_weight, target_weight, ignore_index)
    if get_backend() == "reference":
        return reference.classmix(*args)
    return torch.ops.fastuda.classmix(*args)
