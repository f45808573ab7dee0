"""Validation: every field's own check, then the rules across fields (torchtitan's
``config/validation.py``). A config is validated once, when loaded, before anything is built."""

from pathlib import Path

from fastuda._fields import check_fields
from fastuda.errors import UserError
from fastuda.models.registry import DEEPLAB_HEADS, MIT_BACKBONES

from .recipes import train_crop
from .schema import DATASET_CLASSES, TrainConfig, parse_dataset_spec


def _check_across(cfg: TrainConfig, from_pretrained: bool) -> None:
    d, m, u, h = cfg.data, cfg.model, cfg.uda, cfg.hrda
    synthetic = (d.source == "synthetic", d.target == "synthetic")
    if synthetic[0] != synthetic[1]:
        raise UserError(f"data.source={d.source!r} with data.target={d.target!r}: the synthetic demo needs both "
                        "'synthetic', a released dataset needs neither")  # fmt: skip
    extra = [("data.eval_datasets", parse_dataset_spec(spec)[0]) for spec in d.eval_datasets]
    for key, name in (("data.source", d.source), ("data.target", d.target), *extra):
        if m.num_classes != DATASET_CLASSES[name]:
            raise UserError(f"model.num_classes={m.num_classes} but {key}={name!r} has {DATASET_CLASSES[name]} "
                            f"classes; expected model.num_classes={DATASET_CLASSES[name]}")  # fmt: skip
    if synthetic[0]:
        side = d.synthetic_size
        if d.crop_size is not None and tuple(d.crop_size) != (side, side):
            raise UserError(f"data.crop_size={d.crop_size}: the synthetic scenes are not cropped (they are "
                            f"data.synthetic_size={side} square); expected None or ({side}, {side})")  # fmt: skip
        if d.resize is not None:
            raise UserError(f"data.resize={d.resize}: the synthetic scenes are not resized; expected None "
                            "(set data.synthetic_size)")  # fmt: skip
    crop_h, crop_w = train_crop(cfg)
    crop_key = "data.synthetic_size" if synthetic[0] else "data.crop_size"
    if u.mode == "dacs" and u.pseudo_ignore_top + u.pseudo_ignore_bottom >= crop_h:
        raise UserError(f"uda.pseudo_ignore_top={u.pseudo_ignore_top} + uda.pseudo_ignore_bottom="
                        f"{u.pseudo_ignore_bottom} leave no row of the {crop_h}-row training crop ({crop_key}); "
                        f"expected a sum < {crop_h}")  # fmt: skip
    # MIC's mask grid has round(side / b) blocks a side: one block masks the whole crop or none of it
    if u.mic_lambda > 0 and round(max(crop_h, crop_w) / u.mic_block_size) <= 1:
        raise UserError(f"uda.mic_block_size={u.mic_block_size} with the {crop_h}x{crop_w} training crop ({crop_key}): "
                        "the mask would be a single block, hiding the whole image or nothing; expected at most "
                        f"{2 * max(crop_h, crop_w) // 3}")  # fmt: skip
    if m.decode_head in ("daformer", "segformer") and m.backbone not in MIT_BACKBONES:
        raise UserError(f"model.decode_head={m.decode_head!r} needs a 4-level MiT encoder, got model.backbone="
                        f"{m.backbone!r}; expected one of {', '.join(MIT_BACKBONES)} (or model.decode_head=deeplabv2)")
    if m.embed_dim is not None and m.decode_head in DEEPLAB_HEADS:
        raise UserError(f"model.embed_dim={m.embed_dim}: the {m.decode_head} head has no embedding; expected None")
    if m.backbone in MIT_BACKBONES and min(crop_h, crop_w) < 32:  # stage 1's spatial reduction is an 8x8 conv
        raise UserError(f"{crop_key}: the MiT encoder needs a training crop of at least 32x32, got {crop_h}x{crop_w}")
    if h.enabled:
        if min(crop_h, crop_w) < 64 or h.hr_crop_size < 32:  # the 0.5 context and the detail crop feed MiT
            raise UserError(f"hrda.hr_crop_size={h.hr_crop_size} with a {crop_h}x{crop_w} crop ({crop_key}): HRDA "
                            "feeds MiT the crop at 0.5 and the detail crop; expected a crop of at least 64x64 "
                            "and hrda.hr_crop_size >= 32")  # fmt: skip
        if not ((m.decode_head == "daformer" and m.backbone in MIT_BACKBONES) or m.decode_head in DEEPLAB_HEADS):
            raise UserError(f"hrda.enabled=True needs the daformer head on a MiT backbone or a deeplabv2 head (as "
                            f"published), got model.backbone={m.backbone!r} and model.decode_head={m.decode_head!r}")
        if crop_h % 32 or crop_w % 32:
            raise UserError(f"{crop_key}: HRDA's training crop must be multiples of 32, got {crop_h}x{crop_w}")
        if h.hr_crop_size > min(crop_h, crop_w):
            raise UserError(f"hrda.hr_crop_size={h.hr_crop_size} does not fit the {crop_h}x{crop_w} training crop "
                            f"({crop_key}); expected at most {min(crop_h, crop_w)}")  # fmt: skip
        if h.hr_crop_size % h.crop_coord_divisible:
            raise UserError(f"hrda.hr_crop_size={h.hr_crop_size}: expected a multiple of hrda.crop_coord_divisible="
                            f"{h.crop_coord_divisible}")  # fmt: skip
    if u.mode != "dacs" and u.mic_lambda > 0:
        raise UserError(f"uda.mic_lambda={u.mic_lambda} with uda.mode={u.mode!r}: MIC learns from the EMA teacher's "
                        "pseudo-labels, which only uda.mode='dacs' has; expected uda.mic_lambda=0 or uda.mode='dacs'")
    if cfg.data.caug and cfg.data.source not in ("gta", "synthetic"):
        raise UserError(f"data.caug=true with data.source={cfg.data.source!r}: the published CAug source is GTA "
                        "(gtaCAug); expected data.source='gta' or data.caug=false")  # fmt: skip
    if u.mode in ("advseg", "minent") and u.fd_lambda > 0:
        raise UserError(f"uda.fd_lambda={u.fd_lambda} with uda.mode={u.mode!r}: the published {u.mode} has no ImageNet "
                        "feature distance (it belongs to DAFormer's DACS); expected uda.fd_lambda=0")  # fmt: skip
    if u.fd_lambda > 0:
        if bad := [c for c in u.fd_classes if c >= m.num_classes]:
            raise UserError(f"uda.fd_classes={u.fd_classes}: {bad} are not classes of model.num_classes="
                            f"{m.num_classes}; expected values < {m.num_classes}")  # fmt: skip
        if from_pretrained and not m.pretrained:
            raise UserError(f"uda.fd_lambda={u.fd_lambda} needs ImageNet encoder weights but model.pretrained=None; "
                            "expected model.pretrained=<mit_b*.pth> or uda.fd_lambda=0")  # fmt: skip
    if from_pretrained:
        check_pretrained(m.pretrained)


def check_pretrained(path: str | None) -> None:
    """``model.pretrained`` names a file (or is None); read by ``validate`` and, for configs
    built in code, by ``fastuda.runtime.build.build_segmentor``."""
    if path and not Path(path).is_file():
        raise UserError(f"model.pretrained={path}: file not found; expected the ImageNet weights there (SegFormer's "
                        "mit_b*.pth, or mmcv's resnet101_v1c: docs/training.md says where to get them), or "
                        "model.pretrained=None to start from scratch")  # fmt: skip


def validate(cfg: TrainConfig, from_pretrained: bool = True) -> TrainConfig:
    """Checks every field (type, allowed values or range) and the rules across fields;
    the first problem is a ``UserError`` naming the key, the value and what was expected.
    Ints given for floats and lists for tuples are converted in place. Returns ``cfg``.

    ``from_pretrained``: the run starts from ``model.pretrained`` (a fresh training run), so
    the file must exist and FD needs it. False when the weights come from a checkpoint.
    The data-dependent rules (files, RCS ``min_pixels`` against the class statistics) are
    checked at start-up by ``fastuda.runtime.build``.
    """
    check_fields(cfg, "")
    _check_across(cfg, from_pretrained)
    return cfg

