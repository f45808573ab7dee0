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

The pieces around the loop live in ``fastuda.runtime``: ``build`` (model, data),
``checkpoint`` (atomic writes, RNG state), ``logging`` and ``evaluation``.
"""

import argparse
import json
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch

from fastuda.config import TrainConfig, from_dict, load_config, to_dict
from fastuda.runtime.build import amp_dtype, build_eval_dataset, build_loaders, build_segmentor, test_settings
from fastuda.runtime.checkpoint import load_training_checkpoint, rng_state, save_checkpoint, set_rng_state
from fastuda.runtime.compile import BACKENDS, compile_student_teacher, graph_breaks
from fastuda.runtime.evaluation import evaluate, report
from fastuda.runtime.logging import RunLogger
from fastuda.uda import build_optimizer, build_scheduler, make_imnet_encoder, make_teacher, uda_step


def _to(batch: dict, device) -> dict:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items() if isinstance(v, torch.Tensor)}


def train(cfg: TrainConfig, out: str | Path | None = None, resume: str | Path | None = None, device: str | None = None,
          amp: str | None = None, progress: bool = True, max_iters: int | None = None,
          compile_backend: str | None = None) -> dict:  # fmt: skip
    """Trains ``cfg``; returns {"student", "teacher", "iteration", "eval": last scores, "out"}
    (and "graph_breaks" with ``compile_backend``).

    ``max_iters`` stops early (the schedule still runs to ``cfg.max_iters``):
    resuming such a run continues it exactly. ``compile_backend``: a torch.compile backend
    ("inductor", "aot_eager") for the student's forward + loss and the teacher's forward
    (``fastuda.runtime.compile``); None runs eagerly.
    """
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    out = Path(out or cfg.out.format(name=cfg.name))
    out.mkdir(parents=True, exist_ok=True)
    state = None
    if resume is not None:
        state = load_training_checkpoint(resume)
        cfg = from_dict(state["config"])
    stop = min(max_iters if max_iters is not None else cfg.max_iters, cfg.max_iters)

    # ---- build: seeds, networks, optimiser, schedule; then the saved state on resume
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
        set_rng_state(state["rng"], generator)
        start = state["iteration"]
    dtype = amp_dtype(amp, device)
    scaler = torch.amp.GradScaler(device.type) if dtype == torch.float16 else None
    fns = compile_student_teacher(compile_backend) if compile_backend else None
    breaks_before = graph_breaks()  # the count is per process: report this run's

    (out / "config.json").write_text(json.dumps(to_dict(cfg), indent=2))
    logger = RunLogger(out)
    eval_set = class_names = None
    last_eval: dict = {}

    def checkpoint(iteration: int) -> None:
        ckpt = {"student": student.state_dict(), "teacher": teacher.state_dict() if teacher is not None else None,
                "imnet": imnet.state_dict() if imnet is not None else None, "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "rng": rng_state(generator), "iteration": iteration,
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

    # ---- the loop: one uda_step per iteration, then the optimiser and the schedule
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
        loss, logs = uda_step(student, teacher, batch, cfg, it, generator, imnet, dtype, scaler, fns)
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
    result = {"student": student, "teacher": teacher, "iteration": stop, "eval": last_eval, "out": out}
    if compile_backend:
        result["graph_breaks"] = graph_breaks() - breaks_before
        logger.log(stop, {"compile": compile_backend, "graph_breaks": result["graph_breaks"]})
        if progress:
            print(f"torch.compile ({compile_backend}): {result['graph_breaks']} graph breaks", flush=True)
    logger.close()
    return result


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
    parser.add_argument("--compile", nargs="?", const="inductor", default=None, choices=BACKENDS,
                        help="torch.compile the student's forward + loss and the teacher's forward "
                             "(default backend: inductor)")  # fmt: skip
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
    result = train(cfg, out, resume, args.device, args.amp, not args.no_progress, args.stop_at, args.compile)
    if "graph_breaks" in result and args.no_progress:
        print(f"torch.compile ({args.compile}): {result['graph_breaks']} graph breaks")
    if result["eval"]:
        print(f"mIoU {100 * result['eval']['mIoU']:.2f} at iteration {result['iteration']}; outputs in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
