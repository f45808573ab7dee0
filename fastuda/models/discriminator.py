"""AdvSeg's fully convolutional discriminator (output-space adaptation).

Tsai et al., "Learning to Adapt Structured Output Space for Semantic
Segmentation", CVPR 2018. As the published HRDA / MIC code builds it
(mmseg/models/uda/fcdiscriminator.py, from AdaptSegNet): four 4x4 stride-2
convolutions with LeakyReLU(0.2), widths ndf x (1, 2, 4, 8), then a 4x4
stride-2 classifier to one channel, so a (B, C, H, W) softmax map gives
(B, 1, ~H/32, ~W/32) patch logits. PyTorch's default initialisation, as
published (no init call there).
"""

import torch
from torch import nn


class FCDiscriminator(nn.Module):
    """Patch discriminator on class probabilities: source (label 0) vs target (label 1)."""

    def __init__(self, num_classes: int, ndf: int = 64):  # ndf: width of the first layer (published: 64)
        super().__init__()
        conv = dict(kernel_size=4, stride=2, padding=1)
        self.conv1 = nn.Conv2d(num_classes, ndf, **conv)
        self.conv2 = nn.Conv2d(ndf, ndf * 2, **conv)
        self.conv3 = nn.Conv2d(ndf * 2, ndf * 4, **conv)
        self.conv4 = nn.Conv2d(ndf * 4, ndf * 8, **conv)
        self.classifier = nn.Conv2d(ndf * 8, 1, **conv)
        self.act = nn.LeakyReLU(negative_slope=0.2)

    def forward(self, probs: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) class probabilities -> (B, 1, H/32, W/32) domain logits."""
        x = probs
        for conv in (self.conv1, self.conv2, self.conv3, self.conv4):
            x = self.act(conv(x))  # (B, ndf * 2^k, H / 2^(k+1), W / 2^(k+1))
        return self.classifier(x)
