"""Mean-only batch norm, ``batch_norm(..., center_only=True)``: forward and backward against
fastnorm.reference, finite differences, running statistics, layouts, threads, errors, and
the fastnorm.nn layer."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import assert_close, assert_identical
from gradcheck import check_grad

import fastnorm as fn
from fastnorm import nn
from fastnorm import reference as ref

CASES = [  # (shape, channel axis)
    ((8, 5, 7, 3), 1),
    ((40, 3), 1),
    ((6, 4, 4, 19), -1),  # channels-last
    ((2, 3, 70), 1),  # spans long enough for span tiles
    ((1, 3), 1),  # one value per channel
    ((300, 2, 5), 2),  # channels-last, short rows
]


def _data(shape, dtype, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(shape) * 3 + 2).astype(dtype)


@pytest.mark.parametrize("shape,axis", CASES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("with_bias", [True, False])
def test_forward_matches_reference(shape, axis, dtype, with_bias):
    x = _data(shape, dtype)
    C = shape[axis]
    b = np.linspace(-1, 1, C).astype(dtype) if with_bias else None
    y, mean, rstd = fn.batch_norm(x, None, b, axis=axis, center_only=True, return_stats=True)
    y_ref, mean_ref, _ = ref.batch_norm(x, None, b, axis=axis, center_only=True,
                                        return_stats=True)
    assert_close(y, y_ref, dtype)
    assert_close(mean, mean_ref, dtype)
    assert_identical(rstd, np.ones(C, dtype))
    # the definition itself: x - mean_c + b_c
    ax = tuple(i for i in range(x.ndim) if i != axis % x.ndim)
    expect = x.astype(np.float64) - x.astype(np.float64).mean(ax, keepdims=True)
    if b is not None:
        expect = expect + np.expand_dims(b.astype(np.float64), ax)
    assert_close(y, expect, dtype)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_forward_and_backward(dtype):
    if dtype == "bfloat16":
        dtype = pytest.importorskip("ml_dtypes").bfloat16
    x = _data((6, 5, 9), np.float32).astype(dtype)
    b = np.linspace(-1, 1, 5).astype(np.float32)
    y = fn.batch_norm(x, None, b, center_only=True)
    assert y.dtype == x.dtype
    y_ref = ref.batch_norm(x.astype(np.float64), None, b, center_only=True)
    np.testing.assert_allclose(y.astype(np.float64), y_ref, atol=3e-2 * np.abs(y_ref).max())
    dy = _data((6, 5, 9), np.float32, seed=1).astype(dtype)
    dx, dw, db = fn.batch_norm_backward(dy, x, None, None, center_only=True)
    dx_ref, _, db_ref = ref.batch_norm_backward(dy.astype(np.float64), x.astype(np.float64),
                                                None, None, center_only=True)
    assert dw is None and dx.dtype == x.dtype and db.dtype == np.float32
    np.testing.assert_allclose(dx.astype(np.float64), dx_ref, atol=2e-2 * np.abs(dx_ref).max())
    np.testing.assert_allclose(db, db_ref, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("shape,axis", CASES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("training", [True, False])
def test_backward_matches_reference(shape, axis, dtype, training):
    x = _data(shape, dtype)
    dy = _data(shape, dtype, seed=1)
    dx, dw, db = fn.batch_norm_backward(dy, x, None, None, axis=axis, training=training,
                                        center_only=True)
    dx_ref, dw_ref, db_ref = ref.batch_norm_backward(dy, x, None, None, axis=axis,
                                                     training=training, center_only=True)
    assert dw is None and dw_ref is None
    assert_close(dx, dx_ref, dtype)
    assert_close(db, db_ref, dtype)
    if not training:
        assert_identical(dx, dy)


@pytest.mark.parametrize("shape,axis", [((4, 3, 2), 1), ((5, 2), 1), ((2, 3, 4), -1)])
@pytest.mark.parametrize("training", [True, False])
def test_backward_matches_finite_differences(shape, axis, training):
    x = _data(shape, np.float64)
    dy = _data(shape, np.float64, seed=2)
    C = shape[axis]
    b = np.linspace(-1, 1, C)
    rm = np.linspace(0.5, 1.5, C)
    dx, _, db = fn.batch_norm_backward(dy, x, None, None, axis=axis, training=training,
                                       center_only=True)

    def f(x_, b_):
        return fn.batch_norm(x_, None, b_, rm.copy(), None, axis=axis, training=training,
                             center_only=True)

    check_grad(lambda x_: f(x_, b), x, dy, dx)
    check_grad(lambda b_: f(x, b_), b, dy, db)


@pytest.mark.parametrize("r_dtype", [np.float32, np.float64])
def test_running_mean_updated_running_var_untouched(r_dtype):
    x = _data((16, 4, 5), np.float32)
    rm = np.linspace(-1, 1, 4).astype(r_dtype)
    rv = np.linspace(1, 2, 4).astype(r_dtype)
    rm_ref, rv0 = rm.astype(np.float64), rv.copy()
    fn.batch_norm(x, None, None, rm, rv, momentum=0.3, center_only=True)
    ref.batch_norm(x, None, None, rm_ref, None, momentum=0.3, center_only=True)
    np.testing.assert_allclose(rm, rm_ref, rtol=1e-6)
    assert_identical(rv, rv0)
    expect = 0.7 * np.linspace(-1, 1, 4) + 0.3 * x.astype(np.float64).mean((0, 2))
    np.testing.assert_allclose(rm, expect, rtol=1e-6)


def test_eval_subtracts_the_running_mean_and_leaves_it():
    x = _data((7, 3, 4), np.float64)
    rm = np.array([1.0, -2.0, 0.5])
    b = np.array([0.1, 0.2, 0.3])
    y = fn.batch_norm(x, None, b, rm, None, training=False, center_only=True)
    assert_close(y, x - rm[:, None] + b[:, None], np.float64)
    assert_identical(rm, np.array([1.0, -2.0, 0.5]))
    with pytest.raises(ValueError, match="running_mean"):
        fn.batch_norm(x, None, b, None, None, training=False, center_only=True)


def test_weight_is_rejected():
    x = _data((4, 3), np.float64)
    with pytest.raises(ValueError, match="center_only"):
        fn.batch_norm(x, np.ones(3), None, center_only=True)
    with pytest.raises(ValueError, match="center_only"):
        fn.batch_norm_backward(x, x, None, None, np.ones(3), center_only=True)


def test_empty_batch():
    x = np.zeros((0, 3, 4), np.float32)
    y, mean, _ = fn.batch_norm(x, None, None, center_only=True, return_stats=True)
    assert y.shape == x.shape and np.isnan(mean).all()
    dx, _, db = fn.batch_norm_backward(x, x, None, None, center_only=True)
    assert dx.shape == x.shape and (db == 0).all()


@pytest.mark.parametrize("shape,axis", [((64, 48, 33), 1), ((3000, 24), 1)])
def test_bitwise_identical_for_any_thread_count(threads, shape, axis):
    x = _data(shape, np.float32)
    outs = []
    for n in (1, 2, 3):
        with threads(n):
            y = fn.batch_norm(x, None, None, axis=axis, center_only=True)
            dx, _, db = fn.batch_norm_backward(x, None, None, None, axis=axis,
                                               center_only=True)
        outs.append((y, dx, db))
    for o in outs[1:]:
        for a, b in zip(outs[0], o, strict=True):
            assert_identical(a, b)


def test_out_and_in_place():
    x = _data((5, 3, 6), np.float32)
    expect = fn.batch_norm(x, None, None, center_only=True)
    out = np.empty_like(x)
    assert fn.batch_norm(x, None, None, center_only=True, out=out) is out
    assert_identical(out, expect)
    xi = x.copy()
    fn.batch_norm(xi, None, None, center_only=True, out=xi)
    assert_identical(xi, expect)
    dx = np.empty_like(x)
    assert fn.batch_norm_backward(x, None, None, None, center_only=True, out=dx)[0] is dx


def test_nn_batch_norm_center_only_trains_bias_and_mean():
    rng = np.random.default_rng(3)
    layer = nn.BatchNorm(4, center_only=True, dtype=np.float64)
    assert layer.weight is None and layer.running_var is None
    assert [name for name, _, _ in layer.params()] == ["bias"]
    x = rng.standard_normal((10, 4, 3)) + 5
    y = layer.forward(x)
    np.testing.assert_allclose(y.mean((0, 2)), 0, atol=1e-12)
    np.testing.assert_allclose(layer.running_mean, 0.1 * x.mean((0, 2)), rtol=1e-12)
    dy = rng.standard_normal(x.shape)
    dx = layer.backward(dy)
    assert_close(dx, dy - dy.mean((0, 2), keepdims=True), np.float64)
    assert_close(layer.grads["bias"], dy.sum((0, 2)), np.float64)
    y_eval = layer.forward(x, training=False)
    assert_close(y_eval, x - layer.running_mean[:, None], np.float64)
    assert_identical(layer.backward(dy), dy)
