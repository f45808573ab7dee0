"""One full UDA training iteration (EMA update, source loss + FD, teacher pseudo-labels,
ClassMix, strong augmentation, mixed loss, optimiser step), fused vs reference ops.

GPU: ``daformer_gta2cs`` at its 512 crop and ``hrda_gta2cs`` at its 1024 crop,
MiT-B5, batch 2 + 2, bf16 autocast; peak memory in ``extra_info``. CPU: the
same code path with a tiny network at 64 px (the path, not a speed claim).
"""

import pytest
import torch

import fastuda.ops
from fastuda import config
from fastuda.runtime.build import build_segmentor
from fastuda.runtime.compile import compile_student_teacher
from fastuda.uda import StepState, build_optimizer, make_imnet_encoder, make_teacher, uda_step

from conftest import CUDA, DEVICE

CASES = {
    "daformer_gta2cs": ["data.crop_size=(512,512)"] if CUDA else ["data.crop_size=(64,64)"],
    "hrda_gta2cs": ["data.crop_size=(1024,1024)"] if CUDA else ["data.crop_size=(128,128)", "hrda.hr_crop_size=64"],
}
TINY = [] if CUDA else ["model.backbone=mit_demo", "model.num_classes=19", "uda.pseudo_ignore_top=2",
                        "uda.pseudo_ignore_bottom=8"]  # fmt: skip


def setup(preset: str, provider: str, compile_backend: str = "inductor"):
    """Returns (fn, info): one training iteration of ``preset`` with random data. Providers:
    ``fastuda`` (fused ops), ``reference`` (fastuda.ops.reference), ``fastuda+compile``
    (fused ops, the student's forward + loss and the teacher's forward compiled)."""
    if config.preset(preset).hrda.enabled:
        pytest.importorskip("fastuda.models.hrda")
    # random weights: the step is timed, not trained (from_pretrained=False lets FD run without a file)
    cfg = config.load_config(preset, CASES[preset] + TINY + ["model.pretrained=None"], from_pretrained=False)
    torch.manual_seed(0)
    student = build_segmentor(cfg).to(DEVICE)
    teacher, imnet = make_teacher(student), make_imnet_encoder(student.backbone)
    optimizer = build_optimizer(student, cfg.optim)
    h, w = cfg.data.crop_size
    K = cfg.model.num_classes
    label = torch.randint(0, K, (2, h // 32, w // 32), device=DEVICE)
    label = label.repeat_interleave(32, 1).repeat_interleave(32, 2)  # blocky, like real layouts
    batch = {"source": {"image": torch.randn(2, 3, h, w, device=DEVICE), "label": label},
             "target": {"image": torch.randn(2, 3, h, w, device=DEVICE)}}  # fmt: skip
    generator = torch.Generator(DEVICE).manual_seed(0)
    backend = "reference" if provider == "reference" else "auto"
    fns = compile_student_teacher(compile_backend) if provider.endswith("+compile") else None
    dtype = torch.bfloat16 if CUDA else None
    iteration = [1]
    state = StepState(student, teacher, generator, imnet, autocast_dtype=dtype, fns=fns)

    def step():
        with fastuda.ops.use_backend(backend):
            optimizer.zero_grad(set_to_none=True)
            uda_step(state, batch, cfg, iteration[0])
            optimizer.step()
        iteration[0] += 1

    return step, dict(preset=preset, backbone=cfg.model.backbone, crop=f"{h}x{w}", batch="2+2")


# compiled on GPU only: Inductor takes minutes on a CPU
@pytest.mark.parametrize("provider", ["fastuda", "reference"] + (["fastuda+compile"] if CUDA else []))
@pytest.mark.parametrize("preset", list(CASES))
def test_uda_step(benchmark, measure, preset, provider):
    fn, info = setup(preset, provider)
    benchmark.group = f"uda_step {preset} {info['backbone']} {info['crop']} B=2+2"
    measure(fn, 0, rounds=10 if CUDA else 3, provider=provider, **info)
