"""mmseg's PhotoMetricDistortion on uint8 tensors: random brightness, contrast,
saturation and hue, as the published target-only and domain-generalisation
configs apply it to labelled training crops (HRDA ``cityscapesHR_1024x1024.py``,
``uda_gtaCAug*_to_cityscapes*.py``; DACS applies its own colour jitter later,
so the UDA configs leave it out).

The published step works on OpenCV's 8-bit HSV (H in 0..179, S and V in
0..255): ``mmcv.bgr2hsv`` is OpenCV's integer conversion with its division
tables, ``mmcv.hsv2bgr`` its float one rounded back to uint8. Both are
transcribed here on int32 / float32 tensors, so the distortion equals the
published one for the same draws on crops whose width is a multiple of 32
(checked against mmcv 1.3.7 and OpenCV 4.5 run unmodified; see
``hsv_to_rgb``). The draws come from the pipeline's generator, in the
published order: brightness, the contrast mode, contrast (first or last),
saturation, hue.
"""

import torch
from torch import Tensor

_HSV_SHIFT = 12  # OpenCV's fixed-point shift for the 8-bit RGB -> HSV tables


def _cv_round(x: Tensor) -> Tensor:
    """OpenCV's saturate_cast<int>(double): round half to even."""
    return torch.round(x).to(torch.int64)


_i = torch.arange(1, 256, dtype=torch.float64)
# sdiv_table[i] = round((255 << 12) / i), hdiv_table180[i] = round((180 << 12) / (6 i)); entry 0 is 0
_SDIV = torch.cat([torch.zeros(1, dtype=torch.int64), _cv_round((255 << _HSV_SHIFT) / _i)]).int()
_HDIV = torch.cat([torch.zeros(1, dtype=torch.int64), _cv_round((180 << _HSV_SHIFT) / (6.0 * _i))]).int()
del _i


def rgb_to_hsv(image: Tensor) -> Tensor:
    """uint8 (3, H, W) RGB -> uint8 (3, H, W) HSV, OpenCV's COLOR_RGB2HSV (H in 0..179)."""
    r, g, b = image.to(torch.int32).unbind(0)  # int32: the largest product below is 255 x 1044480
    v = torch.maximum(torch.maximum(b, g), r)
    vmin = torch.minimum(torch.minimum(b, g), r)
    diff = v - vmin
    half = 1 << (_HSV_SHIFT - 1)
    s = (diff * _SDIV[v.long()] + half) >> _HSV_SHIFT
    # the branch-free selection of OpenCV's loop: v == r first, then v == g, else v == b
    h = torch.where(v == r, g - b, torch.where(v == g, b - r + 2 * diff, r - g + 4 * diff))
    h = (h * _HDIV[diff.long()] + half) >> _HSV_SHIFT
    h = torch.where(h < 0, h + 180, h)
    return torch.stack([h, s, v]).to(torch.uint8)


def hsv_to_rgb(hsv: Tensor) -> Tensor:
    """uint8 (3, H, W) HSV (H in 0..179) -> uint8 RGB, OpenCV's COLOR_HSV2RGB in float32.

    OpenCV (4.x) converts runs of 4 x (SIMD width) pixels of a row with vector code
    that truncates the result to uint8, and the rest of the row with scalar code that
    rounds. Every published crop (512 or 1024 wide) is whole runs, so this truncates,
    and it follows OpenCV's AVX2 code (fused multiply-adds), what x86 machines run.
    """
    h = hsv[0].to(torch.float32)
    s = hsv[1].to(torch.float32) * (1.0 / 255.0)
    v = hsv[2].to(torch.float32) * (1.0 / 255.0)
    h = torch.fmod(h * (6.0 / 180.0), 6.0)
    sector = torch.floor(h)
    f = h - sector
    sector = sector.to(torch.uint8).clamp_(0, 5)
    # OpenCV's AVX2 build fuses 1 - s f into one multiply-add (one rounding): the float64
    # product of two float32 values is exact, so rounding 1 - s f once to float32 is the FMA
    s64 = s.to(torch.float64)
    fused = (1.0 - s64 * f.to(torch.float64)).to(torch.float32)  # 1 - s f
    fused_rest = (1.0 - s64 * (1.0 - f).to(torch.float64)).to(torch.float32)  # 1 - s (1 - f)
    tab0, tab1, tab2, tab3 = v, v * (1.0 - s), v * fused, v * fused_rest
    # per sector 0..5, (b, g, r) = tab[(1,3,0) (1,0,2) (3,0,1) (0,2,1) (0,1,3) (2,1,0)] (OpenCV's sector_data)
    b = torch.where(sector < 2, tab1, torch.where(sector == 2, tab3, torch.where(sector < 5, tab0, tab2)))
    g = torch.where(sector == 0, tab3, torch.where(sector < 3, tab0, torch.where(sector == 3, tab2, tab1)))
    r = torch.where((sector == 0) | (sector == 5), tab0, torch.where(sector == 1, tab2,
                    torch.where(sector == 4, tab3, tab1)))  # fmt: skip
    rgb = torch.stack([r, g, b])
    return (rgb * 255.0).clamp_(0, 255).to(torch.uint8)  # v_trunc, then a saturating pack


def _convert(x: Tensor, alpha: float = 1.0, beta: float = 0.0) -> Tensor:
    # float32 multiply-add, clip, then a truncating cast to uint8 (numpy's astype)
    return (x.to(torch.float32) * alpha + beta).clamp_(0, 255).to(torch.uint8)


def photometric_distortion(
    image: Tensor,
    generator: torch.Generator,
    brightness_delta: float = 32,
    contrast_range: tuple[float, float] = (0.5, 1.5),
    saturation_range: tuple[float, float] = (0.5, 1.5),
    hue_delta: int = 18,
) -> Tensor:
    """uint8 (3, H, W) RGB -> uint8 (3, H, W), mmseg 0.16 ``PhotoMetricDistortion``.

    Each of brightness (+U(-32, 32)), contrast (x U(0.5, 1.5)), saturation
    (x U(0.5, 1.5)) and hue (+ an int in [-18, 18), mod 180) is applied with
    probability 1/2; contrast goes first or last with probability 1/2.
    """

    def coin() -> bool:
        return int(torch.randint(0, 2, (), generator=generator)) == 1

    def uniform(lo: float, hi: float) -> float:
        return lo + (hi - lo) * float(torch.rand((), generator=generator))

    def contrast(img: Tensor) -> Tensor:
        return _convert(img, alpha=uniform(*contrast_range)) if coin() else img

    img = image
    if coin():
        img = _convert(img, beta=uniform(-brightness_delta, brightness_delta))
    contrast_last = not coin()  # mmseg: mode = randint(2); mode == 1 -> contrast first
    if not contrast_last:
        img = contrast(img)
    if coin():
        hsv = rgb_to_hsv(img)
        hsv[1] = _convert(hsv[1], alpha=uniform(*saturation_range))
        img = hsv_to_rgb(hsv)
    if coin():
        hsv = rgb_to_hsv(img)
        shift = int(torch.randint(-hue_delta, hue_delta, (), generator=generator))
        hsv[0] = ((hsv[0].to(torch.int64) + shift) % 180).to(torch.uint8)
        img = hsv_to_rgb(hsv)
    if contrast_last:
        img = contrast(img)
    return img
