"""``uda_step``: one DAFormer / HRDA / MIC training iteration, top to bottom.

    zero_grad -> uda_step (EMA update, losses, one backward per term) -> optimizer.step -> scheduler.step

``cfg.uda.mode`` picks the method: ``dacs`` (EMA teacher + ClassMix self-training,
DAFormer / HRDA / MIC), ``advseg`` (adversarial output-space alignment; the
discriminator is an argument, its optimiser the caller's), ``minent`` (target
entropy minimisation), ``source_only`` and ``target_only`` (the supervised loss
alone; target-only's labelled batch comes in as ``batch["source"]``).

Each loss term runs its own backward, as the published DACS ``forward_train``
does, so only one forward graph is alive at a time (the source loss and FD
share the source graph and go back together). No host syncs and no I/O: the
returned logs are detached device tensors; the caller decides when to read them.

The segmentor is used through a small interface, so HRDA plugs in unchanged:
a plain ``EncoderDecoder`` (``extract_features`` + ``decode_head``), or a
segmentor with ``detail_crop`` / ``crop_divisible``, ``forward_train(img, box=,
return_features=True) -> (*outputs, features)``, ``loss(*outputs, label, weight)
-> scalar`` and ``forward_pseudo(img) -> logits at input size``
(``fastuda.models.hrda.HRDASegmentor``).

Host syncs: every random number is drawn on the device from ``generator``
(HRDA's detail box too), constants are cached on the device
(``fastuda.uda._constants``), and no value is read back. ``tests/test_uda.py``
proves it on CPU (the step on meta tensors, every host read, data-dependent
shape or host-to-device copy flagged) and on a GPU
(``torch.cuda.set_sync_debug_mode("error")``). The model calls go through
``StepFunctions``, which ``--compile`` swaps for compiled ones.
"""

import contextlib
import dataclasses
from collections.abc import Callable
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import fastuda.ops as ops
from fastuda.config import TrainConfig
from fastuda.models.hrda import random_detail_box

from .advseg import discriminator_loss, generator_loss
from .augment import strong_augment
from .ema import ema_update, teacher_mode
from .fd import feature_distance_loss
from .mic import mask_image
from .minent import entropy_loss


def _resize(logits: Tensor, size) -> Tensor:
    if tuple(logits.shape[-2:]) == tuple(size):
        return logits
    return F.interpolate(logits, size=size, mode="bilinear", align_corners=False)


def segmentation_loss(model: nn.Module, image: Tensor, label: Tensor, weight: Tensor | None,
                      box: Tensor | None = None) -> tuple[Tensor, list[Tensor]]:  # fmt: skip
    """(loss, encoder features): CE of the logits resized to the label, times the
    pixel weight, mean over all pixels (HRDA: its fused + detail loss with the detail
    ``box``, and the context features). No generator and no hooks: this is the part
    ``fastuda.runtime.compile`` compiles."""
    if hasattr(model, "forward_train"):
        # HRDA: FD uses the context features (published: the low-resolution features)
        fused, detail, box, context_feats = model.forward_train(image, box=box, return_features=True)
        return model.loss(fused, detail, box, label, weight), context_feats
    feats = model.extract_features(image)
    logits = _resize(model.decode_head(feats), label.shape[-2:])
    return ops.weighted_cross_entropy(logits, label, weight), feats


def main_prediction(model: nn.Module, image: Tensor, box: Tensor | None = None) -> Tensor:
    """The segmentor's main output as the published AdvSeg / MinEnt see it (``forward_with_aux``
    ['main']): the logits resized to the input; HRDA: the fused logits (detail ``box``, attention
    zeroed outside it) resized to half the input (``feature_scale`` 0.5)."""
    if hasattr(model, "forward_train"):
        fused, _, _ = model.forward_train(image, box=box)
        return _resize(fused, (image.shape[-2] // 2, image.shape[-1] // 2))
    return _resize(model.decode_head(model.extract_features(image)), image.shape[-2:])


def main_prediction_loss(model: nn.Module, image: Tensor, label: Tensor,
                         box: Tensor | None = None) -> tuple[Tensor, Tensor]:  # fmt: skip
    """(source loss, main prediction) of one forward: the loss is ``segmentation_loss``'s
    (HRDA: its fused + detail loss), the prediction ``main_prediction``'s, for the discriminator."""
    if hasattr(model, "forward_train"):
        fused, detail, box = model.forward_train(image, box=box)
        pred = _resize(fused, (image.shape[-2] // 2, image.shape[-1] // 2))
        return model.loss(fused, detail, box, label, None), pred
    logits = _resize(model.decode_head(model.extract_features(image)), image.shape[-2:])
    return ops.weighted_cross_entropy(_resize(logits, label.shape[-2:]), label, None), logits


@torch.no_grad()
def teacher_logits(teacher: nn.Module, image: Tensor) -> Tensor:
    """Teacher logits at the input size (HRDA: sliding detail windows fused with the context)."""
    if hasattr(teacher, "forward_pseudo"):
        return teacher.forward_pseudo(image)
    return _resize(teacher(image), image.shape[-2:])


class StepFunctions(NamedTuple):
    """The model calls of a step: eager by default, compiled by
    ``fastuda.runtime.compile.compile_student_teacher``."""

    student_loss: Callable = segmentation_loss  # (model, image, label, weight, box) -> (loss, feats)
    teacher_logits: Callable = teacher_logits  # (teacher, image) -> logits at the input size
    student_prediction: Callable = main_prediction  # (model, image, box) -> main prediction (AdvSeg, MinEnt)
    student_prediction_loss: Callable = main_prediction_loss  # (model, image, label, box) -> (loss, prediction)


def _detail_box(model: nn.Module, image: Tensor, generator: torch.Generator) -> Tensor | None:
    """HRDA's random detail box, drawn on the device from the step's generator (outside
    any compiled region: a generator argument breaks a torch.compile graph)."""
    if not hasattr(model, "forward_train"):
        return None
    H, W = image.shape[-2:]
    return random_detail_box(H, W, model.detail_crop, model.crop_divisible, generator, image.device)


def mic_batch(mode: str, src_img: Tensor, src_lbl: Tensor, tgt_img: Tensor, pseudo_lbl: Tensor,
              pseudo_w: Tensor) -> tuple[Tensor, Tensor, Tensor]:  # fmt: skip
    """(images, labels, weights) MIC masks, by its published ``mask_mode``: "separatetrgaug" the
    target with the teacher's labels and weights; "separate" (MIC's ACDC / Dark Zurich rows)
    ``[img[0], target_img[0]]`` with ``[gt[0], plabel[0]]`` and weights ``[1, pweight[0]]``
    (masking_consistency_module.py, which asserts a batch of 2; here the first B // 2 source
    images and the first B - B // 2 target images, the same for B = 2)."""
    if mode == "separatetrgaug":
        return tgt_img, pseudo_lbl, pseudo_w
    n = src_img.shape[0] // 2
    m = tgt_img.shape[0] - n
    images = torch.cat([src_img[:n], tgt_img[:m]])
    labels = torch.cat([src_lbl[:n].reshape(pseudo_lbl[:n].shape).to(pseudo_lbl.dtype), pseudo_lbl[:m]])
    weights = torch.cat([torch.ones_like(pseudo_w[:n]), pseudo_w[:m]])
    return images, labels, weights


def _backward(loss: Tensor, scaler) -> None:
    (scaler.scale(loss) if scaler is not None else loss).backward()


@dataclasses.dataclass
class StepState:
    """What an iteration works on besides the batch and the config: the networks, the random
    stream and the precision. The loop builds one per run; tests build their own.

    ``generator``: a torch.Generator on the training device for ClassMix, augmentation, MIC
    masks and HRDA crops (None: the global stream). ``imnet_encoder``: the frozen ImageNet
    encoder of the feature distance (FD), when ``uda.fd_lambda > 0``. ``discriminator``:
    AdvSeg's; its gradients are accumulated by the step. ``scaler``: a GradScaler under fp16.
    ``fns``: the model calls (eager by default; ``fastuda.runtime.compile`` compiles them).
    """

    student: nn.Module
    teacher: nn.Module | None = None  # the EMA teacher (uda.mode="dacs")
    generator: torch.Generator | None = None
    imnet_encoder: nn.Module | None = None
    discriminator: nn.Module | None = None
    autocast_dtype: torch.dtype | None = None
    scaler: Any = None
    fns: StepFunctions | None = None  # None: StepFunctions(), eager


def uda_step(state: StepState, batch: dict, cfg: TrainConfig, iteration: int) -> tuple[Tensor, dict[str, Tensor]]:
    """One iteration's losses and gradients (the optimiser steps are the caller's).

    ``batch``: {"source": {"image", "label"}, "target": {"image"[, "valid_mask"]}}
    on the training device (target-only: the labelled target as "source", no
    "target"). ``state``: the networks and the random stream (``StepState``).
    Returns the segmentor's total loss and a dict of detached logs.
    """
    student, teacher, generator, fns = state.student, state.teacher, state.generator, state.fns or StepFunctions()
    imnet_encoder, discriminator, scaler = state.imnet_encoder, state.discriminator, state.scaler
    autocast_dtype = state.autocast_dtype
    u = cfg.uda
    device = batch["source"]["image"].device
    amp = (torch.autocast(device.type, dtype=autocast_dtype) if autocast_dtype is not None
           else contextlib.nullcontext())  # fmt: skip
    if u.mode in ("advseg", "minent"):
        return _output_space_step(student, discriminator, batch, cfg, generator, amp, scaler, fns)
    src_img, src_lbl = batch["source"]["image"], batch["source"]["label"]
    logs: dict[str, Tensor] = {}

    # 0. EMA teacher: alpha_t = min(1 - 1/(t+1), alpha), before this iteration's student step
    adapt = u.mode == "dacs"
    if adapt:
        ema_update(teacher, student, iteration, u.alpha)

    # 1. source loss (+ ImageNet feature distance on thing classes, same graph)
    box = _detail_box(student, src_img, generator)
    with amp:
        src_loss, src_feats = fns.student_loss(student, src_img, src_lbl, None, box)
        loss = src_loss
        if u.fd_lambda > 0 and imnet_encoder is not None:
            # the ImageNet encoder sees what the student's features came from (HRDA: the context at 0.5)
            fd_img = src_img if not hasattr(student, "lr_scale") else F.interpolate(
                src_img, scale_factor=student.lr_scale, mode="bilinear", align_corners=False)
            fd = feature_distance_loss(src_feats, imnet_encoder, fd_img, src_lbl, u.fd_lambda, u.fd_classes,
                                       u.fd_min_ratio, cfg.model.num_classes)  # fmt: skip
            logs["loss_fd"] = fd.detach()
            loss = loss + fd
    _backward(loss, scaler)
    logs["loss_src"] = src_loss.detach()
    total = loss.detach()
    if not adapt:
        logs["loss"] = total
        return total, logs

    # 2. teacher pseudo-labels on the unmixed target (tau, q: one confidence weight per batch)
    tgt_img = batch["target"]["image"]
    teacher_mode(teacher)
    with amp:
        t_logits = fns.teacher_logits(teacher, tgt_img)
    pseudo_lbl, pseudo_w = ops.pseudo_label(
        t_logits, u.pseudo_threshold, u.pseudo_ignore_top, u.pseudo_ignore_bottom, u.pseudo_weight_mode,
        batch["target"].get("valid_mask"),
    )  # fmt: skip
    logs["pseudo_weight"] = pseudo_w.mean()

    # 3. ClassMix (half the source classes pasted onto the target), then strong augmentation
    presence = ops.class_presence(src_lbl, cfg.model.num_classes)
    chosen = ops.sample_mix_classes(presence, generator, u.mix_batch_pool, u.mix_include_ignore)
    mix_img, mix_lbl, mix_w, _ = ops.classmix(src_img, tgt_img, src_lbl, pseudo_lbl, chosen, None, pseudo_w)
    mix_img = strong_augment(mix_img, generator, u.jitter_prob, u.jitter_strength, u.blur_prob)

    # 4. mixed loss, weighted by the pseudo-weight (1 on source pixels)
    box = _detail_box(student, mix_img, generator)
    with amp:
        mix_loss, _ = fns.student_loss(student, mix_img, mix_lbl, mix_w, box)
    _backward(mix_loss, scaler)
    logs["loss_mix"] = mix_loss.detach()
    total = total + logs["loss_mix"]

    # 5. MIC: masked images must predict their labels (uda.mic_mode: the strongly augmented target with the
    #    teacher's labels, or, on ACDC / Dark Zurich, source and target images, unaugmented, with theirs)
    if u.mic_lambda > 0:
        masked, mic_lbl, mic_w = mic_batch(u.mic_mode, src_img, src_lbl, tgt_img, pseudo_lbl, pseudo_w)
        if u.mic_mode == "separatetrgaug":
            # published MIC: one strong_transform call for the batch, so one jitter order and blur sigma
            masked = strong_augment(masked, generator, u.jitter_prob, u.jitter_strength, u.blur_prob, shared=True)
        masked = mask_image(masked, u.mic_block_size, u.mic_mask_ratio, generator)
        box = _detail_box(student, masked, generator)
        with amp:
            mic_loss, _ = fns.student_loss(student, masked, mic_lbl, mic_w, box)
            mic_loss = u.mic_lambda * mic_loss
        _backward(mic_loss, scaler)
        logs["loss_mic"] = mic_loss.detach()
        total = total + logs["loss_mic"]

    logs["loss"] = total
    return total, logs


def _output_space_step(student: nn.Module, discriminator: nn.Module | None, batch: dict, cfg: TrainConfig,
                       generator: torch.Generator, amp, scaler, fns: StepFunctions) -> tuple[Tensor, dict]:  # fmt: skip
    """AdvSeg / MinEnt (published mmseg/models/uda/advseg.py, minent.py ``forward_train``):
    source loss, then a loss on the target's main prediction, each with its own backward;
    AdvSeg then trains the discriminator on both predictions, detached."""
    u = cfg.uda
    src_img, src_lbl = batch["source"]["image"], batch["source"]["label"]
    logs: dict[str, Tensor] = {}

    # 1. source loss (AdvSeg keeps the source prediction for the discriminator)
    box = _detail_box(student, src_img, generator)
    with amp:
        if u.mode == "advseg":
            src_loss, src_pred = fns.student_prediction_loss(student, src_img, src_lbl, box)
        else:
            src_loss, _ = fns.student_loss(student, src_img, src_lbl, None, box)
    _backward(src_loss, scaler)
    logs["loss_src"] = src_loss.detach()

    # 2. target: lambda_adv L(D(softmax(p_T)), source), D frozen | lambda_ent * normalised entropy
    tgt_img = batch["target"]["image"]
    box = _detail_box(student, tgt_img, generator)
    with amp:
        tgt_pred = fns.student_prediction(student, tgt_img, box)
        if u.mode == "advseg":
            adapt, name = u.adv_lambda * generator_loss(discriminator, tgt_pred, u.adv_loss), "loss_adv"
        else:
            adapt, name = u.ent_lambda * entropy_loss(tgt_pred), "loss_ent"
    _backward(adapt, scaler)
    logs[name] = adapt.detach()
    logs["loss"] = logs["loss_src"] + logs[name]

    # 3. AdvSeg's discriminator: source labelled 0, target 1, on detached predictions
    if u.mode == "advseg":
        with amp:
            d_loss = discriminator_loss(discriminator, src_pred, tgt_pred, u.adv_loss)
        _backward(d_loss, scaler)
        logs["loss_disc"] = d_loss.detach()
    return logs["loss"], logs
