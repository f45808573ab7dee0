"""Several processes, one run: ``torchrun`` sets the environment, this module joins the group.

    torchrun --nproc_per_node=4 -m fastuda.train daformer_gta2cs ...

Without torchrun's variables (``WORLD_SIZE`` unset or 1) everything here is a no-op and the
run is the single-device one. With them: NCCL on GPU (one device per local rank), gloo on
CPU, plus a gloo "control" group for the small host-side agreements (stop requests, RNG
states, evaluation counts) so that they never wait on the GPU stream.

Gradients: ``uda_step`` runs one backward per loss term through the segmentor's own entry
points (``extract_features`` / ``decode_head`` / HRDA's ``forward_train``), which
``DistributedDataParallel``'s forward never sees; so the gradients accumulate locally over
the step's backwards (what ``DDP.no_sync()`` would do) and ``all_reduce_gradients``
averages them once, after the last one: the same gradient DDP gives, and with one process
the published step, untouched. Parameters start identical (``broadcast_state`` from rank 0)
and stay identical (same averaged gradient, same optimiser), so the EMA teacher, updated from
them, is identical on every rank too.

Failures: every collective has ``timeout`` (``FASTUDA_DIST_TIMEOUT`` seconds, default 600);
a rank that dies makes torchrun stop the others (SIGTERM, then SIGKILL) and exit non-zero.
"""

import dataclasses
import datetime
import os
import signal
import threading

import torch
import torch.distributed as dist
from torch import nn


@dataclasses.dataclass
class Dist:
    """This process's place in the run (rank 0 of 1 without torchrun)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = dataclasses.field(default_factory=lambda: torch.device("cpu"))
    control: object = None  # gloo process group for host-side agreements (None: single process)
    owns_group: bool = False  # this module created the process group (and destroys it)

    @property
    def main(self) -> bool:
        """Rank 0 logs, writes checkpoints and shows the progress bar."""
        return self.rank == 0


def timeout() -> datetime.timedelta:
    return datetime.timedelta(seconds=float(os.environ.get("FASTUDA_DIST_TIMEOUT", "600")))


def init(device: str | None = None) -> Dist:
    """Joins torchrun's process group (or the one already initialised); single process otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    cuda = torch.cuda.is_available() if device is None else torch.device(device).type == "cuda"
    if world <= 1 and not dist.is_initialized():
        return Dist(device=torch.device(device or ("cuda" if cuda else "cpu")))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = torch.device("cuda", local_rank) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(dev)
    owns = not dist.is_initialized()
    if owns:
        dist.init_process_group("nccl" if cuda else "gloo", timeout=timeout(), device_id=dev if cuda else None)
    global _control
    if _control is None:  # one per process group (train() may run several times in one group)
        gloo = dist.get_backend() == "gloo"
        _control = dist.group.WORLD if gloo else dist.new_group(backend="gloo", timeout=timeout())
    return Dist(dist.get_rank(), dist.get_world_size(), local_rank, dev, _control, owns)


_control = None


def close(d: Dist) -> None:
    global _control
    if d.owns_group and dist.is_initialized():
        dist.destroy_process_group()
        _control = None


# ---------------------------------------------------------------- model state


def convert_sync_bn(model: nn.Module, d: Dist) -> nn.Module:
    """BatchNorm -> SyncBatchNorm (``model.sync_bn``): statistics over the global batch.
    torch's SyncBatchNorm runs on GPU only; on CPU (gloo) ``_GlooSyncBatchNorm`` does the same."""
    if d.world == 1:
        return model
    model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    if d.device.type == "cpu":
        for m in model.modules():
            if type(m) is nn.SyncBatchNorm:
                m.__class__ = _GlooSyncBatchNorm
    return model


class _AllReduceSum(torch.autograd.Function):
    """Sum over ranks; the gradient of a sum every rank uses is the sum of their gradients."""

    @staticmethod
    def forward(ctx, x):
        x = x.clone()
        dist.all_reduce(x)
        return x

    @staticmethod
    def backward(ctx, grad):
        grad = grad.clone()
        dist.all_reduce(grad)
        return grad


class _GlooSyncBatchNorm(nn.SyncBatchNorm):
    """SyncBatchNorm for CPU tensors: the batch mean and variance over all ranks through
    differentiable all-reduces, so the backward is synchronised too (as torch's GPU kernel does)."""

    def forward(self, x):
        if not self.training:
            return super().forward(x)
        dims = [0] + list(range(2, x.dim()))
        shape = [1, -1] + [1] * (x.dim() - 2)
        count = _AllReduceSum.apply(torch.tensor(float(x.numel() // x.shape[1])))
        mean = _AllReduceSum.apply(x.sum(dims)) / count
        centred = x - mean.view(shape)
        var = _AllReduceSum.apply((centred * centred).sum(dims)) / count  # biased: what BN normalises by
        with torch.no_grad():
            if self.track_running_stats:
                self.num_batches_tracked.add_(1)
                m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                self.running_mean.lerp_(mean, m)
                self.running_var.lerp_(var * count / (count - 1).clamp_min(1), m)  # unbiased, as BatchNorm
        y = centred * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y


def broadcast_state(modules, d: Dist, params: bool = True) -> None:
    """Parameters (``params``) and buffers of ``modules`` from rank 0: an identical start, and
    rank 0's BatchNorm statistics (per-GPU BN keeps its own per rank) for evaluation and saving."""
    if d.world == 1:
        return
    with torch.no_grad():
        for m in modules:
            if m is not None:
                for t in [*(m.parameters() if params else ()), *m.buffers()]:
                    dist.broadcast(t.data, 0)


def all_reduce_gradients(model: nn.Module, d: Dist, bucket_bytes: int = 64 << 20) -> None:
    """Averages the accumulated gradients over the ranks, in flat buckets (a few collectives
    per step instead of one per tensor). A parameter no rank used keeps no gradient; one that
    only some ranks used gets zeros on the others first, as DDP does, so every rank applies
    the same update."""
    if d.world == 1:
        return
    params = [p for p in model.parameters() if p.requires_grad]
    used = torch.tensor([p.grad is not None for p in params], dtype=torch.uint8)
    dist.all_reduce(used, op=dist.ReduceOp.MAX, group=d.control)
    params = [p for p, u in zip(params, used.tolist()) if u]
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    grads = [p.grad for p in params]
    bucket, size = [], 0
    for i, g in enumerate(grads):
        bucket.append(g)
        size += g.numel() * g.element_size()
        if size >= bucket_bytes or i == len(grads) - 1 or grads[i + 1].dtype != g.dtype:
            flat = torch.cat([t.reshape(-1) for t in bucket])
            dist.all_reduce(flat)
            flat /= d.world
            parts = flat.split([t.numel() for t in bucket])
            torch._foreach_copy_(bucket, [f.view_as(t) for t, f in zip(bucket, parts)])
            bucket, size = [], 0


def all_reduce_sum(tensor: torch.Tensor, d: Dist) -> torch.Tensor:
    """In place, over all ranks (the evaluation's confusion matrix)."""
    if d.world > 1:
        dist.all_reduce(tensor)
    return tensor


def mean_over_ranks(logs: dict, d: Dist) -> dict:
    """The step's logged scalars averaged over the ranks (one collective; as mmseg logs them)."""
    if d.world == 1 or not logs:
        return logs
    values = torch.stack([v.detach().float().reshape(()) for v in logs.values()])
    dist.all_reduce(values)
    return dict(zip(logs, values / d.world))


def any_rank(flag: bool, d: Dist) -> bool:
    """True on every rank when ``flag`` is True on any (host-side, on the control group)."""
    if d.world == 1:
        return flag
    t = torch.tensor([int(flag)])
    dist.all_reduce(t, op=dist.ReduceOp.MAX, group=d.control)
    return bool(t.item())


def gather(obj, d: Dist) -> list:
    """``obj`` of every rank, in rank order, on every rank (pickled, on the control group)."""
    if d.world == 1:
        return [obj]
    out = [None] * d.world
    dist.all_gather_object(out, obj, group=d.control)
    return out


def barrier(d: Dist) -> None:
    if d.world > 1:
        dist.barrier(group=d.control)


# ---------------------------------------------------------------- stopping


class StopSignals:
    """SIGINT / SIGTERM set ``requested`` (the loop checkpoints and returns); a second
    SIGINT interrupts at once. A context manager; handlers are restored on exit."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.requested: str | None = None
        self._previous = {}

    def _handle(self, signum, frame):
        if self.requested == "SIGINT" and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = signal.Signals(signum).name

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():  # handlers can only be set there
            for s in self.SIGNALS:
                self._previous[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc):
        for s, h in self._previous.items():
            signal.signal(s, h)
        return False
