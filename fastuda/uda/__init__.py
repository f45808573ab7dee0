"""fastuda.uda: the DAFormer / HRDA / MIC training strategies (EMA teacher,
strong augmentation, ImageNet feature distance, rare class sampling, MIC) and
``uda_step``, one training iteration."""

from .augment import blur_kernel_size, color_jitter, gaussian_blur, strong_augment
from .ema import ema_alpha, ema_update, make_teacher, teacher_mode
from .fd import downscale_label_ratio, feature_distance_mask, make_imnet_encoder, masked_feature_distance
from .mic import block_mask, mask_image
from .optim import build_optimizer, build_scheduler, lr_factor, param_groups
from .rcs import RareClassSampling
from .step import StepState, uda_step

__all__ = [
    "RareClassSampling", "blur_kernel_size", "block_mask", "build_optimizer", "build_scheduler", "color_jitter",
    "downscale_label_ratio", "ema_alpha", "ema_update", "feature_distance_mask", "gaussian_blur",
    "lr_factor", "make_imnet_encoder", "make_teacher", "mask_image", "masked_feature_distance", "param_groups",
    "StepState", "strong_augment", "teacher_mode", "uda_step",
]  # fmt: skip
