"""AdvSeg / MinEnt / source-only / target-only inside the training step and the CLI:

- one step of ``uda_step`` equals, in float64, a transcription of the published
  ``AdvSeg.forward_train`` / ``MinEnt.forward_train`` (HRDA / MIC mmseg/models/uda/): the
  segmentor's and the discriminator's gradients, and the losses, for a plain segmentor and
  for HRDA (main prediction: the fused logits at half the crop);
- the step makes no host sync (``test_uda``'s detector) and its model calls trace with
  zero graph breaks;
- each mode trains through the CLI on the synthetic scenes, and AdvSeg resumes exactly
  (the discriminator and its optimiser are in the checkpoint)."""

import copy
import json

import pytest
import torch
import torch._dynamo
import torch.nn.functional as F
from _step import TinyBNEncoder, steps_without_host_sync
from test_methods import PublishedFCDiscriminator, published_advseg_losses, published_entropy_loss
from test_train import TINY, assert_same_networks
from test_uda import SyncDetector

from fastuda import config, train
from fastuda.models import EncoderDecoder, HRDASegmentor
from fastuda.models.daformer_head import DeepLabV2Head
from fastuda.models.discriminator import FCDiscriminator
from fastuda.uda import StepState, uda_step
from fastuda.uda.advseg import generator_loss
from fastuda.uda.minent import entropy_loss
from fastuda.uda.step import _detail_box, main_prediction, main_prediction_loss

K = 6  # the demo's classes


def _segmentor(hrda: bool):
    torch.manual_seed(0)
    if hrda:
        return HRDASegmentor(TinyBNEncoder(), K, detail_crop=64, single_scale_head="deeplabv2").double()
    return EncoderDecoder(TinyBNEncoder(), DeepLabV2Head(16, K, dilations=(6, 12))).double()


def _cfg(mode: str):
    return config.load_config("demo", [f"uda.mode={mode}", "uda.adv_lambda=0.3", "uda.ent_lambda=0.2"])


def published_forward_with_aux(model, img, box):
    """EncoderDecoder / HRDAEncoderDecoder.forward_with_aux ['main'] and the source loss
    (decode_head.losses); HRDA's main prediction resized to half the image as AdvSeg / MinEnt do."""
    if isinstance(model, HRDASegmentor):
        from test_hrda_dlv2 import published_hrda_forward

        fused, hr = published_hrda_forward(model, img, box)
        return fused, hr, F.interpolate(fused, size=[int(e * 0.5) for e in img.shape[2:]], mode="bilinear",
                                        align_corners=False)  # fmt: skip
    out = model.decode_head(model.backbone(img))
    out = F.interpolate(out, size=img.shape[2:], mode="bilinear", align_corners=False)
    return out, None, out


def published_source_loss(model, fused, hr, label, box):
    if isinstance(model, HRDASegmentor):
        from test_hrda_dlv2 import published_hrda_loss

        return published_hrda_loss(fused, hr, label, box)
    return F.cross_entropy(fused, label, ignore_index=255, reduction="none").mean()


def _batch():
    torch.manual_seed(5)
    label = torch.randint(0, K, (2, 128, 128))
    label[:, :7] = 255
    return {"source": {"image": torch.randn(2, 3, 128, 128, dtype=torch.float64), "label": label},
            "target": {"image": torch.randn(2, 3, 128, 128, dtype=torch.float64)}}  # fmt: skip


@pytest.mark.parametrize("hrda", [False, True], ids=["dlv2", "hrda_dlv2"])
@pytest.mark.parametrize("mode", ["advseg", "minent"])
def test_step_matches_published_forward_train(mode, hrda):
    cfg, batch = _cfg(mode), _batch()
    ours = _segmentor(hrda).train()
    published = copy.deepcopy(ours)
    torch.manual_seed(1)
    disc = FCDiscriminator(K).double()
    pub_disc = PublishedFCDiscriminator(K).double()
    pub_disc.load_state_dict(disc.state_dict())
    generator = torch.Generator().manual_seed(7)
    boxes = [None, None]
    if hrda:  # the step's two draws (source, then target) from the same generator state
        g = torch.Generator().manual_seed(7)
        boxes = [tuple(int(v) for v in _detail_box(ours, batch["source"]["image"], g)) for _ in range(2)]
    state = StepState(ours, None, generator, discriminator=disc if mode == "advseg" else None)
    loss, logs = uda_step(state, batch, cfg, 0)

    # the published forward_train, transcribed: source, target term, discriminator
    src, tgt, lbl = batch["source"]["image"], batch["target"]["image"], batch["source"]["label"]
    fused, hr, pred = published_forward_with_aux(published, src, boxes[0])
    src_loss = published_source_loss(published, fused, hr, lbl, boxes[0])
    src_loss.backward()
    _, _, pred_trg = published_forward_with_aux(published, tgt, boxes[1])
    if mode == "advseg":
        loss_g, d_src, d_trg = published_advseg_losses(pub_disc, pred, pred_trg, 0.3)
        torch.testing.assert_close(logs["loss_adv"], loss_g.detach(), rtol=1e-12, atol=1e-15)
        torch.testing.assert_close(logs["loss_disc"], (d_src + d_trg).detach(), rtol=1e-12, atol=1e-15)
        for (n, p), q in zip(disc.named_parameters(), pub_disc.parameters()):
            torch.testing.assert_close(p.grad, q.grad, rtol=1e-10, atol=1e-15, msg=f"discriminator {n}")
    else:
        ent = 0.2 * published_entropy_loss(F.softmax(pred_trg, dim=1))
        ent.backward()
        torch.testing.assert_close(logs["loss_ent"], ent.detach(), rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(logs["loss_src"], src_loss.detach(), rtol=1e-12, atol=1e-15)
    for (n, p), q in zip(ours.named_parameters(), published.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-10, atol=1e-14, msg=n)


# ---------------------------------------------------------------- no host sync, no graph break

_TINY_STEP = ["data.synthetic_size=64", "data.batch_size=2", "model.backbone=mit_demo",
              "model.pretrained=None", "uda.fd_lambda=0"]  # fmt: skip


def _tiny_setup(mode: str, hrda: bool, device):
    from fastuda.runtime.build import build_segmentor

    cfg = config.load_config("demo", _TINY_STEP + [f"uda.mode={mode}"] + (["hrda.enabled=true", "hrda.hr_crop_size=32"]
                                                                          if hrda else []), from_pretrained=False)
    torch.manual_seed(0)
    student = build_segmentor(cfg)
    S = cfg.data.synthetic_size
    batch = {"source": {"image": torch.randn(2, 3, S, S), "label": torch.randint(0, K, (2, S, S))},
             "target": {"image": torch.randn(2, 3, S, S)}}  # fmt: skip
    batch = {d: {k: v.to(device) for k, v in part.items()} for d, part in batch.items()}
    disc = FCDiscriminator(K) if mode == "advseg" else None
    return cfg, student.to(device), None if disc is None else disc.to(device), batch


@pytest.mark.parametrize("hrda", [False, True], ids=["daformer", "hrda"])
@pytest.mark.parametrize("mode", ["advseg", "minent", "target_only"])
def test_step_has_no_host_sync(mode, hrda):
    cfg, student, disc, batch = _tiny_setup(mode, hrda, "meta")
    if mode == "target_only":
        del batch["target"]
    with SyncDetector():
        loss, logs = uda_step(StepState(student, discriminator=disc), batch, cfg, 1)
    assert loss.device.type == "meta" and all(p.grad is not None for p in student.decode_head.parameters())
    if disc is not None:
        assert all(p.grad is not None for p in disc.parameters()) and "loss_disc" in logs


@pytest.mark.cuda
@pytest.mark.parametrize("hrda", [False, True], ids=["daformer", "hrda"])
@pytest.mark.parametrize("mode", ["advseg", "minent"])
def test_step_no_host_sync_on_cuda(mode, hrda):
    """The real kernels under torch.cuda.set_sync_debug_mode("error"), bf16 autocast: one
    warm-up step, then two checked steps."""
    cfg, student, disc, batch = _tiny_setup(mode, hrda, "cuda")
    generator = torch.Generator("cuda").manual_seed(0)
    state = StepState(student, None, generator, discriminator=disc, autocast_dtype=torch.bfloat16)
    loss, logs = steps_without_host_sync(state, batch, cfg)
    assert torch.isfinite(loss) and ("loss_disc" in logs) == (mode == "advseg")


@pytest.mark.parametrize("hrda", [False, pytest.param(True, marks=pytest.mark.slow)], ids=["daformer", "hrda"])
def test_prediction_calls_have_no_graph_break(hrda):
    cfg, student, _, batch = _tiny_setup("advseg", hrda, "cpu")
    img, lbl = batch["source"]["image"], batch["source"]["label"]
    box = _detail_box(student, img, torch.Generator().manual_seed(0))
    disc = FCDiscriminator(K)

    def target_terms(model, image, box):
        pred = main_prediction(model, image, box)
        return generator_loss(disc, pred) + entropy_loss(pred)

    for fn, args in ((main_prediction_loss, (student, img, lbl, box)), (target_terms, (student, img, box))):
        torch._dynamo.reset()
        explanation = torch._dynamo.explain(fn)(*args)
        assert explanation.graph_break_count == 0, [str(b.reason)[:200] for b in explanation.break_reasons]


# ---------------------------------------------------------------- presets and the CLI


def test_presets_carry_published_numbers():
    """HRDA experiments.py id 41 (dlv2red, SGD 0.0025, no head multiplier) with
    configs/_base_/uda/advseg.py / minent.py, and id 43 (DAFormer oracle)."""
    for name, mode in (("advseg_gta2cs", "advseg"), ("minent_gta2cs", "minent")):
        c = config.preset(name)
        assert (c.uda.mode, c.model.backbone, c.model.decode_head, c.data.crop_size) == (mode, "resnet101",
                                                                                        "deeplabv2red", (512, 512))
        assert (c.optim.name, c.optim.lr, c.optim.momentum, c.optim.weight_decay, c.optim.head_lr_mult) == (
            "sgd", 0.0025, 0.9, 0.0005, 1.0)
        assert (c.optim.warmup_iters, c.optim.power, c.max_iters, c.seed, c.uda.fd_lambda, c.rcs.enabled) == (
            1500, 1.0, 40000, 0, 0.0, False)
        assert name in config.PRESETS[name].__doc__ or "experiments.py" in config.PRESETS[name].__doc__
    for name, mode in (("advseg_hrda_gta2cs", "advseg"), ("minent_hrda_gta2cs", "minent")):
        # the HRDA rows of id 41: 'gtaCAugHR' -> 'cityscapesHR', crop 1024, hrda1-512-0.1_dlv2red, whole-image test
        c, low = config.preset(name), config.preset(name.replace("_hrda", ""))
        assert (c.uda.mode, c.data.recipe, c.data.crop_size, c.data.caug) == (mode, "hrda_whole", (1024, 1024), True)
        assert (c.hrda.enabled, c.hrda.hr_crop_size, c.hrda.hr_loss_weight, c.hrda.crop_coord_divisible) == (
            True, 512, 0.1, 8)
        assert (c.model, c.optim, c.uda, c.rcs, c.seed) == (low.model, low.optim, low.uda, low.rcs, low.seed)
        assert "experiments.py" in config.PRESETS[name].__doc__ and "hrda1-512-0.1_dlv2red" in config.PRESETS[name].__doc__
    a = config.preset("advseg_gta2cs").uda
    assert (a.adv_loss, a.adv_lr, a.adv_lr_power, a.adv_lr_min, a.adv_lambda, a.adv_betas) == (
        "ls", 1e-4, 0.9, 0.0, 0.001, (0.9, 0.99))
    assert config.preset("minent_gta2cs").uda.ent_lambda == 0.001
    t = config.preset("target_only_cs")
    assert (t.uda.mode, t.model.backbone, t.data.target, t.rcs.enabled, t.uda.fd_lambda) == (
        "target_only", "mit_b5", "cityscapes", False, 0.0)
    assert (t.optim.name, t.optim.lr, t.optim.head_lr_mult, t.data.crop_size) == ("adamw", 6e-5, 10.0, (512, 512))


def test_sgd_optimizer_groups():
    from fastuda.models import build_model
    from fastuda.uda import build_optimizer

    cfg = config.preset("advseg_gta2cs")
    assert cfg.model.pretrained == "pretrained/resnet101_v1c.pth"  # mmcv's open-mmlab://resnet101_v1c, as published
    cfg.model.pretrained = None
    opt = build_optimizer(build_model(cfg.model), cfg.optim)
    assert isinstance(opt, torch.optim.SGD) and {g["lr"] for g in opt.param_groups} == {0.0025}
    assert {g["weight_decay"] for g in opt.param_groups} == {0.0005} and opt.defaults["momentum"] == 0.9



def _losses(out):
    return [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines() if '"loss"' in line]


@pytest.mark.parametrize("mode,keys", [("advseg", {"loss_src", "loss_adv", "loss_disc"}),
                                       ("minent", {"loss_src", "loss_ent"}), ("target_only", {"loss_src"}),
                                       ("source_only", {"loss_src"})])  # fmt: skip
def test_cli_trains_each_mode(mode, keys, tmp_path, capsys):
    out = tmp_path / "run"
    args = ["demo", *TINY, f"uda.mode={mode}", "uda.fd_lambda=0", "--out", out, "--no-progress"]
    assert train.main([str(a) for a in args]) == 0
    assert "mIoU" in capsys.readouterr().out
    last = _losses(out)[-1]
    assert keys <= set(last) and "loss_mix" not in last and all(v == v for k, v in last.items() if k in keys)
    state = torch.load(out / "latest.pt", weights_only=False)
    assert (state["discriminator"] is not None) == (mode == "advseg") and ("disc_optimizer" in state) == (mode == "advseg")


@pytest.mark.slow
def test_advseg_resume_equals_straight_run(tmp_path):
    overrides = TINY + ["uda.mode=advseg", "uda.fd_lambda=0", "max_iters=4", "uda.adv_lambda=0.5"]
    straight = train.train(config.load_config("demo", overrides), tmp_path / "a", progress=False)
    train.train(config.load_config("demo", overrides), tmp_path / "b", progress=False, max_iters=2)
    resumed = train.train(None, tmp_path / "b", resume=tmp_path / "b" / "latest.pt", progress=False)
    assert resumed["iteration"] == 4
    assert_same_networks({**straight, "teacher": straight["discriminator"]},
                         {**resumed, "teacher": resumed["discriminator"]})  # fmt: skip


def test_cli_target_only_cs_on_fake_cityscapes(tmp_path, capsys):
    """The oracle preset end to end on a fake Cityscapes release: trains on its labelled train
    split (no source read), evaluates on val."""
    from fastuda.data import _fake

    cs = _fake.write_fake_cityscapes(tmp_path / "cityscapes")
    args = ["target_only_cs", "data.source_root=/nonexistent", f"data.target_root={cs}", "data.resize=(128,64)",
            "data.crop_size=(32,32)", "data.workers=0", "model.backbone=mit_demo", "model.pretrained=None",
            "max_iters=2", "log_interval=1", "--out", tmp_path / "run", "--no-progress"]  # fmt: skip
    assert train.main([str(a) for a in args]) == 0
    assert "mIoU" in capsys.readouterr().out


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["advseg", "minent"])
def test_cli_hrda_on_deeplabv2(mode, tmp_path):
    """HRDA experiment 41's HRDA rows on a tiny ResNet-50 + dlv2red (SGD, as published)."""
    out = tmp_path / "run"
    args = ["demo", *TINY, "data.synthetic_size=64", "model.backbone=resnet50", "model.decode_head=deeplabv2red",
            "model.embed_dim=None", "hrda.enabled=true", "hrda.hr_crop_size=32", f"uda.mode={mode}",
            "optim.name=sgd", "optim.lr=0.0025", "max_iters=2", "--out", out, "--no-progress"]  # fmt: skip
    assert train.main([str(a) for a in args]) == 0
    assert _losses(out)[-1]["loss"] == _losses(out)[-1]["loss"]
