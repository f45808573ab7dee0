"""AdvSeg and MinEnt against independent transcriptions of the published HRDA / MIC code
(mmseg/models/uda/advseg.py, fcdiscriminator.py, minent.py; configs/_base_/uda/*.py), in
float64: the discriminator's forward, the adversarial (generator) and discriminator losses
with their label conventions and gradients, the discriminator's learning-rate schedule, and
the entropy loss with its gradient. The largest error of each comparison is recorded in
``ERRORS`` (printed with ``-s``)."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn, optim

from fastuda.models.discriminator import FCDiscriminator
from fastuda.uda.advseg import (build_discriminator_optimizer, discriminator_loss, discriminator_lr, gan_loss,
                                generator_loss)  # fmt: skip
from fastuda.uda.minent import entropy_loss

ERRORS: dict[str, float] = {}


def _record(name: str, got: torch.Tensor, want: torch.Tensor) -> None:
    ERRORS[name] = max(ERRORS.get(name, 0.0), float((got - want).detach().abs().max()))
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-14, msg=name)


@pytest.fixture(scope="module", autouse=True)
def _print_errors():
    yield
    print("\nfp64 max abs error vs the published transcriptions:", {k: f"{v:.1e}" for k, v in ERRORS.items()})


# ---------------------------------------------------------------- published code, transcribed
# mmseg/models/uda/fcdiscriminator.py (HRDA c370b5b; MIC seg/ identical)


class PublishedFCDiscriminator(nn.Module):
    def __init__(self, num_classes, ndf=64):
        super().__init__()
        conv_args = dict(kernel_size=4, stride=2, padding=1)
        self.conv1 = nn.Conv2d(num_classes, ndf, **conv_args)
        self.conv2 = nn.Conv2d(ndf, ndf * 2, **conv_args)
        self.conv3 = nn.Conv2d(ndf * 2, ndf * 4, **conv_args)
        self.conv4 = nn.Conv2d(ndf * 4, ndf * 8, **conv_args)
        self.leaky_relu = nn.LeakyReLU(negative_slope=0.2, inplace=True)
        self.classifier = nn.Conv2d(ndf * 8, 1, **conv_args)

    def forward(self, x):
        x = self.conv1(x)
        x = self.leaky_relu(x)
        x = self.conv2(x)
        x = self.leaky_relu(x)
        x = self.conv3(x)
        x = self.leaky_relu(x)
        x = self.conv4(x)
        x = self.leaky_relu(x)
        x = self.classifier(x)
        return x


def published_advseg_losses(model_D, pred, pred_trg, lambda_adv, discriminator_type="LS"):
    """AdvSeg.forward_train's adversarial part: G backward with D frozen, then D backward
    (source then target), as the published code runs it; returns the three losses."""
    source_label, target_label = 0, 1
    loss_fn_D = nn.MSELoss() if discriminator_type == "LS" else nn.BCEWithLogitsLoss()
    for param in model_D.parameters():
        param.requires_grad = False
    D_out = model_D(F.softmax(pred_trg, dim=1))
    loss_G = lambda_adv * loss_fn_D(D_out, torch.empty(D_out.data.size(), dtype=D_out.dtype).fill_(source_label))
    loss_G.backward()
    for param in model_D.parameters():
        param.requires_grad = True
    pred = pred.detach()
    D_out_src = model_D(F.softmax(pred, dim=1))
    loss_D_src = loss_fn_D(D_out_src, torch.empty(D_out_src.data.size(), dtype=D_out_src.dtype).fill_(source_label)) / 2
    loss_D_src.backward()
    pred_trg = pred_trg.detach()
    D_out_trg = model_D(F.softmax(pred_trg, dim=1))
    loss_D_trg = loss_fn_D(D_out_trg, torch.empty(D_out_trg.data.size(), dtype=D_out_trg.dtype).fill_(target_label)) / 2
    loss_D_trg.backward()
    return loss_G, loss_D_src, loss_D_trg


def published_adjust_learning_rate_D(optimizer, i_iter, lr_D, max_iters, lr_D_power, lr_D_min):
    coeff = (1 - i_iter / max_iters) ** lr_D_power
    lr = (lr_D - lr_D_min) * coeff + lr_D_min
    assert len(optimizer.param_groups) == 1
    optimizer.param_groups[0]["lr"] = lr


def published_entropy_loss(v):  # mmseg/models/uda/minent.py
    assert v.dim() == 4
    n, c, h, w = v.size()
    return -torch.sum(torch.mul(v, torch.log2(v + 1e-30))) / (n * h * w * np.log2(c))


# ---------------------------------------------------------------- tests


def _pair(num_classes=19, seed=0):
    torch.manual_seed(seed)
    ours = FCDiscriminator(num_classes).double()
    published = PublishedFCDiscriminator(num_classes).double()
    missing = published.load_state_dict(ours.state_dict())  # the published keys, one to one
    assert not missing.missing_keys and not missing.unexpected_keys
    return ours, published


@pytest.mark.parametrize("shape", [(2, 19, 32, 32), (1, 19, 45, 37), (3, 7, 33, 32)])
def test_discriminator_forward_matches_published(shape):
    ours, published = _pair(shape[1])
    probs = F.softmax(torch.randn(shape, dtype=torch.float64) * 3, dim=1)
    got, want = ours(probs), published(probs)
    assert got.shape == want.shape
    _record("discriminator forward", got, want)


@pytest.mark.parametrize("kind", ["ls", "vanilla"])
def test_adversarial_and_discriminator_losses_and_gradients_match_published(kind):
    """Generator term: gradient into the target logits only (D frozen); discriminator term:
    source labelled 0, target 1, each halved, gradients into D only."""
    ours, published = _pair(19, seed=1)
    torch.manual_seed(2)
    src = (torch.randn(2, 19, 32, 48, dtype=torch.float64) * 2).requires_grad_()
    tgt = (torch.randn(2, 19, 32, 48, dtype=torch.float64) * 2).requires_grad_()
    src_p, tgt_p = src.detach().clone().requires_grad_(), tgt.detach().clone().requires_grad_()
    lam = 0.001
    loss_G, d_src, d_trg = published_advseg_losses(published, src_p, tgt_p, lam, "LS" if kind == "ls" else "Vanilla")

    g = lam * generator_loss(ours, tgt, kind)
    g.backward()
    assert all(p.grad is None for p in ours.parameters())  # D frozen for the generator term
    d = discriminator_loss(ours, src, tgt, kind)
    d.backward()
    _record(f"adversarial loss ({kind})", g.detach(), loss_G.detach())
    _record(f"discriminator loss ({kind})", d.detach(), (d_src + d_trg).detach())
    _record(f"adversarial grad wrt target logits ({kind})", tgt.grad, tgt_p.grad)
    assert src.grad is None and src_p.grad is None  # the source prediction only trains D
    for (name, p), q in zip(ours.named_parameters(), published.parameters()):
        _record(f"discriminator grads ({kind})", p.grad, q.grad)


def test_label_conventions():
    """Source 0, target 1: a discriminator that outputs exactly those labels has zero loss."""
    zeros, ones = torch.zeros(2, 1, 4, 4, dtype=torch.float64), torch.ones(2, 1, 4, 4, dtype=torch.float64)
    assert gan_loss(zeros, 0.0) == 0 and gan_loss(ones, 1.0) == 0 and gan_loss(zeros, 1.0) == 1
    with pytest.raises(ValueError, match="adversarial loss must be one of"):
        gan_loss(zeros, 0.0, "hinge")


def test_discriminator_schedule_and_optimizer_match_published():
    """Adam(1e-4, betas (0.9, 0.99)); lr (1e-4 - 0) (1 - t/T)^0.9 set before step t."""
    torch.manual_seed(0)
    ours_d, published_d = _pair(5)
    opt, sched = build_discriminator_optimizer(ours_d, max_iters=8, lr=1e-4, betas=(0.9, 0.99), power=0.9)
    pub_opt = optim.Adam(published_d.parameters(), lr=1e-4, betas=(0.9, 0.99))
    for t in range(8):
        published_adjust_learning_rate_D(pub_opt, t, 1e-4, 8, 0.9, 0)
        assert math.isclose(opt.param_groups[0]["lr"], pub_opt.param_groups[0]["lr"], rel_tol=1e-12, abs_tol=1e-20)
        assert math.isclose(discriminator_lr(t, 8, 1e-4, 0.9, 0.0), pub_opt.param_groups[0]["lr"], rel_tol=1e-12)
        x = F.softmax(torch.randn(1, 5, 32, 32, dtype=torch.float64), dim=1)
        for d, o in ((ours_d, opt), (published_d, pub_opt)):
            o.zero_grad()
            d(x).square().mean().backward()
            o.step()
        sched.step()
    for p, q in zip(ours_d.parameters(), published_d.parameters()):
        _record("discriminator after 8 Adam steps", p.detach(), q.detach())


@pytest.mark.parametrize("shape", [(2, 19, 64, 64), (1, 19, 37, 53), (2, 3, 8, 9)])
def test_entropy_loss_and_gradient_match_published(shape):
    torch.manual_seed(3)
    logits = (torch.randn(shape, dtype=torch.float64) * 4).requires_grad_()
    ref_logits = logits.detach().clone().requires_grad_()
    got = entropy_loss(logits)
    want = published_entropy_loss(F.softmax(ref_logits, dim=1))
    got.backward()
    want.backward()
    _record("entropy loss", got.detach(), want.detach())
    _record("entropy grad", logits.grad, ref_logits.grad)


def test_entropy_loss_extremes_and_half_precision():
    """Uniform predictions have entropy 1 (normalised), confident ones ~0; bf16 logits are
    reduced in float32 and give the float32 value."""
    assert math.isclose(float(entropy_loss(torch.zeros(1, 19, 4, 4))), 1.0, rel_tol=1e-6)
    confident = torch.zeros(1, 19, 4, 4)
    confident[:, 3] = 60
    assert float(entropy_loss(confident)) < 1e-20
    x = torch.randn(2, 19, 8, 8)
    half = entropy_loss(x.bfloat16())
    assert half.dtype == torch.float32
    torch.testing.assert_close(half, entropy_loss(x.bfloat16().float()))
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        entropy_loss(torch.randn(19, 4, 4))
