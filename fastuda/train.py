"""``python -m fastuda.train PRESET_OR_FILE [key=value ...]``: UDA training.

    python -m fastuda.train daformer_gta2cs data.source_root=data/gta data.target_root=data/cityscapes
    python -m fastuda.train demo max_iters=200 --out runs/demo
    python -m fastuda.train demo --resume            # continues runs/demo/latest.pt exactly

Presets and fields: fastuda/config.py. Overrides are dotted and typed
(``uda.alpha=0.99``, ``data.crop_size=(256,256)``); an unknown key is an error
that names the close matches. Outputs in ``--out`` (default ``runs/<name>``):
``log.jsonl`` (losses, lr, evaluations), TensorBoard events when installed,
``latest.pt`` / ``iter_N.pt`` checkpoints (written atomically) holding the
student, teacher, ImageNet encoder, optimiser, scheduler, RNG states,
iteration and config.

Resume: data are drawn by iteration (a shuffled order per epoch from the seed,
RCS draws seeded by their index) and every random stream of the loop is saved,
so with in-memory data a resumed run equals the straight one bit for bit. The
crop / flip streams of file datasets' pipelines restart on resume.
"""

import argparse
import dataclasses
import json
import os
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler

from fastuda.config import TrainConfig, from_dict, load_config, to_dict
from fastuda.evaluate import evaluate, report, test_settings
from fastuda.uda import build_optimizer, build_scheduler, make_imnet_encoder, make_teacher, uda_step
from fastuda.uda.rcs import RareClassSampling

# ---------------------------------------------------------------- data


class IterationSampler(Sampler):
    """Infinite draws, resumable at any iteration: draw k is ``order_e[k % n]`` with
    a permutation per epoch e = k // n seeded by (seed, e); ``identity`` yields k itself
    (for a sampler-like dataset such as ``RareClassSampling``)."""

    def __init__(self, n: int, seed: int, start: int = 0, identity: bool = False):
        self.n, self.seed, self.start, self.identity = n, seed, start, identity

    def __iter__(self):
        k = self.start
        epoch, order = -1, None
        while True:
            if self.identity:
                yield k
            else:
                if k // self.n != epoch:
                    epoch = k // self.n
                    order = torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed * 100_003 + epoch))
                yield int(order[k % self.n])
            k += 1


def _pipeline(cfg: TrainConfig, dataset: str, train: bool):
    from fastuda.data import preset_pipeline

    pipe = preset_pipeline(cfg.data.recipe, dataset, train)
    changes = {}
    if cfg.data.resize is not None:
        changes["scale"] = tuple(cfg.data.resize)
    if train and cfg.data.crop_size is not None:
        changes["crop_size"] = tuple(cfg.data.crop_size)
    return dataclasses.replace(pipe, **changes) if changes else pipe


def build_train_datasets(cfg: TrainConfig):
    """(source, target) training datasets."""
    d = cfg.data
    if d.source == "synthetic" or d.target == "synthetic":
        from fastuda.data.synthetic import SyntheticScenes

        if not (d.source == d.target == "synthetic"):
            raise ValueError("the synthetic demo needs data.source and data.target both 'synthetic'")
        return (SyntheticScenes("source", d.synthetic_samples, d.synthetic_size, cfg.seed),
                SyntheticScenes("target", d.synthetic_samples, d.synthetic_size, cfg.seed))  # fmt: skip
    from fastuda.data import build_dataset

    source = build_dataset(d.source, d.source_root, "train", _pipeline(cfg, d.source, True), seed=cfg.seed)
    target = build_dataset(d.target, d.target_root, "train", _pipeline(cfg, d.target, True), seed=cfg.seed + 1)
    return source, target


def build_eval_dataset(cfg: TrainConfig):
    """(target evaluation dataset, class names)."""
    d = cfg.data
    if d.target == "synthetic":
        from fastuda.data.synthetic import SyntheticScenes

        ds = SyntheticScenes("target", d.eval_samples or d.synthetic_samples, d.synthetic_size, cfg.seed, split="val")
        return ds, ds.class_names
    from fastuda.data import build_dataset

    ds = build_dataset(d.target, d.target_root, d.eval_split, _pipeline(cfg, d.target, False))
    return ds, ds.class_names


def _loader(dataset, cfg: TrainConfig, seed: int, start_iter: int, identity: bool = False) -> DataLoader:
    sampler = IterationSampler(len(dataset), seed, start_iter * cfg.data.batch_size, identity)
    workers = cfg.data.workers
    return DataLoader(dataset, batch_size=cfg.data.batch_size, sampler=sampler, num_workers=workers,
                      pin_memory=torch.cuda.is_available(), drop_last=True, persistent_workers=workers > 0,
                      generator=torch.Generator().manual_seed(seed))  # own stream: the global RNG stays untouched


def build_loaders(cfg: TrainConfig, start_iter: int):
    source, target = build_train_datasets(cfg)
    if cfg.rcs.enabled:
        r = cfg.rcs
        source = RareClassSampling(source, cfg.model.num_classes, r.temperature, r.min_pixels, r.min_crop_ratio,
                                   cfg.seed)  # fmt: skip
        src_loader = _loader(source, cfg, cfg.seed, start_iter, identity=True)
    else:
        src_loader = _loader(source, cfg, cfg.seed, start_iter)
    return src_loader, _loader(target, cfg, cfg.seed + 1, start_iter)


# ---------------------------------------------------------------- model


DEMO_BACKBONE = "mit_demo"


def _demo_model(cfg):
    """A narrow, one-block-per-stage MiT with a DAFormer head (the same modules as
    MiT-B5 + DAFormer, about 0.5M parameters): the CPU demo's network."""
    from fastuda.models import DAFormerHead, EncoderDecoder, MixVisionTransformer

    backbone = MixVisionTransformer(embed_dims=(16, 32, 64, 128), num_heads=(1, 2, 4, 8), depths=(1, 1, 1, 1),
                                    drop_path_rate=cfg.drop_path_rate)  # fmt: skip
    width = cfg.embed_dim or 32
    head = DAFormerHead(backbone.out_channels, cfg.num_classes, embed_dim=width, channels=width)
    return EncoderDecoder(backbone, head)


def build_segmentor(cfg: TrainConfig, pretrained: bool = True):
    """The student network of ``cfg`` (HRDA when ``hrda.enabled``)."""
    from fastuda.models import build_model

    model_cfg = cfg.model if pretrained else dataclasses.replace(cfg.model, pretrained=None)
    if model_cfg.pretrained and not Path(model_cfg.pretrained).is_file():
        raise FileNotFoundError(
            f"model.pretrained={model_cfg.pretrained} not found: download the SegFormer ImageNet weights "
            "(mit_b*.pth) there, or pass model.pretrained=None to start from scratch"
        )
    if model_cfg.backbone == DEMO_BACKBONE:
        model = _demo_model(model_cfg)
    else:
        model = build_model(model_cfg)
    if cfg.hrda.enabled:
        try:
            from fastuda.models.hrda import HRDASegmentor
        except ImportError as e:
            raise RuntimeError("hrda.enabled needs fastuda.models.hrda, which this installation lacks") from e
        h = cfg.hrda
        # the (pretrained) encoder of the plain model, shared by both scales; fresh HRDA heads
        model = HRDASegmentor(model.backbone, cfg.model.num_classes, lr_scale=h.lr_scale, detail_crop=h.hr_crop_size,
                              crop_divisible=h.crop_coord_divisible, detail_loss_weight=h.hr_loss_weight)  # fmt: skip
    return model


# ---------------------------------------------------------------- checkpoints


def _rng_state(generator: torch.Generator) -> dict:
    state = {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": np.random.get_state(),
             "generator": generator.get_state()}  # fmt: skip
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict, generator: torch.Generator) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    generator.set_state(state["generator"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: Path, state: dict) -> None:
    """torch.save to a temporary file in the same directory, then an atomic rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        torch.save(state, tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


# ---------------------------------------------------------------- logging


class _Logger:
    """JSONL always; TensorBoard when installed."""

    def __init__(self, out: Path, enabled: bool = True):
        self.file = open(out / "log.jsonl", "a", encoding="utf-8") if enabled else None
        self.tb = None
        if enabled:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(out / "tb"))
            except Exception:  # tensorboard not installed
                self.tb = None

    def log(self, iteration: int, record: dict) -> None:
        if self.file:
            self.file.write(json.dumps({"iter": iteration, **record}) + "\n")
            self.file.flush()
        if self.tb:
            for k, v in record.items():
                if isinstance(v, (int, float)):
                    self.tb.add_scalar(k, v, iteration)

    def close(self) -> None:
        if self.file:
            self.file.close()
        if self.tb:
            self.tb.close()


# ---------------------------------------------------------------- training


def _to(batch: dict, device) -> dict:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items() if isinstance(v, torch.Tensor)}


def _amp_dtype(amp: str | None, device: torch.device):
    if amp is None:
        amp = "bf16" if device.type == "cuda" else "off"
    return {"off": None, "bf16": torch.bfloat16, "fp16": torch.float16}[amp]


def train(cfg: TrainConfig, out: str | Path | None = None, resume: str | Path | None = None, device: str | None = None,
          amp: str | None = None, progress: bool = True, max_iters: int | None = None) -> dict:  # fmt: skip
    """Trains ``cfg``; returns {"student", "teacher", "iteration", "eval": last scores, "out"}.

    ``max_iters`` stops early (the schedule still runs to ``cfg.max_iters``):
    resuming such a run continues it exactly.
    """
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    out = Path(out or cfg.out.format(name=cfg.name))
    out.mkdir(parents=True, exist_ok=True)
    state = None
    if resume is not None:
        state = torch.load(resume, map_location="cpu", weights_only=False)
        cfg = from_dict(state["config"])
    stop = min(max_iters if max_iters is not None else cfg.max_iters, cfg.max_iters)

    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    generator = torch.Generator(device).manual_seed(cfg.seed)
    student = build_segmentor(cfg, pretrained=state is None).to(device)
    teacher = make_teacher(student) if cfg.uda.mode == "dacs" else None
    imnet = make_imnet_encoder(student.backbone) if cfg.uda.fd_lambda > 0 else None
    optimizer = build_optimizer(student, cfg.optim)
    scheduler = build_scheduler(optimizer, cfg.max_iters, cfg.optim)
    start = 0
    if state is not None:
        student.load_state_dict(state["student"])
        if teacher is not None:
            teacher.load_state_dict(state["teacher"])
        if imnet is not None:
            imnet.load_state_dict(state["imnet"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        _set_rng_state(state["rng"], generator)
        start = state["iteration"]
    dtype = _amp_dtype(amp, device)
    scaler = torch.amp.GradScaler(device.type) if dtype == torch.float16 else None

    (out / "config.json").write_text(json.dumps(to_dict(cfg), indent=2))
    logger = _Logger(out)
    eval_set = class_names = None
    last_eval: dict = {}

    def checkpoint(iteration: int) -> None:
        ckpt = {"student": student.state_dict(), "teacher": teacher.state_dict() if teacher is not None else None,
                "imnet": imnet.state_dict() if imnet is not None else None, "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "rng": _rng_state(generator), "iteration": iteration,
                "config": to_dict(cfg)}  # fmt: skip
        save_checkpoint(out / "latest.pt", ckpt)
        if iteration % max(cfg.checkpoint_interval, 1) == 0 and cfg.checkpoint_interval:
            save_checkpoint(out / f"iter_{iteration}.pt", ckpt)

    def run_eval(iteration: int) -> dict:
        nonlocal eval_set, class_names
        if eval_set is None:
            eval_set, class_names = build_eval_dataset(cfg)
        crop, stride = test_settings(cfg)
        cm = evaluate(student, eval_set, cfg.model.num_classes, device, crop, stride, cfg.data.eval_samples, dtype)
        table, result = report(cm, class_names, cfg.data.source)
        logger.log(iteration, {"eval": result, "iou": torch.nan_to_num(
            cm.diagonal().double() / (cm.sum(0) + cm.sum(1) - cm.diagonal()).double()).tolist()})
        if progress:
            print(f"\niteration {iteration}: target {cfg.data.eval_split}\n{table}", flush=True)
        return result

    src_loader, tgt_loader = build_loaders(cfg, start)
    src_iter, tgt_iter = iter(src_loader), iter(tgt_loader)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=stop, initial=start, desc=cfg.name, dynamic_ncols=True)
    student.train()
    t0, seen = time.perf_counter(), 0
    for it in range(start, stop):
        batch = {"source": _to(next(src_iter), device), "target": _to(next(tgt_iter), device)}
        optimizer.zero_grad(set_to_none=True)
        loss, logs = uda_step(student, teacher, batch, cfg, it, generator, imnet, dtype, scaler)
        if scaler is not None:
            scaler.unscale_(optimizer)
        if cfg.optim.grad_clip:
            torch.nn.utils.clip_grad_norm_(student.parameters(), cfg.optim.grad_clip)
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        lr = optimizer.param_groups[0]["lr"]
        scheduler.step()
        done = it + 1
        seen += 1
        if done % max(cfg.log_interval, 1) == 0 or done == stop:
            record = {k: float(v) for k, v in logs.items()}  # the only host sync, every log_interval
            rate = seen / (time.perf_counter() - t0)
            logger.log(done, {**record, "lr": lr, "it_per_s": rate})
            if bar is not None:
                bar.set_postfix(loss=f"{record['loss']:.3f}", lr=f"{lr:.2e}", refresh=False)
        if bar is not None:
            bar.update(1)
        if cfg.eval_interval and done % cfg.eval_interval == 0 and done != stop:
            last_eval = run_eval(done)
        if cfg.checkpoint_interval and done % cfg.checkpoint_interval == 0 and done != stop:
            checkpoint(done)
    if bar is not None:
        bar.close()
    if stop > start or state is None:
        checkpoint(stop)
    if stop == cfg.max_iters and cfg.eval_interval >= 0:
        last_eval = run_eval(stop)
    logger.close()
    return {"student": student, "teacher": teacher, "iteration": stop, "eval": last_eval, "out": out}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fastuda.train", description=__doc__.split("\n\n")[0])
    parser.add_argument("config", help="a preset name (see fastuda.config.PRESETS) or a JSON config file")
    parser.add_argument("overrides", nargs="*", help="dotted key=value overrides, e.g. uda.alpha=0.99")
    parser.add_argument("--out", default=None, help="output directory (default: runs/<name>)")
    parser.add_argument("--resume", nargs="?", const="", default=None,
                        help="continue from a checkpoint (default: OUT/latest.pt)")  # fmt: skip
    parser.add_argument("--device", default=None, help="cuda / cpu (default: cuda when available)")
    parser.add_argument("--amp", choices=("off", "bf16", "fp16"), default=None,
                        help="autocast (default: bf16 on GPU, off on CPU)")
    parser.add_argument("--stop-at", type=int, default=None, help="stop after this iteration (resumable)")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    try:
        cfg = load_config(args.config, args.overrides)
    except (KeyError, ValueError) as e:
        parser.error(str(e.args[0]) if e.args else str(e))
    out = Path(args.out or cfg.out.format(name=cfg.name))
    resume = None
    if args.resume is not None:
        resume = Path(args.resume) if args.resume else out / "latest.pt"
        if not resume.is_file():
            parser.error(f"--resume: {resume} not found")
    result = train(cfg, out, resume, args.device, args.amp, not args.no_progress, args.stop_at)
    if result["eval"]:
        print(f"mIoU {100 * result['eval']['mIoU']:.2f} at iteration {result['iteration']}; outputs in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
