"""HRDA: multi-resolution training with a learned scale attention.

Hoyer et al., "HRDA: Context-Aware High-Resolution Domain-Adaptive Semantic
Segmentation", ECCV 2022. Shared encoder and decoder for two scales: a
low-resolution context crop (the input downscaled by ``lr_scale`` = 0.5) and a
high-resolution detail crop (``detail_crop`` = 512 px of the full-resolution
input, offsets divisible by 8). A light DAFormer-style head on the context
features predicts a class-wise scale attention a = sigmoid(.); the prediction
is fused as

    y_F = up((1 - a') * y_c) + up(a') * pad(y_d)          (HRDA Eq. 3)

with a' = a zeroed outside the detail box, computed by the fused
``fastuda.ops.scale_fusion`` kernel (no upsampled intermediate is stored).
Module names match the released HRDA checkpoints (``decode_head.head.*``,
``decode_head.scale_attention.*``).

Two single-scale heads, as the published ``HRDAHead`` builds them: DAFormer's
(output stride 4; its scale attention is a DAFormer head whose ASPP fusion is a
1x1 ConvBNReLU) and DeepLabV2's (output stride 8; HRDA experiment 41,
``hrda1-512-0.1_dlv2red``: its scale attention is a second DeepLabV2 ASPP
classifier with the same dilations). With stride 8 and detail offsets divisible
by 8, the detail box lands exactly on the fused grid but not always on the
context grid (stride 16): the attention is then kept on floor(box / 16), as
the published ``scale_box`` (``int(y / 16)``) does.
"""

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

import fastuda.ops as ops

from .daformer_head import DAFormerHead, DeepLabV2Head
from .segmentor import EncoderDecoder
from .slide import paste_average, slide_inference, sliding_windows

OUTPUT_STRIDE = {"daformer": 4, "deeplabv2": 8}  # each single-scale head's output stride
MIN_SIDE = 64  # the smallest side forward_pseudo runs on: MiT needs 32 for the x0.5 context


class HRDAHead(nn.Module):
    """The shared segmentation head ``head`` and the scale-attention head
    ``scale_attention``, class-wise by default, or a fixed attention value (the
    ablation). ``single_scale_head``: "daformer" (the attention: a DAFormer head with
    a 1x1 ConvBNReLU fusion) or "deeplabv2" (the attention: a second DeepLabV2 ASPP
    classifier on the last feature map, ``dilations`` as the segmentation head's)."""

    def __init__(
        self,
        in_channels: Sequence[int],
        num_classes: int,
        *,
        attention_classwise: bool = True,  # one attention map per class (HRDA default) or one for all
        embed_dim: int = 256,  # width of the segmentation head (HRDA: 256, as DAFormer's)
        attention_embed_dim: int | None = None,  # width of the scale-attention head (None: embed_dim)
        fixed_attention: float | None = None,  # replaces the learned attention by a constant (ablation: 0.5)
        single_scale_head: str = "daformer",  # "daformer" | "deeplabv2" (HRDA experiment 41: dlv2red)
        dilations: Sequence[int] = (6, 12),  # deeplabv2 only: the ASPP rates of both heads ("red": 6, 12)
    ):
        super().__init__()
        if single_scale_head not in OUTPUT_STRIDE:
            raise ValueError(f"single_scale_head must be one of {tuple(OUTPUT_STRIDE)}, got {single_scale_head!r}")
        self.output_stride = OUTPUT_STRIDE[single_scale_head]
        attention_classes = num_classes if attention_classwise else 1
        if single_scale_head == "daformer":
            self.head = DAFormerHead(in_channels, num_classes, embed_dim=embed_dim, channels=embed_dim)
            attention_embed_dim = attention_embed_dim or embed_dim
            make_attention = lambda: DAFormerHead(in_channels, attention_classes, embed_dim=attention_embed_dim,  # noqa: E731
                                                  channels=attention_embed_dim, fusion="conv")  # fmt: skip
        else:
            self.head = DeepLabV2Head(in_channels[-1], num_classes, dilations=dilations)
            make_attention = lambda: DeepLabV2Head(in_channels[-1], attention_classes, dilations=dilations)  # noqa: E731
        self.fixed_attention = fixed_attention
        if fixed_attention is None:
            self.scale_attention = make_attention()
        else:
            if not 0.0 <= fixed_attention <= 1.0:
                raise ValueError(f"fixed_attention must be in [0, 1], got {fixed_attention}")
            self.scale_attention = None

    def attention(self, features: Sequence[torch.Tensor], like: torch.Tensor) -> torch.Tensor:
        """a in [0, 1] at the context output resolution: (B, C or 1, h, w)."""
        if self.scale_attention is None:
            return like.new_full((like.shape[0], 1, *like.shape[2:]), self.fixed_attention)
        return torch.sigmoid(self.scale_attention(features))


def random_detail_box(height: int, width: int, crop: int, divisible: int, generator: torch.Generator | None = None,
                      device: torch.device | str | None = None):  # fmt: skip
    """A ``crop`` x ``crop`` box (y0, y1, x0, x1) inside (height, width) with offsets
    divisible by ``divisible``, drawn as HRDA's get_crop_bbox does: offset =
    randint(0, (margin + 1) // divisible) * divisible, y then x, from ``generator``.

    ``device=None``: 4 Python ints (a CPU draw). Otherwise a (4,) int64 tensor drawn on
    ``device`` from a generator on that device: the training step's form, which never
    reaches the host (no sync) and traces as a tensor under torch.compile. Both forms
    make the same draws from the same generator state."""
    if crop > height or crop > width:
        raise ValueError(f"detail crop {crop} does not fit the input {height}x{width}")

    def offset(margin: int) -> torch.Tensor:
        choices = max((margin + 1) // divisible, 1)
        return torch.randint(0, choices, (), generator=generator, device=device) * divisible

    y, x = offset(height - crop), offset(width - crop)
    if device is None:
        y, x = int(y), int(x)  # a CPU tensor: no sync
        return y, y + crop, x, x + crop
    return torch.stack([y, y + crop, x, x + crop])


def crop_at(x: torch.Tensor, box: torch.Tensor, size: int, dim: int) -> torch.Tensor:
    """The ``size`` x ``size`` window of ``x`` at rows box[0].. (dim) and columns box[2]..
    (dim + 1), for a box held on the device: index_select reads the offsets on the device,
    where slicing would need them on the host (a sync)."""
    rows = box[0] + torch.arange(size, device=x.device)
    cols = box[2] + torch.arange(size, device=x.device)
    return x.index_select(dim, rows).index_select(dim + 1, cols)


class HRDASegmentor(EncoderDecoder):
    """An encoder + head at two scales with scale attention (MiT + DAFormer head, or
    ResNet + DeepLabV2 head: ``single_scale_head``).

    Three modes:
    * ``forward_train(img, generator)``: one random detail box per call, shared across
      the batch, drawn on the device; returns (fused logits (B, C, H/4, W/4), detail
      logits (B, C, d/4, d/4), box as a (4,) device tensor).
    * ``forward_pseudo(img)``: the teacher's pseudo-label logits: the detail
      branch slides over the whole input (crop ``detail_crop``, stride half of it:
      9 crops of a 1024 input, in ONE batched call), overlaps averaged, fused
      with the full attention; returned at the input size.
    * ``slide_inference(img)``: test time: ``forward_pseudo`` on ``test_window``
      windows every ``test_stride`` (batched), averaged, for any image size
      (``fastuda.models.slide``, the one slide implementation).
    """

    def __init__(
        self,
        backbone: nn.Module,
        num_classes: int = 19,
        *,
        lr_scale: float = 0.5,  # context scale s_c (the input is downscaled by 2)
        detail_crop: int = 512,  # detail crop size in full-resolution pixels
        crop_divisible: int = 8,  # detail offsets divisible by 8: box/8 lands on the context output grid
        detail_loss_weight: float = 0.1,  # lambda_d in (1 - lambda_d) CE(fused) + lambda_d CE(detail)
        test_window: int = 1024,  # slide inference window (HRDA: 1024, stride 512 on 2048x1024)
        test_stride: int = 512,
        attention_classwise: bool = True,
        fixed_attention: float | None = None,
        embed_dim: int = 256,  # width of both heads (segmentation and scale attention; DAFormer only)
        single_scale_head: str = "daformer",  # "daformer" | "deeplabv2"
        dilations: Sequence[int] = (6, 12),  # deeplabv2's ASPP rates
    ):
        head = HRDAHead(backbone.out_channels, num_classes, attention_classwise=attention_classwise,
                        embed_dim=embed_dim, fixed_attention=fixed_attention, single_scale_head=single_scale_head,
                        dilations=dilations)  # fmt: skip
        super().__init__(backbone, head)
        self.output_stride = head.output_stride
        if lr_scale != 0.5:
            raise ValueError(f"lr_scale must be 0.5 (the fused kernel upsamples by 2), got {lr_scale}")
        if detail_crop % crop_divisible or crop_divisible % self.output_stride:
            raise ValueError(
                f"detail_crop ({detail_crop}) must be divisible by crop_divisible ({crop_divisible}), "
                f"itself divisible by the head's output stride {self.output_stride}"
            )
        # Batch statistics (ResNet's BatchNorm) differ between one call on both inputs and a call on
        # each: only per-token-normalised encoders (MiT) may batch the two scales.
        self._batch_scales = not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in backbone.modules())
        self.lr_scale = lr_scale
        self.detail_crop = detail_crop
        self.crop_divisible = crop_divisible
        self.detail_loss_weight = detail_loss_weight
        self.test_window = test_window
        self.test_stride = test_stride

    # -- helpers -------------------------------------------------------------------------------

    def _context(self, img: torch.Tensor) -> torch.Tensor:
        return F.interpolate(img, scale_factor=self.lr_scale, mode="bilinear", align_corners=False)

    def _encode_pair(self, context: torch.Tensor, detail: torch.Tensor):
        """Encoder features of both inputs. MiT normalises per token (LayerNorm),
        so when the two inputs have the same size one batched call gives the same
        features as two calls, with fewer, larger kernels (published: two calls)."""
        if context.shape == detail.shape and self._batch_scales:
            feats = self.backbone(torch.cat([context, detail]))
            B = context.shape[0]
            return [f[:B] for f in feats], [f[B:] for f in feats]
        return self.backbone(context), self.backbone(detail)

    def _check_input(self, img: torch.Tensor) -> None:
        if img.dim() != 4:
            raise ValueError(f"img must have shape (B, 3, H, W), got {tuple(img.shape)}")
        H, W = img.shape[2:]
        if H % 32 or W % 32:
            raise ValueError(f"img height and width must be multiples of 32 for HRDA, got {H}x{W}")

    # -- training ------------------------------------------------------------------------------

    def _device_box(self, box, img: torch.Tensor) -> torch.Tensor:
        """A caller's box as a (4,) int64 tensor on img's device; host boxes are checked here
        (and cost one host-to-device copy: the training step draws its boxes on the device)."""
        if isinstance(box, torch.Tensor):
            if box.shape != (4,) or box.dtype.is_floating_point or box.dtype == torch.bool:
                raise ValueError(
                    f"box must be a (4,) integer tensor (y0, y1, x0, x1), got {box.dtype} {tuple(box.shape)}"
                )
            return box.to(img.device, torch.int64)
        y0, y1, x0, x1 = box
        H, W = img.shape[2:]
        d, k = self.detail_crop, self.crop_divisible
        if y1 - y0 != d or x1 - x0 != d or y0 % k or x0 % k or min(y0, x0) < 0 or y1 > H or x1 > W:
            raise ValueError(f"box (y0, y1, x0, x1) = {tuple(box)} must be a {d}x{d} box inside {H}x{W} "
                             f"with offsets divisible by {k}")  # fmt: skip
        return torch.tensor(box, dtype=torch.int64, device=img.device)

    def forward_train(self, img: torch.Tensor, generator: torch.Generator | None = None, box=None,
                      return_features: bool = False):  # fmt: skip
        """Returns (fused (B, C, H/4, W/4), detail (B, C, crop/4, crop/4), box) and, with
        ``return_features``, the context features (what the ImageNet feature distance uses).

        ``box``: (y0, y1, x0, x1) in input pixels, a (4,) device tensor or 4 ints; None draws
        one from ``generator`` on img's device (``random_detail_box``). The returned box is
        a (4,) int64 tensor on img's device; nothing here reads it on the host."""
        self._check_input(img)
        H, W = img.shape[2:]
        if box is None:
            box = random_detail_box(H, W, self.detail_crop, self.crop_divisible, generator, img.device)
        else:
            box = self._device_box(box, img)
        detail_img = crop_at(img, box, self.detail_crop, 2)  # (B, 3, d, d)
        context_feats, detail_feats = self._encode_pair(self._context(img), detail_img)
        context = self.decode_head.head(context_feats)  # (B, C, H/8, W/8)
        detail = self.decode_head.head(detail_feats)  # (B, C, crop/4, crop/4)
        attention = self.decode_head.attention(context_feats, context)
        out_box = box // self.output_stride  # the box on the fused grid (exact: offsets divisible by the stride)
        fused = ops.scale_fusion(context, attention, detail, crop_box=out_box, scale=2)
        if return_features:
            return fused, detail, box, context_feats
        return fused, detail, box

    def loss(self, fused, detail, box, label, weight=None) -> torch.Tensor:
        """(1 - lambda_d) CE(fused, label) + lambda_d CE(detail, label in the box), logits
        resized bilinearly to the label size, pixel-weighted mean over all pixels. ``box``:
        as ``forward_train`` returns it."""
        fused = F.interpolate(fused, size=label.shape[1:], mode="bilinear", align_corners=False)
        loss = (1 - self.detail_loss_weight) * ops.weighted_cross_entropy(fused, label, weight)
        if self.detail_loss_weight > 0:
            box = box if isinstance(box, torch.Tensor) else torch.tensor(box, device=label.device)
            crop_label = crop_at(label, box, self.detail_crop, 1)
            crop_weight = None if weight is None else crop_at(weight, box, self.detail_crop, 1)
            detail = F.interpolate(detail, size=crop_label.shape[1:], mode="bilinear", align_corners=False)
            loss = loss + self.detail_loss_weight * ops.weighted_cross_entropy(detail, crop_label, crop_weight)
        return loss

    # -- pseudo-labels and inference -------------------------------------------------------------

    def forward_pseudo(self, img: torch.Tensor) -> torch.Tensor:
        """Logits at the input size: the context at lr_scale plus the detail branch slid over
        the whole input (overlaps averaged) and fused with the unmasked attention.

        Published (``HRDAEncoderDecoder.encode_decode``) for sides that are multiples of 8,
        the sizes it runs on: at others its context and detail maps disagree in size and
        it fails. Those sides are zero-padded (the mean colour) at the bottom / right to
        the next multiple of 8 here (sides under 64, where the published code fails too, to
        64), and the logits cut back to the input size."""
        if img.dim() != 4:
            raise ValueError(f"img must have shape (B, 3, H, W), got {tuple(img.shape)}")
        B, _, H, W = img.shape
        step = 2 * self.output_stride  # the context (x0.5) output grid must be exactly half the detail one
        # MiT runs on sides of at least 32 (its first spatial reduction is an 8x8 convolution at
        # stride 4), so the x0.5 context needs 64: smaller images are padded up to that as well
        pad_h, pad_w = max(-H % step, MIN_SIDE - H), max(-W % step, MIN_SIDE - W)
        if pad_h or pad_w:
            return self.forward_pseudo(F.pad(img, (0, pad_w, 0, pad_h)))[:, :, :H, :W]
        boxes = sliding_windows(H, W, self.detail_crop, self.detail_crop // 2)
        crops = torch.cat([img[:, :, y0:y1, x0:x1] for y0, y1, x0, x1 in boxes])  # (len(boxes) * B, 3, d, d)
        context_feats = self.backbone(self._context(img))
        context = self.decode_head.head(context_feats)  # (B, C, H/8, W/8)
        detail_logits = self.decode_head.head(self.backbone(crops))  # one call for every crop
        size = (H // self.output_stride, W // self.output_stride)
        detail = paste_average(detail_logits, boxes, B, size, self.output_stride)  # overlaps averaged
        attention = self.decode_head.attention(context_feats, context)
        fused = ops.scale_fusion(context, attention, detail, crop_box=None, scale=2)
        return F.interpolate(fused, size=(H, W), mode="bilinear", align_corners=False)

    def slide_inference(self, img: torch.Tensor) -> torch.Tensor:
        """Test-time logits at the input size for any H, W: ``forward_pseudo`` on windows of
        ``test_window`` every ``test_stride`` over the image as it is, averaged
        (``fastuda.models.slide.slide_inference``, mmseg's published one)."""
        return slide_inference(self, img, self.test_window, self.test_stride)

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        """Inference logits at the input size (``slide_inference``)."""
        return self.slide_inference(img)
