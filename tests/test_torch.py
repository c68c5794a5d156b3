"""fastnorm.torch: autograd functions against finite differences (float64) and against
torch's own operators (float32), zero-copy memory handling, the fallback to torch,
convert() on whole models (one training step compared with the original) and the
torch.distributed communicator."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
import torch.nn.functional as F  # noqa: E402
from conftest import subprocess_env  # noqa: E402
from torch import nn  # noqa: E402
from torch.autograd import gradcheck  # noqa: E402

import fastnorm  # noqa: E402
import fastnorm.torch as fnt  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
F64 = torch.float64
F32 = torch.float32
CL = torch.channels_last


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(1234)


def _rand(*shape, dtype=F64, grad=True, fmt=None):
    t = torch.randn(shape, dtype=dtype)
    if fmt is not None:
        t = t.contiguous(memory_format=fmt)
    return t.requires_grad_(grad)


def _close(a, b, rtol=1e-5, atol=1e-5, msg=""):
    assert a.shape == b.shape, msg
    assert a.dtype == b.dtype, msg
    scale = max(1.0, float(b.detach().abs().max())) if b.numel() else 1.0
    torch.testing.assert_close(a.detach(), b.detach(), rtol=rtol, atol=atol * scale, msg=msg)


def test_import_fastnorm_does_not_import_torch(tmp_path):
    code = "import sys, fastnorm; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True, env=subprocess_env(), cwd=tmp_path)


# ---------------------------------------------------------------------------------------
# gradcheck in float64: every op, every layout


def _cases():
    cl = CL
    return {
        "layer_norm": (lambda x, w, b: fnt.layer_norm(x, (5, 7), w, b),
                       [(3, 4, 5, 7), (5, 7), (5, 7)]),
        "layer_norm_1axis": (lambda x, w, b: fnt.layer_norm(x, 7, w, b),
                             [(6, 7), (7,), (7,)]),
        "layer_norm_noaffine": (lambda x: fnt.layer_norm(x, (7,)), [(6, 7)]),
        "rms_norm": (lambda x, w: fnt.rms_norm(x, (5, 7), w, 1e-5), [(3, 5, 7), (5, 7)]),
        "rms_norm_noweight": (lambda x: fnt.rms_norm(x, [7]), [(3, 5, 7)]),
        "batch_norm_train": (lambda x, w, b: fnt.batch_norm(x, None, None, w, b, True),
                             [(4, 6, 5, 3), (6,), (6,)]),
        "batch_norm_train_cl": (lambda x, w, b: fnt.batch_norm(x, None, None, w, b, True),
                                [((4, 6, 5, 3), cl), (6,), (6,)]),
        "batch_norm_1d": (lambda x, w, b: fnt.batch_norm(x, None, None, w, b, True),
                          [(9, 6), (6,), (6,)]),
        "batch_norm_eval": (
            lambda x, w, b: fnt.batch_norm(x, torch.linspace(-1, 1, 6, dtype=F64),
                                           torch.linspace(0.5, 2, 6, dtype=F64), w, b,
                                           False),
            [((4, 6, 5, 3), cl), (6,), (6,)]),
        "group_norm": (lambda x, w, b: fnt.group_norm(x, 3, w, b), [(4, 6, 5, 3), (6,), (6,)]),
        "group_norm_cl": (lambda x, w, b: fnt.group_norm(x, 2, w, b),
                          [((4, 6, 5, 3), cl), (6,), (6,)]),
        "group_norm_3d": (lambda x, w: fnt.group_norm(x, 2, w), [(3, 4, 5), (4,)]),
        "instance_norm": (lambda x, w, b: fnt.instance_norm(x, None, None, w, b),
                          [(3, 4, 5, 3), (4,), (4,)]),
        "instance_norm_cl": (lambda x, w, b: fnt.instance_norm(x, None, None, w, b),
                             [((3, 4, 5, 3), cl), (4,), (4,)]),
        "instance_norm_eval": (
            lambda x, w, b: fnt.instance_norm(x, torch.zeros(4, dtype=F64),
                                              torch.full((4,), 2.0, dtype=F64), w, b,
                                              use_input_stats=False),
            [(3, 4, 5), (4,), (4,)]),
        "l2_normalize": (lambda x: fnt.l2_normalize(x, 1), [(3, 5, 4)]),
        "normalize": (lambda x: fnt.normalize(x), [(3, 5, 4)]),
        "weight_norm": (lambda v, g: fnt.weight_norm(v, g, 0), [(6, 3, 2), (6, 1, 1)]),
        "weight_norm_dim1": (lambda v, g: fnt.weight_norm(v, g, 1), [(3, 5), (5,)]),
        "weight_norm_whole": (lambda v, g: fnt.weight_norm(v, g, -1), [(3, 5), ()]),
        "cosine_norm": (lambda x, w: fnt.cosine_norm(x, w), [(5, 4), (3, 4)]),
    }


def _case_args(shapes):
    """float64 tensors needing gradients for a _cases() entry's shapes ((shape, format)
    for a memory format)."""
    args = []
    for s in shapes:
        fmt = None
        if s and isinstance(s[0], tuple):
            s, fmt = s
        args.append(_rand(*s, fmt=fmt))
    return tuple(args)


@pytest.mark.parametrize("name", list(_cases()))
def test_gradcheck_float64(name, monkeypatch):
    fn, shapes = _cases()[name]
    args = _case_args(shapes)
    calls = _count_fastnorm_calls(monkeypatch)
    assert gradcheck(fn, args, eps=1e-6, atol=1e-7, rtol=1e-6)
    assert calls, "fastnorm was not called"


def _count_fastnorm_calls(monkeypatch):
    """Record the names of the fastnorm functions fastnorm.torch calls."""
    calls = []
    for name in fastnorm.__all__:
        f = getattr(fastnorm, name)
        if callable(f) and name.endswith(("norm", "normalize", "backward")):
            def wrap(*a, _f=f, _n=name, **k):
                calls.append(_n)
                return _f(*a, **k)
            monkeypatch.setattr(fastnorm, name, wrap)
    return calls


# ---------------------------------------------------------------------------------------
# float32 against torch's own operators, forward and backward


def _compare(ours, theirs, shapes, fmt=None, rtol=1e-5, atol=2e-5, dtype=F32):
    """Run both functions on the same float32 inputs; compare outputs and gradients."""
    base = [torch.randn(s, dtype=dtype) for s in shapes]
    if fmt is not None:
        base[0] = base[0].contiguous(memory_format=fmt)
    a = [t.clone(memory_format=torch.preserve_format).requires_grad_() for t in base]
    b = [t.clone(memory_format=torch.preserve_format).requires_grad_() for t in base]
    ya, yb = ours(*a), theirs(*b)
    _close(ya, yb, rtol, atol, "forward")
    # torch's strides, or the input's (instance norm keeps channels_last where torch's
    # returns a contiguous tensor)
    assert ya.stride() in (yb.stride(), a[0].stride()), (ya.stride(), yb.stride())
    dy = torch.randn_like(yb)
    ya.backward(dy)
    yb.backward(dy)
    for i, (ta, tb) in enumerate(zip(a, b, strict=True)):
        _close(ta.grad, tb.grad, rtol, atol, f"gradient of input {i}")
        if fmt is not None and i == 0:
            assert ta.grad.is_contiguous(memory_format=fmt)
    return ya, yb


@pytest.mark.parametrize("shape", [(8, 33), (2, 3, 4, 17), (1, 1)])
def test_layer_norm_vs_torch(shape):
    ns = shape[-1:]
    _compare(lambda x, w, b: fnt.layer_norm(x, ns, w, b, 1e-5),
             lambda x, w, b: F.layer_norm(x, ns, w, b, 1e-5), [shape, ns, ns])
    ns2 = shape[-2:]
    _compare(lambda x: fnt.layer_norm(x, ns2), lambda x: F.layer_norm(x, ns2), [shape])


@pytest.mark.parametrize("eps", [None, 1e-5])
def test_rms_norm_vs_torch(eps):
    _compare(lambda x, w: fnt.rms_norm(x, (3, 17), w, eps),
             lambda x, w: F.rms_norm(x, (3, 17), w, eps), [(5, 3, 17), (3, 17)])


def test_layer_norm_transposed_input():
    x = torch.randn(7, 9).T.requires_grad_()
    _close(fnt.layer_norm(x, (7,)), F.layer_norm(x, (7,)))


@pytest.mark.parametrize("fmt", [None, CL])
@pytest.mark.parametrize("training", [True, False])
def test_batch_norm_vs_torch(fmt, training):
    stats = {}
    for who in ("ours", "theirs"):
        stats[who] = (torch.linspace(-1, 1, 6), torch.linspace(0.5, 2.0, 6))
    _compare(lambda x, w, b: fnt.batch_norm(x, *stats["ours"], w, b, training, 0.3),
             lambda x, w, b: F.batch_norm(x, *stats["theirs"], w, b, training, 0.3),
             [(5, 6, 7, 9), (6,), (6,)], fmt=fmt)
    for a, b in zip(stats["ours"], stats["theirs"], strict=True):
        _close(a, b, 1e-6, 1e-6, "running statistics")
    if training:
        assert not torch.equal(stats["ours"][0], torch.linspace(-1, 1, 6))


@pytest.mark.parametrize("shape", [(6, 4), (3, 4, 10), (2, 4, 3, 5, 6)])
def test_batch_norm_ranks(shape):
    _compare(lambda x: fnt.batch_norm(x, None, None, training=True),
             lambda x: F.batch_norm(x, None, None, training=True), [shape])


def test_batch_norm_channels_last_3d():
    _compare(lambda x, w: fnt.batch_norm(x, None, None, w, None, True),
             lambda x, w: F.batch_norm(x, None, None, w, None, True),
             [(2, 5, 3, 4, 6), (5,)], fmt=torch.channels_last_3d)


@pytest.mark.parametrize("fmt", [None, CL])
@pytest.mark.parametrize("groups", [1, 3, 6])
def test_group_norm_vs_torch(fmt, groups):
    _compare(lambda x, w, b: fnt.group_norm(x, groups, w, b),
             lambda x, w, b: F.group_norm(x, groups, w, b), [(4, 6, 7, 5), (6,), (6,)],
             fmt=fmt)


@pytest.mark.parametrize("fmt", [None, CL])
@pytest.mark.parametrize("running", [False, True])
def test_instance_norm_vs_torch(fmt, running):
    stats = {w: (torch.linspace(-1, 1, 6), torch.linspace(0.5, 2.0, 6)) if running
             else (None, None) for w in ("ours", "theirs")}
    _compare(lambda x, w, b: fnt.instance_norm(x, *stats["ours"], w, b, True, 0.2),
             lambda x, w, b: F.instance_norm(x, *stats["theirs"], w, b, True, 0.2),
             [(3, 6, 7, 5), (6,), (6,)], fmt=fmt)
    if running:
        for a, b in zip(stats["ours"], stats["theirs"], strict=True):
            _close(a, b, 1e-5, 1e-6, "running statistics")
        assert not torch.equal(stats["ours"][1], torch.linspace(0.5, 2.0, 6))


def test_instance_norm_eval_vs_torch():
    rm, rv = torch.linspace(-1, 1, 4), torch.linspace(0.5, 2.0, 4)
    _compare(lambda x, w: fnt.instance_norm(x, rm, rv, w, None, False),
             lambda x, w: F.instance_norm(x, rm, rv, w, None, False), [(3, 4, 11), (4,)])


@pytest.mark.parametrize("dim", [0, 1, -1])
def test_normalize_vs_torch(dim):
    _compare(lambda x: fnt.normalize(x, dim=dim), lambda x: F.normalize(x, dim=dim),
             [(5, 6, 7)])
    _compare(lambda x: fnt.l2_normalize(x, dim), lambda x: F.normalize(x, dim=dim),
             [(5, 6, 7)])


def test_normalize_zero_rows():
    x = torch.zeros(3, 4, requires_grad=True)
    y = fnt.l2_normalize(x)
    y.sum().backward()
    assert torch.equal(y, torch.zeros(3, 4))
    assert torch.isfinite(x.grad).all()


@pytest.mark.parametrize("dim,gshape", [(0, (6, 1, 1)), (0, (6,)), (2, (1, 1, 4)), (-1, ())])
def test_weight_norm_vs_torch(dim, gshape):
    _compare(lambda v, g: fnt.weight_norm(v, g, dim),
             lambda v, g: torch._weight_norm(v, g, dim), [(6, 3, 4), gshape])


def test_cosine_norm_vs_torch():
    def theirs(x, w):
        return F.normalize(x, dim=1) @ F.normalize(w, dim=1).T
    ya, _ = _compare(fnt.cosine_norm, theirs, [(9, 16), (5, 16)])
    assert ya.abs().max() <= 1.0


def test_float64_matches_reference():
    """The float64 path against fastnorm.reference (the project's oracle)."""
    from fastnorm import reference as ref
    x = torch.randn(4, 6, 5, dtype=F64)
    w, b = torch.randn(6, dtype=F64), torch.randn(6, dtype=F64)
    np.testing.assert_allclose(fnt.group_norm(x, 2, w, b).numpy(),
                               ref.group_norm(x.numpy(), 2, w.numpy(), b.numpy()),
                               rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(fnt.layer_norm(x, (6, 5)).numpy(),
                               ref.layer_norm(x.numpy(), axis=1), rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------------------------------
# zero copy and memory formats


def _record(monkeypatch, name):
    seen = []
    f = getattr(fastnorm, name)

    def wrap(*a, **k):
        seen.append((a, k))
        return f(*a, **k)
    monkeypatch.setattr(fastnorm, name, wrap)
    return seen


@pytest.mark.parametrize("fmt", [None, CL])
@pytest.mark.parametrize("grad", [False, True])
def test_batch_norm_zero_copy(monkeypatch, fmt, grad):
    seen = _record(monkeypatch, "batch_norm")
    x = torch.randn(4, 8, 6, 5)
    if fmt is not None:
        x = x.contiguous(memory_format=fmt)
    x.requires_grad_(grad)
    w = torch.randn(8, requires_grad=grad)
    rm, rv = torch.zeros(8), torch.ones(8)
    y = fnt.batch_norm(x, rm, rv, w, None, True)
    (a, k), = seen
    xa = a[0]
    assert np.shares_memory(xa, x.detach().numpy())
    assert xa.flags.c_contiguous  # the memory order, so fastnorm reads it in place
    assert k["axis"] == (1 if fmt is None else 3)
    assert np.shares_memory(k["out"], y.detach().numpy())
    assert np.shares_memory(a[3], rm.numpy()) and np.shares_memory(a[4], rv.numpy())
    assert y.stride() == x.stride()
    if fmt is not None:
        assert y.is_contiguous(memory_format=fmt)
    assert not torch.equal(rm, torch.zeros(8))


def test_rows_zero_copy(monkeypatch):
    seen = _record(monkeypatch, "layer_norm")
    x = torch.randn(6, 32, requires_grad=True)
    w = torch.randn(32, requires_grad=True)
    y = fnt.layer_norm(x, (32,), w)
    (a, k), = seen
    assert np.shares_memory(a[0], x.detach().numpy())
    assert np.shares_memory(a[1], w.detach().numpy())
    assert np.shares_memory(k["out"], y.detach().numpy())


def test_group_norm_channels_last_zero_copy(monkeypatch):
    seen = _record(monkeypatch, "group_norm")
    x = torch.randn(2, 8, 5, 3).contiguous(memory_format=CL)
    y = fnt.group_norm(x, 4)
    (a, k), = seen
    assert np.shares_memory(a[0], x.numpy()) and a[0].flags.c_contiguous
    assert k["axis"] == 3
    assert y.is_contiguous(memory_format=CL)
    _close(y, F.group_norm(x, 4))


def test_channels_last_1d_transposed_input():
    """An (N, C, L) view of an (N, L, C) tensor: channels last in memory, computed in place."""
    x = torch.randn(3, 9, 5).transpose(1, 2).requires_grad_()
    _close(fnt.batch_norm(x, None, None, training=True), F.batch_norm(x, None, None,
                                                                      training=True))
    _close(fnt.group_norm(x, 5), F.group_norm(x, 5))


def test_non_dense_input():
    """A strided slice (not dense): copied once, same result as torch."""
    x = torch.randn(4, 10, 6, 6)[:, ::2, :, 1:5]
    _close(fnt.batch_norm(x, None, None, training=True),
           F.batch_norm(x, None, None, training=True))
    _close(fnt.instance_norm(x), F.instance_norm(x))


def test_inference_mode():
    x = torch.randn(4, 6, 5)
    with torch.inference_mode():
        y = fnt.group_norm(x, 2)
    _close(y, F.group_norm(x, 2))


# ---------------------------------------------------------------------------------------
# fallback to torch


def _forbid_fastnorm(monkeypatch):
    def boom(*a, **k):
        raise AssertionError("fastnorm called")
    for name in fastnorm.__all__:
        if name.endswith(("norm", "normalize", "backward")):
            monkeypatch.setattr(fastnorm, name, boom)


HALF = [pytest.param(torch.float16, id="float16"),
        pytest.param(torch.bfloat16, id="bfloat16",
                     marks=pytest.mark.skipif(fnt._ml_dtypes is None,
                                              reason="bfloat16 needs ml_dtypes"))]


def _half_close(a, b, dtype, what):
    """a (fastnorm) and b (torch) of the same dtype within a few units of it."""
    assert a.dtype == b.dtype, what
    unit = 2.0**-10 if dtype == torch.float16 else 2.0**-7
    a, b = a.double(), b.double()
    scale = max(1.0, b.abs().max().item())
    assert torch.allclose(a, b, rtol=2 * unit, atol=2 * unit * scale), what


@pytest.mark.parametrize("dtype", HALF)
def test_half_precision_goes_to_fastnorm(dtype):
    """float16/bfloat16 tensors are computed by fastnorm (zero-copy; bfloat16 through
    ml_dtypes), in float32, and match torch's own ops; parameter gradients come back in
    the parameters' dtype."""
    torch.manual_seed(0)
    x = torch.randn(4, 6, 10).to(dtype).requires_grad_()
    w = (1 + 0.1 * torch.randn(6)).to(dtype).requires_grad_()
    b = torch.randn(6).to(dtype).requires_grad_()
    wl = (1 + 0.1 * torch.randn(10)).to(dtype).requires_grad_()
    dy = torch.randn(4, 6, 10).to(dtype)
    cases = [
        ("layer_norm", lambda m, x: m.layer_norm(x, (10,), wl, None), [x, wl]),
        ("rms_norm", lambda m, x: m.rms_norm(x, (10,), wl), [x, wl]),
        ("batch_norm", lambda m, x: m.batch_norm(x, None, None, w, b, True), [x, w, b]),
        ("group_norm", lambda m, x: m.group_norm(x, 3, w, b), [x, w, b]),
        ("instance_norm", lambda m, x: m.instance_norm(x, weight=w, bias=b), [x, w, b]),
        ("normalize", lambda m, x: m.normalize(x, dim=-1), [x]),
    ]
    for name, f, inputs in cases:
        got = f(fnt, x)
        want = f(F, x)
        assert got.dtype == dtype
        _half_close(got, want, dtype, name)
        g_got = torch.autograd.grad(got, inputs, dy)
        g_want = torch.autograd.grad(want, inputs, dy)
        for a, e, t in zip(g_got, g_want, inputs, strict=True):
            assert a.dtype == t.dtype
            _half_close(a, e, dtype, f"{name} gradient")


@pytest.mark.parametrize("dtype", HALF)
def test_half_precision_calls_fastnorm_without_copies(monkeypatch, dtype):
    seen = []
    real = fastnorm.layer_norm

    def spy(x, *a, **k):
        seen.append(x)
        return real(x, *a, **k)

    monkeypatch.setattr(fastnorm, "layer_norm", spy)
    x = torch.randn(5, 8).to(dtype)
    y = fnt.layer_norm(x, (8,))
    assert len(seen) == 1 and seen[0].dtype.itemsize == 2
    assert seen[0].ctypes.data == x.data_ptr()  # a view of x, not a copy
    assert y.dtype == dtype


@pytest.mark.parametrize("dtype", HALF)
def test_half_batch_norm_module_with_float32_running_stats(dtype):
    """A BatchNorm2d kept in float32 (parameters, running statistics) on half inputs,
    as mixed-precision training does: fastnorm updates the float32 statistics."""
    torch.manual_seed(1)
    ref = nn.BatchNorm2d(6)
    mod = fnt.convert(copy.deepcopy(ref))
    x = torch.randn(4, 6, 5, 5).to(dtype)
    try:
        want = ref(x)
    except RuntimeError:
        pytest.skip("this torch build has no mixed-dtype batch norm")
    got = mod(x)
    assert got.dtype == want.dtype
    _half_close(got, want.to(got.dtype), dtype, "output")
    for name in ("running_mean", "running_var"):
        _close(getattr(mod, name), getattr(ref, name), msg=name)
    assert mod.num_batches_tracked == ref.num_batches_tracked


def test_fallback_meta_device(monkeypatch):
    _forbid_fastnorm(monkeypatch)
    x = torch.empty(4, 6, 5, device="meta")
    assert fnt.batch_norm(x, None, None, training=True).device.type == "meta"
    assert fnt.layer_norm(x, (5,)).shape == (4, 6, 5)


def test_fallback_autocast_tracing_and_empty(monkeypatch):
    _forbid_fastnorm(monkeypatch)
    x = torch.randn(3, 4, 5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        fnt.layer_norm(x, (5,))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit.trace's notice
        traced = torch.jit.trace(lambda t: fnt.layer_norm(t, (5,)), (x,), check_trace=False)
    _close(traced(x), F.layer_norm(x, (5,)))
    assert fnt.layer_norm(torch.empty(0, 5), (5,)).shape == (0, 5)


def test_fallback_negative_eps(monkeypatch):
    _forbid_fastnorm(monkeypatch)
    x = torch.randn(3, 4, 5) * 10
    torch.testing.assert_close(fnt.layer_norm(x, (5,), eps=-1e-3),
                               F.layer_norm(x, (5,), eps=-1e-3), equal_nan=True)
    torch.testing.assert_close(fnt.group_norm(x, 2, eps=-1e-3), F.group_norm(x, 2, eps=-1e-3),
                               equal_nan=True)


def test_fallback_under_vmap(monkeypatch):
    _forbid_fastnorm(monkeypatch)
    x = torch.randn(3, 4, 5)
    y = torch.func.vmap(lambda t: fnt.layer_norm(t, (5,)))(x)
    _close(y, F.layer_norm(x, (5,)))


def test_fallback_mixed_dtypes_gives_torch_error():
    x = torch.randn(3, 4)
    w = torch.randn(4, dtype=F64)
    with pytest.raises(RuntimeError):
        F.layer_norm(x, (4,), w)
    with pytest.raises(RuntimeError):
        fnt.layer_norm(x, (4,), w)


def test_running_stats_of_another_dtype_as_torch():
    x = torch.randn(4, 3, 5, dtype=F64)
    rm, rv = torch.zeros(3), torch.ones(3)
    with pytest.raises(RuntimeError):
        F.batch_norm(x, rm, rv, training=True)
    with pytest.raises(RuntimeError):
        fnt.batch_norm(x, rm, rv, training=True)
    assert torch.equal(rm, torch.zeros(3))


@pytest.mark.parametrize("call", [
    lambda f, x: f.group_norm(x, 4),                                   # C % G != 0
    lambda f, x: f.batch_norm(x[:1, :, :1], None, None, training=True),  # 1 value/channel
    lambda f, x: f.layer_norm(x, (3,)),                                 # wrong shape
    lambda f, x: f.instance_norm(x[:, :, :1]),                         # 1 spatial value
])
def test_bad_arguments_raise_as_torch(call):
    x = torch.randn(2, 6, 5)
    with pytest.raises(Exception) as theirs:
        call(F, x)
    with pytest.raises(type(theirs.value)):
        call(fnt, x)


def test_torchscript_of_converted_modules():
    """torch.jit.script and torch.jit.trace of a converted model compute with torch's
    operators and leave the model itself converted."""
    m = fnt.convert(nn.Sequential(
        nn.Conv1d(4, 4, 1), nn.LayerNorm(5), nn.BatchNorm1d(4), nn.GroupNorm(2, 4),
        nn.InstanceNorm1d(4, track_running_stats=True), nn.RMSNorm(5),
        nn.BatchNorm1d(4, momentum=None)))
    x = torch.randn(3, 4, 5)
    m(x)  # one training step, for running statistics that are not the initial ones
    m.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # deprecation notices; TracerWarnings of torch code
        scripted = torch.jit.script(m)
        traced = torch.jit.trace(m, (x,), check_trace=False)
    _close(scripted(x), m(x))
    _close(traced(x), m(x))
    assert type(m[2]) is fnt.BatchNorm1d and type(m[4]) is fnt.InstanceNorm1d
    assert scripted[1].weight.data_ptr() == m[1].weight.data_ptr()


# ---------------------------------------------------------------------------------------
# convert() and modules


def _all_norm_layers():
    return nn.ModuleDict({
        "ln": nn.LayerNorm(8),
        "ln2": nn.LayerNorm((4, 8), elementwise_affine=False),
        "ln3": nn.LayerNorm(8, bias=False),
        "rms": nn.RMSNorm(8),
        "rms2": nn.RMSNorm([8], eps=1e-4, elementwise_affine=False),
        "bn1": nn.BatchNorm1d(4),
        "bn2": nn.BatchNorm2d(4, momentum=None),
        "bn3": nn.BatchNorm3d(4, affine=False),
        "bn4": nn.BatchNorm2d(4, track_running_stats=False),
        "gn": nn.GroupNorm(2, 4),
        "gn2": nn.GroupNorm(4, 4, affine=False),
        "in1": nn.InstanceNorm1d(4, affine=True),
        "in2": nn.InstanceNorm2d(4, track_running_stats=True, momentum=0.3),
        "in3": nn.InstanceNorm3d(4, affine=True, track_running_stats=True),
        "inner": nn.Sequential(nn.Linear(8, 8), nn.BatchNorm1d(4)),
    })


def test_convert_keeps_objects_and_state():
    model = _all_norm_layers()
    params = {n: p for n, p in model.named_parameters()}
    buffers = {n: b for n, b in model.named_buffers()}
    before_repr = repr(model)
    before_keys = list(model.state_dict())
    kinds = {n: type(m) for n, m in model.named_modules()}
    assert fnt.convert(model) is model
    assert repr(model) == before_repr
    assert list(model.state_dict()) == before_keys
    for n, p in model.named_parameters():
        assert p is params[n]
    for n, b in model.named_buffers():
        assert b is buffers[n]
    for n, m in model.named_modules():
        if kinds[n] in fnt._CONVERSIONS:
            assert isinstance(m, kinds[n])
            assert type(m).__module__ == "fastnorm.torch"
            assert type(m).__name__ == kinds[n].__name__
        else:
            assert type(m) is kinds[n]


def test_convert_root_and_subclasses():
    bn = nn.BatchNorm2d(3)
    assert type(fnt.convert(bn)) is fnt.BatchNorm2d

    class MyBN(nn.BatchNorm2d):
        pass
    mine = MyBN(3)
    assert type(fnt.convert(mine)) is MyBN  # a subclass may compute differently: left alone
    with pytest.raises(TypeError):
        fnt.convert("not a module")


def _layer_input(name):
    if name.startswith(("ln", "rms")):
        return torch.randn(3, 4, 8)
    dims = {"1": (6, 4, 7), "2": (3, 4, 5, 6), "3": (2, 4, 3, 4, 5), "4": (3, 4, 5, 6)}
    if name in ("bn1", "inner"):
        return torch.randn(6, 4, 8) if name == "inner" else torch.randn(6, 4, 7)
    if name.startswith("gn"):
        return torch.randn(3, 4, 5, 6)
    return torch.randn(*dims[name[-1]])


@pytest.mark.parametrize("name", list(_all_norm_layers()))
@pytest.mark.parametrize("fmt", [None, CL])
def test_modules_train_and_eval_match_torch(name, fmt):
    """Two training steps (forward, backward, running statistics, num_batches_tracked),
    then an eval forward: outputs, gradients and buffers equal torch's."""
    ref = _all_norm_layers()[name]
    for p in ref.parameters():
        with torch.no_grad():
            p.uniform_(0.5, 1.5)
    ours = fnt.convert(copy.deepcopy(ref))
    for step in range(3):
        ref.train(step < 2)
        ours.train(step < 2)
        x = _layer_input(name)
        if fmt is not None and x.dim() == 4:
            x = x.contiguous(memory_format=fmt)
        xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
        ya, yb = ours(xa), ref(xb)
        _close(ya, yb, msg=f"{name} step {step} output")
        dy = torch.randn_like(yb)
        ya.backward(dy)
        yb.backward(dy)
        _close(xa.grad, xb.grad, 1e-4, 2e-5, msg=f"{name} step {step} dx")
    for (n, pa), pb in zip(ours.named_parameters(), ref.parameters(), strict=True):
        _close(pa.grad, pb.grad, 1e-4, 2e-5, msg=f"{name} grad {n}")
    for (n, ba), bb in zip(ours.named_buffers(), ref.buffers(), strict=True):
        if ba.dtype == torch.long:
            assert torch.equal(ba, bb), n
        else:
            _close(ba, bb, 1e-5, 1e-6, msg=f"{name} buffer {n}")


class SmallCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
            nn.Conv2d(8, 8, 3, padding=1, bias=False), nn.GroupNorm(4, 8), nn.ReLU(),
            nn.Conv2d(8, 8, 3, padding=1), nn.InstanceNorm2d(8, affine=True), nn.ReLU(),
            nn.Conv2d(8, 6, 1, bias=False), nn.BatchNorm2d(6, momentum=None),
        )
        self.head = nn.Linear(6, 5)

    def forward(self, x):
        return self.head(self.body(x).mean((2, 3)))


class Block(nn.Module):
    """A pre-norm transformer block: LayerNorm + attention, RMSNorm + MLP."""

    def __init__(self, d=32, heads=4):
        super().__init__()
        self.ln = nn.LayerNorm(d)
        self.attn = nn.MultiheadAttention(d, heads, batch_first=True)
        self.rms = nn.RMSNorm(d)
        self.mlp = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d))

    def forward(self, x):
        h = self.ln(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        return x + self.mlp(self.rms(x))


def _train_step_matches(model, x, target):
    ref = model
    ours = fnt.convert(copy.deepcopy(model))
    keys = list(ref.state_dict())
    assert list(ours.state_dict()) == keys
    outs = []
    for m in (ours, ref):
        m.train()
        opt = torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9)
        opt.zero_grad()
        y = m(x.clone())
        loss = F.mse_loss(y, target)
        loss.backward()
        opt.step()
        outs.append(y)
    _close(outs[0], outs[1], 1e-4, 1e-5, "output")
    for (n, pa), pb in zip(ours.named_parameters(), ref.parameters(), strict=True):
        _close(pa.grad, pb.grad, 1e-3, 1e-5, f"grad {n}")
        _close(pa, pb, 1e-4, 1e-5, f"parameter {n} after the step")
    for (n, ba), bb in zip(ours.named_buffers(), ref.buffers(), strict=True):
        if ba.dtype == torch.long:
            assert torch.equal(ba, bb), n
        else:
            _close(ba, bb, 1e-5, 1e-5, f"buffer {n}")
    ours.eval()
    ref.eval()
    with torch.no_grad():
        _close(ours(x), ref(x), 1e-4, 1e-5, "eval output")


@pytest.mark.parametrize("fmt", [None, CL])
def test_cnn_training_step(fmt):
    model = SmallCNN()
    x = torch.randn(4, 3, 10, 10)
    if fmt is not None:
        model = model.to(memory_format=fmt)
        x = x.contiguous(memory_format=fmt)
    _train_step_matches(model, x, torch.randn(4, 5))


def test_transformer_block_training_step():
    _train_step_matches(Block(), torch.randn(3, 7, 32), torch.randn(3, 7, 32))


def test_encoder_layer_converted():
    layer = nn.TransformerEncoderLayer(32, 4, 64, dropout=0.0, batch_first=True)
    ours = fnt.convert(copy.deepcopy(layer))
    assert isinstance(ours.norm1, fnt.LayerNorm)
    x = torch.randn(2, 5, 32)
    _close(ours(x), layer(x), 1e-4, 1e-5)


# ---------------------------------------------------------------------------------------
# TorchDistributedComm


_DIST_WORKER = textwrap.dedent("""
    import sys
    import numpy as np
    import torch.distributed as dist
    from fastnorm.torch import TorchDistributedComm

    rank, init = int(sys.argv[1]), sys.argv[2]
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=2)
    comm = TorchDistributedComm()
    assert (comm.rank, comm.size) == (rank, 2)
    a = np.arange(6.0).reshape(2, 3) * (rank + 1)
    s = comm.allreduce(a)
    assert s.shape == (2, 3) and s.dtype == np.float64
    np.testing.assert_array_equal(s, np.arange(6.0).reshape(2, 3) * 3)
    m, v = comm.allreduce((np.full(3, rank + 1, np.float32), np.array([rank], np.int64)))
    assert m.dtype == np.float32 and v.dtype == np.int64
    np.testing.assert_array_equal(m, [3, 3, 3])
    np.testing.assert_array_equal(v, [1])
    g = comm.allgather(np.array([rank, 10 + rank]))
    assert len(g) == 2
    np.testing.assert_array_equal(g[0], [0, 10])
    np.testing.assert_array_equal(g[1], [1, 11])
    gt = comm.allgather((np.array([rank * 1.5]), np.ones((2, 2)) * rank))
    assert isinstance(gt[1], tuple)
    np.testing.assert_array_equal(gt[1][1], np.ones((2, 2)))
    np.testing.assert_array_equal(gt[0][0], [0.0])

    # synchronized batch norm over gloo: each rank's part of one global batch (3 + 5
    # samples) gives what batch_norm gives on the whole batch
    import fastnorm
    from fastnorm.distributed import sync_batch_norm, sync_batch_norm_backward
    rng = np.random.default_rng(7)
    X = 2.0 + rng.standard_normal((8, 4, 5, 5))
    DY = rng.standard_normal(X.shape)
    w, b = 1.0 + rng.random(4), rng.standard_normal(4)
    part = slice(0, 3) if rank == 0 else slice(3, 8)
    rm, rv = np.zeros(4), np.ones(4)
    y, mean, rstd = sync_batch_norm(X[part], w, b, rm, rv, comm=comm, return_stats=True)
    dx, dw, db = sync_batch_norm_backward(DY[part], X[part], mean, rstd, w, comm=comm)
    RM, RV = np.zeros(4), np.ones(4)
    Y, M, R = fastnorm.batch_norm(X, w, b, RM, RV, return_stats=True)
    DX, DW, DB = fastnorm.batch_norm_backward(DY, X, M, R, w)
    np.testing.assert_allclose(y, Y[part], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(dx, DX[part], rtol=1e-11, atol=1e-11)
    np.testing.assert_allclose(rm, RM, rtol=1e-12)
    np.testing.assert_allclose(rv, RV, rtol=1e-12)
    total_dw = comm.allreduce(dw)  # the data-parallel gradient all-reduce
    np.testing.assert_allclose(total_dw, DW, rtol=1e-11, atol=1e-11)
    dist.destroy_process_group()
    print("ok", rank)
""")


def test_torch_distributed_comm(tmp_path):
    """The gloo adapter's collectives, and fastnorm.distributed.sync_batch_norm over it."""
    pytest.importorskip("torch.distributed")
    if not torch.distributed.is_available():
        pytest.skip("torch.distributed not available")
    script = tmp_path / "worker.py"
    script.write_text(_DIST_WORKER)
    init = "file://" + str(tmp_path / "rendezvous")
    env = subprocess_env(OMP_NUM_THREADS="1")
    procs = [subprocess.Popen([sys.executable, str(script), str(r), init], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for r in range(2)]
    for r, p in enumerate(procs):
        try:
            out, err = p.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            raise
        assert p.returncode == 0, err
        assert f"ok {r}" in out


def test_comm_requires_initialized_process_group():
    with pytest.raises(RuntimeError):
        fnt.TorchDistributedComm()


# ---------------------------------------------------------------------------------------
# the benchmark script runs


def test_bench_torch_models_smoke(tmp_path):
    r = subprocess.run([sys.executable, os.path.join(ROOT, "bench", "torch_models.py"),
                        "--tiny"], env=subprocess_env(), cwd=tmp_path, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "speedup" in r.stdout and "transformer" in r.stdout


def test_docstring_examples():
    import doctest

    result = doctest.testmod(fnt)
    assert result.attempted >= 3 and result.failed == 0


# ---------------------------------------------------------------------------------------
# double backward (create_graph=True): fastnorm's *_double_backward in C


_SECOND_ORDER = [n for n in _cases() if n.startswith(("layer", "rms", "batch", "group",
                                                       "instance"))]


@pytest.mark.parametrize("name", _SECOND_ORDER)
def test_gradgradcheck_float64(name, monkeypatch):
    from torch.autograd import gradgradcheck

    fn, shapes = _cases()[name]
    args = _case_args(shapes)
    calls = _count_fastnorm_calls(monkeypatch)
    assert gradgradcheck(fn, args, eps=1e-6, atol=1e-6, rtol=1e-5)
    assert any(c.endswith("_double_backward") for c in calls), calls


def test_third_order_raises():
    x, w = _rand(4, 6), _rand(6)
    y = fnt.layer_norm(x, (6,), w)
    (gx,) = torch.autograd.grad((y * torch.randn(4, 6, dtype=F64)).sum(), x, create_graph=True)
    (ggx,) = torch.autograd.grad((gx * gx).sum(), x, create_graph=True)
    assert ggx.requires_grad
    with pytest.raises(RuntimeError, match="third-order derivative is not supported"):
        torch.autograd.grad(ggx.sum(), x)


def test_first_order_backward_does_not_build_a_graph():
    x = _rand(4, 6)
    fnt.rms_norm(x, (6,)).square().sum().backward()
    assert x.grad is not None and x.grad.grad_fn is None


def _critic(norm, dtype):
    torch.manual_seed(3)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), norm(8), nn.LeakyReLU(0.2),
                         nn.Flatten(), nn.Linear(8 * 6 * 6, 16), nn.LayerNorm(16),
                         nn.LeakyReLU(0.2), nn.Linear(16, 1)).to(dtype)


@pytest.mark.parametrize("norm", [lambda c: nn.GroupNorm(2, c),
                                  lambda c: nn.InstanceNorm2d(c, affine=True),
                                  nn.BatchNorm2d], ids=["group", "instance", "batch"])
def test_wgan_gp_step_matches_torch(norm):
    """A WGAN-GP critic step (the gradient penalty differentiates through the norms twice):
    the same loss and parameter gradients converted and unconverted (float64)."""
    critic = _critic(norm, F64)
    conv = fnt.convert(copy.deepcopy(critic))
    real, fake = torch.randn(5, 3, 6, 6, dtype=F64), torch.randn(5, 3, 6, 6, dtype=F64)
    alpha = torch.rand(5, 1, 1, 1, dtype=F64)
    results = []
    for model in (critic, conv):
        mix = (alpha * real + (1 - alpha) * fake).requires_grad_()
        (g,) = torch.autograd.grad(model(mix).sum(), mix, create_graph=True)
        penalty = ((g.flatten(1).norm(dim=1) - 1) ** 2).mean()
        loss = model(fake).mean() - model(real).mean() + 10.0 * penalty
        model.zero_grad()
        loss.backward()
        results.append([loss.detach()] + [p.grad.clone() for p in model.parameters()])
    for a, b in zip(*results, strict=True):
        _close(a, b, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("kind", ["linear", "conv"])
def test_weight_norm_init_standardizes_the_outputs(kind):
    from torch.nn.utils.parametrizations import weight_norm

    if kind == "linear":
        module, x, dims = nn.Linear(6, 4).double(), torch.randn(100, 6, dtype=F64) * 3 + 1, (0,)
    else:
        module, x, dims = nn.Conv2d(3, 5, 3).double(), torch.randn(8, 3, 7, 7, dtype=F64), (0, 2, 3)
    module = weight_norm(module)

    def direction(w):
        return w / w.flatten(1).norm(dim=1).reshape((-1,) + (1,) * (w.dim() - 1))

    with torch.no_grad():
        before = direction(module.weight)
    assert fnt.weight_norm_init_(module, x) is module
    with torch.no_grad():
        y = module(x)
        _close(y.mean(dim=dims), torch.zeros(y.shape[1], dtype=F64), atol=1e-12)
        _close(y.std(dim=dims, unbiased=False), torch.ones(y.shape[1], dtype=F64), rtol=1e-12)
        _close(direction(module.weight), before, rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="parametrized"):
        fnt.weight_norm_init_(nn.Linear(3, 2), torch.randn(4, 3))
