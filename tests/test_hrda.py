"""HRDA segmentor: the three modes at small sizes (context 128, detail 64), sliding-window
coverage and averaging, crop alignment, the fixed-attention ablation, checkpoint names;
slide inference against a transcription of the published mmseg / HRDA functions at sizes
that are not multiples of 32 or of the stride."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import fastuda.ops as ops
from fastuda.config import HRDAConfig
from fastuda.models import HRDASegmentor, build_model, mit, random_detail_box, sliding_windows

pytest.importorskip("fastuda.ops.scale_fusion")


def small_hrda(num_classes=5, **kwargs):
    torch.manual_seed(0)
    return HRDASegmentor(mit("mit_b0"), num_classes, detail_crop=64, test_window=128, test_stride=64, **kwargs)


def test_train_mode_shapes_loss_and_gradients():
    model = small_hrda()
    img = torch.randn(2, 3, 128, 128)
    label = torch.randint(0, 5, (2, 128, 128))
    fused, detail, box = model.forward_train(img, torch.Generator().manual_seed(3))
    assert fused.shape == (2, 5, 32, 32) and detail.shape == (2, 5, 16, 16)
    y0, y1, x0, x1 = box
    assert y1 - y0 == x1 - x0 == 64 and y0 % 8 == 0 and x0 % 8 == 0
    loss = model.loss(fused, detail, box, label, torch.rand(2, 128, 128))
    loss.backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None]
    assert not no_grad, no_grad


def test_train_mode_matches_the_published_composition():
    """Fused = up((1 - a') y_c) + up(a') pad(y_d), a' zeroed outside box/8, written out with F ops."""
    model = small_hrda().eval()
    img = torch.randn(1, 3, 128, 128)
    box = (32, 96, 8, 72)
    with torch.no_grad():
        fused, detail, _ = model.forward_train(img, box=box)
        context_img = F.interpolate(img, scale_factor=0.5, mode="bilinear", align_corners=False)
        feats = model.backbone(context_img)
        context = model.decode_head.head(feats)
        want_detail = model.decode_head.head(model.backbone(img[:, :, 32:96, 8:72]))
        att = torch.sigmoid(model.decode_head.scale_attention(feats))
        mask = torch.zeros_like(att)
        mask[:, :, 32 // 8 : 96 // 8, 8 // 8 : 72 // 8] = 1
        att = att * mask
        up = lambda t: F.interpolate(t, scale_factor=2, mode="bilinear", align_corners=False)  # noqa: E731
        inserted = torch.zeros(1, 5, 32, 32)
        inserted[:, :, 8:24, 2:18] = want_detail
        want = up((1 - att) * context) + up(att) * inserted
    torch.testing.assert_close(detail, want_detail, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(fused, want, rtol=1e-4, atol=1e-5)


def test_pseudo_and_test_modes_at_any_size():
    model = small_hrda()
    with torch.no_grad():
        pseudo = model.forward_pseudo(torch.randn(2, 3, 128, 128))
        assert pseudo.shape == (2, 5, 128, 128) and torch.isfinite(pseudo).all()
        test = model.slide_inference(torch.randn(1, 3, 150, 230))  # not a multiple of anything
        assert test.shape == (1, 5, 150, 230) and torch.isfinite(test).all()


@pytest.mark.parametrize("size, crop, stride, count", [((1024, 1024), 512, 256, 9), ((1024, 2048), 1024, 512, 3),
                                                       ((150, 230), 64, 32, 4 * 7), ((40, 300), 64, 32, 9)])  # fmt: skip
def test_sliding_windows_cover_every_pixel(size, crop, stride, count):
    H, W = size
    boxes = sliding_windows(H, W, crop, stride)
    assert len(boxes) == count
    covered = torch.zeros(H, W, dtype=torch.int64)
    for y0, y1, x0, x1 in boxes:
        assert 0 <= y0 < y1 <= H and 0 <= x0 < x1 <= W
        assert (y1 - y0, x1 - x0) == (min(crop, H), min(crop, W))
        covered[y0:y1, x0:x1] += 1
    assert covered.min() >= 1


class _PoolBackbone(nn.Module):
    """Features = the 4x average-pooled image (so 'logits' are the image at stride 4)."""

    out_channels = [3, 3, 3, 3]

    def forward(self, x):
        return [F.avg_pool2d(x, 4)] * 4


class _FirstLevel(nn.Module):
    def forward(self, feats):
        return feats[0]


def test_detail_windows_are_averaged_where_they_overlap():
    model = HRDASegmentor(_PoolBackbone(), 3, detail_crop=64, fixed_attention=1.0)
    model.decode_head.head = _FirstLevel()
    img = torch.randn(2, 3, 128, 192)
    # attention 1 everywhere: the fused map is the averaged detail canvas, which must be
    # the pooled image itself since overlapping windows see the same pixels.
    want = F.interpolate(F.avg_pool2d(img, 4), size=(128, 192), mode="bilinear", align_corners=False)
    torch.testing.assert_close(model.forward_pseudo(img), want)


def test_slide_inference_places_and_averages_windows():
    class Echo(HRDASegmentor):
        def forward_pseudo(self, img):
            return img * 2  # each window's "logits" are its own pixels, doubled

    model = Echo(_PoolBackbone(), 3, detail_crop=64, test_window=128, test_stride=64, fixed_attention=0.5)
    img = torch.randn(2, 3, 150, 230)
    torch.testing.assert_close(model.slide_inference(img), img * 2)


# ---------------------------------------------------------------- the published test-time inference
# Transcribed from mmseg 0.16 EncoderDecoder.slide_inference and HRDA's HRDAEncoderDecoder.encode_decode /
# extract_slide_feat / HRDAHead.decode_hr + forward (lhoyer/HRDA): loops, F.pad and count matrices as
# published, written independently of fastuda.models.slide.


def fast_hrda(num_classes=5):
    """small_hrda's geometry with the demo encoder and 32-wide heads: the oracle tests run many windows."""
    from fastuda.models.daformer_head import DAFormerHead

    torch.manual_seed(0)
    model = HRDASegmentor(mit("mit_demo"), num_classes, detail_crop=64, test_window=128, test_stride=64)
    dims = model.backbone.out_channels
    model.decode_head.head = DAFormerHead(dims, num_classes, embed_dim=32, channels=32)
    model.decode_head.scale_attention = DAFormerHead(dims, num_classes, embed_dim=32, channels=32, fusion="conv")
    return model.eval()


def _mmseg_slide_inference(encode_decode, img, crop, stride, num_classes):
    h_stride, w_stride = stride
    h_crop, w_crop = crop
    batch_size, _, h_img, w_img = img.size()
    h_grids = max(h_img - h_crop + h_stride - 1, 0) // h_stride + 1
    w_grids = max(w_img - w_crop + w_stride - 1, 0) // w_stride + 1
    preds = img.new_zeros((batch_size, num_classes, h_img, w_img))
    count_mat = img.new_zeros((batch_size, 1, h_img, w_img))
    for h_idx in range(h_grids):
        for w_idx in range(w_grids):
            y1, x1 = h_idx * h_stride, w_idx * w_stride
            y2, x2 = min(y1 + h_crop, h_img), min(x1 + w_crop, w_img)
            y1, x1 = max(y2 - h_crop, 0), max(x2 - w_crop, 0)  # a window larger than the image: no padding
            crop_seg_logit = encode_decode(img[:, :, y1:y2, x1:x2])
            preds += F.pad(crop_seg_logit, (int(x1), int(preds.shape[3] - x2), int(y1), int(preds.shape[2] - y2)))
            count_mat[:, :, y1:y2, x1:x2] += 1
    assert (count_mat == 0).sum() == 0
    return preds / count_mat


def _hrda_encode_decode(model, img):
    """HRDA's test-mode encode_decode: scales [0.5, 1], hr_slide_inference with overlapping crops."""
    resize = lambda x, **kw: F.interpolate(x, mode="bilinear", align_corners=False, **kw)  # noqa: E731
    lr_feats = model.backbone(resize(img, scale_factor=0.5))
    h_crop = w_crop = model.detail_crop
    h_stride, w_stride = h_crop // 2, w_crop // 2
    bs, _, h_img, w_img = img.size()
    h_grids = max(h_img - h_crop + h_stride - 1, 0) // h_stride + 1
    w_grids = max(w_img - w_crop + w_stride - 1, 0) // w_stride + 1
    crop_imgs, boxes = [], []
    for h_idx in range(h_grids):
        for w_idx in range(w_grids):
            y1, x1 = h_idx * h_stride, w_idx * w_stride
            y2, x2 = min(y1 + h_crop, h_img), min(x1 + w_crop, w_img)
            y1, x1 = max(y2 - h_crop, 0), max(x2 - w_crop, 0)
            crop_imgs.append(img[:, :, y1:y2, x1:x2])
            boxes.append([y1, y2, x1, x2])
    crop_seg_logits = model.decode_head.head(model.backbone(torch.cat(crop_imgs)))
    boxes = [[int(v / 4) for v in box] for box in boxes]  # scale_box(box, os=4)
    h_hr, w_hr = max(b[1] for b in boxes), max(b[3] for b in boxes)
    preds = crop_seg_logits.new_zeros((bs, crop_seg_logits.shape[1], h_hr, w_hr))
    count_mat = crop_seg_logits.new_zeros((bs, 1, h_hr, w_hr))
    for i, (y1, y2, x1, x2) in enumerate(boxes):
        preds += F.pad(crop_seg_logits[i * bs : (i + 1) * bs], (x1, preds.shape[3] - x2, y1, preds.shape[2] - y2))
        count_mat[:, :, y1:y2, x1:x2] += 1
    hr_seg = preds / count_mat
    lr_seg = model.decode_head.head(lr_feats)
    att = torch.sigmoid(model.decode_head.scale_attention(lr_feats))
    up_lr_seg = resize((1 - att) * lr_seg, scale_factor=2)
    fused = resize(att, scale_factor=2) * hr_seg + up_lr_seg
    return resize(fused, size=img.shape[2:])


@pytest.mark.parametrize("size", [(150, 166), (96, 120)])
def test_hrda_slide_inference_is_the_published_one(size):
    """Window 128, stride 64, detail 64: 150 and 166 are no multiples of 32, 8 or the stride
    (the windows are; the overlaps are uneven); 96 x 120 is smaller than the window. In float64
    (and float64 out): equal to rounding."""
    model = fast_hrda().double()
    img = torch.randn(1, 3, *size, dtype=torch.float64)
    with torch.no_grad():
        got = model.slide_inference(img)
        want = _mmseg_slide_inference(lambda x: _hrda_encode_decode(model, x), img, (128, 128), (64, 64), 5)
    assert got.dtype == torch.float64
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


def test_hrda_pads_only_where_the_published_code_fails():
    """A window side that is no multiple of 8 (here the whole 100 x 122 image, smaller than the
    window) breaks the published two-scale shapes; it is padded to 104 x 128 and cut back."""
    model = fast_hrda().double()
    img = torch.randn(1, 3, 100, 122, dtype=torch.float64)
    with torch.no_grad():
        got = model.slide_inference(img)
        want = _hrda_encode_decode(model, F.pad(img, (0, 6, 0, 4)))[:, :, :100, :122]
    assert got.dtype == torch.float64
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("size, crop, stride", [((75, 130), (48, 64), (32, 40)), ((40, 300), (48, 64), (48, 64))])
def test_evaluate_slide_inference_is_mmsegs(size, crop, stride):
    """fastuda.evaluate's slide (the same function) on a DAFormer model: windows clipped to a smaller
    image, uneven overlaps and sides that are no multiple of 32 or of the stride."""
    from fastuda.evaluate import slide_inference

    torch.manual_seed(0)
    model = build_model(backbone="mit_demo", num_classes=4).double().eval()
    img = torch.randn(2, 3, *size, dtype=torch.float64)

    def encode_decode(x):
        return F.interpolate(model(x), size=x.shape[2:], mode="bilinear", align_corners=False)

    with torch.no_grad():
        got = slide_inference(model, img, crop, stride)
        want = _mmseg_slide_inference(encode_decode, img, crop, stride, 4)
    assert got.dtype == torch.float64
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


def test_detail_box_alignment_and_range():
    gen = torch.Generator().manual_seed(0)
    seen_y, seen_x = set(), set()
    for _ in range(400):
        y0, y1, x0, x1 = random_detail_box(1024, 1024, 512, 8, gen)
        assert y0 % 8 == 0 and x0 % 8 == 0 and y1 - y0 == 512 and x1 - x0 == 512 and y1 <= 1024 and x1 <= 1024
        seen_y.add(y0)
        seen_x.add(x0)
    # HRDA's get_crop_bbox: randint(0, (margin + 1) // 8) * 8 with margin 512: offsets 0 .. 504.
    assert max(seen_y) == 504 and min(seen_y) == 0 and len(seen_y) > 50 and max(seen_x) == 504
    assert random_detail_box(512, 512, 512, 8, gen) == (0, 512, 0, 512)
    with pytest.raises(ValueError, match="does not fit"):
        random_detail_box(256, 1024, 512, 8, gen)


def test_fixed_attention_ablation():
    model = small_hrda(fixed_attention=0.5).eval()
    assert model.decode_head.scale_attention is None
    img = torch.randn(1, 3, 128, 128)
    with torch.no_grad():
        fused, detail, box = model.forward_train(img, box=(0, 64, 64, 128))
        context = model.decode_head.head(model.backbone(F.interpolate(img, scale_factor=0.5, mode="bilinear")))
        att = torch.zeros(1, 1, 16, 16)
        att[:, :, 0:8, 8:16] = 0.5
        up = lambda t: F.interpolate(t, scale_factor=2, mode="bilinear", align_corners=False)  # noqa: E731
        inserted = torch.zeros(1, 5, 32, 32)
        inserted[:, :, 0:16, 16:32] = detail
        torch.testing.assert_close(fused, up((1 - att) * context) + up(att) * inserted, rtol=1e-4, atol=1e-5)


def test_published_checkpoint_names_and_errors():
    model = build_model(backbone="mit_b0", hrda=HRDAConfig(enabled=True, hr_crop_size=64))
    keys = set(model.state_dict())
    assert "decode_head.head.fuse_layer.aspp_modules.1.depthwise_conv.conv.weight" in keys
    assert "decode_head.scale_attention.fuse_layer.conv.weight" in keys
    assert "decode_head.scale_attention.conv_seg.weight" in keys
    assert model.decode_head.scale_attention.conv_seg.out_channels == 19  # class-wise attention
    with pytest.raises(ValueError, match="hrda needs the daformer head on a MiT backbone"):
        build_model(backbone="mit_b0", decode_head="segformer", hrda=True)
    with pytest.raises(ValueError, match="multiples of 32"):
        small_hrda().forward_train(torch.randn(1, 3, 100, 128))
    with pytest.raises(ValueError, match="fixed_attention must be in"):
        small_hrda(fixed_attention=1.5)


@pytest.mark.interpreter
def test_fused_kernel_path_matches_reference():
    model = small_hrda().eval()
    img = torch.randn(1, 3, 64, 64)
    model.detail_crop = 32
    with torch.no_grad(), ops.use_backend("reference"):
        want = model.forward_train(img, box=(0, 32, 32, 64))[0]
    with torch.no_grad(), ops.use_backend("triton"):
        got = model.forward_train(img, box=(0, 32, 32, 64))[0]
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
