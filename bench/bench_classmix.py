"""ClassMix: the class table, the draw and the mix of image, label and weight.

Providers: ``fastuda`` (class_presence + sample_mix_classes + classmix, the C++ /
CUDA kernels), ``reference`` / ``reference+compile`` (fastuda.ops.reference), and
``published`` (DAFormer's per-image loop: torch.unique over the batch and
np.random.choice, a host sync each image, then broadcast mixing; the mixing is the
tests' transcription).
"""

import numpy as np
import pytest
import torch

import fastuda.ops
from fastuda.ops import reference
from conftest import CUDA, DEVICE, PROVIDERS  # first: it puts tests/ on sys.path
from test_classmix import published_classmix  # tests/test_classmix.py: the published per-image loop

SHAPES = [(2, 3, 512, 512), (2, 3, 1024, 1024)] if CUDA else [(2, 3, 128, 128), (2, 3, 256, 256)]
NUM_CLASSES = 19


def published_loop(src_img, tgt_img, src_lbl, pseudo_lbl, pseudo_w):
    classes_per_image = []
    for _ in range(src_lbl.shape[0]):
        classes = torch.unique(src_lbl)  # the whole batch, 255 included (as published)
        n = classes.shape[0]
        choice = np.random.choice(n, int((n + n % 2) / 2), replace=False)
        classes_per_image.append(classes[torch.tensor(choice).long()].tolist())
    return published_classmix(src_img, tgt_img, src_lbl, pseudo_lbl, pseudo_w, classes_per_image)


def _reference_mix(src_img, tgt_img, src_lbl, pseudo_lbl, pseudo_w):
    chosen = fastuda.ops.sample_mix_classes(reference.class_presence(src_lbl, NUM_CLASSES, 255))
    return reference.classmix(src_img, tgt_img, src_lbl, pseudo_lbl, chosen, None, pseudo_w, 255)


def _fastuda_mix(src_img, tgt_img, src_lbl, pseudo_lbl, pseudo_w):
    chosen = fastuda.ops.sample_mix_classes(fastuda.ops.class_presence(src_lbl, NUM_CLASSES))
    return fastuda.ops.classmix(src_img, tgt_img, src_lbl, pseudo_lbl, chosen, None, pseudo_w)


def setup(shape, provider):
    """Returns (fn, bytes moved at least once)."""
    B, C, H, W = shape
    src_img = torch.randn(shape, device=DEVICE)
    tgt_img = torch.randn(shape, device=DEVICE)
    src_lbl = torch.randint(0, NUM_CLASSES, (B, H, W), device=DEVICE)
    src_lbl[:, :16] = 255
    pseudo_lbl = torch.randint(0, NUM_CLASSES, (B, H, W), device=DEVICE)
    pseudo_w = torch.rand(B, H, W, device=DEVICE)
    args = (src_img, tgt_img, src_lbl, pseudo_lbl, pseudo_w)
    fn = {
        "fastuda": _fastuda_mix,
        "reference": _reference_mix,
        "reference+compile": torch.compile(_reference_mix, dynamic=False),
        "published": published_loop,
    }[provider]
    # image: one read + one write; labels: two reads (presence + mix) of the
    # source, one of the target, one write; weight: read + write; mask: write.
    nbytes = B * H * W * (2 * C * src_img.element_size() + 4 * 8 + 2 * 4 + 1)
    return (lambda: fn(*args)), nbytes


@pytest.mark.parametrize("provider", [*PROVIDERS, "published"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_classmix(benchmark, measure, shape, provider):
    benchmark.group = f"classmix {'x'.join(map(str, shape))}"
    fn, nbytes = setup(shape, provider)
    measure(fn, nbytes, provider=provider)
