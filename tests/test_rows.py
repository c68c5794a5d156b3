"""layer_norm, rms_norm and their backward passes, against fastnorm.reference, finite
differences, and the edge cases of EDGE_CASES.md."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import (
    FLOAT_DTYPES,
    assert_close,
    assert_identical,
    broadcast_rows,
    layouts,
)
from gradcheck import check_grad
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.exceptions import AxisError

import fastnorm as fn
from fastnorm import _kernels
from fastnorm import reference as ref

F32, F64 = np.dtype(np.float32), np.dtype(np.float64)
KS = (1, 3, 7, 15, 17, 33, 4097)
MS = (1, 4, 37)


def f64(a):
    return None if a is None else np.asarray(a, dtype=np.float64)


def normal(rng, shape, dtype, loc=0.0, scale=1.0):
    return (loc + scale * rng.standard_normal(shape)).astype(dtype)


def make_params(rng, shape, dtype, affine):
    """(weight, bias) for affine in "none", "weight", "bias", "both"."""
    w = normal(rng, shape, dtype, 1.0, 0.5) if affine in ("weight", "both") else None
    b = normal(rng, shape, dtype) if affine in ("bias", "both") else None
    return w, b


# --------------------------------------------------------------------------- ops as tables
#
# Each op is driven through the same four callables so that most properties are written once:
# forward(x, w, b, **kw) -> (y, *stats), backward(dy, x, stats, w, **kw) -> grads, and the same
# two for the reference.


def ln_fwd(x, w, b, **kw):
    return fn.layer_norm(x, w, b, return_stats=True, **kw)


def ln_bwd(dy, x, stats, w, **kw):
    return fn.layer_norm_backward(dy, x, *stats, w, **kw)


def ln_ref_fwd(x, w, b, **kw):
    return ref.layer_norm(f64(x), f64(w), f64(b), return_stats=True, **kw)


def ln_ref_bwd(dy, x, stats, w, **kw):
    return ref.layer_norm_backward(f64(dy), f64(x), *map(f64, stats), f64(w), **kw)


def rms_fwd(x, w, b, **kw):
    assert b is None
    return fn.rms_norm(x, w, return_stats=True, **kw)


def rms_bwd(dy, x, stats, w, **kw):
    return fn.rms_norm_backward(dy, x, *stats, w, **kw)


def rms_ref_fwd(x, w, b, **kw):
    assert b is None
    return ref.rms_norm(f64(x), f64(w), return_stats=True, **kw)


def rms_ref_bwd(dy, x, stats, w, **kw):
    return ref.rms_norm_backward(f64(dy), f64(x), *map(f64, stats), f64(w), **kw)


class Op:
    def __init__(self, name, fwd, bwd, ref_fwd, ref_bwd, affines, public, public_bwd):
        self.name = name
        self.fwd, self.bwd = fwd, bwd
        self.ref_fwd, self.ref_bwd = ref_fwd, ref_bwd
        self.affines = affines
        self.public, self.public_bwd = public, public_bwd

    def __repr__(self):
        return self.name


LN = Op(
    "layer_norm",
    ln_fwd,
    ln_bwd,
    ln_ref_fwd,
    ln_ref_bwd,
    ("none", "weight", "bias", "both"),
    fn.layer_norm,
    fn.layer_norm_backward,
)
RMS = Op(
    "rms_norm",
    rms_fwd,
    rms_bwd,
    rms_ref_fwd,
    rms_ref_bwd,
    ("none", "weight"),
    fn.rms_norm,
    fn.rms_norm_backward,
)
OPS = (LN, RMS)
OP_AFFINE = [(op, a) for op in OPS for a in op.affines]


def check_forward(op, x, w, b, dtype, factor=1.0, **kw):
    """Run the forward with and without stats, compare with the reference; return outputs."""
    out = op.fwd(x, w, b, **kw)
    expected = op.ref_fwd(x, w, b, **kw)
    assert len(out) == len(expected)
    for i, (a, e) in enumerate(zip(out, expected, strict=True)):
        assert_close(a, e, dtype, factor=factor, err_msg=f"{op} output {i}")
    plain = op.public(x, w, **({"bias": b} if op is LN else {}), **kw)
    assert_identical(plain, out[0], "return_stats=False differs")
    return out


def check_backward(op, dy, x, stats, w, dtype, factor=1.0, **kw):
    grads = op.bwd(dy, x, stats, w, **kw)
    expected = op.ref_bwd(dy, x, stats, w, **kw)
    assert len(grads) == len(expected)
    for i, (g, e) in enumerate(zip(grads, expected, strict=True)):
        if e is None:
            assert g is None, f"{op} gradient {i} should be None"
        else:
            assert_close(g, e, dtype, factor=factor, err_msg=f"{op} gradient {i}")
    return grads


# --------------------------------------------------------------------------- forward vs reference


@pytest.mark.parametrize("K", KS)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize(("op", "affine"), OP_AFFINE, ids=str)
def test_forward_matches_reference(rng, op, affine, dtype, K):
    for M in MS:
        x = normal(rng, (M, K), dtype, 1.5, 3.0)
        w, b = make_params(rng, (K,), dtype, affine)
        y, *stats = check_forward(op, x, w, b, dtype)
        assert y.dtype == dtype
        for s in stats:
            assert s.shape == (M,) and s.dtype == dtype


@pytest.mark.parametrize("axis", [-1, -2, -3, 0, 1, 2])
@pytest.mark.parametrize("K", [1, 7, 33])
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("op", OPS, ids=str)
def test_forward_3d_axes(rng, op, dtype, K, axis):
    x = normal(rng, (3, 5, K), dtype, -0.5, 2.0)
    nshape = x.shape[axis:]
    w = normal(rng, nshape, dtype, 1.0, 0.3)
    b = normal(rng, nshape, dtype) if op is LN else None
    y, *stats = check_forward(op, x, w, b, dtype, axis=axis)
    assert y.shape == x.shape
    for s in stats:
        assert s.shape == x.shape[:axis]


def test_layer_norm_axis_minus2_is_flattened_rows(rng):
    x = normal(rng, (4, 6, 9), F64)
    w = normal(rng, (6, 9), F64)
    b = normal(rng, (6, 9), F64)
    y, mean, rstd = fn.layer_norm(x, w, b, axis=-2, return_stats=True)
    y2, mean2, rstd2 = fn.layer_norm(x.reshape(4, 54), w.ravel(), b.ravel(), return_stats=True)
    assert_identical(y, y2.reshape(x.shape))
    assert_identical(mean, mean2)
    assert_identical(rstd, rstd2)


def test_docstring_examples():
    x = np.array([[1.0, 2.0, 3.0], [2.0, 2.0, 2.0]])
    np.testing.assert_array_equal(fn.layer_norm(x, eps=0.0)[0].round(4), [-1.2247, 0.0, 1.2247])
    np.testing.assert_array_equal(
        fn.rms_norm(np.array([3.0, 4.0]), eps=0.0).round(4), [0.8485, 1.1314]
    )


def test_array_like_input():
    y = fn.layer_norm([[1.0, 2.0, 4.0]], weight=[1, 2, 3], bias=(0.5, 0.5, 0.5))
    assert y.dtype == F64
    np.testing.assert_allclose(
        y, ref.layer_norm([[1.0, 2.0, 4.0]], [1, 2, 3], [0.5, 0.5, 0.5]), rtol=1e-12
    )


@st.composite
def rows_cases(draw):
    ndim = draw(st.integers(1, 4))
    lead = draw(st.lists(st.sampled_from([0, 1, 2, 3, 5, 7]), min_size=ndim - 1, max_size=ndim - 1))
    shape = (*lead, draw(st.sampled_from([0, 1, 2, 3, 5, 7, 15, 17, 33])))
    axis = draw(st.integers(-ndim, ndim - 1))
    dtype = draw(st.sampled_from(FLOAT_DTYPES))
    op = draw(st.sampled_from(OPS))
    affine = draw(st.sampled_from(op.affines))
    seed = draw(st.integers(0, 2**32 - 1))
    return op, shape, axis, np.dtype(dtype), affine, seed


@settings(max_examples=60, deadline=None, database=None)
@given(rows_cases())
def test_random_shapes_match_reference(case):
    op, shape, axis, dtype, affine, seed = case
    rng = np.random.default_rng(seed)
    x = normal(rng, shape, dtype, 0.3, 2.0)
    nshape = x.shape[axis:]
    w, b = make_params(rng, nshape, dtype, affine)
    y, *stats = check_forward(op, x, w, b, dtype, axis=axis)
    dy = normal(rng, shape, dtype)
    check_backward(op, dy, x, stats, w, dtype, factor=10.0, axis=axis)


# --------------------------------------------------------------------------- memory layouts


@st.composite
def layout_cases(draw):
    op, shape, axis, dtype, affine, seed = draw(rows_cases())
    perm = draw(st.permutations(range(len(shape))))
    flips = tuple(draw(st.lists(st.booleans(), min_size=len(shape), max_size=len(shape))))
    steps = tuple(draw(st.lists(st.integers(1, 2), min_size=len(shape), max_size=len(shape))))
    return op, shape, axis, dtype, affine, seed, tuple(perm), flips, steps


def strided_copy(x, perm, flips, steps):
    """A view with x's values whose memory is permuted, reversed and stepped per axis."""
    big_shape = tuple(s * k for s, k in zip(x.shape, steps, strict=True))
    big = np.zeros(tuple(big_shape[p] for p in perm), dtype=x.dtype)
    inv = np.argsort(perm)
    base = big.transpose(inv)
    index = tuple(
        slice(None, None, -k) if f else slice(None, None, k)
        for k, f in zip(steps, flips, strict=True)
    )
    view = base[index]
    view[...] = x
    return view


@settings(max_examples=50, deadline=None, database=None)
@given(layout_cases())
def test_random_layouts_identical(case):
    op, shape, axis, dtype, affine, seed, perm, flips, steps = case
    rng = np.random.default_rng(seed)
    x = normal(rng, shape, dtype, 1.0, 2.0)
    w, b = make_params(rng, x.shape[axis:], dtype, affine)
    dy = normal(rng, shape, dtype)
    xv = strided_copy(x, perm, flips, steps)
    dyv = strided_copy(dy, perm, flips, steps)
    np.testing.assert_array_equal(xv, x)
    y, *stats = op.fwd(x, w, b, axis=axis)
    yv, *stats_v = op.fwd(xv, w, b, axis=axis)
    assert_identical(yv, y)
    for s, sv in zip(stats, stats_v, strict=True):
        assert_identical(sv, s)
    for g, gv in zip(
        op.bwd(dy, x, stats, w, axis=axis), op.bwd(dyv, xv, stats, w, axis=axis), strict=True
    ):
        assert_identical(gv, g)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize(("shape", "axis"), [((6, 33), -1), ((4, 5, 6), -2), ((5, 17, 2), -1)])
@pytest.mark.parametrize("op", OPS, ids=str)
def test_noncontiguous_inputs_identical(rng, op, shape, axis, dtype):
    x = normal(rng, shape, dtype, 1.0, 2.0)
    nshape = x.shape[axis:]
    w = normal(rng, nshape, dtype, 1.0, 0.5)
    b = normal(rng, nshape, dtype) if op is LN else None
    dy = normal(rng, shape, dtype)
    y, *stats = op.fwd(x, w, b, axis=axis)
    grads = op.bwd(dy, x, stats, w, axis=axis)
    for name, xv in layouts(x):
        y2, *stats2 = op.fwd(xv, w, b, axis=axis)
        assert_identical(y2, y, f"forward, x {name}")
        for s2, s in zip(stats2, stats, strict=True):
            assert_identical(s2, s, f"stats, x {name}")
        for g2, g in zip(op.bwd(dy, xv, stats, w, axis=axis), grads, strict=True):
            assert_identical(g2, g, f"backward, x {name}")
    for name, wv in layouts(w):
        bv = None if b is None else dict(layouts(b))[name]
        assert_identical(op.fwd(x, wv, bv, axis=axis)[0], y, f"forward, weight {name}")
        for g2, g in zip(op.bwd(dy, x, stats, wv, axis=axis), grads, strict=True):
            assert_identical(g2, g, f"backward, weight {name}")
    for name, dyv in layouts(dy):
        stats_v = [dict(layouts(s))[name] for s in stats]
        for g2, g in zip(op.bwd(dyv, x, stats_v, w, axis=axis), grads, strict=True):
            assert_identical(g2, g, f"backward, dy and stats {name}")


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("op", OPS, ids=str)
def test_broadcast_input_identical(rng, op, dtype):
    row = normal(rng, (33,), dtype, 2.0, 3.0)
    xv, xc = broadcast_rows(row, (7, 33))
    w = normal(rng, (33,), dtype)
    y, *stats = op.fwd(xv, w, None)
    yc, *stats_c = op.fwd(xc, w, None)
    assert_identical(y, yc)
    for s, sc in zip(stats, stats_c, strict=True):
        assert_identical(s, sc)
    # every row is the same, so every output row is too
    assert_identical(y, np.broadcast_to(y[0], y.shape).copy())
    dyv, dyc = broadcast_rows(normal(rng, (33,), dtype), (7, 33))
    for g, gc in zip(op.bwd(dyv, xv, stats, w), op.bwd(dyc, xc, stats_c, w), strict=True):
        assert_identical(g, gc)
    wv = np.broadcast_to(w[:1], w.shape)
    assert wv.strides == (0,)
    assert_identical(op.fwd(xc, wv, None)[0], op.fwd(xc, wv.copy(), None)[0])


# --------------------------------------------------------------------------- out=


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("op", OPS, ids=str)
def test_out_fresh(rng, op, dtype):
    x = normal(rng, (9, 17), dtype)
    w = normal(rng, (17,), dtype)
    expected = op.public(x, w)
    out = np.full_like(x, np.nan)
    res = op.public(x, w, out=out)
    assert res is out
    assert_identical(out, expected)
    out2 = np.empty_like(x)
    res, *stats = op.public(x, w, out=out2, return_stats=True)
    assert res is out2
    assert_identical(out2, expected)
    for s, s0 in zip(stats, op.fwd(x, w, None)[1:], strict=True):
        assert_identical(s, s0)


@pytest.mark.parametrize("K", [1, 7, 33, 4097])
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("op", OPS, ids=str)
def test_out_is_x_in_place(rng, op, dtype, K):
    x = normal(rng, (5, K), dtype, 3.0, 2.0)
    w = normal(rng, (K,), dtype)
    y, *stats = op.fwd(x, w, None)
    res, *stats2 = op.public(x, w, out=x, return_stats=True)
    assert res is x
    assert_identical(x, y)
    for s, s2 in zip(stats, stats2, strict=True):
        assert_identical(s2, s)


@pytest.mark.parametrize("op", OPS, ids=str)
def test_out_is_noncontiguous_x_in_place(rng, op):
    base = normal(rng, (33, 8), F32)
    x = base.T
    expected = op.public(x.copy())
    res = op.public(x, out=x)
    assert res is x
    assert_identical(x, expected)
    np.testing.assert_array_equal(base, expected.T)


@pytest.mark.parametrize("kind", ["transposed", "stepped", "reversed", "offset", "misaligned"])
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("op", OPS, ids=str)
def test_out_noncontiguous(rng, op, dtype, kind):
    x = normal(rng, (6, 33), dtype)
    expected = op.public(x)
    out = dict(layouts(np.zeros_like(x)))[kind]
    res = op.public(x, out=out)
    assert res is out
    np.testing.assert_array_equal(out, expected, strict=True)


@pytest.mark.parametrize("shift", [1, 5, -1, -5, 33, -33])
@pytest.mark.parametrize("op", OPS, ids=str)
def test_out_overlapping_x(rng, op, shift):
    M, K = 6, 33
    buf = normal(rng, M * K + abs(shift), F64)
    xs, os_ = (0, shift) if shift > 0 else (-shift, 0)
    x = buf[xs : xs + M * K].reshape(M, K)
    out = buf[os_ : os_ + M * K].reshape(M, K)
    expected = op.public(x.copy())
    res = op.public(x, out=out)
    assert res is out
    assert_identical(out, expected)


@pytest.mark.parametrize("op", OPS, ids=str)
def test_out_is_x_next_to_weight(rng, op):
    buf = normal(rng, (7, 17), F32)
    x, w = buf[1:], buf[0]
    expected = op.public(x.copy(), w.copy())
    res = op.public(x, w, out=x)
    assert res is x
    assert_identical(x, expected)


@pytest.mark.parametrize("op", OPS, ids=str)
def test_out_overlapping_weight(rng, op):
    buf = normal(rng, (6, 17), F32)
    x = normal(rng, (6, 17), F32)
    w = buf[2]
    expected = op.public(x, w.copy())
    res = op.public(x, w, out=buf)
    assert res is buf
    assert_identical(buf, expected)


@pytest.mark.parametrize("op", OPS, ids=str)
def test_out_is_x_while_weight_overlaps(rng, op):
    x = normal(rng, (6, 17), F64)
    w = x[3]
    expected = op.public(x.copy(), w.copy())
    res = op.public(x, w, out=x)
    assert res is x
    assert_identical(x, expected)


# --------------------------------------------------------------------------- backward


@pytest.mark.parametrize("K", KS)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("with_weight", [False, True])
@pytest.mark.parametrize("op", OPS, ids=str)
def test_backward_matches_reference(rng, op, with_weight, dtype, K):
    for M in (1, 5, 70):
        x = normal(rng, (M, K), dtype, -1.0, 2.0)
        w = normal(rng, (K,), dtype, 1.0, 0.5) if with_weight else None
        b = normal(rng, (K,), dtype) if op is LN else None
        dy = normal(rng, (M, K), dtype)
        _, *stats = op.fwd(x, w, b)
        grads = check_backward(op, dy, x, stats, w, dtype, factor=2.0)
        assert grads[0].shape == x.shape
        for g in grads[1:]:
            if g is not None:
                assert g.shape == (K,)
        assert (grads[1] is None) == (w is None)
        if op is LN:
            assert grads[2] is not None


@pytest.mark.parametrize("axis", [-1, -2, 0])
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("op", OPS, ids=str)
def test_backward_3d_matches_reference(rng, op, dtype, axis):
    x = normal(rng, (4, 3, 17), dtype, 0.5, 1.5)
    nshape = x.shape[axis:]
    w = normal(rng, nshape, dtype, 1.0, 0.5)
    b = normal(rng, nshape, dtype) if op is LN else None
    dy = normal(rng, x.shape, dtype)
    _, *stats = op.fwd(x, w, b, axis=axis)
    grads = check_backward(op, dy, x, stats, w, dtype, factor=2.0, axis=axis)
    for g in grads[1:]:
        assert g.shape == nshape


GRAD_CASES = [
    ((3, 7), -1, 1e-5),
    ((2, 3, 4), -2, 1e-5),
    ((2, 5), 0, 1e-5),
    ((4, 1), -1, 0.1),
    ((3, 17), -1, 0.5),
]


@pytest.mark.parametrize(("shape", "axis", "eps"), GRAD_CASES)
def test_layer_norm_backward_finite_differences(rng, shape, axis, eps):
    x = normal(rng, shape, F64, 0.5, 1.5)
    nshape = x.shape[axis:]
    w = normal(rng, nshape, F64, 1.0, 0.5)
    b = normal(rng, nshape, F64)
    dy = normal(rng, shape, F64)
    _, mean, rstd = fn.layer_norm(x, w, b, axis=axis, eps=eps, return_stats=True)
    dx, dw, db = fn.layer_norm_backward(dy, x, mean, rstd, w, axis=axis)
    check_grad(lambda a: fn.layer_norm(a, w, b, axis=axis, eps=eps), x, dy, dx, err_msg="dx")
    check_grad(lambda a: fn.layer_norm(x, a, b, axis=axis, eps=eps), w, dy, dw, err_msg="dw")
    check_grad(lambda a: fn.layer_norm(x, w, a, axis=axis, eps=eps), b, dy, db, err_msg="db")
    dx0, dw0, db0 = fn.layer_norm_backward(dy, x, mean, rstd, None, axis=axis)
    assert dw0 is None
    check_grad(
        lambda a: fn.layer_norm(a, None, b, axis=axis, eps=eps),
        x,
        dy,
        dx0,
        err_msg="dx without weight",
    )
    assert_identical(db0, db)


@pytest.mark.parametrize(("shape", "axis", "eps"), GRAD_CASES)
def test_rms_norm_backward_finite_differences(rng, shape, axis, eps):
    x = normal(rng, shape, F64, 0.5, 1.5)
    nshape = x.shape[axis:]
    w = normal(rng, nshape, F64, 1.0, 0.5)
    dy = normal(rng, shape, F64)
    _, rstd = fn.rms_norm(x, w, axis=axis, eps=eps, return_stats=True)
    dx, dw = fn.rms_norm_backward(dy, x, rstd, w, axis=axis)
    check_grad(lambda a: fn.rms_norm(a, w, axis=axis, eps=eps), x, dy, dx, err_msg="dx")
    check_grad(lambda a: fn.rms_norm(x, a, axis=axis, eps=eps), w, dy, dw, err_msg="dw")
    dx0, dw0 = fn.rms_norm_backward(dy, x, rstd, None, axis=axis)
    assert dw0 is None
    check_grad(
        lambda a: fn.rms_norm(a, axis=axis, eps=eps), x, dy, dx0, err_msg="dx without weight"
    )


# --------------------------------------------------------------------------- dtypes


@pytest.mark.parametrize("op", OPS, ids=str)
def test_float32_input_casts_float64_parameters(rng, op):
    x = normal(rng, (5, 17), F32)
    w64 = normal(rng, (17,), F64)
    y = op.public(x, w64)
    assert y.dtype == F32
    assert_identical(y, op.public(x, w64.astype(F32)))
    y_int = op.public(x, np.arange(1, 18))
    assert_identical(y_int, op.public(x, np.arange(1, 18, dtype=F32)))
    if op is LN:
        b64 = normal(rng, (17,), F64)
        assert_identical(
            fn.layer_norm(x, w64, b64), fn.layer_norm(x, w64.astype(F32), b64.astype(F32))
        )


@pytest.mark.parametrize("op", OPS, ids=str)
def test_float64_input_casts_float32_parameters(rng, op):
    x = normal(rng, (5, 17), F64)
    w32 = normal(rng, (17,), F32)
    y = op.public(x, w32)
    assert y.dtype == F64
    assert_identical(y, op.public(x, w32.astype(F64)))


@pytest.mark.parametrize("op", OPS, ids=str)
def test_backward_casts_to_x_dtype(rng, op):
    x = normal(rng, (5, 17), F32)
    w = normal(rng, (17,), F32)
    dy = normal(rng, (5, 17), F64)
    _, *stats = op.fwd(x, w, None)
    grads = op.bwd(dy, x, stats, w.astype(F64))
    expected = op.bwd(dy.astype(F32), x, stats, w)
    for g, e in zip(grads, expected, strict=True):
        assert_identical(g, e)
        assert g.dtype == F32
    grads64_stats = op.bwd(dy, x, [s.astype(F64) for s in stats], w)
    for g, e in zip(grads64_stats, expected, strict=True):
        assert_identical(g, e)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("op", OPS, ids=str)
def test_byteswapped_parameters(rng, op, dtype):
    x = normal(rng, (3, 7), dtype)
    w = normal(rng, (7,), dtype)
    assert_identical(op.public(x, w.astype(w.dtype.newbyteorder("S"))), op.public(x, w))


# --------------------------------------------------------------------------- values


@pytest.mark.parametrize("K", [33, 1000, 4097])
def test_large_mean_small_spread_float32(rng, K):
    x = normal(rng, (8, K), F32, 1e4, 1e-2)
    w = normal(rng, (K,), F32, 1.0, 0.2)
    b = normal(rng, (K,), F32)
    y, mean, rstd = fn.layer_norm(x, w, b, return_stats=True)
    yr, mr, rr = ref.layer_norm(f64(x), f64(w), f64(b), return_stats=True)
    assert np.abs(y - yr).max() < 1e-3
    assert_close(y, yr, F32)
    assert_close(mean, mr, F32)
    assert_close(rstd, rr, F32)
    # the normalized rows really have unit spread: E[x^2] - E[x]^2 in float32 gives garbage
    yn = fn.layer_norm(x)
    np.testing.assert_allclose(f64(yn).std(axis=1), np.sqrt(1 - 1e-5 * rr**2), rtol=1e-4)
    dy = normal(rng, x.shape, F32)
    check_backward(LN, dy, x, (mean, rstd), w, F32, factor=2.0)


@pytest.mark.parametrize("K", [257, 1000, 4097])
@pytest.mark.parametrize("loc", [1e7, -1e9, 1e10])
def test_huge_mean_spread_of_a_few_ulps_float32(rng, loc, K):
    spacing = float(np.spacing(np.float32(loc)))
    x = (loc + spacing * rng.integers(-4, 5, (8, K))).astype(F32)
    y, mean, rstd = fn.layer_norm(x, return_stats=True)
    yr, mr, rr = ref.layer_norm(f64(x), return_stats=True)
    assert_close(y, yr, F32)
    assert_close(mean, mr, F32, scale=abs(loc))
    assert_close(rstd, rr, F32, scale=np.abs(rr).max())


@pytest.mark.parametrize(("loc", "scale"), [(1e4, 1e-2), (1e6, 1e-3)])
def test_large_mean_small_spread_float64(rng, loc, scale):
    x = normal(rng, (8, 4097), F64, loc, scale)
    y, mean, rstd = fn.layer_norm(x, return_stats=True)
    yr, mr, rr = ref.layer_norm(x, return_stats=True)
    # the reference's own rounding of the mean is amplified by loc / scale
    np.testing.assert_allclose(y, yr, rtol=0, atol=1e-14 * loc / scale)
    np.testing.assert_allclose(mean, mr.ravel(), rtol=1e-15)
    np.testing.assert_allclose(rstd, rr.ravel(), rtol=1e-9)


@pytest.mark.parametrize("magnitude", [1e30, 1e35, 3e38])
@pytest.mark.parametrize("op", OPS, ids=str)
def test_huge_float32_finite(rng, op, magnitude):
    x = rng.uniform(-magnitude, magnitude, (6, 33)).astype(F32)
    x[1] = np.float32(magnitude)
    x[2] = np.where(np.arange(33) % 2, magnitude, -magnitude).astype(F32)
    x[3, :] = np.float32(magnitude)
    x[3, 0] = -np.float32(magnitude)
    assert np.isfinite(x).all()
    w = normal(rng, (33,), F32)
    b = normal(rng, (33,), F32) if op is LN else None
    y, *stats = op.fwd(x, w, b)
    assert np.isfinite(y).all()
    for s in stats:
        assert np.isfinite(s).all()
    expected = op.ref_fwd(x, w, b)
    assert_close(y, expected[0], F32)
    for s, e in zip(stats, expected[1:], strict=True):
        assert_close(s, e, F32, scale=np.abs(e).max())
    dy = normal(rng, x.shape, F32)
    grads = op.bwd(dy, x, stats, w)
    for g, e in zip(grads, op.ref_bwd(dy, x, stats, w), strict=True):
        if e is not None:
            assert np.isfinite(g).all()
            assert_close(g, e, F32, scale=np.abs(e).max(), factor=2.0)


SUBNORMAL_SPACING = np.finfo(F32).smallest_subnormal


@pytest.mark.parametrize("op", OPS, ids=str)
def test_subnormal_float32(rng, op):
    x = normal(rng, (4, 33), F32, 0.0, 1e-42)
    x[0, 0] = np.float32(1e-40)
    assert (np.abs(x) < np.finfo(F32).smallest_normal).all()
    w = normal(rng, (33,), F32)
    y, *stats = op.fwd(x, w, None)
    assert np.isfinite(y).all()
    for s in stats:
        assert np.isfinite(s).all()
    expected = op.ref_fwd(x, w, None)
    # a float32 rounding of each step costs at most a few units of the subnormal spacing
    np.testing.assert_allclose(y, expected[0], rtol=1e-6, atol=4 * SUBNORMAL_SPACING)
    # the statistics are stored in float32: a subnormal mean keeps only absolute precision
    for s, e in zip(stats, expected[1:], strict=True):
        np.testing.assert_allclose(s, e, rtol=1e-6, atol=SUBNORMAL_SPACING)
    dy = normal(rng, x.shape, F32)
    for g in op.bwd(dy, x, stats, w):
        if g is not None:
            assert np.isfinite(g).all()


@pytest.mark.parametrize("op", OPS, ids=str)
def test_subnormal_float32_eps_zero_output(rng, op):
    x = normal(rng, (4, 33), F32, 0.0, 1e-42)
    y = op.public(x, eps=0.0)
    assert np.isfinite(y).all()
    # computed in double: the rows normalize to unit spread even below float32's range
    assert_close(y, op.ref_fwd(x, None, None, eps=0.0)[0], F32)
    assert np.abs(y).max() > 1.0


@pytest.mark.parametrize("op", OPS, ids=str)
def test_tiny_float64_finite(rng, op):
    x = normal(rng, (4, 17), F64, 0.0, 1e-300)
    x[0, 0] = 5e-324
    y, *stats = op.fwd(x, None, None)
    assert np.isfinite(y).all()
    expected = op.ref_fwd(x, None, None)
    for a, e in zip([y, *stats], expected, strict=True):
        assert_close(a, e, F64, scale=max(np.abs(e).max(), 1e-300))
    dy = normal(rng, x.shape, F64)
    for g in op.bwd(dy, x, stats, None):
        if g is not None:
            assert np.isfinite(g).all()


@pytest.mark.parametrize(
    ("M", "K"), [(16, 37), (17, 37), (1000, 37), (2100, 37), (1100, 1024), (19, 17000)]
)
@pytest.mark.parametrize("op", OPS, ids=str)
def test_backward_many_rows_float32(rng, op, M, K):
    # float32 rows add their dweight/dbias terms in float, 16 rows at a time, then in double
    x = normal(rng, (M, K), F32, 0.5, 2.0)
    w = normal(rng, (K,), F32, 1.0, 0.5)
    b = normal(rng, (K,), F32) if op is LN else None
    dy = normal(rng, (M, K), F32, 0.1, 1.0)
    _, *stats = op.fwd(x, w, b)
    check_backward(op, dy, x, stats, w, F32, factor=2.0)


def _extreme_backward_case(rng, case, K):
    """(x, w, dy, eps) for a float32 backward whose terms leave float's comfortable range,
    while the exact gradients are ordinary float32 numbers."""
    x = normal(rng, (5, K), F32, 0.3, 1.0)
    w = normal(rng, (K,), F32, 1.0, 0.5)
    dy = normal(rng, (5, K), F32)
    eps = 1e-5
    if case == "dy*w overflows float":  # dy * w ~ 1e39, times rstd ~ 1e-4
        x = normal(rng, (5, K), F32, 0.0, 1e4)
        dy = normal(rng, (5, K), F32, 0.0, 1e30)
        w = normal(rng, (K,), F32, 0.0, 1e9)
    elif case == "dy*w underflows float":  # dy * w ~ 1e-43 (subnormal), times rstd ~ 1e6
        x = normal(rng, (5, K), F32, 0.0, 1e-6)
        dy = normal(rng, (5, K), F32, 0.0, 1e-37)
        w = normal(rng, (K,), F32, 1.0, 0.5) * np.float32(1e-6)
        eps = 0.0
    elif case == "subnormal weight":  # w ~ 1e-42, times rstd ~ 1e10
        x = normal(rng, (5, K), F32, 0.0, 1e-10)
        w = (normal(rng, (K,), F32, 1.0, 0.5).astype(np.float64) * 1e-42).astype(F32)
        eps = 0.0
    elif case == "tiny dy":  # dy ~ 1e-41 (subnormal) times w ~ 0.1: dy * w loses bits
        x = normal(rng, (5, K), F32, 0.0, 1e-5)
        dy = (normal(rng, (5, K), F32).astype(np.float64) * 1e-41).astype(F32)
        w = normal(rng, (K,), F32, 0.1, 0.05)
        eps = 0.0
    elif case == "one row of each":  # rows in float and in double in the same call
        dy[1] *= np.float32(1e28)
        w = w * np.float32(1e9)
        dy[3] = (dy[3].astype(np.float64) * 1e-39).astype(F32)
    return x, w, dy, eps


EXTREME_CASES = [
    "dy*w overflows float",
    "dy*w underflows float",
    "subnormal weight",
    "tiny dy",
    "one row of each",
]


@pytest.mark.parametrize("K", [7, 300, 4097, 16500])
@pytest.mark.parametrize("case", EXTREME_CASES)
@pytest.mark.parametrize("op", OPS, ids=str)
def test_backward_float32_extreme_magnitudes(rng, op, case, K):
    x, w, dy, eps = _extreme_backward_case(rng, case, K)
    assert np.isfinite(x).all() and np.isfinite(w).all() and np.isfinite(dy).all()
    b = normal(rng, (K,), F32) if op is LN else None
    _, *stats = op.fwd(x, w, b, eps=eps)
    grads = op.bwd(dy, x, stats, w)
    expected = op.ref_bwd(dy, x, stats, w)
    for i, (g, e) in enumerate(zip(grads, expected, strict=True)):
        if e is None:
            continue
        assert np.isfinite(e).all() and np.abs(e).max() < 1e38
        assert np.isfinite(g).all(), f"gradient {i}"
        if i == 0:  # each row of dx at the precision of its own magnitude
            for r in range(e.shape[0]):
                assert_close(g[r], e[r], F32, scale=np.abs(e[r]).max(), factor=2.0,
                             err_msg=f"{case}: dx row {r}")
        else:
            assert_close(g, e, F32, scale=np.abs(e).max(), factor=2.0,
                         err_msg=f"{case}: gradient {i}")


@pytest.mark.parametrize(("M", "K"), [(3, 4), (20, 300), (3, 20000), (40, 17000)])
@pytest.mark.parametrize("op", OPS, ids=str)
def test_backward_float32_parameter_sums_near_the_top(rng, op, M, K):
    """dbias / dweight of dy near float32's largest values: the exact sums are float32
    numbers (2.95e38 here), but a float partial sum of the first two rows (4e38) is not.
    They must come out finite."""
    x = normal(rng, (M, K), F32, 0.0, 1e15)  # rstd ~ 1e-15: dy * w * rstd stays small
    dy = np.zeros((M, K), F32)
    dy[0] = dy[1] = 2e38
    dy[2] = -1.05e38
    w = np.full(K, 1e-3, F32)
    b = normal(rng, (K,), F32) if op is LN else None
    _, *stats = op.fwd(x, w, b)
    grads = op.bwd(dy, x, stats, w)
    expected = op.ref_bwd(dy, x, stats, w)
    for i, (g, e) in enumerate(zip(grads, expected, strict=True)):
        ok = np.isfinite(e) & (np.abs(e) < 3.4e38)
        assert ok.any()
        assert np.isfinite(g[ok]).all(), f"gradient {i}"
        assert_close(g[ok], e[ok], F32, scale=np.abs(e[ok]).max(), factor=2.0,
                     err_msg=f"gradient {i}")


@pytest.mark.parametrize("streamed", [False, True], ids=["stores", "streamed"])
@pytest.mark.parametrize("K", [64, 1031, 2048, 2053, 4096])
@pytest.mark.parametrize("op", OPS, ids=str)
def test_backward_rows_match_single_rows(rng, op, K, streamed):
    # every row's dx must be bit for bit the one it gets alone, whatever its neighbours:
    # float rows, rows computed in double (dy far above float's comfortable range, or far
    # below it), the block's last row, streamed or not
    M = 7
    x = normal(rng, (M, K), F32, 0.5, 2.0)
    dy = normal(rng, (M, K), F32)
    dy[3] *= np.float32(1e35)
    dy[4] *= np.float32(1e-36)
    w = normal(rng, (K,), F32, 1.0, 0.5)
    b = normal(rng, (K,), F32) if op is LN else None
    _, *stats = op.fwd(x, w, b)
    old = _kernels.get_stream_bytes()
    _kernels.set_stream_bytes(0 if streamed else 1 << 62)
    try:
        grads = op.bwd(dy, x, stats, w)
        alone = [op.bwd(dy[r : r + 1], x[r : r + 1], [s[r : r + 1] for s in stats], w)[0]
                 for r in range(M)]
    finally:
        _kernels.set_stream_bytes(old)
    for r in range(M):
        assert_identical(grads[0][r : r + 1], alone[r], f"dx row {r}")
    expected = op.ref_bwd(dy, x, stats, w)
    for i in range(1, len(grads)):
        assert_close(grads[i], expected[i], F32, scale=np.abs(expected[i]).max(), factor=2.0,
                     err_msg=f"gradient {i}")


def _clean_and_dirty(rng, dtype, K, row, value, where=3):
    x = normal(rng, (6, K), dtype, 1.0, 2.0)
    dirty = x.copy()
    dirty[row, min(where, K - 1)] = value
    return x, dirty


@pytest.mark.parametrize("K", [1, 7, 33, 4097, 16500])
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("op", OPS, ids=str)
def test_nan_stays_in_its_row(rng, op, dtype, K):
    x, dirty = _clean_and_dirty(rng, dtype, K, 2, np.nan)
    w = normal(rng, (K,), dtype)
    b = normal(rng, (K,), dtype) if op is LN else None
    y, *stats = op.fwd(x, w, b)
    yd, *stats_d = op.fwd(dirty, w, b)
    assert np.isnan(yd[2]).all()
    keep = np.arange(6) != 2
    assert_identical(yd[keep], y[keep])
    for s, sd in zip(stats, stats_d, strict=True):
        assert_identical(sd[keep], s[keep])
    assert np.isnan(stats_d[0][2])
    dy = normal(rng, x.shape, dtype)
    grads = op.bwd(dy, x, stats, w)
    grads_d = op.bwd(dy, dirty, stats_d, w)
    assert np.isnan(grads_d[0][2]).all()
    assert_identical(grads_d[0][keep], grads[0][keep])
    if op is LN:
        assert_identical(grads_d[2], grads[2])


@pytest.mark.parametrize("value", [np.inf, -np.inf])
@pytest.mark.parametrize("K", [1, 7, 33, 4097])
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("op", OPS, ids=str)
def test_inf_row(rng, op, dtype, K, value):
    x, dirty = _clean_and_dirty(rng, dtype, K, 4, value)
    w = normal(rng, (K,), dtype)
    b = normal(rng, (K,), dtype) if op is LN else None
    y, *stats = op.fwd(x, w, b)
    yd, *stats_d = op.fwd(dirty, w, b)
    keep = np.arange(6) != 4
    assert_identical(yd[keep], y[keep])
    for s, sd in zip(stats, stats_d, strict=True):
        assert_identical(sd[keep], s[keep])
    expected = op.ref_fwd(dirty, w, b)
    assert_close(yd, expected[0], dtype)
    if op is LN:
        assert np.isnan(yd[4]).all()
    else:
        # rstd = 1/sqrt(inf) = 0: the infinite element is NaN, the others 0 (as the reference)
        assert stats_d[0][4] == 0
        assert np.isnan(yd[4, min(3, K - 1)])


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_layer_norm_nonfinite_row_rstd_is_nan(dtype, value):
    x = np.array([[1.0, 2.0, 4.0, 8.0], [1.0, 2.0, value, 8.0]], dtype=dtype)
    _, mean, rstd = fn.layer_norm(x, return_stats=True)
    _, mr, rr = ref.layer_norm(f64(x), return_stats=True)
    assert np.isnan(rr[1])
    assert np.isnan(rstd[1]), f"rstd {rstd[1]} for the row {x[1]}, reference {rr[1]}"
    assert not np.isfinite(mean[1])


CONSTANTS = [0.0, 1.0, -3.7, 0.1, 1 / 3, 1e7, -1e9, 1e10, 1e-30]


@pytest.mark.parametrize("K", (*KS, 256, 257, 1000))
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_layer_norm_constant_rows_give_bias(rng, dtype, K):
    x = np.array(CONSTANTS, dtype=dtype)[:, None].repeat(K, axis=1)
    w = normal(rng, (K,), dtype)
    b = normal(rng, (K,), dtype)
    y, mean, rstd = fn.layer_norm(x, w, b, return_stats=True)
    np.testing.assert_array_equal(y, np.broadcast_to(b, x.shape), strict=False)
    assert y.dtype == dtype
    np.testing.assert_array_equal(mean, x[:, 0])
    np.testing.assert_allclose(rstd, np.full(len(CONSTANTS), 1e-5**-0.5), rtol=1e-6)
    assert_identical(fn.layer_norm(x, w), np.zeros_like(x))
    assert_identical(fn.layer_norm(x), np.zeros_like(x))
    dy = normal(rng, x.shape, dtype)
    dx, dw, db = fn.layer_norm_backward(dy, x, mean, rstd, w)
    for g in (dx, dw, db):
        assert np.isfinite(g).all()
    check_backward(LN, dy, x, (mean, rstd), w, dtype, factor=2.0)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_layer_norm_eps_zero_constant_row(dtype):
    x = np.array([[2.0] * 5, [1.0, 2.0, 3.0, 4.0, 5.0]], dtype=dtype)
    y, mean, rstd = fn.layer_norm(x, eps=0.0, return_stats=True)
    assert mean[0] == 2.0
    assert np.isposinf(rstd[0])
    assert np.isnan(y[0]).all()
    assert np.isfinite(y[1]).all()
    yr, mr, rr = ref.layer_norm(f64(x), eps=0.0, return_stats=True)
    assert_close(y, yr, dtype)
    assert_close(rstd, rr, dtype)


@pytest.mark.parametrize("K", [1, 7, 33, 4097])
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_rms_norm_zero_rows(rng, dtype, K):
    x = normal(rng, (4, K), dtype)
    x[1] = 0
    x[3] = 0
    w = normal(rng, (K,), dtype)
    y, rstd = fn.rms_norm(x, w, return_stats=True)
    assert_identical(y[[1, 3]], np.zeros((2, K), dtype))
    np.testing.assert_allclose(rstd[[1, 3]], 1e-6**-0.5, rtol=1e-6)
    dy = normal(rng, x.shape, dtype)
    dx, dw = fn.rms_norm_backward(dy, x, rstd, w)
    assert np.isfinite(dx).all() and np.isfinite(dw).all()
    check_backward(RMS, dy, x, (rstd,), w, dtype, factor=2.0)
    # eps = 0 on a zero row: rstd = inf and y = 0 * inf = NaN, as in the reference
    y0, r0 = fn.rms_norm(x, eps=0.0, return_stats=True)
    assert np.isposinf(r0[1]) and np.isnan(y0[1]).all()
    assert np.isfinite(y0[[0, 2]]).all()


@pytest.mark.parametrize("op", OPS, ids=str)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize(
    ("shape", "axis"),
    [
        ((0, 5), -1),
        ((0, 0), -1),
        ((3, 0), -1),
        ((2, 0, 3), -2),
        ((2, 0, 3), -1),
        ((0,), 0),
        ((0, 3), 0),
        ((3, 0), 0),
    ],
)
def test_empty(op, dtype, shape, axis):
    x = np.ones(shape, dtype)
    nshape = x.shape[axis:]
    K = int(np.prod(nshape))
    w = np.ones(nshape, dtype)
    b = np.zeros(nshape, dtype) if op is LN else None
    y, *stats = op.fwd(x, w, b, axis=axis)
    assert y.shape == shape and y.dtype == dtype
    for s in stats:
        assert s.shape == shape[:axis] and s.dtype == dtype
        if K == 0:
            assert np.isnan(s).all()
    out = np.empty(shape, dtype)
    assert op.public(x, w, out=out, axis=axis) is out
    dy = np.ones(shape, dtype)
    grads = op.bwd(dy, x, stats, w, axis=axis)
    assert grads[0].shape == shape and grads[0].dtype == dtype
    for g, e in zip(grads[1:], op.ref_bwd(dy, x, stats, w, axis=axis)[1:], strict=True):
        assert g.shape == nshape and g.dtype == dtype
        np.testing.assert_array_equal(g, e)


# --------------------------------------------------------------------------- errors


BAD_DTYPES = [
    np.int32,
    np.int64,
    np.uint8,
    np.bool_,
    np.complex64,
    np.complex128,
    object,
    np.longdouble,
]


def _bad(dtype, shape=(3, 4)):
    if np.dtype(dtype) == np.dtype(object):
        a = np.empty(shape, dtype=object)
        a[...] = 1.0
        return a
    return np.ones(shape, dtype=dtype)


@pytest.mark.parametrize("dtype", BAD_DTYPES)
def test_unsupported_dtype_type_error(dtype):
    if np.dtype(dtype) == np.dtype(np.longdouble) and np.dtype(np.longdouble).itemsize == 8:
        pytest.skip("long double is float64 on this platform")
    x = _bad(dtype)
    good = np.ones((3, 4))
    stats = np.ones(3)
    with pytest.raises(TypeError, match="float32 or float64"):
        fn.layer_norm(x)
    with pytest.raises(TypeError, match="float32 or float64"):
        fn.rms_norm(x)
    with pytest.raises(TypeError, match="float32 or float64"):
        fn.layer_norm_backward(good, x, stats, stats)
    with pytest.raises(TypeError, match="float32 or float64"):
        fn.rms_norm_backward(good, x, stats)


@pytest.mark.parametrize("dtype", [np.bool_, np.complex128, object])
def test_unsupported_parameter_dtype_type_error(dtype):
    x = np.ones((3, 4))
    p = _bad(dtype, (4,))
    with pytest.raises(TypeError):
        fn.layer_norm(x, p)
    with pytest.raises(TypeError):
        fn.layer_norm(x, None, p)
    with pytest.raises(TypeError):
        fn.rms_norm(x, p)
    with pytest.raises(TypeError):
        fn.layer_norm_backward(_bad(dtype, (3, 4)), x, np.ones(3), np.ones(3))
    with pytest.raises(TypeError):
        fn.rms_norm_backward(np.ones((3, 4)), x, _bad(dtype, (3,)))


@pytest.mark.parametrize("eps", [-1e-5, -1e-300, np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("op", OPS, ids=str)
def test_bad_eps_value_error(op, eps):
    with pytest.raises(ValueError, match="eps"):
        op.public(np.ones((2, 3)), eps=eps)


@pytest.mark.parametrize("op", OPS, ids=str)
def test_eps_not_a_number_type_error(op):
    with pytest.raises(TypeError, match="eps"):
        op.public(np.ones((2, 3)), eps="small")
    with pytest.raises(TypeError, match="eps"):
        op.public(np.ones((2, 3)), eps=None)


BAD_PARAM_SHAPES = [(5,), (3,), (0,), (), (1, 4), (4, 1), (2, 4)]


@pytest.mark.parametrize("shape", BAD_PARAM_SHAPES)
def test_wrong_parameter_shape_value_error(shape):
    x = np.ones((3, 4), F32)
    p = np.ones(shape, F32)
    out = np.full_like(x, 7.0)
    with pytest.raises(ValueError, match="weight"):
        fn.layer_norm(x, p, out=out)
    with pytest.raises(ValueError, match="bias"):
        fn.layer_norm(x, None, p, out=out)
    with pytest.raises(ValueError, match="weight"):
        fn.rms_norm(x, p, out=out)
    with pytest.raises(ValueError, match="weight"):
        fn.layer_norm_backward(x, x, np.ones(3, F32), np.ones(3, F32), p)
    with pytest.raises(ValueError, match="weight"):
        fn.rms_norm_backward(x, x, np.ones(3, F32), p)
    assert (out == 7.0).all()


def test_wrong_parameter_shape_3d_axis():
    x = np.ones((2, 3, 4))
    with pytest.raises(ValueError, match="weight"):
        fn.layer_norm(x, np.ones(4), axis=-2)
    with pytest.raises(ValueError, match="weight"):
        fn.layer_norm(x, np.ones((3, 4)), axis=-1)
    with pytest.raises(ValueError, match="bias"):
        fn.layer_norm(x, np.ones((3, 4)), np.ones(12), axis=-2)


@pytest.mark.parametrize("op", OPS, ids=str)
def test_out_wrong_shape_value_error(op):
    x = np.ones((3, 4))
    for shape in [(4, 3), (3, 5), (12,), (1, 3, 4), ()]:
        out = np.full(shape, 7.0)
        with pytest.raises(ValueError, match="out"):
            op.public(x, out=out)
        assert (out == 7.0).all()


@pytest.mark.parametrize("op", OPS, ids=str)
def test_out_wrong_dtype_type_error(op):
    x = np.ones((3, 4))
    for dtype in [F32, np.int64, np.complex128]:
        out = np.full(x.shape, 7, dtype)
        with pytest.raises(TypeError, match="out"):
            op.public(x, out=out)
        assert (out == 7).all()
    with pytest.raises(TypeError, match="out"):
        op.public(x, out=[[0.0] * 4] * 3)


@pytest.mark.parametrize("op", OPS, ids=str)
def test_out_read_only_value_error(rng, op):
    x = normal(rng, (3, 4), F64)
    out = np.full(x.shape, 7.0)
    out.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        op.public(x, out=out)
    assert (out == 7.0).all()
    x.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        op.public(x, out=x)
    xv, _ = broadcast_rows(x[0], (5, 4))
    with pytest.raises(ValueError, match="read-only"):
        op.public(xv, out=xv)


@pytest.mark.parametrize("axis", [2, -3, 10, -100])
@pytest.mark.parametrize("op", OPS, ids=str)
def test_bad_axis_axis_error(op, axis):
    x = np.ones((3, 4))
    with pytest.raises(AxisError):
        op.public(x, axis=axis)
    with pytest.raises(AxisError):
        if op is LN:
            fn.layer_norm_backward(x, x, np.ones(3), np.ones(3), axis=axis)
        else:
            fn.rms_norm_backward(x, x, np.ones(3), axis=axis)


@pytest.mark.parametrize("op", OPS, ids=str)
def test_non_integer_axis_type_error(op):
    with pytest.raises(TypeError, match="axis"):
        op.public(np.ones((3, 4)), axis=1.0)
    with pytest.raises(TypeError, match="axis"):
        op.public(np.ones((3, 4)), axis=(0, 1))


@pytest.mark.parametrize("op", OPS, ids=str)
def test_zero_d_input_axis_error(op):
    with pytest.raises(AxisError):
        op.public(np.float64(3.0))
    with pytest.raises(AxisError):
        op.public(np.array(3.0, F32), axis=0)
    with pytest.raises(AxisError):
        if op is LN:
            fn.layer_norm_backward(np.array(1.0), np.array(1.0), np.array(1.0), np.array(1.0))
        else:
            fn.rms_norm_backward(np.array(1.0), np.array(1.0), np.array(1.0))


def test_backward_wrong_shapes_value_error():
    x = np.ones((3, 4))
    s = np.ones(3)
    for dy in [np.ones((3, 5)), np.ones((4, 3)), np.ones(12), np.ones((1, 3, 4))]:
        with pytest.raises(ValueError, match="dy"):
            fn.layer_norm_backward(dy, x, s, s)
        with pytest.raises(ValueError, match="dy"):
            fn.rms_norm_backward(dy, x, s)
    for bad in [np.ones(4), np.ones((3, 1)), np.ones(()), np.ones(0)]:
        with pytest.raises(ValueError, match="mean"):
            fn.layer_norm_backward(x, x, bad, s)
        with pytest.raises(ValueError, match="rstd"):
            fn.layer_norm_backward(x, x, s, bad)
        with pytest.raises(ValueError, match="rstd"):
            fn.rms_norm_backward(x, x, bad)
    x3 = np.ones((2, 3, 4))
    with pytest.raises(ValueError, match="mean"):
        fn.layer_norm_backward(x3, x3, np.ones((2, 3)), np.ones(2), axis=-2)
    with pytest.raises(ValueError, match="rstd"):
        fn.rms_norm_backward(x3, x3, np.ones(2), axis=-1)
