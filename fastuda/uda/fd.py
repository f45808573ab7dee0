"""ImageNet feature distance (DAFormer Sec. 3.4): keep the student's bottleneck
features close to those of the ImageNet-pretrained encoder on thing classes.

Published (mmseg/models/uda/dacs.py ``calc_feat_dist``, mmseg/utils/utils.py
``downscale_label_ratio``): the source label is downscaled to the feature grid
(a cell takes its majority class if that class covers >= 0.75 of it, else
ignore); the per-pixel L2 distance over channels between the student's and the
frozen encoder's last-stage features is averaged over cells whose label is a
thing class, times lambda_FD = 0.005. The published mean over an empty mask
is NaN; here it is 0 (sum / max(count, 1), no host sync).
"""

import copy

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._constants import device_constant


def downscale_label_ratio(label: Tensor, scale: int, min_ratio: float = 0.75, num_classes: int = 19,
                          ignore_index: int = 255) -> Tensor:  # fmt: skip
    """(B, H, W) labels -> (B, H // scale, W // scale): each cell's majority class,
    ``ignore_index`` where the ignore label wins or the majority covers < ``min_ratio``."""
    if scale < 1:
        raise ValueError(f"scale must be >= 1, got {scale}")
    sub = torch.where(label == ignore_index, num_classes, label)  # ignore -> an extra class
    onehot = F.one_hot(sub, num_classes + 1).permute(0, 3, 1, 2).float()  # (B, K + 1, H, W)
    ratio, out = F.avg_pool2d(onehot, kernel_size=scale).max(1)  # (B, H/s, W/s)
    out = torch.where(out == num_classes, ignore_index, out)
    return torch.where(ratio < min_ratio, ignore_index, out)


def feature_distance_mask(label: Tensor, feat_hw: tuple[int, int], classes, min_ratio: float = 0.75,
                          num_classes: int = 19, ignore_index: int = 255) -> Tensor:  # fmt: skip
    """bool (B, h, w): feature cells whose downscaled label is one of ``classes``."""
    scale = label.shape[-1] // feat_hw[-1]
    small = downscale_label_ratio(label, scale, min_ratio, num_classes, ignore_index)
    small = small[:, : feat_hw[0], : feat_hw[1]]
    things = device_constant(classes, small.device, small.dtype)  # cached: no host copy per step
    # a comparison, not torch.isin: isin switches to a unique()-based path (a host sync)
    # when the class list is long relative to the feature map
    return (small.unsqueeze(-1) == things).any(-1)


def masked_feature_distance(student: Tensor, imnet: Tensor, mask: Tensor | None) -> Tensor:
    """Mean over masked cells of ||f_student - f_imnet||_2 (over channels); 0 on an empty mask."""
    dist = torch.linalg.vector_norm(student.float() - imnet.float(), dim=1)  # (B, h, w)
    if mask is None:
        return dist.mean()
    mask = mask.to(dist.dtype)
    return (dist * mask).sum() / mask.sum().clamp_min(1.0)


def make_imnet_encoder(backbone: nn.Module) -> nn.Module:
    """A frozen copy of the initial (ImageNet) encoder, in eval mode; call it under no_grad."""
    encoder = copy.deepcopy(backbone)
    encoder.requires_grad_(False)
    return encoder.eval()


def feature_distance_loss(student_feats, imnet_encoder: nn.Module, image: Tensor, label: Tensor, lam: float,
                          classes, min_ratio: float = 0.75, num_classes: int = 19) -> Tensor:  # fmt: skip
    """lambda_FD * FD on the last feature level of ``student_feats`` (a list from the encoder)."""
    imnet_encoder.eval()
    with torch.no_grad():
        imnet_feat = imnet_encoder(image)[-1].detach()
    feat = student_feats[-1]
    mask = feature_distance_mask(label, feat.shape[-2:], classes, min_ratio, num_classes)
    return lam * masked_feature_distance(feat, imnet_feat, mask)
