"""HRDA on DeepLabV2 (HRDA experiment 41, ``hrda1-512-0.1_dlv2red``): both heads are
DeepLabV2 ASPP classifiers with the 'red' dilations (6, 12), the output stride is 8, and
detail offsets divisible by 8 land on the stride-16 context grid at floor(box / 16).
Checked in float64 against a transcription of the published ``HRDAHead.forward`` and
``losses`` (mmseg/models/decode_heads/hrda_head.py), on a small BatchNorm encoder."""

import pytest
import torch
import torch.nn.functional as F
from _step import TinyBNEncoder

from fastuda.config import HRDAConfig, ModelConfig
from fastuda.models import HRDASegmentor, build_model

K = 5


def _model(dtype=torch.float64):
    torch.manual_seed(0)
    return HRDASegmentor(TinyBNEncoder(), K, detail_crop=64, crop_divisible=8, test_window=128, test_stride=64,
                         single_scale_head="deeplabv2", dilations=(6, 12)).to(dtype)  # fmt: skip


def published_hrda_forward(model, img, box):
    """HRDAEncoderDecoder._forward_train_features + HRDAHead.forward, os = 8, scales [0.5, 1]."""
    lr_img = F.interpolate(img, scale_factor=0.5, mode="bilinear", align_corners=False)
    y1, y2, x1, x2 = box
    hr_img = img[:, :, y1:y2, x1:x2]
    lr_inp, hr_inp = model.backbone(lr_img), model.backbone(hr_img)  # one call per scale
    head, sa = model.decode_head.head, model.decode_head.scale_attention
    lr_seg = head(lr_inp)
    hr_seg = head(hr_inp)
    att = torch.sigmoid(sa(lr_inp))
    mask = lr_seg.new_zeros([lr_seg.shape[0], 1, *lr_seg.shape[2:]])
    sc_os = 8 / 0.5
    mask[:, :, int(y1 / sc_os):int(y2 / sc_os), int(x1 / sc_os):int(x2 / sc_os)] = 1  # scale_box: int(y / s)
    att = att * mask
    lr_seg = (1 - att) * lr_seg
    up_lr_seg = F.interpolate(lr_seg, scale_factor=2, mode="bilinear", align_corners=False)
    att = F.interpolate(att, scale_factor=2, mode="bilinear", align_corners=False)
    hr_seg_inserted = torch.zeros_like(up_lr_seg)
    hr_seg_inserted[:, :, int(y1 / 8):int(y2 / 8), int(x1 / 8):int(x2 / 8)] = hr_seg
    return att * hr_seg_inserted + up_lr_seg, hr_seg


def published_hrda_loss(fused, hr_seg, label, box, hr_w=0.1):
    def ce(logits, lbl):
        logits = F.interpolate(logits, size=lbl.shape[1:], mode="bilinear", align_corners=False)
        return F.cross_entropy(logits, lbl, ignore_index=255, reduction="none").mean()

    y1, y2, x1, x2 = box
    return (1 - hr_w) * ce(fused, label) + hr_w * ce(hr_seg, label[:, y1:y2, x1:x2])


@pytest.mark.parametrize("box", [(8, 72, 24, 88), (0, 64, 64, 128), (56, 120, 8, 72)])
def test_forward_train_and_loss_match_published(box):
    """Boxes with offsets 8, 24, 56 (odd on the stride-8 grid's half): the floor matters."""
    model = _model().train()
    torch.manual_seed(1)
    img = torch.randn(2, 3, 128, 128, dtype=torch.float64)
    label = torch.randint(0, K, (2, 128, 128))
    label[:, :5] = 255
    fused, detail, got_box = model.forward_train(img, box=box)
    want_fused, want_hr = published_hrda_forward(model, img, box)
    assert fused.shape == (2, K, 16, 16) and detail.shape == (2, K, 8, 8)
    torch.testing.assert_close(fused, want_fused, rtol=1e-12, atol=1e-13)
    torch.testing.assert_close(detail, want_hr, rtol=1e-12, atol=1e-13)
    got = model.loss(fused, detail, got_box, label)
    torch.testing.assert_close(got, published_hrda_loss(want_fused, want_hr, label, box), rtol=1e-12, atol=1e-13)
    got.backward()
    assert all(p.grad is not None for p in model.decode_head.parameters())


def test_scales_are_encoded_separately_with_batchnorm():
    """Same-size context and detail (a 128 input, 64 detail crop): BatchNorm statistics would
    mix if the two scales shared a call, so a BN encoder gets two calls, as published."""
    model = _model().train()
    img = torch.randn(2, 3, 128, 128, dtype=torch.float64)
    fused, _, _ = model.forward_train(img, box=(8, 72, 24, 88))
    torch.testing.assert_close(fused, published_hrda_forward(model, img, (8, 72, 24, 88))[0], rtol=1e-12, atol=1e-13)
    assert model._batch_scales is False


def test_pseudo_labels_and_slide_inference_at_any_size():
    model = _model(torch.float32).eval()
    for H, W in [(128, 128), (96, 200), (70, 130)]:
        img = torch.randn(1, 3, H, W)
        with torch.no_grad():
            assert model.forward_pseudo(img).shape == (1, K, H, W)
            assert model(img).shape == (1, K, H, W)


def test_build_model_hrda_dlv2red_names_and_heads():
    """build_model: ResNet-101 + dlv2red + HRDA, both heads DeepLabV2 with rates (6, 12);
    the DLV2 branches start as published (normal(0, 0.01), zero bias)."""
    pytest.importorskip("timm")
    model = build_model(ModelConfig(backbone="resnet50", decode_head="deeplabv2red", pretrained=None),
                        hrda=HRDAConfig(enabled=True))  # fmt: skip
    assert isinstance(model, HRDASegmentor) and model.output_stride == 8
    keys = [k for k in model.state_dict() if k.startswith("decode_head.")]
    assert sorted(keys) == sorted(f"decode_head.{h}.aspp_modules.{i}.conv.{w}" for h in ("head", "scale_attention")
                                  for i in (0, 1) for w in ("weight", "bias"))  # fmt: skip
    w = model.decode_head.head.aspp_modules[0].conv.weight.detach()
    assert abs(float(w.std()) - 0.01) < 1e-3 and float(model.decode_head.head.aspp_modules[0].conv.bias.abs().max()) == 0
    with pytest.raises(ValueError, match="hrda needs the daformer head on a MiT backbone or a deeplabv2 head"):
        build_model(ModelConfig(backbone="mit_b0", decode_head="segformer", pretrained=None), hrda=True)
