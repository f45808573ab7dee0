"""AdvSeg: adversarial alignment of the segmentation output (AdaptSegNet).

Tsai et al., "Learning to Adapt Structured Output Space for Semantic
Segmentation", CVPR 2018, as the published HRDA / MIC code runs it
(mmseg/models/uda/advseg.py, configs/_base_/uda/advseg.py):

- the discriminator D (``fastuda.models.discriminator.FCDiscriminator``) sees the
  softmax of the segmentor's main prediction: the logits resized to the input
  crop (HRDA: the fused logits resized to half the crop, ``feature_scale`` 0.5);
- labels: source 0, target 1;
- generator (segmentor) term: lambda_adv * L(D(softmax(p_T)), 0) with D frozen
  (its parameters get no gradient from it), lambda_adv = 0.001 (``main``; the
  ``aux`` weight 0.0002 applies to an auxiliary head, which no published AdvSeg
  network has);
- discriminator term: L(D(softmax(p_S)), 0) / 2 + L(D(softmax(p_T)), 1) / 2 on
  detached predictions;
- L: least squares (``discriminator_type='LS'``: MSE, the published default) or
  ``vanilla`` (BCE with logits), mean over every patch;
- D's own optimiser: Adam(lr_D = 1e-4, betas (0.9, 0.99)), no weight decay, its
  lr set before each iteration to (lr_D - lr_D_min) (1 - t / T)^0.9 + lr_D_min.

The targets are ``full_like`` the discriminator output (no host-to-device copy),
and D is frozen for the generator term by calling it with detached parameters
(``torch.func.functional_call``) rather than by flipping ``requires_grad`` on the
module: the same gradients, and no state changes inside the step.
"""

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from fastuda.models.discriminator import FCDiscriminator

SOURCE_LABEL = 0.0  # published: source_label = 0
TARGET_LABEL = 1.0  # published: target_label = 1
ADV_LOSSES = ("ls", "vanilla")


def gan_loss(d_out: Tensor, label: float, kind: str = "ls") -> Tensor:
    """Mean over patches of (d_out - label)^2 (``ls``) or BCE-with-logits (``vanilla``)."""
    target = torch.full_like(d_out, label)
    if kind == "ls":
        return F.mse_loss(d_out, target)
    if kind == "vanilla":
        return F.binary_cross_entropy_with_logits(d_out, target)
    raise ValueError(f"adversarial loss must be one of {ADV_LOSSES}, got {kind!r}")


def _probs(logits: Tensor) -> Tensor:
    return F.softmax(logits, dim=1)


def generator_loss(discriminator: nn.Module, target_logits: Tensor, kind: str = "ls") -> Tensor:
    """L(D(softmax(p_T)), source): the segmentor is pushed to make target outputs look like
    source ones. Gradients reach ``target_logits`` only, never D's parameters."""
    frozen = {n: p.detach() for n, p in discriminator.named_parameters()}
    frozen.update(dict(discriminator.named_buffers()))
    return gan_loss(functional_call(discriminator, frozen, (_probs(target_logits),)), SOURCE_LABEL, kind)


def discriminator_loss(discriminator: nn.Module, source_logits: Tensor, target_logits: Tensor,
                       kind: str = "ls") -> Tensor:  # fmt: skip
    """L(D(softmax(p_S)), source) / 2 + L(D(softmax(p_T)), target) / 2 on detached
    predictions: gradients reach D only."""
    src = gan_loss(discriminator(_probs(source_logits.detach())), SOURCE_LABEL, kind)
    tgt = gan_loss(discriminator(_probs(target_logits.detach())), TARGET_LABEL, kind)
    return src / 2 + tgt / 2


def discriminator_lr(iteration: int, max_iters: int, lr: float, power: float = 0.9, lr_min: float = 0.0) -> float:
    """Published ``adjust_learning_rate_D``: (lr - lr_min) (1 - t / T)^power + lr_min, set before
    iteration t's step (no warm-up)."""
    return (lr - lr_min) * (1 - min(iteration, max_iters) / max_iters) ** power + lr_min


def build_discriminator_optimizer(discriminator: nn.Module, max_iters: int, lr: float = 1e-4,
                                  betas: tuple[float, float] = (0.9, 0.99), power: float = 0.9,
                                  lr_min: float = 0.0):  # fmt: skip
    """(Adam, LambdaLR) of the discriminator: the scheduler is stepped once per iteration after
    the optimiser, like the segmentor's, so iteration t runs at ``discriminator_lr(t, ...)``."""
    optimizer = torch.optim.Adam(discriminator.parameters(), lr=lr, betas=betas)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda it: discriminator_lr(it, max_iters, lr, power, lr_min) / lr)
    return optimizer, scheduler


def build_discriminator(cfg, device) -> tuple[nn.Module, tuple]:
    """(FCDiscriminator on ``device``, (Adam, LambdaLR)) of a training config's ``uda`` section."""
    u = cfg.uda
    disc = FCDiscriminator(cfg.model.num_classes).to(device)
    return disc, build_discriminator_optimizer(disc, cfg.max_iters, u.adv_lr, u.adv_betas, u.adv_lr_power, u.adv_lr_min)
