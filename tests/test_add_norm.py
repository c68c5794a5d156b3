"""add_layer_norm / add_rms_norm: the residual add fused with the norm, forward and backward.

Against the composite (layer_norm of x + residual, bit for bit), against the float64
reference, the reference's backward against finite differences, and the API's contract:
broadcast residuals, residual_dtype, in-place use, validation. The registry tests
(test_ops, test_threads, test_leaks) cover every SIMD level and thread count."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import FLOAT_DTYPES, assert_close, assert_identical
from gradcheck import check_grad

import fastnorm as fn
from fastnorm import reference as ref

try:
    import ml_dtypes

    HALF = (np.float16, ml_dtypes.bfloat16)
except ImportError:
    HALF = (np.float16,)
ALL_DTYPES = (*FLOAT_DTYPES, *HALF)
SHAPES = [((7, 33), -1), ((4, 4097), -1), ((3, 5, 9), 1), ((2, 3, 20000), -1), ((6, 1), -1)]


def _inputs(rng, shape, axis, dtype, rshape=None):
    norm = shape[axis % len(shape) :]
    pdt = np.float32 if np.dtype(dtype).itemsize == 2 else dtype
    x = (rng.standard_normal(shape) * 2 + 0.5).astype(dtype)
    r = rng.standard_normal(rshape or shape).astype(dtype)
    w = (1 + 0.5 * rng.standard_normal(norm)).astype(pdt)
    b = rng.standard_normal(norm).astype(pdt)
    return x, r, w, b


@pytest.mark.parametrize("dtype", ALL_DTYPES)
@pytest.mark.parametrize(("shape", "axis"), SHAPES)
def test_forward_is_the_composite_bit_for_bit(rng, shape, axis, dtype):
    x, r, w, b = _inputs(rng, shape, axis, dtype)
    s_expected = x + r
    y, s, mean, rstd = fn.add_layer_norm(x, r, w, b, axis=axis, return_stats=True)
    assert_identical(s, s_expected)
    for got, exp in zip((y, mean, rstd), fn.layer_norm(s_expected, w, b, axis=axis,
                                                       return_stats=True), strict=True):
        assert_identical(got, exp)
    y, s, rstd = fn.add_rms_norm(x, r, w, axis=axis, return_stats=True)
    assert_identical(s, s_expected)
    for got, exp in zip((y, rstd), fn.rms_norm(s_expected, w, axis=axis, return_stats=True),
                        strict=True):
        assert_identical(got, exp)


@pytest.mark.parametrize("dtype", ALL_DTYPES)
@pytest.mark.parametrize(("shape", "axis"), SHAPES)
def test_backward_is_the_composite_bit_for_bit(rng, shape, axis, dtype):
    x, r, w, b = _inputs(rng, shape, axis, dtype)
    dy = rng.standard_normal(shape).astype(dtype)
    ds = rng.standard_normal(shape).astype(dtype)
    _, s, mean, rstd = fn.add_layer_norm(x, r, w, b, axis=axis, return_stats=True)
    dx, dw, db = fn.add_layer_norm_backward(dy, ds, s, mean, rstd, w, axis=axis)
    edx, edw, edb = fn.layer_norm_backward(dy, s, mean, rstd, w, axis=axis)
    assert_identical(dx, edx + ds)
    assert_identical(dw, edw)
    assert_identical(db, edb)
    dx0, _, _ = fn.add_layer_norm_backward(dy, None, s, mean, rstd, w, axis=axis)
    assert_identical(dx0, edx)
    _, s, rstd = fn.add_rms_norm(x, r, w, axis=axis, return_stats=True)
    dx, dw = fn.add_rms_norm_backward(dy, ds, s, rstd, w, axis=axis)
    edx, edw = fn.rms_norm_backward(dy, s, rstd, w, axis=axis)
    assert_identical(dx, edx + ds)
    assert_identical(dw, edw)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_matches_reference_with_broadcast_residual(rng, dtype):
    shape, rshape = (4, 6, 33), (6, 33)  # an (S, H) skip added to every (B, S, H) batch
    x, r, w, b = _inputs(rng, shape, -1, dtype, rshape)
    dy, ds = (rng.standard_normal(shape).astype(dtype) for _ in range(2))
    got = fn.add_layer_norm(x, r, w, b, return_stats=True)
    exp = ref.add_layer_norm(*(a.astype(np.float64) for a in (x, r, w, b)), return_stats=True)
    for g, e in zip(got, exp, strict=True):
        assert_close(g, e, dtype)
    assert_identical(got[1], x + r)
    grads = fn.add_layer_norm_backward(dy, ds, *got[1:], w)
    egrads = ref.add_layer_norm_backward(dy.astype(np.float64), ds.astype(np.float64),
                                         *(a.astype(np.float64) for a in got[1:]),
                                         w.astype(np.float64))  # fmt: skip
    for g, e in zip(grads, egrads, strict=True):
        assert_close(g, e, dtype, factor=2.0)


@pytest.mark.parametrize("op", ["add_layer_norm", "add_rms_norm"])
@pytest.mark.parametrize("broadcast", [False, True])
def test_reference_backward_against_finite_differences(rng, op, broadcast):
    shape, axis = (3, 4, 5), 1
    rshape = shape[1:] if broadcast else shape
    x, r, w, b = (a.astype(np.float64) for a in _inputs(rng, shape, axis, np.float64, rshape))
    dy, ds = rng.standard_normal(shape), rng.standard_normal(shape)
    weights = np.concatenate([dy.ravel(), ds.ravel()])
    ln = op == "add_layer_norm"
    fwd = getattr(ref, op)

    def both(x_, r_, w_, b_=None):  # y and s, flattened: the loss is y.dy + s.ds
        args = (x_, r_, w_, b_) if ln else (x_, r_, w_)
        y, s = fwd(*args, axis=axis)
        return np.concatenate([y.ravel(), s.ravel()])

    saved = fwd(*((x, r, w, b) if ln else (x, r, w)), axis=axis, return_stats=True)
    grads = getattr(ref, op + "_backward")(dy, ds, *saved[1:], w, axis=axis)
    dx = grads[0]
    check_grad(lambda a: both(a, r, w, b), x, weights, dx)
    dr = dx.sum(axis=0) if broadcast else dx  # residual's gradient: dx summed where it repeats
    check_grad(lambda a: both(x, a, w, b), r, weights, dr)
    check_grad(lambda a: both(x, r, a, b), w, weights, grads[1])
    if ln:
        check_grad(lambda a: both(x, r, w, a), b, weights, grads[2])
    # and fastnorm's backward equals the reference's
    got = getattr(fn, op + "_backward")(dy, ds, *saved[1:], w, axis=axis)
    for g, e in zip(got, grads, strict=True):
        assert_close(g, e, np.float64, factor=2.0)


@pytest.mark.parametrize("half", HALF)
def test_float32_residual_stream_with_half_x(rng, half):
    shape = (5, 300)
    x = rng.standard_normal(shape).astype(half)
    r = rng.standard_normal(shape).astype(np.float32)
    w = (1 + 0.1 * rng.standard_normal(300)).astype(np.float32)
    y, s, mean, rstd = fn.add_layer_norm(x, r, w, residual_dtype=np.float32, return_stats=True)
    assert s.dtype == np.float32 and y.dtype == np.dtype(half)
    s_expected = x.astype(np.float32) + r
    assert_identical(s, s_expected)
    y32, m32, r32 = fn.layer_norm(s_expected, w, return_stats=True)
    assert_identical(y, y32.astype(half))
    assert_identical(mean, m32)
    assert_identical(rstd, r32)
    # a half residual is taken into the float32 stream exactly
    _, s2 = fn.add_rms_norm(x, r.astype(half), residual_dtype="float32")
    assert_identical(s2, x.astype(np.float32) + r.astype(half).astype(np.float32))
    # the backward computes in s's dtype: dx is the float32 gradient of the stream
    dy = rng.standard_normal(shape).astype(half)
    dx, dw, db = fn.add_layer_norm_backward(dy, None, s, mean, rstd, w)
    assert dx.dtype == np.float32
    assert_identical(dx, fn.layer_norm_backward(dy.astype(np.float32), s, mean, rstd, w)[0])


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_in_place_residual_stream(rng, dtype):
    """vLLM's use: out=x, residual_out=residual overwrite both inputs with y and s."""
    x, r, w, _ = _inputs(rng, (8, 129), -1, dtype)
    y_exp, s_exp = fn.add_rms_norm(x, r, w)
    xi, ri = x.copy(), r.copy()
    y, s = fn.add_rms_norm(xi, ri, w, out=xi, residual_out=ri)
    assert y is xi and s is ri
    assert_identical(xi, y_exp)
    assert_identical(ri, s_exp)
    # non-contiguous out= and residual_out=
    big_y, big_s = np.zeros((8, 258), dtype), np.zeros((8, 258), dtype)
    y, s = fn.add_layer_norm(x, r, out=big_y[:, ::2], residual_out=big_s[:, ::2])
    assert_identical(big_s[:, ::2], s_exp)
    assert_identical(big_y[:, ::2], fn.layer_norm(s_exp))


def test_backward_leaves_dy_and_ds_alone_and_accumulates_into_ds(rng):
    x, r, w, b = _inputs(rng, (6, 70), -1, np.float32)
    dy, ds = (rng.standard_normal((6, 70)).astype(np.float32) for _ in range(2))
    _, s, mean, rstd = fn.add_layer_norm(x, r, w, b, return_stats=True)
    dy0, ds0 = dy.copy(), ds.copy()
    dx = fn.add_layer_norm_backward(dy, ds, s, mean, rstd, w)[0]
    assert_identical(dy, dy0)
    assert_identical(ds, ds0)
    got = fn.add_layer_norm_backward(dy, ds, s, mean, rstd, w, out=ds)[0]
    assert got is ds
    assert_identical(ds, dx)
    assert_identical(dy, dy0)


def test_validation():
    x = np.ones((4, 8), np.float32)
    r = np.ones((4, 8), np.float32)
    with pytest.raises(ValueError, match="residual must have"):
        fn.add_layer_norm(x, np.ones((4, 7), np.float32))
    with pytest.raises(ValueError, match="residual must have"):
        fn.add_layer_norm(x, np.ones((2, 4, 8), np.float32))
    with pytest.raises(ValueError, match="residual must have"):  # must hold the normalized axes
        fn.add_layer_norm(np.ones((2, 4, 8), np.float32), np.ones(8, np.float32), axis=1)
    with pytest.raises(TypeError, match="residual_dtype"):
        fn.add_layer_norm(x, r, residual_dtype=np.float64)
    with pytest.raises(TypeError, match="residual_dtype"):
        fn.add_rms_norm(x, r, residual_dtype="not a dtype")
    with pytest.raises(TypeError, match="residual must be"):
        fn.add_rms_norm(x, r.astype(np.int32) > 0)
    with pytest.raises(ValueError, match="must not overlap"):
        fn.add_layer_norm(x, r, out=x, residual_out=x)
    with pytest.raises(ValueError, match="residual_out must have shape"):
        fn.add_layer_norm(x, r[0], residual_out=r[0])  # a broadcast residual cannot hold s
    with pytest.raises(TypeError, match="residual_out must have dtype"):
        fn.add_layer_norm(x, r, residual_out=np.empty((4, 8), np.float64))
    with pytest.raises(ValueError, match="eps"):
        fn.add_rms_norm(x, r, eps=-1.0)
    with pytest.raises(ValueError, match="ds must have shape"):
        fn.add_rms_norm_backward(x, x[:2], x, np.ones(4, np.float32))
    with pytest.raises(ValueError, match="mean must have shape"):
        fn.add_layer_norm_backward(x, None, x, np.ones(3, np.float32), np.ones(4, np.float32))


def test_empty_and_zero_length_rows():
    y, s = fn.add_layer_norm(np.zeros((0, 5)), np.zeros((0, 5)))
    assert y.shape == s.shape == (0, 5)
    y, s, rstd = fn.add_rms_norm(np.zeros((3, 0)), np.zeros((3, 0)), return_stats=True)
    assert y.shape == (3, 0) and np.isnan(rstd).all()
