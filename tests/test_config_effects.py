"""Every config key has an effect: for each field, a valid non-default value changes what
is built or run (the modules, the data pipeline and its draws, one UDA step, the optimiser
and schedule, or a short run's outputs). A key that changes nothing is either wired or
removed; a new key must get a case here (the coverage test lists the missing ones)."""

import json
import os
import tempfile
from pathlib import Path

import pytest
import torch
from torch import nn

from fastuda import config
from fastuda.config import train_crop
from fastuda.data import _fake
from fastuda.models import mit
from fastuda.runtime.build import build_eval_dataset, build_extra_eval_datasets, build_loaders, build_segmentor
from fastuda.runtime.evaluation import evaluate
from fastuda.uda import StepState, build_optimizer, make_imnet_encoder, make_teacher, uda_step
from fastuda.uda.advseg import build_discriminator
from fastuda.uda.optim import lr_factor


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """Fake released datasets (two of each, differing in content) and two 'ImageNet' encoders."""
    root = tmp_path_factory.mktemp("effects")
    paths = {
        "gta": _fake.write_fake_gta(root / "gta", count=4, size=(96, 64), seed=0),
        "gta2": _fake.write_fake_gta(root / "gta2", count=4, size=(96, 64), seed=1),
        "synthia": _fake.write_fake_synthia(root / "synthia", count=4, size=(96, 64)),
        "cs": _fake.write_fake_cityscapes(root / "cs", counts={"train": 3, "val": 2}),
        "cs2": _fake.write_fake_cityscapes(root / "cs2", counts={"train": 3, "val": 2}, seed=1),
        "bdd": _fake.write_fake_bdd100k(root / "bdd", count=2),
    }
    for i in (1, 2):
        with torch.random.fork_rng():
            torch.manual_seed(i)
            paths[f"w{i}"] = root / f"mit_demo_{i}.pth"
            torch.save(mit("mit_demo").state_dict(), paths[f"w{i}"])
    return paths


def file_base(env) -> list[str]:
    """DAFormer on the fake GTA -> Cityscapes, tiny: FD, RCS and every pipeline stage on."""
    return ["daformer_gta2cs", f"data.source_root={env['gta']}", f"data.target_root={env['cs']}",
            "data.resize=(128,64)", "data.crop_size=(32,32)", "data.workers=0", "model.backbone=mit_demo",
            f"model.pretrained={env['w1']}", "uda.pseudo_ignore_top=2", "uda.pseudo_ignore_bottom=4",
            "rcs.min_pixels=0"]  # fmt: skip


def synth_base(env) -> list[str]:
    """The synthetic demo, tiny, evaluating and checkpointing every iteration."""
    return ["demo", "data.synthetic_size=32", "data.synthetic_samples=4", "data.batch_size=2", "max_iters=2",
            "log_interval=1", "eval_interval=1", "checkpoint_interval=1"]  # fmt: skip


SYNTHETIC = ["data.source=synthetic", "data.target=synthetic", "data.crop_size=None", "data.resize=None",
             "model.num_classes=6", "uda.fd_classes=(4,5)"]  # fmt: skip
HRDA = ["hrda.enabled=true", "hrda.hr_crop_size=32", "data.crop_size=(64,64)"]


# ---------------------------------------------------------------- what is built or run


def probe_model(cfg):
    torch.manual_seed(0)
    model = build_segmentor(cfg)
    return repr(model), [(k, tuple(v.shape), float(v.double().sum())) for k, v in model.state_dict().items()]


def probe_step(cfg):
    """One UDA step at iteration 1000 on a fixed batch: logs and the student's gradients."""
    torch.manual_seed(0)
    student = build_segmentor(cfg)
    teacher = make_teacher(student)
    with torch.no_grad():  # a teacher unlike the student (so the EMA momentum shows), and confident
        for p in teacher.parameters():
            p.add_(0.05 * torch.randn_like(p))
        for name, module in teacher.named_modules():
            if name.endswith("conv_seg"):  # confidences spread around tau instead of near 1 / K
                module.weight.mul_(30)
    imnet = make_imnet_encoder(student.backbone) if cfg.uda.fd_lambda > 0 else None
    disc = build_discriminator(cfg, "cpu")[0] if cfg.uda.mode == "advseg" else None
    h, w = train_crop(cfg)
    # per 32 x 32 cell (one last-stage feature): image 0 a thing class (6) over 78% of the cell,
    # stuff (1) and an ignored band; image 1 a thing class (7) over 62%: in FD's mask at ratio
    # 0.5, not at 0.75
    cell = torch.full((2, 32, 32), 6)
    cell[0, :3], cell[0, 3:7] = 255, 1
    cell[1, :20], cell[1, 20:] = 7, 0
    label = cell.repeat(1, h // 32, w // 32)
    g = torch.Generator().manual_seed(1)
    batch = {"source": {"image": torch.randn(2, 3, h, w, generator=g), "label": label},
             "target": {"image": torch.randn(2, 3, h, w, generator=g)}}  # fmt: skip
    state = StepState(student, teacher, torch.Generator().manual_seed(0), imnet, discriminator=disc)
    loss, logs = uda_step(state, batch, cfg, 1000)
    grads = torch.cat([p.grad.flatten() for p in student.parameters() if p.grad is not None])
    return sorted(logs), [float(v) for v in logs.values()], grads


def probe_data(cfg):
    """The loaders: workers, lengths, RCS draws and the first batch of each domain."""
    src, tgt = build_loaders(cfg, 0)
    draws = [src.dataset.draw(k) for k in range(32)] if hasattr(src.dataset, "draw") else None
    batches = [next(iter(loader)) for loader in (src, tgt)]
    return [src.num_workers, tgt.num_workers, len(src.dataset), len(tgt.dataset), draws, batches]


class _Zeros(nn.Module):
    def __init__(self, num_classes):
        super().__init__()
        self.num_classes = num_classes

    def forward(self, x):
        return x.new_zeros(x.shape[0], self.num_classes, x.shape[2] // 4, x.shape[3] // 4)


def probe_eval(cfg):
    """Which evaluation images are read (names), and how many."""
    dataset, _ = build_eval_dataset(cfg)
    read = []

    class Recording(torch.utils.data.Dataset):
        def __len__(self):
            return len(dataset)

        def __getitem__(self, i):
            sample = dataset[i]
            read.append(sample["name"])
            return sample

    evaluate(_Zeros(cfg.model.num_classes), Recording(), cfg.model.num_classes, limit=cfg.data.eval_samples)
    return read


def probe_eval_extra(cfg):
    """The datasets scored beside the target, and which of their images."""
    return {name: [dataset[i]["name"] for i in range(len(dataset))]
            for name, (dataset, _) in build_extra_eval_datasets(cfg).items()}  # fmt: skip


def probe_optim(cfg):
    torch.manual_seed(0)
    optimizer = build_optimizer(build_segmentor(cfg), cfg.optim)
    groups = [(type(optimizer).__name__, g["lr"], g["weight_decay"], g.get("betas"), g.get("momentum"),
               len(g["params"])) for g in optimizer.param_groups]  # fmt: skip
    return groups, [lr_factor(t, cfg.max_iters, cfg.optim) for t in (0, 10, 100, 1000, 5000, 30000)]


def probe_disc(cfg):
    """AdvSeg's discriminator optimiser: its betas and learning rate over the run."""
    _, (optimizer, scheduler) = build_discriminator(cfg, "cpu")
    lrs = []
    for _ in range(cfg.max_iters // 1000):
        lrs.append(optimizer.param_groups[0]["lr"])
        for _ in range(1000):
            scheduler.step()
    return optimizer.param_groups[0]["betas"], lrs


def probe_run(cfg):
    """A two-iteration run in a fresh directory: the files it writes (but TensorBoard's,
    named by time), its log records, the trained weights."""
    from fastuda.train import train

    here = Path.cwd()
    run_dir = Path(tempfile.mkdtemp(dir=here))
    os.chdir(run_dir)  # cfg.out is relative
    try:
        result = train(cfg, progress=False, device="cpu")
    finally:
        os.chdir(here)
    files = sorted(p.relative_to(run_dir).as_posix() for p in run_dir.rglob("*") if p.is_file() and "tb" not in p.parts)
    log = next(run_dir.rglob("log.jsonl"))
    records = [json.loads(line) for line in log.read_text().splitlines()]
    weights = float(sum(p.detach().double().sum() for p in result["student"].parameters()))
    return files, [(r["iter"], sorted(r)) for r in records], weights


PROBES = {"model": probe_model, "step": probe_step, "data": probe_data, "eval": probe_eval, "optim": probe_optim,
          "run": probe_run, "disc": probe_disc, "eval_extra": probe_eval_extra}  # fmt: skip
ADVSEG = ["uda.mode=advseg", "uda.fd_lambda=0"]

# key: (value, probe, base, overrides on both sides, overrides of the variant only)
CASES = {
    "name": ("other", "run", "synth", [], []),
    "out": ("elsewhere/{{name}}", "run", "synth", [], []),
    "max_iters": (20000, "optim", "file", [], []),
    "seed": (1, "run", "synth", [], []),
    "eval_interval": (0, "run", "synth", [], []),
    "checkpoint_interval": (0, "run", "synth", [], []),
    "checkpoint.keep_last": (1, "run", "synth", ["checkpoint_interval=1"], []),
    "log_interval": (2, "run", "synth", [], []),
    "model.backbone": ("mit_b0", "model", "file", [], ["model.pretrained=None", "uda.fd_lambda=0"]),
    "model.decode_head": ("segformer", "model", "file", [], []),
    "model.num_classes": (6, "model", "file", [], SYNTHETIC),  # 6 needs data with 6 classes
    "model.drop_path_rate": (0.3, "model", "file", [], []),
    "model.embed_dim": (48, "model", "file", [], []),
    "model.pretrained": ("{env[w2]}", "model", "file", [], []),
    # SyncBatchNorm only differs from BatchNorm with more than one process: tests/test_distributed.py
    # runs 2 ranks x batch 1 with it on and checks that they equal 1 process x batch 2
    "model.sync_bn": (True, "distributed", "synth", [], []),
    "data.source": ("synthia", "data", "file", [], ["data.source_root={env[synthia]}"]),
    "data.source_root": ("{env[gta2]}", "data", "file", [], []),
    "data.target": ("synthetic", "data", "file", [], SYNTHETIC),
    "data.target_root": ("{env[cs2]}", "data", "file", [], []),
    "data.recipe": ("hrda", "data", "file", [], []),  # the target's valid pseudo-label mask
    "data.crop_size": ((64, 32), "data", "file", [], []),
    "data.resize": ((96, 48), "data", "file", [], []),
    "data.caug": (True, "data", "file", [], []),  # PhotoMetricDistortion on the source, a plain target crop
    "data.eval_datasets": ("('bdd100k={env[bdd]}',)", "eval_extra", "file", [], []),  # scored and logged beside the target
    "data.batch_size": (1, "data", "file", [], []),
    "data.workers": (1, "data", "file", [], []),
    "data.eval_split": ("train", "eval", "file", [], []),
    "data.eval_samples": (1, "eval", "file", [], []),
    "data.synthetic_size": (48, "data", "synth", [], []),
    "data.synthetic_samples": (8, "data", "synth", [], []),
    "rcs.enabled": (False, "data", "file", [], []),
    "rcs.temperature": (1.0, "data", "file", [], []),
    "rcs.min_pixels": (100, "data", "file", [], []),
    "rcs.min_crop_ratio": (50.0, "data", "file", ["rcs.min_pixels=20"], []),
    "uda.mode": ("source_only", "step", "file", [], []),
    "uda.alpha": (0.5, "step", "file", [], []),
    "uda.pseudo_threshold": (0.5, "step", "file", [], []),
    "uda.pseudo_weight_mode": ("image", "step", "file", [], []),
    "uda.pseudo_ignore_top": (20, "step", "file", [], []),
    "uda.pseudo_ignore_bottom": (20, "step", "file", [], []),
    "uda.mix_batch_pool": (False, "step", "file", [], []),
    "uda.mix_include_ignore": (False, "step", "file", [], []),
    "uda.jitter_prob": (0.0, "step", "file", ["uda.jitter_prob=1.0"], []),
    "uda.jitter_strength": (0.4, "step", "file", ["uda.jitter_prob=1.0"], []),
    "uda.blur_prob": (0.0, "step", "file", ["uda.blur_prob=1.0"], []),
    "uda.fd_lambda": (0.5, "step", "file", [], []),
    "uda.fd_min_ratio": (0.5, "step", "file", [], []),
    "uda.fd_classes": ((0, 1, 2), "step", "file", [], []),
    "uda.mic_lambda": (1.0, "step", "file", [], []),
    "uda.mic_mask_ratio": (0.3, "step", "file", ["uda.mic_lambda=1.0", "uda.mic_block_size=8"], []),
    "uda.mic_block_size": (16, "step", "file", ["uda.mic_lambda=1.0"], []),
    "uda.mic_mode": ("separate", "step", "file", ["uda.mic_lambda=1.0", "uda.mic_block_size=8"], []),
    "uda.adv_lambda": (0.5, "step", "file", ADVSEG, []),
    "uda.adv_loss": ("vanilla", "step", "file", ADVSEG, []),
    "uda.adv_lr": (1e-3, "disc", "file", ADVSEG, []),
    "uda.adv_lr_power": (0.5, "disc", "file", ADVSEG, []),
    "uda.adv_lr_min": (1e-5, "disc", "file", ADVSEG, []),
    "uda.adv_betas": ((0.5, 0.9), "disc", "file", ADVSEG, []),
    "uda.ent_lambda": (0.5, "step", "file", ["uda.mode=minent", "uda.fd_lambda=0"], []),
    "hrda.enabled": (True, "model", "file", HRDA[1:], []),
    "hrda.hr_crop_size": (48, "step", "file", HRDA, []),
    "hrda.hr_loss_weight": (0.5, "step", "file", HRDA, []),
    "hrda.crop_coord_divisible": (16, "step", "file", HRDA, []),
    "hrda.fixed_attention": (0.5, "model", "file", HRDA, []),
    "optim.name": ("sgd", "optim", "file", [], []),
    "optim.momentum": (0.5, "optim", "file", ["optim.name=sgd"], []),
    "optim.lr": (1e-4, "optim", "file", [], []),
    "optim.head_lr_mult": (5.0, "optim", "file", [], []),
    "optim.weight_decay": (0.05, "optim", "file", [], []),
    "optim.betas": ((0.8, 0.99), "optim", "file", [], []),
    "optim.warmup_iters": (100, "optim", "file", [], []),
    "optim.warmup_ratio": (0.1, "optim", "file", [], []),
    "optim.power": (0.9, "optim", "file", [], []),
    "optim.grad_clip": (1e-4, "run", "synth", [], []),
}


def test_every_key_has_a_case():
    assert sorted(set(config.all_keys()) - set(CASES)) == []
    assert sorted(set(CASES) - set(config.all_keys())) == []


def _differs(a, b) -> bool:
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return not (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.shape == b.shape
                    and torch.equal(a, b))  # fmt: skip
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() != b.keys() or any(_differs(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) != len(b) or any(_differs(x, y) for x, y in zip(a, b))
    return a != b


def _text(value, env) -> str:
    return value.format(env=env) if isinstance(value, str) else str(value).replace(" ", "")


# A UDA step, a short run or the loaders' first batches per side take seconds on two cores:
# those cases are slow (run them with -m slow); the model, optimiser and evaluation ones are not.
_SLOW_PROBES = {"step", "run", "data"}


@pytest.mark.parametrize("key", [pytest.param(k, marks=pytest.mark.slow) if CASES[k][1] in _SLOW_PROBES else k
                                 for k in CASES if CASES[k][1] in PROBES])  # fmt: skip
def test_key_changes_what_is_built_or_run(key, env, tmp_path, monkeypatch):
    value, probe, base, both, variant = CASES[key]
    monkeypatch.chdir(tmp_path)
    common = (file_base(env) if base == "file" else synth_base(env)) + [_text(o, env) for o in both]
    default = config.load_config(common[0], common[1:])
    variant = [_text(o, env) for o in variant] + [f"{key}={_text(value, env)}"]
    changed = config.load_config(common[0], common[1:] + variant)
    assert _get(changed, key) != _get(config.TrainConfig(), key), "the case must set a non-default value"
    assert _get(changed, key) != _get(default, key)
    fingerprints = [_BASE_CACHE.get((probe, repr(default))) or PROBES[probe](default), PROBES[probe](changed)]
    _BASE_CACHE[(probe, repr(default))] = fingerprints[0]  # many cases share a base
    assert _differs(*fingerprints), f"{key}={value} changed nothing the {probe} probe sees"


_BASE_CACHE: dict = {}


def _get(cfg, key: str):
    for part in key.split("."):
        cfg = getattr(cfg, part)
    return cfg
