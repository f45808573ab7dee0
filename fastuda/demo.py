"""Foundation demo: DACS self-training loss on synthetic two-domain scenes.

The full UDA demo (``python -m fastuda.train demo``: MiT, ClassMix, EMA
teacher, source-only vs DAFormer-style UDA) arrives with the training issue.
Until then this runs the part that exists, end to end and on CPU in well under
a minute:

1. Synthetic scenes: Voronoi layouts of ``num_classes`` classes, rendered in a
   source palette and in a shifted, noisier, lower-contrast target palette.
2. A small conv net trained on labelled source scenes with
   ``fastuda.ops.weighted_cross_entropy`` (source-only).
3. The same net adapted by self-training: an EMA teacher labels target scenes
   with ``fastuda.ops.pseudo_label`` (confidence-weighted, threshold 0.968),
   and the student learns from source + weighted pseudo-labels.
4. Target-domain mIoU of both, and a check that the Triton kernels (GPU, or
   Triton's interpreter on CPU) match the reference on one batch.

    python -m fastuda.demo [--steps 300] [--seed 0]
"""

import argparse
import os
import time

import torch

if not torch.cuda.is_available():
    # Lets step 4 run the Triton kernels on CPU; the training itself uses the
    # reference path on CPU and never touches the interpreter.
    os.environ.setdefault("TRITON_INTERPRET", "1")

import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

import fastuda.ops as ops  # noqa: E402

NUM_CLASSES = 5
SIZE = 48


def make_scenes(n: int, domain: str, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(images (n, 3, SIZE, SIZE), labels (n, SIZE, SIZE)): nearest-seed layouts, one palette per domain."""
    seeds = torch.rand(n, 12, 2, generator=generator) * SIZE  # (n, K, 2)
    seed_class = torch.randint(0, NUM_CLASSES, (n, 12), generator=generator)
    ys, xs = torch.meshgrid(torch.arange(SIZE), torch.arange(SIZE), indexing="ij")
    grid = torch.stack([ys, xs], -1).reshape(1, -1, 1, 2).float()  # (1, P, 1, 2)
    nearest = (grid - seeds[:, None]).pow(2).sum(-1).argmin(-1)  # (n, P)
    labels = seed_class.gather(1, nearest).reshape(n, SIZE, SIZE)
    palette = torch.tensor(
        [[0.2, 0.2, 0.2], [0.8, 0.3, 0.3], [0.3, 0.7, 0.3], [0.3, 0.3, 0.8], [0.8, 0.8, 0.3]]
    )  # (NUM_CLASSES, 3) source colours
    noise = 0.12
    if domain == "target":  # another camera: lower contrast, colour cast, more noise
        palette = 0.55 * palette + torch.tensor([0.25, 0.2, 0.1])
        noise = 0.16
    images = palette[labels].permute(0, 3, 1, 2)  # (n, 3, SIZE, SIZE)
    images = images + noise * torch.randn(images.shape, generator=generator)
    return images, labels


class TinySegNet(nn.Module):
    def __init__(self, num_classes: int = NUM_CLASSES, width: int = 24):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, width, 3, padding=1),
            nn.BatchNorm2d(width),
            nn.ReLU(),
            nn.Conv2d(width, width, 3, padding=1),
            nn.BatchNorm2d(width),
            nn.ReLU(),
            nn.Conv2d(width, num_classes, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def miou(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
    model.eval()
    with torch.no_grad():
        pred = model(images).argmax(1)
    model.train()
    ious = []
    for c in range(NUM_CLASSES):
        inter = ((pred == c) & (labels == c)).sum().item()
        union = ((pred == c) | (labels == c)).sum().item()
        if union:
            ious.append(inter / union)
    return 100.0 * sum(ious) / len(ious)


@torch.no_grad()
def ema_update(teacher: nn.Module, student: nn.Module, step: int, alpha: float = 0.99) -> None:
    """DACS EMA: alpha_t = min(1 - 1/(t+1), alpha) over parameters only."""
    a = min(1.0 - 1.0 / (step + 1), alpha)
    for t, s in zip(teacher.parameters(), student.parameters()):
        t.lerp_(s, 1.0 - a)


def train(adapt: bool, steps: int, data: dict, seed: int) -> tuple[nn.Module, list[float]]:
    torch.manual_seed(seed)
    student = TinySegNet()
    teacher = TinySegNet()
    teacher.load_state_dict(student.state_dict())
    opt = torch.optim.Adam(student.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(seed + 1)
    weights = []
    for step in range(steps):
        i = torch.randint(0, data["src_x"].shape[0], (8,), generator=gen)
        loss = ops.weighted_cross_entropy(student(data["src_x"][i]), data["src_y"][i])
        if adapt and step >= steps // 3:  # self-training after a source warm-up
            ema_update(teacher, student, step)
            j = torch.randint(0, data["tgt_x"].shape[0], (8,), generator=gen)
            with torch.no_grad():
                label, weight = ops.pseudo_label(teacher(data["tgt_x"][j]), threshold=0.968)
            loss = loss + ops.weighted_cross_entropy(student(data["tgt_x"][j]), label, weight)
            weights.append(weight[0, 0, 0].item())
        else:
            teacher.load_state_dict(student.state_dict())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return student, weights


def check_kernels(device: str) -> tuple[float, float, float]:
    """Max |Triton - reference| for pseudo_label weight, CE loss and CE gradient on one batch."""
    from fastuda.ops import reference

    logits = (torch.randn(2, 19, 37, 53, device=device) * 4).requires_grad_()
    target = torch.randint(0, 19, (2, 37, 53), device=device)
    with ops.use_backend("triton"):
        label, weight = ops.pseudo_label(logits, ignore_top=3)
        loss = ops.weighted_cross_entropy(logits, target, weight)
        (grad,) = torch.autograd.grad(loss, logits)
    ref_label, ref_weight = reference.pseudo_label(logits.detach(), 0.968, 3, 0, "batch", None)
    ref_loss = reference.weighted_cross_entropy(logits.detach(), target, ref_weight, 255)
    ref_grad = reference.weighted_cross_entropy_backward(torch.ones((), device=device), logits.detach(), target, ref_weight, 255)
    assert torch.equal(label, ref_label)
    return (
        (weight - ref_weight).abs().max().item(),
        (loss - ref_loss).abs().item(),
        (grad - ref_grad).abs().max().item(),
    )


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description="fastuda foundation demo (self-training loss on synthetic scenes)")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    print("fastuda foundation demo: DACS self-training loss on synthetic scenes.")
    print("(The full UDA demo with MiT, ClassMix and EMA teacher comes with `python -m fastuda.train demo`.)\n")

    gen = torch.Generator().manual_seed(args.seed)
    src_x, src_y = make_scenes(64, "source", gen)
    tgt_x, tgt_y = make_scenes(64, "target", gen)
    val_x, val_y = make_scenes(32, "target", gen)
    data = dict(src_x=src_x, src_y=src_y, tgt_x=tgt_x)

    start = time.perf_counter()
    source_only, _ = train(False, args.steps, data, args.seed)
    adapted, weights = train(True, args.steps, data, args.seed)
    seconds = time.perf_counter() - start
    print(f"{'model':<28}{'target mIoU (%)':>16}")
    print(f"{'source-only':<28}{miou(source_only, val_x, val_y):>16.1f}")
    print(f"{'self-training (pseudo_label)':<28}{miou(adapted, val_x, val_y):>16.1f}")
    print(f"pseudo-label weight: {weights[0]:.3f} at the start of self-training, {weights[-1]:.3f} at the end")
    print(f"({2 * args.steps} training steps on {ops.get_backend()}/cpu in {seconds:.1f} s)\n")

    device = "cuda" if torch.cuda.is_available() else "cpu"
    where = "GPU" if device == "cuda" else "CPU through Triton's interpreter"
    dw, dl, dg = check_kernels(device)
    print(f"Triton kernels vs reference ({where}): labels equal, max |diff| weight {dw:.1e}, loss {dl:.1e}, grad {dg:.1e}")


if __name__ == "__main__":
    main()
