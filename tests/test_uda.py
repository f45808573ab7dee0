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
