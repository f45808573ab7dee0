"""The datasets of the adverse-weather and domain-generalisation benchmarks (ACDC, Dark
Zurich, Cityscapes as a source, BDD100K, Mapillary Vistas): their released layouts,
a one-line error naming the path for each broken tree, and proof against the published
code (lhoyer/HRDA, master and dg branches) of the Mapillary label mapping and of the
pipeline geometry (resize, crop, flip, pad, test scale), transcribed independently below.
"""

import json
import re

import numpy as np
import pytest
import torch
from _published_data import (
    CITYSCAPES_MAPPING,
    assert_converted_as_published,
    mmseg_crop_bbox,
    parse_mapping,
    published_convert_to_train_id,
    published_train_ids,
)
from PIL import Image

from fastuda.data import (
    PUBLISHED_PIPELINES,
    Pipeline,
    acdc,
    bdd100k,
    build_dataset,
    cityscapes,
    compute_class_stats,
    dark_zurich,
    labels,
    mapillary,
    preset_pipeline,
    published_pipeline,
)
from fastuda.data._fake import (
    write_fake_acdc,
    write_fake_bdd100k,
    write_fake_cityscapes,
    write_fake_dark_zurich,
    write_fake_mapillary,
)
from fastuda.data.check import check_files
from fastuda.data.convert import convert
from fastuda.data.stats import read_class_stats, samples_with_class

CONDITIONS = ("fog", "night", "rain", "snow")


def _cityscapes_train_ids(raw: np.ndarray) -> np.ndarray:
    """cityscapesscripts' labelId -> trainId (the ids ACDC and Dark Zurich labelIds hold)."""
    return published_train_ids(raw, parse_mapping(CITYSCAPES_MAPPING))


# ---------------------------------------------------------------- ACDC


@pytest.fixture(scope="module")
def trees(tmp_path_factory):
    root = tmp_path_factory.mktemp("benchmarks")
    return {
        "release": write_fake_acdc(root / "acdc_release", seed=1),
        "flat": write_fake_acdc(root / "acdc_flat", layout="flat", seed=2),
        "both": write_fake_acdc(root / "acdc_both", layout="both", seed=3),
        "labelids": write_fake_acdc(root / "acdc_labelids", train_ids=False, seed=4),
        "dark_zurich": write_fake_dark_zurich(root / "dark_zurich", seed=5),
        "bdd100k": write_fake_bdd100k(root / "bdd100k", count=3, seed=6),
        "mapillary": write_fake_mapillary(root / "mapillary", count=3, seed=7),
    }


@pytest.mark.parametrize("split,count,labelled", [("train", 8, True), ("val", 4, True), ("test", 4, False)])
def test_acdc_release_all_conditions(trees, split, count, labelled):
    ds = acdc(trees["release"], split)
    assert len(ds) == count and ds.name == "acdc" and len(ds.class_names) == 19
    names = [ds.relative(s.image) for s in ds.samples]
    assert {n.split("/")[1] for n in names} == set(CONDITIONS)  # rgb_anon/<cond>/<split>/<seq>/...
    assert all(re.fullmatch(rf"rgb_anon/\w+/{split}/(GOPR\d+)/\1_frame_\d{{6}}_rgb_anon\.png", n) for n in names)
    if not labelled:
        assert all(s.label is None for s in ds.samples) and "label" not in ds[0]
        return
    for sample, i in zip(ds.samples, range(len(ds))):
        assert sample.label.name.endswith("_gt_labelTrainIds.png")
        assert sample.raw_label.name.endswith("_gt_labelIds.png")
        raw = np.array(Image.open(sample.raw_label))
        np.testing.assert_array_equal(ds[i]["label"].numpy(), _cityscapes_train_ids(raw))


def test_acdc_reads_label_ids_when_there_are_no_train_ids(trees):
    ds = acdc(trees["labelids"], "val")
    assert all(s.label.name.endswith("_gt_labelIds.png") for s in ds.samples)
    raw = np.array(Image.open(ds.samples[0].label))
    np.testing.assert_array_equal(ds[0]["label"].numpy(), _cityscapes_train_ids(raw))


@pytest.mark.parametrize("condition", CONDITIONS)
def test_acdc_one_condition(trees, condition):
    ds = build_dataset(f"acdc_{condition}", trees["release"], "train")
    assert len(ds) == 2 and all(f"rgb_anon/{condition}/train/" in ds.relative(s.image) for s in ds.samples)
    two = acdc(trees["release"], "val", conditions=["snow", condition])
    assert len(two) == len({"snow", condition})


def test_build_dataset_options(trees):
    assert len(build_dataset("acdc", trees["release"], "val", conditions=["fog", "rain"])) == 2
    assert len(build_dataset("acdc_rain", trees["both"], "val", layout="release")) == 1
    assert len(build_dataset("dark_zurich", trees["dark_zurich"], time="twilight")) == 2
    with pytest.raises(TypeError, match=r"unexpected options for acdc_rain: \['conditions'\]; it takes \['layout'\]"):
        build_dataset("acdc_rain", trees["release"], conditions="fog")
    with pytest.raises(TypeError, match="unexpected options for bdd100k"):
        build_dataset("bdd100k", trees["bdd100k"], "val", time="night")


def test_acdc_flattened_layout_is_the_published_rsync(trees):
    """HRDA's README: rsync rgb_anon/*/<split>/*/* into rgb_anon/<split>/ (and gt likewise)."""
    flat = acdc(trees["flat"], "train")
    assert len(flat) == 8 and all(flat.relative(s.image).count("/") == 2 for s in flat.samples)
    assert all(s.label.name.endswith("_gt_labelTrainIds.png") for s in flat.samples)
    # release + copy: the release is read (it knows the conditions); same frames either way
    both_release = acdc(trees["both"], "val")
    both_flat = acdc(trees["both"], "val", layout="flat")
    assert sorted(s.image.name for s in both_release.samples) == sorted(s.image.name for s in both_flat.samples)
    by_name = {s.image.name: i for i, s in enumerate(both_flat.samples)}
    for i, sample in enumerate(both_release.samples):
        torch.testing.assert_close(both_release[i]["label"], both_flat[by_name[sample.image.name]]["label"])
    assert acdc(trees["both"], "val", "night", layout="release")[0]["label"].shape == (54, 96)


def test_acdc_errors_name_the_path(trees, tmp_path):
    import shutil

    root = tmp_path / "acdc"
    shutil.copytree(trees["release"], root)
    shutil.rmtree(root / "rgb_anon" / "snow")
    with pytest.raises(FileNotFoundError, match=f"{root / 'rgb_anon' / 'snow' / 'train'} is missing") as info:
        acdc(root, "train")
    assert "\n" not in str(info.value)
    assert len(acdc(root, "train", ["fog", "night"])) == 4  # the conditions that are there still load
    with pytest.raises(ValueError, match="flattened layout .*rgb_anon/train does not record conditions"):
        acdc(trees["flat"], "train", "night")
    shutil.rmtree(root / "gt" / "fog" / "val")
    with pytest.raises(FileNotFoundError, match=str(root / "gt" / "fog" / "val")):
        acdc(root, "val", "fog")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        acdc(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="conditions must be 'all' or some of"):
        acdc(root, conditions="haze")
    with pytest.raises(ValueError, match="split must be one of"):
        acdc(root, "train_ref")
    (root / "gt" / "night" / "train" / "GOPR0351" / "GOPR0351_frame_000001_gt_labelTrainIds.png").unlink()
    (root / "gt" / "night" / "train" / "GOPR0351" / "GOPR0351_frame_000001_gt_labelIds.png").unlink()
    with pytest.raises(ValueError, match="images without a label .*GOPR0351_frame_000001_rgb_anon.png"):
        acdc(root, "train", "night")


# ---------------------------------------------------------------- Dark Zurich


def test_dark_zurich_splits(trees):
    root = trees["dark_zurich"]
    train = dark_zurich(root)  # the published target: night only, unlabelled
    assert len(train) == 2 and all("rgb_anon/train/night/" in train.relative(s.image) for s in train.samples)
    assert all(s.label is None for s in train.samples) and train.name == "dark_zurich"
    assert len(dark_zurich(root, time="day")) == len(dark_zurich(root, time="twilight")) == 2
    val = build_dataset("dark_zurich", root, "val")
    assert len(val) == 2 and all(s.label.name.endswith("_gt_labelTrainIds.png") for s in val.samples)
    raw = np.array(Image.open(val.samples[1].raw_label))
    np.testing.assert_array_equal(val[1]["label"].numpy(), _cityscapes_train_ids(raw))
    test = dark_zurich(root, "test")
    assert len(test) == 1 and "label" not in test[0]
    with pytest.raises(ValueError, match="val time must be one of"):
        dark_zurich(root, "val", time="day")


def test_dark_zurich_without_night_names_the_folder(trees, tmp_path):
    import shutil

    root = tmp_path / "dz"
    shutil.copytree(trees["dark_zurich"], root)
    shutil.rmtree(root / "rgb_anon" / "train" / "night")
    with pytest.raises(FileNotFoundError, match=str(root / "rgb_anon" / "train" / "night")) as info:
        dark_zurich(root)
    assert "\n" not in str(info.value)
    shutil.rmtree(root / "gt")
    with pytest.raises(FileNotFoundError, match=str(root / "gt" / "val" / "night")):
        dark_zurich(root, "val")


# ---------------------------------------------------------------- Cityscapes as a labelled source


def test_cityscapes_source_with_rare_class_sampling(tmp_path):
    """Cityscapes as the labelled source (CS -> ACDC / Dark Zurich): the converter's statistics
    (train only, as published) index the train split, and RCS draws from them."""
    from fastuda.uda.rcs import RareClassSampling

    root = write_fake_cityscapes(tmp_path / "cs", {"train": 4, "val": 1}, seed=9)
    convert("cityscapes", root, workers=1, progress=False)
    stats = read_class_stats(root, "cityscapes")
    source = cityscapes(root, "train", Pipeline(scale=(128, 64), crop_size=(32, 32), cat_max_ratio=0.75, flip_prob=0.5))
    assert [s.file for s in stats] == [source.relative(s.train_label) for s in source.samples]
    assert stats == compute_class_stats(cityscapes(root, "train"), workers=0, progress=False)
    files = samples_with_class(stats, source, min_pixels=0)
    assert set(files) == {c for s in stats for c in s.counts}
    rcs = RareClassSampling(source, 19, min_pixels=0, seed=0, stats=stats)
    item = rcs[0]
    assert item["image"].shape == (3, 32, 32) and item["label"].shape == (32, 32)


# ---------------------------------------------------------------- BDD100K and Mapillary


def test_bdd100k_masks_are_train_ids(trees):
    ds = bdd100k(trees["bdd100k"])
    assert len(ds) == 3 and ds.samples[0].image.suffix == ".jpg"
    for i, sample in enumerate(ds.samples):
        np.testing.assert_array_equal(ds[i]["label"].numpy(), np.array(Image.open(sample.label)))
    check_files(ds, "bdd100k")


def test_bdd100k_wrong_shape_names_the_path(tmp_path):
    root = write_fake_bdd100k(tmp_path / "bdd")
    (root / "images" / "10k").rename(root / "images" / "100k")  # the 100K video frames instead
    with pytest.raises(FileNotFoundError, match=str(root / "images" / "10k" / "val")) as info:
        bdd100k(root)
    assert "\n" not in str(info.value)
    root = write_fake_bdd100k(tmp_path / "bdd_colormaps")
    (root / "labels" / "sem_seg" / "masks").rename(root / "labels" / "sem_seg" / "colormaps")
    with pytest.raises(FileNotFoundError, match=str(root / "labels" / "sem_seg" / "masks" / "val")):
        bdd100k(root)
    root = write_fake_bdd100k(tmp_path / "bdd_raw")
    mask = next((root / "labels" / "sem_seg" / "masks" / "val").iterdir())
    Image.fromarray(np.full((45, 80), 33, np.uint8)).save(mask)  # labelIds where train ids belong
    with pytest.raises(RuntimeError, match=f"{mask}: expected 8-bit train ids .* found values \\[33\\]"):
        build_dataset("bdd100k", root, "val")[[s.label for s in bdd100k(root).samples].index(mask)]


# HRDA tools/convert_datasets/mapillary.py, id_to_trainid, copied with its comments.
PUBLISHED_MAPILLARY = {
    13: 0,  # Road
    24: 0,  # Lane Marking - General
    41: 0,  # Manhole
    2: 1,  # Curb
    15: 1,  # Sidewalk
    17: 2,  # Building
    6: 3,  # Wall
    3: 4,  # Fence
    45: 5,  # Pole
    47: 5,  # Utility Pole
    48: 6,  # Traffic Light
    50: 7,  # Traffic Sign
    30: 8,  # Vegitation
    29: 9,  # Terrain
    27: 10,  # Sky
    19: 11,  # Person
    20: 12,  # Bicyclist
    21: 12,  # Motorcyclist
    22: 12,  # Other Rider
    55: 13,  # Car
    61: 14,  # Truck
    54: 15,  # Bus
    58: 16,  # On Rails
    57: 17,  # Motorcycle
    52: 18,  # Bicycle
}


def published_mapillary_convert_to_train_id(file: str):
    """HRDA tools/convert_datasets/mapillary.py ``convert_to_train_id``, transcribed (returns
    the label instead of saving it; PIL's ``np.asarray`` of the palette PNG, as published)."""
    label = np.asarray(Image.open(file))
    return published_convert_to_train_id(label, PUBLISHED_MAPILLARY, file.replace(".png", "_labelTrainIds.png"))


def test_mapillary_mapping_is_the_published_converter(trees):
    assert labels.MAPILLARY_ID_TO_TRAIN_ID == PUBLISHED_MAPILLARY
    root = trees["mapillary"]
    ds = mapillary(root)  # "val" = validation/
    assert len(ds) == 3 and ds.name == "mapillary"
    first = np.asarray(Image.open(ds.samples[0].label))
    assert set(np.unique(first)) == set(range(66))  # every v1.2 id occurs, mapped or not
    for i, sample in enumerate(ds.samples):
        assert Image.open(sample.label).mode == "P"
        want, _ = published_mapillary_convert_to_train_id(str(sample.label))
        np.testing.assert_array_equal(ds[i]["label"].numpy(), want)
    assert mapillary(root, "validation").samples == ds.samples


def test_convert_mapillary_matches_the_published_converter(tmp_path):
    root = write_fake_mapillary(tmp_path / "mapillary", count=3, seed=12)
    before = [mapillary(root)[i]["label"] for i in range(3)]
    report = convert("mapillary", root, workers=1, progress=False)
    assert report.converted == 3
    expected = []
    for path in sorted((root / "validation" / "labels").glob("*.png")):
        if path.name.endswith("_labelTrainIds.png"):
            continue
        want, published = published_mapillary_convert_to_train_id(str(path))
        written = Image.open(path.with_name(path.stem + "_labelTrainIds.png"))
        assert written.mode == "L"
        np.testing.assert_array_equal(np.array(written), want)
        # Known difference: the published loop sets sample_class_stats[v] = n for each raw id, so a
        # class merged from several ids (road: 13, 24, 41) keeps the count of the last id present.
        # fastuda counts the class's pixels in the written label (no published recipe reads these
        # statistics: Mapillary is evaluation only).
        counts = {c: int((want == c).sum()) for c in range(19) if (want == c).any()}
        merged = {v for v in PUBLISHED_MAPILLARY.values() if list(PUBLISHED_MAPILLARY.values()).count(v) > 1}
        assert {c: n for c, n in published.items() if c != "file" and c not in merged} == {
            c: n for c, n in counts.items() if c not in merged}
        assert all(published[c] <= counts[c] for c in merged if c in counts)
        expected.append({**counts, "file": str(path.relative_to(root)).replace(".png", "_labelTrainIds.png")})
    assert_converted_as_published(root, expected, mapillary(root), before)
    assert json.loads((root / "sample_class_stats.json").read_text())[0]["file"].startswith("validation/labels/")


def test_mapillary_v2_download_reads_the_v1_2_labels(tmp_path):
    root = write_fake_mapillary(tmp_path / "mapillary_v2", count=2)
    (root / "validation" / "v1.2").mkdir()
    (root / "validation" / "labels").rename(root / "validation" / "v1.2" / "labels")
    ds = mapillary(root)
    assert len(ds) == 2 and all("validation/v1.2/labels/" in ds.relative(s.label) for s in ds.samples)


def test_mapillary_wrong_shape_names_the_path(tmp_path):
    root = write_fake_mapillary(tmp_path / "flat", count=2)
    (root / "validation").rename(root / "val")  # not the release's folder name
    with pytest.raises(FileNotFoundError, match=str(root / "validation" / "images")) as info:
        mapillary(root)
    assert "\n" not in str(info.value)
    root = write_fake_mapillary(tmp_path / "colour", count=2)
    label = sorted((root / "validation" / "labels").glob("*.png"))[1]
    Image.fromarray(np.zeros((60, 80, 3), np.uint8)).save(label)  # a colour rendering, not class ids
    with pytest.raises(Exception, match=f"mapillary: 1 of 2 samples are unusable: {label}: expected 8-bit Mapillary"):
        check_files(mapillary(root), "mapillary")
    root = write_fake_mapillary(tmp_path / "png_images", count=2)
    image = sorted((root / "validation" / "images").glob("*.jpg"))[0]
    image.rename(image.with_suffix(".png"))
    with pytest.raises(ValueError, match=f"labels without an image .*no {image}"):
        mapillary(root)


# ---------------------------------------------------------------- pipelines against the published configs
# The published dataset configs, transcribed as their pipeline steps (geometry only:
# Normalize and the format steps do not move pixels). HRDA master unless noted.


def _published_uda_config(source_scale, target_scale, crop):
    """The four published files below share their steps; they differ in the Cityscapes resize,
    the target's resize (also its test scale) and the crop, which Pad pads to."""
    pad = dict(type="Pad", size=(crop, crop), pad_val=0, seg_pad_val=255)
    return dict(
        source=[dict(type="Resize", img_scale=source_scale),
                dict(type="RandomCrop", crop_size=(crop, crop), cat_max_ratio=0.75),
                dict(type="RandomFlip", prob=0.5), pad],
        target=[dict(type="Resize", img_scale=target_scale), dict(type="RandomCrop", crop_size=(crop, crop)),
                dict(type="RandomFlip", prob=0.5), pad],
        test_scale=target_scale)  # fmt: skip


PUBLISHED_CONFIGS = {
    # configs/_base_/datasets/uda_cityscapesHR_to_acdcHR_1024x1024.py
    ("hrda", "acdc"): _published_uda_config((2048, 1024), (1920, 1080), 1024),
    # configs/_base_/datasets/uda_cityscapesHR_to_darkzurichHR_1024x1024.py
    ("hrda", "dark_zurich"): _published_uda_config((2048, 1024), (1920, 1080), 1024),
    # configs/_base_/datasets/uda_cityscapes_to_acdc_512x512.py
    ("daformer", "acdc"): _published_uda_config((1024, 512), (960, 540), 512),
    # configs/_base_/datasets/uda_cityscapes_to_darkzurich_512x512.py
    ("daformer", "dark_zurich"): _published_uda_config((1024, 512), (960, 540), 512),
}
# dg branch tools/test.py --dataset BDD100K / Mapillary: the trained config's test pipeline,
# configs/_base_/datasets/uda_gtaCAug_to_cityscapes_512x512.py (DAFormer) and
# uda_gtaCAugHR_to_cityscapesHR_1024x1024.py (HRDA): MultiScaleFlipAug img_scale
PUBLISHED_DG_TEST_SCALE = {"daformer": (1024, 512), "hrda": (2048, 1024)}


def mmcv_rescale_size(old_size, scale):
    """mmcv 1.3.7 ``rescale_size`` with a tuple scale, and ``_scale_size``: (w, h) in and out."""
    w, h = old_size
    max_long_edge = max(scale)
    max_short_edge = min(scale)
    scale_factor = min(max_long_edge / max(h, w), max_short_edge / min(h, w))
    return int(w * float(scale_factor) + 0.5), int(h * float(scale_factor) + 0.5)


def cv2_nearest(label: np.ndarray, size) -> np.ndarray:
    """cv2.resize INTER_NEAREST to (w, h): source index floor(i * in / out)."""
    w, h = size
    rows = np.minimum(np.floor(np.arange(h) * (label.shape[0] / h)).astype(int), label.shape[0] - 1)
    cols = np.minimum(np.floor(np.arange(w) * (label.shape[1] / w)).astype(int), label.shape[1] - 1)
    return label[rows][:, cols]


def mmseg_train_geometry(label: np.ndarray, steps: list, randint, rand) -> np.ndarray:
    """mmseg 0.16 Resize (single img_scale, keep_ratio) -> RandomCrop -> RandomFlip -> Pad on
    the segmentation map, transcribed; ``randint(high)`` / ``rand()`` stand for
    np.random.randint(0, high) / np.random.rand()."""
    for step in steps:
        kind = step["type"]
        if kind == "Resize":  # keep_ratio=True: mmcv.imrescale(seg, scale, interpolation='nearest')
            label = cv2_nearest(label, mmcv_rescale_size(label.shape[::-1], step["img_scale"]))
        elif kind == "RandomCrop":
            y1, y2, x1, x2 = mmseg_crop_bbox(label, step["crop_size"], step.get("cat_max_ratio", 1.0), randint)
            label = label[y1:y2, x1:x2]
        elif kind == "RandomFlip":
            if rand() < step["prob"]:
                label = np.flip(label, axis=1)
        elif kind == "Pad":  # mmcv.impad(shape=size): bottom / right
            h, w = step["size"]
            padded = np.full((max(h, label.shape[0]), max(w, label.shape[1])), step["seg_pad_val"], label.dtype)
            padded[: label.shape[0], : label.shape[1]] = label
            label = padded
    return np.ascontiguousarray(label)


def _blocky_label(rng, h, w):
    label = np.full((h, w), rng.integers(0, 19), np.uint8)
    for _ in range(8):
        y, x = rng.integers(0, h), rng.integers(0, w)
        label[y : y + rng.integers(h // 8, h // 2), x : x + rng.integers(w // 8, w // 2)] = rng.choice([1, 5, 13, 255])
    return label


@pytest.mark.parametrize("recipe,target", list(PUBLISHED_CONFIGS), ids=lambda v: v)
@pytest.mark.parametrize("role,size", [("source", (2048, 1024)), ("target", (1920, 1080)), ("target", (1919, 1081))])
def test_pipeline_geometry_is_the_published_configs(recipe, target, role, size):
    """Cityscapes (2048 x 1024) as the source, ACDC / Dark Zurich frames (1920 x 1080, and an odd
    size) as the target: the label fastuda's pipeline returns equals the published pipeline's,
    pixel for pixel, under the same random draws (crop offsets, cat_max_ratio retries, flip)."""
    config = PUBLISHED_CONFIGS[recipe, target]
    pipe = preset_pipeline(recipe, "cityscapes" if role == "source" else target, role=role)
    rng = np.random.default_rng(hash((recipe, target, role, size)) % 2**32)
    for trial in range(3):
        label = _blocky_label(rng, size[1], size[0])
        image = torch.from_numpy(np.repeat(label[..., None], 3, axis=2)).permute(2, 0, 1)  # (3, H, W) channels-last
        gen = torch.Generator().manual_seed(trial)
        got = pipe(image, torch.from_numpy(label), gen)
        gen = torch.Generator().manual_seed(trial)
        want = mmseg_train_geometry(label, config[role], lambda high: int(torch.randint(0, high, (), generator=gen)),
                                    lambda: float(torch.rand((), generator=gen)))  # fmt: skip
        np.testing.assert_array_equal(got["label"].numpy(), want)
        assert got["image"].shape == (3, *want.shape) and "valid_mask" not in got  # id 49: plcrop=False
        if size == (1920, 1080) and role == "target" and recipe == "hrda":
            # no resize (1920x1080 is the img_scale) and no pad: the image, made of the label's
            # values, must come back cropped and flipped exactly like the label
            pixels = got["image"] * torch.tensor([58.395, 57.12, 57.375]).view(3, 1, 1)
            pixels += torch.tensor([123.675, 116.28, 103.53]).view(3, 1, 1)
            assert (pixels - torch.from_numpy(want).float()).abs().max() < 1e-3


@pytest.mark.parametrize("recipe,target", list(PUBLISHED_CONFIGS), ids=lambda v: v)
def test_test_scale_is_the_published_multiscale_flip_aug(recipe, target):
    test_scale = PUBLISHED_CONFIGS[recipe, target]["test_scale"]
    pipe = preset_pipeline(recipe, target, train=False)
    assert pipe.crop_size is None and pipe.flip_prob == 0 and not pipe.resize_label
    for size in [(1920, 1080), (1919, 1081), (1280, 720)]:
        image = torch.zeros(3, size[1], size[0], dtype=torch.uint8)
        label = torch.zeros(size[1], size[0], dtype=torch.uint8)
        out = pipe(image, label, torch.Generator())
        assert out["image"].shape[1:][::-1] == mmcv_rescale_size(size, test_scale)
        assert out["label"].shape == (size[1], size[0])  # scored at full resolution


@pytest.mark.parametrize("recipe", ["daformer", "hrda", "mic"])
@pytest.mark.parametrize("dataset,size", [("bdd100k", (1280, 720)), ("mapillary", (4032, 3024)),
                                          ("mapillary", (1920, 1080))])  # fmt: skip
def test_dg_test_scale_is_the_published_one(recipe, dataset, size):
    scale = PUBLISHED_DG_TEST_SCALE["daformer" if recipe == "daformer" else "hrda"]
    pipe = preset_pipeline(recipe, dataset, train=False)
    image = torch.zeros(3, size[1], size[0], dtype=torch.uint8)
    assert pipe(image, None, torch.Generator())["image"].shape[1:][::-1] == mmcv_rescale_size(size, scale)
    with pytest.raises(ValueError, match=f"no source pipeline for {dataset}"):
        preset_pipeline(recipe, dataset, role="source")


def test_published_pipeline_table():
    for (recipe, dataset, role), row in PUBLISHED_PIPELINES.items():
        assert recipe in ("daformer", "hrda") and row.config.endswith(".py")
        assert row.train == (role != "test")
        pipe = row.pipeline(recipe, dataset)
        assert pipe.crop_size == ({"daformer": (512, 512), "hrda": (1024, 1024)}[recipe] if row.train else None)
        assert (row.pseudo_margins is not None) == ((recipe, dataset, role) == ("hrda", "cityscapes", "target"))
    assert published_pipeline("mic", "acdc_night") == PUBLISHED_PIPELINES["hrda", "acdc", "target"]
    assert preset_pipeline("hrda", "darkzurich", train=False).scale == (1920, 1080)
    assert preset_pipeline("mic", "acdc_snow", train=False).scale == (1920, 1080)
    assert preset_pipeline("hrda", "cityscapes") != preset_pipeline("hrda", "cityscapes", role="source")
    assert preset_pipeline("hrda", "cityscapes", role="source").cat_max_ratio == 0.75
    with pytest.raises(ValueError, match="role must be one of"):
        published_pipeline("hrda", "acdc", "train")
    with pytest.raises(ValueError, match="dataset must be one of"):
        published_pipeline("hrda", "kitti")



# ---------------------------------------------------------------- PhotoMetricDistortion (target-only and DG)

# OpenCV 4.5.5 (the opencv-python wheel, AVX2 dispatch) through mmcv 1.3.7's bgr2hsv / hsv2bgr,
# given here in RGB order. The first seven HSV triples sit on a rounding boundary: a product
# rounded before the subtraction (no fused multiply-add) or a rounded instead of truncated
# result gives another value.
OPENCV_HSV_TO_RGB = [
    ((117, 85, 200), (133, 140, 200)), ((74, 195, 255), (59, 255, 150)), ((102, 55, 255), (199, 232, 255)),
    ((47, 162, 100), (63, 100, 36)), ((44, 85, 45), (38, 45, 29)), ((54, 153, 125), (64, 125, 50)),
    ((114, 51, 225), (180, 189, 225)), ((136, 57, 211), (188, 163, 211)), ((0, 79, 246), (246, 169, 169)),
    ((97, 216, 134), (20, 107, 134)), ((53, 100, 25), (17, 25, 15)), ((172, 240, 10), (10, 0, 3)),
    ((110, 240, 82), (4, 30, 82)), ((10, 184, 184), (184, 95, 51)), ((152, 45, 39), (39, 32, 38)),
    ((33, 194, 137), (126, 137, 32)),
]  # fmt: skip
OPENCV_RGB_TO_HSV = [
    ((95, 130, 194), (109, 130, 194)), ((79, 242, 114), (66, 172, 242)), ((172, 76, 229), (139, 170, 229)),
    ((81, 44, 34), (6, 148, 81)), ((125, 88, 45), (16, 163, 125)), ((0, 0, 0), (0, 0, 0)), ((0, 0, 5), (120, 255, 5)),
    ((0, 5, 0), (60, 255, 5)), ((0, 255, 255), (90, 255, 255)), ((255, 255, 255), (0, 0, 255)),
    ((255, 255, 0), (30, 255, 255)), ((0, 0, 255), (120, 255, 255)), ((0, 255, 0), (60, 255, 255)),
    ((180, 255, 20), (40, 235, 255)), ((140, 195, 185), (85, 72, 195)),
]  # fmt: skip


def _pixels(values) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.uint8).T.reshape(3, 1, len(values))  # (3, 1, N)


def test_hsv_conversions_are_opencvs():
    from fastuda.data.photometric import hsv_to_rgb, rgb_to_hsv

    hsv, rgb = zip(*OPENCV_HSV_TO_RGB)
    assert hsv_to_rgb(_pixels(hsv)).reshape(3, -1).T.tolist() == [list(p) for p in rgb]
    rgb, hsv = zip(*OPENCV_RGB_TO_HSV)
    assert rgb_to_hsv(_pixels(rgb)).reshape(3, -1).T.tolist() == [list(p) for p in hsv]


def test_rgb_to_hsv_is_the_hsv_model_to_one_step():
    """Every 3rd colour of the cube against the textbook float formula (OpenCV's 8-bit scale:
    H in degrees / 2, S and V x 255), and back (OpenCV's 8-bit round trip moves a colour a little)."""
    from fastuda.data.photometric import hsv_to_rgb, rgb_to_hsv

    axis = torch.arange(0, 256, 3)
    rgb = torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij")).reshape(3, 1, -1).to(torch.uint8)
    r, g, b = rgb.double().unbind(0)
    v = torch.maximum(torch.maximum(r, g), b)
    diff = v - torch.minimum(torch.minimum(r, g), b)
    s = torch.where(v > 0, 255 * diff / v.clamp(min=1), torch.zeros_like(v))
    safe = diff.clamp(min=1)
    h = torch.where(v == r, 60 * (g - b) / safe,
                    torch.where(v == g, 120 + 60 * (b - r) / safe, 240 + 60 * (r - g) / safe))  # fmt: skip
    h = torch.where(diff > 0, torch.remainder(h, 360) / 2, torch.zeros_like(h))
    got = rgb_to_hsv(rgb).double()
    hue_error = torch.remainder(got[0] - h + 90, 180) - 90
    assert hue_error.abs().max() <= 1 and (got[1] - s).abs().max() <= 1 and (got[2] == v).all()  # fixed-point tables
    # H steps by 2 degrees (8.5 levels of a saturated colour), and the way back truncates
    assert (hsv_to_rgb(rgb_to_hsv(rgb)).int() - rgb.int()).abs().max() <= 6


def test_photometric_distortion_follows_the_published_order():
    """mmseg 0.16 PhotoMetricDistortion.__call__ transcribed, its numpy draws replaced by the same
    generator calls fastuda makes: fastuda's step must take the same path to the same pixels."""
    from fastuda.data.photometric import hsv_to_rgb, photometric_distortion, rgb_to_hsv

    def published(img, gen):
        class Random:  # numpy.random's randint(low, high) / randint(high) / uniform, from the generator
            def randint(self, low, high=None):
                low, high = (0, low) if high is None else (low, high)
                return int(torch.randint(low, high, (), generator=gen))

            def uniform(self, low, high):
                return low + (high - low) * float(torch.rand((), generator=gen))

        random = Random()

        def convert(img, alpha=1, beta=0):
            return (img.float() * alpha + beta).clamp(0, 255).to(torch.uint8)

        def contrast(img):
            return convert(img, alpha=random.uniform(0.5, 1.5)) if random.randint(2) else img

        if random.randint(2):
            img = convert(img, beta=random.uniform(-32, 32))
        mode = random.randint(2)
        if mode == 1:
            img = contrast(img)
        if random.randint(2):
            hsv = rgb_to_hsv(img)
            hsv[1] = convert(hsv[1], alpha=random.uniform(0.5, 1.5))
            img = hsv_to_rgb(hsv)
        if random.randint(2):
            hsv = rgb_to_hsv(img)
            hsv[0] = (hsv[0].long() + random.randint(-18, 18)) % 180
            img = hsv_to_rgb(hsv)
        if mode == 0:
            img = contrast(img)
        return img

    image = torch.randint(0, 256, (3, 24, 64), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    changed = 0
    for seed in range(24):
        got = photometric_distortion(image, torch.Generator().manual_seed(seed))
        want = published(image.clone(), torch.Generator().manual_seed(seed))
        torch.testing.assert_close(got, want, rtol=0, atol=0)
        changed += not torch.equal(got, image)
    assert changed >= 20  # 1/16 of the draws change nothing


def test_target_only_and_dg_pipelines():
    """HRDA configs/_base_/datasets/cityscapes{,HR}_{512x512,1024x1024}.py (target-only, experiments.py
    id 43) and uda_gtaCAug{,HR}_to_cityscapes{,HR}_*.py (DG, the dg branch's id 50): Resize, RandomCrop
    with cat_max_ratio 0.75, RandomFlip 0.5, PhotoMetricDistortion."""
    published = {("daformer", "cityscapes", "target_only"): ((1024, 512), 512),
                 ("hrda", "cityscapes", "target_only"): ((2048, 1024), 1024),
                 ("daformer", "gta", "caug_source"): ((1280, 720), 512),
                 ("hrda", "gta", "caug_source"): ((2560, 1440), 1024)}  # fmt: skip
    for (recipe, dataset, role), (scale, crop) in published.items():
        pipe = preset_pipeline(recipe, dataset, role=role)
        assert (pipe.scale, pipe.crop_size, pipe.cat_max_ratio, pipe.flip_prob) == (scale, (crop, crop), 0.75, 0.5)
        assert pipe.photometric and pipe.pseudo_margins is None
    assert not any(row.photometric for (_, _, role), row in PUBLISHED_PIPELINES.items()
                   if role not in ("target_only", "caug_source"))  # fmt: skip
    # the label and the geometry are those of the pipeline without the distortion
    pipe = preset_pipeline("daformer", "gta", role="caug_source")
    image = torch.randint(0, 256, (3, 90, 160), dtype=torch.uint8)
    label = torch.randint(0, 19, (90, 160), dtype=torch.uint8)
    plain = Pipeline(scale=(160, 90), crop_size=(64, 64), cat_max_ratio=0.75, flip_prob=0.5)
    with_pmd = Pipeline(scale=(160, 90), crop_size=(64, 64), cat_max_ratio=0.75, flip_prob=0.5, photometric=True)
    a = plain(image, label, torch.Generator().manual_seed(3))
    b = with_pmd(image, label, torch.Generator().manual_seed(3))
    torch.testing.assert_close(a["label"], b["label"])
    assert pipe.photometric and not torch.equal(a["image"], b["image"])


def test_caug_pipelines_of_advseg_and_minent(tmp_path):
    """HRDA experiments.py id 41 trains AdvSeg / MinEnt on 'gtaCAug' -> 'cityscapes'
    (configs/_base_/datasets/uda_gtaCAug{,HR}_to_cityscapes{,HR}_*.py): the GTA pipeline with
    cat_max_ratio 0.75 and PhotoMetricDistortion after the flip, the Cityscapes target with a plain
    RandomCrop (no cat_max_ratio, no distortion, no valid mask). The presets train on that pair."""
    from fastuda import config
    from fastuda.data._fake import write_fake_cityscapes, write_fake_gta
    from fastuda.runtime.build import build_train_datasets

    published = {("daformer", "gta", "caug_source"): ((1280, 720), 512, 0.75, True),
                 ("hrda", "gta", "caug_source"): ((2560, 1440), 1024, 0.75, True),
                 ("daformer", "cityscapes", "caug_target"): ((1024, 512), 512, 1.0, False),
                 ("hrda", "cityscapes", "caug_target"): ((2048, 1024), 1024, 1.0, False)}  # fmt: skip
    for (recipe, dataset, role), (scale, crop, cat_max, pmd) in published.items():
        pipe = preset_pipeline(recipe, dataset, role=role)
        assert (pipe.scale, pipe.crop_size, pipe.cat_max_ratio, pipe.flip_prob) == (scale, (crop, crop), cat_max, 0.5)
        assert pipe.photometric == pmd and pipe.pseudo_margins is None
    for name in ("advseg_gta2cs", "minent_gta2cs"):
        cfg = config.preset(name)
        cfg.data.source_root = str(write_fake_gta(tmp_path / "gta", count=2, size=(96, 64)))
        cfg.data.target_root = str(write_fake_cityscapes(tmp_path / "cs", counts={"train": 2, "val": 1}))
        source, target = build_train_datasets(cfg)
        assert source.pipeline.photometric and source.pipeline.cat_max_ratio == 0.75
        assert not target.pipeline.photometric and target.pipeline.cat_max_ratio == 1.0
        assert target.pipeline.pseudo_margins is None
        cfg.data.caug = False  # DACS on DeepLabV2 (id 41's 'gta' rows): the plain source, DAFormer's target crop
        source, target = build_train_datasets(cfg)
        assert not source.pipeline.photometric and target.pipeline.cat_max_ratio == 0.75


# ---------------------------------------------------------------- through the command line


@pytest.mark.parametrize("target,write", [
    ("acdc", write_fake_acdc),
    pytest.param("dark_zurich", write_fake_dark_zurich, marks=pytest.mark.slow),  # the same path as acdc's
])  # fmt: skip
def test_cityscapes_to_adverse_weather_trains_and_evaluates(target, write, tmp_path):
    """data.source=cityscapes, data.target=acdc / dark_zurich: two training iterations (DAFormer-
    sized, a small crop: the CPU's share of the suite) and an evaluation on the target's val split,
    from the fake released trees."""
    from fastuda import evaluate, train

    write_fake_cityscapes(tmp_path / "cityscapes", {"train": 2, "val": 1})
    write(tmp_path / target, size=(128, 72))
    out = tmp_path / "run"
    args = ["daformer_gta2cs", "data.source=cityscapes", f"data.source_root={tmp_path / 'cityscapes'}",
            f"data.target={target}", f"data.target_root={tmp_path / target}", "data.resize=(128,64)",
            "data.crop_size=(32,32)", "data.workers=0", "model.backbone=mit_demo", "model.pretrained=None",
            "uda.fd_lambda=0", "rcs.min_pixels=0", "uda.pseudo_ignore_top=2", "uda.pseudo_ignore_bottom=4",
            "max_iters=2", "eval_interval=-1", "--out", str(out), "--no-progress"]  # fmt: skip
    assert train.main(args) == 0
    assert (out / "latest.pt").is_file()
    assert evaluate.main([str(out / "latest.pt")]) == 0
