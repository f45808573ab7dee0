"""The training loop behind ``python -m fastuda.train`` (``fastuda.train.train``): build, restore,
one ``uda_step`` per iteration, checkpoints, evaluations and the log. Kept apart from the command
line so that ``python -m fastuda.train`` checks its arguments before torch is imported."""

import json
import sys
import time
from pathlib import Path

import torch
from tqdm import tqdm

from fastuda._io import write_text
from fastuda.config import TrainConfig, test_windows, to_dict, validate
from fastuda.metrics import class_iou
from fastuda.runtime import distributed
from fastuda.runtime.build import (amp_dtype, build_eval_dataset, build_extra_eval_datasets, build_loaders,
                                   build_segmentor)  # fmt: skip
from fastuda.runtime.checkpoint import Checkpointer, load_training_checkpoint, resume_config, seed_all
from fastuda.runtime.compile import compile_student_teacher, graph_breaks
from fastuda.runtime.evaluation import dataset_table, evaluate, percent, report
from fastuda.runtime.logging import RunLogger, run_metadata
from fastuda.runtime.pictures import prediction_grid
from fastuda.uda import StepState, build_optimizer, build_scheduler, make_imnet_encoder, make_teacher, uda_step
from fastuda.uda.advseg import build_discriminator
from fastuda.uda.optim import lr_factor


def _to(batch: dict, device) -> dict:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items() if isinstance(v, torch.Tensor)}


def train(cfg: TrainConfig | None, out: str | Path | None = None, resume: str | Path | None = None,
          device: str | None = None, amp: str | None = None, progress: bool = True,
          max_iters: int | None = None, compile_backend: str | None = None) -> dict:  # fmt: skip
    """``fastuda.train.train`` (documented there)."""
    d = distributed.init(device)
    try:
        return _train(cfg, out, resume, d, amp, progress and d.main, max_iters, compile_backend)
    finally:
        distributed.close(d)


def _train(cfg, out, resume, d: distributed.Dist, amp, progress, max_iters, compile_backend) -> dict:
    out = Path(out or (Path(resume).parent if cfg is None else cfg.out.format(name=cfg.name)))
    state = load_training_checkpoint(resume) if resume is not None else None
    if state is not None:
        cfg = resume_config(state["config"], cfg, str(resume))
    validate(cfg, from_pretrained=state is None)  # before anything is built
    stop = min(max_iters if max_iters is not None else cfg.max_iters, cfg.max_iters)
    if state is not None and state["iteration"] >= stop:
        # nothing left to train: evaluating again would only log a second final record
        at = state["iteration"]
        if d.main:
            why = (f"finished (max_iters={cfg.max_iters}); nothing to do: max_iters=<more> trains it longer, another "
                   "--out starts a new run" if at >= cfg.max_iters else f"past --stop-at {stop}; nothing to do")
            print(f"{out} is already at iteration {at} ({resume}): {why}", file=sys.stderr, flush=True)
        return {"student": None, "teacher": None, "iteration": at, "eval": {}, "out": out, "stopped": None,
                "rank": d.rank, "finished": True, "max_iters": cfg.max_iters}  # fmt: skip
    if state is not None and d.main:  # a reused --out continues the old run: say so
        print(f"resuming from iteration {state['iteration']} ({resume})", file=sys.stderr, flush=True)
    if d.main and cfg.max_iters <= cfg.optim.warmup_iters:
        # Warned, not scaled: a smoke run may want it, and a silently rescaled schedule would differ
        # from the recipe that config.json records.
        peak = cfg.optim.lr * max(lr_factor(t, cfg.max_iters, cfg.optim) for t in range(cfg.max_iters))
        print(f"warning: max_iters={cfg.max_iters} is not past optim.warmup_iters={cfg.optim.warmup_iters}: the "
              f"learning rate never leaves its warm-up and peaks at {peak:.1e}, not optim.lr={cfg.optim.lr:g}; set "
              f"optim.warmup_iters below max_iters (e.g. {cfg.max_iters // 10})", file=sys.stderr, flush=True)

    # ---- build: the same seed on every rank (identical networks), then a stream per rank
    seed_all(cfg.seed)
    student = build_segmentor(cfg, pretrained=state is None)
    student = distributed.convert_sync_bn(student, d) if cfg.model.sync_bn else student
    student.to(d.device)
    distributed.broadcast_state([student], d)
    teacher = make_teacher(student) if cfg.uda.mode == "dacs" else None
    imnet = make_imnet_encoder(student.backbone) if cfg.uda.fd_lambda > 0 else None
    optimizer = build_optimizer(student, cfg.optim)
    scheduler = build_scheduler(optimizer, cfg.max_iters, cfg.optim)
    # AdvSeg: the discriminator with its own optimiser and schedule (None otherwise)
    disc, disc_optim = build_discriminator(cfg, d.device) if cfg.uda.mode == "advseg" else (None, None)
    distributed.broadcast_state([disc], d)
    rank_seed = cfg.seed + 1_000_003 * d.rank  # rank 0: the single-process streams
    if d.rank:
        seed_all(rank_seed)
    generator = torch.Generator(d.device).manual_seed(rank_seed)
    nets = {"student": student, "teacher": teacher, "imnet": imnet, "discriminator": disc}
    checkpoints = Checkpointer(out, cfg, d, nets, optimizer, scheduler, generator, disc_optim)
    start = checkpoints.restore(state) if state is not None else 0
    dtype = amp_dtype(amp, d.device)
    scaler = torch.amp.GradScaler(d.device.type) if dtype == torch.float16 else None
    fns = compile_student_teacher(compile_backend) if compile_backend else None
    step_state = StepState(student, teacher, generator, imnet, disc, dtype, scaler, fns)
    breaks_before = graph_breaks()  # the count is per process: report this run's

    checkpoints.begin()
    if d.main:
        write_text(out / "config.json", json.dumps({**to_dict(cfg), "run": run_metadata()}, indent=2))
    logger = RunLogger(out, enabled=d.main, resume_at=start if state is not None else None)
    # list and check the evaluation split now: a bad one fails here, not after eval_interval iterations
    eval_set, class_names = build_eval_dataset(cfg, check=True) if cfg.eval_interval >= 0 else (None, None)
    extra_sets = build_extra_eval_datasets(cfg, check=True) if cfg.eval_interval >= 0 else {}  # data.eval_datasets
    last_eval: dict = {}

    def run_eval(iteration: int) -> dict:
        distributed.broadcast_state([student], d, params=False)  # evaluate rank 0's BN statistics
        crop, stride = test_windows(cfg)
        cm = evaluate(student, eval_set, cfg.model.num_classes, d.device, crop, stride, cfg.data.eval_samples, dtype,
                      shard=(d.rank, d.world))  # fmt: skip
        cm = distributed.all_reduce_sum(cm, d)
        table, result = report(cm, class_names, cfg.data.source)
        result = {k: percent(v) for k, v in result.items()}  # the table's unit; n/a is null, never 0
        iou = {str(name): percent(v) for name, v in zip(class_names, class_iou(cm.cpu()).tolist())}
        record = {"eval": result, "iou": iou}
        # data.eval_datasets: each scored as the target is, logged as eval_<name> / iou_<name>; the best
        # checkpoint still follows the target's mIoU
        cms = {f"{cfg.data.target} (target)": cm}
        for name, (ds, names) in extra_sets.items():
            cms[name] = distributed.all_reduce_sum(evaluate(student, ds, cfg.model.num_classes, d.device, crop,
                                                            stride, cfg.data.eval_samples, dtype,
                                                            shard=(d.rank, d.world)), d)  # fmt: skip
            record[f"eval_{name}"] = {k: percent(v) for k, v in report(cms[name], names, cfg.data.source)[1].items()}
            record[f"iou_{name}"] = {str(n): percent(v) for n, v in zip(names, class_iou(cms[name].cpu()).tolist())}
        logger.log(iteration, record)
        if d.main:
            grid = prediction_grid(student, eval_set, class_names, d.device, crop, stride, dtype)
            logger.log_image(iteration, "predictions", grid)
        if checkpoints.update_best(iteration, result["mIoU"]) and progress:
            print(f"\nnew best mIoU: {out / 'best.pt'}", flush=True)
        if progress:
            print(f"\niteration {iteration}: target {cfg.data.eval_split}\n{table}", flush=True)
            if extra_sets:
                print(dataset_table(cms, class_names, cfg.data.source)[0], flush=True)
        return result

    # every data file is checked here, before the first step
    src_loader, tgt_loader = build_loaders(cfg, start, d.rank, d.world, checkpoints.draws)
    if state is None:
        checkpoints.save(0)  # from now on there is always a latest.pt to resume from
    # ---- the loop: one uda_step per iteration, the gradient average, the optimiser and the schedule
    src_iter, tgt_iter = iter(src_loader), iter(tgt_loader) if tgt_loader is not None else None  # see below
    bar = None
    if progress:
        # the whole run's length: a --stop-at run does not look finished
        bar = tqdm(total=cfg.max_iters, initial=start, desc=cfg.name, dynamic_ncols=True)
    student.train()
    t0, seen, done, stopped = time.perf_counter(), 0, start, None
    with distributed.StopSignals() as signals:
        for it in range(start, stop):
            batch = {"source": _to(next(src_iter), d.device)}
            if tgt_iter is not None:  # target-only: the labelled target is the "source"; source-only: no target
                batch["target"] = _to(next(tgt_iter), d.device)
            optimizer.zero_grad(set_to_none=True)
            if disc is not None:
                disc_optim[0].zero_grad(set_to_none=True)
            loss, logs = uda_step(step_state, batch, cfg, it)
            distributed.all_reduce_gradients(student, d)
            if disc is not None:
                distributed.all_reduce_gradients(disc, d)
            if scaler is not None:
                scaler.unscale_(optimizer)
            if cfg.optim.grad_clip:
                torch.nn.utils.clip_grad_norm_(student.parameters(), cfg.optim.grad_clip)
            for opt in (optimizer, disc_optim[0]) if disc is not None else (optimizer,):
                scaler.step(opt) if scaler is not None else opt.step()
            if scaler is not None:
                scaler.update()
            lr = optimizer.param_groups[0]["lr"]
            scheduler.step()
            if disc is not None:
                disc_optim[1].step()
            done = it + 1
            seen += 1
            if done % max(cfg.log_interval, 1) == 0 or done == stop:
                logs = distributed.mean_over_ranks(logs, d)
                record = {k: float(v) for k, v in logs.items()}  # the only host sync, every log_interval
                logger.log(done, {**record, "lr": lr, "it_per_s": seen / (time.perf_counter() - t0)})
                if bar is not None:
                    bar.set_postfix(loss=f"{record['loss']:.3f}", lr=f"{lr:.2e}", refresh=False)
            if bar is not None:
                bar.update(1)
            stopped = signals.requested if distributed.any_rank(signals.requested is not None, d) else None
            evaluate_now = cfg.eval_interval > 0 and done % cfg.eval_interval == 0 and done != stop
            if stopped or evaluate_now or (cfg.checkpoint_interval and done % cfg.checkpoint_interval == 0):
                checkpoints.save(done)  # before the evaluation: a failing evaluation loses no training
            if stopped:
                break
            if evaluate_now:
                last_eval = run_eval(done)
    if bar is not None:
        bar.close()
    if not stopped:
        if stop > start and not (cfg.checkpoint_interval and stop % cfg.checkpoint_interval == 0):
            checkpoints.save(stop)
        if stop == cfg.max_iters and cfg.eval_interval >= 0:
            last_eval = run_eval(stop)
    result = {"student": student, "teacher": teacher, "discriminator": disc, "iteration": done, "eval": last_eval, "out": out,
              "stopped": stopped, "rank": d.rank, "finished": done >= cfg.max_iters, "max_iters": cfg.max_iters}
    if compile_backend:
        result["graph_breaks"] = graph_breaks() - breaks_before
        logger.log(done, {"compile": compile_backend, "graph_breaks": result["graph_breaks"]})
        if progress:
            print(f"torch.compile ({compile_backend}): {result['graph_breaks']} graph breaks", flush=True)
    logger.close()
    return result
