"""AdamW with the published parameter groups, and the poly schedule with linear warm-up.

Published (configs/_base_/schedules/adamw.py, poly10warm.py; mmcv's
DefaultOptimizerConstructor): custom_keys head (lr x 10), pos_block and norm
(weight decay x 0). Each parameter takes the FIRST key contained in its name,
keys tried longest first, then alphabetically: pos_block, head, norm. So the
decode head's BN layers keep their weight decay and the encoder's LayerNorms
lose it.

    lr(t) = lr * (1 - t / T) ** power                          (poly, T = 40000)
    lr(t) = lr(t) * (1 - (1 - t / t_w) * (1 - ratio))  for t < t_w = 1500 (warm-up)
"""

import torch
from torch import nn

from fastuda.config import OptimConfig

_KEYS = ("pos_block", "head", "norm")  # mmcv's order: by length (desc), then alphabetical


def param_groups(model: nn.Module, cfg: OptimConfig) -> list[dict]:
    """Parameter groups with their ``lr`` and ``weight_decay``, one per (lr, decay) pair."""
    groups: dict[tuple[float, float], list] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        lr_mult, decay_mult = 1.0, 1.0
        key = next((k for k in _KEYS if k in name), None)
        if key == "head":
            lr_mult = cfg.head_lr_mult
        elif key is not None:
            decay_mult = 0.0
        groups.setdefault((lr_mult, decay_mult), []).append(p)
    return [
        {"params": ps, "lr": cfg.lr * lr_mult, "initial_lr": cfg.lr * lr_mult, "weight_decay": cfg.weight_decay * d}
        for (lr_mult, d), ps in groups.items()
    ]


def build_optimizer(model: nn.Module, cfg: OptimConfig) -> torch.optim.Optimizer:
    """AdamW, or SGD with momentum (``optim.name``; the published AdvSeg / MinEnt on DeepLabV2:
    configs/_base_/schedules/sgd.py, lr 0.0025 from experiments.py, no head multiplier)."""
    # Capturable / foreach defaults: the step keeps its state on the device (no host sync).
    if cfg.name == "sgd":
        return torch.optim.SGD(param_groups(model, cfg), lr=cfg.lr, momentum=cfg.momentum,
                               weight_decay=cfg.weight_decay)  # fmt: skip
    return torch.optim.AdamW(param_groups(model, cfg), lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)


def lr_factor(iteration: int, max_iters: int, cfg: OptimConfig) -> float:
    """The multiplier of each group's base lr at ``iteration`` (0-based)."""
    factor = (1.0 - min(iteration, max_iters) / max_iters) ** cfg.power
    if iteration < cfg.warmup_iters:
        factor *= 1.0 - (1.0 - iteration / cfg.warmup_iters) * (1.0 - cfg.warmup_ratio)
    return factor


def build_scheduler(optimizer: torch.optim.Optimizer, max_iters: int, cfg: OptimConfig):
    """A LambdaLR stepped once per iteration after the optimiser step."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda it: lr_factor(it, max_iters, cfg))
