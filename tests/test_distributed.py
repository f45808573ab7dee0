"""torchrun on CPU (gloo, 2 processes, tiny models): DDP against one process, identical
teachers, sharded evaluation, resume across world sizes, and a rank that dies.

One torchrun launch runs every 2-rank scenario (``_scenarios``: this file is also the
worker script) and writes what the tests compare; process start-up is most of the cost.
"""

import contextlib
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_train import tiny  # noqa: E402  (also when this file runs as torchrun's script)

from fastuda import train  # noqa: E402

SOURCE_ONLY = ("data.batch_size=1", "model.sync_bn=true", "model.drop_path_rate=0.0", "eval_interval=-1",
               "optim.warmup_iters=0")  # fmt: skip
UDA = ("data.batch_size=1", "eval_interval=-1")
HRDA = UDA + ("data.synthetic_size=64", "hrda.hr_crop_size=32", "uda.mic_block_size=16")
CROSS = ("data.batch_size=1", "eval_interval=-1", "max_iters=6")


def checksum(module: torch.nn.Module, buffers: bool = True) -> str:
    h = hashlib.sha256()
    for t in [*module.parameters(), *(module.buffers() if buffers else ())]:
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def _torchrun(*args: str, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "--monitor-interval=0.5", __file__, *args]  # fmt: skip
    env = {**os.environ, "FASTUDA_DIST_TIMEOUT": "60", "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


@contextlib.contextmanager
def _no_dropout():
    """The heads' Dropout2d masks are drawn per rank and per batch shape, so no 2 x 1 run can
    draw what a 1 x 2 run does; the comparison of the gradient arithmetic runs without them."""
    forward = torch.nn.Dropout2d.forward
    torch.nn.Dropout2d.forward = lambda self, x: x
    try:
        yield
    finally:
        torch.nn.Dropout2d.forward = forward


def _scenarios(out: Path) -> None:
    """Every rank: each scenario's run; checksums and matrices go to ``out``."""
    import torch.distributed as dist

    from fastuda.runtime import distributed
    from fastuda.runtime.build import build_eval_dataset, build_segmentor
    from fastuda.runtime.evaluation import evaluate

    d = distributed.init("cpu")
    rank = d.rank
    with _no_dropout():
        train.train(tiny("source_only_gta2cs", *SOURCE_ONLY), out / "source_only", progress=False)
    sums = {}
    for name, extra in (("daformer", ("daformer_gta2cs", *UDA)), ("hrda", ("hrda_gta2cs", *HRDA))):
        result = train.train(tiny(*extra), out / name, progress=False)
        # the teacher's parameters are never broadcast: equal only if the EMA is
        sums[name] = {"teacher": checksum(result["teacher"], buffers=False), "student": checksum(result["student"])}
    # sharded evaluation: an odd count, so the shards differ in size
    cfg = tiny("daformer_gta2cs", "data.eval_samples=5")
    torch.manual_seed(0)
    model = build_segmentor(cfg)
    dataset, _ = build_eval_dataset(cfg)
    cm = evaluate(model, dataset, cfg.model.num_classes, limit=5, shard=(rank, 2))
    dist.all_reduce(cm)
    sums["eval_cm"] = cm.tolist()
    # gradients: a parameter only rank 1 uses, one no rank uses
    net = torch.nn.ModuleDict({"a": torch.nn.Linear(3, 1), "b": torch.nn.Linear(3, 1), "c": torch.nn.Linear(3, 1)})
    torch.manual_seed(1)
    x = torch.randn(2, 3) * (rank + 1)
    (net["a"](x).sum() + (net["b"](x).sum() if rank == 1 else 0)).backward()
    distributed.all_reduce_gradients(net, d)
    sums["grads"] = {k: None if p.grad is None else p.grad.tolist() for k, p in net.named_parameters()}
    sums["x"] = x.tolist()
    # a 1-process checkpoint (written by the test) continues on 2 ranks up to iteration 4
    train.train(tiny("demo", *CROSS), out / "cross", out / "cross" / "latest.pt", progress=False, max_iters=4)
    (out / f"rank{rank}.json").write_text(json.dumps(sums))
    distributed.close(d)


def _die(out: Path) -> None:
    """Rank 1 exits hard in its second iteration; rank 0 trains on."""
    import fastuda.runtime.loop as loop
    import fastuda.train as t

    step = loop.uda_step

    def dying_step(state, batch, cfg, iteration):
        if iteration == 1 and os.environ["RANK"] == "1":
            os._exit(3)
        return step(state, batch, cfg, iteration)

    loop.uda_step = dying_step
    t.train(tiny("demo", "data.batch_size=1", "max_iters=1000", "eval_interval=-1"), out, progress=False)


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp")
    first = train.train(tiny("demo", *CROSS), out / "cross", progress=False, max_iters=2)
    assert first["iteration"] == 2
    t0 = time.perf_counter()
    proc = _torchrun("scenarios", str(out))
    assert proc.returncode == 0, proc.stderr[-4000:]
    print(f"torchrun scenarios: {time.perf_counter() - t0:.1f} s")
    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in range(2)]
    return out, ranks


def test_ddp_two_ranks_batch_one_equals_one_process_batch_two(two_ranks, tmp_path):
    out, _ = two_ranks
    cfg = tiny("source_only_gta2cs", *SOURCE_ONLY, "data.batch_size=2")
    with _no_dropout():
        single = train.train(cfg, tmp_path, progress=False)["student"].state_dict()
    ddp = torch.load(out / "source_only" / "latest.pt", weights_only=False)
    assert ddp["iteration"] == 3 and ddp["world"] == 2 and ddp["draws"] == 6
    assert any("running_mean" in k for k in single)  # the DAFormer head's BN, synchronised
    for k, v in single.items():
        torch.testing.assert_close(ddp["student"][k], v, rtol=1e-4, atol=1e-5, msg=k)


@pytest.mark.parametrize("name", ["daformer", "hrda"])
def test_uda_teachers_identical_on_every_rank(two_ranks, name):
    out, ranks = two_ranks
    assert ranks[0][name] == ranks[1][name]
    state = torch.load(out / name / "latest.pt", weights_only=False)
    assert state["iteration"] == 3 and len(state["rng"]) == 2
    last = [json.loads(line) for line in (out / name / "log.jsonl").read_text().splitlines()][-1]
    assert last["iter"] == 3 and "loss_mix" in last and "pseudo_weight" in last


def test_gradient_average_covers_parameters_some_ranks_skip(two_ranks):
    _, ranks = two_ranks
    assert ranks[0]["grads"] == ranks[1]["grads"]
    g = ranks[0]["grads"]
    x0, x1 = torch.tensor(ranks[0]["x"]), torch.tensor(ranks[1]["x"])
    torch.testing.assert_close(torch.tensor(g["a.weight"]), ((x0.sum(0) + x1.sum(0)) / 2)[None])
    torch.testing.assert_close(torch.tensor(g["b.weight"]), (x1.sum(0) / 2)[None])  # rank 0 adds zeros
    assert g["c.weight"] is None and g["c.bias"] is None


def test_sharded_evaluation_equals_single_process(two_ranks):
    from fastuda.runtime.build import build_eval_dataset, build_segmentor
    from fastuda.runtime.evaluation import evaluate

    _, ranks = two_ranks
    cfg = tiny("daformer_gta2cs", "data.eval_samples=5")
    torch.manual_seed(0)
    model = build_segmentor(cfg)
    dataset, _ = build_eval_dataset(cfg)
    cm = evaluate(model, dataset, cfg.model.num_classes, limit=5)
    assert int(cm.sum()) > 0
    assert ranks[0]["eval_cm"] == ranks[1]["eval_cm"] == cm.tolist()


def test_resume_across_world_sizes(two_ranks, tmp_path):
    out, _ = two_ranks
    two = torch.load(out / "cross" / "latest.pt", weights_only=False)
    assert (two["iteration"], two["world"], two["draws"], len(two["rng"])) == (4, 2, 2 + 2 * 2, 2)
    result = train.train(tiny("demo", *CROSS), out / "cross", out / "cross" / "latest.pt", progress=False)  # 2 -> 1
    assert result["iteration"] == 6
    one = torch.load(out / "cross" / "latest.pt", weights_only=False)
    assert (one["iteration"], one["world"], one["draws"]) == (6, 1, 6 + 2)
    iters = [json.loads(line)["iter"] for line in (out / "cross" / "log.jsonl").read_text().splitlines()]
    assert iters == [1, 2, 3, 4, 5, 6]


def test_rank_shares_partition_the_draw_order():
    from fastuda.runtime.build import _RankShare
    from fastuda.data.sampler import IterationSampler

    def draws(rank, world, batch, start, n=24):
        it = iter(_RankShare(IterationSampler(7, 3, start), rank, world, batch) if world > 1
                  else IterationSampler(7, 3, start))  # fmt: skip
        return [next(it) for _ in range(n)]

    single = draws(0, 1, 6, 5, 48)  # 8 iterations of a global batch of 6, from draw 5
    shares = [draws(r, 3, 2, 5, 16) for r in range(3)]  # 3 ranks x batch 2
    for t in range(8):
        assert sum((s[2 * t: 2 * t + 2] for s in shares), []) == single[6 * t: 6 * t + 6]


def test_dead_rank_ends_the_run_with_an_error(tmp_path):
    t0 = time.perf_counter()
    proc = _torchrun("die", str(tmp_path), timeout=240)
    elapsed = time.perf_counter() - t0
    assert proc.returncode != 0
    assert "exitcode  : 3" in proc.stderr or "exit code 3" in proc.stderr.lower(), proc.stderr[-3000:]
    assert elapsed < 120


if __name__ == "__main__":  # torchrun's worker: python tests/test_distributed.py MODE OUT
    {"scenarios": _scenarios, "die": _die}[sys.argv[1]](Path(sys.argv[2]))
