"""The published pipelines: keep-ratio resize, RandomCrop with cat_max_ratio, flip,
pad, normalisation, HRDA's valid pseudo-label mask, presets and worker seeding."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from _published_data import mmseg_crop_bbox

from fastuda.data import IMAGENET_MEAN, IMAGENET_STD, Pipeline, gta5, keep_ratio_size, make_loader, preset_pipeline
from fastuda.data._fake import write_fake_gta
from fastuda.data.transforms import (
    HRDA_PSEUDO_MARGINS,
    normalize,
    random_crop_box,
    resize_image,
    resize_label,
    valid_pseudo_mask,
)


def _denormalize(image):
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    return (image * std + mean).round()


@pytest.mark.parametrize(
    "size,scale,expected",
    [
        ((1914, 1052), (1280, 720), (1280, 704)),  # GTA5, DAFormer: not 720
        ((1914, 1052), (2560, 1440), (2560, 1407)),  # GTA5, HRDA
        ((1280, 760), (1280, 760), (1280, 760)),  # Synthia, DAFormer: unchanged
        ((1280, 760), (2560, 1520), (2560, 1520)),  # Synthia, HRDA
        ((2048, 1024), (1024, 512), (1024, 512)),  # Cityscapes, DAFormer
        ((2048, 1024), (2048, 1024), (2048, 1024)),  # Cityscapes, HRDA
        ((1024, 2048), (1024, 512), (512, 1024)),  # portrait: edges are bounded by long/short, not by W/H
        ((1000, 1000), (1280, 720), (720, 720)),  # square: the short bound wins
    ],
)
def test_keep_ratio_size_is_mmcv_rescale_size(size, scale, expected):
    assert keep_ratio_size(*size, scale) == expected


def test_published_sizes_through_the_pipeline():
    gen = torch.Generator().manual_seed(0)
    image = torch.randint(0, 256, (3, 1052, 1914), dtype=torch.uint8, generator=gen)
    label = torch.randint(0, 19, (1052, 1914), dtype=torch.uint8, generator=gen)
    resized = Pipeline(scale=(1280, 720))(image, label, gen)
    assert resized["image"].shape == (3, 704, 1280) and resized["label"].shape == (704, 1280)
    out = preset_pipeline("daformer", "gta")(image, label, gen)
    assert out["image"].shape == (3, 512, 512) and out["label"].shape == (512, 512)
    assert out["image"].dtype == torch.float32 and out["label"].dtype == torch.int64 and "valid_mask" not in out


def test_resize_image_is_bilinear_without_antialias():
    gen = torch.Generator().manual_seed(1)
    image = torch.randint(0, 256, (53, 97, 3), dtype=torch.uint8, generator=gen).permute(2, 0, 1)  # as decoded
    for size in [(35, 64), (120, 211)]:
        want = F.interpolate(image[None].float(), size=size, mode="bilinear", align_corners=False)[0]
        got = resize_image(image, size)
        assert got.dtype == torch.uint8 and got.shape == (3, *size)
        assert (got.float() - want).abs().max() <= 1.0  # uint8 fixed-point weights vs float
    assert resize_image(image, (53, 97)) is image


@pytest.mark.parametrize("src,dst", [((1052, 1914), (704, 1280)), ((1052, 1914), (1407, 2560)), ((37, 64), (100, 23))])
def test_resize_label_is_cv2_nearest(src, dst):
    """cv2.INTER_NEAREST (what mmcv uses): source index floor(i * in / out), in double."""
    label = torch.randint(0, 255, src, dtype=torch.uint8)
    rows = np.minimum(np.floor(np.arange(dst[0]) * (src[0] / dst[0])).astype(int), src[0] - 1)
    cols = np.minimum(np.floor(np.arange(dst[1]) * (src[1] / dst[1])).astype(int), src[1] - 1)
    np.testing.assert_array_equal(resize_label(label, dst).numpy(), label.numpy()[rows][:, cols])


@pytest.mark.parametrize("size", [(1024, 2048), (512, 1024), (1407, 2560), (37, 61)])
def test_valid_pseudo_mask_is_the_resized_full_resolution_mask(size):
    full = torch.ones(1024, 2048, dtype=torch.uint8)  # HRDA cityscapes.py: built at 1024 x 2048
    top, bottom, left, right = HRDA_PSEUDO_MARGINS
    full[:top], full[-bottom:], full[:, :left], full[:, -right:] = 0, 0, 0, 0
    torch.testing.assert_close(valid_pseudo_mask(size, HRDA_PSEUDO_MARGINS), resize_label(full, size).bool())
    if size == (1024, 2048):
        mask = valid_pseudo_mask(size, HRDA_PSEUDO_MARGINS)
        assert mask[30:784, 30:2018].all() and not mask[:30].any() and not mask[784:].any()
        assert not mask[:, :30].any() and not mask[:, 2018:].any()


def test_random_crop_matches_mmseg():
    rng = np.random.default_rng(0)
    for trial in range(40):
        label = np.full((60, 90), rng.integers(0, 19), dtype=np.uint8)  # one dominant class ...
        for _ in range(rng.integers(0, 4)):  # ... and a few blocks of others, some ignored
            y, x = rng.integers(0, 60), rng.integers(0, 90)
            label[y : y + rng.integers(3, 30), x : x + rng.integers(3, 40)] = rng.choice([1, 5, 13, 255])
        gen = torch.Generator().manual_seed(trial)
        got = random_crop_box(60, 90, (32, 32), gen, torch.from_numpy(label), 0.75)
        gen = torch.Generator().manual_seed(trial)
        draw = lambda high: int(torch.randint(0, high, (), generator=gen))  # noqa: E731
        y1, _, x1, _ = mmseg_crop_bbox(label, (32, 32), 0.75, draw)
        assert got == (y1, x1), trial


def test_random_crop_gives_up_after_ten_checks():
    label = torch.zeros(40, 40, dtype=torch.uint8)  # one class: no crop can pass
    gen = torch.Generator().manual_seed(3)
    draws = [int(torch.randint(0, 9, (), generator=gen)) for _ in range(22)]
    gen = torch.Generator().manual_seed(3)
    assert random_crop_box(40, 40, (32, 32), gen, label, 0.75) == (draws[20], draws[21])  # the 11th box, unchecked
    # crops with only ignored pixels besides one class also fail; cat_max_ratio 1 never checks
    gen = torch.Generator().manual_seed(3)
    assert random_crop_box(40, 40, (32, 32), gen, label, 1.0) == (draws[0], draws[1])


def test_crop_flip_pad_keep_image_label_and_mask_aligned():
    """Image channels encode the label and the mask, so any misalignment shows."""
    full_mask = valid_pseudo_mask((1024, 2048), HRDA_PSEUDO_MARGINS)
    label = torch.randint(0, 19, (1024, 2048), dtype=torch.uint8)
    label[:, :700] = 255
    image = torch.stack([label * 10, full_mask.to(torch.uint8) * 200, torch.zeros_like(label)])
    for flip_prob in (0.0, 1.0):
        pipeline = Pipeline(
            scale=(2048, 1024), crop_size=(1024, 1024), flip_prob=flip_prob, pseudo_margins=HRDA_PSEUDO_MARGINS
        )
        for seed in range(3):
            out = pipeline(image, label, torch.Generator().manual_seed(seed))
            pixels = _denormalize(out["image"])
            torch.testing.assert_close(pixels[0], (out["label"] * 10 % 256).float())
            torch.testing.assert_close(pixels[1], out["valid_mask"].float() * 200)
    # padding: a small image in a larger crop gets 0 (the mean colour), 255 and "not valid"
    small = Pipeline(crop_size=(40, 50), pseudo_margins=(0, 0, 0, 0))
    out = small(image[:, :30, 700:720], label[:30, 700:720], torch.Generator().manual_seed(0))
    assert (
        out["image"].shape == (3, 40, 50) and (out["image"][:, 30:] == 0).all() and (out["image"][:, :, 20:] == 0).all()
    )
    assert (out["label"][30:] == 255).all() and (out["label"][:, 20:] == 255).all()
    assert out["valid_mask"][:30, :20].all() and not out["valid_mask"][30:].any()


def test_flip_probability():
    image = torch.arange(12, dtype=torch.uint8).view(1, 3, 4).expand(3, 3, 4)
    label = torch.arange(12, dtype=torch.uint8).view(3, 4)
    always = Pipeline(flip_prob=1.0)(image, label, torch.Generator())
    assert always["label"].tolist() == label.flip(-1).tolist()
    never = Pipeline(flip_prob=0.0)(image, label, torch.Generator())
    assert never["label"].tolist() == label.tolist()
    gen = torch.Generator().manual_seed(0)
    half = Pipeline(flip_prob=0.5)
    flipped = sum(half(image, label, gen)["label"][0, 0].item() == 3 for _ in range(400))
    assert 160 < flipped < 240


def test_normalize_is_imagenet_rgb():
    image = torch.tensor([[[0, 255]], [[128, 64]], [[10, 200]]], dtype=torch.uint8)  # (3, 1, 2)
    want = (image.double() - torch.tensor(IMAGENET_MEAN, dtype=torch.float64).view(3, 1, 1)) / torch.tensor(
        IMAGENET_STD, dtype=torch.float64
    ).view(3, 1, 1)
    torch.testing.assert_close(normalize(image), want.float())
    assert IMAGENET_MEAN == (123.675, 116.28, 103.53) and IMAGENET_STD == (58.395, 57.12, 57.375)


def test_presets():
    daformer = {d: preset_pipeline("daformer", d) for d in ("gta", "synthia", "cityscapes")}
    assert [p.scale for p in daformer.values()] == [(1280, 720), (1280, 760), (1024, 512)]
    assert all(p.crop_size == (512, 512) and p.cat_max_ratio == 0.75 and p.flip_prob == 0.5 for p in daformer.values())
    assert all(p.pseudo_margins is None for p in daformer.values())
    hrda = {d: preset_pipeline("hrda", d) for d in ("gta", "synthia", "cityscapes")}
    assert [p.scale for p in hrda.values()] == [(2560, 1440), (2560, 1520), (2048, 1024)]
    assert all(p.crop_size == (1024, 1024) and p.flip_prob == 0.5 for p in hrda.values())
    assert hrda["gta"].cat_max_ratio == hrda["synthia"].cat_max_ratio == 0.75
    assert hrda["cityscapes"].cat_max_ratio == 1.0 and hrda["cityscapes"].pseudo_margins == (30, 240, 30, 30)
    assert preset_pipeline("mic", "cityscapes") == hrda["cityscapes"]
    assert preset_pipeline("daformer", "gta5") == daformer["gta"]
    test = preset_pipeline("hrda", "cityscapes", train=False)
    assert test == Pipeline(scale=(2048, 1024), resize_label=False)
    with pytest.raises(ValueError, match="recipe must be one of"):
        preset_pipeline("segformer", "gta")
    with pytest.raises(ValueError, match="cat_max_ratio must be in"):
        Pipeline(cat_max_ratio=0.0)
    with pytest.raises(ValueError, match="a crop needs the label resized"):
        Pipeline(crop_size=(512, 512), resize_label=False)


def test_test_pipeline_keeps_the_label_at_full_resolution():
    image = torch.randint(0, 256, (3, 1024, 2048), dtype=torch.uint8)
    label = torch.randint(0, 19, (1024, 2048), dtype=torch.uint8)
    out = preset_pipeline("daformer", "cityscapes", train=False)(image, label, torch.Generator())
    assert out["image"].shape == (3, 512, 1024) and out["label"].shape == (1024, 2048)
    torch.testing.assert_close(out["label"], label.long())


def test_pipeline_is_a_function_of_the_generator():
    image = torch.randint(0, 256, (3, 100, 150), dtype=torch.uint8)
    label = torch.randint(0, 5, (100, 150), dtype=torch.uint8)
    pipeline = Pipeline(scale=(120, 80), crop_size=(48, 48), cat_max_ratio=0.75, flip_prob=0.5)
    a = pipeline(image, label, torch.Generator().manual_seed(5))
    b = pipeline(image, label, torch.Generator().manual_seed(5))
    torch.testing.assert_close(a, b)
    others = [pipeline(image, label, torch.Generator().manual_seed(s))["image"] for s in range(6, 10)]
    assert any(not torch.equal(a["image"], o) for o in others)


def test_workers_draw_distinct_reproducible_crops(tmp_path):
    root = write_fake_gta(tmp_path / "gta", count=1, size=(120, 90))
    dataset = gta5(root, pipeline=Pipeline(crop_size=(32, 32), flip_prob=0.5))
    dataset.samples = dataset.samples * 8  # one file, eight draws
    dataset[0]  # a generator made in this process must not leak into the workers

    def crops(seed):
        loader = make_loader(dataset, batch_size=1, workers=2, shuffle=False, seed=seed, pin_memory=False)
        return [batch["image"][0] for batch in loader]

    first = crops(0)
    worker0, worker1 = first[0::2], first[1::2]  # batches alternate between the two workers
    assert not any(torch.equal(a, b) for a, b in zip(worker0, worker1))
    torch.testing.assert_close(crops(0), first)
    assert not all(torch.equal(a, b) for a, b in zip(crops(1), first))


def _draw_loader(dataset, sampler, workers):
    return torch.utils.data.DataLoader(dataset, batch_size=2, sampler=sampler, num_workers=workers)


def _assert_same(a: dict, b: dict):
    """Bit for bit: tensors equal, names and indices equal."""
    assert a.keys() == b.keys()
    for key in a:
        same = torch.equal(a[key], b[key]) if isinstance(a[key], torch.Tensor) else a[key] == b[key]
        assert same, key


def test_draws_are_a_function_of_seed_and_draw_index(tmp_path):
    """What the training loaders hand a file dataset: Draw(file, key=k) from IterationSampler.
    Crop, flip and cat_max_ratio re-crops follow (seed, k): the same with 0 or 2 workers and
    from a resumed sampler; other draws of the same file and other seeds crop elsewhere."""
    import itertools
    import pickle

    from fastuda.data.sampler import Draw, IterationSampler

    root = write_fake_gta(tmp_path / "gta", count=3, size=(120, 90))
    pipeline = Pipeline(crop_size=(32, 32), cat_max_ratio=0.75, flip_prob=0.5)
    dataset = gta5(root, pipeline=pipeline, seed=4)
    draw = pickle.loads(pickle.dumps(Draw(2, key=17)))  # as the sampler's indices travel to a worker
    assert int(draw) == 2 and draw.key == 17
    _assert_same(dataset[draw], dataset[Draw(2, 17)])
    same_file = [dataset[Draw(2, k)]["image"] for k in range(6)]
    assert len({tuple(x.flatten()[:64].tolist()) for x in same_file}) > 3
    assert not torch.equal(gta5(root, pipeline=pipeline, seed=5)[draw]["image"], dataset[draw]["image"])

    def batches(start, workers, count):
        loader = _draw_loader(dataset, IterationSampler(len(dataset), 0, start), workers)
        return list(itertools.islice(iter(loader), count))

    straight = batches(0, 0, 5)  # 10 draws of 3 files: four epochs
    assert [int(i) for b in straight for i in b["index"]] == [int(d) for d in
                                                            itertools.islice(IterationSampler(3, 0), 10)]  # fmt: skip
    for got, want in zip(batches(0, 2, 5), straight, strict=True):
        _assert_same(got, want)
    for got, want in zip(batches(6, 2, 2), straight[3:], strict=True):  # resumed at iteration 3 (draw 6)
        _assert_same(got, want)


def test_rare_class_sampling_draw_k_is_a_function_of_k(tmp_path):
    """RCS's class, file and every re-crop of draw k come from one generator seeded by (seed, k)."""
    from fastuda.uda.rcs import RareClassSampling

    root = write_fake_gta(tmp_path / "gta", count=3, size=(120, 90))
    dataset = gta5(root, pipeline=Pipeline(crop_size=(32, 32), cat_max_ratio=0.75, flip_prob=0.5))
    rcs = RareClassSampling(dataset, 19, min_pixels=0, min_crop_ratio=2.0, seed=3)
    first = [rcs[k] for k in range(4)]
    for k in (2, 0, 3, 1):
        _assert_same(rcs[k], first[k])
    assert not torch.equal(first[0]["image"], first[1]["image"])
