"""Pure-PyTorch references of every fastuda op.

They are the CPU path, the test oracle and the benchmark baseline, written for
clarity over speed, and they follow the published DAFormer / HRDA / MIC code
(mmseg/models/uda/dacs.py, mmseg/models/losses/cross_entropy_loss.py,
mmseg/models/utils/dacs_transforms.py). Inputs are assumed validated by the
public wrappers in fastuda.ops. Statistics are computed in float32 (float64
for float64 inputs).
"""

import torch
from torch import Tensor


def _acc_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def pseudo_label(
    logits: Tensor,  # (B, C, H, W)
    threshold: float,
    ignore_top: int,
    ignore_bottom: int,
    weight_mode: str,
    valid_mask: Tensor | None,  # (B, H, W)
) -> tuple[Tensor, Tensor]:
    """DACS pseudo-labels: (label int64 (B, H, W), weight float32 (B, H, W)).

    As published: softmax, then max gives (confidence, label); the weight is the
    fraction of pixels with confidence >= threshold over the WHOLE batch
    ("batch"), or per image ("image", the paper's formula), written to every
    pixel, confident or not. Rows [0, ignore_top) and the last ignore_bottom
    rows get 0 (DAFormer: 15 / 120), then the weight is multiplied by the valid
    mask (HRDA / MIC).
    """
    B, _, H, W = logits.shape
    prob = torch.softmax(logits.to(_acc_dtype(logits.dtype)), dim=1)  # (B, C, H, W)
    conf, label = prob.max(dim=1)  # (B, H, W)
    confident = (conf >= threshold).float()
    if weight_mode == "batch":
        frac = confident.sum() / confident.numel()
        weight = frac.expand(B, H, W).clone()
    else:
        frac = confident.flatten(1).sum(1) / (H * W)  # (B,)
        weight = frac[:, None, None].expand(B, H, W).clone()
    weight[:, :ignore_top] = 0
    weight[:, H - ignore_bottom :] = 0
    if valid_mask is not None:
        weight = weight * valid_mask.float()
    return label, weight


def _per_pixel_ce(logits: Tensor, target: Tensor, ignore_index: int) -> Tensor:
    """-log softmax(logits)[target] per pixel (B, H, W); 0 where ignored; NaN
    where the target is neither a class nor ignore_index."""
    C = logits.shape[1]
    log_prob = torch.log_softmax(logits.to(_acc_dtype(logits.dtype)), dim=1)  # (B, C, H, W)
    valid = target != ignore_index
    in_range = (target >= 0) & (target < C)
    index = torch.where(in_range, target, 0).unsqueeze(1)  # (B, 1, H, W)
    ce = -log_prob.gather(1, index).squeeze(1)  # (B, H, W)
    ce = torch.where(valid, ce, 0.0)
    return torch.where(valid & ~in_range, torch.nan, ce)


def weighted_cross_entropy(logits: Tensor, target: Tensor, weight: Tensor | None, ignore_index: int) -> Tensor:
    """sum_p weight_p * CE_p / (B * H * W): the published `.mean()` over ALL pixels,
    ignored ones counting in the denominator. A 0-d float32 (float64 for float64 logits)."""
    ce = _per_pixel_ce(logits, target, ignore_index)
    if weight is not None:
        ce = ce * weight.to(ce.dtype)
    return ce.sum() / ce.numel()


def weighted_cross_entropy_backward(
    grad_loss: Tensor, logits: Tensor, target: Tensor, weight: Tensor | None, ignore_index: int
) -> Tensor:
    """d loss / d logits = g * w_p / (B * H * W) * (softmax - one_hot(target)), 0 where
    ignored. Contiguous, in the logits' dtype."""
    B, C, H, W = logits.shape
    acc = _acc_dtype(logits.dtype)
    valid = target != ignore_index
    in_range = (target >= 0) & (target < C)
    coef = grad_loss.to(acc) / (B * H * W) * torch.ones_like(target, dtype=acc)  # (B, H, W)
    if weight is not None:
        coef = coef * weight.to(acc)
    coef = torch.where(valid, coef, 0.0)
    coef = torch.where(valid & ~in_range, torch.nan, coef)
    grad = torch.softmax(logits.to(acc), dim=1) * coef.unsqueeze(1)  # (B, C, H, W)
    index = torch.where(in_range, target, 0).unsqueeze(1)  # (B, 1, H, W)
    grad.scatter_add_(1, index, -(coef * in_range).unsqueeze(1))  # minus one-hot(target)
    return grad.to(logits.dtype).contiguous()


def class_presence(label: Tensor, num_classes: int, ignore_index: int) -> Tensor:
    """Which classes occur in each image: bool (B, num_classes + 1); the last
    column flags the ignore label. Labels are assumed in range."""
    B = label.shape[0]
    column = torch.where(label == ignore_index, num_classes, label).reshape(B, -1)  # (B, H*W)
    present = torch.zeros(B, num_classes + 1, dtype=torch.bool, device=label.device)
    return present.scatter_(1, column, True)


def classmix(
    source_image: Tensor,  # (B, C, H, W)
    target_image: Tensor,  # (B, C, H, W)
    source_label: Tensor,  # (B, H, W) int64
    target_label: Tensor,  # (B, H, W) int64
    chosen: Tensor,  # (B, num_classes + 1) bool
    source_weight: Tensor | None,  # (B, H, W) float32, None = ones
    target_weight: Tensor | None,  # (B, H, W) float32, None = ones
    ignore_index: int,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """ClassMix (DACS one_mix with a class mask): returns (image, label, weight, mask).

    mask[b, p] = chosen[b, column of source_label[b, p]], the ignore label
    mapping to the last column; labels outside the classes are not chosen.
    Image, label and weight take the source where the mask is set, else the
    target (the published m * src + (1 - m) * tgt with m in {0, 1}).
    """
    B, num_columns = chosen.shape
    num_classes = num_columns - 1
    in_range = (source_label >= 0) & (source_label < num_classes)
    column = torch.where(source_label == ignore_index, num_classes, torch.where(in_range, source_label, 0))
    mask = chosen.gather(1, column.reshape(B, -1)).reshape(source_label.shape)  # (B, H, W)
    mask = mask & (in_range | (source_label == ignore_index))
    image = torch.where(mask.unsqueeze(1), source_image, target_image)
    label = torch.where(mask, source_label, target_label)
    ones = torch.ones(source_label.shape, dtype=torch.float32, device=source_label.device)
    src_w = ones if source_weight is None else source_weight
    tgt_w = ones if target_weight is None else target_weight
    weight = torch.where(mask, src_w, tgt_w)
    return image, label, weight, mask


def attention(q: Tensor, k: Tensor, v: Tensor, scale: float) -> Tensor:
    """softmax(q k^T * scale) v, written out: q (B, H, N, D), k and v (B, H, M, D). The (B, H, N, M)
    probabilities are materialised, as in the published MiT. Computed in float32 (float64 for
    float64), returned in q's dtype."""
    acc = _acc_dtype(q.dtype)
    scores = torch.matmul(q.to(acc), k.to(acc).transpose(-1, -2)) * scale  # (B, H, N, M)
    return torch.matmul(torch.softmax(scores, dim=-1), v.to(acc)).to(q.dtype)


def attention_forward(q: Tensor, k: Tensor, v: Tensor, scale: float) -> tuple[Tensor, Tensor]:
    """(out in q's dtype, lse (B, H, N) float32 / float64): the attention and the log-sum-exp of each
    query's scaled scores, the only statistic the fused backward keeps."""
    acc = _acc_dtype(q.dtype)
    scores = torch.matmul(q.to(acc), k.to(acc).transpose(-1, -2)) * scale  # (B, H, N, M)
    lse = torch.logsumexp(scores, dim=-1)  # (B, H, N)
    out = torch.matmul(torch.exp(scores - lse.unsqueeze(-1)), v.to(acc))  # (B, H, N, D)
    return out.to(q.dtype), lse


def attention_backward(
    grad_out: Tensor, q: Tensor, k: Tensor, v: Tensor, out: Tensor, lse: Tensor, scale: float
) -> tuple[Tensor, Tensor, Tensor]:
    """(dq, dk, dv) from the saved lse, the formulas the fused kernel implements:
    P = exp(scale q k^T - lse), dv = P^T dO, dS = P * (dO v^T - delta) with
    delta = rowsum(dO * out), dq = scale dS k, dk = scale dS^T q."""
    acc = _acc_dtype(q.dtype)
    q32, k32, v32, g32 = q.to(acc), k.to(acc), v.to(acc), grad_out.to(acc)
    p = torch.exp(torch.matmul(q32, k32.transpose(-1, -2)) * scale - lse.to(acc).unsqueeze(-1))  # (B, H, N, M)
    delta = (g32 * out.to(acc)).sum(-1, keepdim=True)  # (B, H, N, 1)
    ds = p * (torch.matmul(g32, v32.transpose(-1, -2)) - delta)  # (B, H, N, M)
    dq = torch.matmul(ds, k32) * scale
    dk = torch.matmul(ds.transpose(-1, -2), q32) * scale
    dv = torch.matmul(p.transpose(-1, -2), g32)
    return dq.to(q.dtype), dk.to(k.dtype), dv.to(v.dtype)


def _box_regions(crop_box: Tensor | None, H: int, W: int, hd: int, wd: int, scale: int, device):
    """Masks and indices of the HRDA detail box, from tensor ops only (no host
    sync, so a box that changes every step traces once under torch.compile).

    Returns (att_rows (h,), att_cols (w,)): the box / scale on the LR grid, where
    the attention is kept; (hr_rows (H,), hr_cols (W,)): the output pixels that
    hold hr; (src_rows (H,), src_cols (W,)): the hr row / column each output
    pixel reads there; (y0, x0): the box origin. Coordinates are clamped to the
    output like the kernel does, so that an unvalidated box never indexes out
    of range; at a valid box this is HRDA's ``att * mask`` and
    ``hr_seg_inserted[:, :, y0:y1, x0:x1] = hr``.
    """
    h, w = H // scale, W // scale
    Y = torch.arange(H, device=device)
    X = torch.arange(W, device=device)
    if crop_box is None:
        ones_h, ones_w = torch.ones(h, dtype=torch.bool, device=device), torch.ones(w, dtype=torch.bool, device=device)
        return (ones_h, ones_w), (Y >= 0, X >= 0), (Y, X), (0, 0)
    y0, y1, x0, x1 = crop_box.to(device=device, dtype=torch.int64).unbind()
    cy0, cy1, cx0, cx1 = y0.clamp(0, H), y1.clamp(0, H), x0.clamp(0, W), x1.clamp(0, W)
    i = torch.arange(h, device=device)
    j = torch.arange(w, device=device)
    att_rows = (i >= cy0 // scale) & (i < cy1 // scale)
    att_cols = (j >= cx0 // scale) & (j < cx1 // scale)
    hr_rows = (Y >= cy0) & (Y < cy1) & (Y < y0 + hd)
    hr_cols = (X >= cx0) & (X < cx1) & (X < x0 + wd)
    src_rows = (Y - y0).clamp(0, max(hd - 1, 0))
    src_cols = (X - x0).clamp(0, max(wd - 1, 0))
    return (att_rows, att_cols), (hr_rows, hr_cols), (src_rows, src_cols), (y0, x0)


def _upsample(x: Tensor, scale: int) -> Tensor:
    """HRDA's ``resize(x, scale_factor=scale)``: bilinear, align_corners=False."""
    return torch.nn.functional.interpolate(x, scale_factor=scale, mode="bilinear", align_corners=False)


def scale_fusion(
    lr_logits: Tensor,  # (B, C, h, w)
    attention: Tensor,  # (B, C, h, w) or (B, 1, h, w), in [0, 1]
    hr_logits: Tensor,  # (B, C, hd, wd)
    crop_box: Tensor | None,  # (4,) int (y0, y1, x0, x1) in output coordinates
    scale: int,
) -> Tensor:
    """HRDA scale-attention fusion (mmseg/models/decode_heads/hrda_head.py, ``forward``):

        a'    = attention * mask,  mask = 1 inside crop_box / scale (LR grid)
        fused = up((1 - a') * lr) + up(a') * pad(hr)

    up = bilinear x scale with align_corners=False; pad(hr) holds hr at the box
    (output coordinates) and zeros elsewhere, so up(a'), which is taken over the
    whole output as published, only matters inside the box. No box: hr covers
    the output and a' = attention. Returns (B, C, scale*h, scale*w) in the
    inputs' dtype, computed in float32 (float64 for float64 inputs).
    """
    acc = _acc_dtype(lr_logits.dtype)
    lr, att, hr = lr_logits.to(acc), attention.to(acc), hr_logits.to(acc)
    B, C, h, w = lr.shape
    H, W = scale * h, scale * w
    (att_rows, att_cols), (hr_rows, hr_cols), (src_rows, src_cols), _ = _box_regions(
        crop_box, H, W, hr.shape[2], hr.shape[3], scale, lr.device
    )
    att = att * (att_rows[:, None] & att_cols[None, :])  # a'
    hr_inserted = hr[:, :, src_rows][:, :, :, src_cols]  # (B, C, H, W)
    hr_inserted = torch.where(hr_rows[:, None] & hr_cols[None, :], hr_inserted, 0.0)
    fused = _upsample((1 - att) * lr, scale) + _upsample(att, scale) * hr_inserted
    return fused.to(lr_logits.dtype).contiguous()


def scale_fusion_backward(
    grad: Tensor,  # (B, C, H, W)
    lr_logits: Tensor,
    attention: Tensor,
    hr_logits: Tensor,
    crop_box: Tensor | None,
    scale: int,
) -> tuple[Tensor, Tensor, Tensor]:
    """(d lr, d attention, d hr) of ``scale_fusion``, contiguous, in the inputs' dtype.

    With up^T the adjoint of the bilinear upsampling (PyTorch's own,
    ``aten.upsample_bilinear2d_backward``) and g the incoming gradient:
    d lr = (1 - a') up^T(g); d a' = up^T(g * pad(hr)) - lr * up^T(g), times the
    box mask, summed over C for a one-channel attention; d hr = (g * up(a'))
    read back at the box (0 where the box leaves the output).
    """
    acc = _acc_dtype(lr_logits.dtype)
    g, lr, att, hr = grad.to(acc), lr_logits.to(acc), attention.to(acc), hr_logits.to(acc)
    B, C, h, w = lr.shape
    H, W = scale * h, scale * w
    hd, wd = hr.shape[2:]
    (att_rows, att_cols), (hr_rows, hr_cols), (src_rows, src_cols), (y0, x0) = _box_regions(
        crop_box, H, W, hd, wd, scale, lr.device
    )
    mask = att_rows[:, None] & att_cols[None, :]  # (h, w)
    att = att * mask
    inside = hr_rows[:, None] & hr_cols[None, :]  # (H, W)
    hr_inserted = torch.where(inside, hr[:, :, src_rows][:, :, :, src_cols], 0.0)

    def up_t(x: Tensor) -> Tensor:  # (B, k, H, W) -> (B, k, h, w)
        return torch.ops.aten.upsample_bilinear2d_backward(
            x, [H, W], [B, x.shape[1], h, w], False, float(scale), float(scale)
        )

    ut_g = up_t(g)
    d_lr = (1 - att) * ut_g
    d_att = (up_t(g * hr_inserted) - lr * ut_g) * mask
    if attention.shape[1] == 1:
        d_att = d_att.sum(dim=1, keepdim=True)
    # d hr: hr[u, v] is read by output pixel (y0 + u, x0 + v) when that pixel
    # holds hr, so d hr is g * up(a') read back there, and 0 where it does not.
    d_inserted = g * _upsample(att, scale)  # (B, C, H, W)
    Yu = y0 + torch.arange(hd, device=lr.device)
    Xv = x0 + torch.arange(wd, device=lr.device)
    Yc, Xc = Yu.clamp(0, H - 1), Xv.clamp(0, W - 1)
    covered = ((Yu == Yc) & hr_rows[Yc])[:, None] & ((Xv == Xc) & hr_cols[Xc])[None, :]  # (hd, wd)
    d_hr = torch.where(covered, d_inserted[:, :, Yc][:, :, :, Xc], 0.0)
    dtype = lr_logits.dtype
    return d_lr.to(dtype).contiguous(), d_att.to(dtype).contiguous(), d_hr.to(dtype).contiguous()
