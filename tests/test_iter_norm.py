"""iter_norm / iter_norm_backward (IterNorm, iterative whitening): the C kernels against
fastnorm.reference and finite differences, the whitening's properties (covariance per group
close to I, data-scale invariance, group_size=1 is batch norm), layouts, threads, half
precision, errors, and the fastnorm.nn layer. The reference itself is checked in
tests/test_iter_norm_reference.py."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import assert_close, assert_identical
from gradcheck import check_grad

import fastnorm as fn
from fastnorm import nn
from fastnorm import reference as ref

CASES = [  # (shape, axis, group_size)
    ((4, 6, 3, 2), 1, 4),  # last group of 2
    ((8, 5), 1, 2),  # last group of 1
    ((3, 2, 2, 6), -1, 4),  # channels-last
    ((6, 16, 9, 9), 1, 16),
    ((5, 70, 9), 1, 16),  # 5 groups, the last of 6; positions not a multiple of 8
    ((64, 3), 1, 1),  # batch norm
    ((2, 9, 9000), 1, 3),  # three position chunks of 8192 (the last partial)
    ((700, 20), 1, 8),  # channels-last rows (B = 1)
    ((2, 40, 24), 2, 5),  # channel axis last, middle batch axis
]


def _data(shape, dtype, seed=0, corr=True):
    """Correlated channels (a random mixing per position) with offsets: the whitening has
    something to undo."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape)
    if corr and len(shape) >= 2:
        x = x + 0.5 * np.roll(x, 1, axis=1)
    return (2.0 * x + 1.5).astype(dtype)


def _params(C, dtype, seed=1):
    rng = np.random.default_rng(seed)
    return (rng.uniform(0.5, 1.5, C).astype(dtype), rng.standard_normal(C).astype(dtype))


def _running(C, d, dtype, seed=2):
    rng = np.random.default_rng(seed)
    G = -(-C // d)
    rw = np.tile(np.eye(d), (G, 1, 1)) + 0.1 * rng.standard_normal((G, d, d))
    return rng.standard_normal(C).astype(dtype), rw.astype(dtype)


# tolerances relative to max(1, |expected|): the whitening multiplies rounding by the
# conditioning of each group's covariance (moderate here)
FACTOR = {np.float32: 20.0, np.float64: 100.0}


@pytest.mark.parametrize("shape,axis,d", CASES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("affine", [True, False])
def test_training_forward_and_backward_match_reference(shape, axis, d, dtype, affine):
    x = _data(shape, dtype)
    C = shape[axis]
    w, b = _params(C, dtype) if affine else (None, None)
    y, mean, wh = fn.iter_norm(x, w, b, group_size=d, axis=axis, return_stats=True)
    y_r, mean_r, wh_r = ref.iter_norm(x, w, b, group_size=d, axis=axis, return_stats=True)
    f = FACTOR[dtype]
    assert_close(y, y_r, dtype, factor=f)
    assert_close(mean, mean_r, dtype, factor=f)
    assert_close(wh, wh_r, dtype, factor=f)
    dy = _data(shape, dtype, seed=3, corr=False)
    dx, dw, db = fn.iter_norm_backward(dy, x, mean, w, group_size=d, axis=axis)
    dx_r, dw_r, db_r = ref.iter_norm_backward(dy, x, mean_r, w, group_size=d, axis=axis)
    assert_close(dx, dx_r, dtype, factor=f)
    assert_close(db, db_r, dtype, factor=f)
    if affine:
        assert_close(dw, dw_r, dtype, factor=f)
    else:
        assert dw is None


@pytest.mark.parametrize("shape,axis,d", CASES[:5])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_eval_forward_and_backward_match_reference(shape, axis, d, dtype):
    x = _data(shape, dtype)
    C = shape[axis]
    w, b = _params(C, dtype)
    rm, rw = _running(C, d, dtype)
    rm0, rw0 = rm.copy(), rw.copy()
    y, mean, wh = fn.iter_norm(x, w, b, rm, rw, group_size=d, axis=axis, training=False,
                               return_stats=True)
    y_r, _, wh_r = ref.iter_norm(x, w, b, rm, rw, group_size=d, axis=axis, training=False,
                                 return_stats=True)
    assert_identical(rm, rm0)
    assert_identical(rw, rw0)
    assert_close(y, y_r, dtype, factor=FACTOR[dtype])
    assert_close(wh, wh_r, dtype)
    dy = _data(shape, dtype, seed=3, corr=False)
    got = fn.iter_norm_backward(dy, x, mean, w, group_size=d, axis=axis, training=False,
                                whitening=wh)
    want = ref.iter_norm_backward(dy, x, rm, w, group_size=d, axis=axis, training=False,
                                  whitening=rw)
    for a, e in zip(got, want, strict=True):
        assert_close(a, e, dtype, factor=FACTOR[dtype])


@pytest.mark.parametrize("shape,axis,d", [((4, 6, 3), 1, 4), ((9, 5), 1, 2),
                                          ((3, 2, 6), -1, 3)])
@pytest.mark.parametrize("iterations", [0, 1, 3, 5])
@pytest.mark.parametrize("training", [True, False])
def test_backward_matches_finite_differences(shape, axis, d, iterations, training):
    """The C backward is the exact derivative of the C forward (through the iterations)."""
    x = _data(shape, np.float64)
    C = shape[axis]
    w, b = _params(C, np.float64)
    rm, rw = _running(C, d, np.float64)
    dy = _data(shape, np.float64, seed=5, corr=False)
    kw = {"group_size": d, "iterations": iterations, "axis": axis, "training": training}
    _, mean, wh = fn.iter_norm(x, w, b, rm.copy(), rw.copy(), return_stats=True, **kw)
    dx, dw, db = fn.iter_norm_backward(dy, x, mean, w, whitening=wh, **kw)

    def f(x_, w_, b_):
        return fn.iter_norm(x_, w_, b_, rm.copy(), rw.copy(), **kw)

    check_grad(lambda x_: f(x_, w, b), x, dy, dx, rtol=1e-5, atol=1e-7)
    check_grad(lambda w_: f(x, w_, b), w, dy, dw, rtol=1e-5, atol=1e-7)
    check_grad(lambda b_: f(x, w, b_), b, dy, db, rtol=1e-5, atol=1e-7)


def _group_cov(y, axis, d):
    C = y.shape[axis]
    ym = np.moveaxis(y.astype(np.float64), axis, 0).reshape(C, -1)
    ym = ym - ym.mean(axis=1, keepdims=True)
    return [ym[g:g + d] @ ym[g:g + d].T / ym.shape[1] for g in range(0, C, d)]


@pytest.mark.parametrize("iterations,tol", [(5, 0.2), (8, 1e-3), (10, 1e-9), (12, 1e-9)])
def test_whitened_covariance_is_close_to_identity(iterations, tol):
    """Two 16-channel groups of correlated channels (the eigenvalues of S = Σ / tr Σ
    between 0.013 and 0.12): Newton's iteration converges from below, slowly for the small
    eigenvalues. Measured largest |cov - I|: 0.54 after 3 iterations, 0.14 after 5, 1.1e-4
    after 8, 1e-13 after 10; later iterations let rounding grow again (2e-12 after 12,
    2e-10 after 15: the uncoupled iteration is not self-correcting). eps = 0, float64."""
    x = _data((64, 32, 8, 8), np.float64)
    y = fn.iter_norm(x, group_size=16, iterations=iterations, eps=0.0)
    for cov in _group_cov(y, 1, 16):
        assert np.abs(cov - np.eye(16)).max() < tol
    if iterations == 5:  # the channels do start correlated
        assert min(np.abs(c - np.eye(16)).max() for c in _group_cov(x, 1, 16)) > 1.0


@pytest.mark.parametrize("lam", [1e-3, 7.0, 1e4])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_data_scale_invariance(lam, dtype):
    """With eps = 0, iter_norm(λx) = iter_norm(x) (S = Σ / tr Σ does not change)."""
    x = _data((16, 8, 5, 5), np.float64)
    y = fn.iter_norm(x.astype(dtype), group_size=4, eps=0.0)
    y_lam = fn.iter_norm((lam * x).astype(dtype), group_size=4, eps=0.0)
    assert_close(y_lam, y.astype(np.float64), dtype, factor=FACTOR[dtype])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_group_size_one_is_batch_norm(dtype):
    x = _data((8, 5, 6, 7), dtype)
    w, b = _params(5, dtype)
    y, mean, wh = fn.iter_norm(x, w, b, group_size=1, return_stats=True)
    y_bn, mean_bn, rstd_bn = fn.batch_norm(x, w, b, return_stats=True)
    assert_close(y, y_bn.astype(np.float64), dtype, factor=4)
    assert_close(wh.reshape(5), rstd_bn.astype(np.float64), dtype)
    dy = _data(x.shape, dtype, seed=4, corr=False)
    got = fn.iter_norm_backward(dy, x, mean, w, group_size=1)
    want = fn.batch_norm_backward(dy, x, mean_bn, rstd_bn, w)
    for a, e in zip(got, want, strict=True):
        assert_close(a, e.astype(np.float64), dtype, factor=4)


@pytest.mark.parametrize("r_dtype", [np.float32, np.float64])
def test_running_statistics_update(r_dtype):
    x = _data((10, 6, 4), np.float32)
    rm, rw = _running(6, 4, r_dtype)
    rm_r, rw_r = rm.astype(np.float64), rw.astype(np.float64)
    fn.iter_norm(x, None, None, rm, rw, group_size=4, momentum=0.25)
    ref.iter_norm(x, None, None, rm_r, rw_r, group_size=4, momentum=0.25)
    np.testing.assert_allclose(rm, rm_r, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(rw, rw_r, rtol=1e-5, atol=1e-6)


def test_layouts_agree():
    """NCHW, NHWC and a strided view give the same result."""
    x = _data((6, 12, 7, 5), np.float64)
    w, b = _params(12, np.float64)
    y = fn.iter_norm(x, w, b, group_size=5)
    y_last = fn.iter_norm(np.ascontiguousarray(x.transpose(0, 2, 3, 1)), w, b, group_size=5,
                          axis=-1)
    assert_close(y_last.transpose(0, 3, 1, 2), y, np.float64)
    big = np.zeros((6, 12, 7, 10))
    big[..., ::2] = x
    assert_close(fn.iter_norm(big[..., ::2], w, b, group_size=5), y, np.float64)


@pytest.mark.parametrize("shape,axis", [((16, 32, 33, 33), 1), ((4000, 24), 1)])
def test_bitwise_identical_for_any_thread_count(threads, shape, axis):
    x = _data(shape, np.float32)
    dy = _data(shape, np.float32, seed=9, corr=False)
    outs = []
    for n in (1, 2, 3):
        with threads(n):
            y, mean, wh = fn.iter_norm(x, group_size=8, axis=axis, return_stats=True)
            grads = fn.iter_norm_backward(dy, x, mean, None, group_size=8, axis=axis)
        outs.append((y, mean, wh, grads[0], grads[2]))
    for o in outs[1:]:
        for a, b in zip(outs[0], o, strict=True):
            assert_identical(a, b)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_precision_through_float32(dtype):
    if dtype == "bfloat16":
        dtype = pytest.importorskip("ml_dtypes").bfloat16
    x = _data((8, 8, 5, 5), np.float32).astype(dtype)
    w, b = _params(8, np.float32)
    y, mean, wh = fn.iter_norm(x, w, b, group_size=4, return_stats=True)
    assert y.dtype == x.dtype and mean.dtype == np.float32 and wh.dtype == np.float32
    y32 = fn.iter_norm(x.astype(np.float32), w, b, group_size=4)
    assert_identical(y, y32.astype(dtype))
    dy = _data(x.shape, np.float32, seed=3, corr=False).astype(dtype)
    dx, dw, db = fn.iter_norm_backward(dy, x, mean, w, group_size=4)
    dx32, dw32, db32 = fn.iter_norm_backward(dy.astype(np.float32), x.astype(np.float32),
                                             mean, w, group_size=4)
    assert dx.dtype == x.dtype
    assert_identical(dx, dx32.astype(dtype))
    assert_identical(dw, dw32)
    assert_identical(db, db32)


def test_out_in_place_and_empty():
    x = _data((5, 6, 7), np.float64)
    y = fn.iter_norm(x, group_size=4)
    out = np.empty_like(x)
    assert fn.iter_norm(x, group_size=4, out=out) is out
    assert_identical(out, y)
    xi = x.copy()
    fn.iter_norm(xi, group_size=4, out=xi)
    assert_identical(xi, y)
    e = np.zeros((0, 6, 3))
    ye, mean, wh = fn.iter_norm(e, group_size=4, return_stats=True)
    assert ye.shape == e.shape and np.isnan(mean).all()
    # the groups' blocks NaN (no batch statistics), the rest of the smaller last block zero
    assert np.isnan(wh[0]).all() and np.isnan(wh[1, :2, :2]).all()
    assert (wh[1, 2:] == 0).all() and (wh[1, :, 2:] == 0).all()
    _, _, wr = ref.iter_norm(e, group_size=4, return_stats=True)
    np.testing.assert_array_equal(wh, wr)
    dx, _, db = fn.iter_norm_backward(e, e, np.zeros(6), None, group_size=4)
    assert dx.shape == e.shape and (db == 0).all()


def test_nonfinite_input_stays_in_its_group():
    x = _data((6, 8, 5), np.float64)
    x[2, 1, 3] = np.nan
    y = fn.iter_norm(x, group_size=4)
    assert np.isnan(y[:, :4]).all() and np.isfinite(y[:, 4:]).all()


def test_errors():
    x = _data((4, 6, 3), np.float64)
    with pytest.raises(ValueError, match="group_size"):
        fn.iter_norm(x, group_size=0)
    with pytest.raises(TypeError, match="group_size"):
        fn.iter_norm(x, group_size=2.5)
    with pytest.raises(ValueError, match="iterations"):
        fn.iter_norm(x, iterations=-1)
    with pytest.raises(ValueError, match="running_mean and running_whitening"):
        fn.iter_norm(x, training=False)
    with pytest.raises(ValueError, match="running_whitening"):
        fn.iter_norm(x, None, None, np.zeros(6), np.zeros((2, 3, 3)), group_size=4)
    with pytest.raises(TypeError, match="same dtype"):
        fn.iter_norm(x, None, None, np.zeros(6), np.zeros((2, 4, 4), np.float32),
                     group_size=4)
    with pytest.raises(ValueError, match="read-only"):
        rw = np.zeros((2, 4, 4))
        rw.flags.writeable = False
        fn.iter_norm(x, None, None, np.zeros(6), rw, group_size=4)
    with pytest.raises(ValueError, match="whitening"):
        fn.iter_norm_backward(x, x, np.zeros(6), group_size=4, training=False)
    with pytest.raises(ValueError, match="at least 2"):
        fn.iter_norm(np.zeros(5))
    with pytest.raises(ValueError, match="weight"):
        fn.iter_norm(x, np.ones(5), group_size=4)
    with pytest.raises(ValueError, match="momentum"):
        fn.iter_norm(x, momentum=2.0)


def test_nn_iter_norm_layer():
    rng = np.random.default_rng(4)
    layer = nn.IterNorm(6, group_size=4, dtype=np.float64)
    assert layer.running_whitening.shape == (2, 4, 4)
    assert_identical(layer.running_whitening[1], np.pad(np.eye(2), ((0, 2), (0, 2))))
    x = _data((20, 6, 3), np.float64)
    y = layer.forward(x)
    assert_close(y, ref.iter_norm(x, group_size=4), np.float64, factor=100)
    dy = rng.standard_normal(x.shape)
    dx = layer.backward(dy)
    _, mean, _ = ref.iter_norm(x, group_size=4, return_stats=True)
    dx_r, dw_r, db_r = ref.iter_norm_backward(dy, x, mean, np.ones(6), group_size=4)
    assert_close(dx, dx_r, np.float64, factor=100)
    assert_close(layer.grads["weight"], dw_r, np.float64, factor=100)
    assert_close(layer.grads["bias"], db_r, np.float64, factor=100)
    np.testing.assert_allclose(layer.running_mean, 0.1 * mean, rtol=1e-12)
    y_eval = layer.forward(x, training=False)
    rm, rw = layer.running_mean.copy(), layer.running_whitening.copy()
    assert_close(y_eval, ref.iter_norm(x, None, None, rm, rw, group_size=4, training=False),
                 np.float64, factor=100)
    dx_eval = layer.backward(dy)
    dx_er, _, _ = ref.iter_norm_backward(dy, x, rm, np.ones(6), group_size=4, training=False,
                                         whitening=rw)
    assert_close(dx_eval, dx_er, np.float64, factor=100)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_constant_input_gives_the_bias(dtype):
    x = np.full((6, 5, 4), 3.25, dtype)
    w, b = _params(5, dtype)
    y, mean, _ = fn.iter_norm(x, w, b, group_size=2, return_stats=True)
    assert_identical(y, np.broadcast_to(b[:, None], y.shape).astype(dtype))
    dx, dw, db = fn.iter_norm_backward(np.ones_like(x), x, mean, w, group_size=2)
    assert np.isfinite(dx).all() and np.isfinite(dw).all() and np.isfinite(db).all()
    with np.errstate(all="ignore"):  # eps = 0: 0 / 0, as in the reference
        y0 = fn.iter_norm(x, group_size=2, eps=0.0)
        assert np.isnan(y0).all() and np.isnan(ref.iter_norm(x, group_size=2, eps=0.0)).all()


@pytest.mark.parametrize("case", ["mean1e4", "huge", "tiny"])
def test_float32_at_the_ends_of_its_range(case):
    """Large mean and small spread (the shift), and data near float32's limits: magnitudes
    near 1e37 (centred values would overflow a float) and subnormal ones (the whitening's
    entries would), computed through float64 and equal to the reference."""
    rng = np.random.default_rng(8)
    base = rng.standard_normal((16, 6, 5, 5))
    x = {"mean1e4": 1e4 + 1e-3 * base, "huge": 3e37 * base, "tiny": 1e-41 * base}[case]
    x = x.astype(np.float32)
    w, b = _params(6, np.float32)
    rm, rw = np.zeros(6, np.float32), np.tile(np.eye(4, dtype=np.float32), (2, 1, 1))
    y, mean, wh = fn.iter_norm(x, w, b, rm, rw, group_size=4, return_stats=True)
    y_r, mean_r, _ = ref.iter_norm(x, w, b, group_size=4, return_stats=True)
    assert np.isfinite(y).all()
    assert_close(y, y_r, np.float32, factor=FACTOR[np.float32])
    # (subnormal float32 running means hold few digits: judged against the smallest normal)
    np.testing.assert_allclose(rm, 0.1 * mean_r, rtol=1e-5, atol=np.finfo(np.float32).tiny)
    dy = rng.standard_normal(x.shape).astype(np.float32)
    dx, dw, db = fn.iter_norm_backward(dy, x, mean, w, group_size=4)
    dx_r, dw_r, db_r = ref.iter_norm_backward(dy, x, mean_r, w, group_size=4)
    assert np.isfinite(dx).all()
    np.testing.assert_allclose(dx, dx_r, rtol=1e-3, atol=1e-4 * np.abs(dx_r).max())
    assert_close(dw, dw_r, np.float32, factor=FACTOR[np.float32])
    assert_close(db, db_r, np.float32)


def test_inf_stays_in_its_group():
    x = _data((6, 8, 5), np.float64)
    x[1, 6, 2] = np.inf
    with np.errstate(all="ignore"):
        y = fn.iter_norm(x, group_size=4)
    assert np.isnan(y[:, 4:]).all() and np.isfinite(y[:, :4]).all()


def test_strided_and_misaligned_views():
    x = _data((5, 8, 9), np.float32)
    expect = fn.iter_norm(x, group_size=4)
    buf = np.zeros(x.size + 1, np.float32)
    mis = buf[1:].reshape(x.shape)
    mis[...] = x
    assert_identical(fn.iter_norm(mis, group_size=4), expect)
    rev = x[:, :, ::-1].copy()[:, :, ::-1]
    assert_identical(fn.iter_norm(rev, group_size=4), expect)


def test_non_contiguous_running_whitening_is_rejected_and_bounds():
    x = _data((4, 6, 3), np.float64)
    rw = np.zeros((2, 4, 4)).transpose(0, 2, 1)[:, ::-1]
    with pytest.raises(ValueError, match="contiguous"):
        fn.iter_norm(x, None, None, np.zeros(6), rw, group_size=4)
    with pytest.raises(ValueError, match="at most"):
        fn.iter_norm(x, iterations=10**6)
    with pytest.raises(ValueError, match="at most"):
        fn.iter_norm(x, group_size=2**40)
