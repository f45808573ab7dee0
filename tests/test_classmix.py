"""fastuda.ops.sample_mix_classes and fastuda.ops.classmix: the C++ CPU kernel against the
published per-image ClassMix, sampling statistics, autograd, opcheck, torch.compile, validation."""

import math

import pytest
import torch

import fastuda.ops as ops
from fastuda.ops import reference

from _util import make_target

DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.float64]


def published_classmix(src_img, tgt_img, src_lbl, tgt_lbl, tgt_weight, classes_per_image):
    """DAFormer's mmseg/models/utils/dacs_transforms.py (generate_class_mask + one_mix) and the
    mixing loop of dacs.py, for given class choices (the draw itself is tested separately)."""
    images, labels, weights, masks = [], [], [], []
    for b, classes in enumerate(classes_per_image):
        classes = torch.tensor(classes, dtype=torch.int64)
        label, classes = torch.broadcast_tensors(src_lbl[b], classes.unsqueeze(1).unsqueeze(2))
        mask = label.eq(classes).sum(0, keepdims=True)  # (1, H, W)
        data = torch.stack((src_img[b], tgt_img[b]))
        stacked_mask, _ = torch.broadcast_tensors(mask, data[0])
        images.append(stacked_mask * data[0] + (1 - stacked_mask) * data[1])
        lbl = torch.stack((src_lbl[b], tgt_lbl[b]))
        labels.append((mask[0] * lbl[0] + (1 - mask[0]) * lbl[1]))
        w = torch.stack((torch.ones_like(tgt_weight[b]), tgt_weight[b]))
        weights.append(mask[0] * w[0] + (1 - mask[0]) * w[1])
        masks.append(mask[0].bool())
    return torch.stack(images), torch.stack(labels), torch.stack(weights), torch.stack(masks)


def make_mix_case(shape, dtype=torch.float32, num_classes=19, device="cpu"):
    B, C, H, W = shape
    src = torch.rand(shape, device=device).to(dtype)
    tgt = torch.rand(shape, device=device).to(dtype)
    src_lbl = make_target((B, H, W), num_classes, ignore_frac=0.1, device=device)
    tgt_lbl = torch.randint(0, num_classes, (B, H, W), device=device)
    tgt_w = torch.rand(B, H, W, device=device)
    chosen = torch.rand(B, num_classes + 1, device=device) < 0.5
    return src, tgt, src_lbl, tgt_lbl, tgt_w, chosen


def classes_of(chosen, ignore_index=255):
    num_classes = chosen.shape[1] - 1
    return [[ignore_index if c == num_classes else c for c in row.nonzero().flatten().tolist()] for row in chosen]


# ----------------------------------------------------------------------------- classmix


@pytest.mark.parametrize("shape", [(2, 3, 37, 53), (1, 1, 13, 1), (3, 5, 8, 17), (2, 3, 64, 64)])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_cpu_kernel_matches_published(shape, dtype):
    src, tgt, src_lbl, tgt_lbl, tgt_w, chosen = make_mix_case(shape, dtype)
    image, label, weight, mask = ops.classmix(src, tgt, src_lbl, tgt_lbl, chosen, target_weight=tgt_w)
    want_img, want_lbl, want_w, want_mask = published_classmix(src, tgt, src_lbl, tgt_lbl, tgt_w, classes_of(chosen))
    assert image.dtype == dtype and label.dtype == torch.int64 and weight.dtype == torch.float32
    torch.testing.assert_close(image, want_img, rtol=0, atol=0)
    torch.testing.assert_close(label, want_lbl, rtol=0, atol=0)
    torch.testing.assert_close(weight, want_w, rtol=0, atol=0)
    torch.testing.assert_close(mask, want_mask, rtol=0, atol=0)
    assert 0 < mask.float().mean() < 1


def test_weights_default_to_ones_and_reference_agrees():
    src, tgt, src_lbl, tgt_lbl, tgt_w, chosen = make_mix_case((2, 3, 9, 11))
    src_w = torch.rand(2, 9, 11)
    for sw, tw in [(None, None), (src_w, None), (None, tgt_w), (src_w, tgt_w)]:
        got = ops.classmix(src, tgt, src_lbl, tgt_lbl, chosen, sw, tw)
        want = reference.classmix(src, tgt, src_lbl, tgt_lbl, chosen, sw, tw, 255)
        for g, w in zip(got, want):
            torch.testing.assert_close(g, w, rtol=0, atol=0)
        m = got[3]
        expect = torch.where(m, 1.0 if sw is None else sw, 1.0 if tw is None else tw)
        torch.testing.assert_close(got[2], expect, rtol=0, atol=0)


def test_non_contiguous_inputs():
    src, tgt, src_lbl, tgt_lbl, tgt_w, chosen = make_mix_case((2, 3, 12, 10))
    args = (src.transpose(2, 3), tgt.transpose(2, 3), src_lbl.transpose(1, 2), tgt_lbl.transpose(1, 2), chosen)
    got = ops.classmix(*args, target_weight=tgt_w.transpose(1, 2))
    want = reference.classmix(*args, None, tgt_w.transpose(1, 2), 255)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=0, atol=0)


def test_cpu_kernel_raises_on_out_of_range_even_without_value_checks():
    src, tgt, src_lbl, tgt_lbl, tgt_w, chosen = make_mix_case((2, 3, 5, 5))
    src_lbl[1, 3, 3] = 40
    ops.set_value_checks("off")
    with pytest.raises(ValueError, match=r"source_label must hold class indices in \[0, 19\).*found 40"):
        ops.classmix(src, tgt, src_lbl, tgt_lbl, chosen)


def test_gradients_flow_to_both_images():
    src, tgt, src_lbl, tgt_lbl, tgt_w, chosen = make_mix_case((2, 3, 5, 7), torch.float64)
    src.requires_grad_()
    tgt.requires_grad_()
    fn = lambda s, t: ops.classmix(s, t, src_lbl, tgt_lbl, chosen, None, tgt_w)[0]  # noqa: E731
    assert torch.autograd.gradcheck(fn, (src, tgt))
    out = fn(src, tgt)
    g = torch.randn_like(out)
    got = torch.autograd.grad(out, (src, tgt), g)
    want = torch.autograd.grad(reference.classmix(src, tgt, src_lbl, tgt_lbl, chosen, None, tgt_w, 255)[0], (src, tgt), g)
    torch.testing.assert_close(got, want)


def test_empty_batch():
    src, tgt, src_lbl, tgt_lbl, tgt_w, chosen = make_mix_case((0, 3, 4, 4))
    image, label, weight, mask = ops.classmix(src, tgt, src_lbl, tgt_lbl, chosen)
    assert image.shape == (0, 3, 4, 4) and mask.shape == (0, 4, 4)


def test_opcheck():
    src, tgt, src_lbl, tgt_lbl, tgt_w, chosen = make_mix_case((2, 3, 7, 9))
    op = torch.ops.fastuda.classmix.default
    torch.library.opcheck(op, (src.requires_grad_(), tgt, src_lbl, tgt_lbl, chosen, None, tgt_w, 255))
    torch.library.opcheck(op, (src.detach().half(), tgt.half(), src_lbl, tgt_lbl, chosen, tgt_w, None, 255))
    torch.library.opcheck(op, (src.detach().transpose(2, 3), tgt.transpose(2, 3), src_lbl.transpose(1, 2),
                               tgt_lbl.transpose(1, 2), chosen, None, None, 255))  # fmt: skip


def test_compile_fullgraph_all_three_ops():
    def mix(src, tgt, src_lbl, pseudo_lbl, pseudo_w):
        presence = ops.class_presence(src_lbl, 19)
        chosen = ops.sample_mix_classes(presence)
        return ops.classmix(src, tgt, src_lbl, pseudo_lbl, chosen, None, pseudo_w), chosen

    compiled = torch.compile(mix, fullgraph=True, dynamic=True)
    for shape in [(2, 3, 16, 24), (3, 3, 9, 13)]:
        src, tgt, src_lbl, tgt_lbl, tgt_w, _ = make_mix_case(shape)
        (image, label, weight, mask), chosen = compiled(src, tgt, src_lbl, tgt_lbl, tgt_w)
        want = published_classmix(src, tgt, src_lbl, tgt_lbl, tgt_w, classes_of(chosen))
        torch.testing.assert_close((image, label, weight, mask), want, rtol=0, atol=0)
        present = ops.class_presence(src_lbl, 19).any(0)
        n = int(present.sum())
        assert (chosen.sum(1) == math.ceil(n / 2)).all() and not (chosen & ~present).any()


@pytest.mark.parametrize(
    "change, error, match",
    [
        (dict(source_image=torch.rand(3, 8, 8)), ValueError, r"source_image must have shape \(B, C, H, W\)"),
        (dict(source_image=torch.rand(2, 3, 8, 8).half()), TypeError, "target_image must have the dtype of source_image"),
        (dict(target_image=torch.rand(2, 3, 8, 9)), ValueError, "target_image must have the shape of source_image"),
        (dict(target_image=torch.randint(0, 3, (2, 3, 8, 8))), TypeError, "target_image must have dtype"),
        (dict(source_label=torch.zeros(2, 8, 8, dtype=torch.int32)), TypeError, "source_label must have dtype"),
        (dict(target_label=torch.zeros(2, 8, 7, dtype=torch.int64)), ValueError, r"target_label must have shape \(B, H, W\) = \(2, 8, 8\)"),
        (dict(target_weight=torch.rand(2, 8, 8).double()), TypeError, "target_weight must have dtype"),
        (dict(source_weight=torch.rand(1, 8, 8)), ValueError, "source_weight must have shape"),
        (dict(chosen=torch.ones(2, 20)), TypeError, "chosen must have dtype"),
        (dict(chosen=torch.ones(3, 20, dtype=torch.bool)), ValueError, r"chosen must have shape \(B, num_classes \+ 1\) with B = 2"),
        (dict(chosen=torch.ones(2, 1, dtype=torch.bool)), ValueError, "chosen must have shape"),
        (dict(chosen=torch.ones(2, 20, dtype=torch.bool, device="meta")), ValueError, "chosen must be on the same device"),
        (dict(source_label=torch.full((2, 8, 8), 19)), ValueError, r"source_label must hold class indices in \[0, 19\)"),
    ],
)
def test_bad_inputs(change, error, match):
    args = dict(
        source_image=torch.rand(2, 3, 8, 8),
        target_image=torch.rand(2, 3, 8, 8),
        source_label=torch.zeros(2, 8, 8, dtype=torch.int64),
        target_label=torch.zeros(2, 8, 8, dtype=torch.int64),
        chosen=torch.ones(2, 20, dtype=torch.bool),
    )
    args.update(change)
    with pytest.raises(error, match=match):
        ops.classmix(**args)


# ----------------------------------------------------------------------------- sample_mix_classes


def make_presence():
    presence = torch.zeros(3, 20, dtype=torch.bool)
    presence[0, [0, 1, 2, 19]] = True
    presence[1, [2, 5]] = True
    presence[2, [7]] = True
    return presence  # batch pool: {0, 1, 2, 5, 7, 19}: n = 6


@pytest.mark.parametrize("batch_pool", [True, False])
@pytest.mark.parametrize("include_ignore", [True, False])
def test_draws_half_the_pool_uniformly(batch_pool, include_ignore):
    presence = make_presence()
    pool = presence.any(0, keepdim=True).expand_as(presence) if batch_pool else presence.clone()
    if not include_ignore:
        pool = pool.clone()
        pool[:, -1] = False
    n = pool.sum(1)
    k = (n + 1) // 2
    gen = torch.Generator().manual_seed(0)
    draws = 4000
    counts = torch.zeros(presence.shape)
    for _ in range(draws):
        chosen = ops.sample_mix_classes(presence, gen, batch_pool, include_ignore)
        assert torch.equal(chosen.sum(1), k)
        assert not (chosen & ~pool).any()
        counts += chosen
    freq = counts / draws
    expected = (k / n).unsqueeze(1).expand_as(freq)
    # Each pool class is drawn with probability k / n (1/2 for even n); 4000 draws: sd <= 0.008.
    torch.testing.assert_close(freq[pool], expected[pool], rtol=0, atol=0.04)


def test_draws_are_deterministic_with_a_generator():
    presence = make_presence()
    a = ops.sample_mix_classes(presence, torch.Generator().manual_seed(7))
    b = ops.sample_mix_classes(presence, torch.Generator().manual_seed(7))
    assert torch.equal(a, b)
    gen = torch.Generator().manual_seed(7)
    draws = {tuple(ops.sample_mix_classes(presence, gen).flatten().tolist()) for _ in range(20)}
    assert len(draws) > 1


@pytest.mark.parametrize(
    "presence, generator, error, match",
    [
        (torch.ones(3, 20), None, TypeError, "presence must have dtype"),
        (torch.ones(20, dtype=torch.bool), None, ValueError, r"presence must have shape \(B, num_classes \+ 1\)"),
        (torch.ones(3, 1, dtype=torch.bool), None, ValueError, "at least 2 columns"),
        (torch.ones(3, 20, dtype=torch.bool), 123, TypeError, "generator must be a torch.Generator"),
        (torch.ones(3, 20, dtype=torch.bool, device="meta"), torch.Generator(), ValueError, "generator must be on"),
    ],
)
def test_sample_bad_inputs(presence, generator, error, match):
    with pytest.raises(error, match=match):
        ops.sample_mix_classes(presence, generator)


# ----------------------------------------------------------------------------- tier 3: CUDA


@pytest.mark.cuda
@pytest.mark.parametrize("shape", [(2, 3, 512, 512), (2, 3, 1024, 1024), (3, 5, 37, 53)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_cuda_matches_cpu_bit_exact(shape, dtype):
    src, tgt, src_lbl, tgt_lbl, tgt_w, chosen = make_mix_case(shape, dtype)
    want = ops.classmix(src, tgt, src_lbl, tgt_lbl, chosen, None, tgt_w)
    cuda = [t.cuda() for t in (src, tgt, src_lbl, tgt_lbl, chosen, tgt_w)]
    got = ops.classmix(*cuda[:5], None, cuda[5])
    for g, w in zip(got, want):
        torch.testing.assert_close(g.cpu(), w, rtol=0, atol=0)


@pytest.mark.cuda
def test_cuda_out_of_range_is_not_chosen_and_debug_raises():
    src, tgt, src_lbl, tgt_lbl, tgt_w, chosen = [t.cuda() for t in make_mix_case((2, 3, 16, 16))]
    src_lbl[0, 0, 0] = 99
    chosen[:] = True
    _, label, _, mask = ops.classmix(src, tgt, src_lbl, tgt_lbl, chosen)
    assert not mask[0, 0, 0] and label[0, 0, 0] == tgt_lbl[0, 0, 0]
    ops.set_value_checks("always")
    with pytest.raises(ValueError, match="source_label must hold class indices"):
        ops.classmix(src, tgt, src_lbl, tgt_lbl, chosen)


@pytest.mark.cuda
def test_cuda_compile_all_three_ops():
    src, tgt, src_lbl, tgt_lbl, tgt_w, _ = [t.cuda() for t in make_mix_case((2, 3, 64, 64), torch.bfloat16)]

    def mix(src, tgt, src_lbl, pseudo_lbl, pseudo_w):
        chosen = ops.sample_mix_classes(ops.class_presence(src_lbl, 19))
        return ops.classmix(src, tgt, src_lbl, pseudo_lbl, chosen, None, pseudo_w), chosen

    (image, label, weight, mask), chosen = torch.compile(mix, fullgraph=True)(src, tgt, src_lbl, tgt_lbl, tgt_w)
    want = reference.classmix(src, tgt, src_lbl, tgt_lbl, chosen, None, tgt_w, 255)
    torch.testing.assert_close((image, label, weight, mask), want, rtol=0, atol=0)
