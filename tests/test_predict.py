"""``python -m fastuda.predict`` and ``fastuda.Segmenter``: a folder of JPEGs and PNGs of odd sizes with
one corrupt file, through the CLI, from a DAFormer and an HRDA network (tiny MiT, random weights)
saved in fastuda's training layout and in the released DAFormer / HRDA / MIC layout (mmseg's
``{"meta", "state_dict"}`` with ``model.`` / ``ema_model.`` / ``imnet_model.`` prefixes)."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from fastuda import Segmenter, predict
from fastuda.data.labels import CITYSCAPES_ID_TO_TRAIN_ID
from fastuda.data.transforms import normalize

from _checkpoints import network, write_fastuda, write_released

# (name, size (W, H), format, mode): odd sizes, grey and RGBA inputs, one in a sub-folder
IMAGES = [("a.png", (53, 37), "PNG", "RGB"), ("b.jpg", (64, 48), "JPEG", "RGB"), ("sub/c.png", (70, 41), "PNG", "L"),
          ("sub/d.jpeg", (45, 61), "JPEG", "RGB"), ("e.png", (33, 65), "PNG", "RGBA")]  # fmt: skip


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for name, (w, h), fmt, mode in IMAGES:
        path = root / name
        path.parent.mkdir(exist_ok=True)
        pixels = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        Image.fromarray(pixels).convert(mode).save(path, format=fmt)
    (root / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a JPEG")
    (root / "notes.txt").write_text("not an image: ignored")
    return root


@pytest.fixture(scope="module", params=["daformer", "hrda"])
def checkpoints(request, tmp_path_factory):
    root = tmp_path_factory.mktemp(request.param)
    cfg, model = network(request.param)
    from fastuda.data.synthetic import CLASSES

    classes = CLASSES if cfg.model.num_classes == len(CLASSES) else None
    return request.param, cfg, model, {
        "fastuda": write_fastuda(root / "latest.pt", cfg, model),
        "released": write_released(root / "released.pth", model, classes),
    }


def reference_labels(kind, model, image):
    """The network's own forward on the normalised image, argmax at the image size."""
    x = normalize(image)[None]
    with torch.no_grad():
        if kind == "hrda":
            H, W = x.shape[-2:]
            logits = model.forward_pseudo(F.pad(x, (0, -W % 32, 0, -H % 32)))[:, :, :H, :W]
        else:
            logits = F.interpolate(model(x), size=x.shape[-2:], mode="bilinear", align_corners=False)
    return logits.argmax(1)[0]


def read_rgb(path):
    return torch.from_numpy(np.array(Image.open(path).convert("RGB"))).permute(2, 0, 1)


@pytest.mark.parametrize("layout", ["fastuda", "released"])
def test_cli_on_a_folder_with_a_corrupt_file(checkpoints, layout, image_dir, tmp_path, capsys):
    kind, cfg, model, files = checkpoints
    out = tmp_path / "out"
    overrides = ["hrda.hr_crop_size=64"] if kind == "hrda" and layout == "released" else []
    args = [str(files[layout]), str(image_dir), "--out", str(out), "--side-by-side", "--no-progress", "--batch-size", "2"]
    if layout == "released":  # the published recipe resizes into 1024x512 / 2048x1024: keep the tiny images as they are
        args += ["--native"] + overrides
    assert predict.main(args) == 1
    err = capsys.readouterr().err
    assert "1 of 6 images could not be read" in err and str(image_dir / "broken.jpg") in err and "wrote 5 of 6" in err

    seg = Segmenter.from_checkpoint(files[layout], "cpu", overrides=overrides, scale=None)
    palette = predict.palette(seg.class_names)
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    kinds = ["color", "labelTrainIds", "side"] + (["labelIds"] if kind == "hrda" else [])
    assert written == sorted(f"{k}/{n.rsplit('.', 1)[0]}.png" for k in kinds for n, *_ in IMAGES)
    for name, (w, h), *_ in IMAGES:
        png = name.rsplit(".", 1)[0] + ".png"
        image = read_rgb(image_dir / name)
        labels = torch.from_numpy(np.array(Image.open(out / "labelTrainIds" / png)))
        assert labels.shape == (h, w) and labels.dtype == torch.uint8
        # the same labels as the Python API, and as the network's own forward
        torch.testing.assert_close(labels.long(), seg(image_dir / name), rtol=0, atol=0)
        if name in ("a.png", "b.jpg"):  # (two are enough: the forward costs seconds on a busy CPU)
            torch.testing.assert_close(labels.long(), reference_labels(kind, model, image), rtol=0, atol=0)
        colour = torch.from_numpy(palette[labels.numpy()]).permute(2, 0, 1).float()
        overlay = read_rgb(out / "color" / png).float()
        assert (overlay - (image.float() + colour) / 2).abs().max() <= 1
        side = read_rgb(out / "side" / png)
        assert side.shape == (3, h, 2 * w) and torch.equal(side[:, :, :w], image)
        if kind == "hrda":
            ids = torch.from_numpy(np.array(Image.open(out / "labelIds" / png))).long()
            back = {v: k for k, v in CITYSCAPES_ID_TO_TRAIN_ID.items()}
            assert torch.equal(ids, labels.long().apply_(back.__getitem__))
    assert not [p for p in out.rglob("*") if ".tmp" in p.name]


def test_layouts_agree_and_follow_the_published_test_settings(checkpoints, image_dir):
    kind, cfg, model, files = checkpoints
    extra = ["hrda.hr_crop_size=64"] if kind == "hrda" else []
    own = Segmenter.from_checkpoint(files["fastuda"], "cpu")
    released = Segmenter.from_checkpoint(files["released"], "cpu", overrides=extra, scale=None)
    image = np.array(Image.open(image_dir / "b.jpg"))  # numpy input
    labels, probs = own(image, probabilities=True)
    assert probs.shape == (cfg.model.num_classes, 48, 64)
    torch.testing.assert_close(probs.sum(0), torch.ones(48, 64))
    assert torch.equal(probs.argmax(0), labels) and torch.equal(released(image), labels)
    # the released file's teacher is the ema_model weights (the student's + 1)
    teacher = Segmenter.from_checkpoint(files["released"], "cpu", teacher=True)
    name = "decode_head.head.conv_seg.bias" if kind == "hrda" else "decode_head.conv_seg.bias"
    torch.testing.assert_close(teacher.model.state_dict()[name], model.state_dict()[name] + 1)
    # the published test settings come from the network: DAFormer whole image in 1024x512,
    # HRDA / MIC 1024 windows with stride 512 in 2048x1024; the demo config runs at the image size
    published = Segmenter.from_checkpoint(files["released"], "cpu")
    assert own.scale is None and own.crop is None
    if kind == "hrda":
        assert (published.scale, published.crop, published.stride) == ((2048, 1024), (1024, 1024), (512, 512))
    else:
        assert (published.scale, published.crop) == ((1024, 512), None)
        assert own.class_names == published.class_names == ("sky", "road", "building", "vegetation", "car", "pole")


def test_inputs_files_globs_and_tensors(checkpoints, image_dir, tmp_path):
    kind, cfg, model, files = checkpoints
    if kind != "daformer":
        pytest.skip("input handling does not depend on the network")
    out = tmp_path / "out"
    args = [str(files["fastuda"]), str(image_dir / "a.png"), str(image_dir / "**" / "*.jpeg"), "--out", str(out),
            "--no-progress"]  # fmt: skip
    assert predict.main(args) == 0
    assert sorted(p.name for p in (out / "labelTrainIds").iterdir()) == ["a.png", "d.png"]
    assert not (out / "labelIds").exists() and not (out / "side").exists()  # 6 classes; no --side-by-side
    seg = Segmenter.from_checkpoint(files["fastuda"], "cpu")
    image = read_rgb(image_dir / "a.png")
    want = seg(image)
    assert torch.equal(seg(Image.open(image_dir / "a.png")), want)
    assert torch.equal(seg(image.float()), want)
    a, b = seg.segment([image, image_dir / "b.jpg"])
    assert torch.equal(a, want) and b.shape == (48, 64)


@pytest.mark.parametrize(
    "args, message",
    [
        (["{ckpt}", "{missing}"], "input {missing}: no such file or folder"),
        (["{ckpt}", "{tmp}/*.nothing"], "matches no file"),
        (["{tmp}/none.pt", "{images}"], "checkpoint {tmp}/none.pt not found"),
        (["{ckpt}", "{images}", "--config", "demo", "model.backbone=mit_b0"],
         "{ckpt}: checkpoint is mit_demo + daformer, config asks for mit_b0 + daformer"),
        (["{ckpt}", "{images}", "--batch-size", "0"], "--batch-size must be at least 1"),
        (["{ckpt}", "{images}", "uda.alphaa=0.9"], "unknown config key 'uda.alphaa'"),
    ],
)
def test_cli_errors_name_the_input(checkpoints, image_dir, tmp_path, capsys, args, message):
    kind, cfg, model, files = checkpoints
    if kind != "daformer":
        pytest.skip("argument handling does not depend on the network")
    values = {"ckpt": files["fastuda"], "missing": tmp_path / "missing.png", "tmp": tmp_path, "images": image_dir}
    from fastuda.errors import run_cli

    argv = [a.format(**values) for a in args] + ["--out", str(tmp_path / "out"), "--no-progress"]
    assert run_cli(predict.main, argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message.format(**values) in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("kind", ["daformer", pytest.param("hrda", marks=pytest.mark.slow)])
def test_compile_gives_the_same_labels(kind, image_dir, tmp_path):
    """``compile=`` goes through torch.compile (the aot_eager backend: no C++ toolchain needed)."""
    cfg, model = network(kind)
    path = write_fastuda(tmp_path / "latest.pt", cfg, model)
    plain = Segmenter.from_checkpoint(path, "cpu")
    compiled = Segmenter.from_checkpoint(path, "cpu", compile="aot_eager")
    image = read_rgb(image_dir / "b.jpg")
    torch._dynamo.reset()
    torch.testing.assert_close(compiled(image, probabilities=True)[1], plain(image, probabilities=True)[1],
                               rtol=1e-4, atol=1e-5)  # fmt: skip


def test_out_is_a_file_and_colliding_names(checkpoints, tmp_path, capsys):
    """Issue 20 #4: --out naming a file was a traceback; x.png beside x.jpg got advice that could not help."""
    kind, cfg, model, files = checkpoints
    if kind != "daformer":
        pytest.skip("argument handling does not depend on the network")
    from fastuda.errors import run_cli

    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("x.png", "x.jpg"):
        Image.new("RGB", (40, 30)).save(folder / name)
    (tmp_path / "taken").write_text("a file")
    assert run_cli(predict.main, [str(files["fastuda"]), str(folder / "x.png"), "--out", str(tmp_path / "taken"),
                                  "--no-progress"]) == 2  # fmt: skip
    err = capsys.readouterr().err
    assert err == f"error: --out {tmp_path / 'taken'} is a file; expected a folder (new or existing) for the outputs\n"
    assert run_cli(predict.main, [str(files["fastuda"]), str(folder), "--out", str(tmp_path / "o"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: inputs {folder / 'x.jpg'} and {folder / 'x.png'} would both write x.png; rename "
                          "one of them (outputs drop the input's suffix), or predict them into two --out folders")
    assert "Traceback" not in err and not (tmp_path / "o").exists()


def test_segmenter_takes_pils_modes_from_arrays_and_checks_the_range(checkpoints, image_dir):
    """Issue 20 #7: grey and RGBA arrays work as their PIL images do; floats in [0, 1] are refused."""
    kind, cfg, model, files = checkpoints
    if kind != "daformer":
        pytest.skip("input handling does not depend on the network")
    from fastuda.errors import UserError
    from fastuda.inference import to_image_tensor

    seg = Segmenter.from_checkpoint(files["fastuda"], "cpu")
    grey = Image.open(image_dir / "sub" / "c.png")
    rgba = Image.open(image_dir / "e.png")
    assert grey.mode == "L" and rgba.mode == "RGBA"
    g, a = np.asarray(grey), np.asarray(rgba)
    for array, pil in ((g, grey), (g[..., None], grey), (a, rgba)):
        assert torch.equal(to_image_tensor(array), to_image_tensor(pil))
    assert torch.equal(seg(g), seg(grey)) and torch.equal(seg(a), seg(rgba))
    assert torch.equal(seg(torch.from_numpy(a).permute(2, 0, 1)), seg(rgba))
    assert torch.equal(seg(torch.from_numpy(g.astype(np.int64))), seg(grey))  # integer 0..255 of any dtype
    image = read_rgb(image_dir / "a.png")
    with pytest.raises(UserError, match=r"image tensor of floats in \[0, 1\]: expected values 0\.\.255"):
        seg(image.float() / 255)
    with pytest.raises(UserError, match=r"image array values in \[-1, 1\.5\]: expected 0\.\.255"):
        seg(np.array([[[-1.0, 0.5, 1.5]]]).repeat(4, 0).repeat(4, 1))
    with pytest.raises(UserError, match=r"image array must be \(H, W\) grey, \(H, W, 3\) RGB or \(H, W, 4\) RGBA"):
        seg(np.zeros((4, 4, 2), np.uint8))
