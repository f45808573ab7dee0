"""The UDA strategies against independent transcriptions of the published formulas
(REFERENCE-NOTES.md / DESIGN.md): EMA, pseudo-weight, augmentation, FD, RCS, MIC,
optimiser groups and schedule."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fastuda.config import OptimConfig
from fastuda.uda import augment, ema, fd, mic, optim
from fastuda.uda.rcs import RareClassSampling


# ---------------------------------------------------------------- EMA


def _net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4), nn.Dropout(0.5), nn.Conv2d(4, 2, 1))


def test_ema_alpha_warmup():
    assert ema.ema_alpha(0) == 0.0
    assert ema.ema_alpha(1) == 0.5
    assert ema.ema_alpha(9) == pytest.approx(0.9)
    assert ema.ema_alpha(999) == pytest.approx(0.999)
    assert ema.ema_alpha(100000) == 0.999
    assert ema.ema_alpha(5, alpha=0.99) == pytest.approx(1 - 1 / 6)


def test_ema_update_matches_formula_parameters_only():
    student = _net()
    teacher = ema.make_teacher(student)
    with torch.no_grad():
        for p in teacher.parameters():
            p.add_(1.0)  # differs from the student
        teacher[1].running_mean.fill_(7.0)
    ema.ema_update(teacher, student, 0)  # iteration 0: a copy
    for t, s in zip(teacher.parameters(), student.parameters()):
        torch.testing.assert_close(t, s, rtol=0, atol=0)
    with torch.no_grad():
        for p in student.parameters():
            p.mul_(2.0).add_(0.3)
    before = [t.clone() for t in teacher.parameters()]
    for it in (1, 5, 3000):
        a = min(1 - 1 / (it + 1), 0.999)
        expect = [a * t + (1 - a) * s for t, s in zip(before, student.parameters())]
        ema.ema_update(teacher, student, it)
        for t, e in zip(teacher.parameters(), expect):
            torch.testing.assert_close(t, e)
        before = [t.clone() for t in teacher.parameters()]
    assert torch.all(teacher[1].running_mean == 7.0)  # buffers are not averaged
    assert not any(p.requires_grad for p in teacher.parameters())


def test_teacher_mode_dropout_and_droppath_off_bn_train():
    from timm.layers import DropPath

    net = nn.Sequential(_net(), DropPath(0.5))
    teacher = ema.make_teacher(net)
    teacher.eval()
    ema.teacher_mode(teacher)
    assert teacher[0][1].training  # BN in train mode
    assert not teacher[0][2].training and not teacher[1].training
    x = torch.randn(2, 3, 4, 4)
    torch.testing.assert_close(teacher(x), teacher(x))  # deterministic: no dropout


# ---------------------------------------------------------------- pseudo-weight


def test_pseudo_weight_is_one_batch_fraction():
    import fastuda.ops as ops

    torch.manual_seed(0)
    logits = torch.randn(2, 5, 20, 8) * 4
    label, weight = ops.pseudo_label(logits, 0.968, 3, 2)
    prob = logits.softmax(1)
    frac = (prob.max(1).values >= 0.968).float().sum() / prob[:, 0].numel()  # published: whole batch
    expect = torch.full((2, 20, 8), float(frac))
    expect[:, :3] = 0
    expect[:, -2:] = 0
    torch.testing.assert_close(weight, expect)
    torch.testing.assert_close(label, prob.argmax(1))


# ---------------------------------------------------------------- augmentation


def test_blur_kernel_size_published():
    assert augment.blur_kernel_size(512) == 51
    assert augment.blur_kernel_size(1024) == 103
    for d in (32, 64, 100, 333):
        k = augment.blur_kernel_size(d)
        assert k % 2 == 1
        assert k == math.floor(math.ceil(0.1 * d) - 0.5 + math.ceil(0.1 * d) % 2)


def _image(b=4, h=16, w=16):
    torch.manual_seed(1)
    return torch.randn(b, 3, h, w)


def test_jitter_probability_one_draw_per_batch():
    x = _image()
    g = torch.Generator().manual_seed(0)
    applied = 0
    n = 400
    for _ in range(n):
        y = augment.color_jitter(x, g, prob=0.8)
        changed = (y - x).abs().flatten(1).amax(1) > 1e-5  # (B,)
        assert bool(changed.all()) or not bool(changed.any())  # all images or none
        applied += int(changed.all())
    assert abs(applied / n - 0.8) < 0.06
    assert torch.equal(augment.color_jitter(x, g, prob=0.0), x)


def test_blur_probability_and_sigma_range():
    x = _image(2, 32, 32)
    g = torch.Generator().manual_seed(0)
    hits = sum(not torch.equal(augment.gaussian_blur(x, g, 0.5), x) for _ in range(300))
    assert abs(hits / 300 - 0.5) < 0.08
    y = augment.gaussian_blur(x, g, 1.0)
    assert y.shape == x.shape and y.std() < x.std()  # smoothing lowers the variance


def test_blur_matches_explicit_kernel():
    x = _image(1, 40, 40).double()
    g = torch.Generator().manual_seed(3)
    y = augment.gaussian_blur(x, g, 1.0)
    g = torch.Generator().manual_seed(3)
    torch.rand((), generator=g)
    sigma = 0.15 + torch.rand(1, generator=g).item()
    k = augment.blur_kernel_size(40)
    t = torch.arange(k, dtype=torch.float64) - k // 2
    kern = torch.exp(-(t**2) / (2 * sigma**2))
    kern = kern / kern.sum()
    k2 = (kern[:, None] * kern[None]).expand(3, 1, k, k)
    ref = F.conv2d(F.pad(x, (k // 2,) * 4, mode="reflect"), k2, groups=3)
    torch.testing.assert_close(y, ref, rtol=1e-5, atol=1e-5)


def test_jitter_ops_match_kornia_semantics():
    x = torch.rand(3, 3, 8, 8, dtype=torch.float64)
    f = torch.tensor([0.8, 1.0, 1.2], dtype=torch.float64)
    torch.testing.assert_close(augment._brightness(x, f), (x + (f - 1).view(-1, 1, 1, 1)).clamp(0, 1))
    torch.testing.assert_close(augment._contrast(x, f), (x * f.view(-1, 1, 1, 1)).clamp(0, 1))
    torch.testing.assert_close(augment.hsv_to_rgb(augment.rgb_to_hsv(x)), x)
    torch.testing.assert_close(augment._saturation(x, torch.ones(3, dtype=torch.float64)), x)
    torch.testing.assert_close(augment._hue(x, torch.zeros(3, dtype=torch.float64)), x)
    torch.testing.assert_close(augment._hue(x, torch.ones(3, dtype=torch.float64)), x)  # a full turn
    grey = torch.rand(1, 1, 4, 4, dtype=torch.float64).expand(1, 3, 4, 4)
    torch.testing.assert_close(augment._saturation(grey, torch.tensor([1.2], dtype=torch.float64)), grey)


def test_strong_augment_generator_reproducible():
    x = _image()
    a = augment.strong_augment(x, torch.Generator().manual_seed(5), 1.0, 0.2, 1.0)
    b = augment.strong_augment(x, torch.Generator().manual_seed(5), 1.0, 0.2, 1.0)
    assert torch.equal(a, b) and not torch.equal(a, x)


def test_mic_jitter_shares_one_order_per_batch():
    """MIC's one strong_transform call per batch: kornia draws per-image factors and ONE order.
    The draws are replayed from the generator and the four ops applied one after the other."""
    x = _image(5, 8, 8).double()
    g = torch.Generator().manual_seed(11)
    y = augment.color_jitter(x, g, prob=1.0, strength=0.2, shared=True)
    g = torch.Generator().manual_seed(11)
    torch.rand((), generator=g)  # apply
    f = [0.8 + 0.4 * torch.rand(5, generator=g).double() for _ in range(3)]
    f.append(-0.2 + 0.4 * torch.rand(5, generator=g).double())
    order = torch.rand(1, 4, generator=g).argsort(1)[0].tolist()
    ops = (augment._brightness, augment._contrast, augment._saturation, augment._hue)
    m, s = augment._stats(x, augment.IMAGENET_MEAN, augment.IMAGENET_STD)
    for i in range(5):
        xi = (x[i : i + 1] * s + m).clamp(0, 1)
        for j in order:
            xi = ops[j](xi, f[j][i : i + 1])
        torch.testing.assert_close(y[i : i + 1], (xi - m) / s, rtol=1e-6, atol=1e-6)


def test_mic_blur_shares_one_sigma_per_batch():
    x = _image(1, 24, 24).expand(4, 3, 24, 24)  # four copies of one image
    shared = augment.gaussian_blur(x, torch.Generator().manual_seed(2), 1.0, shared=True)
    assert all(torch.equal(shared[0], shared[i]) for i in range(1, 4)) and not torch.equal(shared, x)
    own = augment.gaussian_blur(x, torch.Generator().manual_seed(2), 1.0)  # ClassMix: a sigma per image
    assert not torch.equal(own[0], own[1])


# ---------------------------------------------------------------- FD


def _downscale_reference(gt, scale, min_ratio, n_classes, ignore=255):
    """A transcription of mmseg/utils/utils.py downscale_label_ratio (B, 1, H, W)."""
    out = gt.clone()
    out[out == ignore] = n_classes
    out = F.one_hot(out.squeeze(1), num_classes=n_classes + 1).permute(0, 3, 1, 2)
    out = F.avg_pool2d(out.float(), kernel_size=scale)
    gt_ratio, out = torch.max(out, dim=1, keepdim=True)
    out[out == n_classes] = ignore
    out[gt_ratio < min_ratio] = ignore
    return out


def test_downscale_label_ratio_matches_reference():
    torch.manual_seed(0)
    gt = torch.randint(0, 4, (2, 4, 8)).repeat_interleave(4, 1).repeat_interleave(4, 2)  # blocks of 4x4
    noise = torch.rand(gt.shape) < 0.15
    gt = torch.where(noise, torch.randint(0, 19, gt.shape), gt)
    gt[0, :4, :4] = 255
    got = fd.downscale_label_ratio(gt, 4, 0.75, 19)
    torch.testing.assert_close(got, _downscale_reference(gt[:, None], 4, 0.75, 19)[:, 0])
    assert got[0, 0, 0] == 255


def test_fd_mask_thing_classes_and_ratio():
    label = torch.zeros(1, 8, 8, dtype=torch.long)
    label[0, :4, :4] = 13  # car: a thing, pure cell
    label[0, :4, 4:] = 2  # building: stuff
    label[0, 4:, :4] = 11  # person, but only 50% of the cell:
    label[0, 4:, :2] = 0
    mask = fd.feature_distance_mask(label, (2, 2), (6, 7, 11, 12, 13, 14, 15, 16, 17, 18), 0.75, 19)
    assert mask.tolist() == [[[True, False], [False, False]]]


def test_fd_distance_and_empty_mask_is_zero():
    a, b = torch.randn(2, 5, 3, 3), torch.randn(2, 5, 3, 3)
    mask = torch.zeros(2, 3, 3, dtype=torch.bool)
    mask[0, 1, 2] = mask[1, 0, 0] = True
    expect = torch.norm(a - b, dim=1)[mask].mean()
    torch.testing.assert_close(fd.masked_feature_distance(a, b, mask), expect)
    empty = fd.masked_feature_distance(a, b, torch.zeros_like(mask))
    assert empty.item() == 0.0 and not torch.isnan(empty)


def test_imnet_encoder_frozen_eval_copy():
    enc = _net()
    frozen = fd.make_imnet_encoder(enc)
    assert not frozen.training and not any(p.requires_grad for p in frozen.parameters())
    with torch.no_grad():
        enc[0].weight.add_(1)
    assert not torch.equal(frozen[0].weight, enc[0].weight)


# ---------------------------------------------------------------- MIC


def test_mic_mask_ratio_and_blocks():
    g = torch.Generator().manual_seed(0)
    m = mic.block_mask((8, 3, 256, 256), 64, 0.7, g)
    assert m.shape == (8, 1, 256, 256)
    blocks = m[:, :, ::64, ::64]
    assert abs(blocks.mean().item() - 0.3) < 0.12  # each block kept with prob 1 - 0.7
    assert torch.equal(m, blocks.repeat_interleave(64, 2).repeat_interleave(64, 3))  # constant per block
    big = mic.block_mask((64, 3, 128, 128), 32, 0.7, g)
    assert abs(big.mean().item() - 0.3) < 0.03
    x = torch.randn(2, 3, 64, 64)
    y = mic.mask_image(x, 32, 0.7, torch.Generator().manual_seed(1))
    assert torch.all((y == x) | (y == 0))


# ---------------------------------------------------------------- RCS


class _Labels(torch.utils.data.Dataset):
    def __init__(self, labels):
        self.labels = labels

    def __len__(self):
        return len(self.labels)

    def read_label(self, i):
        return self.labels[i].numpy().astype("uint8")

    def __getitem__(self, i):
        return {"image": torch.zeros(3, *self.labels[i].shape), "label": self.labels[i], "index": i}


def test_rcs_probabilities_and_draws():
    labels = [torch.zeros(10, 10, dtype=torch.long) for _ in range(4)]
    labels[1][:3] = 1  # 30 px of class 1
    labels[2][:1] = 2  # 10 px of class 2 (rarest)
    labels[3][:5] = 1
    rcs = RareClassSampling(_Labels(labels), 3, temperature=0.01, min_pixels=5, min_crop_ratio=0.0, seed=0)
    counts = {0: 400 - 80 - 10, 1: 80, 2: 10}
    f = torch.tensor([counts[c] for c in (0, 1, 2)], dtype=torch.float64) / 400
    p = torch.softmax((1 - f) / 0.01, 0)
    got = dict(zip(rcs.classes, rcs.probs.tolist()))
    for c in range(3):
        assert got[c] == pytest.approx(p[c].item())
    assert rcs.files[2] == [2] and sorted(rcs.files[1]) == [1, 3]  # more than min_pixels
    draws = [rcs.draw(k) for k in range(300)]
    assert draws == [rcs.draw(k) for k in range(300)]  # draw k is a function of k
    share2 = sum(c == 2 for c, _ in draws) / 300
    assert abs(share2 - p[2].item()) < 0.08
    assert all(i in rcs.files[c] for c, i in draws)


# ---------------------------------------------------------------- optimiser / schedule


def test_lr_schedule_published_values():
    cfg = OptimConfig()
    assert optim.lr_factor(0, 40000, cfg) == pytest.approx(1e-6)
    assert optim.lr_factor(1500, 40000, cfg) == pytest.approx(1 - 1500 / 40000)
    assert optim.lr_factor(40000, 40000, cfg) == 0.0
    t = 750  # mmcv: regular lr times (1 - (1 - t/1500)(1 - 1e-6))
    assert optim.lr_factor(t, 40000, cfg) == pytest.approx((1 - t / 40000) * (1 - (1 - t / 1500) * (1 - 1e-6)))
    model = nn.Linear(2, 2)
    opt = optim.build_optimizer(model, cfg)
    sched = optim.build_scheduler(opt, 40000, cfg)
    assert opt.param_groups[0]["lr"] == pytest.approx(6e-5 * 1e-6)
    for _ in range(1500):
        opt.step()
        sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(6e-5 * (1 - 1500 / 40000))


def test_param_groups_head_lr_and_norm_decay():
    from fastuda.models import build_model

    model = build_model(backbone="mit_b0", num_classes=3)
    groups = optim.param_groups(model, OptimConfig())
    by_param = {id(p): g for g in groups for p in g["params"]}
    names = dict(model.named_parameters())
    assert by_param[id(names["decode_head.conv_seg.weight"])]["lr"] == pytest.approx(6e-4)
    head_bn = [n for n in names if n.startswith("decode_head") and ".bn." in n]
    assert head_bn and by_param[id(names[head_bn[0]])]["weight_decay"] == 0.01  # head BN keeps decay
    assert by_param[id(names["backbone.block1.0.norm1.weight"])]["weight_decay"] == 0.0
    assert by_param[id(names["backbone.norm4.weight"])]["lr"] == pytest.approx(6e-5)
    assert by_param[id(names["backbone.block1.0.attn.q.weight"])]["weight_decay"] == 0.01
    assert sum(len(g["params"]) for g in groups) == len(names)


def test_rcs_recrops_until_the_class_is_in_the_crop():
    class Crops(_Labels):
        """Item i's crop holds class 1 only on every third read (a stand-in for random crops)."""

        def __init__(self, labels):
            super().__init__(labels)
            self.reads = 0

        def __getitem__(self, i):
            self.reads += 1
            label = self.labels[i].clone()
            if self.reads % 3:
                label[label == 1] = 0
            return {"image": torch.zeros(3, 10, 10), "label": label, "index": i}

    labels = [torch.zeros(10, 10, dtype=torch.long) for _ in range(2)]
    labels[1][:2] = 1
    data = Crops(labels)
    rcs = RareClassSampling(data, 2, min_pixels=10, min_crop_ratio=0.5, seed=0)
    k = next(k for k in range(100) if rcs.draw(k)[0] == 1)
    data.reads = 0
    sample = rcs[k]
    assert data.reads == 3 and int((sample["label"] == 1).sum()) == 20  # > 10 * 0.5 on the third try


# ---------------------------------------------------------------- host syncs in the step
#
# A host sync is anything that makes the host wait for the device: reading a value
# (.item(), float(), bool(), .tolist(): aten._local_scalar_dense), an op whose output
# SHAPE depends on values (nonzero, unique, masked_select, boolean indexing), or a copy
# between host and device (torch.tensor(..., device=cuda) copies from pageable memory and
# synchronises; .cpu() waits for the result). The CPU test runs the whole step on meta
# tensors (shapes only: the step's device stands in for CUDA) under a dispatch mode that
# fails on each of the three, naming the op and the fastuda line that issued it. Meta
# has no generator, so the step draws from the global RNG there. What meta cannot see
# (kernel launchers: the Triton and CUDA code behind the ops) the CUDA-tier test below
# covers with torch.cuda.set_sync_debug_mode("error").

import contextlib  # noqa: E402

from torch.overrides import TorchFunctionMode  # noqa: E402
from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402
from _step import steps_without_host_sync  # noqa: E402

from fastuda import config as _config  # noqa: E402
from fastuda.uda import StepState, make_imnet_encoder, make_teacher, step as step_module, uda_step  # noqa: E402

_DATA_DEPENDENT = (torch.Tag.dynamic_output_shape, torch.Tag.data_dependent_output)
_COPIES = (torch.ops.aten._to_copy.default, torch.ops.aten.copy_.default)


class HostSync(AssertionError):
    pass


def _fastuda_line() -> str:
    import traceback

    frames = [f for f in traceback.extract_stack() if "/fastuda/" in f.filename]
    return f"{frames[-1].filename}:{frames[-1].lineno} {frames[-1].line}" if frames else "outside fastuda"


class _DeviceOps(TorchDispatchMode):
    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        tensors = [t for t in torch.utils._pytree.tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)]
        on_device = any(t.device.type != "cpu" for t in tensors)
        if on_device and func is torch.ops.aten._local_scalar_dense.default:
            raise HostSync(f"host read of a device value ({func}) at {_fastuda_line()}")
        if on_device and any(tag in func.tags for tag in _DATA_DEPENDENT):
            raise HostSync(f"data-dependent output shape ({func}) at {_fastuda_line()}")
        if func in _COPIES:
            src = args[1] if func is torch.ops.aten.copy_.default else args[0]
            if func is torch.ops.aten.copy_.default:
                dst = args[0].device
            else:
                dst = torch.device(kwargs.get("device") or src.device)
            if (src.device.type == "cpu") != (dst.type == "cpu"):
                raise HostSync(f"copy {src.device} -> {dst} ({func}) at {_fastuda_line()}")
        return func(*args, **kwargs)


class _HostData(TorchFunctionMode):
    """torch.tensor(data, device=d) fills a meta (or fake) tensor below the dispatcher, so the
    copy it makes on a real device is caught here, at the call."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in (torch.tensor, torch.as_tensor, torch.asarray):
            device = torch.device(kwargs["device"]) if kwargs.get("device") is not None else None
            data = args[0] if args else kwargs.get("data")
            from_host = not isinstance(data, torch.Tensor) or data.device.type == "cpu"
            if device is not None and device.type != "cpu" and from_host:
                raise HostSync(f"copy cpu -> {device} (torch.{func.__name__} of host data) at {_fastuda_line()}")
        return func(*args, **kwargs)


@contextlib.contextmanager
def SyncDetector():  # noqa: N802 (used like a class)
    """Fails on a host read of a device value, a data-dependent output shape, or a copy
    between the host and a device, at the op that does it."""
    with _HostData(), _DeviceOps():
        yield


_TINY = ["data.synthetic_size=32", "data.batch_size=2", "model.backbone=mit_demo", "model.num_classes=19",
         "model.pretrained=None", "uda.pseudo_ignore_top=2", "uda.pseudo_ignore_bottom=4", "uda.fd_classes=(4,5)",
         "uda.mic_block_size=8"]  # fmt: skip
_HRDA = ["data.synthetic_size=64", "hrda.hr_crop_size=32", "uda.mic_block_size=16"]
STEPS = {"daformer": ("daformer_gta2cs", []), "hrda": ("hrda_gta2cs", _HRDA), "mic": ("mic_hrda_gta2cs", _HRDA)}


def _step_setup(name: str, device):
    """(student, teacher, imnet, batch, cfg) of a tiny ``name`` step on ``device``, random data."""
    from fastuda.runtime.build import build_segmentor

    preset, extra = STEPS[name]
    cfg = _config.load_config(preset, _TINY + extra, from_pretrained=False)  # random weights: FD on without a file
    torch.manual_seed(0)
    student = build_segmentor(cfg)
    teacher, imnet = make_teacher(student), make_imnet_encoder(student.backbone)
    S, K = cfg.data.synthetic_size, cfg.model.num_classes
    batch = {"source": {"image": torch.randn(2, 3, S, S), "label": torch.randint(0, K, (2, S, S))},
             "target": {"image": torch.randn(2, 3, S, S)}}  # fmt: skip
    batch = {d: {k: v.to(device) for k, v in part.items()} for d, part in batch.items()}
    return student.to(device), teacher.to(device), imnet.to(device), batch, cfg


def _meta_step(name: str):
    student, teacher, imnet, batch, cfg = _step_setup(name, "meta")
    with SyncDetector():
        loss, logs = uda_step(StepState(student, teacher, None, imnet), batch, cfg, 1)
    return loss, logs, student


@pytest.mark.parametrize("name", list(STEPS))
def test_uda_step_has_no_host_sync(name):
    loss, logs, student = _meta_step(name)
    assert loss.device.type == "meta" and ("loss_mic" in logs) == (name == "mic") and "loss_fd" in logs
    assert all(p.grad is not None for p in student.decode_head.parameters())  # the backward ran under the detector


def _old_stats(x, mean, std):  # the per-call constant the step used to build (a host-to-device copy)
    m = torch.tensor(mean, dtype=x.dtype, device=x.device).view(1, 3, 1, 1) / 255
    return m, torch.tensor(std, dtype=x.dtype, device=x.device).view(1, 3, 1, 1) / 255


def _host_box(model, image, generator):  # the host-drawn HRDA box the step used to pass (ints)
    from fastuda.models.hrda import random_detail_box

    return random_detail_box(*image.shape[-2:], model.detail_crop, model.crop_divisible)


def _reads_value(image, *args, **kwargs):
    if float(image.mean()) > 1e9:  # a host read planted in the step
        pass
    return image


def _boolean_index(image, *args, **kwargs):
    return image[image.isfinite()].view_as(image)  # a boolean-mask read: its size depends on the values


PLANTS = {
    "constant copy": ("daformer", augment, "_stats", _old_stats, "copy cpu -> meta"),
    "host HRDA box": ("hrda", step_module, "_detail_box", _host_box, "copy cpu -> meta"),
    "value read": ("daformer", step_module, "strong_augment", _reads_value, "host read"),
    "boolean mask": ("mic", step_module, "strong_augment", _boolean_index, "data-dependent"),
}


@pytest.mark.parametrize("plant", list(PLANTS))
def test_planted_host_sync_fails_the_step(plant, monkeypatch):
    """The detector can fail: each kind of sync, planted in a full step, is caught and located."""
    name, module, attr, planted, message = PLANTS[plant]
    monkeypatch.setattr(module, attr, planted)
    with pytest.raises(HostSync, match=message) as info:
        _meta_step(name)
    assert "fastuda/" in str(info.value)


@pytest.mark.cuda
@pytest.mark.parametrize("name", list(STEPS))
def test_uda_step_no_host_sync_on_cuda(name):
    """The real kernels (Triton, CUDA ClassMix) under torch.cuda.set_sync_debug_mode("error"):
    one warm-up step (lazy initialisation may sync once), then two checked steps."""
    student, teacher, imnet, batch, cfg = _step_setup(name, "cuda")
    generator = torch.Generator("cuda").manual_seed(0)
    state = StepState(student, teacher, generator, imnet, autocast_dtype=torch.bfloat16)
    loss, logs = steps_without_host_sync(state, batch, cfg)
    assert torch.isfinite(loss) and ("loss_mic" in logs) == (name == "mic")


@pytest.mark.cuda
def test_scale_fusion_host_box_no_sync_on_cuda():
    """A Python-int box reaches the GPU through a pinned, asynchronous copy."""
    import fastuda.ops as ops

    lr, att = torch.randn(2, 5, 16, 16, device="cuda"), torch.rand(2, 5, 16, 16, device="cuda")
    hr = torch.randn(2, 5, 8, 12, device="cuda")
    want = ops.scale_fusion(lr, att, hr, torch.tensor([4, 12, 8, 20], device="cuda"))
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        got = ops.scale_fusion(lr, att, hr, (4, 12, 8, 20))
    finally:
        torch.cuda.set_sync_debug_mode("default")
    torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_device_box_draws_as_the_host_box():
    """random_detail_box on a device makes the published draw (tested on the host form in test_hrda)."""
    from fastuda.models.hrda import random_detail_box

    for seed in range(20):
        host = random_detail_box(96, 160, 32, 8, torch.Generator().manual_seed(seed))
        device = random_detail_box(96, 160, 32, 8, torch.Generator().manual_seed(seed), device="cpu")
        assert device.dtype == torch.int64 and tuple(device.tolist()) == host


def test_device_constants_cached_and_trace_safe():
    from torch._subclasses.fake_tensor import FakeTensorMode

    from fastuda.uda._constants import device_constant

    a = device_constant((0.5, 2.0, 3.0), "cpu", torch.float32)
    assert a is device_constant([0.5, 2.0, 3.0], torch.device("cpu"), torch.float32)
    torch.testing.assert_close(a, torch.tensor([0.5, 2.0, 3.0]))
    with torch.inference_mode():
        b = device_constant((1, 2), "cpu", torch.int64)
    assert not b.is_inference() and b.tolist() == [1, 2]
    with FakeTensorMode():  # never cached: a fake tensor must not reach a later real step
        fake = device_constant((7.0,), "cpu", torch.float16)
    assert device_constant((7.0,), "cpu", torch.float16) is not fake
