"""fastuda.ops.pseudo_label: reference vs the published DACS code, Triton vs reference,
registration (opcheck), torch.compile, and input validation."""

import numpy as np
import pytest
import torch

import fastuda.ops as ops
from fastuda.ops import _backend, reference

from _util import ODD_SHAPES, channels_last_view, make_logits

THRESHOLD = 0.968


def published_pseudo_label(logits, threshold, ignore_top, ignore_bottom):
    """Transcribed from DAFormer's mmseg/models/uda/dacs.py (train step), host sync included."""
    ema_softmax = torch.softmax(logits.detach().double(), dim=1)
    pseudo_prob, pseudo_label = torch.max(ema_softmax, dim=1)
    ps_large_p = pseudo_prob.ge(threshold).long() == 1
    ps_size = np.size(pseudo_label.cpu().numpy())
    pseudo_weight = torch.sum(ps_large_p).item() / ps_size
    pseudo_weight = pseudo_weight * torch.ones(pseudo_prob.shape)
    if ignore_top > 0:
        pseudo_weight[:, :ignore_top, :] = 0
    if ignore_bottom > 0:
        pseudo_weight[:, -ignore_bottom:, :] = 0
    return pseudo_label, pseudo_weight, pseudo_prob


def borderline_slack(logits, threshold, per_image):
    """How far the weight may move when float rounding flips pixels whose max
    probability lies within 1e-5 of the threshold (fp64 softmax)."""
    conf = torch.softmax(logits.double().cpu(), dim=1).amax(1)
    near = ((conf - threshold).abs() < 1e-5).float()
    B, H, W = conf.shape
    return (near.flatten(1).sum(1) / (H * W)).max().item() if per_image else near.sum().item() / (B * H * W)


def assert_pseudo_label_close(got, want, logits, threshold, per_image):
    label, weight = got
    want_label, want_weight = want
    assert label.dtype == torch.int64 and weight.dtype == torch.float32
    torch.testing.assert_close(label.cpu(), want_label.cpu(), rtol=0, atol=0)
    atol = borderline_slack(logits, threshold, per_image) + 1e-6
    torch.testing.assert_close(weight.cpu(), want_weight.cpu().float(), rtol=1e-5, atol=atol)


# ----------------------------------------------------------------------------- tier 1: CPU


@pytest.mark.parametrize("shape", ODD_SHAPES)
def test_reference_matches_published(shape):
    logits = make_logits(shape)
    H = shape[2]
    top, bottom = min(2, H), min(3, H)
    label, weight = reference.pseudo_label(logits, THRESHOLD, top, bottom, "batch", None)
    pub_label, pub_weight, _ = published_pseudo_label(logits, THRESHOLD, top, bottom)
    assert_pseudo_label_close((label, weight), (pub_label, pub_weight), logits, THRESHOLD, False)
    # The published weight is one value for the batch, on low-confidence pixels too.
    kept = weight[:, top : H - bottom]
    if kept.numel():
        assert torch.all(kept == kept.flatten()[0])


def test_reference_image_mode_is_per_image_fraction():
    logits = make_logits((4, 19, 21, 31))
    logits[0] *= 0.1  # a flat image: few confident pixels
    _, weight = reference.pseudo_label(logits, THRESHOLD, 0, 0, "image", None)
    conf = torch.softmax(logits.double(), 1).amax(1)
    want = (conf >= THRESHOLD).double().flatten(1).mean(1)
    torch.testing.assert_close(weight[:, 0, 0].double(), want, atol=1e-6, rtol=0)
    assert weight[0, 0, 0] < weight[1, 0, 0]
    assert torch.all(weight == weight[:, :1, :1])


@pytest.mark.parametrize("mask_dtype", [torch.bool, torch.uint8, torch.float32])
def test_valid_mask_multiplies_weight(mask_dtype):
    logits = make_logits((2, 19, 16, 24))
    # HRDA's valid_pseudo_mask: a border of invalid pixels (30/240/30/30 at 2048x1024, scaled).
    valid = torch.zeros(2, 16, 24)
    valid[:, 1:12, 1:23] = 1
    label, weight = ops.pseudo_label(logits, valid_mask=valid.to(mask_dtype))
    _, plain = ops.pseudo_label(logits)
    torch.testing.assert_close(weight, plain * valid)
    # The count that sets the weight covers every pixel, masked or not (as published).
    assert plain[0, 0, 0] == reference.pseudo_label(logits, THRESHOLD, 0, 0, "batch", None)[1][0, 0, 0]


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_logits_are_read_in_fp32(dtype):
    logits = make_logits((2, 19, 9, 13), dtype)
    got = ops.pseudo_label(logits, ignore_top=1)
    want = published_pseudo_label(logits.float(), THRESHOLD, 1, 0)[:2]
    assert_pseudo_label_close(got, want, logits.float(), THRESHOLD, False)


@pytest.mark.parametrize(
    "backend", ["auto", pytest.param("triton", marks=pytest.mark.interpreter), pytest.param("cuda", marks=pytest.mark.cuda)]
)
def test_threshold_one_and_ties(backend):
    logits = torch.zeros(1, 4, 3, 5)  # all tied: argmax is the first index, conf 0.25
    logits[0, 3, 0, 2] = logits[0, 1, 0, 2] = 1.0  # tied maxima not at index 0
    logits[0, 2, 1, 1] = 50.0  # one certain pixel: conf rounds to exactly 1.0
    if backend == "cuda":
        logits, backend = logits.cuda(), "auto"
    with ops.use_backend(backend):
        label, weight = ops.pseudo_label(logits, threshold=1.0)
    label, weight = label.cpu(), weight.cpu()
    assert label[0, 0, 2] == 1
    assert label[0, 0, 0] == 0 and label[0, 1, 1] == 2
    torch.testing.assert_close(weight, torch.full_like(weight, 1 / 15))


def test_does_not_track_gradients():
    logits = make_logits((2, 5, 4, 6)).requires_grad_()
    label, weight = ops.pseudo_label(logits)
    assert not label.requires_grad and not weight.requires_grad


def test_empty_batch():
    label, weight = ops.pseudo_label(torch.randn(0, 19, 8, 8))
    assert label.shape == (0, 8, 8) and weight.shape == (0, 8, 8)


def test_opcheck():
    logits = make_logits((2, 19, 7, 11))
    valid = torch.rand(2, 7, 11) > 0.2
    for args in [
        (logits, 0.968, 1, 2, "batch", None),
        (channels_last_view(logits), 0.5, 0, 3, "image", valid),
        (logits.half(), 0.9, 0, 0, "batch", valid.float()),
    ]:
        torch.library.opcheck(torch.ops.fastuda.pseudo_label.default, args)


def test_compile_fullgraph_dynamic_shapes():
    def step(logits, valid):
        return ops.pseudo_label(logits, 0.968, 2, 3, "batch", valid)

    compiled = torch.compile(step, fullgraph=True, dynamic=True)
    for shape in [(2, 19, 12, 20), (3, 19, 17, 9)]:
        logits = make_logits(shape)
        valid = torch.rand(shape[0], shape[2], shape[3]) > 0.1
        got = compiled(logits, valid)
        want = reference.pseudo_label(logits, 0.968, 2, 3, "batch", valid)
        torch.testing.assert_close(got[0], want[0])
        torch.testing.assert_close(got[1], want[1])


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(logits=torch.randn(19, 8, 8)), ValueError, r"logits must have shape \(B, C, H, W\)"),
        (dict(logits=torch.randint(0, 5, (1, 19, 8, 8))), TypeError, "logits must have dtype"),
        (dict(logits=[[1.0]]), TypeError, "logits must be a torch.Tensor"),
        (dict(logits=torch.randn(1, 0, 8, 8)), ValueError, "at least one class"),
        (dict(threshold=0.0), ValueError, r"threshold must be in \(0, 1\]"),
        (dict(threshold=1.5), ValueError, r"threshold must be in \(0, 1\]"),
        (dict(threshold="high"), TypeError, "threshold must be a float"),
        (dict(ignore_top=9), ValueError, r"ignore_top must be in \[0, 8\]"),
        (dict(ignore_bottom=-1), ValueError, r"ignore_bottom must be in \[0, 8\]"),
        (dict(ignore_top=1.5), TypeError, "ignore_top must be an int"),
        (dict(weight_mode="pixel"), ValueError, "weight_mode must be one of"),
        (dict(valid_mask=torch.ones(2, 8, 9)), ValueError, r"valid_mask must have shape \(B, H, W\) = \(2, 8, 8\)"),
        (dict(valid_mask=torch.ones(8, 8)), ValueError, r"valid_mask must have shape \(B, H, W\)"),
        (dict(valid_mask=torch.ones(2, 8, 8, dtype=torch.int64)), TypeError, "valid_mask must have dtype"),
        (dict(valid_mask=torch.ones(2, 8, 8, device="meta")), ValueError, "valid_mask must be on the same device"),
    ],
)
def test_bad_inputs(kwargs, error, match):
    args = dict(logits=torch.randn(2, 19, 8, 8))
    args.update(kwargs)
    with pytest.raises(error, match=match):
        ops.pseudo_label(**args)


def test_device_guard_targets_the_tensors_device():
    """Triton launches on the current device; the guard makes that the tensors' device."""
    from fastuda.ops._backend import device_guard

    guard = device_guard(torch.device("cuda", 1))  # constructing it does not touch CUDA
    assert isinstance(guard, torch.cuda.device) and guard.idx == 1
    with device_guard(torch.device("cpu")):
        pass


def record_launch_guard(monkeypatch, kernel_module, *launchers):
    """Patches the ops' device guard and ``kernel_module``'s launchers to log their order."""
    import contextlib

    events = []

    @contextlib.contextmanager
    def guard(device):
        events.append(("enter", device.type))
        yield
        events.append(("exit", device.type))

    def logged(name, real):
        def launch(*args, **kwargs):
            events.append(name)
            return real(*args, **kwargs)

        return launch

    monkeypatch.setattr(_backend, "device_guard", guard)
    for name in launchers:
        monkeypatch.setattr(kernel_module, name, logged(name, getattr(kernel_module, name)))
    return events


def test_workspace_under_graph_capture_is_fresh_and_not_kept(monkeypatch):
    """kernels/_pixels.zeroed_workspace under CUDA graph capture (faked on CPU through its
    _capturing check): each call returns a fresh zeroed buffer and the per-stream cache is left as
    it was (a cached one would have had its zero fill only recorded); outside capture, the cached
    buffer."""
    _pixels = pytest.importorskip("fastuda.kernels._pixels")
    cpu = torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_current_stream_capturing", lambda: True)
    assert _pixels._capturing(torch.device("cuda")) and not _pixels._capturing(cpu)
    cached = _pixels.zeroed_workspace(cpu, 8)
    assert _pixels.zeroed_workspace(cpu, 8) is cached
    kept = dict(_pixels._WORKSPACES)
    cached.fill_(7)  # a fresh buffer must not be this one, nor copy it
    try:
        monkeypatch.setattr(_pixels, "_capturing", lambda device: True)
        first, second = _pixels.zeroed_workspace(cpu, 8), _pixels.zeroed_workspace(cpu, 100)
    finally:
        cached.zero_()
    for buf, numel in [(first, 8), (second, 100)]:
        assert buf is not cached and buf.dtype == torch.int32 and buf.numel() >= numel
        assert not buf.any()
    assert first.data_ptr() != second.data_ptr()
    assert _pixels._WORKSPACES.keys() == kept.keys()
    assert all(_pixels._WORKSPACES[key] is buf for key, buf in kept.items())
    monkeypatch.undo()
    assert _pixels.zeroed_workspace(cpu, 8) is cached


# ----------------------------------------------------------------------------- tier 2: interpreter


@pytest.mark.interpreter
@pytest.mark.parametrize("shape", ODD_SHAPES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("weight_mode", ["batch", "image"])
def test_triton_matches_reference(shape, dtype, weight_mode):
    from fastuda.kernels.pseudo_label import pseudo_label_fwd

    B, C, H, W = shape
    logits = make_logits(shape, dtype)
    top, bottom = H // 5, H // 4
    valid = torch.rand(B, H, W) > 0.3
    out = (torch.full((B, H, W), -7, dtype=torch.int64), torch.full((B, H, W), float("nan")))
    got = pseudo_label_fwd(logits, THRESHOLD, top, bottom, weight_mode == "image", valid, out=out)
    assert got[0] is out[0] and got[1] is out[1]
    want = reference.pseudo_label(logits, THRESHOLD, top, bottom, weight_mode, valid)
    assert_pseudo_label_close(got, want, logits.float(), THRESHOLD, weight_mode == "image")


@pytest.mark.interpreter
@pytest.mark.parametrize("layout", ["channels_last", "sliced"])
def test_triton_strided_and_chunked(layout):
    """Non-contiguous logits (channel stride 1, or a strided pixel plane) and a C above 32."""
    from fastuda.kernels.pseudo_label import pseudo_label_fwd

    base = make_logits((2, 37, 11, 30))
    logits = channels_last_view(base) if layout == "channels_last" else base[:, :, :, ::3]
    got = pseudo_label_fwd(logits, 0.5, 1, 1, False, None)
    want = reference.pseudo_label(logits, 0.5, 1, 1, "batch", None)
    assert_pseudo_label_close(got, want, logits, 0.5, False)


@pytest.mark.interpreter
@pytest.mark.parametrize("weight_mode", ["batch", "image"])
def test_triton_one_launch_that_leaves_its_workspace_zeroed(monkeypatch, weight_mode):
    """One launch per call (the weight used to be a second one), bitwise the same on a repeated
    call, and its counters (kernels/_pixels.zeroed_workspace) zero again after each call."""
    import fastuda.kernels.pseudo_label as K
    from fastuda.kernels._pixels import zeroed_workspace

    kernels = [v for v in vars(K).values() if hasattr(v, "fn") and hasattr(type(v), "__getitem__")]
    launched = []
    getitem = type(kernels[0]).__getitem__

    def counting(self, grid):
        launched.append(grid)
        return getitem(self, grid)

    monkeypatch.setattr(type(kernels[0]), "__getitem__", counting)
    logits = make_logits((3, 7, 37, 41))  # 3 images x 2 label programs, writers across chunks
    valid = torch.rand(3, 37, 41) > 0.3
    per_image = weight_mode == "image"
    first = K.pseudo_label_fwd(logits, 0.5, 2, 3, per_image, valid)
    assert len(launched) == 1
    assert not zeroed_workspace(logits.device, 8).any()
    second = K.pseudo_label_fwd(logits, 0.5, 2, 3, per_image, valid)
    assert not zeroed_workspace(logits.device, 8).any()
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])
    want = reference.pseudo_label(logits, 0.5, 2, 3, weight_mode, valid)
    assert_pseudo_label_close(first, want, logits, 0.5, per_image)


@pytest.mark.interpreter
def test_triton_ties_take_the_first_class():
    """torch.argmax's tie rule through the streaming max: a later equal logit never wins."""
    from fastuda.kernels.pseudo_label import pseudo_label_fwd

    logits = make_logits((1, 20, 2, 3), scale=0.1)
    logits[0, 3, 0, 0] = logits[0, 12, 0, 0] = logits[0, 19, 0, 0] = 5.0
    logits[0, 12, 1, 2] = logits[0, 19, 1, 2] = 5.0
    logits[0, 0, 1, 0] = logits[0, 1, 1, 0] = 5.0
    label, _ = pseudo_label_fwd(logits, 0.5, 0, 0, False, None)
    assert label[0, 0, 0] == 3 and label[0, 1, 2] == 12 and label[0, 1, 0] == 0


@pytest.mark.interpreter
def test_triton_backend_dispatch(triton_cpu):
    logits = make_logits((2, 19, 9, 14))
    got = ops.pseudo_label(logits, ignore_top=2, weight_mode="image")
    want = reference.pseudo_label(logits, THRESHOLD, 2, 0, "image", None)
    assert_pseudo_label_close(got, want, logits, THRESHOLD, True)
    torch.library.opcheck(torch.ops.fastuda.pseudo_label.default, (logits, 0.9, 1, 1, "batch", None))


@pytest.mark.interpreter
def test_triton_launch_runs_under_the_device_guard(triton_cpu, monkeypatch):
    import fastuda.kernels.pseudo_label as K

    events = record_launch_guard(monkeypatch, K, "pseudo_label_fwd")
    ops.pseudo_label(make_logits((1, 5, 3, 4)))
    assert events == [("enter", "cpu"), "pseudo_label_fwd", ("exit", "cpu")]


# ----------------------------------------------------------------------------- tier 3: CUDA


@pytest.mark.cuda
@pytest.mark.parametrize("shape", [(2, 19, 512, 512), (2, 19, 1024, 1024), (3, 19, 37, 53), (1, 150, 64, 96)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("weight_mode", ["batch", "image"])
def test_cuda_matches_reference(shape, dtype, weight_mode):
    B, C, H, W = shape
    logits = make_logits(shape, dtype, device="cuda")
    valid = torch.rand(B, H, W, device="cuda") > 0.2
    got = ops.pseudo_label(logits, THRESHOLD, 15 % H, 120 % H, weight_mode, valid)
    want = reference.pseudo_label(logits, THRESHOLD, 15 % H, 120 % H, weight_mode, valid)
    assert_pseudo_label_close(got, want, logits.float(), THRESHOLD, weight_mode == "image")


@pytest.mark.cuda
def test_cuda_compile_and_opcheck():
    logits = make_logits((2, 19, 64, 80), torch.bfloat16, device="cuda")
    compiled = torch.compile(lambda x: ops.pseudo_label(x, ignore_top=15), fullgraph=True, dynamic=True)
    got = compiled(logits)
    want = reference.pseudo_label(logits, THRESHOLD, 15, 0, "batch", None)
    assert_pseudo_label_close(got, want, logits.float(), THRESHOLD, False)
    torch.library.opcheck(torch.ops.fastuda.pseudo_label.default, (logits, 0.968, 15, 3, "batch", None))


@pytest.mark.cuda
@pytest.mark.parametrize("weight_mode", ["batch", "image"])
def test_cuda_graph_capture_without_warmup(weight_mode):
    """The first call on a stream inside torch.cuda.graph, with no warmup on that stream: the
    captured call's counters (kernels/_pixels.zeroed_workspace) come from a buffer zeroed in the
    graph, not cached for the stream, so an eager call on the capture stream before any replay
    gets a really zeroed buffer (a cached one would hold whatever the graph's pool held: the
    writers would wait for ever or take the wrong count), and each replay matches eager."""
    from fastuda.kernels import _pixels

    logits = make_logits((2, 19, 64, 80), torch.bfloat16, device="cuda")
    valid = torch.rand(2, 64, 80, device="cuda") > 0.2
    args = (THRESHOLD, 15, 3, weight_mode, valid)
    # On the default stream, so the kernel compiles outside the capture; the capture stream has
    # seen no call.
    want = ops.pseudo_label(logits, *args)
    stream = torch.cuda.Stream()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph, stream=stream):
        got = ops.pseudo_label(logits, *args)
    assert (logits.device, stream.cuda_stream) not in _pixels._WORKSPACES
    with torch.cuda.stream(stream):
        before_replay = ops.pseudo_label(logits, *args)
    stream.synchronize()
    for _ in range(2):
        graph.replay()
        torch.cuda.synchronize()
        assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
    with torch.cuda.stream(stream):
        after_replay = ops.pseudo_label(logits, *args)
    stream.synchronize()
    for eager in (before_replay, after_replay):
        assert torch.equal(eager[0], want[0]) and torch.equal(eager[1], want[1])
    assert not _pixels.zeroed_workspace(logits.device, 8).any()
    oracle = reference.pseudo_label(logits, *args)
    assert_pseudo_label_close(want, oracle, logits.float(), THRESHOLD, weight_mode == "image")
