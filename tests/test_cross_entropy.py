"""fastuda.ops.weighted_cross_entropy: reference vs the published mmseg loss, Triton vs
reference (forward and backward), gradcheck, opcheck, torch.compile, input validation."""

import pytest
import torch
import torch.nn.functional as F

import fastuda.ops as ops
from fastuda.ops import reference

from _util import ODD_SHAPES, channels_last_view, check_sm90_records, compile_for_sm90, make_logits, make_target


def published_loss(logits, target, weight, ignore_index=255):
    """mmseg/models/losses/cross_entropy_loss.py as DAFormer calls it: per-pixel CE with
    ignore_index, times the pixel weight, then .mean() over ALL pixels."""
    loss = F.cross_entropy(logits, target, reduction="none", ignore_index=ignore_index)
    if weight is not None:
        loss = loss * weight
    return loss.mean()


def make_case(shape, dtype=torch.float32, device="cpu", with_weight=True, ignore_index=255):
    B, C, H, W = shape
    logits = make_logits(shape, dtype, device=device, scale=2.0)
    target = make_target((B, H, W), C, ignore_index, device=device)
    weight = torch.rand(B, H, W, device=device) if with_weight else None
    return logits, target, weight


def grads_of(fn, logits, *args):
    x = logits.detach().clone().requires_grad_()
    loss = fn(x, *args)
    loss.backward()
    return loss.detach(), x.grad


# ----------------------------------------------------------------------------- tier 1: CPU


@pytest.mark.parametrize("shape", ODD_SHAPES)
@pytest.mark.parametrize("with_weight", [True, False])
def test_reference_matches_published(shape, with_weight):
    logits, target, weight = make_case(shape, torch.float64, with_weight=with_weight)
    want, want_grad = grads_of(published_loss, logits, target, weight)
    got, got_grad = grads_of(reference.weighted_cross_entropy, logits, target, weight, 255)
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(got_grad, want_grad)
    explicit = reference.weighted_cross_entropy_backward(torch.tensor(1.0, dtype=torch.float64), logits, target, weight, 255)
    torch.testing.assert_close(explicit, want_grad)


def test_ignored_pixels_count_in_the_denominator():
    logits, target, _ = make_case((2, 5, 4, 6), with_weight=False)
    target[0] = 255  # half of the pixels ignored
    loss = ops.weighted_cross_entropy(logits, target)
    ce = F.cross_entropy(logits[1:], target[1:], reduction="sum", ignore_index=255)
    torch.testing.assert_close(loss, ce / target.numel())


@pytest.mark.parametrize("shape", ODD_SHAPES[:3])
def test_op_gradcheck_float64(shape):
    """The op's own backward (not autograd through the reference) against finite differences."""
    B, C, H, W = shape
    logits, target, weight = make_case((min(B, 2), min(C, 5), min(H, 4), min(W, 5)), torch.float64)
    x = logits.requires_grad_()
    assert torch.autograd.gradcheck(lambda x: ops.weighted_cross_entropy(x, target, weight), (x,))
    assert torch.autograd.gradcheck(lambda x: reference.weighted_cross_entropy(x, target, weight, 255), (x,))


def test_gradient_reaches_logits_only():
    logits, target, weight = make_case((2, 5, 3, 4))
    weight.requires_grad_()
    x = logits.requires_grad_()
    ops.weighted_cross_entropy(x, target, weight).backward()
    assert x.grad is not None and weight.grad is None


def test_empty_batch_is_nan_like_mean():
    loss = ops.weighted_cross_entropy(torch.randn(0, 19, 4, 4), torch.zeros(0, 4, 4, dtype=torch.int64))
    assert torch.isnan(loss)


def test_bad_labels_give_nan_when_value_checks_are_off():
    logits, target, weight = make_case((2, 5, 3, 4))
    target[1, 2, 3] = 7
    ops.set_value_checks("off")
    assert torch.isnan(ops.weighted_cross_entropy(logits, target, weight))


def test_opcheck():
    logits, target, weight = make_case((2, 19, 7, 11))
    for args in [
        (logits.requires_grad_(), target, weight, 255),
        (channels_last_view(logits).detach().requires_grad_(), target, None, 255),
        (logits.detach().half().requires_grad_(), target.transpose(1, 2).contiguous().transpose(1, 2), weight, 255),
    ]:
        torch.library.opcheck(torch.ops.fastuda.weighted_cross_entropy.default, args)
    grad = torch.tensor(0.7)
    torch.library.opcheck(
        torch.ops.fastuda.weighted_cross_entropy_backward.default, (grad, logits.detach(), target, weight, 255)
    )


def test_compile_fullgraph_dynamic_shapes_with_backward():
    def loss_fn(x, target, weight):
        return ops.weighted_cross_entropy(x, target, weight, ignore_index=255)

    compiled = torch.compile(loss_fn, fullgraph=True, dynamic=True)
    for shape in [(2, 19, 12, 20), (3, 19, 7, 9)]:
        logits, target, weight = make_case(shape)
        got, got_grad = grads_of(compiled, logits, target, weight)
        want, want_grad = grads_of(published_loss, logits, target, weight)
        torch.testing.assert_close(got, want)
        torch.testing.assert_close(got_grad, want_grad)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(logits=torch.randn(19, 8, 8)), ValueError, r"logits must have shape \(B, C, H, W\)"),
        (dict(logits=torch.randn(2, 19, 8, 8).long()), TypeError, "logits must have dtype"),
        (dict(logits=torch.randn(2, 0, 8, 8)), ValueError, "at least one class"),
        (dict(target=torch.zeros(2, 8, 8, dtype=torch.int32)), TypeError, "target must have dtype in \\(int64\\)"),
        (dict(target=torch.zeros(2, 8, dtype=torch.int64)), ValueError, r"target must have shape \(B, H, W\)"),
        (dict(target=torch.zeros(3, 8, 8, dtype=torch.int64)), ValueError, r"target must have shape \(B, H, W\) = \(2, 8, 8\)"),
        (dict(target=torch.zeros(2, 8, 7, dtype=torch.int64)), ValueError, "to match logits"),
        (dict(target=torch.full((2, 8, 8), 19)), ValueError, r"target must hold class indices in \[0, 19\).*found \[19\]"),
        (dict(target=torch.full((2, 8, 8), -1)), ValueError, r"found \[-1\]"),
        (dict(target=torch.zeros(2, 8, 8, dtype=torch.int64, device="meta")), ValueError, "target must be on the same device"),
        (dict(weight=torch.rand(2, 9, 8)), ValueError, r"weight must have shape \(B, H, W\)"),
        (dict(weight=torch.ones(2, 8, 8, dtype=torch.int64)), TypeError, "weight must have dtype"),
        (dict(ignore_index=255.0), TypeError, "ignore_index must be an int"),
    ],
)
def test_bad_inputs(kwargs, error, match):
    args = dict(logits=torch.randn(2, 19, 8, 8), target=torch.zeros(2, 8, 8, dtype=torch.int64), weight=None)
    args.update(kwargs)
    with pytest.raises(error, match=match):
        ops.weighted_cross_entropy(**args)


# ----------------------------------------------------------------------------- tier 2: interpreter


@pytest.mark.interpreter
@pytest.mark.parametrize("shape", ODD_SHAPES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("with_weight", [True, False])
def test_triton_matches_reference(shape, dtype, with_weight):
    from fastuda.kernels.cross_entropy import cross_entropy_bwd, cross_entropy_fwd

    logits, target, weight = make_case(shape, dtype, with_weight=with_weight)
    grad_loss = torch.rand(()) + 0.5
    loss = cross_entropy_fwd(logits, target, weight, 255)
    grad = cross_entropy_bwd(grad_loss, logits, target, weight, 255, out=torch.full_like(logits, float("nan")))
    want = reference.weighted_cross_entropy(logits, target, weight, 255)
    want_grad = reference.weighted_cross_entropy_backward(grad_loss, logits, target, weight, 255)
    # Both read the same (possibly fp16) logits and compute in fp32.
    torch.testing.assert_close(loss, want, rtol=1e-5, atol=1e-6)
    assert grad.dtype == dtype and grad.is_contiguous()
    tol = dict(rtol=1e-5, atol=1e-8) if dtype == torch.float32 else dict(rtol=2e-3, atol=1e-7)
    torch.testing.assert_close(grad, want_grad, **tol)


@pytest.mark.interpreter
@pytest.mark.parametrize("layout", ["channels_last", "sliced"])
def test_triton_strided_and_chunked(layout):
    """Strided logits / target / weight; C = 37 takes the two-pass backward, and the in-register
    backward is forced up to C = 37 too."""
    from fastuda.kernels.cross_entropy import cross_entropy_bwd, cross_entropy_fwd

    logits, target, weight = make_case((2, 37, 11, 30))
    if layout == "channels_last":
        logits = channels_last_view(logits)
        weight = weight.transpose(1, 2).contiguous().transpose(1, 2)
    else:
        logits, target, weight = logits[..., ::3], target[..., ::3], weight[..., ::3]
    grad_loss = torch.tensor(1.3)
    want = reference.weighted_cross_entropy(logits, target, weight, 255)
    want_grad = reference.weighted_cross_entropy_backward(grad_loss, logits, target, weight, 255)
    torch.testing.assert_close(cross_entropy_fwd(logits, target, weight, 255), want)
    for max_register_c in (32, 64):
        got_grad = cross_entropy_bwd(grad_loss, logits, target, weight, 255, max_register_c=max_register_c)
        torch.testing.assert_close(got_grad, want_grad)


@pytest.mark.interpreter
def test_triton_gradcheck_float64(triton_cpu):
    """Finite differences through the Triton forward and backward kernels (float64 accumulation)."""
    logits, target, weight = make_case((2, 5, 3, 4), torch.float64)
    target[0, 0, 0] = 255
    x = logits.requires_grad_()
    assert torch.autograd.gradcheck(lambda x: ops.weighted_cross_entropy(x, target, weight), (x,))


@pytest.mark.interpreter
def test_triton_backend_dispatch_and_bad_labels(triton_cpu):
    logits, target, weight = make_case((2, 19, 6, 7))
    got, got_grad = grads_of(ops.weighted_cross_entropy, logits, target, weight)
    want, want_grad = grads_of(published_loss, logits, target, weight)
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(got_grad, want_grad)
    torch.library.opcheck(torch.ops.fastuda.weighted_cross_entropy.default, (logits.requires_grad_(), target, weight, 255))
    ops.set_value_checks("off")
    target[0, 1, 1] = 19
    bad, bad_grad = grads_of(ops.weighted_cross_entropy, logits, target, weight)
    assert torch.isnan(bad) and torch.isnan(bad_grad[0, :, 1, 1]).all()
    assert torch.isfinite(bad_grad[1]).all()


@pytest.mark.interpreter
def test_triton_launches_run_under_the_device_guard(triton_cpu, monkeypatch):
    import fastuda.kernels.cross_entropy as K

    from test_pseudo_label import record_launch_guard

    events = record_launch_guard(monkeypatch, K, "cross_entropy_fwd", "cross_entropy_bwd")
    logits, target, weight = make_case((1, 5, 3, 4))
    grads_of(ops.weighted_cross_entropy, logits, target, weight)
    fwd, bwd = events[:3], events[3:]
    assert fwd == [("enter", "cpu"), "cross_entropy_fwd", ("exit", "cpu")]
    assert bwd == [("enter", "cpu"), "cross_entropy_bwd", ("exit", "cpu")]


# ----------------------------------------------------------------------------- tier 3: CUDA


@pytest.mark.cuda
@pytest.mark.parametrize("shape", [(2, 19, 512, 512), (2, 19, 1024, 1024), (3, 19, 37, 53), (1, 150, 64, 96)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_cuda_matches_reference(shape, dtype):
    """Error vs a float64 oracle within 2x PyTorch's own error in that dtype (+ small atol)."""
    logits, target, weight = make_case(shape, dtype, device="cuda")
    exact, exact_grad = grads_of(published_loss, logits.double(), target, weight.double())
    got, got_grad = grads_of(ops.weighted_cross_entropy, logits, target, weight)
    torch_loss, torch_grad = grads_of(published_loss, logits, target, weight.to(dtype))
    assert got.dtype == torch.float32 and got_grad.dtype == dtype
    loss_err = (got.double() - exact).abs().item()
    torch_loss_err = (torch_loss.double() - exact).abs().item()
    assert loss_err <= 2 * torch_loss_err + 1e-5 * exact.abs().item() + 1e-6
    grad_err = (got_grad.double() - exact_grad).abs().max().item()
    torch_grad_err = (torch_grad.double() - exact_grad).abs().max().item()
    assert grad_err <= 2 * torch_grad_err + 1e-3 * exact_grad.abs().max().item()


@pytest.mark.cuda
def test_cuda_compile_and_opcheck():
    logits, target, weight = make_case((2, 19, 64, 80), torch.bfloat16, device="cuda")
    compiled = torch.compile(lambda x, t, w: ops.weighted_cross_entropy(x, t, w), fullgraph=True, dynamic=True)
    got, got_grad = grads_of(compiled, logits, target, weight)
    want, want_grad = grads_of(reference.weighted_cross_entropy, logits, target, weight, 255)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(got_grad, want_grad, rtol=2e-2, atol=1e-6)
    torch.library.opcheck(torch.ops.fastuda.weighted_cross_entropy.default, (logits.requires_grad_(), target, weight, 255))


@pytest.mark.skipif(torch.cuda.is_available(), reason="the CUDA tier compiles and runs the kernels for real")
def test_loss_kernels_compile_for_sm90_without_gpu():
    """pseudo_label and cross-entropy kernels (fp32 / fp16 / bf16, one and several channel
    chunks, strided logits) compile for Hopper with no register spills; the interpreter cannot
    check this."""
    records = compile_for_sm90("loss")
    check_sm90_records(records)
    assert {r["kernel"] for r in records} == {
        "_pseudo_label_kernel", "_cross_entropy_fwd_kernel", "_cross_entropy_bwd_kernel",
    }  # fmt: skip
