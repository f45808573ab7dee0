"""The benchmark presets (Cityscapes -> ACDC / Dark Zurich, domain generalisation): their
published settings, MIC's "separate" mask mode against a transcription of the published
module, training and evaluation end to end through the command line on fake trees in the
released layouts, evaluation across datasets, and the ACDC / Dark Zurich submission files."""

import json
import zipfile

import numpy as np
import pytest
import torch
from PIL import Image

from fastuda import config, evaluate, predict, train
from fastuda.data._fake import (
    write_fake_acdc,
    write_fake_bdd100k,
    write_fake_cityscapes,
    write_fake_dark_zurich,
    write_fake_gta,
    write_fake_mapillary,
)
from fastuda.errors import UserError

CS2ADVERSE = [f"{m}_cs2{t}" for t in ("acdc", "darkzurich") for m in ("daformer", "hrda", "mic_hrda", "source_only")]
DG = ["daformer_gta_dg", "hrda_gta_dg"]


# ---------------------------------------------------------------- the published settings


@pytest.mark.parametrize("name", CS2ADVERSE + DG)
def test_preset_is_listed_validates_and_names_its_published_config(name):
    cfg = config.preset(name)
    assert cfg.name == name
    config.validate(cfg, from_pretrained=False)
    doc = config.PRESETS[name].__doc__
    assert doc and ("experiments.py" in doc or "configs/_base_" in doc), name


def test_cs2adverse_presets_carry_the_published_settings():
    for name in CS2ADVERSE:
        cfg = config.preset(name)
        target = "acdc" if name.endswith("acdc") else "dark_zurich"
        assert (cfg.data.source, cfg.data.target, cfg.seed) == ("cityscapes", target, 0)
        # experiments.py id 49 / MIC id 80: plcrop=False for these targets
        assert (cfg.uda.pseudo_ignore_top, cfg.uda.pseudo_ignore_bottom) == (0, 0)
        assert cfg.data.eval_datasets == ()
    h = config.preset("hrda_cs2acdc")
    assert h.hrda.enabled and h.data.recipe == "hrda" and h.data.crop_size == (1024, 1024)
    assert (h.rcs.min_crop_ratio, h.rcs.temperature, h.uda.fd_lambda, h.uda.alpha) == (2.0, 0.01, 0.005, 0.999)
    m = config.preset("mic_hrda_cs2darkzurich")
    assert (m.uda.mic_lambda, m.uda.mic_block_size, m.uda.mic_mask_ratio, m.uda.mic_mode) == (1.0, 64, 0.7, "separate")
    d = config.preset("daformer_cs2acdc")
    assert not d.hrda.enabled and d.data.crop_size == (512, 512) and d.rcs.min_crop_ratio == 0.5
    s = config.preset("source_only_cs2darkzurich")
    assert s.uda.mode == "source_only" and not s.hrda.enabled


def test_dg_presets_carry_the_published_settings():
    # HRDA dg branch experiments.py id 50: dacs_fdthings_srconly, rcs 0.01, gtaCAug, poly10warm
    for name in DG:
        cfg = config.preset(name)
        assert (cfg.data.source, cfg.data.target, cfg.uda.mode, cfg.seed) == ("gta", "cityscapes", "source_only", 0)
        assert cfg.uda.fd_lambda == 0.005 and cfg.rcs.enabled and cfg.rcs.temperature == 0.01
        assert cfg.data.caug
        assert [config.parse_dataset_spec(s)[0] for s in cfg.data.eval_datasets] == ["bdd100k", "mapillary"]
        assert (cfg.optim.lr, cfg.optim.warmup_iters, cfg.max_iters) == (6e-5, 1500, 40000)
    d, h = config.preset("daformer_gta_dg"), config.preset("hrda_gta_dg")
    assert not d.hrda.enabled and d.rcs.min_crop_ratio == 0.5 and d.data.crop_size == (512, 512)
    assert h.hrda.enabled and h.hrda.hr_crop_size == 384 and h.rcs.min_crop_ratio == 2.0


def test_eval_datasets_key_rejects_a_bad_entry():
    for bad, word in (("bdd100k", "NAME=ROOT"), ("kitti=data/kitti", "NAME=ROOT"), ("gta=data/gta", "NAME=ROOT")):
        with pytest.raises(UserError, match=f"data.eval_datasets.*{word}"):
            config.load_config("daformer_gta_dg", [f"data.eval_datasets=('{bad}',)"], from_pretrained=False)
    with pytest.raises(UserError, match="uda.mic_mode"):
        config.load_config("mic_hrda_cs2acdc", ["uda.mic_mode=separatesrc"], from_pretrained=False)


# ---------------------------------------------------------------- MIC's mask modes


def _published_separate(img, gt, target_img, plabel, pweight):
    """lhoyer/MIC seg/mmseg/models/uda/masking_consistency_module.py, mask_mode 'separate'
    (transcribed; gt is (B, 1, H, W) there, plabel (B, H, W), pweight (B, H, W))."""
    assert img.shape[0] == 2
    masked_img = torch.stack([img[0], target_img[0]])
    masked_lbl = torch.stack([gt[0], plabel[0].unsqueeze(0)])
    gt_pixel_weight = torch.ones(pweight[0].shape)
    masked_seg_weight = torch.stack([gt_pixel_weight, pweight[0]])
    return masked_img, masked_lbl, masked_seg_weight


def test_mic_separate_mode_is_the_published_batch():
    from fastuda.uda.step import mic_batch

    g = torch.Generator().manual_seed(0)
    src, tgt = torch.randn(2, 3, 8, 12, generator=g), torch.randn(2, 3, 8, 12, generator=g)
    gt, plabel = torch.randint(0, 19, (2, 8, 12), generator=g), torch.randint(0, 19, (2, 8, 12), generator=g)
    pweight = torch.rand(2, 8, 12, generator=g)
    images, labels, weights = mic_batch("separate", src, gt, tgt, plabel, pweight)
    ref_img, ref_lbl, ref_w = _published_separate(src, gt[:, None], tgt, plabel, pweight)
    torch.testing.assert_close(images, ref_img, rtol=0, atol=0)
    torch.testing.assert_close(labels, ref_lbl[:, 0], rtol=0, atol=0)
    torch.testing.assert_close(weights, ref_w, rtol=0, atol=0)
    # separatetrgaug: the target with the teacher's labels and weights, as published
    images, labels, weights = mic_batch("separatetrgaug", src, gt, tgt, plabel, pweight)
    assert images is tgt and labels is plabel and weights is pweight


# ---------------------------------------------------------------- through the command line

# Every preset at a CPU's size: the tiny MiT, crops of 64 (HRDA's minimum), two iterations.
SMALL = ["data.workers=0", "model.backbone=mit_demo", "model.embed_dim=32", "model.pretrained=None", "uda.fd_lambda=0",
         "rcs.min_pixels=0", "max_iters=2", "eval_interval=0", "checkpoint_interval=0", "--no-progress"]  # fmt: skip


def _small(name: str) -> list[str]:
    hrda = config.preset(name).hrda.enabled
    size = ["data.resize=(128,64)", "data.crop_size=(64,64)"] if hrda else ["data.resize=(96,48)",
                                                                          "data.crop_size=(32,32)"]  # fmt: skip
    return size + (["hrda.hr_crop_size=32", "uda.mic_block_size=16"] if hrda else ["uda.mic_block_size=8"])


@pytest.fixture(scope="module")
def trees(tmp_path_factory):
    root = tmp_path_factory.mktemp("released")
    return {
        "cityscapes": write_fake_cityscapes(root / "cityscapes", {"train": 2, "val": 1}),
        "cityscapes_val": write_fake_cityscapes(root / "cityscapes_val", {"val": 1}),
        "acdc": write_fake_acdc(root / "acdc", counts={"train": 1, "val": 1, "test": 1}, size=(128, 72)),
        "dark_zurich": write_fake_dark_zurich(root / "dark_zurich", counts={"train": 1, "val": 1, "test": 2},
                                              size=(128, 72)),  # fmt: skip
        "gta": write_fake_gta(root / "gta", count=3),
        "bdd100k": write_fake_bdd100k(root / "bdd100k", count=2),
        "mapillary": write_fake_mapillary(root / "mapillary", count=2),
    }


def _train_and_evaluate(name, trees, tmp_path):
    cfg = config.preset(name)
    out = tmp_path / name
    # source-only training reads no target image: the DG presets get a Cityscapes tree without train split
    target = trees["cityscapes_val"] if name in DG else trees[cfg.data.target]
    roots = [f"data.source_root={trees[cfg.data.source]}", f"data.target_root={target}"]
    if cfg.data.eval_datasets:
        roots.append(f"data.eval_datasets=('bdd100k={trees['bdd100k']}','mapillary={trees['mapillary']}')")
    assert train.main([name, *roots, *SMALL, *_small(name), "--out", str(out)]) == 0
    record = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines() if "eval" in line][-1]
    assert 0 <= record["eval"]["mIoU"] <= 100  # percent, as the run records every score
    for extra in ("bdd100k", "mapillary") if cfg.data.eval_datasets else ():
        assert 0 <= record[f"eval_{extra}"]["mIoU"] <= 100 and len(record[f"iou_{extra}"]) == 19
        assert all(v is None or 0 <= v <= 100 for v in record[f"iou_{extra}"].values())  # n/a is null
    assert evaluate.main([str(out / "latest.pt")]) == 0
    return out


# In the default run: one Dark Zurich and one DG preset here, an ACDC one in the ``checkpoint``
# fixture below (daformer_cs2acdc trains, evaluates during training and through the CLI).
DEFAULT = ("daformer_cs2darkzurich", "daformer_gta_dg")


@pytest.mark.parametrize("name", [
    *DEFAULT, *(pytest.param(n, marks=pytest.mark.slow) for n in CS2ADVERSE + DG if n not in DEFAULT),
])  # fmt: skip
def test_preset_trains_and_evaluates_through_the_cli(name, trees, tmp_path):
    _train_and_evaluate(name, trees, tmp_path)


# ---------------------------------------------------------------- evaluation across datasets


@pytest.fixture(scope="module")
def checkpoint(trees, tmp_path_factory):
    return _train_and_evaluate("daformer_cs2acdc", trees, tmp_path_factory.mktemp("ckpt")) / "latest.pt"


def test_evaluate_prints_one_table_for_several_datasets(checkpoint, trees, capsys):
    from fastuda.data import CITYSCAPES_CLASSES

    args = [str(checkpoint), "--dataset", f"acdc={trees['acdc']}", "--dataset", f"dark_zurich={trees['dark_zurich']}",
            "--dataset", f"bdd100k={trees['bdd100k']}", "--dataset", f"mapillary={trees['mapillary']}"]  # fmt: skip
    assert evaluate.main(args) == 0
    lines = capsys.readouterr().out.splitlines()
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    assert header == ["dataset", *CITYSCAPES_CLASSES, "mIoU"]
    rows = {line.split("|")[1].strip(): line for line in lines[2:6]}
    assert list(rows) == ["acdc", "dark_zurich", "bdd100k", "mapillary"]
    for line in rows.values():
        cells = [c.strip() for c in line.strip("|").split("|")][1:]
        assert len(cells) == 20 and all(c == "n/a" or 0 <= float(c) <= 100 for c in cells)
    assert "images: acdc 4, dark_zurich 1, bdd100k 2, mapillary 2" in lines[-1]


def test_dataset_table_rows_are_each_datasets_iou(checkpoint):
    """The table against an independent IoU: tp / (tp + fp + fn) per class, nan-mean in %."""
    from fastuda.runtime.evaluation import dataset_table

    g = torch.Generator().manual_seed(1)
    cms = {"a": torch.randint(0, 50, (19, 19), generator=g), "b": torch.randint(0, 50, (19, 19), generator=g)}
    cms["b"][3] = 0
    cms["b"][:, 3] = 0  # class 3 in neither labels nor predictions: n/a, out of the mean
    table, means = dataset_table(cms, [f"c{i}" for i in range(19)])
    for name, cm in cms.items():
        c = cm.double().numpy()
        with np.errstate(invalid="ignore"):
            iou = np.diag(c) / (c.sum(0) + c.sum(1) - np.diag(c))
        assert means[name] == pytest.approx(np.nanmean(iou))
        row = next(line for line in table.splitlines() if line.startswith(f"| {name} "))
        cells = [x.strip() for x in row.strip("|").split("|")][1:]
        expect = ["n/a" if np.isnan(v) else f"{100 * v:.2f}" for v in iou] + [f"{100 * np.nanmean(iou):.2f}"]
        assert cells == expect


def test_evaluate_dataset_errors_name_the_argument(checkpoint, trees, tmp_path, capsys):
    for args, message in (
        (["--dataset", "kitti=x"], "error: --dataset 'kitti=x': 'kitti' is not a dataset with a labelled val split"),
        (["--dataset", f"bdd100k={tmp_path}"], f"error: --dataset bdd100k={tmp_path}: "),
        (["--dataset", f"acdc={trees['acdc']}", "--dataset", f"acdc={trees['acdc']}"], "acdc is given twice"),
    ):  # fmt: skip
        assert evaluate.main([str(checkpoint), *args]) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err


# ---------------------------------------------------------------- test-server submissions


def test_predict_writes_the_acdc_submission(checkpoint, trees, tmp_path):
    out = tmp_path / "acdc_sub"
    tests = sorted((trees["acdc"] / "rgb_anon").glob("*/test/*/*_rgb_anon.png"))
    assert len(tests) == 4
    assert predict.main([str(checkpoint), *map(str, tests), "--out", str(out), "--format", "acdc", "--no-progress"]) == 0
    for image in tests:
        label = np.asarray(Image.open(out / "labelTrainIds" / image.name))
        assert label.dtype == np.uint8 and label.shape == np.asarray(Image.open(image)).shape[:2]
        assert label.max() <= 18
    with zipfile.ZipFile(out / "acdc_submission.zip") as z:
        assert sorted(z.namelist()) == sorted(f"labelTrainIds/{p.name}" for p in tests)


def test_predict_writes_the_dark_zurich_submission(checkpoint, trees, tmp_path):
    out = tmp_path / "dz_sub"
    folder = trees["dark_zurich"] / "rgb_anon" / "test" / "night"
    assert predict.main([str(checkpoint), str(folder), "--out", str(out), "--format", "dark_zurich",
                         "--no-progress"]) == 0  # fmt: skip
    names = sorted(p.name for p in folder.rglob("*_rgb_anon.png"))
    assert len(names) == 2
    for name in names:
        label = np.asarray(Image.open(out / "labelTrainIds" / name))
        np.testing.assert_array_equal(np.asarray(Image.open(out / "labelTrainIds_invalid" / name)), label)
        conf = Image.open(out / "confidence" / name)
        assert conf.mode.startswith("I") and label.shape == (72, 128)
        c = np.asarray(conf)
        assert c.min() >= 65535 // 19 and c.max() <= 65535  # the top of 19 probabilities is at least 1/19
    with zipfile.ZipFile(out / "dark_zurich_submission.zip") as z:
        assert sorted(z.namelist()) == sorted(f"{d}/{n}" for d in ("confidence", "labelTrainIds",
                                                                   "labelTrainIds_invalid") for n in names)  # fmt: skip


def test_predict_submission_refuses_an_image_the_server_cannot_match(checkpoint, tmp_path):
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "holiday.png")
    with pytest.raises(UserError, match="holiday.png: not a acdc test image"):
        predict.main([str(checkpoint), str(tmp_path / "holiday.png"), "--out", str(tmp_path / "o"), "--format", "acdc"])


def test_a_missing_eval_dataset_fails_at_start_up_naming_it(trees, tmp_path, capsys):
    args = ["daformer_gta_dg", f"data.source_root={trees['gta']}", f"data.target_root={trees['cityscapes_val']}",
            f"data.eval_datasets=('mapillary={tmp_path / 'nowhere'}',)", *SMALL, *_small("daformer_gta_dg"),
            "--out", str(tmp_path / "run")]  # fmt: skip
    assert train.main(args) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(err) == 1 and err[0].startswith(f"error: data.eval_datasets mapillary={tmp_path / 'nowhere'}: ")
    assert not (tmp_path / "run" / "latest.pt").exists()  # before the first checkpoint
