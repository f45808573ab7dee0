"""Helpers shared by the training-step tests: a small BatchNorm encoder and the CUDA
host-sync check."""

import torch
from torch import nn

from fastuda.uda import StepState, uda_step


class TinyBNEncoder(nn.Module):
    """A stride-8 encoder with BatchNorm (what a dilated ResNet is to HRDA): one feature map."""

    out_channels = [16]

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 16, 8, stride=8), nn.BatchNorm2d(16), nn.ReLU())

    def forward(self, x):
        return [self.body(x)]


def steps_without_host_sync(state: StepState, batch: dict, cfg) -> tuple[torch.Tensor, dict]:
    """One warm-up step (lazy initialisation may sync once), then two steps under
    torch.cuda.set_sync_debug_mode("error"), which raises on any host sync. Returns the
    last step's (loss, logs)."""
    uda_step(state, batch, cfg, 0)
    torch.cuda.synchronize()
    previous = torch.cuda.get_sync_debug_mode()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for it in (1, 2):
            state.student.zero_grad(set_to_none=True)
            loss, logs = uda_step(state, batch, cfg, it)
    finally:
        torch.cuda.set_sync_debug_mode(previous)
    return loss, logs
