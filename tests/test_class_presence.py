"""fastuda.ops.class_presence (C++ CPU kernel, CUDA kernel) vs the published per-image
formulation, registration, torch.compile and validation."""

import pytest
import torch

import fastuda.ops as ops
from fastuda.ops import reference

from _util import make_target


def published_presence(label, num_classes, ignore_index=255):
    """Per image, torch.unique of the labels as DAFormer's get_class_masks sees them
    (mmseg/models/utils/dacs_transforms.py), the ignore label mapped to the last column."""
    out = torch.zeros(label.shape[0], num_classes + 1, dtype=torch.bool)
    for b in range(label.shape[0]):
        for c in torch.unique(label[b]).tolist():
            out[b, num_classes if c == ignore_index else c] = True
    return out


@pytest.mark.parametrize("shape, num_classes", [((3, 37, 53), 19), ((2, 1, 97), 7), ((1, 13, 1), 19), ((4, 64, 64), 150)])
def test_cpu_kernel_matches_published(shape, num_classes):
    # Few classes per image so that absent classes occur too.
    label = make_target(shape, min(num_classes, 5), ignore_frac=0.05) * (num_classes // 5 or 1)
    label = torch.where(label >= 255, 255, label)
    got = ops.class_presence(label, num_classes)
    torch.testing.assert_close(got, published_presence(label, num_classes), rtol=0, atol=0)
    torch.testing.assert_close(reference.class_presence(label, num_classes, 255), got, rtol=0, atol=0)


def test_non_contiguous_and_custom_ignore():
    label = make_target((2, 20, 30), 6, ignore_index=-1).transpose(1, 2)
    got = ops.class_presence(label, 6, ignore_index=-1)
    torch.testing.assert_close(got, published_presence(label, 6, ignore_index=-1), rtol=0, atol=0)


def test_empty_images():
    assert ops.class_presence(torch.zeros(2, 0, 5, dtype=torch.int64), 4).eq(False).all()


def test_cpu_kernel_raises_on_out_of_range_even_without_value_checks():
    label = torch.zeros(2, 5, 5, dtype=torch.int64)
    label[1, 2, 2] = 7
    ops.set_value_checks("off")
    with pytest.raises(ValueError, match=r"label must hold class indices in \[0, 5\).*found 7"):
        ops.class_presence(label, 5)


def test_opcheck_and_compile():
    label = make_target((2, 17, 23), 19)
    torch.library.opcheck(torch.ops.fastuda.class_presence.default, (label, 19, 255))
    compiled = torch.compile(lambda x: ops.class_presence(x, 19), fullgraph=True, dynamic=True)
    for shape in [(2, 17, 23), (3, 9, 31)]:
        label = make_target(shape, 19)
        torch.testing.assert_close(compiled(label), published_presence(label, 19), rtol=0, atol=0)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(label=torch.zeros(5, 5, dtype=torch.int64)), ValueError, r"label must have shape \(B, H, W\)"),
        (dict(label=torch.zeros(1, 5, 5, dtype=torch.uint8)), TypeError, "label must have dtype"),
        (dict(num_classes=0), ValueError, r"num_classes must be in \[1, inf\]"),
        (dict(label=torch.full((1, 5, 5), 19)), ValueError, "found \\[19\\]"),
    ],
)
def test_bad_inputs(kwargs, error, match):
    args = dict(label=torch.zeros(1, 5, 5, dtype=torch.int64), num_classes=19)
    args.update(kwargs)
    with pytest.raises(error, match=match):
        ops.class_presence(**args)


@pytest.mark.cuda
@pytest.mark.parametrize("shape", [(2, 512, 512), (2, 1024, 1024), (3, 37, 53)])
def test_cuda_matches_cpu_bit_exact(shape):
    label = make_target(shape, 19, ignore_frac=0.01)
    label[0] = torch.where(label[0] == 3, 4, label[0])  # class 3 absent in image 0
    want = ops.class_presence(label, 19)
    got = ops.class_presence(label.cuda(), 19)
    torch.testing.assert_close(got.cpu(), want, rtol=0, atol=0)
    assert not want[0, 3]
