"""Loaders of the released layouts (GTA5, Synthia, Cityscapes, own folders): label
mappings, pairing, and a clear error naming the path for every broken input."""

import numpy as np
import pytest
import torch
from _published_data import CITYSCAPES_MAPPING, SYNTHIA_MAPPING, parse_mapping, published_train_ids
from PIL import Image

from fastuda.data import (
    CITYSCAPES_CLASSES,
    build_dataset,
    cityscapes,
    folder_dataset,
    gta5,
    labels,
    make_loader,
    synthia,
)
from fastuda.data._fake import write_fake_cityscapes, write_fake_gta, write_fake_synthia, write_png16

@pytest.fixture(scope="module")
def fakes(tmp_path_factory):
    root = tmp_path_factory.mktemp("released")
    return {
        "gta": write_fake_gta(root / "gta", count=3, seed=1),
        "synthia": write_fake_synthia(root / "synthia", count=3, seed=2),
        "cityscapes": write_fake_cityscapes(root / "cityscapes", {"train": 3, "val": 2}, seed=3),
    }


def test_mappings_are_the_published_ones():
    assert labels.CITYSCAPES_ID_TO_TRAIN_ID == parse_mapping(CITYSCAPES_MAPPING)
    assert labels.SYNTHIA_ID_TO_TRAIN_ID == parse_mapping(SYNTHIA_MAPPING)
    cs = labels.CITYSCAPES_LABEL_IDS.lookup
    assert cs.shape == (256,) and cs.dtype == np.uint8
    np.testing.assert_array_equal(cs, published_train_ids(np.arange(256), labels.CITYSCAPES_ID_TO_TRAIN_ID))
    syn = labels.SYNTHIA_LABELS.lookup
    assert syn.shape == (65536,)
    np.testing.assert_array_equal(syn, published_train_ids(np.arange(65536), labels.SYNTHIA_ID_TO_TRAIN_ID))
    assert len(CITYSCAPES_CLASSES) == 19 and CITYSCAPES_CLASSES[13] == "car"
    assert labels.SYNTHIA_16 == (0, 1, 2, 3, 4, 5, 6, 7, 8, 10, 11, 12, 13, 15, 17, 18)
    assert labels.SYNTHIA_13 == (0, 1, 2, 6, 7, 8, 10, 11, 12, 13, 15, 17, 18)


def test_gta_reads_images_and_palette_labels(fakes):
    ds = gta5(fakes["gta"])
    assert len(ds) == 3 and ds.name == "gta"
    assert [ds.relative(s.image) for s in ds.samples] == ["images/00001.png", "images/00002.png", "images/00003.png"]
    sample = ds[1]
    raw = np.array(Image.open(fakes["gta"] / "labels" / "00002.png"))  # palette indices = labelIds
    assert Image.open(fakes["gta"] / "labels" / "00002.png").mode == "P"
    np.testing.assert_array_equal(sample["label"].numpy(), published_train_ids(raw, labels.CITYSCAPES_ID_TO_TRAIN_ID))
    image = np.array(Image.open(fakes["gta"] / "images" / "00002.png"))
    np.testing.assert_array_equal(sample["image"].permute(1, 2, 0).numpy(), image)
    assert sample["image"].dtype == torch.uint8 and sample["label"].dtype == torch.int64
    assert sample["name"] == "images/00002.png" and sample["index"] == 1
    assert 255 in sample["label"]  # the fake labels hold void ids


def test_synthia_reads_the_first_channel_of_16_bit_labels(fakes):
    ds = synthia(fakes["synthia"])
    assert len(ds) == 3
    label = ds[0]["label"].numpy()
    # the released file: class id in channel 0, instance ids (up to 999) in channel 1
    from torchvision.io import ImageReadMode, decode_png, read_file

    raw = decode_png(read_file(str(fakes["synthia"] / "GT" / "LABELS" / "0000000.png")), ImageReadMode.UNCHANGED)
    assert int(raw[1].to(torch.int32).max()) > 255  # a wrong channel or an 8-bit read would be caught below
    want = published_train_ids(raw[0].to(torch.int32).numpy(), labels.SYNTHIA_ID_TO_TRAIN_ID)
    np.testing.assert_array_equal(label, want)
    assert not np.isin(label, [9, 14, 16]).any()  # terrain, truck, train: never in Synthia


@pytest.mark.parametrize("split,count", [("train", 3), ("val", 2)])
def test_cityscapes_splits(fakes, split, count):
    ds = cityscapes(fakes["cityscapes"], split)
    assert len(ds) == count
    sample = ds.samples[0]
    assert sample.image.name.endswith("_leftImg8bit.png") and sample.label.name.endswith("_gtFine_labelIds.png")
    raw = np.array(Image.open(sample.label))
    np.testing.assert_array_equal(ds[0]["label"].numpy(), published_train_ids(raw, labels.CITYSCAPES_ID_TO_TRAIN_ID))


def test_cityscapes_prefers_label_train_ids(tmp_path):
    root = write_fake_cityscapes(tmp_path / "cs", {"train": 2})
    ds = cityscapes(root)
    first = ds.samples[0]
    want = ds[0]["label"].numpy()
    # a train-id file next to the labelIds (as cityscapesscripts writes) is read instead
    trainids = first.label.with_name(first.label.name.replace("_labelIds", "_labelTrainIds"))
    Image.fromarray(np.where(want == 0, 1, want).astype(np.uint8)).save(trainids)
    ds = cityscapes(root)
    assert ds.samples[0].label == trainids and ds.samples[0].raw_label == first.label
    assert ds[0]["label"].eq(0).sum() == 0 and ds[1]["label"].numpy().tolist() == cityscapes(root)[1]["label"].tolist()


def test_build_dataset_names(fakes, tmp_path):
    assert len(build_dataset("gta", fakes["gta"])) == 3
    assert len(build_dataset("GTA5", fakes["gta"])) == 3
    assert len(build_dataset("synthia", fakes["synthia"])) == 3
    assert len(build_dataset("cityscapes", fakes["cityscapes"], "val")) == 2
    with pytest.raises(ValueError, match="dataset name must be one of"):
        build_dataset("kitti", tmp_path)
    with pytest.raises(ValueError, match="split must be one of"):
        build_dataset("cityscapes", fakes["cityscapes"], "test")
    with pytest.raises(ValueError, match="single split 'train'"):
        build_dataset("gta", fakes["gta"], "val")


def test_folder_dataset(tmp_path):
    root = tmp_path / "own"
    (root / "images" / "town").mkdir(parents=True)
    (root / "labels" / "town").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in ("a", "town/b"):
        Image.fromarray(rng.integers(0, 255, (20, 30, 3), dtype=np.uint8)).save(root / "images" / f"{name}.jpg")
        label = rng.integers(0, 3, (20, 30)).astype(np.uint8)
        label[0] = 255
        Image.fromarray(label).save(root / "labels" / f"{name}.png")
    ds = build_dataset("folder", root, classes=["sky", "road", "car"])
    assert len(ds) == 2 and ds.class_names == ("sky", "road", "car") and ds.num_classes == 3
    assert ds[1]["image"].shape == (3, 20, 30) and set(ds[1]["label"].unique().tolist()) <= {0, 1, 2, 255}
    # values beyond the class list are an error naming the file
    with pytest.raises(ValueError, match=r"a\.png.*found values \[2\]"):
        folder_dataset(root, classes=["sky", "road"])[0]
    # ...unless mapped: raw id -> class index, the rest ignored
    mapped = folder_dataset(root, classes=["sky", "road"], label_map={2: 0, 1: 1})
    raw = np.array(Image.open(root / "labels" / "a.png"))
    np.testing.assert_array_equal(mapped[0]["label"].numpy(), np.select([raw == 2, raw == 1], [0, 1], 255))
    unlabelled = folder_dataset(root, classes=["sky", "road", "car"], labels=None)
    assert "label" not in unlabelled[0]


# ---------------------------------------------------------------- errors, each naming the path


def test_missing_root_and_missing_folder(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError, match=f"GTA5 root {missing} does not exist.*images/\\*.png"):
        gta5(missing)
    root = write_fake_gta(tmp_path / "gta", count=1)
    for path in (root / "labels").iterdir():
        path.unlink()
    (root / "labels").rmdir()
    with pytest.raises(FileNotFoundError, match=f"{root / 'labels'} is missing"):
        gta5(root)
    with pytest.raises(FileNotFoundError, match="leftImg8bit/val.* is missing"):
        cityscapes(write_fake_cityscapes(tmp_path / "cs", {"train": 1}), "val")


def test_empty_split(tmp_path):
    root = tmp_path / "syn"
    (root / "RGB").mkdir(parents=True)
    (root / "GT" / "LABELS").mkdir(parents=True)
    with pytest.raises(ValueError, match=f"no images {root / 'RGB'}/\\*.png \\(empty split\\)"):
        synthia(root)


def test_image_without_label_and_label_without_image(tmp_path):
    root = write_fake_gta(tmp_path / "gta", count=3)
    (root / "labels" / "00002.png").unlink()
    with pytest.raises(ValueError, match=f"images without a label \\(1\\): {root / 'images' / '00002.png'}"):
        gta5(root)
    root = write_fake_cityscapes(tmp_path / "cs", {"train": 2})
    next((root / "leftImg8bit" / "train").rglob("*_leftImg8bit.png")).unlink()
    with pytest.raises(ValueError, match="labels without an image \\(1\\): .*_gtFine_labelIds.png"):
        cityscapes(root)


def test_truncated_and_unreadable_files(tmp_path):
    root = write_fake_gta(tmp_path / "gta", count=3)
    image = root / "images" / "00001.png"
    image.write_bytes(image.read_bytes()[:-200])
    with pytest.raises(RuntimeError, match=f"{image}: the PNG is truncated"):
        gta5(root)[0]
    label = root / "labels" / "00002.png"
    label.write_bytes(label.read_bytes()[: len(label.read_bytes()) // 2])
    with pytest.raises(RuntimeError, match=f"{label}: the PNG is truncated"):
        gta5(root)[1]
    garbage = root / "images" / "00003.png"
    garbage.write_bytes(b"this is not an image" * 10)
    with pytest.raises(RuntimeError, match=f"{garbage}: cannot decode the image"):
        gta5(root)[2]
    (root / "labels" / "00003.png").write_bytes(b"GIF89a" + bytes(40))
    with pytest.raises(RuntimeError, match="00003.png: not a PNG file"):
        gta5(root).read_label(2)


def test_corrupt_png_data_is_an_error(tmp_path):
    """Complete file (IEND present), damaged compressed data: the decoder's error, with the path."""
    root = write_fake_gta(tmp_path / "gta", count=1)
    label = root / "labels" / "00001.png"
    data = bytearray(label.read_bytes())
    start = data.index(b"IDAT") + 4
    data[start : start + 40] = bytes(40)
    label.write_bytes(bytes(data))
    with pytest.raises(RuntimeError, match=f"{label}: cannot decode the label PNG"):
        gta5(root)[0]


def test_wrong_label_dtype(tmp_path):
    root = write_fake_gta(tmp_path / "gta", count=2)
    rgb = root / "labels" / "00001.png"
    Image.fromarray(np.zeros((64, 96, 3), np.uint8)).save(rgb)
    with pytest.raises(ValueError, match=f"{rgb}: expected 8-bit Cityscapes labelIds.*got a 8-bit RGB PNG"):
        gta5(root)[0]
    sixteen = root / "labels" / "00002.png"
    write_png16(sixteen, np.zeros((64, 96, 3), np.uint16))
    with pytest.raises(ValueError, match=f"{sixteen}: expected 8-bit.*got a 16-bit RGB PNG"):
        gta5(root)[1]

    root = write_fake_synthia(tmp_path / "syn", count=1)
    eight = root / "GT" / "LABELS" / "0000000.png"
    Image.fromarray(np.zeros((64, 96, 3), np.uint8)).save(eight)
    with pytest.raises(ValueError, match=f"{eight}: expected 16-bit SYNTHIA labels.*got a 8-bit RGB PNG"):
        synthia(root)[0]


def test_train_id_file_with_raw_ids_is_an_error(tmp_path):
    root = write_fake_gta(tmp_path / "gta", count=1)
    raw = np.array(Image.open(root / "labels" / "00001.png"))
    wrong = root / "labels" / "00001_labelTrainIds.png"
    Image.fromarray(raw).save(wrong)  # labelIds under the train-id name
    with pytest.raises(ValueError, match=f"{wrong}: expected 8-bit train ids .*found values"):
        gta5(root)[0]


def test_image_and_label_sizes_must_agree_without_a_resize(tmp_path):
    root = write_fake_gta(tmp_path / "gta", count=1)
    Image.fromarray(np.full((60, 96), 7, np.uint8)).save(root / "labels" / "00001.png")
    with pytest.raises(ValueError, match="label .*00001.png is \\(60, 96\\).*is \\(64, 96\\)"):
        gta5(root)[0]


def test_worker_errors_reach_the_main_process_with_the_path(tmp_path):
    root = write_fake_gta(tmp_path / "gta", count=2)
    image = root / "images" / "00002.png"
    image.write_bytes(image.read_bytes()[:100])
    loader = make_loader(gta5(root), batch_size=1, workers=1, shuffle=False, pin_memory=False)
    with pytest.raises(RuntimeError, match=f"{image}: the PNG is truncated"):
        list(loader)


def test_make_loader_settings(fakes):
    ds = gta5(fakes["gta"])
    loader = make_loader(ds, batch_size=2, workers=2, seed=0)
    assert loader.num_workers == 2 and loader.persistent_workers and loader.prefetch_factor == 2
    assert loader.pin_memory == torch.cuda.is_available() and loader.drop_last and loader.batch_size == 2
    serial = make_loader(ds, batch_size=1, workers=0, shuffle=False, drop_last=False)
    assert not serial.persistent_workers and len(list(serial)) == 3
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        make_loader(ds, batch_size=0)
