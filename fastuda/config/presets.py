"""The presets: plain functions returning a fresh config (torchtitan's config_registry).
Add one by writing the function and listing it in ``PRESETS``."""

import difflib

from fastuda.errors import UserError

from .schema import DataConfig, ModelConfig, OptimConfig, TrainConfig

# Plain functions returning a fresh config with the published hyper-parameters
# (DAFormer configs/daformer/gta2cs_uda_warm_fdthings_rcs_croppl_a999_daformer_mitb5_s0.py,
# HRDA configs/hrda/gtaHR2csHR_hrda.py, MIC configs/mic/gtaHR2csHR_mic_hrda.py).


def daformer_gta2cs() -> TrainConfig:
    cfg = TrainConfig(name="daformer_gta2cs", model=ModelConfig(pretrained="pretrained/mit_b5.pth"))
    cfg.data.crop_size = (512, 512)
    return cfg


def hrda_gta2cs() -> TrainConfig:
    cfg = daformer_gta2cs()
    cfg.name, cfg.seed = "hrda_gta2cs", 1
    cfg.data.recipe = "hrda"
    cfg.data.crop_size = (1024, 1024)
    cfg.hrda.enabled = True
    # HRDA multiplies the pseudo-weight by the valid mask (30/240/30/30 at full res.) instead of row margins
    cfg.uda.pseudo_ignore_top = cfg.uda.pseudo_ignore_bottom = 0
    cfg.rcs.min_crop_ratio = 2.0
    return cfg


def mic_hrda_gta2cs() -> TrainConfig:
    cfg = hrda_gta2cs()
    cfg.name, cfg.seed = "mic_hrda_gta2cs", 2
    cfg.data.recipe = "mic"
    cfg.uda.mic_lambda = 1.0
    return cfg


def _synthia2cs(name: str, base) -> TrainConfig:
    """``base`` (a GTA -> Cityscapes preset) with SYNTHIA as the source."""
    cfg = base()
    cfg.name = name
    cfg.data.source, cfg.data.source_root = "synthia", "data/synthia"
    return cfg


def daformer_synthia2cs() -> TrainConfig:
    return _synthia2cs("daformer_synthia2cs", daformer_gta2cs)


def hrda_synthia2cs() -> TrainConfig:
    return _synthia2cs("hrda_synthia2cs", hrda_gta2cs)


def source_only_gta2cs() -> TrainConfig:
    cfg = daformer_gta2cs()
    cfg.name = "source_only_gta2cs"
    cfg.uda.mode = "source_only"
    cfg.uda.fd_lambda = 0.0
    cfg.rcs.enabled = False
    return cfg


def _deeplabv2_sgd(name: str, mode: str) -> TrainConfig:
    """HRDA experiment 41's DeepLabV2 rows: ResNet-101 + dlv2red head, GTA -> Cityscapes at
    DAFormer's resolution (crop 512, whole-image test at 1024x512), SGD lr 0.0025 (momentum 0.9,
    weight decay 5e-4, no head multiplier) with poly10warm, 40k iterations, seed 0. The encoder starts
    from mmcv's ImageNet ResNet-101 v1c (``open-mmlab://resnet101_v1c``, as
    ``configs/_base_/models/deeplabv2_r50-d8.py``; see docs/training.md for the file)."""
    cfg = TrainConfig(name=name, model=ModelConfig(backbone="resnet101", decode_head="deeplabv2red",
                                                   pretrained="pretrained/resnet101_v1c.pth"))  # fmt: skip
    cfg.data.crop_size = (512, 512)
    cfg.data.caug = True  # 'gtaCAug': the source with PhotoMetricDistortion, a plain target crop
    cfg.uda.mode = mode
    cfg.uda.fd_lambda = 0.0
    cfg.rcs.enabled = False
    cfg.optim = OptimConfig(name="sgd", lr=0.0025, head_lr_mult=1.0, weight_decay=0.0005, momentum=0.9)
    return cfg


def advseg_gta2cs() -> TrainConfig:
    """AdvSeg on DeepLabV2: HRDA ``experiments.py`` id 41, row ``('gtaCAug', 'cityscapes', '512x512',
    'dlv2red', 'r101v1c', 'advseg', sgd)`` with ``configs/_base_/uda/advseg.py`` (LS discriminator,
    lr_D 1e-4, power 0.9, lambda_adv 0.001). With HRDA (row 2): ``advseg_hrda_gta2cs``."""
    return _deeplabv2_sgd("advseg_gta2cs", "advseg")


def minent_gta2cs() -> TrainConfig:
    """MinEnt on DeepLabV2: HRDA ``experiments.py`` id 41, row ``('gtaCAug', 'cityscapes', '512x512',
    'dlv2red', 'r101v1c', 'minent', sgd)`` with ``configs/_base_/uda/minent.py`` (lambda_ent 0.001).
    HRDA and the caveats as ``advseg_gta2cs``."""
    return _deeplabv2_sgd("minent_gta2cs", "minent")


def _deeplabv2_sgd_hrda(name: str, mode: str) -> TrainConfig:
    """HRDA experiment 41's HRDA rows: ``_deeplabv2_sgd`` on 'gtaCAugHR' -> 'cityscapesHR' (full
    resolution, crop 1024) with ``hrda1-512-0.1_dlv2red``: HRDA (scales 1 and 0.5, detail crop 512,
    detail loss 0.1, crop offsets divisible by 8, class-wise attention from a second dlv2red
    classifier), inference='whole' (the whole 2048x1024 image through HRDA's scales, data.recipe
    ``hrda_whole``)."""
    cfg = _deeplabv2_sgd(name, mode)
    cfg.data.recipe, cfg.data.crop_size = "hrda_whole", (1024, 1024)
    cfg.hrda.enabled = True
    cfg.hrda.hr_crop_size, cfg.hrda.hr_loss_weight, cfg.hrda.crop_coord_divisible = 512, 0.1, 8
    return cfg


def advseg_hrda_gta2cs() -> TrainConfig:
    """AdvSeg with HRDA on DeepLabV2: HRDA ``experiments.py`` id 41, row ``('gtaCAugHR', 'cityscapesHR',
    '1024x1024', 'hrda1-512-0.1_dlv2red', 'r101v1c', 'advseg', sgd)`` (published run name
    ``gtaCAugHR2csHR_1024x1024_advseg_hrda1-512-01_dlv2red_r101v1c_poly10warm_sgd_00025_pmF_s0``) with
    ``configs/_base_/uda/advseg.py``; AdvSeg sees HRDA's fused prediction at half the crop."""
    return _deeplabv2_sgd_hrda("advseg_hrda_gta2cs", "advseg")


def minent_hrda_gta2cs() -> TrainConfig:
    """MinEnt with HRDA on DeepLabV2: HRDA ``experiments.py`` id 41, row ``('gtaCAugHR', 'cityscapesHR',
    '1024x1024', 'hrda1-512-0.1_dlv2red', 'r101v1c', 'minent', sgd)`` (published run name
    ``gtaCAugHR2csHR_1024x1024_minent_hrda1-512-01_dlv2red_r101v1c_poly10warm_sgd_00025_pmF_s0``) with
    ``configs/_base_/uda/minent.py``."""
    return _deeplabv2_sgd_hrda("minent_hrda_gta2cs", "minent")


def target_only_cs() -> TrainConfig:
    """The oracle: HRDA ``experiments.py`` id 43, row ``('', 'cityscapes', '512x512')`` (DAFormer
    network, MiT-B5 + DAFormer head, ``configs/_base_/datasets/cityscapes_512x512.py``: Cityscapes
    train at 1024x512, crop 512, cat_max_ratio 0.75, flip, PhotoMetricDistortion: the data pipeline's
    ``target_only`` role), AdamW 6e-5 poly10warm, 40k, seed 0; tested as published with slide windows
    of 512 every 256 over the 1024x512 image (``data.recipe=target_only``, ``fastuda.config.RECIPES``)."""
    cfg = daformer_gta2cs()
    cfg.name = "target_only_cs"
    cfg.data.recipe = "target_only"
    cfg.uda.mode = "target_only"
    cfg.uda.fd_lambda = 0.0
    cfg.rcs.enabled = False
    return cfg


# ---- Cityscapes -> ACDC / Dark Zurich (clear to adverse weather; results on the targets' test sets)


def _cs2adverse(name: str, target: str, base) -> TrainConfig:
    cfg = base()
    cfg.name, cfg.seed = name, 0  # the published runs use seeds 0, 1, 2
    cfg.data.source, cfg.data.source_root = "cityscapes", "data/cityscapes"
    cfg.data.target, cfg.data.target_root = target, f"data/{target}"
    # plcrop=False: "ACDC and DarkZurich have no rectification artifacts in contrast to Cityscapes"
    # (HRDA experiments.py id 49); the ACDC / Dark Zurich target pipelines carry no valid mask either
    cfg.uda.pseudo_ignore_top = cfg.uda.pseudo_ignore_bottom = 0
    return cfg


def daformer_cs2acdc() -> TrainConfig:
    """DAFormer, Cityscapes -> ACDC: lhoyer/HRDA ``configs/_base_/datasets/uda_cityscapes_to_acdc_512x512.py``
    (Cityscapes 1024x512, ACDC 960x540, crop 512) with DAFormer's UDA (``uda/dacs_a999_fdthings.py``, RCS
    T 0.01, min crop ratio 0.5) and no pseudo-label margins, as ``experiments.py`` id 49 sets for these
    targets; whole-image test at 960x540. Published (HRDA README, ACDC test): 55.4 mIoU."""
    return _cs2adverse("daformer_cs2acdc", "acdc", daformer_gta2cs)


def hrda_cs2acdc() -> TrainConfig:
    """HRDA, Cityscapes -> ACDC: lhoyer/HRDA ``experiments.py`` id 49, row ``cs2acdc``
    (``configs/_base_/datasets/uda_cityscapesHR_to_acdcHR_1024x1024.py``: Cityscapes 2048x1024, ACDC
    1920x1080, crop 1024; ``hrda1-512-0.1_daformer_sepaspp``, MiT-B5; ``dacs_a999_fdthings``; RCS T 0.01,
    min crop ratio 2.0; plcrop=False; slide test 1024 / 512), seed 0 of 0, 1, 2. Published (HRDA README,
    ACDC test): 68.0 mIoU."""
    return _cs2adverse("hrda_cs2acdc", "acdc", hrda_gta2cs)


def mic_hrda_cs2acdc() -> TrainConfig:
    """MIC(HRDA), Cityscapes -> ACDC: lhoyer/MIC ``seg/experiments.py`` id 80, row ``('cityscapesHR',
    'acdcHR', 'separate')``: ``hrda_cs2acdc`` plus masked image consistency (lambda 1, 64 px blocks,
    mask ratio 0.7) in mask_mode ``separate`` (one source and one target image, masked without colour
    augmentation), seed 0 of 0, 1, 2. Published (MIC README, ACDC test): 70.4 mIoU."""
    cfg = _cs2adverse("mic_hrda_cs2acdc", "acdc", mic_hrda_gta2cs)
    cfg.uda.mic_mode = "separate"
    return cfg


def source_only_cs2acdc() -> TrainConfig:
    """Source-only baseline for Cityscapes -> ACDC: the DAFormer network (MiT-B5, AdamW 6e-5
    poly10warm, 40k) trained on Cityscapes alone with the source and test pipelines of lhoyer/HRDA
    ``configs/_base_/datasets/uda_cityscapes_to_acdc_512x512.py`` (``experiments.py``'s
    ``uda='source-only'`` path; no FD, no RCS, as ``source_only_gta2cs``). No published figure:
    the lower bound the adapted models are read against."""
    return _cs2adverse("source_only_cs2acdc", "acdc", source_only_gta2cs)


def daformer_cs2darkzurich() -> TrainConfig:
    """DAFormer, Cityscapes -> Dark Zurich (night): lhoyer/HRDA
    ``configs/_base_/datasets/uda_cityscapes_to_darkzurich_512x512.py`` (Dark Zurich 960x540, crop 512),
    otherwise as ``daformer_cs2acdc``. Published (HRDA README, Dark Zurich test): 53.8 mIoU."""
    return _cs2adverse("daformer_cs2darkzurich", "dark_zurich", daformer_gta2cs)


def hrda_cs2darkzurich() -> TrainConfig:
    """HRDA, Cityscapes -> Dark Zurich (night): lhoyer/HRDA ``experiments.py`` id 49, row ``cs2dzur``
    (``configs/_base_/datasets/uda_cityscapesHR_to_darkzurichHR_1024x1024.py``), otherwise as
    ``hrda_cs2acdc``. Published (HRDA README, Dark Zurich test): 55.9 mIoU."""
    return _cs2adverse("hrda_cs2darkzurich", "dark_zurich", hrda_gta2cs)


def mic_hrda_cs2darkzurich() -> TrainConfig:
    """MIC(HRDA), Cityscapes -> Dark Zurich: lhoyer/MIC ``seg/experiments.py`` id 80, row
    ``('cityscapesHR', 'darkzurichHR', 'separate')``, otherwise as ``mic_hrda_cs2acdc``. Published
    (MIC README, Dark Zurich test): 60.2 mIoU."""
    cfg = _cs2adverse("mic_hrda_cs2darkzurich", "dark_zurich", mic_hrda_gta2cs)
    cfg.uda.mic_mode = "separate"
    return cfg


def source_only_cs2darkzurich() -> TrainConfig:
    """Source-only baseline for Cityscapes -> Dark Zurich: as ``source_only_cs2acdc`` with the
    pipelines of lhoyer/HRDA ``configs/_base_/datasets/uda_cityscapes_to_darkzurich_512x512.py``.
    No published figure."""
    return _cs2adverse("source_only_cs2darkzurich", "dark_zurich", source_only_gta2cs)


# ---- domain generalisation: GTA only, scored on Cityscapes, BDD100K and Mapillary


def _gta_dg(name: str, base) -> TrainConfig:
    cfg = base()
    cfg.name, cfg.seed = name, 0  # dg experiments.py id 50: seeds 0, 1, 2
    # 'dacs_fdthings_srconly' (dg configs/_base_/uda/dacs_fdthings_srconly.py): DACS with source_only=True,
    # so no EMA teacher and no target images, keeping the thing-class ImageNet feature distance
    # (lambda 0.005) and RCS (T 0.01) of DAFormer
    cfg.uda.mode = "source_only"
    # 'gtaCAug' (dg configs/_base_/datasets/uda_gtaCAug*_to_cityscapes*.py): PhotoMetricDistortion after the flip
    cfg.data.caug = True  # the source of the CAug pair; source-only reads no target
    # the model "is directly evaluated on Cityscapes during training"; BDD100K and Mapillary with
    # tools/test.py --dataset afterwards (dg README): here all three at every evaluation
    cfg.data.eval_datasets = ("bdd100k=data/bdd100k", "mapillary=data/mapillary")
    return cfg


def daformer_gta_dg() -> TrainConfig:
    """DAFormer for domain generalisation, GTA -> (Cityscapes, BDD100K, Mapillary). Every setting from
    lhoyer/HRDA's ``dg`` branch (commit 70a1e8b), ``experiments.py`` id 50, the DAFormer row
    (``'daformer_sepaspp', 'mitb5', 'dacs_fdthings_srconly', 0.01, 'poly10warm'``) and the extension
    paper (Hoyer et al., arXiv 2304.13615, Sec. "domain generalization"):

    - source only (``uda/dacs_fdthings_srconly.py``: ``source_only=True``): no target images, no EMA
      teacher, no ClassMix; the thing-class ImageNet feature distance (lambda 0.005) stays;
    - GTA with PhotoMetricDistortion (``datasets/uda_gtaCAug_to_cityscapes_512x512.py``), 1280x720,
      crop 512, cat_max_ratio 0.75; RCS T 0.01, min crop ratio 0.5 (``gta2cs`` tuple);
    - AdamW 6e-5, head x10, poly10warm, 40k iterations, batch 2; whole-image test (``inference='whole'``);
    - scored on Cityscapes val, BDD100K val and Mapillary validation at 1024x512 (``tools/test.py --dataset``).

    Not as published: the published row adds SHADE style hallucination (``shade=True``: a style-
    consistency loss, lambda 10, and ``share_src_backward``), which fastuda does not implement; this is
    the row's "w/o SHADE" variant (commented out in id 50). Published (with SHADE; HRDA README, extension
    paper): 52.65 / 47.89 / 54.66 mIoU (Cityscapes / BDD100K / Mapillary)."""
    return _gta_dg("daformer_gta_dg", daformer_gta2cs)


def hrda_gta_dg() -> TrainConfig:
    """HRDA for domain generalisation, GTA -> (Cityscapes, BDD100K, Mapillary): lhoyer/HRDA ``dg``
    branch ``experiments.py`` id 50, the HRDA row (``'hrda1-384-0.1_daformer_sepaspp', 'mitb5',
    'dacs_fdthings_srconly', 0.01, 'poly10warm'``) and arXiv 2304.13615:

    - as ``daformer_gta_dg`` (source only, FD on thing classes, PhotoMetricDistortion, RCS T 0.01) at
      HRDA's resolution (``datasets/uda_gtaCAugHR_to_cityscapesHR_1024x1024.py``: GTA 2560x1440, crop
      1024; ``gtaHR2csHR`` tuple: RCS min crop ratio 2.0);
    - HRDA with a 384x384 detail crop (``hrda1-384-0.1``: "384x384 detail crop is necessary to fit SHADE
      into 24 GB memory"), loss weight 0.1; slide test 1024 / 512 (``inference='slide'``) at 2048x1024.

    Not as published: SHADE (see ``daformer_gta_dg``); with it gone the 384 crop is no longer forced,
    ``hrda.hr_crop_size=512`` gives the commented-out "HRDA w/o SHADE" row. Published (with SHADE; HRDA
    README, extension paper): 57.41 / 49.11 / 61.16 mIoU (Cityscapes / BDD100K / Mapillary)."""
    cfg = _gta_dg("hrda_gta_dg", hrda_gta2cs)
    cfg.hrda.hr_crop_size = 384
    return cfg


def demo() -> TrainConfig:
    """DAFormer-style UDA on the synthetic two-domain scenes, sized for a CPU in minutes."""
    cfg = TrainConfig(name="demo", seed=0, max_iters=400, eval_interval=0, checkpoint_interval=0, log_interval=25)
    # mit_demo: MiT-shaped (16, 32, 64, 128) channels, one block per stage, DAFormer head of width 32
    cfg.model = ModelConfig(backbone="mit_demo", decode_head="daformer", num_classes=6, drop_path_rate=0.0,
                            embed_dim=32)  # fmt: skip
    cfg.data = DataConfig(source="synthetic", source_root="", target="synthetic", target_root="", recipe="daformer",
                          batch_size=4, workers=0, synthetic_size=64)  # fmt: skip (no crop: the scenes are the crops)
    cfg.uda.alpha = 0.99  # a short run: the teacher must follow the student within tens of iterations
    cfg.uda.pseudo_ignore_top = cfg.uda.pseudo_ignore_bottom = 0
    cfg.uda.fd_lambda = 0.0  # no ImageNet encoder offline
    cfg.rcs.enabled = False
    cfg.optim = OptimConfig(lr=6e-4, warmup_iters=50)
    return cfg


def demo_source_only() -> TrainConfig:
    cfg = demo()
    cfg.name = "demo_source_only"
    cfg.uda.mode = "source_only"
    return cfg


PRESETS = {
    f.__name__: f
    for f in (daformer_gta2cs, daformer_synthia2cs, hrda_gta2cs, hrda_synthia2cs, mic_hrda_gta2cs, source_only_gta2cs,
              advseg_gta2cs, minent_gta2cs, advseg_hrda_gta2cs, minent_hrda_gta2cs, target_only_cs,
              daformer_cs2acdc, hrda_cs2acdc, mic_hrda_cs2acdc, source_only_cs2acdc,
              daformer_cs2darkzurich, hrda_cs2darkzurich, mic_hrda_cs2darkzurich, source_only_cs2darkzurich,
              daformer_gta_dg, hrda_gta_dg, demo, demo_source_only)
}  # fmt: skip


def preset(name: str) -> TrainConfig:
    """The preset ``name``; an unknown name is an error listing the close matches."""
    if name not in PRESETS:
        close = difflib.get_close_matches(name, PRESETS, n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise UserError(f"unknown preset {name!r}.{hint} Presets: {', '.join(PRESETS)} (or a .json config file)")
    return PRESETS[name]()


def config_for(found, path="checkpoint") -> TrainConfig:
    """The ``TrainConfig`` of a released checkpoint, from its architecture (``fastuda.models.
    checkpoint.architecture``): the published recipe (HRDA / MIC for an HRDA network, DAFormer
    otherwise) with its network."""
    if found.head is None:
        raise UserError(f"{path} holds a {found}, not a segmentation network: load it into a model "
                        "(model.pretrained=...) rather than predicting with it")  # fmt: skip
    cfg = hrda_gta2cs() if found.head == "hrda" else daformer_gta2cs()
    cfg.model.backbone, cfg.model.pretrained = found.backbone, None
    if found.head != "hrda":
        cfg.model.decode_head, cfg.model.embed_dim = found.head, found.embed_dim
    cfg.model.num_classes = found.num_classes
    return cfg
