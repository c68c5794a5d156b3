"""fastnorm.torch's fused residual add (add_layer_norm, add_rms_norm, add_norm): gradcheck in
float64 with either output unused, agreement with torch's composite ``s = x + r; norm(s)``
in every dtype, broadcasting and the fallback to the composite, and a pre-norm block
converted and unconverted."""

from __future__ import annotations

import copy
import os
import subprocess
import sys

import pytest

torch = pytest.importorskip("torch")
import torch.nn.functional as F  # noqa: E402
from conftest import subprocess_env  # noqa: E402
from torch import nn  # noqa: E402
from torch.autograd import gradcheck  # noqa: E402

import fastnorm  # noqa: E402
import fastnorm.torch as fnt  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "bench"))
from torch_models import PreNormBlocks  # noqa: E402  (the benchmarked block)

F64 = torch.float64


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(99)


def _rand(*shape, dtype=F64, grad=True):
    return torch.randn(shape, dtype=dtype).requires_grad_(grad)


def _ln(shape, affine=True):
    def f(x, r, *p):
        return fnt.add_layer_norm(x, r, shape, *p)
    return f


def _rms(shape):
    def f(x, r, *p):
        return fnt.add_rms_norm(x, r, shape, *p, eps=1e-5)
    return f


# (function, x shape, residual shape, parameter shapes)
CASES = {
    "ln": (_ln(8), (3, 4, 8), (3, 4, 8), [(8,), (8,)]),
    "ln_2axes": (_ln((4, 8)), (3, 4, 8), (3, 4, 8), [(4, 8), (4, 8)]),
    "ln_noaffine": (_ln(8), (5, 8), (5, 8), []),
    "ln_weight_only": (_ln(8), (5, 8), (5, 8), [(8,)]),
    "ln_broadcast": (_ln(8), (3, 4, 8), (4, 8), [(8,), (8,)]),
    "ln_broadcast_ones": (_ln(8), (3, 4, 8), (1, 4, 8), [(8,), (8,)]),
    "ln_broadcast_row": (_ln(8), (3, 4, 8), (8,), [(8,), (8,)]),
    "rms": (_rms(8), (3, 4, 8), (3, 4, 8), [(8,)]),
    "rms_noweight": (_rms(8), (6, 8), (6, 8), []),
    "rms_broadcast": (_rms((4, 8)), (2, 4, 8), (1, 1, 4, 8), [(4, 8)]),
}


@pytest.mark.parametrize("use", ["both", "y", "s"])
@pytest.mark.parametrize("name", sorted(CASES))
def test_gradcheck_float64(name, use):
    fn, xs, rs, ps = CASES[name]
    args = [_rand(*xs), _rand(*rs)] + [_rand(*p) for p in ps]
    pick = {"both": lambda o: o, "y": lambda o: o[0], "s": lambda o: o[1]}[use]
    assert gradcheck(lambda *a: pick(fn(*a)), tuple(args), eps=1e-6, atol=1e-7, rtol=1e-6)


def _composite(centered, x, r, shape, w, b):
    s = x + r
    if centered:
        return F.layer_norm(s, shape, w, b, 1e-5), s
    return F.rms_norm(s, shape, w, 1e-5), s


@pytest.mark.parametrize("centered", [True, False])
@pytest.mark.parametrize("rshape", [(16, 96), (96,), (4, 16, 96)])
def test_float32_matches_torch_composite(centered, rshape):
    x, r = _rand(4, 16, 96, dtype=torch.float32), _rand(*rshape, dtype=torch.float32)
    w, b = _rand(96, dtype=torch.float32), _rand(96, dtype=torch.float32)
    gy, gs = torch.randn(4, 16, 96), torch.randn(4, 16, 96)
    res = []
    for fused in (True, False):
        args = [t.detach().clone().requires_grad_() for t in (x, r, w, b)]
        if fused:
            f = fnt.add_layer_norm if centered else fnt.add_rms_norm
            y, s = (f(*args[:2], 96, *args[2:], eps=1e-5) if centered
                    else f(*args[:2], 96, args[2], eps=1e-5))
        else:
            y, s = _composite(centered, *args[:2], (96,), args[2], args[3] if centered else None)
        ((y * gy).sum() + (s * gs).sum()).backward()
        res.append([t.detach() for t in [y, s]] + [a.grad for a in args[:3]]
                   + ([args[3].grad] if centered else []))
    for a, b_ in zip(*res, strict=True):
        assert a.shape == b_.shape and a.dtype == b_.dtype
        torch.testing.assert_close(a, b_, rtol=1e-4, atol=1e-4 * max(1.0, float(b_.abs().max())))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("centered", [True, False])
def test_equals_fastnorm_composite_bitwise(dtype, centered):
    """s is torch's x + r rounded to the dtype, y is fastnorm's norm of that s, bit for bit."""
    if dtype not in fnt.FAST_DTYPES:
        pytest.skip("bfloat16 needs ml_dtypes")
    x, r = torch.randn(6, 40).to(dtype), torch.randn(6, 40).to(dtype)
    w = torch.randn(40).to(dtype)
    if centered:
        y, s = fnt.add_layer_norm(x, r, 40, w, None)
        ref = fnt.layer_norm(x + r, 40, w, None)
    else:
        y, s = fnt.add_rms_norm(x, r, 40, w)
        ref = fnt.rms_norm(x + r, 40, w)
    assert s.dtype == y.dtype == dtype
    assert torch.equal(s, x + r)
    assert torch.equal(y, ref)


def test_mixed_dtypes_compute_in_the_promoted_dtype():
    """A float16 x with a float32 residual stream: as torch's composite, s and y are float32."""
    x, r = torch.randn(5, 32).half(), torch.randn(5, 32)
    y, s = fnt.add_rms_norm(x, r, 32, None, 1e-6)
    assert y.dtype == s.dtype == torch.float32
    assert torch.equal(s, x + r)
    torch.testing.assert_close(y, F.rms_norm(x + r, (32,), None, 1e-6))
    x.requires_grad_()
    r.requires_grad_()
    y, s = fnt.add_rms_norm(x, r, 32, None, 1e-6)
    (y.sum() + s.sum()).backward()
    assert x.grad.dtype == torch.float16 and r.grad.dtype == torch.float32


def test_uses_the_fused_kernel(monkeypatch):
    calls = []
    real = fastnorm.add_layer_norm

    def spy(*a, **k):
        calls.append(1)
        return real(*a, **k)

    monkeypatch.setattr(fastnorm, "add_layer_norm", spy)
    x = torch.randn(3, 8)
    fnt.add_layer_norm(x, x, 8)  # no grad needed
    fnt.add_layer_norm(x.requires_grad_(), torch.randn(3, 8), 8)
    assert len(calls) == 2


@pytest.mark.parametrize("case", ["residual_larger", "scalar", "int_dtype", "negative_eps"])
def test_falls_back_to_the_composite(case, monkeypatch):
    monkeypatch.setattr(fastnorm, "add_layer_norm", None)  # must not be called
    x = torch.randn(4, 8)
    r = {"residual_larger": torch.randn(3, 4, 8), "scalar": 1.5,
         "int_dtype": torch.ones(4, 8, dtype=torch.int64), "negative_eps": torch.randn(4, 8)}[case]
    x_ = x.long() if case == "int_dtype" else x
    eps = -1.0 if case == "negative_eps" else 1e-5
    if case == "int_dtype":  # torch's own error for a long tensor
        with pytest.raises(RuntimeError):
            fnt.add_layer_norm(x_, r, 8, eps=eps)
        return
    y, s = fnt.add_layer_norm(x_, r, 8, eps=eps)
    s_ref = x_ + r
    assert torch.equal(s, s_ref)
    torch.testing.assert_close(y, F.layer_norm(s_ref, (8,), None, None, eps), equal_nan=True)


def test_only_s_in_the_loss_gives_no_weight_gradient():
    x, r, w = _rand(3, 8), _rand(3, 8), _rand(8)
    _, s = fnt.add_rms_norm(x, r, 8, w)
    s.sum().backward()
    assert torch.equal(x.grad, torch.ones_like(x)) and torch.equal(r.grad, torch.ones_like(r))
    assert w.grad is None


def test_no_grad_has_no_graph():
    x = _rand(3, 8)
    with torch.no_grad():
        y, s = fnt.add_layer_norm(x, x, 8)
    assert y.grad_fn is None and s.grad_fn is None and not y.requires_grad


@pytest.mark.parametrize("norm", [nn.LayerNorm, nn.RMSNorm])
def test_pre_norm_blocks_converted_match(norm, monkeypatch):
    model = PreNormBlocks(32, 4, 64, 2, lambda d: norm(d, eps=1e-5))
    for p in model.parameters():  # non-trivial norm parameters
        p.data.add_(0.1 * torch.randn_like(p))
    conv = fnt.convert(copy.deepcopy(model))
    x = torch.randn(2, 9, 32)
    calls = []
    name = "add_layer_norm" if norm is nn.LayerNorm else "add_rms_norm"
    real = getattr(fastnorm, name)
    monkeypatch.setattr(fastnorm, name, lambda *a, **k: calls.append(1) or real(*a, **k))
    grads = []
    for m in (model, conv):
        m(x).square().mean().backward()
        grads.append([p.grad for p in m.parameters()])
    assert len(calls) == 4  # every add + norm of the converted model fused, none of the other's
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_add_norm_other_modules_use_the_composite():
    norm = nn.Identity()
    x, r = torch.randn(2, 3), torch.randn(2, 3)
    y, s = fnt.add_norm(norm, x, r)
    assert torch.equal(y, x + r) and torch.equal(s, x + r)


def test_hf_llama_example():
    pytest.importorskip("transformers")
    code = ("import sys; sys.path.insert(0, 'examples'); import hf_llama, copy, torch\n"
            "m = hf_llama.make_model(layers=2, hidden=64, heads=4)\n"
            "p = hf_llama.patch(copy.deepcopy(m))\n"
            "assert all(l.forward.__func__ is hf_llama._decoder_forward for l in p.model.layers)\n"
            "ids = torch.randint(0, 1000, (2, 12))\n"
            "print(*hf_llama.check(m, p, ids))\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=subprocess_env(),
                         capture_output=True, text=True, check=True).stdout.split()
    logit_err, grad_err = map(float, out[-2:])
    assert logit_err < 1e-4 and grad_err < 1e-4
