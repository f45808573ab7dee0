"""The bad-input table: every expected user mistake gives exit code 2, one line
``error: <message>`` naming the config key, argument or file, and no traceback.

One parametrised test per surface: the config (train's overrides and JSON files), the
data (fake released datasets, checked before the first iteration), checkpoints handed to
``evaluate``, and the CLIs themselves (argparse, convert, the real ``python -m``).
Checkpoint-file errors (not a checkpoint, truncated, another architecture, released
checkpoints) belong to ``fastuda.models.checkpoint``'s reader and are tested there.
"""

import functools
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fastuda import evaluate, predict, train
from fastuda.errors import run_cli
from fastuda.data import _fake, gta5, make_loader
from fastuda.data.check import DataFileError, check_files
from fastuda.data.convert import main as convert_main

ROOT = Path(__file__).resolve().parents[1]


def run(main, argv) -> tuple[int, str]:
    """(exit code, stderr) of a CLI's ``main(argv)`` run in this process."""
    import contextlib
    import io

    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        try:
            code = main([str(a) for a in argv])
        except SystemExit as e:  # argparse's usage errors
            code = e.code
    return code, err.getvalue()


def assert_user_error(code: int, err: str, expected: str) -> str:
    assert code == 2, err
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if "error: " in line]
    assert len(lines) == 1, err  # one line, whatever argparse's usage prints above it
    assert expected in lines[0], lines[0]
    return lines[0]


# ---------------------------------------------------------------- config

CONFIG_CASES = [
    # (preset, overrides, text the message must hold)
    ("demo", ["uda.mode=dac"], "uda.mode='dac'"),  # an enumeration typo trained source-only
    ("demo", ["uda.mode=dac"], "did you mean 'dacs'"),
    ("demo", ["max_iters=-5"], "max_iters=-5"),  # printed 'mIoU at iteration -5'
    ("demo", ["max_iters=0"], "max_iters=0"),  # ZeroDivisionError
    ("demo", ["uda.alpha=2"], "uda.alpha=2.0"),
    ("demo", ["uda.alpha=1"], "uda.alpha=1.0"),
    ("demo", ["uda.pseudo_threshold=0"], "uda.pseudo_threshold"),
    ("demo", ["uda.pseudo_threshold=1.5"], "uda.pseudo_threshold"),
    ("demo", ["uda.pseudo_weight_mode=images"], "did you mean 'image'"),
    ("demo", ["data.recipe=daformr"], "data.recipe"),
    ("demo", ["model.backbone=mit_b6"], "model.backbone"),
    ("demo", ["model.decode_head=segfromer"], "did you mean 'segformer'"),
    ("demo", ["uda.fd_lambda=-1"], "uda.fd_lambda"),
    ("demo", ["uda.mic_lambda=-0.5"], "uda.mic_lambda"),
    ("demo", ["uda.jitter_prob=1.2"], "uda.jitter_prob"),
    ("demo", ["hrda.hr_loss_weight=1.5"], "hrda.hr_loss_weight"),
    ("demo", ["hrda.fixed_attention=1.5"], "hrda.fixed_attention"),
    ("demo", ["data.crop_size=(0,0)"], "data.crop_size"),
    ("demo", ["data.crop_size=64"], "data.crop_size"),
    ("demo", ["data.batch_size=0"], "data.batch_size"),
    ("demo", ["data.workers=-1"], "data.workers"),
    ("demo", ["data.eval_split=test"], "data.eval_split"),
    ("demo", ["optim.lr=0"], "optim.lr"),
    ("demo", ["optim.betas=(0.9,1.5)"], "optim.betas"),
    ("demo", ["optim.warmup_ratio=0"], "optim.warmup_ratio"),
    ("demo", ["optim.grad_clip=-1"], "optim.grad_clip"),
    ("demo", ["rcs.temperature=0"], "rcs.temperature"),
    ("demo", ["log_interval=0"], "log_interval"),
    ("demo", ["seed=-1"], "seed"),
    ("demo", ["out=runs/{nme}"], "out="),
    ("demo", ["name=a/b"], "name="),
    ("demo", ["model.embed_dim=0"], "model.embed_dim"),
    ("demo", ["model.decode_head=deeplabv2", "model.embed_dim=64"], "model.embed_dim"),  # a width nothing reads
    ("demo", ["model.backbone=resnet50"], "model.decode_head"),  # the DAFormer head needs 4 levels
    ("demo", ["model.num_classes=19"], "model.num_classes=19"),  # the synthetic scenes have 6
    ("demo", ["data.target=cityscapes"], "data.target"),
    ("demo", ["data.target=mapillary"], "data.target='mapillary'"),  # evaluation only
    ("demo", ["data.target=acdc_nite"], "did you mean 'acdc_night'"),
    ("demo", ["data.source=acdc"], "data.source='acdc'"),
    ("demo", ["data.resize=(32,32)"], "data.resize"),  # the synthetic scenes are not resized
    ("daformer_gta_dg", ["data.eval_datasets=('bdd100k',)"], "data.eval_datasets=('bdd100k',)"),  # no root
    ("daformer_gta_dg", ["data.eval_datasets=('kitti=data/kitti',)"], "NAME=ROOT with NAME one of"),
    ("daformer_gta_dg", ["data.eval_datasets=('gta=data/gta',)"], "data.eval_datasets"),  # no labelled val split
    ("demo", ["data.eval_datasets=('bdd100k=data/bdd100k',)"], "but data.eval_datasets='bdd100k' has 19"),  # 6 classes
    ("mic_hrda_cs2acdc", ["uda.mic_mode=separatesrc"], "uda.mic_mode='separatesrc'"),
    ("demo", ["uda.pseudo_ignore_top=40", "uda.pseudo_ignore_bottom=40"], "uda.pseudo_ignore_bottom=40"),
    # the default margins (15 + 120) on a small crop: was the op's 'ignore_bottom must be in [0, 64]'
    ("daformer_gta2cs", ["data.crop_size=(64,64)", "model.pretrained=None", "uda.fd_lambda=0"],
     "uda.pseudo_ignore_bottom=120"),  # fmt: skip
    ("demo", ["hrda.enabled=true", "hrda.hr_crop_size=128"], "hrda.hr_crop_size=128"),  # larger than the crop
    ("demo", ["hrda.enabled=true", "hrda.hr_crop_size=32", "hrda.crop_coord_divisible=24"], "hrda.hr_crop_size=32"),
    ("demo", ["hrda.hr_crop_size=36"], "hrda.hr_crop_size=36"),
    ("demo", ["hrda.enabled=true", "model.decode_head=segformer"], "hrda.enabled"),
    ("demo", ["hrda.enabled=true", "data.synthetic_size=72"], "data.synthetic_size"),  # HRDA needs multiples of 32
    # methods and the combinations the published code does not have
    ("demo", ["uda.mode=advsegg"], "did you mean 'advseg'"),
    ("demo", ["uda.mode=advseg", "uda.mic_lambda=1", "uda.mic_block_size=16"], "uda.mic_lambda=1.0 with uda.mode='advseg'"),  # no teacher
    ("demo", ["uda.mode=target_only", "uda.mic_lambda=1", "uda.mic_block_size=16"], "uda.mic_lambda=1.0 with uda.mode='target_only'"),
    ("demo", ["uda.mode=minent", "uda.fd_lambda=0.005"], "uda.fd_lambda=0.005 with uda.mode='minent'"),
    ("demo", ["uda.mode=advseg", "uda.adv_loss=hinge"], "uda.adv_loss='hinge'"),
    ("demo", ["uda.mode=advseg", "uda.adv_betas=(0.9,1.0)"], "uda.adv_betas"),
    ("demo", ["optim.name=adam"], "optim.name='adam'"),
    ("advseg_gta2cs", ["model.decode_head=daformer"], "model.decode_head='daformer' needs a 4-level MiT encoder"),
    ("advseg_gta2cs", ["data.source=synthia"], "data.caug=true with data.source='synthia'"),  # gtaCAug only
    ("advseg_gta2cs", [], "model.pretrained=pretrained/resnet101_v1c.pth: file not found"),  # says where to get it
    ("demo", ["hrda.enabled=true", "model.decode_head=deeplabv2red", "model.embed_dim=32"], "model.embed_dim=32"),
    # FD against a randomly initialised 'ImageNet' encoder
    ("daformer_gta2cs", ["model.pretrained=None"], "uda.fd_lambda=0.005"),
    ("daformer_gta2cs", ["model.pretrained=nowhere/mit_b5.pth"], "model.pretrained=nowhere/mit_b5.pth"),
    ("demo", ["uda.fd_lambda=0.005", "uda.fd_classes=(4,7)"], "uda.fd_classes"),  # class 7 of 6
    # issue 20 #5: a MIC mask of one block hides the whole crop or nothing
    ("demo", ["max_iters=1", "uda.mic_lambda=1", "uda.mic_block_size=64"], "uda.mic_block_size=64 with the 64x64 training crop"),
    ("demo", ["max_iters=1", "uda.mic_lambda=1", "uda.mic_block_size=100"], "expected at most 42"),
    ("demo", ["uda.pseudo_treshold=0.9"], "uda.pseudo_threshold"),  # unknown key: the close match
    ("demo", ["model.hrda_fixed_attention=0.5"], "hrda.fixed_attention"),  # merged into the hrda section
    ("demo", ["model.hrda=true"], "hrda.enabled"),
    ("demo", ["hrda.lr_scale=0.25"], "hrda.lr_scale"),
    ("demo", ["max_iters=abc"], "max_iters"),
    ("demo", ["rcs.enabled=maybe"], "rcs.enabled"),
    ("demo", ["max_iters"], "max_iters"),  # not key=value
    ("demo", ["uda=1"], "'uda' is a section"),
    ("daformer_gta2c", [], "daformer_gta2cs"),  # unknown preset: the close match
]


@pytest.mark.parametrize("preset,overrides,expected", CONFIG_CASES, ids=[" ".join(c[1]) or c[0] for c in CONFIG_CASES])
def test_config(preset, overrides, expected, tmp_path):
    code, err = run(train.main, [preset, *overrides, "--out", tmp_path / "run", "--no-progress"])
    assert_user_error(code, err, expected)
    assert not (tmp_path / "run").exists()  # refused before anything was built or written


def test_default_workers_fit_the_cpus(monkeypatch):
    """Issue 20 #5: data.workers=4 on a 2-CPU machine made PyTorch warn twice a run (into train.log too)."""
    import os
    import warnings

    from torch.utils.data import DataLoader

    from fastuda.config import TrainConfig

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)  # what torch's check reads
    workers = TrainConfig().data.workers
    assert workers == 2
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        DataLoader(range(4), num_workers=workers).check_worker_number_rationality()


def test_warmup_longer_than_the_run_is_said(tmp_path, capsys):
    """Issue 20 #5: max_iters below the warm-up peaked the learning rate at 6e-8 without a word."""
    args = ["demo", "data.synthetic_size=32", "data.synthetic_samples=2", "data.batch_size=1", "max_iters=2",
            "optim.warmup_iters=1500", "eval_interval=-1", "--out", tmp_path, "--no-progress"]  # fmt: skip
    assert train.main([str(a) for a in args]) == 0
    assert ("warning: max_iters=2 is not past optim.warmup_iters=1500: the learning rate never leaves its warm-up "
            "and peaks at 2.0e-07, not optim.lr=0.0006") in capsys.readouterr().err  # fmt: skip


JSON_CASES = [
    # (file text or None for a missing file, text the message must hold besides the path)
    (None, "not found"),
    ('{"max_iters": 10,, }', "not valid JSON"),  # was 'Expecting ... delimiter' without the file
    ('[1, 2]', "JSON object"),
    ('{"uda": {"alpah": 0.5}}', "uda.alpha"),
    ('{"uda": {"alpha": 2}}', "uda.alpha=2"),
    ('{"max_iters": "many"}', "max_iters"),
    ('{"data": {"crop_size": [64, 64, 3]}}', "data.crop_size"),
]


@pytest.mark.parametrize("text,expected", JSON_CASES, ids=[c[1] for c in JSON_CASES])
def test_config_file(text, expected, tmp_path):
    path = tmp_path / "my config.json"
    if text is not None:
        path.write_text(text)
    code, err = run(train.main, [path, "--out", tmp_path / "run", "--no-progress"])
    line = assert_user_error(code, err, expected)
    assert str(path) in line


# ---------------------------------------------------------------- data


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:-100])


def _resize_label(size):
    def change(root: Path) -> Path:
        path = root / "gta" / "labels" / "00002.png"
        Image.fromarray(np.full(size[::-1], 7, np.uint8)).save(path)
        return path

    return change


def _file(rel: str, action):
    def change(root: Path) -> Path:
        path = root / rel
        action(path)
        return path

    return change


def _no_target_train_labels(root: Path) -> Path:
    import shutil

    shutil.rmtree(root / "cityscapes/gtFine/train")
    return root / "cityscapes/gtFine/train"


DATA_CASES = [
    # (id, change to the fake datasets -> the path (or key) the message must name, extra overrides)
    ("source root missing", lambda root: "data.source_root", ["data.source_root=/nonexistent/gta"]),
    ("target root missing", lambda root: "data.target_root", ["data.target_root=/nonexistent/cs"]),
    ("truncated image", _file("gta/images/00002.png", _truncate), []),
    ("truncated label", _file("gta/labels/00003.png", _truncate), []),
    ("label of another size", _resize_label((48, 32)), []),  # same aspect ratio: was stretched
    ("label of another aspect ratio", _resize_label((96, 60)), []),
    ("RGB label", _file("gta/labels/00001.png", lambda p: Image.fromarray(np.zeros((64, 96, 3), np.uint8)).save(p)),
     []),  # fmt: skip
    ("not an image", _file("gta/images/00001.png", lambda p: p.write_bytes(b"not an image" * 20)), []),
    ("image without a label", _file("gta/labels/00003.png", lambda p: p.unlink()), []),
    ("truncated target image",
     _file("cityscapes/leftImg8bit/train/bochum/bochum_000001_000019_leftImg8bit.png", _truncate), []),  # fmt: skip
    ("truncated evaluation image",
     _file("cityscapes/leftImg8bit/val/frankfurt/frankfurt_000000_000019_leftImg8bit.png", _truncate), []),  # fmt: skip
    ("evaluation label of another size",
     _file("cityscapes/gtFine/val/frankfurt/frankfurt_000001_000019_gtFine_labelIds.png",
           lambda p: Image.fromarray(np.full((32, 64), 7, np.uint8)).save(p)), []),  # fmt: skip
    ("RCS min_pixels unsatisfiable", lambda root: "rcs.min_pixels=100000", ["rcs.min_pixels=100000"]),
    ("target-only without target labels", _no_target_train_labels, ["uda.mode=target_only"]),
]


@pytest.fixture
def fakes(tmp_path):
    _fake.write_fake_gta(tmp_path / "gta", count=3)
    _fake.write_fake_cityscapes(tmp_path / "cityscapes")
    return tmp_path


def _data_args(root: Path, out: Path) -> list:
    return ["daformer_gta2cs", f"data.source_root={root / 'gta'}", f"data.target_root={root / 'cityscapes'}",
            "data.resize=(128,64)", "data.crop_size=(32,32)", "data.workers=0", "model.backbone=mit_demo",
            "model.pretrained=None", "uda.fd_lambda=0", "rcs.min_pixels=0", "uda.pseudo_ignore_top=2",
            "uda.pseudo_ignore_bottom=4", "max_iters=2", "--out", out, "--no-progress"]  # fmt: skip


@pytest.mark.parametrize("case,change,extra", DATA_CASES, ids=[c[0] for c in DATA_CASES])
def test_data(case, change, extra, fakes, tmp_path):
    names = change(fakes)
    out = tmp_path / "run"
    code, err = run(train.main, _data_args(fakes, out) + extra)
    assert_user_error(code, err, str(names))
    log = out / "log.jsonl"
    assert not (out / "latest.pt").exists() and (not log.exists() or log.read_text() == "")  # before iteration 1


def _remove(rel: str):
    def change(root: Path) -> Path:
        import shutil

        shutil.rmtree(root / rel)
        return root / rel

    return change


BENCHMARK_CASES = [
    # (id, change to the fake trees -> the path the message must name, target, target tree)
    ("ACDC condition folder missing", _remove("acdc/rgb_anon/snow"), "acdc", "acdc"),
    ("ACDC val labels missing", _remove("acdc/gt/fog/val"), "acdc", "acdc"),
    ("ACDC one condition of the flattened layout", lambda root: f"{root / 'acdc_flat' / 'rgb_anon'}/",
     "acdc_night", "acdc_flat"),  # fmt: skip (the split built first is named: val for the start-up check)
    ("ACDC truncated image",
     _file("acdc/rgb_anon/rain/train/GOPR0400/GOPR0400_frame_000008_rgb_anon.png", _truncate), "acdc", "acdc"),  # fmt: skip
    ("Dark Zurich without its night folder", _remove("dark_zurich/rgb_anon/train/night"), "dark_zurich",
     "dark_zurich"),  # fmt: skip
    ("Dark Zurich val label of another size",
     _file("dark_zurich/gt/val/night/GOPR0356/GOPR0356_frame_000004_gt_labelTrainIds.png",
           lambda p: Image.fromarray(np.zeros((20, 40), np.uint8)).save(p)), "dark_zurich", "dark_zurich"),  # fmt: skip
]


@pytest.mark.parametrize("case,change,target,tree", BENCHMARK_CASES, ids=[c[0] for c in BENCHMARK_CASES])
def test_benchmark_data(case, change, target, tree, tmp_path):
    """Cityscapes -> ACDC / Dark Zurich trees in their released layouts (and the published
    flattened ACDC copy), broken one way each: refused before iteration 1, naming the path."""
    _fake.write_fake_cityscapes(tmp_path / "cityscapes", {"train": 2, "val": 1})
    _fake.write_fake_acdc(tmp_path / "acdc", size=(128, 72))
    _fake.write_fake_acdc(tmp_path / "acdc_flat", layout="flat", size=(128, 72))
    _fake.write_fake_dark_zurich(tmp_path / "dark_zurich", size=(128, 72))
    names = change(tmp_path)
    out = tmp_path / "run"
    args = _data_args(tmp_path, out) + ["data.source=cityscapes", f"data.source_root={tmp_path / 'cityscapes'}",
                                        f"data.target={target}", f"data.target_root={tmp_path / tree}"]  # fmt: skip
    code, err = run(train.main, args)
    assert_user_error(code, err, str(names))
    assert not (out / "latest.pt").exists()


def test_convert_mapillary_of_the_wrong_shape(tmp_path):
    root = _fake.write_fake_mapillary(tmp_path / "mapillary", count=2)
    (root / "validation").rename(root / "val")  # not the release's folder name
    code, err = run(convert_main, ["mapillary", root, "--quiet"])
    assert_user_error(code, err, str(root / "validation" / "images"))


@pytest.mark.parametrize("workers", [0, 2])
def test_file_unreadable_mid_run_is_one_line(workers, tmp_path):
    root = _fake.write_fake_gta(tmp_path / "gta", count=2)
    dataset = gta5(root)
    check_files(dataset, "data.source_root")  # fine at start-up
    image = root / "images" / "00002.png"
    _truncate(image)  # the disk changed
    loader = make_loader(dataset, batch_size=1, workers=workers, shuffle=False, pin_memory=False)
    with pytest.raises(DataFileError) as info:
        list(loader)
    message = str(info.value)
    assert "\n" not in message and str(image) in message and "truncated" in message


def test_truncated_jpeg_in_a_folder_dataset(tmp_path):
    from fastuda.data import folder_dataset

    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    for name in ("a", "b"):
        Image.fromarray(np.zeros((32, 48, 3), np.uint8)).save(tmp_path / "images" / f"{name}.jpg", quality=90)
        Image.fromarray(np.zeros((32, 48), np.uint8)).save(tmp_path / "labels" / f"{name}.png")
    _truncate(tmp_path / "images" / "b.jpg")
    with pytest.raises(DataFileError, match=r"data.source_root: 1 of 2 samples are unusable: .*b\.jpg: the JPEG is"):
        check_files(folder_dataset(tmp_path, classes=["x", "y"]), "data.source_root")


# ---------------------------------------------------------------- checkpoints given to evaluate


@pytest.fixture(scope="module")
def demo_checkpoint(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo_run")
    args = ["demo_source_only", "data.synthetic_size=32", "data.synthetic_samples=4", "data.batch_size=2",
            "max_iters=1", "--out", str(out), "--no-progress"]  # fmt: skip
    assert train.main(args) == 0
    return out / "latest.pt"


CHECKPOINT_CASES = [
    # (evaluate arguments after the checkpoint, text the message must hold)
    (["uda.alpah=0.9"], "uda.alpha"),  # was a traceback where train printed a usage message
    (["data.target=cityscapes", "data.source=gta"], "model.num_classes=6"),  # was 'class indices in [0, 6)'
    (["--teacher"], "holds no teacher"),  # a source-only run
    (["--crop", "0", "0"], "--crop"),  # was a convolution error
    (["--crop", "64", "64", "--stride", "0", "8"], "--stride"),
    (["--stride", "8", "8"], "--stride needs --crop"),
    (["--split", "test"], "--split"),
    (["data.eval_samples=0"], "data.eval_samples"),
]


@pytest.mark.parametrize("args,expected", CHECKPOINT_CASES, ids=[" ".join(c[0]) for c in CHECKPOINT_CASES])
def test_checkpoint(args, expected, demo_checkpoint):
    code, err = run(evaluate.main, [demo_checkpoint, *args])
    assert_user_error(code, err, expected)


def test_evaluation_label_size_mismatch(fakes, tmp_path):
    """A demo-sized run on the fake datasets, then a val label of another size: refused by evaluate too."""
    out = tmp_path / "run"
    assert train.main([str(a) for a in _data_args(fakes, out)]) == 0
    label = fakes / "cityscapes/gtFine/val/frankfurt/frankfurt_000000_000019_gtFine_labelIds.png"
    Image.fromarray(np.full((60, 128), 7, np.uint8)).save(label)
    code, err = run(evaluate.main, [out / "latest.pt"])
    assert_user_error(code, err, str(label))


# ---------------------------------------------------------------- the command lines


CLI_CASES = [
    # (module main, argv, text the message must hold)
    (convert_main, ["gta", "/nonexistent/gta", "--quiet"], "/nonexistent/gta"),
    (convert_main, ["mapillary", "/nonexistent/mapillary", "--quiet"], "/nonexistent/mapillary"),
    (convert_main, ["gtaa", "/tmp"], "gtaa"),
    (convert_main, ["gta", "/tmp", "--workers", "0"], "--workers"),
    (train.main, ["demo", "--amp", "fp8"], "--amp"),
    (train.main, ["demo", "--stop-at", "x"], "--stop-at"),
    (evaluate.main, [], "checkpoint"),
    (evaluate.main, ["x.pt", "--dataset", "bdd100k"], "--dataset"),
    (functools.partial(run_cli, predict.main), ["x.pt", "a_frame_000001.png", "--out", "o", "--format", "acdc",
                                                "--native"], "--format acdc"),  # fmt: skip
    (functools.partial(run_cli, predict.main), ["x.pt", "a.png", "--out", "o", "--format", "cityscapes"], "--format"),
]


@pytest.mark.parametrize("main,argv,expected", CLI_CASES, ids=[" ".join(c[1]) for c in CLI_CASES])
def test_cli(main, argv, expected):
    code, err = run(main, argv)
    assert_user_error(code, err, expected)


def test_convert_names_the_bad_label(tmp_path):
    root = _fake.write_fake_gta(tmp_path / "gta", count=2)
    _truncate(root / "labels" / "00001.png")
    code, err = run(convert_main, ["gta", root, "--quiet", "--workers", "1"])
    assert code == 2 and "Traceback" not in err and str(root / "labels" / "00001.png") in err


def test_unexpected_errors_keep_their_traceback(monkeypatch, tmp_path):
    def broken(*args, **kwargs):
        raise RuntimeError("a bug, not a user mistake")

    monkeypatch.setattr(train, "train", broken)
    with pytest.raises(RuntimeError, match="a bug"):
        train.main(["demo", "--out", str(tmp_path), "--no-progress"])


TRAIN_ARGUMENT_ERRORS = [["demo", "uda.mode=dac"], ["demo", "--amp", "fp8"], [], ["demo", "max_iters"],
                         ["nopreset"], ["--list-keys", "demo", "uda.alpah=1"]]  # fmt: skip


@pytest.mark.parametrize("argv", TRAIN_ARGUMENT_ERRORS, ids=[" ".join(a) or "none" for a in TRAIN_ARGUMENT_ERRORS])
def test_train_argument_errors_come_before_torch(argv):
    """Issue 20 #9: every CLI error took 5-7 s, the heavy imports running before the arguments were
    checked. Now torch is not even imported (the real command: about 0.3 s)."""
    code = ("import sys\nfrom fastuda import train\ntry:\n    code = train.main(sys.argv[1:])\n"
            "except SystemExit as e:\n    code = e.code\nprint('torch' in sys.modules, code)")  # fmt: skip
    result = subprocess.run([sys.executable, "-c", code, *argv], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.stdout.split() == ["False", "2"], result.stdout + result.stderr
    assert_user_error(2, result.stderr, "")


EVALUATE_ARGUMENT_ERRORS = [["x.pt", "--crop", "0", "0"], ["x.pt", "--stride", "8", "8"], ["x.pt", "--dataset", "bogus"],
                            ["x.pt", "--amp", "fp8"], []]  # fmt: skip


@pytest.mark.parametrize("argv", EVALUATE_ARGUMENT_ERRORS, ids=[" ".join(a) or "none" for a in EVALUATE_ARGUMENT_ERRORS])
def test_evaluate_argument_errors_come_before_torch(argv):
    """Issue 20 #9 for evaluate: its errors took 3.7 s (torch and the runtime imported first); now 0.1 s."""
    code = ("import sys\nfrom fastuda import evaluate\ntry:\n    code = evaluate.main(sys.argv[1:])\n"
            "except SystemExit as e:\n    code = e.code\nprint('torch' in sys.modules, code)")  # fmt: skip
    result = subprocess.run([sys.executable, "-c", code, *argv], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.stdout.split() == ["False", "2"], result.stdout + result.stderr


PREDICT_ARGUMENT_ERRORS = [["x.pt", "x.png", "--out", "o", "--batch-size", "0"], ["x.pt", "nothere.png", "--out", "o"],
                           ["x.pt", "x.png", "--out", "o", "--format", "kitti"], ["x.pt"]]  # fmt: skip


@pytest.mark.parametrize("argv", PREDICT_ARGUMENT_ERRORS, ids=[" ".join(a) for a in PREDICT_ARGUMENT_ERRORS])
def test_predict_argument_errors_come_before_torch(argv):
    """Issue 20 #9 for predict: its errors took 3.2 s (torch imported through fastuda.data first)."""
    code = ("import sys\nfrom fastuda import predict\nfrom fastuda.errors import run_cli\ntry:\n"
            "    code = run_cli(predict.main, sys.argv[1:])\nexcept SystemExit as e:\n    code = e.code\n"
            "print('torch' in sys.modules, code)")  # fmt: skip
    result = subprocess.run([sys.executable, "-c", code, *argv], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.stdout.split() == ["False", "2"], result.stdout + result.stderr


CONVERT_ARGUMENT_ERRORS = [["kitti", "/data/kitti"], ["gta", "/data/gta", "--workers", "0"], ["gta"], []]


@pytest.mark.parametrize("argv", CONVERT_ARGUMENT_ERRORS, ids=[" ".join(a) or "none" for a in CONVERT_ARGUMENT_ERRORS])
def test_convert_argument_errors_come_before_torch(argv):
    """Issue 20 #9 for convert: its errors took 1.8 s (fastuda.data's __init__ imported torch, and
    convert the loaders, before argparse ran). Run as ``python -m`` does (runpy: the package, then
    the module as __main__); the real command now takes about 0.1 s."""
    code = ("import runpy, sys\nsys.argv[0] = 'convert'\ntry:\n"
            "    runpy.run_module('fastuda.data.convert', run_name='__main__', alter_sys=True)\n"
            "except SystemExit as e:\n    code = e.code\nprint('torch' in sys.modules, code)")  # fmt: skip
    result = subprocess.run([sys.executable, "-c", code, *argv], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.stdout.split() == ["False", "2"], result.stdout + result.stderr
    assert_user_error(2, result.stderr, "")


@pytest.mark.parametrize("argv,expected", [
    (["-m", "fastuda.train", "demo", "uda.mode=dac"], "uda.mode='dac'"),
    (["-m", "fastuda.evaluate", "/nonexistent.pt", "--crop", "0", "0"], "--crop"),
    (["-m", "fastuda.data.convert", "gta", "/nonexistent/gta"], "/nonexistent/gta"),
], ids=["train", "evaluate", "convert"])  # fmt: skip
def test_real_command_line(argv, expected):
    result = subprocess.run([sys.executable, *argv], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert_user_error(result.returncode, result.stderr, expected)
    assert result.stdout == ""
