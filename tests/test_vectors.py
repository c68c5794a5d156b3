"""l2_normalize, weight_norm, cosine_norm and their backward passes, against
fastnorm.reference, finite differences, and the edge cases of EDGE_CASES.md."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import FLOAT_DTYPES, assert_close, assert_identical, layouts
from gradcheck import check_grad
from numpy.exceptions import AxisError

import fastnorm as fn
from fastnorm import reference as ref

F32, F64 = np.dtype(np.float32), np.dtype(np.float64)
LENGTHS = (1, 3, 7, 15, 17, 33, 63, 64, 65, 4097)
BAD_DTYPES = (np.int32, np.int64, np.bool_, np.complex64, np.complex128, object, np.longdouble)


def f64(a):
    return None if a is None else np.asarray(a, dtype=np.float64)


def normal(rng, shape, dtype, loc=0.0, scale=1.0):
    return (loc + scale * rng.standard_normal(shape)).astype(dtype)


def keep_shape(shape, axis):
    axis = axis % len(shape)
    return tuple(s if i == axis else 1 for i, s in enumerate(shape))


# --------------------------------------------------------------------------- runners
#
# Each runs the fastnorm forward (with stats) and backward on the given inputs, and the
# reference on the same values in float64, and returns both results as flat tuples.


def run_l2(x, dy, axis=-1, eps=1e-12):
    y, norm = fn.l2_normalize(x, axis=axis, eps=eps, return_stats=True)
    dx = fn.l2_normalize_backward(dy, y, norm, axis=axis, eps=eps)
    return y, norm, dx


def ref_l2(x, dy, y, norm, axis=-1, eps=1e-12):
    """Reference forward from x; reference backward from the same (dy, y, norm) values."""
    ry, rnorm = ref.l2_normalize(f64(x), axis=axis, eps=eps, return_stats=True)
    rdx = ref.l2_normalize_backward(f64(dy), f64(y), f64(norm), axis=axis, eps=eps)
    return ry, rnorm, rdx


def run_wn(v, g, dw, axis=0):
    w, norm = fn.weight_norm(v, g, axis=axis, return_stats=True)
    dv, dg = fn.weight_norm_backward(dw, v, g, norm, axis=axis)
    return w, norm, dv, dg


def ref_wn(v, g, dw, norm, axis=0):
    rw, rnorm = ref.weight_norm(f64(v), f64(g), axis=axis, return_stats=True)
    rdv, rdg = ref.weight_norm_backward(f64(dw), f64(v), f64(g), f64(norm), axis=axis)
    return rw, rnorm, rdv, rdg


def run_cn(x, w, dy, eps=1e-12):
    y, xn, wn = fn.cosine_norm(x, w, eps=eps, return_stats=True)
    dx, dw = fn.cosine_norm_backward(dy, x, w, xn, wn, eps=eps)
    return y, xn, wn, dx, dw


def ref_cn(x, w, dy, xn, wn, eps=1e-12):
    ry, rxn, rwn = ref.cosine_norm(f64(x), f64(w), eps=eps, return_stats=True)
    rdx, rdw = ref.cosine_norm_backward(f64(dy), f64(x), f64(w), f64(xn), f64(wn), eps=eps)
    return ry, rxn, rwn, rdx, rdw


def compare(actual, expected, dtype, names, factor=1.0):
    assert len(actual) == len(expected) == len(names)
    for a, e, name in zip(actual, expected, names, strict=True):
        assert_close(a, e, dtype, factor=factor, err_msg=name)


L2_NAMES = ("y", "norm", "dx")
WN_NAMES = ("w", "norm", "dv", "dg")
CN_NAMES = ("y", "x_norm", "w_norm", "dx", "dw")


# --------------------------------------------------------------------------- l2_normalize


def l2_cases():
    """(shape builder from the normalized length K, axis): first, middle, last, negative."""
    return [
        (lambda K: (K,), 0),
        (lambda K: (K,), -1),
        (lambda K: (5, K), -1),
        (lambda K: (5, K), 1),
        (lambda K: (K, 6), 0),
        (lambda K: (K, 6), -2),
        (lambda K: (3, K, 5), 1),
        (lambda K: (3, K, 5), -2),
        (lambda K: (K, 2, 3), 0),
        (lambda K: (2, 3, K), 2),
    ]


L2_CASES = l2_cases()
L2_IDS = [
    "1d-0",
    "1d-neg",
    "2d-last",
    "2d-1",
    "2d-first",
    "2d-neg2",
    "3d-mid",
    "3d-neg2",
    "3d-first",
    "3d-last",
]


@pytest.mark.parametrize("K", LENGTHS)
@pytest.mark.parametrize(("make_shape", "axis"), L2_CASES, ids=L2_IDS)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_l2_normalize_matches_reference(rng, dtype, make_shape, axis, K):
    shape = make_shape(K)
    x = normal(rng, shape, dtype, 0.5, 2.0)
    dy = normal(rng, shape, dtype)
    out = run_l2(x, dy, axis=axis)
    compare(out, ref_l2(x, dy, out[0], out[1], axis=axis), dtype, L2_NAMES)
    y, norm, dx = out
    assert y.shape == x.shape and y.dtype == dtype
    expected_norm_shape = shape[: axis % len(shape)] + shape[axis % len(shape) + 1 :]
    assert norm.shape == expected_norm_shape and norm.dtype == dtype
    assert dx.shape == x.shape and dx.dtype == dtype
    assert_identical(fn.l2_normalize(x, axis=axis), y, "return_stats=False differs")


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_l2_normalize_backward_matches_reference_from_x(rng, dtype):
    x = normal(rng, (6, 17), dtype, 0.2, 1.5)
    dy = normal(rng, x.shape, dtype)
    y, norm, dx = run_l2(x, dy)
    ry, rnorm = ref.l2_normalize(f64(x), return_stats=True)
    assert_close(dx, ref.l2_normalize_backward(f64(dy), ry, rnorm), dtype, factor=4.0)


@pytest.mark.parametrize(
    ("shape", "axis"),
    [((3, 7), -1), ((3, 7), 0), ((2, 5, 3), 1), ((2, 5, 3), -3), ((4,), 0), ((3, 1), 1)],
)
def test_l2_normalize_backward_finite_differences(rng, shape, axis):
    x = normal(rng, shape, F64, 0.3, 1.0)
    dy = normal(rng, shape, F64)
    y, norm = fn.l2_normalize(x, axis=axis, return_stats=True)
    dx = fn.l2_normalize_backward(dy, y, norm, axis=axis)
    check_grad(lambda a: fn.l2_normalize(a, axis=axis), x, dy, dx, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("n", [63, 64, 65, 1000, 16384, 16385, 40000])
def test_l2_normalize_backward_last_axis_spans(rng, dtype, n):
    """Along the last axis each row's sum and dx are computed in one go from 64 elements on
    (rows longer than 16384 summed in pieces): against the reference, with rows clamped by
    eps, a zero row and dy = y among them."""
    x = normal(rng, (5, n), dtype, 0.1, 1.0)
    x[1] = 0.0
    x[2] *= 1e-3
    dy = normal(rng, x.shape, dtype)
    eps = 0.5 * float(np.linalg.norm(x[2].astype(F64)))  # row 2 is clamped
    y, norm = fn.l2_normalize(x, eps=eps, return_stats=True)
    for d in (dy, y):
        dx = fn.l2_normalize_backward(d, y, norm, eps=eps)
        rdx = ref.l2_normalize_backward(f64(d), f64(y), f64(norm), eps=eps)
        assert_close(dx, rdx, dtype, factor=4.0, err_msg=f"n={n}")
        for i in range(x.shape[0]):  # each row as its own call: the same bits
            assert_identical(fn.l2_normalize_backward(d[i:i + 1], y[i:i + 1], norm[i:i + 1],
                                                      eps=eps), dx[i:i + 1], f"row {i}")


def test_l2_normalize_backward_last_axis_finite_differences(rng):
    x = normal(rng, (3, 70), F64, 0.3, 1.0)
    dy = normal(rng, x.shape, F64)
    y, norm = fn.l2_normalize(x, return_stats=True)
    dx = fn.l2_normalize_backward(dy, y, norm)
    check_grad(lambda a: fn.l2_normalize(a), x, dy, dx, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("eps", [0.5, 2.0])
def test_l2_normalize_backward_finite_differences_clamped(rng, eps):
    """Rows whose norm is below eps are divided by the constant eps."""
    x = normal(rng, (4, 5), F64, 0.0, 0.1)
    x[1] *= 100.0
    dy = normal(rng, x.shape, F64)
    y, norm = fn.l2_normalize(x, eps=eps, return_stats=True)
    assert (norm < eps).any() and (norm > eps).any()
    dx = fn.l2_normalize_backward(dy, y, norm, eps=eps)
    check_grad(lambda a: fn.l2_normalize(a, eps=eps), x, dy, dx, rtol=1e-6, atol=1e-8)
    assert_close(dx, ref.l2_normalize_backward(dy, y, norm, eps=eps), F64)


def test_l2_normalize_docstring_example():
    y = fn.l2_normalize(np.array([[3.0, 4.0], [0.0, 0.0]]))
    np.testing.assert_allclose(y, [[0.6, 0.8], [0.0, 0.0]], rtol=1e-15, atol=0)


def test_l2_normalize_array_like():
    y = fn.l2_normalize([[3.0, 4.0], [6.0, 8.0]])
    assert y.dtype == F64
    np.testing.assert_allclose(y, [[0.6, 0.8], [0.6, 0.8]], rtol=1e-15)


# --------------------------------------------------------------------------- weight_norm


def wn_cases():
    """(shape builder from the reduced length K, axis)."""
    return [
        (lambda K: (4, K), 0),
        (lambda K: (4, K), -2),
        (lambda K: (K, 5), 1),
        (lambda K: (K, 5), -1),
        (lambda K: (2, 3, K), 1),
        (lambda K: (K, 3, 2), -2),
        (lambda K: (3, 2, K), 0),
        (lambda K: (K, 2, 3), 2),
        (lambda K: (K,), 0),
    ]


WN_CASES = wn_cases()
WN_IDS = ["2d-0", "2d-neg2", "2d-1", "2d-neg1", "3d-mid", "3d-neg2", "3d-first", "3d-last", "1d"]


@pytest.mark.parametrize("g_keep", [False, True], ids=["g-flat", "g-keepdims"])
@pytest.mark.parametrize("K", LENGTHS)
@pytest.mark.parametrize(("make_shape", "axis"), WN_CASES, ids=WN_IDS)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_weight_norm_matches_reference(rng, dtype, make_shape, axis, K, g_keep):
    shape = make_shape(K)
    v = normal(rng, shape, dtype, 0.1, 1.0)
    C = shape[axis]
    g = normal(rng, (C,), dtype, 1.0, 0.5)
    if g_keep:
        g = g.reshape(keep_shape(shape, axis))
    dw = normal(rng, shape, dtype)
    out = run_wn(v, g, dw, axis=axis)
    compare(out, ref_wn(v, g, dw, out[1], axis=axis), dtype, WN_NAMES)
    w, norm, dv, dg = out
    assert w.shape == shape and w.dtype == dtype
    assert norm.shape == (C,) and norm.dtype == dtype
    assert dv.shape == shape and dv.dtype == dtype
    assert dg.shape == g.shape and dg.dtype == dtype
    assert_identical(fn.weight_norm(v, g, axis=axis), w, "return_stats=False differs")


@pytest.mark.parametrize("g_keep", [False, True])
@pytest.mark.parametrize(
    ("shape", "axis"), [((3, 4), 0), ((3, 4), 1), ((2, 3, 4), 1), ((2, 3, 4), -1), ((5,), 0)]
)
def test_weight_norm_backward_finite_differences(rng, shape, axis, g_keep):
    v = normal(rng, shape, F64, 0.2, 1.0)
    C = shape[axis]
    g = normal(rng, (C,), F64, 1.0, 0.5)
    if g_keep:
        g = g.reshape(keep_shape(shape, axis))
    dw = normal(rng, shape, F64)
    w, norm = fn.weight_norm(v, g, axis=axis, return_stats=True)
    dv, dg = fn.weight_norm_backward(dw, v, g, norm, axis=axis)
    check_grad(lambda a: fn.weight_norm(a, g, axis=axis), v, dw, dv, rtol=1e-6, atol=1e-8)
    check_grad(lambda a: fn.weight_norm(v, a, axis=axis), g, dw, dg, rtol=1e-6, atol=1e-8)


def test_weight_norm_docstring_example():
    np.testing.assert_array_equal(
        fn.weight_norm(np.array([[3.0, 4.0]]), np.array([10.0])), [[6.0, 8.0]]
    )


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_weight_norm_g_dtype_is_cast(rng, dtype):
    v = normal(rng, (3, 5), dtype)
    g64 = normal(rng, (3,), F64, 1.0, 0.5)
    other = F32 if dtype == F64 else F64
    w = fn.weight_norm(v, g64.astype(other))
    assert w.dtype == dtype
    assert_identical(w, fn.weight_norm(v, g64.astype(other).astype(dtype)))
    w_int = fn.weight_norm(v, np.array([1, 2, 3]))
    assert_close(w_int, ref.weight_norm(f64(v), [1.0, 2.0, 3.0]), dtype)


# --------------------------------------------------------------------------- cosine_norm


@pytest.mark.parametrize("D", LENGTHS)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_cosine_norm_matches_reference(rng, dtype, D):
    x = normal(rng, (5, D), dtype, 0.3, 1.0)
    w = normal(rng, (3, D), dtype, -0.2, 1.0)
    dy = normal(rng, (5, 3), dtype)
    out = run_cn(x, w, dy)
    compare(out, ref_cn(x, w, dy, out[1], out[2]), dtype, CN_NAMES)
    y, xn, wn, dx, dw = out
    assert y.shape == (5, 3) and y.dtype == dtype
    assert xn.shape == (5,) and wn.shape == (3,)
    assert xn.dtype == wn.dtype == dtype
    assert dx.shape == x.shape and dw.shape == w.shape
    assert dx.dtype == dw.dtype == dtype
    assert np.all(np.abs(y) <= 1.0)
    assert_identical(fn.cosine_norm(x, w), y, "return_stats=False differs")


@pytest.mark.parametrize(("N", "M", "D"), [(3, 2, 4), (1, 1, 1), (4, 3, 7), (2, 5, 3)])
def test_cosine_norm_backward_finite_differences(rng, N, M, D):
    x = normal(rng, (N, D), F64, 0.2, 1.0)
    w = normal(rng, (M, D), F64, -0.1, 1.0)
    dy = normal(rng, (N, M), F64)
    y, xn, wn = fn.cosine_norm(x, w, return_stats=True)
    dx, dw = fn.cosine_norm_backward(dy, x, w, xn, wn)
    if D > 1:
        check_grad(lambda a: fn.cosine_norm(a, w), x, dy, dx, rtol=1e-6, atol=1e-8)
        check_grad(lambda a: fn.cosine_norm(x, a), w, dy, dw, rtol=1e-6, atol=1e-8)
    else:
        # D = 1: y = sign(x) sign(w) is locally constant, so both gradients vanish.
        np.testing.assert_allclose(dx, 0.0, atol=1e-15)
        np.testing.assert_allclose(dw, 0.0, atol=1e-15)


def test_cosine_norm_docstring_example():
    y = fn.cosine_norm(np.array([[1.0, 0.0], [1.0, 1.0]]), np.array([[2.0, 0.0]]))
    np.testing.assert_allclose(y, [[1.0], [np.sqrt(0.5)]], rtol=1e-15)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_cosine_norm_w_cast_to_x_dtype(rng, dtype):
    other = F32 if dtype == F64 else F64
    x = normal(rng, (4, 9), dtype)
    w = normal(rng, (3, 9), other)
    y = fn.cosine_norm(x, w)
    assert y.dtype == dtype
    assert_identical(y, fn.cosine_norm(x, w.astype(dtype)))
    assert_close(y, ref.cosine_norm(f64(x), f64(w.astype(dtype))), dtype)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("scale", [1.0, 1e-20, 1e20, 1e30])
def test_cosine_norm_bounded(rng, dtype, scale):
    """Parallel, antiparallel and near-parallel vectors at any magnitude stay in [-1, 1]."""
    base = normal(rng, (1, 33), F64)
    rows = [base, -base, 3.0 * base, base + 1e-9 * normal(rng, (1, 33), F64)]
    x = (np.concatenate(rows + [normal(rng, (3, 33), F64)]) * scale).astype(dtype)
    w = np.concatenate([base * 7.0, -base * 0.5, normal(rng, (2, 33), F64)]) * scale
    w = w.astype(dtype)
    y = fn.cosine_norm(x, w, eps=0.0)
    assert np.all(np.isfinite(y))
    assert np.all(np.abs(y) <= 1.0)
    assert_close(y, ref.cosine_norm(f64(x), f64(w), eps=0.0), dtype)
    np.testing.assert_allclose(np.abs(y[:3, :2]), 1.0, rtol=2e-6 if dtype == F32 else 1e-14)


def test_cosine_norm_identical_rows_are_one(rng):
    for dtype in FLOAT_DTYPES:
        for D in LENGTHS:
            x = normal(rng, (4, D), dtype, 0.0, 1e3)
            y = fn.cosine_norm(x, x)
            assert np.all(np.abs(y) <= 1.0)
            np.testing.assert_allclose(np.diag(y), 1.0, rtol=1e-6 if dtype == F32 else 1e-14)


# --------------------------------------------------------------------------- zero vectors


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("axis", [-1, 0, 1])
def test_l2_normalize_zero_vector(rng, dtype, axis):
    x = normal(rng, (4, 6, 17) if axis != 0 else (17, 4, 6), dtype, 0.5, 1.0)
    dy = normal(rng, x.shape, dtype)
    idx = [slice(None)] * 3
    idx[1 if axis % 3 == 0 else 0] = 2  # a set of whole vectors along `axis`
    zero_at = tuple(idx)
    x[zero_at] = 0
    y, norm, dx = run_l2(x, dy, axis=axis)
    assert np.all(np.isfinite(y)) and np.all(np.isfinite(norm)) and np.all(np.isfinite(dx))
    assert np.all(y[zero_at] == 0)
    assert np.count_nonzero(norm == 0) > 0
    ry, rnorm, rdx = ref_l2(x, dy, y, norm, axis=axis)
    assert_close(y, ry, dtype)
    assert_close(norm, rnorm, dtype)
    # the zero vectors' gradients are dy / eps: compare them on their own scale
    zero = np.expand_dims(norm == 0, axis) & np.ones(x.shape, bool)
    assert_close(dx[zero], rdx[zero], dtype)
    assert_close(dx[~zero], rdx[~zero], dtype)
    np.testing.assert_allclose(f64(dx[zero]), f64(dy[zero]) / 1e-12, rtol=1e-6)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_l2_normalize_all_zero(dtype):
    x = np.zeros((3, 65), dtype)
    dy = np.ones((3, 65), dtype)
    y, norm, dx = run_l2(x, dy, eps=1e-3)
    assert_identical(y, np.zeros_like(x))
    assert_identical(norm, np.zeros(3, dtype))
    assert_close(dx, np.full(x.shape, 1e3), dtype)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_l2_normalize_zero_vector_eps_zero(dtype):
    """eps = 0 on a zero vector: 0 / 0, as in the reference."""
    x = np.array([[0.0, 0.0], [3.0, 4.0]], dtype)
    y = fn.l2_normalize(x, eps=0.0)
    with np.errstate(all="ignore"):
        assert_close(y, ref.l2_normalize(f64(x), eps=0.0), dtype)
    assert np.isnan(y[0]).all()
    np.testing.assert_allclose(y[1], np.array([0.6, 0.8], dtype), rtol=1e-6)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize(("shape", "axis"), [((4, 9), 0), ((4, 9), 1), ((3, 5, 17), 1)])
def test_weight_norm_zero_slice(rng, dtype, shape, axis):
    v = normal(rng, shape, dtype)
    idx = [slice(None)] * len(shape)
    idx[axis] = 1
    v[tuple(idx)] = 0
    g = normal(rng, (shape[axis],), dtype, 1.0, 0.5)
    dw = normal(rng, shape, dtype)
    out = run_wn(v, g, dw, axis=axis)
    for a in out:
        assert np.all(np.isfinite(a))
    w, norm, dv, dg = out
    assert norm[1] == 0 and dg[1] == 0
    assert np.all(w[tuple(idx)] == 0) and np.all(dv[tuple(idx)] == 0)
    compare(out, ref_wn(v, g, dw, norm, axis=axis), dtype, WN_NAMES)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_weight_norm_all_zero(dtype):
    v = np.zeros((3, 4), dtype)
    g = np.ones(3, dtype)
    w, norm, dv, dg = run_wn(v, g, np.ones((3, 4), dtype))
    for a, expected in zip((w, norm, dv, dg), (v, g * 0, v, g * 0), strict=True):
        assert_identical(a, expected.astype(dtype))


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_cosine_norm_zero_rows(rng, dtype):
    x = normal(rng, (5, 17), dtype)
    w = normal(rng, (4, 17), dtype)
    x[2] = 0
    w[1] = 0
    dy = normal(rng, (5, 4), dtype)
    y, xn, wn, dx, dw = out = run_cn(x, w, dy)
    for a in out:
        assert np.all(np.isfinite(a))
    assert np.all(y[2] == 0) and np.all(y[:, 1] == 0)
    assert xn[2] == 0 and wn[1] == 0
    ry, rxn, rwn, rdx, rdw = ref_cn(x, w, dy, xn, wn)
    assert_close(y, ry, dtype)
    assert_close(xn, rxn, dtype)
    assert_close(wn, rwn, dtype)
    # zero rows get (dy @ w_hat) / eps: each row on its own scale
    for n in range(5):
        assert_close(dx[n], rdx[n], dtype, err_msg=f"dx row {n}")
    for m in range(4):
        assert_close(dw[m], rdw[m], dtype, err_msg=f"dw row {m}")


# --------------------------------------------------------------------------- magnitudes


@pytest.mark.parametrize("scale", [1e30, 1e35, 1e-20, 1e-30])
@pytest.mark.parametrize("axis", [-1, 0])
def test_l2_normalize_extreme_magnitudes_float32(rng, scale, axis):
    x = (normal(rng, (7, 65), F64, 0.3, 1.0) * scale).astype(F32)
    dy = normal(rng, x.shape, F32)
    for eps in (1e-12, 0.0):
        y, norm, dx = out = run_l2(x, dy, axis=axis, eps=eps)
        expected = ref_l2(x, dy, y, norm, axis=axis, eps=eps)
        for a, e in zip(out, expected, strict=True):
            assert np.all(np.isfinite(e))
            assert np.all(np.isfinite(a))
        compare(out, expected, F32, L2_NAMES)


@pytest.mark.parametrize("eps", [1e-12, 0.0])
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_l2_normalize_subnormal(dtype, eps):
    tiny = np.finfo(dtype).smallest_subnormal
    x = np.array([[tiny, 0.0, 3 * tiny], [tiny * 1000, tiny * 5, 0.0]], dtype)
    y, norm = fn.l2_normalize(x, eps=eps, return_stats=True)
    ry, rnorm = ref.l2_normalize(f64(x), eps=eps, return_stats=True)
    assert_close(y, ry, dtype)
    if dtype == F32 or eps > 0:
        assert np.all(np.isfinite(y)) and np.all(np.isfinite(norm))


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_l2_normalize_tiny_normal_values(rng, dtype):
    scale = 1e-30 if dtype == F32 else 1e-140
    x = (normal(rng, (4, 17), F64) * scale).astype(dtype)
    dy = normal(rng, x.shape, dtype)
    for eps in (1e-12, 0.0):
        out = run_l2(x, dy, eps=eps)
        for a in out:
            assert np.all(np.isfinite(a))
        expected = ref_l2(x, dy, out[0], out[1], eps=eps)
        for a, e, name in zip(out, expected, L2_NAMES, strict=True):
            assert_close(a, e, dtype, scale=float(np.abs(e).max()), err_msg=name)


@pytest.mark.parametrize("scale", [1e30, 1e-30])
def test_weight_norm_extreme_magnitudes_float32(rng, scale):
    v = (normal(rng, (5, 33), F64) * scale).astype(F32)
    g = normal(rng, (5,), F32, 1.0, 0.5)
    dw = normal(rng, v.shape, F32)
    out = run_wn(v, g, dw)
    w, norm, dv, dg = out
    expected = ref_wn(v, g, dw, norm)
    for a, e, name in zip(out, expected, WN_NAMES, strict=True):
        assert np.all(np.isfinite(e)), name
        assert np.all(np.isfinite(a)), name
        # dv is of order 1 / scale: judge it on its own scale
        assert_close(a, e, F32, scale=float(np.abs(e).max()), err_msg=name)


@pytest.mark.parametrize(
    ("dw_scale", "g_scale"), [(1.0, 1.0), (1.0, 1e-33), (1.0, 1e33), (3e37, 1e-3), (1e-30, 1.0)]
)
def test_weight_norm_backward_float32_magnitudes(rng, dw_scale, g_scale):
    # float32 slices along axis 0 take dv in float arithmetic where its terms fit float
    # and in double otherwise; either way dv matches the reference on its own scale
    v = normal(rng, (6, 300), F32)
    g = (normal(rng, (6,), F64, 1.0, 0.3) * g_scale).astype(F32)
    dw = np.clip(normal(rng, v.shape, F64) * dw_scale, -3.4e38, 3.4e38).astype(F32)
    dw[1] = np.where(np.arange(300) % 2, 3.4e38, -3.4e38) if dw_scale > 1e37 else dw[1]
    out = run_wn(v, g, dw)
    expected = ref_wn(v, g, dw, out[1])
    for a, e, name in zip(out, expected, WN_NAMES, strict=True):
        if name == "dv":
            for r in range(v.shape[0]):  # each slice on its own scale
                finite = np.abs(e[r]) < 3.4e38
                assert np.isfinite(a[r][finite]).all(), f"dv row {r}"
                assert_close(a[r], e[r], F32, scale=float(np.abs(e[r][finite]).max()),
                             err_msg=f"dv row {r}")
        elif np.isfinite(e).all() and np.abs(e).max() < 3.4e38:
            assert_close(a, e, F32, scale=float(np.abs(e).max()), err_msg=name)


@pytest.mark.parametrize("scale", [1e30, 1e-30])
def test_cosine_norm_extreme_magnitudes_float32(rng, scale):
    x = (normal(rng, (4, 65), F64) * scale).astype(F32)
    w = (normal(rng, (3, 65), F64) * scale).astype(F32)
    dy = normal(rng, (4, 3), F32)
    out = run_cn(x, w, dy, eps=0.0)
    expected = ref_cn(x, w, dy, out[1], out[2], eps=0.0)
    for a, e, name in zip(out, expected, CN_NAMES, strict=True):
        assert np.all(np.isfinite(e)), name
        assert np.all(np.isfinite(a)), name
        assert_close(a, e, F32, scale=float(np.abs(e).max()), err_msg=name)


def test_l2_normalize_float32_max(rng):
    """Norms beyond float32's range: y stays finite and correct."""
    x = np.full((2, 9), 3e38, F32)
    x[1, ::2] = -1e38
    y = fn.l2_normalize(x)
    assert np.all(np.isfinite(y))
    assert_close(y, ref.l2_normalize(f64(x)), F32)
    y0 = fn.l2_normalize(x, axis=0)
    assert_close(y0, ref.l2_normalize(f64(x), axis=0), F32)


# --------------------------------------------------------------------------- NaN and inf


def vector_mask(shape, axis, where):
    """Boolean mask of the whole vector along `axis` through the index `where`."""
    vec = list(where)
    vec[axis] = slice(None)
    mask = np.zeros(shape, bool)
    mask[tuple(vec)] = True
    return mask


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize(("shape", "axis"), [((5, 33), -1), ((33, 5), 0), ((3, 17, 4), 1)])
def test_l2_normalize_nan_stays_in_its_vector(rng, dtype, shape, axis, bad):
    x = normal(rng, shape, dtype)
    dy = normal(rng, shape, dtype)
    clean = run_l2(x, dy, axis=axis)
    where = [1] * len(shape)
    where[axis] = 3
    x[tuple(where)] = bad
    y, norm, dx = run_l2(x, dy, axis=axis)
    mine = vector_mask(shape, axis, where)
    nmask = np.zeros(norm.shape, bool)
    nmask[tuple(w for i, w in enumerate(where) if i != axis % len(shape))] = True
    # the other vectors are untouched, bit for bit
    np.testing.assert_array_equal(y[~mine], clean[0][~mine], strict=True)
    np.testing.assert_array_equal(dx[~mine], clean[2][~mine], strict=True)
    np.testing.assert_array_equal(norm[~nmask], clean[1][~nmask], strict=True)
    # the bad vector: non-finite norm, NaN in y and in dx, y as in the reference
    assert not np.isfinite(norm[nmask]).any()
    assert np.isnan(y[mine]).any()
    assert np.isnan(dx[mine]).any()
    ry, rnorm = ref.l2_normalize(f64(x), axis=axis, return_stats=True)
    assert_close(norm, rnorm, dtype, err_msg="norm")
    assert_close(y[mine], ry[mine], dtype, err_msg="y of the bad vector")


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_l2_normalize_nan_vector_is_all_nan(dtype):
    """x / max(NaN, eps) is NaN everywhere, as in the reference (np.maximum propagates NaN)."""
    x = np.array([[1.0, np.nan, 2.0], [3.0, 4.0, 0.0]], dtype)
    y, norm = fn.l2_normalize(x, return_stats=True)
    assert np.isnan(norm[0])
    assert np.isnan(ref.l2_normalize(f64(x))[0]).all()
    assert np.isnan(y[0]).all(), f"y[0] = {y[0]}"
    np.testing.assert_allclose(y[1], [0.6, 0.8, 0.0], rtol=1e-6)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize(("shape", "axis"), [((5, 33), 0), ((33, 5), 1), ((3, 4, 17), 1)])
def test_weight_norm_nan_stays_in_its_slice(rng, dtype, shape, axis, bad):
    v = normal(rng, shape, dtype)
    C = shape[axis]
    g = normal(rng, (C,), dtype, 1.0, 0.5)
    dw = normal(rng, shape, dtype)
    clean = run_wn(v, g, dw, axis=axis)
    where = [0] * len(shape)
    where[axis] = 2
    v[tuple(where)] = bad
    out = run_wn(v, g, dw, axis=axis)
    w, norm, dv, dg = out
    sl = [slice(None)] * len(shape)
    sl[axis] = 2
    mine = np.zeros(shape, bool)
    mine[tuple(sl)] = True
    others = np.arange(C) != 2
    np.testing.assert_array_equal(w[~mine], clean[0][~mine], strict=True)
    np.testing.assert_array_equal(dv[~mine], clean[2][~mine], strict=True)
    np.testing.assert_array_equal(norm[others], clean[1][others], strict=True)
    np.testing.assert_array_equal(dg[others], clean[3][others], strict=True)
    assert not np.isfinite(norm[2])
    assert np.isnan(w[mine]).any()
    compare(out, ref_wn(v, g, dw, norm, axis=axis), dtype, WN_NAMES)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_weight_norm_nan_slice_is_all_nan(dtype):
    """g * v / NaN is NaN on the whole slice, as in the reference; so are dv and dg."""
    v = np.array([[1.0, np.nan, 2.0], [3.0, 4.0, 0.0]], dtype)
    g = np.ones(2, dtype)
    w, norm = fn.weight_norm(v, g, return_stats=True)
    dv, dg = fn.weight_norm_backward(np.ones_like(v), v, g, norm)
    rw = ref.weight_norm(f64(v), f64(g))
    rdv, rdg = ref.weight_norm_backward(np.ones(v.shape), f64(v), f64(g), f64(norm))
    assert np.isnan(rw[0]).all() and np.isnan(rdv[0]).all() and np.isnan(rdg[0])
    assert np.isnan(w[0]).all(), f"w[0] = {w[0]}"
    assert np.isnan(dv[0]).all(), f"dv[0] = {dv[0]}"
    assert np.isnan(dg[0]), f"dg[0] = {dg[0]}"


@pytest.mark.parametrize("bad", [np.nan, np.inf])
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_cosine_norm_nan_stays_in_its_row(rng, dtype, bad):
    x = normal(rng, (5, 17), dtype)
    w = normal(rng, (4, 17), dtype)
    clean = fn.cosine_norm(x, w)
    x[3, 5] = bad
    y = fn.cosine_norm(x, w)
    assert np.all(np.isnan(y[3]))
    keep = np.arange(5) != 3
    assert not np.isnan(y[keep]).any()
    assert_close(y[keep], clean[keep], dtype)
    assert_close(y, ref.cosine_norm(f64(x), f64(w)), dtype)
    w[1, 0] = bad
    y = fn.cosine_norm(x, w)
    assert np.all(np.isnan(y[3])) and np.all(np.isnan(y[:, 1]))
    assert_close(y, ref.cosine_norm(f64(x), f64(w)), dtype)


# --------------------------------------------------------------------------- memory layouts


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize(("shape", "axis"), [((6, 17), -1), ((6, 17), 0), ((3, 33, 5), 1)])
def test_l2_normalize_layouts_identical(rng, dtype, shape, axis):
    x = normal(rng, shape, dtype, 0.5, 1.0)
    dy = normal(rng, shape, dtype)
    y, norm, dx = run_l2(x, dy, axis=axis)
    for (name, xv), (_, dyv), (_, yv) in zip(layouts(x), layouts(dy), layouts(y), strict=True):
        y2, norm2 = fn.l2_normalize(xv, axis=axis, return_stats=True)
        assert_identical(y2, y, f"y, {name}")
        assert_identical(norm2, norm, f"norm, {name}")
        for _, nv in layouts(norm):
            dx2 = fn.l2_normalize_backward(dyv, yv, nv, axis=axis)
            assert_identical(dx2, dx, f"dx, {name}")


def test_l2_normalize_negative_stride_views(rng):
    base = normal(rng, (8, 40), F32)
    for view in (base[::-1], base[:, ::-1], base[::-2, ::-3], base.T[::-1], base[1:, 1:]):
        for axis in (0, -1):
            expected = fn.l2_normalize(np.ascontiguousarray(view), axis=axis)
            assert_identical(fn.l2_normalize(view, axis=axis), expected)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize(("shape", "axis"), [((6, 17), 0), ((6, 17), 1), ((3, 5, 7), 1)])
def test_weight_norm_layouts_identical(rng, dtype, shape, axis):
    v = normal(rng, shape, dtype)
    g = normal(rng, (shape[axis],), dtype, 1.0, 0.5)
    dw = normal(rng, shape, dtype)
    expected = run_wn(v, g, dw, axis=axis)
    for (name, vv), (_, gv), (_, dwv) in zip(layouts(v), layouts(g), layouts(dw), strict=True):
        out = run_wn(vv, gv, dwv, axis=axis)
        for a, e, n in zip(out, expected, WN_NAMES, strict=True):
            assert_identical(a, e, f"{n}, {name}")


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_cosine_norm_layouts_identical(rng, dtype):
    x = normal(rng, (6, 17), dtype)
    w = normal(rng, (4, 17), dtype)
    dy = normal(rng, (6, 4), dtype)
    expected = run_cn(x, w, dy)
    for (name, xv), (_, wv), (_, dyv) in zip(layouts(x), layouts(w), layouts(dy), strict=True):
        out = run_cn(xv, wv, dyv)
        for a, e, n in zip(out, expected, CN_NAMES, strict=True):
            assert_identical(a, e, f"{n}, {name}")


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_cosine_norm_backward_fortran_order(rng, dtype):
    """Column-major x or w give the gradients of their C-ordered copies."""
    x = normal(rng, (6, 5), dtype)
    w = normal(rng, (4, 5), dtype)
    dy = normal(rng, (6, 4), dtype)
    y, xn, wn = fn.cosine_norm(x, w, return_stats=True)
    rdx, rdw = ref.cosine_norm_backward(f64(dy), f64(x), f64(w), f64(xn), f64(wn))
    for xv, wv in ((np.asfortranarray(x), w), (x, np.asfortranarray(w))):
        dx, dw = fn.cosine_norm_backward(dy, xv, wv, xn, wn)
        assert_close(dx, rdx, dtype, err_msg="dx")
        assert_close(dw, rdw, dtype, err_msg="dw")


# --------------------------------------------------------------------------- out=


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("axis", [-1, 0])
def test_l2_normalize_out(rng, dtype, axis):
    x = normal(rng, (5, 33), dtype)
    expected, norm = fn.l2_normalize(x, axis=axis, return_stats=True)

    out = np.empty_like(x)
    res = fn.l2_normalize(x, axis=axis, out=out)
    assert res is out
    assert_identical(out, expected)

    out = np.full_like(x, 7.0)
    res, norm2 = fn.l2_normalize(x, axis=axis, out=out, return_stats=True)
    assert res is out
    assert_identical(out, expected)
    assert_identical(norm2, norm)

    xi = x.copy()
    res = fn.l2_normalize(xi, axis=axis, out=xi)
    assert res is xi
    assert_identical(xi, expected)

    big = np.zeros((10, 66), dtype)
    strided = big[::2, ::2]
    res = fn.l2_normalize(x, axis=axis, out=strided)
    assert res is strided
    assert_identical(strided, expected)
    assert np.all(big[1::2] == 0) and np.all(big[:, 1::2] == 0)

    xf = np.asfortranarray(x)
    res = fn.l2_normalize(xf, axis=axis, out=xf)
    assert res is xf
    assert_identical(np.ascontiguousarray(xf), expected)


def test_l2_normalize_out_overlapping_input(rng):
    x = normal(rng, (4, 8), F64)
    expected = fn.l2_normalize(x[:, ::-1])
    res = fn.l2_normalize(x[:, ::-1], out=x)
    assert res is x
    assert_identical(x, expected)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_l2_normalize_out_errors(rng, dtype):
    x = normal(rng, (5, 7), dtype)
    other = F32 if dtype == F64 else F64

    out = np.full((5, 8), 3.0, dtype)
    with pytest.raises(ValueError, match="shape"):
        fn.l2_normalize(x, out=out)
    assert np.all(out == 3.0)

    out = np.full((7, 5), 3.0, dtype)
    with pytest.raises(ValueError):
        fn.l2_normalize(x, out=out)

    out = np.full((5, 7), 3.0, other)
    with pytest.raises(TypeError, match="dtype"):
        fn.l2_normalize(x, out=out)
    assert np.all(out == 3.0)

    out = np.full((5, 7), 3.0, dtype)
    out.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        fn.l2_normalize(x, out=out)
    assert np.all(out == 3.0)

    with pytest.raises(TypeError):
        fn.l2_normalize(x, out=[[0.0] * 7] * 5)

    out = np.full((5, 7), 3.0, dtype)
    with pytest.raises(ValueError):
        fn.l2_normalize(x, eps=-1.0, out=out)
    with pytest.raises(AxisError):
        fn.l2_normalize(x, axis=2, out=out)
    assert np.all(out == 3.0)


# --------------------------------------------------------------------------- invalid input


def test_cosine_norm_mismatched_columns(rng):
    x = normal(rng, (3, 5), F64)
    w = normal(rng, (2, 6), F64)
    with pytest.raises(ValueError, match="columns"):
        fn.cosine_norm(x, w)
    with pytest.raises(ValueError, match="columns"):
        fn.cosine_norm_backward(np.ones((3, 2)), x, w, np.ones(3), np.ones(2))


@pytest.mark.parametrize("bad", [(5,), (2, 3, 5), ()])
def test_cosine_norm_not_2d(rng, bad):
    good = normal(rng, (3, 5), F64)
    arr = np.ones(bad)
    with pytest.raises(ValueError):
        fn.cosine_norm(arr, good)
    with pytest.raises(ValueError):
        fn.cosine_norm(good, arr)
    with pytest.raises(ValueError):
        fn.cosine_norm_backward(np.ones((3, 3)), arr, good, np.ones(3), np.ones(3))
    with pytest.raises(ValueError):
        fn.cosine_norm_backward(np.ones((3, 3)), good, arr, np.ones(3), np.ones(3))


def test_cosine_norm_backward_wrong_shapes(rng):
    x = normal(rng, (3, 5), F64)
    w = normal(rng, (2, 5), F64)
    y, xn, wn = fn.cosine_norm(x, w, return_stats=True)
    dy = np.ones((3, 2))
    with pytest.raises(ValueError):
        fn.cosine_norm_backward(np.ones((2, 3)), x, w, xn, wn)
    with pytest.raises(ValueError):
        fn.cosine_norm_backward(dy, x, w, np.ones(2), wn)
    with pytest.raises(ValueError):
        fn.cosine_norm_backward(dy, x, w, xn, np.ones(3))


@pytest.mark.parametrize("axis", [2, -3, 5])
def test_l2_normalize_bad_axis(rng, axis):
    x = normal(rng, (3, 4), F64)
    with pytest.raises(AxisError):
        fn.l2_normalize(x, axis=axis)
    with pytest.raises(AxisError):
        fn.l2_normalize_backward(x, x, np.ones(3), axis=axis)


def test_l2_normalize_axis_not_integer(rng):
    x = normal(rng, (3, 4), F64)
    with pytest.raises(TypeError):
        fn.l2_normalize(x, axis=1.0)
    with pytest.raises(TypeError):
        fn.l2_normalize(x, axis=(0, 1))


@pytest.mark.parametrize("axis", [2, -3, 7])
def test_weight_norm_bad_axis(rng, axis):
    v = normal(rng, (3, 4), F64)
    with pytest.raises(AxisError):
        fn.weight_norm(v, np.ones(3), axis=axis)
    with pytest.raises(AxisError):
        fn.weight_norm_backward(v, v, np.ones(3), np.ones(3), axis=axis)


def test_zero_dim_inputs():
    with pytest.raises(AxisError):
        fn.l2_normalize(np.float64(2.0))
    with pytest.raises(AxisError):
        fn.l2_normalize(np.array(2.0, F32))
    with pytest.raises(ValueError):
        fn.weight_norm(np.array(2.0), np.ones(1))
    with pytest.raises(ValueError):
        fn.weight_norm(np.array(2.0), 1.0)
    with pytest.raises(ValueError):
        fn.weight_norm_backward(np.array(1.0), np.array(2.0), 1.0, 1.0)
    with pytest.raises(ValueError):
        ref.weight_norm(np.array(2.0), 1.0)


@pytest.mark.parametrize(
    ("shape", "axis", "g_shape"),
    [
        ((3, 4), 0, (4,)),
        ((3, 4), 0, (1, 3)),
        ((3, 4), 0, (3, 1, 1)),
        ((3, 4), 0, ()),
        ((3, 4), 0, (0,)),
        ((3, 4), 1, (3,)),
        ((3, 4), 1, (4, 1)),
        ((3, 4), 0, (2,)),
        ((2, 3, 4), 1, (1, 3)),
        ((2, 3, 4), 1, (2, 3, 1)),
    ],
)
def test_weight_norm_wrong_g_shape(rng, shape, axis, g_shape):
    v = normal(rng, shape, F64)
    g = np.ones(g_shape)
    with pytest.raises(ValueError, match="g must have shape"):
        fn.weight_norm(v, g, axis=axis)
    with pytest.raises(ValueError, match="g must have shape"):
        fn.weight_norm_backward(v, v, g, np.ones(shape[axis]), axis=axis)


def test_weight_norm_backward_wrong_shapes(rng):
    v = normal(rng, (3, 4), F64)
    g = np.ones(3)
    with pytest.raises(ValueError):
        fn.weight_norm_backward(np.ones((4, 3)), v, g, np.ones(3))
    with pytest.raises(ValueError):
        fn.weight_norm_backward(np.ones((3, 4)), v, g, np.ones(4))


def test_l2_normalize_backward_wrong_shapes(rng):
    y = normal(rng, (3, 4), F64)
    with pytest.raises(ValueError):
        fn.l2_normalize_backward(np.ones((4, 3)), y, np.ones(3))
    with pytest.raises(ValueError):
        fn.l2_normalize_backward(np.ones((3, 4)), y, np.ones(4))
    with pytest.raises(ValueError):
        fn.l2_normalize_backward(np.ones((3, 4)), y, np.ones(3), axis=0)


def bad_array(dtype, shape):
    if dtype is object:
        a = np.empty(shape, object)
        a[...] = 1.0
        return a
    return np.ones(shape, dtype)


@pytest.mark.parametrize("bad", BAD_DTYPES, ids=lambda d: np.dtype(d).name)
def test_bad_dtypes(rng, bad):
    good = normal(rng, (3, 4), F64)
    b = bad_array(bad, (3, 4))
    with pytest.raises(TypeError):
        fn.l2_normalize(b)
    with pytest.raises(TypeError):
        fn.l2_normalize_backward(good, b, np.ones(3))
    with pytest.raises(TypeError):
        fn.weight_norm(b, np.ones(3))
    with pytest.raises(TypeError):
        fn.weight_norm_backward(good, b, np.ones(3), np.ones(3))
    with pytest.raises(TypeError):
        fn.cosine_norm(b, good)
    with pytest.raises(TypeError):
        fn.cosine_norm(good, b)
    with pytest.raises(TypeError):
        fn.cosine_norm_backward(np.ones((3, 3)), b, good, np.ones(3), np.ones(3))


@pytest.mark.parametrize(
    "bad", [np.bool_, np.complex128, object], ids=["bool", "complex", "object"]
)
def test_bad_dtypes_secondary_arguments(rng, bad):
    v = normal(rng, (3, 4), F64)
    with pytest.raises(TypeError):
        fn.weight_norm(v, bad_array(bad, (3,)))
    with pytest.raises(TypeError):
        fn.l2_normalize_backward(bad_array(bad, (3, 4)), v, np.ones(3))
    with pytest.raises(TypeError):
        fn.weight_norm_backward(bad_array(bad, (3, 4)), v, np.ones(3), np.ones(3))


@pytest.mark.parametrize("eps", [-1e-12, -1.0, np.nan, np.inf])
def test_bad_eps(rng, eps):
    x = normal(rng, (3, 4), F64)
    w = normal(rng, (2, 4), F64)
    with pytest.raises(ValueError, match="eps"):
        fn.l2_normalize(x, eps=eps)
    with pytest.raises(ValueError, match="eps"):
        fn.l2_normalize_backward(x, x, np.ones(3), eps=eps)
    with pytest.raises(ValueError, match="eps"):
        fn.cosine_norm(x, w, eps=eps)
    with pytest.raises(ValueError, match="eps"):
        fn.cosine_norm_backward(np.ones((3, 2)), x, w, np.ones(3), np.ones(2), eps=eps)


def test_negative_eps_rejected_by_reference_too():
    with pytest.raises(ValueError):
        ref.l2_normalize(np.ones(3), eps=-1.0)


# --------------------------------------------------------------------------- empty shapes


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize(
    ("shape", "axis"),
    [
        ((0, 5), -1),
        ((0, 5), 0),
        ((3, 0), -1),
        ((3, 0), 0),
        ((2, 0, 3), 1),
        ((2, 0, 3), 0),
        ((0,), 0),
    ],
)
def test_l2_normalize_empty(dtype, shape, axis):
    x = np.ones(shape, dtype)
    y, norm, dx = run_l2(x, np.ones(shape, dtype), axis=axis)
    ry, rnorm = ref.l2_normalize(f64(x), axis=axis, return_stats=True)
    assert y.shape == shape and y.dtype == dtype and dx.shape == shape and dx.dtype == dtype
    assert_identical(norm, rnorm.astype(dtype))
    assert np.all(norm == 0)
    out = np.empty(shape, dtype)
    assert fn.l2_normalize(x, axis=axis, out=out) is out


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize(
    ("shape", "axis"), [((0, 5), 0), ((0, 5), 1), ((3, 0), 0), ((3, 0), 1), ((2, 0, 3), 0)]
)
def test_weight_norm_empty(dtype, shape, axis):
    v = np.ones(shape, dtype)
    C = shape[axis]
    g = np.full(C, 2.0, dtype)
    w, norm, dv, dg = run_wn(v, g, np.ones(shape, dtype), axis=axis)
    rw, rnorm = ref.weight_norm(f64(v), f64(g), axis=axis, return_stats=True)
    rdv, rdg = ref.weight_norm_backward(np.ones(shape), f64(v), f64(g), rnorm, axis=axis)
    assert w.shape == dv.shape == shape
    assert w.dtype == dv.dtype == dtype
    assert_identical(norm, rnorm.astype(dtype))
    assert_identical(dg, rdg.astype(dtype))
    assert np.all(norm == 0) and np.all(dg == 0)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize(("N", "M", "D"), [(0, 3, 4), (2, 0, 4), (2, 3, 0), (0, 0, 0)])
def test_cosine_norm_empty(dtype, N, M, D):
    x = np.ones((N, D), dtype)
    w = np.ones((M, D), dtype)
    dy = np.ones((N, M), dtype)
    y, xn, wn, dx, dw = run_cn(x, w, dy)
    ry, rxn, rwn, rdx, rdw = ref_cn(x, w, dy, xn, wn)
    assert_identical(y, ry.astype(dtype))
    assert_identical(xn, rxn.astype(dtype))
    assert_identical(wn, rwn.astype(dtype))
    assert_identical(dx, rdx.astype(dtype))
    assert_identical(dw, rdw.astype(dtype))


# --------------------------------------------------------------------------- threads


def thread_runs(threads, run):
    results = []
    for n in (1, 2, 3):
        with threads(n):
            results.append(run())
    return results


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize(
    ("shape", "axis"), [((64, 1031), -1), ((1031, 64), 0), ((8, 513, 9), 1), ((33000,), 0)]
)
def test_l2_normalize_threads_bitwise(rng, threads, dtype, shape, axis):
    x = normal(rng, shape, dtype, 0.5, 2.0)
    dy = normal(rng, shape, dtype)
    assert x.size > 32768
    runs = thread_runs(threads, lambda: run_l2(x, dy, axis=axis))
    for other in runs[1:]:
        for a, e, name in zip(other, runs[0], L2_NAMES, strict=True):
            assert_identical(a, e, name)
    compare(runs[0], ref_l2(x, dy, runs[0][0], runs[0][1], axis=axis), dtype, L2_NAMES)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize(("shape", "axis"), [((300, 129), 0), ((129, 300), 1), ((9, 65, 63), 1)])
def test_weight_norm_threads_bitwise(rng, threads, dtype, shape, axis):
    v = normal(rng, shape, dtype)
    g = normal(rng, (shape[axis],), dtype, 1.0, 0.5)
    dw = normal(rng, shape, dtype)
    assert v.size > 32768
    runs = thread_runs(threads, lambda: run_wn(v, g, dw, axis=axis))
    for other in runs[1:]:
        for a, e, name in zip(other, runs[0], WN_NAMES, strict=True):
            assert_identical(a, e, name)
    compare(runs[0], ref_wn(v, g, dw, runs[0][1], axis=axis), dtype, WN_NAMES)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_cosine_norm_threads_bitwise(rng, threads, dtype):
    x = normal(rng, (300, 129), dtype)
    w = normal(rng, (257, 129), dtype)
    dy = normal(rng, (300, 257), dtype)
    assert x.size > 32768 and w.size > 32768
    runs = thread_runs(threads, lambda: run_cn(x, w, dy))
    for other in runs[1:]:
        for a, e, name in zip(other, runs[0], CN_NAMES, strict=True):
            assert_identical(a, e, name)
    compare(runs[0], ref_cn(x, w, dy, runs[0][1], runs[0][2]), dtype, CN_NAMES, factor=4.0)
