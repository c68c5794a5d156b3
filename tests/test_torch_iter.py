"""fastnorm.torch.iter_norm, IterNorm1d and IterNorm2d: fastnorm's kernels under autograd
against the torch composite of the same math (fastnorm.torch._iter_norm_composite, itself
checked against fastnorm.reference), gradcheck, layouts, running statistics, fallbacks."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import fastnorm.torch as fnt  # noqa: E402
from fastnorm import reference as ref  # noqa: E402


def _x(shape, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g, dtype=torch.float64)
    x = x + 0.5 * torch.roll(x, 1, dims=1)
    return (2 * x + 1).to(dtype)


def _running(C, d, dtype=torch.float64):
    G = -(-C // d)
    g = torch.Generator().manual_seed(7)
    rw = torch.eye(d, dtype=torch.float64).repeat(G, 1, 1)
    rw = rw + 0.1 * torch.randn((G, d, d), generator=g, dtype=torch.float64)
    return 0.1 * torch.randn(C, generator=g, dtype=torch.float64).to(dtype), rw.to(dtype)


SHAPES = [((8, 6, 5, 4), 4), ((16, 5), 2), ((4, 20, 7), 8), ((3, 32, 6, 6), 16)]


def test_composite_matches_reference():
    x = _x((6, 6, 5))
    w, b = torch.rand(6, dtype=torch.float64) + 0.5, torch.randn(6, dtype=torch.float64)
    y = fnt._iter_norm_composite(x, None, None, w, b, True, 0.1, 1e-5, 4, 5)
    np.testing.assert_allclose(y.numpy(), ref.iter_norm(x.numpy(), w.numpy(), b.numpy(),
                                                        group_size=4), atol=1e-12)


@pytest.mark.parametrize("shape,d", SHAPES)
@pytest.mark.parametrize("training", [True, False])
def test_forward_and_gradients_match_the_composite(shape, d, training):
    C = shape[1]
    x = _x(shape).requires_grad_(True)
    w = (torch.rand(C, dtype=torch.float64) + 0.5).requires_grad_(True)
    b = torch.randn(C, dtype=torch.float64).requires_grad_(True)
    rm, rw = _running(C, d)
    rm2, rw2 = rm.clone(), rw.clone()
    y = fnt.iter_norm(x, rm, rw, w, b, training, 0.2, 1e-5, d, 5)
    yc = fnt._iter_norm_composite(x, rm2, rw2, w, b, training, 0.2, 1e-5, d, 5)
    torch.testing.assert_close(y, yc, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(rm, rm2, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(rw, rw2, rtol=1e-12, atol=1e-12)
    dy = _x(shape, seed=3)
    g = torch.autograd.grad(y, (x, w, b), dy)
    gc = torch.autograd.grad(yc, (x, w, b), dy)
    for a, c in zip(g, gc, strict=True):
        torch.testing.assert_close(a, c, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("training", [True, False])
def test_gradcheck(training):
    x = _x((6, 5, 3)).requires_grad_(True)
    w = (torch.rand(5, dtype=torch.float64) + 0.5).requires_grad_(True)
    b = torch.randn(5, dtype=torch.float64).requires_grad_(True)
    rm, rw = _running(5, 2)

    def f(x_, w_, b_):
        return fnt.iter_norm(x_, rm.clone(), rw.clone(), w_, b_, training, 0.1, 1e-5, 2, 3)

    assert torch.autograd.gradcheck(f, (x, w, b))


def test_channels_last_input_keeps_its_layout():
    x = _x((4, 12, 5, 6)).contiguous(memory_format=torch.channels_last)
    y = fnt.iter_norm(x, group_size=4)
    assert y.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(y, fnt._iter_norm_composite(x.contiguous(), None, None, None,
                                                           None, True, 0.1, 1e-5, 4, 5))


def test_float32_and_half():
    x = _x((8, 8, 6, 6), torch.float32)
    y = fnt.iter_norm(x, group_size=4)
    yc = fnt._iter_norm_composite(x.double(), None, None, None, None, True, 0.1, 1e-5, 4, 5)
    torch.testing.assert_close(y.double(), yc, rtol=1e-4, atol=1e-4)
    xh = x.half()
    yh = fnt.iter_norm(xh, group_size=4)
    assert yh.dtype == torch.float16
    torch.testing.assert_close(yh.double(), yc, rtol=2e-2, atol=2e-2)


def test_fallback_for_inputs_fastnorm_does_not_take():
    """A non-contiguous running whitening goes to the composite (same results)."""
    x = _x((6, 8, 4))
    rm, rw = _running(8, 4)
    rw_nc = torch.empty((2, 4, 8), dtype=torch.float64)[:, :, ::2]
    rw_nc.copy_(rw)
    assert not rw_nc.is_contiguous()
    rm2 = rm.clone()
    y = fnt.iter_norm(x, rm, rw_nc, group_size=4, momentum=0.3)
    y2 = fnt.iter_norm(x, rm2, rw.clone(), group_size=4, momentum=0.3)
    torch.testing.assert_close(y, y2)
    torch.testing.assert_close(rm, rm2)


def test_double_backward_raises():
    x = _x((6, 4, 3)).requires_grad_(True)
    y = fnt.iter_norm(x, group_size=2)
    (g,) = torch.autograd.grad((y * y.detach()).sum(), x, create_graph=True)
    with pytest.raises(RuntimeError):
        torch.autograd.grad(g.sum(), x)


def test_errors():
    x = _x((4, 6, 3))
    with pytest.raises(ValueError, match="group_size"):
        fnt.iter_norm(x, group_size=0)
    with pytest.raises(ValueError, match="iterations"):
        fnt.iter_norm(x, iterations=-2)
    with pytest.raises(ValueError, match="running_mean and running_whitening"):
        fnt.iter_norm(x, training=False)
    with pytest.raises(ValueError, match="at least 2"):
        fnt.iter_norm(torch.zeros(5, dtype=torch.float64))


@pytest.mark.parametrize("cls,shape", [(fnt.IterNorm1d, (16, 10)),
                                       (fnt.IterNorm1d, (8, 10, 7)),
                                       (fnt.IterNorm2d, (4, 10, 5, 5))])
def test_modules_train_and_eval(cls, shape):
    m = cls(10, group_size=4, dtype=torch.float64)
    assert m.running_whitening.shape == (3, 4, 4)
    torch.testing.assert_close(m.running_whitening[2, :2, :2], torch.eye(2, dtype=torch.float64))
    x = _x(shape).requires_grad_(True)
    y = m(x)
    rm, rw = m.running_mean.clone(), m.running_whitening.clone()
    assert rm.abs().sum() > 0
    y.sum().backward()
    assert m.weight.grad is not None and x.grad is not None
    m.eval()
    ye = m(x)
    torch.testing.assert_close(ye, fnt._iter_norm_composite(x, rm, rw, m.weight, m.bias, False,
                                                            0.1, 1e-5, 4, 5))
    torch.testing.assert_close(m.running_mean, rm)
    with pytest.raises(ValueError, match="expects"):
        m(torch.zeros((2,) * 5, dtype=torch.float64))
    assert "group_size=4" in repr(m)
    assert set(m.state_dict()) == {"weight", "bias", "running_mean", "running_whitening"}


def test_module_without_running_stats_uses_the_batch():
    m = fnt.IterNorm2d(8, group_size=4, track_running_stats=False, affine=False,
                       dtype=torch.float64)
    m.eval()
    x = _x((4, 8, 3, 3))
    torch.testing.assert_close(m(x), fnt.iter_norm(x, group_size=4))
