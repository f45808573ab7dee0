"""Strong augmentation of the mixed image (DACS ``strong_transform``), batched on the device.

Published semantics (mmseg/models/utils/dacs_transforms.py with kornia 0.5.8):

- Colour jitter when U(0, 1) > 0.2, one draw per iteration for the batch
  (``jitter_prob`` = 0.8 here). Images are de-normalised to [0, 1]; each image
  draws its own factors, brightness b ~ U[1-s, 1+s] applied additively
  (x + b - 1), contrast c ~ U[1-s, 1+s] multiplicatively (x * c), saturation
  ~ U[1-s, 1+s] (HSV s * factor), hue h ~ U[-s, s] * 2 pi (HSV rotation), in
  a random order, clamped to [0, 1] after each; then re-normalised.
- Gaussian blur when U(0, 1) > 0.5 (one draw per iteration), sigma ~
  U(0.15, 1.15), kernel floor(ceil(0.1 d) - 0.5 + ceil(0.1 d) % 2)
  per side d (51 at 512, 103 at 1024), reflect padding, on the normalised image.

Which draws an image shares depends on how the published code calls
``strong_transform``. DACS calls it once per mixed image (``dacs.py``), so
after ClassMix every image has its own jitter order and blur sigma
(``shared=False``, the default). MIC calls it once for the whole masked batch
(``masking_consistency_module.py``): kornia's ColorJitter then draws one order
for the batch (its factors stay per image) and ``gaussian_blur`` one sigma, so
``shared=True`` shares the order and the sigma. The apply/skip decisions are
one draw per call either way.

Every random number comes from the ``generator`` argument, on the image's
device; the apply/skip decisions are tensors selected with ``torch.where``,
so there is no host sync; the ImageNet mean and std are cached on the device.
"""

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from ._constants import device_constant

IMAGENET_MEAN = (123.675, 116.28, 103.53)  # RGB, 0..255
IMAGENET_STD = (58.395, 57.12, 57.375)


def _stats(x: Tensor, mean, std) -> tuple[Tensor, Tensor]:
    """(1, 3, 1, 1) mean and std in [0, 1] units, cached on x's device (no host copy per step)."""
    m = device_constant([v / 255 for v in mean], x.device, x.dtype).view(1, 3, 1, 1)
    s = device_constant([v / 255 for v in std], x.device, x.dtype).view(1, 3, 1, 1)
    return m, s


def _uniform(shape, low: float, high: float, generator, device) -> Tensor:
    return low + (high - low) * torch.rand(shape, generator=generator, device=device)


def rgb_to_hsv(rgb: Tensor, eps: float = 1e-8) -> Tensor:
    """(B, 3, H, W) in [0, 1] -> HSV with h in [0, 2 pi), s, v in [0, 1] (kornia's convention)."""
    maxc, argmax = rgb.max(1)  # (B, H, W)
    minc = rgb.min(1).values
    delta = maxc - minc
    s = delta / (maxc + eps)
    delta_safe = torch.where(delta == 0, torch.ones_like(delta), delta)
    r, g, b = rgb.unbind(1)
    hr = torch.remainder((g - b) / delta_safe, 6)
    hg = (b - r) / delta_safe + 2
    hb = (r - g) / delta_safe + 4
    h = torch.where(argmax == 0, hr, torch.where(argmax == 1, hg, hb))
    h = torch.where(delta == 0, torch.zeros_like(h), h)
    h = torch.remainder(h / 6, 1) * (2 * math.pi)
    return torch.stack([h, s, maxc], 1)


def hsv_to_rgb(hsv: Tensor) -> Tensor:
    h, s, v = hsv.unbind(1)
    h6 = torch.remainder(h / (2 * math.pi), 1) * 6
    hi = torch.floor(h6)
    f = h6 - hi
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    hi = hi.long() % 6
    r = torch.stack([v, q, p, p, t, v], 1).gather(1, hi.unsqueeze(1))
    g = torch.stack([t, v, v, q, p, p], 1).gather(1, hi.unsqueeze(1))
    b = torch.stack([p, p, t, v, v, q], 1).gather(1, hi.unsqueeze(1))
    return torch.cat([r, g, b], 1)


def _brightness(x: Tensor, f: Tensor) -> Tensor:
    return (x + (f - 1).view(-1, 1, 1, 1)).clamp(0, 1)


def _contrast(x: Tensor, f: Tensor) -> Tensor:
    return (x * f.view(-1, 1, 1, 1)).clamp(0, 1)


def _saturation(x: Tensor, f: Tensor) -> Tensor:
    h, s, v = rgb_to_hsv(x).unbind(1)
    s = (s * f.view(-1, 1, 1)).clamp(0, 1)
    return hsv_to_rgb(torch.stack([h, s, v], 1)).clamp(0, 1)


def _hue(x: Tensor, f: Tensor) -> Tensor:
    h, s, v = rgb_to_hsv(x).unbind(1)
    h = torch.remainder(h + f.view(-1, 1, 1) * 2 * math.pi, 2 * math.pi)
    return hsv_to_rgb(torch.stack([h, s, v], 1)).clamp(0, 1)


def color_jitter(
    image: Tensor,  # (B, 3, H, W) normalised
    generator: torch.Generator | None,
    prob: float = 0.8,
    strength: float = 0.2,
    mean=IMAGENET_MEAN,
    std=IMAGENET_STD,
    shared: bool = False,
) -> Tensor:
    """Colour jitter of the batch with probability ``prob`` (one draw), per-image factors;
    the order of the four ops per image, or one order for the batch when ``shared``."""
    B, device = image.shape[0], image.device
    apply = torch.rand((), generator=generator, device=device) < prob  # published: U > 0.2
    s = strength
    factors = [
        _uniform(B, max(0.0, 1 - s), 1 + s, generator, device),  # brightness
        _uniform(B, max(0.0, 1 - s), 1 + s, generator, device),  # contrast
        _uniform(B, max(0.0, 1 - s), 1 + s, generator, device),  # saturation
        _uniform(B, -s, s, generator, device),  # hue, a fraction of a turn
    ]
    ops = (_brightness, _contrast, _saturation, _hue)
    # (B, 4): a permutation per image, or one for all (kornia's one randperm(4) per call)
    order = torch.rand(1 if shared else B, 4, generator=generator, device=device).argsort(1).expand(B, 4)
    m, sd = _stats(image, mean, std)
    x = (image * sd + m).clamp(0, 1)  # [0, 1] RGB (kornia expects it)
    for position in range(4):
        out = x
        for j, op in enumerate(ops):
            pick = (order[:, position] == j).view(B, 1, 1, 1)
            out = torch.where(pick, op(x, factors[j]), out)
        x = out
    jittered = (x - m) / sd
    return torch.where(apply, jittered.to(image.dtype), image)


def blur_kernel_size(side: int) -> int:
    """The published odd kernel: floor(ceil(0.1 d) - 0.5 + ceil(0.1 d) % 2)."""
    c = math.ceil(0.1 * side)
    return int(math.floor(c - 0.5 + c % 2))


def _gaussian_1d(sigma: Tensor, size: int) -> Tensor:
    """(B, size) normalised kernels (kornia ``gaussian``)."""
    x = torch.arange(size, dtype=sigma.dtype, device=sigma.device) - size // 2
    if size % 2 == 0:
        x = x + 0.5
    g = torch.exp(-x.pow(2)[None] / (2 * sigma[:, None] ** 2))
    return g / g.sum(1, keepdim=True)


def _blur_axis(x: Tensor, kernel: Tensor, dim: int) -> Tensor:
    """Separable blur along H (dim 2) or W (dim 3) with per-image kernels, reflect padding."""
    B, C, H, W = x.shape
    k = kernel.shape[1]
    pad = k // 2
    weight = kernel.repeat_interleave(C, 0)  # (B*C, k)
    if dim == 2:
        x = F.pad(x, (0, 0, pad, pad), mode="reflect")
        weight = weight.view(B * C, 1, k, 1)
    else:
        x = F.pad(x, (pad, pad, 0, 0), mode="reflect")
        weight = weight.view(B * C, 1, 1, k)
    out = F.conv2d(x.reshape(1, B * C, *x.shape[2:]), weight.to(x.dtype), groups=B * C)
    return out.view(B, C, H, W)


def gaussian_blur(image: Tensor, generator: torch.Generator | None, prob: float = 0.5, shared: bool = False) -> Tensor:
    """Gaussian blur of the batch with probability ``prob`` (one draw), sigma ~ U(0.15, 1.15)
    per image, or one sigma for the batch when ``shared``."""
    B, _, H, W = image.shape
    device = image.device
    apply = torch.rand((), generator=generator, device=device) < prob  # published: U > 0.5
    sigma = _uniform(1 if shared else B, 0.15, 1.15, generator, device).to(torch.float32).expand(B)
    x = image
    ky, kx = blur_kernel_size(H), blur_kernel_size(W)
    if ky > 1 and ky // 2 < H:
        x = _blur_axis(x, _gaussian_1d(sigma, ky), 2)
    if kx > 1 and kx // 2 < W:
        x = _blur_axis(x, _gaussian_1d(sigma, kx), 3)
    return torch.where(apply, x, image)


def strong_augment(image: Tensor, generator: torch.Generator | None, jitter_prob: float = 0.8,
                   jitter_strength: float = 0.2, blur_prob: float = 0.5, shared: bool = False) -> Tensor:  # fmt: skip
    """Colour jitter then blur, as the published ``strong_transform`` (ClassMix happens before).
    ``shared``: one jitter order and one blur sigma for the whole batch (MIC), see the module doc."""
    image = color_jitter(image, generator, jitter_prob, jitter_strength, shared=shared)
    return gaussian_blur(image, generator, blur_prob, shared)
