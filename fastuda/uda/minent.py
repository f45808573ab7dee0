"""MinEnt: entropy minimisation on the target (ADVENT).

Vu et al., "ADVENT: Adversarial Entropy Minimization for Domain Adaptation in
Semantic Segmentation", CVPR 2019, as the published HRDA / MIC code runs it
(mmseg/models/uda/minent.py, configs/_base_/uda/minent.py): on the softmax p of
the segmentor's main target prediction (the logits resized to the input crop;
HRDA: the fused logits resized to half the crop),

    L_ent = lambda_ent * -sum_{n,c,h,w} p log2(p + 1e-30) / (N h w log2 C)

with lambda_ent = 0.001 (``main``; ``aux`` 0.0002 is for an auxiliary head, which
no published MinEnt network has). Computed here from log_softmax, the same value
(the 1e-30 guards log(0), which log_softmax never takes) without the softmax ->
log round trip; statistics in float32 for half-precision logits.
"""

import math

import torch
import torch.nn.functional as F
from torch import Tensor


def entropy_loss(logits: Tensor) -> Tensor:
    """Mean over pixels of the normalised entropy of softmax(logits) (B, C, H, W): in [0, 1]."""
    if logits.dim() != 4:
        raise ValueError(f"logits must have shape (B, C, H, W), got {tuple(logits.shape)}")
    if logits.dtype in (torch.float16, torch.bfloat16):
        logits = logits.float()
    log_p = F.log_softmax(logits, dim=1)
    entropy = -(log_p.exp() * log_p).sum(dim=1)  # (B, H, W), nats
    return entropy.mean() / math.log(logits.shape[1])
