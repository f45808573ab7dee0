"""The mean teacher (DACS / DAFormer): an exponential moving average of the student.

As published (mmseg/models/uda/dacs.py ``_init_ema_weights`` / ``_update_ema``):
at iteration 0 the teacher's parameters are copied from the student; then

    alpha_t = min(1 - 1 / (t + 1), alpha)        (alpha = 0.999)
    theta_teacher <- alpha_t * theta_teacher + (1 - alpha_t) * theta_student

over parameters only: BN running statistics are the teacher's own (its BN
stays in train mode) and are never averaged. The update runs before the
student's optimiser step of the same iteration. The teacher's Dropout and
DropPath are off.
"""

import copy

import torch
from torch import nn

_STOCHASTIC = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout)


def ema_alpha(iteration: int, alpha: float = 0.999) -> float:
    """alpha_t = min(1 - 1 / (t + 1), alpha): the warm-up lets early teachers follow the student."""
    return min(1.0 - 1.0 / (iteration + 1), alpha)


def _is_stochastic(module: nn.Module) -> bool:
    return isinstance(module, _STOCHASTIC) or type(module).__name__ == "DropPath"


def teacher_mode(teacher: nn.Module) -> nn.Module:
    """Train mode (BN uses batch statistics, as published) with Dropout and DropPath off."""
    teacher.train()
    for m in teacher.modules():
        if _is_stochastic(m):
            m.training = False
    return teacher


def make_teacher(student: nn.Module) -> nn.Module:
    """A frozen copy of ``student`` in teacher mode (no gradients)."""
    teacher = copy.deepcopy(student)
    teacher.requires_grad_(False)
    return teacher_mode(teacher)


@torch.no_grad()
def ema_update(teacher: nn.Module, student: nn.Module, iteration: int, alpha: float = 0.999) -> None:
    """One EMA step over the parameters (``torch._foreach_lerp_``, one fused pass; no host sync)."""
    t_params = list(teacher.parameters())
    s_params = [p.detach() for p in student.parameters()]
    if len(t_params) != len(s_params):
        raise ValueError(f"teacher has {len(t_params)} parameters, student {len(s_params)}")
    if iteration == 0:
        torch._foreach_copy_(t_params, s_params)
        return
    # lerp: t + w (s - t) = (1 - w) t + w s with w = 1 - alpha_t
    torch._foreach_lerp_(t_params, s_params, 1.0 - ema_alpha(iteration, alpha))
