"""The float64 reference of IterNorm (``fastnorm.reference.iter_norm`` and its backward):
gradients against central finite differences, forward and backward against the PyTorch
composite of bench/iter_norm_torch.py through autograd, ``group_size=1`` against batch norm,
the running statistics, and the whitening itself (identity covariance, scale invariance)."""

from __future__ import annotations

import numpy as np
import pytest

from fastnorm import reference as ref

# (shape, axis, group_size): groups of 4 and a last one of 2; groups of 2, 2 and 1 on a
# 2-D input; channels-last with a last group of 2.
CASES = [
    ((4, 6, 3, 2), 1, 4),
    ((8, 5), 1, 2),
    ((3, 2, 2, 6), -1, 4),
]
CASE_IDS = ["nchw-4+2", "2d-2+2+1", "nhwc-4+2"]


def _data(shape, axis, seed=0):
    rng = np.random.default_rng(seed)
    c = shape[axis]
    x = rng.standard_normal(shape)
    weight = rng.uniform(0.5, 1.5, c)
    bias = rng.standard_normal(c)
    dy = rng.standard_normal(shape)
    return x, weight, bias, dy


def _running(x, axis, group_size, seed=1):
    """Running statistics of the shape iter_norm expects: those of other data of x's shape."""
    x2 = np.random.default_rng(seed).standard_normal(x.shape) * 1.5 + 0.3
    _, mean, whitening = ref.iter_norm(x2, group_size=group_size, axis=axis, return_stats=True)
    return mean, whitening


def _numeric_grad(f, a, h=1e-6):
    """Central differences of the scalar f at a (perturbing a copy)."""
    a = a.copy()
    grad = np.empty_like(a)
    for i in np.ndindex(a.shape):
        old = a[i]
        a[i] = old + h
        up = f(a)
        a[i] = old - h
        down = f(a)
        a[i] = old
        grad[i] = (up - down) / (2 * h)
    return grad


def _close(actual, expected, rtol=1e-6, atol=1e-7):
    scale = max(1.0, float(np.abs(expected).max()))
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol * scale)


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("iterations", [1, 3, 5])
@pytest.mark.parametrize(("shape", "axis", "group_size"), CASES, ids=CASE_IDS)
def test_backward_matches_finite_differences(shape, axis, group_size, iterations, training):
    x, weight, bias, dy = _data(shape, axis)
    kw = dict(group_size=group_size, iterations=iterations, axis=axis)
    rm, rw = _running(x, axis, group_size)

    def loss(x_, w_=weight, b_=bias):
        run = (rm.copy(), rw.copy())  # a training forward updates them
        y = ref.iter_norm(x_, w_, b_, *run, training=training, **kw)
        return float((y * dy).sum())

    _, mean, whitening = ref.iter_norm(
        x, weight, bias, rm.copy(), rw.copy(), training=training, return_stats=True, **kw
    )
    dx, dweight, dbias = ref.iter_norm_backward(
        dy, x, mean, weight, training=training, whitening=whitening, **kw
    )
    _close(dx, _numeric_grad(loss, x))
    _close(dweight, _numeric_grad(lambda w: loss(x, w_=w), weight))
    _close(dbias, _numeric_grad(lambda b: loss(x, b_=b), bias))


def test_backward_without_weight():
    shape, axis, group_size = CASES[0]
    x, _, _, dy = _data(shape, axis)
    kw = dict(group_size=group_size, iterations=3, axis=axis)
    _, mean, _ = ref.iter_norm(x, return_stats=True, **kw)
    dx, dweight, dbias = ref.iter_norm_backward(dy, x, mean, **kw)
    assert dweight is None
    _close(dx, _numeric_grad(lambda x_: float((ref.iter_norm(x_, **kw) * dy).sum()), x))
    np.testing.assert_allclose(dbias, dy.sum(axis=(0, 2, 3)), rtol=1e-12)


@pytest.fixture(scope="module")
def composite():
    """fastnorm.torch's composite of torch operations (its fallback, and the baseline of
    the benchmarks) as (x, weight, bias, group_size, iterations) -> y, training mode."""
    torch = pytest.importorskip("torch")
    fnt = pytest.importorskip("fastnorm.torch")

    def torch_iter_norm(x, weight, bias, group_size, iterations):
        return fnt._iter_norm_composite(x, None, None, weight, bias, True, 0.1, 1e-5,
                                        group_size, iterations)

    return torch, torch_iter_norm


@pytest.mark.parametrize("affine", [True, False], ids=["affine", "plain"])
@pytest.mark.parametrize(
    ("shape", "group_size", "iterations"),
    [((4, 6, 3, 2), 4, 5), ((8, 5), 2, 3), ((2, 7, 5), 7, 1), ((3, 20, 2, 2), 16, 5)],
)
def test_matches_torch_composite(composite, shape, group_size, iterations, affine):
    """NCHW only: the composite takes channels on axis 1."""
    torch, torch_iter_norm = composite
    x, weight, bias, dy = _data(shape, 1, seed=3)
    if not affine:
        weight = bias = None
    kw = dict(group_size=group_size, iterations=iterations)
    y, mean, _ = ref.iter_norm(x, weight, bias, return_stats=True, **kw)
    dx, dweight, dbias = ref.iter_norm_backward(dy, x, mean, weight, **kw)

    def leaf(a):
        return None if a is None else torch.tensor(a, dtype=torch.float64, requires_grad=True)

    xt, wt, bt = leaf(x), leaf(weight), leaf(bias)
    yt = torch_iter_norm(xt, wt, bt, **kw)
    yt.backward(torch.from_numpy(dy))
    np.testing.assert_allclose(yt.detach().numpy(), y, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(xt.grad.numpy(), dx, rtol=1e-9, atol=1e-11)
    if affine:
        np.testing.assert_allclose(wt.grad.numpy(), dweight, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(bt.grad.numpy(), dbias, rtol=1e-10, atol=1e-12)
    else:
        assert dweight is None


@pytest.mark.parametrize("axis", [1, -1])
def test_group_size_one_is_batch_norm(axis):
    x, weight, bias, dy = _data((5, 3, 4, 2), axis, seed=4)
    kw = dict(axis=axis, eps=1e-3)
    y, mean, whitening = ref.iter_norm(x, weight, bias, group_size=1, return_stats=True, **kw)
    y_bn, mean_bn, rstd = ref.batch_norm(x, weight, bias, return_stats=True, **kw)
    np.testing.assert_allclose(y, y_bn, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(mean, mean_bn, rtol=1e-12, atol=1e-12)
    assert whitening.shape == (x.shape[axis], 1, 1)
    np.testing.assert_allclose(whitening[:, 0, 0], rstd, rtol=1e-12)
    grads = ref.iter_norm_backward(dy, x, mean, weight, group_size=1, **kw)
    grads_bn = ref.batch_norm_backward(dy, x, mean_bn, rstd, weight, axis=axis)
    for g, g_bn in zip(grads, grads_bn, strict=True):
        np.testing.assert_allclose(g, g_bn, rtol=1e-10, atol=1e-12)
    # evaluation mode: running_whitening = 1 / sqrt(running_var + eps)
    rm, rv = np.linspace(-1, 1, x.shape[axis]), np.linspace(0.5, 2, x.shape[axis])
    rw = (1 / np.sqrt(rv + 1e-3))[:, None, None]
    y = ref.iter_norm(x, weight, bias, rm, rw, group_size=1, training=False, **kw)
    y_bn = ref.batch_norm(x, weight, bias, rm, rv, training=False, **kw)
    np.testing.assert_allclose(y, y_bn, rtol=1e-12, atol=1e-12)
    dx = ref.iter_norm_backward(dy, x, rm, weight, group_size=1, training=False,
                                whitening=rw, **kw)[0]  # fmt: skip
    dx_bn = ref.batch_norm_backward(dy, x, rm, rw.reshape(-1), weight, axis=axis,
                                    training=False)[0]  # fmt: skip
    np.testing.assert_allclose(dx, dx_bn, rtol=1e-12, atol=1e-12)


def test_running_statistics():
    x, weight, bias, _ = _data((6, 10, 3), 1, seed=5)
    group_size, momentum = 4, 0.25
    rng = np.random.default_rng(6)
    rm0 = rng.standard_normal(10)
    rw0 = rng.standard_normal((3, 4, 4))  # nonzero even outside the last group's 2x2 block
    rm, rw = rm0.copy(), rw0.copy()
    y, mean, whitening = ref.iter_norm(x, weight, bias, rm, rw, group_size=group_size,
                                       momentum=momentum, return_stats=True)  # fmt: skip
    np.testing.assert_allclose(mean, x.mean(axis=(0, 2)), rtol=1e-12)
    assert whitening.shape == (3, 4, 4)
    assert not whitening[2, 2:].any() and not whitening[2, :, 2:].any()
    np.testing.assert_allclose(whitening, np.swapaxes(whitening, 1, 2), rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(rm, (1 - momentum) * rm0 + momentum * mean, rtol=1e-12)
    np.testing.assert_allclose(rw, (1 - momentum) * rw0 + momentum * whitening, rtol=1e-12)
    # the running statistics normalize exactly as the batch's when they equal them
    y_eval, m_eval, w_eval = ref.iter_norm(x, weight, bias, mean, whitening, training=False,
                                           group_size=group_size, return_stats=True)  # fmt: skip
    np.testing.assert_allclose(y_eval, y, rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(m_eval, mean)
    np.testing.assert_array_equal(w_eval, whitening)
    # evaluation leaves them alone; training without them works
    before = rm.copy(), rw.copy()
    ref.iter_norm(x, weight, bias, rm, rw, group_size=group_size, training=False)
    np.testing.assert_array_equal(rm, before[0])
    np.testing.assert_array_equal(rw, before[1])
    np.testing.assert_allclose(ref.iter_norm(x, weight, bias, group_size=group_size), y)
    out = np.empty(x.shape, np.float32)
    assert ref.iter_norm(x, weight, bias, group_size=group_size, out=out) is out
    np.testing.assert_allclose(out, y, rtol=1e-6)


def test_validation():
    x = np.ones((4, 6))
    with pytest.raises(ValueError, match="training=False needs"):
        ref.iter_norm(x, running_mean=np.zeros(6), training=False, group_size=4)
    with pytest.raises(ValueError, match="running_whitening must have shape"):
        ref.iter_norm(x, running_whitening=np.zeros((1, 4, 4)), group_size=4)
    with pytest.raises(ValueError, match="needs whitening"):
        ref.iter_norm_backward(x, x, np.zeros(6), training=False, group_size=4)
    with pytest.raises(ValueError, match="group_size"):
        ref.iter_norm(x, group_size=0)


def _mixed(n, c, seed):
    """Well-conditioned correlated data: standard normals through a mixing matrix with
    singular values in [1, 2], shifted by per-channel offsets; (n, c)."""
    rng = np.random.default_rng(seed)
    q1, _ = np.linalg.qr(rng.standard_normal((c, c)))
    q2, _ = np.linalg.qr(rng.standard_normal((c, c)))
    mix = q1 @ np.diag(np.linspace(1.0, 2.0, c)) @ q2
    return rng.standard_normal((n, c)) @ mix.T + rng.standard_normal(c)


@pytest.mark.parametrize("axis", [1, -1])
def test_whitened_covariance_is_identity(axis):
    c, group_size = 11, 4  # groups of 4, 4 and 3
    x2 = _mixed(4096, c, seed=7)  # (m, C)
    x = x2.reshape(64, 64, c) if axis == -1 else x2.T.reshape(c, 64, 64).transpose(1, 0, 2)
    y = ref.iter_norm(x, group_size=group_size, iterations=12, eps=0.0, axis=axis)
    ym = np.moveaxis(y, axis, 0).reshape(c, -1)
    np.testing.assert_allclose(ym.mean(axis=1), 0.0, atol=1e-12)
    cov = ym @ ym.T / ym.shape[1]
    for start in range(0, c, group_size):
        block = cov[start : start + group_size, start : start + group_size]
        np.testing.assert_allclose(block, np.eye(len(block)), atol=1e-9)
    # the raw data is far from white, and few iterations do not whiten it fully
    assert np.abs(np.cov(x2.T, bias=True)[:4, :4] - np.eye(4)).max() > 0.1
    y1 = np.moveaxis(ref.iter_norm(x, group_size=group_size, iterations=1, eps=0.0,
                                   axis=axis), axis, 0).reshape(c, -1)  # fmt: skip
    assert np.abs(y1[:4] @ y1[:4].T / y1.shape[1] - np.eye(4)).max() > 1e-3


@pytest.mark.parametrize("lam", [1e-3, 0.5, 7.0, 1e4])
def test_scale_invariance(lam):
    x, weight, bias, _ = _data((4, 6, 3, 2), 1, seed=8)
    kw = dict(group_size=4, iterations=5, eps=0.0)
    y, mean, whitening = ref.iter_norm(x, weight, bias, return_stats=True, **kw)
    y_lam, mean_lam, whitening_lam = ref.iter_norm(lam * x, weight, bias, return_stats=True,
                                                   **kw)  # fmt: skip
    np.testing.assert_allclose(y_lam, y, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(mean_lam, lam * mean, rtol=1e-12)
    np.testing.assert_allclose(whitening_lam, whitening / lam, rtol=1e-10, atol=1e-12 / lam)
