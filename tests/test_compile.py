"""``--compile``: the student's forward + loss and the teacher's forward trace whole
(zero graph breaks) for DAFormer and HRDA, and a compiled step computes what the eager
step computes. Inductor runs of the CLI demos are behind ``slow`` (minutes on 2 cores)."""

import pytest
import torch
import torch._dynamo

from fastuda import config
from fastuda.runtime.build import build_segmentor
from fastuda.runtime.compile import compile_student_teacher
from fastuda.uda import StepState, make_imnet_encoder, make_teacher, uda_step
from fastuda.uda.step import _detail_box, segmentation_loss, teacher_logits

_TINY = ["data.batch_size=2", "model.backbone=mit_demo", "model.num_classes=19", "model.pretrained=None",
         "uda.pseudo_ignore_top=2", "uda.pseudo_ignore_bottom=4", "uda.fd_classes=(4,5)"]  # fmt: skip
MODELS = {
    "daformer": ("daformer_gta2cs", ["data.synthetic_size=32"]),
    "hrda": ("hrda_gta2cs", ["data.synthetic_size=64", "hrda.hr_crop_size=32", "uda.mic_block_size=16"]),
}


def _setup(name: str):
    preset, extra = MODELS[name]
    cfg = config.load_config(preset, _TINY + extra, from_pretrained=False)  # random weights: FD on without a file
    torch.manual_seed(0)
    student = build_segmentor(cfg)
    S, K = cfg.data.synthetic_size, cfg.model.num_classes
    batch = {"source": {"image": torch.randn(2, 3, S, S), "label": torch.randint(0, K, (2, S, S))},
             "target": {"image": torch.randn(2, 3, S, S)}}  # fmt: skip
    return cfg, student, batch


def _breaks(explanation) -> str:
    return "; ".join(str(b.reason)[:200] for b in explanation.break_reasons)


@pytest.mark.parametrize("name", list(MODELS))
def test_forward_and_loss_have_no_graph_break(name):
    cfg, student, batch = _setup(name)
    img, lbl = batch["source"]["image"], batch["source"]["label"]
    weight = torch.rand(lbl.shape)
    box = _detail_box(student, img, torch.Generator().manual_seed(0))
    explanation = torch._dynamo.explain(segmentation_loss)(student, img, lbl, weight, box)
    assert explanation.graph_break_count == 0, _breaks(explanation)
    assert explanation.graph_count == 1


@pytest.mark.slow
@pytest.mark.parametrize("name", list(MODELS))
def test_teacher_forward_has_no_graph_break(name):
    cfg, student, batch = _setup(name)
    explanation = torch._dynamo.explain(teacher_logits)(make_teacher(student), batch["target"]["image"])
    assert explanation.graph_break_count == 0, _breaks(explanation)


def _run_step(name: str, fns):
    cfg, student, batch = _setup(name)
    teacher, imnet = make_teacher(student), make_imnet_encoder(student.backbone)
    generator = torch.Generator().manual_seed(0)
    for it in (0, 1):  # iteration 0 copies the student into the teacher; 1 is a real EMA step
        student.zero_grad(set_to_none=True)
        loss, logs = uda_step(StepState(student, teacher, generator, imnet, fns=fns), batch, cfg, it)
    return logs, {n: p.grad for n, p in student.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("name", ["daformer", pytest.param("hrda", marks=pytest.mark.slow)])
def test_compiled_step_matches_eager(name):
    """aot_eager traces forward and backward as Inductor would, with eager kernels: the
    same losses and gradients as the eager step, from the same generator state."""
    torch._dynamo.reset()
    want_logs, want_grads = _run_step(name, None)
    got_logs, got_grads = _run_step(name, compile_student_teacher("aot_eager"))
    assert got_logs.keys() == want_logs.keys() and got_grads.keys() == want_grads.keys()
    for k in want_logs:
        torch.testing.assert_close(got_logs[k], want_logs[k], rtol=1e-4, atol=1e-6, msg=k)
    for k in want_grads:
        torch.testing.assert_close(got_grads[k], want_grads[k], rtol=1e-3, atol=1e-6, msg=k)


def test_bad_backend_is_named():
    with pytest.raises(ValueError, match="compile backend must be one of"):
        compile_student_teacher("tensorrt")


@pytest.mark.slow
@pytest.mark.parametrize("extra", [[], ["hrda.enabled=true", "hrda.hr_crop_size=32"]], ids=["daformer", "hrda"])
def test_cli_demo_compiles_with_inductor_without_graph_breaks(extra, tmp_path, capsys):
    from fastuda import train

    torch._dynamo.reset()
    args = ["demo", "max_iters=2", "log_interval=1", "eval_interval=0", "data.eval_samples=2", *extra,
            "--out", str(tmp_path), "--no-progress", "--compile"]  # fmt: skip
    assert train.main(args) == 0
    assert "torch.compile (inductor): 0 graph breaks" in capsys.readouterr().out
