"""The seed's invariance properties (DESIGN.md): weight scale invariance of batch, layer,
weight and cosine normalization, and data scale invariance of batch, layer and cosine
normalization (but not of weight normalization)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fastnorm as fn

F32, F64 = np.dtype(np.float32), np.dtype(np.float64)
RTOL = 1e-9

SETTINGS = settings(max_examples=30, deadline=None, database=None)


def scales(low=-3.0, high=3.0):
    """lambda = 10**e, e uniform in [low, high]."""
    return st.floats(low, high, allow_nan=False).map(lambda e: 10.0**e)


# lambda kept away from 1, for the properties that must NOT hold
far_scales = st.one_of(scales(-3.0, -0.3), scales(0.3, 3.0))


@st.composite
def layers(draw):
    """(seed, N, M, D): batch, output units, input features."""
    seed = draw(st.integers(0, 2**32 - 1))
    N, M, D = (draw(st.integers(3, 9)) for _ in range(3))
    return seed, N, M, D


def assert_same(actual, expected, rtol=RTOL, err_msg=""):
    """float64 closeness with an absolute floor on the expected array's own scale."""
    expected = np.asarray(expected, dtype=np.float64)
    scale = float(np.abs(expected).max()) if expected.size else 0.0
    np.testing.assert_allclose(
        actual, expected, rtol=rtol, atol=rtol * max(scale, 1e-300), err_msg=err_msg
    )


def make_layer(seed, N, M, D, dtype=F64):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((N, D)).astype(dtype)
    W = rng.standard_normal((M, D)).astype(dtype)
    gamma = (1.0 + 0.5 * rng.standard_normal(M)).astype(dtype)
    beta = rng.standard_normal(M).astype(dtype)
    dy = rng.standard_normal((N, M)).astype(dtype)
    return x, W, gamma, beta, dy


# --------------------------------------------------------------------------- layers
#
# Each layer maps (x, W, dy) to (y, dW, dx): the output of a linear layer h = x @ W.T
# followed by a normalization, and the gradients of sum(y * dy), chained through
# fastnorm's backward and the linear layer's own gradients dW = dh.T @ x, dx = dh @ W.


def bn_layer(x, W, gamma, beta, dy, eps=0.0):
    h = x @ W.T
    y, mean, rstd = fn.batch_norm(h, gamma, beta, eps=eps, axis=1, return_stats=True)
    dh, _, _ = fn.batch_norm_backward(dy, h, mean, rstd, gamma, axis=1)
    return y, dh.T @ x, dh @ W


def ln_layer(x, W, gamma, beta, dy, eps=0.0):
    h = x @ W.T
    y, mean, rstd = fn.layer_norm(h, gamma, beta, eps=eps, axis=-1, return_stats=True)
    dh, _, _ = fn.layer_norm_backward(dy, h, mean, rstd, gamma, axis=-1)
    return y, dh.T @ x, dh @ W


def cn_layer(x, W, gamma, beta, dy, eps=1e-12):
    y, x_norm, w_norm = fn.cosine_norm(x, W, eps=eps, return_stats=True)
    dx, dW = fn.cosine_norm_backward(dy, x, W, x_norm, w_norm, eps=eps)
    return y, dW, dx


def wn_layer(x, v, g, dy):
    """y = x @ weight_norm(v, g).T; returns (y, dv, dx, dg)."""
    w, norm = fn.weight_norm(v, g, axis=0, return_stats=True)
    y = x @ w.T
    dv, dg = fn.weight_norm_backward(dy.T @ x, v, g, norm, axis=0)
    return y, dv, dy @ w, dg


NORM_LAYERS = {"batch_norm": bn_layer, "layer_norm": ln_layer, "cosine_norm": cn_layer}


# --------------------------------------------------------------------------- weight scale


def check_weight_scale(layer, case, lam):
    x, W, gamma, beta, dy = make_layer(*case)
    y, dW, dx = layer(x, W, gamma, beta, dy)
    y2, dW2, dx2 = layer(x, lam * W, gamma, beta, dy)
    assert_same(y2, y, err_msg="output changed under W -> lambda W")
    assert_same(lam * dW2, dW, err_msg="d(lambda W) != dW / lambda")
    assert_same(dx2, dx, err_msg="dx changed under W -> lambda W")


@SETTINGS
@given(layers(), scales())
def test_batch_norm_weight_scale_invariance(case, lam):
    check_weight_scale(bn_layer, case, lam)


@SETTINGS
@given(layers(), scales())
def test_layer_norm_weight_scale_invariance(case, lam):
    check_weight_scale(ln_layer, case, lam)


@SETTINGS
@given(layers(), scales())
def test_cosine_norm_weight_scale_invariance(case, lam):
    check_weight_scale(cn_layer, case, lam)


@SETTINGS
@given(layers(), scales())
def test_weight_norm_weight_scale_invariance(case, lam):
    x, v, g, _, dy = make_layer(*case)
    w = fn.weight_norm(v, g)
    assert_same(fn.weight_norm(lam * v, g), w, err_msg="w changed under v -> lambda v")
    y, dv, dx, dg = wn_layer(x, v, g, dy)
    y2, dv2, dx2, dg2 = wn_layer(x, lam * v, g, dy)
    assert_same(y2, y, err_msg="output changed under v -> lambda v")
    assert_same(lam * dv2, dv, err_msg="d(lambda v) != dv / lambda")
    assert_same(dx2, dx, err_msg="dx changed")
    assert_same(dg2, dg, err_msg="dg changed")


@SETTINGS
@given(layers(), scales())
def test_weight_norm_is_scale_invariant_along_any_axis(case, lam):
    seed, N, M, D = case
    rng = np.random.default_rng(seed)
    v = rng.standard_normal((N, M, D))
    for axis in (0, 1, 2, -1):
        g = 1.0 + rng.random(v.shape[axis])
        w, norm = fn.weight_norm(v, g, axis=axis, return_stats=True)
        w2, norm2 = fn.weight_norm(lam * v, g, axis=axis, return_stats=True)
        assert_same(w2, w, err_msg=f"axis {axis}")
        assert_same(norm2, lam * norm, err_msg=f"norm, axis {axis}")
        dw = rng.standard_normal(v.shape)
        dv, dg = fn.weight_norm_backward(dw, v, g, norm, axis=axis)
        dv2, dg2 = fn.weight_norm_backward(dw, lam * v, g, norm2, axis=axis)
        assert_same(lam * dv2, dv, err_msg=f"dv, axis {axis}")
        assert_same(dg2, dg, err_msg=f"dg, axis {axis}")


@pytest.mark.parametrize("lam", [2.0**-10, 0.25, 8.0, 2.0**10])
@pytest.mark.parametrize("name", sorted(NORM_LAYERS))
def test_weight_scale_invariance_float32(name, lam):
    """Powers of two scale float32 data exactly; results agree to float32 rounding."""
    layer = NORM_LAYERS[name]
    x, W, gamma, beta, dy = make_layer(7, 16, 9, 33, F32)
    y, dW, dx = layer(x, W, gamma, beta, dy)
    y2, dW2, dx2 = layer(x, np.float32(lam) * W, gamma, beta, dy)
    assert y2.dtype == dW2.dtype == dx2.dtype == F32
    assert_same(y2, y, rtol=1e-5)
    assert_same(np.float32(lam) * dW2, dW, rtol=1e-5)
    assert_same(dx2, dx, rtol=1e-5)


@pytest.mark.parametrize("lam", [1e-3, 0.5, 2.0, 1e3])
def test_weight_scale_changes_a_plain_linear_layer(lam):
    """The control: without normalization, h = x @ W.T scales with lambda."""
    x, W, *_ = make_layer(3, 5, 4, 6)
    assert not np.allclose(x @ (lam * W).T, x @ W.T, rtol=1e-3)


# --------------------------------------------------------------------------- data scale


def check_data_scale(layer, case, lam):
    x, W, gamma, beta, dy = make_layer(*case)
    y, _, dx = layer(x, W, gamma, beta, dy)
    y2, _, dx2 = layer(lam * x, W, gamma, beta, dy)
    assert_same(y2, y, err_msg="output changed under x -> lambda x")
    assert_same(lam * dx2, dx, err_msg="d(lambda x) != dx / lambda")


@SETTINGS
@given(layers(), scales())
def test_batch_norm_data_scale_invariance(case, lam):
    check_data_scale(bn_layer, case, lam)


@SETTINGS
@given(layers(), scales())
def test_layer_norm_data_scale_invariance(case, lam):
    check_data_scale(ln_layer, case, lam)


@SETTINGS
@given(layers(), scales())
def test_cosine_norm_data_scale_invariance(case, lam):
    check_data_scale(cn_layer, case, lam)


@SETTINGS
@given(layers(), scales())
def test_batch_and_layer_norm_of_raw_data_scale_invariance(case, lam):
    seed, N, M, D = case
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((N, D, M))
    for axis in (0, 1, -1):
        assert_same(
            fn.batch_norm(lam * x, eps=0.0, axis=axis), fn.batch_norm(x, eps=0.0, axis=axis)
        )
    for axis in (1, 2, -1):
        assert_same(
            fn.layer_norm(lam * x, eps=0.0, axis=axis), fn.layer_norm(x, eps=0.0, axis=axis)
        )
    assert_same(fn.cosine_norm(lam * x[0], x[1]), fn.cosine_norm(x[0], x[1]))
    assert_same(fn.cosine_norm(x[0], lam * x[1]), fn.cosine_norm(x[0], x[1]))


@SETTINGS
@given(layers(), scales(), st.sampled_from([1e-5, 1e-3, 0.1]))
def test_data_scale_with_eps_scaled_alike(case, lam, eps):
    """With eps > 0 the invariance is exact when eps scales like the variance (lambda**2)."""
    x, W, gamma, beta, dy = make_layer(*case)
    h = x @ W.T
    assert_same(
        fn.batch_norm(lam * h, gamma, beta, eps=lam**2 * eps),
        fn.batch_norm(h, gamma, beta, eps=eps),
    )
    assert_same(
        fn.layer_norm(lam * h, gamma, beta, eps=lam**2 * eps),
        fn.layer_norm(h, gamma, beta, eps=eps),
    )


@SETTINGS
@given(layers(), scales(), st.sampled_from([1e-5, 1e-3, 0.1]))
def test_data_scale_invariance_up_to_eps(case, lam, eps):
    """With a fixed eps, BN and LN change by at most |xhat| * eps / (2 * min variance)."""
    x, W, *_ = make_layer(*case)
    h = x @ W.T
    for norm, kw, var_axis in (
        (fn.batch_norm, {"axis": 1}, 0),
        (fn.layer_norm, {"axis": -1}, 1),
    ):
        exact = norm(h, eps=0.0, **kw)
        var = h.var(axis=var_axis)
        bound = np.abs(exact).max() * eps / (2.0 * min(1.0, lam) ** 2 * var.min())
        diff = np.abs(norm(lam * h, eps=eps, **kw) - norm(h, eps=eps, **kw)).max()
        assert diff <= bound * (1 + 1e-9) + 1e-12, (norm.__name__, diff, bound)


@SETTINGS
@given(layers(), far_scales)
def test_weight_norm_is_not_data_scale_invariant(case, lam):
    """weight_norm normalizes the weights, not the data: y = x @ w.T scales with lambda."""
    x, v, g, _, dy = make_layer(*case)
    y, _, _, _ = wn_layer(x, v, g, dy)
    y2, _, _, _ = wn_layer(lam * x, v, g, dy)
    assert_same(y2, lam * y)
    assert not np.allclose(y2, y, rtol=1e-3, atol=1e-3 * np.abs(y).max())


@pytest.mark.parametrize("lam", [1e-3, 0.5, 2.0, 1e3])
def test_data_scale_fixed_lambdas(lam):
    x, W, gamma, beta, dy = make_layer(11, 8, 5, 17)
    for name, layer in NORM_LAYERS.items():
        y, _, dx = layer(x, W, gamma, beta, dy)
        y2, _, dx2 = layer(lam * x, W, gamma, beta, dy)
        assert_same(y2, y, err_msg=name)
        assert_same(lam * dx2, dx, err_msg=name)
    y, *_ = wn_layer(x, W, gamma, dy)
    y2, *_ = wn_layer(lam * x, W, gamma, dy)
    assert_same(y2, lam * y)
    assert not np.allclose(y2, y, rtol=1e-3)
