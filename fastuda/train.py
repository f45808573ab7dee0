"""``python -m fastuda.train PRESET_OR_FILE [key=value ...]``: UDA training.

    python -m fastuda.train daformer_gta2cs data.source_root=data/gta data.target_root=data/cityscapes
    python -m fastuda.train demo max_iters=200 --out runs/demo      # again: continues runs/demo/latest.pt
    torchrun --nproc_per_node=4 -m fastuda.train daformer_gta2cs ...  # data.batch_size is per GPU

Presets and fields: fastuda/config/ (presets.py, schema.py; ``--list-keys [PRESET]`` prints them);
overrides are dotted and typed, in any order with the options. Outputs in ``--out`` (default ``runs/<name>``): ``log.jsonl``, TensorBoard
events, ``latest.pt`` (from iteration 0 on), ``iter_N.pt`` and ``best.pt``. A run whose
``OUT/latest.pt`` exists continues it, exactly; overrides may then change only
``fastuda.runtime.checkpoint.RESUMABLE`` fields. SIGINT / SIGTERM checkpoint and exit 0.
The pieces around the loop live in ``fastuda.runtime`` (build, checkpoint, distributed,
evaluation, logging).
"""

import argparse
import contextlib
import os
import sys
from pathlib import Path

from fastuda._keys import format_keys
from fastuda.config import PRESETS, TrainConfig, load_config
from fastuda.errors import UserError, cli
from fastuda.runtime import COMPILE_BACKENDS


def train(cfg: TrainConfig | None, out: str | Path | None = None, resume: str | Path | None = None,
          device: str | None = None, amp: str | None = None, progress: bool = True,
          max_iters: int | None = None, compile_backend: str | None = None) -> dict:  # fmt: skip
    """Trains ``cfg``; returns {"student", "teacher", "iteration", "eval": last scores (percent), "out", "stopped"}.

    ``resume``: a checkpoint to continue (the CLI passes ``OUT/latest.pt`` when it exists); ``cfg``
    may then be None (the checkpoint's config). ``max_iters`` stops early (the schedule still runs to
    ``cfg.max_iters``): resuming such a run continues it exactly. Under torchrun every rank calls this.
    A run already at ``cfg.max_iters`` (or past ``max_iters``) says so and returns at once ("finished"
    True, "student" None): it is neither trained nor evaluated again.
    ``compile_backend``: a torch.compile backend ("inductor", "aot_eager") for the student's forward +
    loss and the teacher's forward (``fastuda.runtime.compile``; the result then has "graph_breaks").
    """
    # Here, not at the top: the command line checks its arguments in well under a second, before
    # torch, the models and the data pipelines are imported (5-7 s).
    from fastuda.runtime.loop import train as run

    return run(cfg, out, resume, device, amp, progress, max_iters, compile_backend)


_EPILOG = """presets: {presets}

examples:
  python -m fastuda.train demo max_iters=200 --out runs/demo    # again: continues runs/demo/latest.pt
  python -m fastuda.train daformer_gta2cs data.source_root=data/gta data.target_root=data/cityscapes
  python -m fastuda.train --list-keys demo                      # every key, its value, what it means
  torchrun --nproc_per_node=4 -m fastuda.train daformer_gta2cs  # data.batch_size is per GPU

Outputs in --out: log.jsonl, train.log, TensorBoard events (tb/), latest.pt, iter_N.pt, best.pt.
A run whose OUT/latest.pt exists continues it, exactly. SIGINT / SIGTERM checkpoint and exit 0."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m fastuda.train", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Domain-adaptive segmentation training (DAFormer, HRDA, MIC) from a preset or a JSON "
                    "config,\nwith dotted key=value overrides in any order with the options.",
        epilog=_EPILOG.format(presets=", ".join(PRESETS)))  # fmt: skip
    parser.add_argument("config", nargs="?", help="a preset name (below) or a JSON config file")
    parser.add_argument("--list-keys", nargs="?", const="", metavar="PRESET",
                        help="print every config key with its value (the preset's, or the defaults) and a "
                             "description, then exit")  # fmt: skip
    parser.add_argument("overrides", nargs="*", help="dotted key=value overrides, e.g. uda.alpha=0.99")
    parser.add_argument("--out", default=None, help="output directory (default: runs/<name>)")
    parser.add_argument("--resume", action="store_true",
                        help="continue OUT/latest.pt; an error if there is none (without it: resumed if present)")
    parser.add_argument("--resume-from", metavar="CKPT", default=None, help="continue this checkpoint into --out")
    parser.add_argument("--device", default=None, help="cuda / cpu (default: cuda when available)")
    parser.add_argument("--amp", choices=("off", "bf16", "fp16"), default=None,
                        help="autocast (default: bf16 on GPU, off on CPU)")
    parser.add_argument("--stop-at", type=int, default=None, help="stop after this iteration (resumable)")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--compile", nargs="?", const="inductor", default=None, choices=COMPILE_BACKENDS,
                        help="torch.compile the student's forward + loss and the teacher's forward "
                             "(default backend: inductor)")  # fmt: skip
    return parser


@cli
def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_intermixed_args(argv)
    if args.list_keys is not None:
        given = [n for n in (args.list_keys, args.config) if n]  # `--list-keys key=value` took an override
        names, overrides = [n for n in given if "=" not in n], [n for n in given if "=" in n] + args.overrides
        if len(names) > 1:
            parser.error(f"--list-keys takes one preset, got {' and '.join(names)}")
        cfg = load_config(names[0], overrides, from_pretrained=False) if names else TrainConfig()
        print(format_keys(cfg))  # from_pretrained=False: listing needs no weights file
        return 0
    if args.config is None:
        parser.error("the following arguments are required: config (a preset or a JSON file; presets: "
                     f"{', '.join(PRESETS)})")  # fmt: skip
    if bad := [o for o in args.overrides if "=" not in o and o.endswith(".pt")]:
        parser.error(f"{bad[0]}: a checkpoint is given with --resume-from {bad[0]}")
    cfg = load_config(args.config, args.overrides)  # a mistake is a UserError: one line, exit 2
    # The arguments and the config are checked: now torch and the runtime (see train()).
    from fastuda.runtime.checkpoint import resume_path
    from fastuda.runtime.logging import run_metadata, tee_output

    out = Path(args.out or cfg.out.format(name=cfg.name))
    try:
        resume = resume_path(out, args.resume_from, args.resume, cfg)  # overrides checked before building
    except (KeyError, ValueError) as e:
        raise UserError(str(e.args[0]) if e.args else str(e)) from None
    main_rank = int(os.environ.get("RANK", "0")) == 0  # torchrun: one train.log, rank 0's
    with tee_output(out / "train.log", header=run_metadata()["command"]) if main_rank else contextlib.nullcontext():
        result = train(cfg, out, resume, args.device, args.amp, not args.no_progress, args.stop_at, args.compile)
        if "graph_breaks" in result and args.no_progress and result["rank"] == 0:
            print(f"torch.compile ({args.compile}): {result['graph_breaks']} graph breaks")
        if result["stopped"] and result["rank"] == 0:
            print(f"{result['stopped']}: stopped at iteration {result['iteration']}; run the same command to "
                  f"continue from {out / 'latest.pt'}", file=sys.stderr)  # fmt: skip
        elif not result["finished"] and result["rank"] == 0:
            print(f"--stop-at {args.stop_at}: stopped at iteration {result['iteration']} of {result['max_iters']}; "
                  f"run the command without --stop-at to continue from {out / 'latest.pt'}", file=sys.stderr)
        elif result["eval"] and result["rank"] == 0:
            print(f"mIoU {result['eval']['mIoU']:.2f} at iteration {result['iteration']}; outputs in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
