"""batch_norm, group_norm and instance_norm (forward and backward) against fastnorm.reference,
finite differences, layout and stride equivalences, numerics and argument checking."""

from __future__ import annotations

import zlib

import numpy as np
import pytest
from gradcheck import check_grad
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from numpy.exceptions import AxisError

import fastnorm as fn
from fastnorm import reference as ref

F32, F64 = np.dtype(np.float32), np.dtype(np.float64)
DTYPES = (F32, F64)

# Absolute tolerances are multiplied by max(1, max|expected|). float32 results are compared
# with the float64 reference of the same float32 values: a correct kernel differs by a few
# float32 roundings (about 6e-8 each), a wrong formula by orders of magnitude more.
TOL = {
    (F32, "fwd"): {"rtol": 1e-5, "atol": 1e-5},
    (F32, "stat"): {"rtol": 1e-5, "atol": 1e-5},
    (F32, "grad"): {"rtol": 1e-5, "atol": 1e-5},
    (F64, "fwd"): {"rtol": 1e-12, "atol": 1e-12},
    (F64, "stat"): {"rtol": 1e-12, "atol": 1e-12},
    (F64, "grad"): {"rtol": 1e-10, "atol": 1e-10},
}

HYPOTHESIS = settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def rng_for(*key):
    return np.random.default_rng(zlib.crc32(repr(key).encode()))


def assert_close(actual, expected, dtype, kind="fwd", err_msg=""):
    actual = np.asarray(actual)
    expected = np.asarray(expected, dtype=np.float64)
    assert actual.shape == expected.shape, (actual.shape, expected.shape, err_msg)
    tol = TOL[np.dtype(dtype), kind]
    finite = np.abs(expected[np.isfinite(expected)])
    scale = max(1.0, float(finite.max())) if finite.size else 1.0
    np.testing.assert_allclose(
        actual.astype(np.float64),
        expected,
        rtol=tol["rtol"],
        atol=tol["atol"] * scale,
        equal_nan=True,
        err_msg=err_msg,
    )


def channel_shape(ndim, axis):
    shape = [1] * ndim
    shape[axis] = -1
    return shape


def make_x(rng, shape, axis, dtype, loc=0.5, scale=2.0):
    """Non-degenerate data with a different offset and spread per channel."""
    x = loc + scale * rng.standard_normal(shape)
    if len(shape) >= 2 and shape[axis] > 0:
        c = shape[axis]
        x = x * rng.uniform(0.5, 2.0, c).reshape(channel_shape(len(shape), axis))
        x = x + rng.uniform(-3.0, 3.0, c).reshape(channel_shape(len(shape), axis))
    return x.astype(dtype)


def make_params(rng, c, dtype, affine):
    w = rng.uniform(0.5, 2.0, c).astype(dtype) if affine in ("weight", "both") else None
    b = rng.standard_normal(c).astype(dtype) if affine in ("bias", "both") else None
    return w, b


def f64(a):
    return None if a is None else np.asarray(a, dtype=np.float64)


def group_choices(op, c):
    if op != "group":
        return [None]
    if c == 0:
        return [1]
    divisors = [g for g in range(1, c + 1) if c % g == 0]
    return sorted({divisors[0], divisors[len(divisors) // 2], divisors[-1]})


def forward(mod, op, x, w=None, b=None, *, axis=1, groups=None, **kw):
    if op == "batch":
        return mod.batch_norm(x, w, b, axis=axis, **kw)
    if op == "group":
        return mod.group_norm(x, groups, w, b, axis=axis, **kw)
    return mod.instance_norm(x, w, b, axis=axis, **kw)


def backward(mod, op, dy, x, mean, rstd, w=None, *, axis=1, groups=None, training=True):
    if op == "batch":
        return mod.batch_norm_backward(dy, x, mean, rstd, w, axis=axis, training=training)
    if op == "group":
        return mod.group_norm_backward(dy, x, mean, rstd, groups, w, axis=axis)
    return mod.instance_norm_backward(dy, x, mean, rstd, w, axis=axis)


def stats_shape(op, shape, axis, groups):
    c = shape[axis]
    if op == "batch":
        return (c,)
    return (shape[0], groups if op == "group" else c)


def case_id(case):
    shape, axis = case
    return "x".join(map(str, shape)) + f"-ax{axis}"


OPS = ("batch", "group", "instance")

CASES = [
    ((5, 3), 1),
    ((2, 1), 1),
    ((9, 7), -1),
    ((33, 17), 1),
    ((4, 3, 1), 1),
    ((3, 7, 3), 1),
    ((2, 17, 7), 1),
    ((2, 3, 15), 1),
    ((2, 7, 17), 1),
    ((2, 3, 33), 1),
    ((2, 7, 63), 1),
    ((2, 3, 64), 1),
    ((2, 17, 65), 1),
    ((2, 21, 65), 1),
    ((2, 3, 4097), 1),
    ((2, 1, 4097), 1),
    ((3, 15, 7), -1),
    ((2, 33, 17), -1),
    ((3, 9, 12), -1),
    ((2, 4, 5, 3), 1),
    ((2, 5, 7, 3), -1),
    ((2, 5, 7, 3), 2),
    ((2, 6, 9, 9), 1),
    ((2, 3, 4, 5, 7), 1),
    ((2, 3, 4, 5, 7), -1),
    ((2, 3, 4, 5, 7), 3),
]
BIG_CASES = [
    ((16, 3, 100, 100), 1),
    ((20000, 8), -1),
    ((4, 64, 64, 7), -1),
    ((3, 5, 40000), 1),
]
AFFINE = ("none", "weight", "bias", "both")


# --------------------------------------------------------------------------- forward vs reference


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("affine", AFFINE)
@pytest.mark.parametrize("case", CASES + BIG_CASES, ids=case_id)
@pytest.mark.parametrize("op", OPS)
def test_forward_matches_reference(op, case, affine, dtype):
    shape, axis = case
    rng = rng_for("fwd", op, shape, axis, affine, str(dtype))
    x = make_x(rng, shape, axis, dtype)
    c = shape[axis]
    w, b = make_params(rng, c, dtype, affine)
    for groups in group_choices(op, c):
        msg = f"groups={groups}"
        y, mean, rstd = forward(fn, op, x, w, b, axis=axis, groups=groups, return_stats=True)
        ey, emean, erstd = forward(
            ref, op, f64(x), f64(w), f64(b), axis=axis, groups=groups, return_stats=True
        )
        assert y.dtype == dtype and mean.dtype == dtype and rstd.dtype == dtype
        assert mean.shape == rstd.shape == stats_shape(op, shape, axis, groups)
        assert_close(y, ey, dtype, "fwd", msg)
        assert_close(mean, emean, dtype, "stat", msg)
        assert_close(rstd, erstd, dtype, "stat", msg)
        y_only = forward(fn, op, x, w, b, axis=axis, groups=groups)
        assert np.array_equal(y_only, y), msg


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("case", CASES + BIG_CASES[:2], ids=case_id)
def test_batch_norm_eval_matches_reference_and_keeps_running_stats(case, dtype):
    shape, axis = case
    rng = rng_for("eval", shape, axis, str(dtype))
    x = make_x(rng, shape, axis, dtype)
    c = shape[axis]
    w, b = make_params(rng, c, dtype, "both")
    rm = rng.uniform(-2.0, 2.0, c).astype(dtype)
    rv = rng.uniform(0.5, 4.0, c).astype(dtype)
    rm0, rv0 = rm.copy(), rv.copy()
    y, mean, rstd = fn.batch_norm(
        x, w, b, rm, rv, training=False, axis=axis, eps=1e-3, return_stats=True
    )
    assert np.array_equal(rm, rm0) and np.array_equal(rv, rv0)
    ey, emean, erstd = ref.batch_norm(
        f64(x),
        f64(w),
        f64(b),
        f64(rm),
        f64(rv),
        training=False,
        axis=axis,
        eps=1e-3,
        return_stats=True,
    )
    assert_close(y, ey, dtype)
    assert np.array_equal(mean, rm0)
    assert_close(rstd, erstd, dtype, "stat")
    y2 = fn.batch_norm(x, None, None, rm, rv, training=False, axis=axis, eps=1e-3)
    assert_close(
        y2,
        ref.batch_norm(f64(x), None, None, f64(rm), f64(rv), training=False, axis=axis, eps=1e-3),
        dtype,
    )
    assert np.array_equal(rm, rm0) and np.array_equal(rv, rv0)


# --------------------------------------------------------------------------- running statistics


RUNNING_CASES = [((7, 5), 1), ((3, 5, 7), 1), ((3, 5, 100), 1), ((20000, 8), -1), ((2, 6, 5, 3), 2)]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("momentum", [0.0, 0.1, 1.0])
@pytest.mark.parametrize("case", RUNNING_CASES, ids=case_id)
def test_running_stats_update_like_reference(case, momentum, dtype):
    shape, axis = case
    rng = rng_for("running", shape, axis, momentum, str(dtype))
    x = make_x(rng, shape, axis, dtype)
    c = shape[axis]
    rm = rng.uniform(-1.0, 1.0, c).astype(dtype)
    rv = rng.uniform(0.5, 2.0, c).astype(dtype)
    rm0, rv0 = rm.copy(), rv.copy()
    erm, erv = rm.copy(), rv.copy()
    y, mean, rstd = fn.batch_norm(
        x, None, None, rm, rv, momentum=momentum, axis=axis, return_stats=True
    )
    ref.batch_norm(f64(x), None, None, erm, erv, momentum=momentum, axis=axis)
    assert rm.dtype == dtype and rv.dtype == dtype
    if momentum == 0.0:
        assert np.array_equal(rm, rm0) and np.array_equal(rv, rv0)
    if momentum == 1.0:
        assert np.array_equal(rm, mean)
    assert_close(rm, erm, dtype, "stat")
    assert_close(rv, erv, dtype, "stat")
    n = x.size // c
    var = 1.0 / rstd.astype(np.float64) ** 2 - 1e-5
    assert_close(
        rv, (1 - momentum) * rv0.astype(np.float64) + momentum * var * n / (n - 1), F32, "stat"
    )


@pytest.mark.parametrize("momentum", [0.0, 0.1, 1.0])
@pytest.mark.parametrize(("x_dtype", "r_dtype"), [(F64, F32), (F32, F64)], ids=str)
def test_running_stats_of_another_dtype_are_updated(x_dtype, r_dtype, momentum):
    rng = rng_for("running-mixed", str(x_dtype), momentum)
    x = make_x(rng, (6, 5, 9), 1, x_dtype)
    rm = rng.uniform(-1.0, 1.0, 5).astype(r_dtype)
    rv = rng.uniform(0.5, 2.0, 5).astype(r_dtype)
    erm, erv = rm.copy(), rv.copy()
    fn.batch_norm(x, None, None, rm, rv, momentum=momentum)
    ref.batch_norm(f64(x), None, None, erm, erv, momentum=momentum)
    assert rm.dtype == r_dtype and rv.dtype == r_dtype
    assert_close(rm, erm, F32, "stat")
    assert_close(rv, erv, F32, "stat")


@pytest.mark.parametrize(
    ("x_dtype", "r_dtype"), [(F64, F32), (F32, F64), (F32, F32), (F64, F64)], ids=str
)
def test_momentum_zero_leaves_running_stats_bitwise(x_dtype, r_dtype):
    rng = rng_for("momentum0", str(x_dtype), str(r_dtype))
    x = make_x(rng, (6, 5, 9), 1, x_dtype)
    rm = rng.uniform(-1.0, 1.0, 5).astype(r_dtype)
    rv = rng.uniform(0.5, 2.0, 5).astype(r_dtype)
    rm0, rv0 = rm.copy(), rv.copy()
    fn.batch_norm(x, None, None, rm, rv, momentum=0.0)
    assert np.array_equal(rm, rm0)
    assert np.array_equal(rv, rv0)


@pytest.mark.parametrize("training", [True, False])
def test_running_stats_unaligned_byteswapped_or_mixed_rejected(training):
    rng = rng_for("running-unaligned")
    x = make_x(rng, (6, 5, 9), 1, F64)
    out = np.full(x.shape, -7.0)
    good = rng.uniform(0.5, 2.0, 5)
    buf = np.zeros(5 * 8 + 1, np.uint8)
    unaligned = buf[1:].view(F64)
    assert not unaligned.flags.aligned
    unaligned[...] = rng.uniform(-1.0, 1.0, 5)
    swapped = rng.uniform(0.5, 2.0, 5).astype(">f8")
    other = rng.uniform(0.5, 2.0, 5).astype(F32)
    watch = (good, unaligned, swapped, other, out)
    kw = {"training": training, "out": out, "watch": watch}
    guarded(ValueError, fn.batch_norm, x, None, None, unaligned, good, **kw)
    guarded(ValueError, fn.batch_norm, x, None, None, good, unaligned, **kw)
    guarded(TypeError, fn.batch_norm, x, None, None, swapped, good, **kw)
    guarded(TypeError, fn.batch_norm, x, None, None, good, swapped, **kw)
    guarded(TypeError, fn.batch_norm, x, None, None, good, other, **kw)


@pytest.mark.parametrize("given", ["running_mean", "running_var"])
def test_training_with_one_running_stat(given):
    rng = rng_for("one-running", given)
    x = make_x(rng, (6, 5, 9), 1, F64)
    r = rng.uniform(0.5, 2.0, 5)
    r0, er = r.copy(), r.copy()
    args = (r, None) if given == "running_mean" else (None, r)
    eargs = (er, None) if given == "running_mean" else (None, er)
    y = fn.batch_norm(x, None, None, *args)
    ey = ref.batch_norm(x, None, None, *eargs)
    assert_close(y, ey, F64)
    assert_close(r, er, F64, "stat")
    assert not np.allclose(r, r0)


@pytest.mark.parametrize("op", OPS)
def test_byteswapped_input_and_parameters(op):
    rng = rng_for("byteswap", op)
    x = make_x(rng, (4, 6, 9), 1, F64)
    w, b = make_params(rng, 6, F64, "both")
    sw = x.astype(">f8")
    y = forward(fn, op, sw, w.astype(">f8"), b.astype(">f8"), groups=3)
    assert y.dtype == F64
    assert np.array_equal(y, forward(fn, op, x, w, b, groups=3))


def test_running_stats_eval_mode_mixed_dtype_untouched():
    rng = rng_for("eval-mixed")
    x = make_x(rng, (6, 5, 9), 1, F32)
    rm = rng.uniform(-1.0, 1.0, 5)
    rv = rng.uniform(0.5, 2.0, 5)
    rm0, rv0 = rm.copy(), rv.copy()
    y = fn.batch_norm(x, None, None, rm, rv, training=False)
    assert np.array_equal(rm, rm0) and np.array_equal(rv, rv0)
    assert_close(y, ref.batch_norm(f64(x), None, None, rm, rv, training=False), F32)


# --------------------------------------------------------------------------- backward vs reference


BACKWARD_OPS = ("batch", "batch_eval", "group", "instance")


def _saved_stats(op, x, w, b, axis, groups, rng):
    """Forward with fastnorm; returns (y, mean, rstd, training)."""
    c = x.shape[axis]
    if op == "batch_eval":
        rm = rng.uniform(-1.0, 1.0, c).astype(x.dtype)
        rv = rng.uniform(0.5, 2.0, c).astype(x.dtype)
        y, mean, rstd = fn.batch_norm(x, w, b, rm, rv, training=False, axis=axis, return_stats=True)
        return y, mean, rstd, False
    base = "batch" if op == "batch" else op
    y, mean, rstd = forward(fn, base, x, w, b, axis=axis, groups=groups, return_stats=True)
    return y, mean, rstd, True


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("with_weight", [False, True], ids=["noweight", "weight"])
@pytest.mark.parametrize("case", CASES + BIG_CASES[:3], ids=case_id)
@pytest.mark.parametrize("op", BACKWARD_OPS)
def test_backward_matches_reference(op, case, with_weight, dtype):
    shape, axis = case
    rng = rng_for("bwd", op, shape, axis, with_weight, str(dtype))
    x = make_x(rng, shape, axis, dtype)
    c = shape[axis]
    w, b = make_params(rng, c, dtype, "both" if with_weight else "bias")
    dy = rng.standard_normal(shape).astype(dtype)
    base = "batch" if op == "batch_eval" else op
    for groups in group_choices(base, c):
        _, mean, rstd, training = _saved_stats(op, x, w, b, axis, groups, rng)
        dx, dw, db = backward(
            fn, base, dy, x, mean, rstd, w, axis=axis, groups=groups, training=training
        )
        edx, edw, edb = backward(
            ref,
            base,
            f64(dy),
            f64(x),
            f64(mean),
            f64(rstd),
            f64(w),
            axis=axis,
            groups=groups,
            training=training,
        )
        msg = f"groups={groups}"
        assert dx.dtype == dtype and db.dtype == dtype
        assert_close(dx, edx, dtype, "grad", msg)
        assert_close(db, edb, dtype, "grad", msg)
        if with_weight:
            assert dw.dtype == dtype
            assert_close(dw, edw, dtype, "grad", msg)
        else:
            assert dw is None


def test_batch_norm_backward_defaults_to_training():
    rng = rng_for("bwd-default")
    x = make_x(rng, (6, 4, 5), 1, F64)
    dy = rng.standard_normal(x.shape)
    _, mean, rstd = fn.batch_norm(x, return_stats=True)
    a = fn.batch_norm_backward(dy, x, mean, rstd)
    b = fn.batch_norm_backward(dy, x, mean, rstd, training=True)
    c = fn.batch_norm_backward(dy, x, mean, rstd, training=False)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[2], b[2])
    assert not np.allclose(a[0], c[0])
    assert_close(c[0], dy * rstd.reshape(1, -1, 1), F64, "grad")


# --------------------------------------------------------------------------- finite differences


GRAD_CASES = [
    ("batch", (5, 3), 1, None),
    ("batch", (3, 2, 5), 1, None),
    ("batch", (2, 3, 2, 3), -1, None),
    ("batch", (2, 4, 3), 1, None),
    ("batch_eval", (3, 2, 5), 1, None),
    ("batch_eval", (2, 3, 4), -1, None),
    ("group", (2, 6, 3), 1, 3),
    ("group", (2, 6, 3), 1, 2),
    ("group", (2, 3, 2, 4), -1, 2),
    ("group", (2, 4, 3, 2), 2, 1),
    ("instance", (2, 3, 5), 1, None),
    ("instance", (2, 2, 3, 3), -1, None),
]


@pytest.mark.parametrize(
    ("op", "shape", "axis", "groups"),
    GRAD_CASES,
    ids=[f"{c[0]}-{case_id((c[1], c[2]))}-g{c[3]}" for c in GRAD_CASES],
)
def test_backward_matches_finite_differences(op, shape, axis, groups):
    rng = rng_for("fd", op, shape, axis, groups)
    x = make_x(rng, shape, axis, F64)
    c = shape[axis]
    w, b = make_params(rng, c, F64, "both")
    dy = rng.standard_normal(shape)
    base = "batch" if op == "batch_eval" else op
    if op == "batch_eval":
        rm = rng.uniform(-1.0, 1.0, c)
        rv = rng.uniform(0.5, 2.0, c)

        def fwd(x_, w_, b_):
            return fn.batch_norm(x_, w_, b_, rm, rv, training=False, axis=axis)
    else:

        def fwd(x_, w_, b_):
            return forward(fn, base, x_, w_, b_, axis=axis, groups=groups)

    training = op != "batch_eval"
    if training:
        _, mean, rstd = forward(fn, base, x, w, b, axis=axis, groups=groups, return_stats=True)
    else:
        rm0, rv0 = rm.copy(), rv.copy()
        _, mean, rstd = fn.batch_norm(x, w, b, rm, rv, training=False, axis=axis, return_stats=True)
    dx, dw, db = backward(
        fn, base, dy, x, mean, rstd, w, axis=axis, groups=groups, training=training
    )
    check_grad(lambda x_: fwd(x_, w, b), x, dy, dx, err_msg="dx")
    check_grad(lambda w_: fwd(x, w_, b), w, dy, dw, err_msg="dweight")
    check_grad(lambda b_: fwd(x, w, b_), b, dy, db, err_msg="dbias")
    dx0, dw0, db0 = backward(
        fn, base, dy, x, mean, rstd, None, axis=axis, groups=groups, training=training
    )
    assert dw0 is None
    check_grad(lambda x_: fwd(x_, None, None), x, dy, dx0, err_msg="dx without weight")
    if not training:
        assert np.array_equal(rm, rm0) and np.array_equal(rv, rv0)


# --------------------------------------------------------------------------- layouts and strides


LAYOUT_SHAPES = [(2, 7, 5, 13), (2, 6, 9, 11), (4, 6, 65), (3, 12, 4, 5, 2)]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", LAYOUT_SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("op", OPS)
def test_channels_last_and_middle_axis_match_channels_first(op, shape, dtype):
    rng = rng_for("layout", op, shape, str(dtype))
    x = make_x(rng, shape, 1, dtype)
    c = shape[1]
    w, b = make_params(rng, c, dtype, "both")
    dy = rng.standard_normal(shape).astype(dtype)
    for groups in group_choices(op, c):
        y, mean, rstd = forward(fn, op, x, w, b, axis=1, groups=groups, return_stats=True)
        grads = backward(fn, op, dy, x, mean, rstd, w, axis=1, groups=groups)
        for dest in (-1, 2):
            xl = np.ascontiguousarray(np.moveaxis(x, 1, dest))
            dyl = np.ascontiguousarray(np.moveaxis(dy, 1, dest))
            yl, ml, rl = forward(fn, op, xl, w, b, axis=dest, groups=groups, return_stats=True)
            msg = f"groups={groups} dest={dest}"
            assert_close(yl, np.moveaxis(y, 1, dest), dtype, "fwd", msg)
            assert_close(ml, mean, dtype, "stat", msg)
            assert_close(rl, rstd, dtype, "stat", msg)
            dxl, dwl, dbl = backward(fn, op, dyl, xl, ml, rl, w, axis=dest, groups=groups)
            assert_close(dxl, np.moveaxis(grads[0], 1, dest), dtype, "grad", msg)
            assert_close(dwl, grads[1], dtype, "grad", msg)
            assert_close(dbl, grads[2], dtype, "grad", msg)


def _unaligned(a):
    buf = np.zeros(a.nbytes + 1, np.uint8)
    v = buf[1:].view(a.dtype).reshape(a.shape)
    v[...] = a
    return v


VIEWS = {
    "transpose12": (lambda a: a.transpose(0, 2, 1), 1),
    "transpose_all": (lambda a: a.T, -1),
    "negative_strides": (lambda a: a[::-1, :, ::-1], 1),
    "steps": (lambda a: a[::2, :, 1::3], 1),
    "channel_steps": (lambda a: a[:, ::-2, ::2], 1),
    "channels_last_view": (lambda a: np.moveaxis(a, 1, -1), -1),
    "unaligned": (_unaligned, 1),
    "broadcast": (lambda a: np.broadcast_to(a[:1], a.shape), 1),
}


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("view", list(VIEWS))
@pytest.mark.parametrize("op", OPS)
def test_views_give_identical_results(op, view, dtype):
    rng = rng_for("views", op, view, str(dtype))
    make, axis = VIEWS[view]
    for base_shape in [(6, 4, 9), (4, 6, 200)]:
        base = make_x(rng, base_shape, 1, dtype)
        dbase = rng.standard_normal(base_shape).astype(dtype)
        x = make(base)
        dy = make(dbase)
        assert not (x.flags.c_contiguous and x.flags.aligned and x.strides[0] > 0)
        xc, dyc = np.ascontiguousarray(x), np.ascontiguousarray(dy)
        c = x.shape[axis]
        w, b = make_params(rng, c, dtype, "both")
        for groups in group_choices(op, c):
            got = forward(fn, op, x, w, b, axis=axis, groups=groups, return_stats=True)
            exp = forward(fn, op, xc, w, b, axis=axis, groups=groups, return_stats=True)
            for g, e in zip(got, exp, strict=True):
                assert np.array_equal(g, e)
            mean, rstd = exp[1], exp[2]
            gg = backward(fn, op, dy, x, mean, rstd, w, axis=axis, groups=groups)
            ge = backward(fn, op, dyc, xc, mean, rstd, w, axis=axis, groups=groups)
            for g, e in zip(gg, ge, strict=True):
                assert np.array_equal(g, e)
            wv, bv = np.repeat(w, 2)[::2], np.repeat(b, 2)[1::2]
            got = forward(fn, op, x, wv, bv, axis=axis, groups=groups)
            assert np.array_equal(got, exp[0])
            mv, rv = np.repeat(mean, 2, axis=-1)[..., ::2], np.repeat(rstd, 2, axis=-1)[..., 1::2]
            gv = backward(fn, op, dy, x, mv, rv, wv, axis=axis, groups=groups)
            for g, e in zip(gv, ge, strict=True):
                assert np.array_equal(g, e)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_batch_norm_view_updates_running_stats_identically(dtype):
    rng = rng_for("view-running", str(dtype))
    base = make_x(rng, (10, 9, 6), 2, dtype)
    x = base[::-1].transpose(0, 2, 1)
    rm1, rv1 = np.zeros(6, dtype), np.ones(6, dtype)
    rm2, rv2 = rm1.copy(), rv1.copy()
    y1 = fn.batch_norm(x, None, None, rm1, rv1)
    y2 = fn.batch_norm(np.ascontiguousarray(x), None, None, rm2, rv2)
    assert np.array_equal(y1, y2)
    assert np.array_equal(rm1, rm2) and np.array_equal(rv1, rv2)


# --------------------------------------------------------------------------- out=


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("op", OPS)
def test_out_fresh_inplace_and_noncontiguous(op, dtype):
    rng = rng_for("out", op, str(dtype))
    for shape, axis in [((4, 6, 9), 1), ((3, 6, 130), 1), ((50, 6), -1)]:
        x = make_x(rng, shape, axis, dtype)
        c = shape[axis]
        w, b = make_params(rng, c, dtype, "both")
        groups = 3 if op == "group" else None
        ey, em, er = forward(fn, op, x, w, b, axis=axis, groups=groups, return_stats=True)

        out = np.empty_like(x)
        res = forward(fn, op, x, w, b, axis=axis, groups=groups, out=out)
        assert res is out and np.array_equal(out, ey)

        xi = x.copy()
        res, m, r = forward(fn, op, xi, w, b, axis=axis, groups=groups, out=xi, return_stats=True)
        assert res is xi and np.array_equal(xi, ey)
        assert np.array_equal(m, em) and np.array_equal(r, er)

        big = np.full((2,) + shape, -7.0, dtype)
        outv = big[1]
        res = forward(fn, op, x, w, b, axis=axis, groups=groups, out=outv)
        assert res is outv and np.array_equal(outv, ey) and np.all(big[0] == -7.0)

        strided = np.full(shape[:-1] + (2 * shape[-1],), -7.0, dtype)
        outs = strided[..., ::2]
        res = forward(fn, op, x, w, b, axis=axis, groups=groups, out=outs)
        assert res is outs and np.array_equal(outs, ey) and np.all(strided[..., 1::2] == -7.0)

        outt = np.empty(shape[::-1], dtype).T
        res = forward(fn, op, x, w, b, axis=axis, groups=groups, out=outt)
        assert res is outt and np.array_equal(outt, ey)

        xv = np.ascontiguousarray(x[::-1])[::-1]
        res = forward(fn, op, xv, w, b, axis=axis, groups=groups, out=xv)
        assert res is xv and np.array_equal(xv, ey)


@pytest.mark.parametrize("op", OPS)
def test_out_overlapping_input(op):
    rng = rng_for("overlap", op)
    buf = make_x(rng, (41, 6), -1, F64)
    x, out = buf[:-1], buf[1:]
    groups = 2 if op == "group" else None
    ey = forward(fn, op, x.copy(), axis=-1, groups=groups)
    res = forward(fn, op, x, axis=-1, groups=groups, out=out)
    assert res is out
    assert np.array_equal(out, ey)


def test_batch_norm_inplace_with_running_stats():
    rng = rng_for("inplace-running")
    x = make_x(rng, (8, 5, 70), 1, F32)
    rm1, rv1 = np.zeros(5, F32), np.ones(5, F32)
    rm2, rv2 = rm1.copy(), rv1.copy()
    ey = fn.batch_norm(x, None, None, rm1, rv1)
    xi = x.copy()
    fn.batch_norm(xi, None, None, rm2, rv2, out=xi)
    assert np.array_equal(xi, ey)
    assert np.array_equal(rm1, rm2) and np.array_equal(rv1, rv2)


# --------------------------------------------------------------------------- invariances


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("lam", [1e-3, 7.0, 1e3])
@pytest.mark.parametrize("op", OPS)
def test_data_scale_invariance(op, lam, dtype):
    rng = rng_for("scale", op, lam, str(dtype))
    for shape, axis in [((6, 6, 9), 1), ((3, 6, 100), 1), ((40, 6), -1)]:
        x = make_x(rng, shape, axis, dtype)
        xs = (x.astype(np.float64) * lam).astype(dtype)
        w, b = make_params(rng, shape[axis], dtype, "both")
        groups = 2 if op == "group" else None
        y, mean, rstd = forward(
            fn, op, x, w, b, axis=axis, groups=groups, eps=0.0, return_stats=True
        )
        ys, means, rstds = forward(
            fn, op, xs, w, b, axis=axis, groups=groups, eps=0.0, return_stats=True
        )
        assert_close(ys, y, dtype)
        assert_close(means / lam, mean, dtype, "stat")
        assert_close(rstds * lam, rstd, dtype, "stat")
        dy = rng.standard_normal(shape).astype(dtype)
        g = backward(fn, op, dy, x, mean, rstd, w, axis=axis, groups=groups)
        gs = backward(fn, op, dy, xs, means, rstds, w, axis=axis, groups=groups)
        assert_close(gs[0] * lam, g[0], dtype, "grad")
        assert_close(gs[1], g[1], dtype, "grad")
        assert_close(gs[2], g[2], dtype, "grad")


# --------------------------------------------------------------------------- numerics


NUMERIC_LAYOUTS = [((6, 6, 7), 1), ((3, 6, 100), 1), ((60, 6), -1), ((3, 5, 4, 6), -1)]


def _const_mask(op, shape, axis):
    """A boolean mask of one whole normalization group: a channel (batch norm), a
    (sample, channel) (instance norm) or a (sample, group) of 2 channels of 6 (group norm)."""
    mask = np.zeros(shape, bool)
    moved = np.moveaxis(mask, axis, 1)
    if op == "batch":
        moved[:, 2] = True
    elif op == "instance":
        moved[1, 2] = True
    else:
        moved[1, 2:4] = True
    return mask


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("value", [0.0, -2.5, 1e7, 1e10, -1e10])
@pytest.mark.parametrize("op", OPS)
def test_constant_group_gives_exactly_bias(op, value, dtype):
    rng = rng_for("const", op, value, str(dtype))
    for shape, axis in NUMERIC_LAYOUTS:
        x = make_x(rng, shape, axis, dtype)
        mask = _const_mask(op, shape, axis)
        x[mask] = value
        w, b = make_params(rng, shape[axis], dtype, "both")
        groups = 3 if op == "group" else None
        y = forward(fn, op, x, w, b, axis=axis, groups=groups)
        bias = np.broadcast_to(b.reshape(channel_shape(len(shape), axis)), shape)
        assert np.array_equal(y[mask], bias[mask]), (shape, axis)
        y0 = forward(fn, op, x, axis=axis, groups=groups)
        assert np.array_equal(y0[mask], np.zeros(mask.sum(), dtype))
        ey = forward(ref, op, f64(x), f64(w), f64(b), axis=axis, groups=groups)
        assert_close(y, ey, dtype)
        _, mean, rstd = forward(fn, op, x, w, b, axis=axis, groups=groups, return_stats=True)
        dy = rng.standard_normal(shape).astype(dtype)
        grads = backward(fn, op, dy, x, mean, rstd, w, axis=axis, groups=groups)
        for g in grads:
            assert np.all(np.isfinite(g))


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_batch_norm_constant_input_all_channels_and_running_var(dtype):
    x = np.full((5, 3, 70), 1e7, dtype)
    b = np.array([1.5, -2.0, 0.25], dtype)
    rm, rv = np.zeros(3, dtype), np.ones(3, dtype)
    y = fn.batch_norm(x, np.ones(3, dtype), b, rm, rv, momentum=1.0)
    assert np.array_equal(y, np.broadcast_to(b.reshape(1, 3, 1), x.shape))
    assert np.array_equal(rm, np.full(3, 1e7, dtype))
    assert np.array_equal(rv, np.zeros(3, dtype))


@pytest.mark.parametrize("op", OPS)
def test_eps_zero_on_constant_input_matches_reference(op):
    shape, axis = (4, 6, 9), 1
    rng = rng_for("eps0", op)
    x = make_x(rng, shape, axis, F64)
    mask = _const_mask(op, shape, axis)
    x[mask] = 3.0
    groups = 3 if op == "group" else None
    y = forward(fn, op, x, axis=axis, groups=groups, eps=0.0)
    ey = forward(ref, op, x, axis=axis, groups=groups, eps=0.0)
    assert_close(y, ey, F64)
    assert np.all(np.isfinite(y[~mask]))


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("case", NUMERIC_LAYOUTS + [((4, 6, 5000), 1)], ids=case_id)
def test_large_mean_unit_spread_float64(op, case):
    shape, axis = case
    rng = rng_for("mean1e6", op, shape, axis)
    x = 1e6 + rng.standard_normal(shape)
    groups = 3 if op == "group" else None
    y, mean, rstd = forward(fn, op, x, axis=axis, groups=groups, return_stats=True)
    ey, emean, erstd = forward(ref, op, x, axis=axis, groups=groups, return_stats=True)
    np.testing.assert_allclose(y, ey, rtol=0, atol=1e-8)
    np.testing.assert_allclose(mean, emean, rtol=1e-15, atol=0)
    np.testing.assert_allclose(rstd, erstd, rtol=1e-8, atol=0)


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("case", NUMERIC_LAYOUTS + [((4, 6, 5000), 1)], ids=case_id)
def test_large_mean_small_spread_float32(op, case):
    shape, axis = case
    rng = rng_for("mean1e4", op, shape, axis)
    x = (1e4 + 1e-3 * rng.standard_normal(shape)).astype(F32)
    groups = 3 if op == "group" else None
    y, mean, rstd = forward(fn, op, x, axis=axis, groups=groups, eps=1e-12, return_stats=True)
    ey, emean, erstd = forward(
        ref, op, f64(x), axis=axis, groups=groups, eps=1e-12, return_stats=True
    )
    assert np.all(np.isfinite(y))
    assert_close(y, ey, F32)
    assert_close(rstd, erstd, F32, "stat")
    assert_close(mean, emean, F32, "stat")


def _nonfinite_mask(op, shape, axis, where):
    """The elements a non-finite value at `where` may reach: its channel for batch norm,
    its (sample, channel) for instance norm, its (sample, group of 2 channels) for group."""
    mask = np.zeros(shape, bool)
    idx = list(where)
    c = idx[axis]
    sel = [slice(None)] * len(shape)
    sel[axis] = slice(c, c + 1) if op != "group" else slice(c - c % 2, c - c % 2 + 2)
    if op != "batch":
        sel[0] = idx[0]
    mask[tuple(sel)] = True
    return mask


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf], ids=["nan", "inf", "-inf"])
@pytest.mark.parametrize("op", OPS)
def test_nonfinite_stays_in_its_group(op, bad, dtype):
    rng = rng_for("nonfinite", op, str(bad), str(dtype))
    for shape, axis in NUMERIC_LAYOUTS:
        x = make_x(rng, shape, axis, dtype)
        where = tuple(int(rng.integers(0, s)) for s in shape)
        x[where] = bad
        mask = _nonfinite_mask(op, shape, axis, where)
        c = shape[axis]
        w, b = make_params(rng, c, dtype, "both")
        groups = c // 2 if op == "group" else None
        y, mean, rstd = forward(fn, op, x, w, b, axis=axis, groups=groups, return_stats=True)
        assert np.array_equal(np.isnan(y), mask), (shape, axis, where)
        ey, emean, erstd = forward(
            ref, op, f64(x), f64(w), f64(b), axis=axis, groups=groups, return_stats=True
        )
        assert_close(y, ey, dtype)
        ok = np.isfinite(emean)
        assert np.array_equal(np.isfinite(mean), ok) and ok.sum() == ok.size - 1
        assert_close(mean[ok], emean[ok], dtype, "stat")
        assert_close(rstd[ok], erstd[ok], dtype, "stat")
        if op == "batch":
            rm, rv = np.zeros(c, dtype), np.ones(c, dtype)
            erm, erv = rm.astype(np.float64), rv.astype(np.float64)
            fn.batch_norm(x, w, b, rm, rv, axis=axis)
            ref.batch_norm(f64(x), f64(w), f64(b), erm, erv, axis=axis)
            good = np.ones(c, bool)
            good[where[axis]] = False
            assert np.array_equal(np.isfinite(rm), good)
            assert np.array_equal(np.isfinite(rv), good)
            assert_close(rm[good], erm[good], dtype, "stat")
            assert_close(rv[good], erv[good], dtype, "stat")


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("magnitude", [1e30, 3e38])
def test_huge_float32_is_finite(op, magnitude):
    rng = rng_for("huge", op, magnitude)
    for shape, axis in NUMERIC_LAYOUTS:
        x = rng.uniform(-magnitude, magnitude, shape).astype(F32)
        groups = 3 if op == "group" else None
        y, mean, rstd = forward(fn, op, x, axis=axis, groups=groups, return_stats=True)
        assert np.all(np.isfinite(y)) and np.all(np.isfinite(mean))
        ey = forward(ref, op, f64(x), axis=axis, groups=groups)
        assert_close(y, ey, F32)


@pytest.mark.parametrize("op", OPS)
def test_tiny_and_subnormal_float32(op):
    rng = rng_for("tiny", op)
    for shape, axis in NUMERIC_LAYOUTS:
        x = (1e-40 * rng.standard_normal(shape)).astype(F32)
        groups = 3 if op == "group" else None
        for eps in (0.0, 1e-5):
            if eps == 0.0 and op == "instance" and len(shape) == 2:
                continue  # one value per (sample, channel): 0 / 0 by definition
            y = forward(fn, op, x, axis=axis, groups=groups, eps=eps)
            assert np.all(np.isfinite(y))
            assert_close(y, forward(ref, op, f64(x), axis=axis, groups=groups, eps=eps), F32)


# --------------------------------------------------------------------------- sizes and edges


def guarded(exc, func, *args, watch=(), match=None, **kwargs):
    """Assert `func` raises `exc` and leaves every array of `watch` unchanged."""
    before = [np.array(a, copy=True) for a in watch]
    with pytest.raises(exc, match=match):
        func(*args, **kwargs)
    for a, a0 in zip(watch, before, strict=True):
        assert np.array_equal(a, a0, equal_nan=True)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize(
    "shape", [(0, 3, 5), (0, 3), (0, 4, 4, 3), (4, 3, 0), (2, 3, 0, 5)], ids=str
)
def test_batch_norm_empty_reduction(shape, dtype):
    axis = 1 if len(shape) != 4 else -1
    c = shape[axis]
    x = np.zeros(shape, dtype)
    rm = np.arange(c, dtype=dtype)
    rv = np.arange(1, c + 1, dtype=dtype)
    rm0, rv0 = rm.copy(), rv.copy()
    y, mean, rstd = fn.batch_norm(
        x, np.ones(c, dtype), np.zeros(c, dtype), rm, rv, axis=axis, return_stats=True
    )
    assert y.shape == shape and y.dtype == dtype
    assert mean.shape == rstd.shape == (c,)
    assert np.all(np.isnan(mean)) and np.all(np.isnan(rstd))
    assert np.array_equal(rm, rm0) and np.array_equal(rv, rv0)
    ey, emean, erstd = ref.batch_norm(f64(x), axis=axis, return_stats=True)
    assert_close(mean, emean, dtype)
    ye = fn.batch_norm(x, None, None, rm, rv, training=False, axis=axis)
    assert ye.shape == shape
    out = np.empty(shape, dtype)
    assert fn.batch_norm(x, out=out, axis=axis) is out
    dx, dw, db = fn.batch_norm_backward(
        x, x, np.zeros(c, dtype), np.ones(c, dtype), np.ones(c, dtype), axis=axis
    )
    assert dx.shape == shape and dx.dtype == dtype
    assert np.array_equal(dw, np.zeros(c, dtype)) and np.array_equal(db, np.zeros(c, dtype))


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("op", ["group", "instance"])
@pytest.mark.parametrize(
    ("shape", "axis"),
    [((0, 4, 5), 1), ((0, 5, 4), -1), ((3, 4, 0), 1), ((2, 0, 3, 4), -1)],
    ids=str,
)
def test_group_instance_empty(op, shape, axis, dtype):
    c = shape[axis]
    x = np.zeros(shape, dtype)
    groups = 2 if op == "group" else None
    y, mean, rstd = forward(
        fn,
        op,
        x,
        np.ones(c, dtype),
        np.zeros(c, dtype),
        axis=axis,
        groups=groups,
        return_stats=True,
    )
    assert y.shape == shape and y.dtype == dtype
    sshape = stats_shape(op, shape, axis, groups)
    assert mean.shape == rstd.shape == sshape
    ey, emean, erstd = forward(ref, op, f64(x), axis=axis, groups=groups, return_stats=True)
    assert_close(mean, emean, dtype)
    assert_close(rstd, erstd, dtype)
    dx, dw, db = backward(fn, op, x, x, mean, rstd, np.ones(c, dtype), axis=axis, groups=groups)
    assert dx.shape == shape
    assert np.array_equal(dw, np.zeros(c, dtype)) and np.array_equal(db, np.zeros(c, dtype))


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize(("shape", "axis"), [((4, 0), 1), ((4, 0, 5), 1), ((2, 3, 0), -1)], ids=str)
def test_zero_channels(op, shape, axis, dtype):
    x = np.zeros(shape, dtype)
    groups = 1 if op == "group" else None
    kw = {}
    if op == "batch":
        kw = {"running_mean": np.zeros(0, dtype), "running_var": np.zeros(0, dtype)}
    y, mean, rstd = forward(
        fn,
        op,
        x,
        np.ones(0, dtype),
        np.ones(0, dtype),
        axis=axis,
        groups=groups,
        return_stats=True,
        **kw,
    )
    assert y.shape == shape and y.dtype == dtype
    assert mean.shape == stats_shape(op, shape, axis, groups)
    dx, dw, db = backward(fn, op, x, x, mean, rstd, np.ones(0, dtype), axis=axis, groups=groups)
    assert dx.shape == shape and dw.shape == db.shape == (0,)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize(
    ("shape", "axis"),
    [((1, 3), 1), ((1, 3, 1), 1), ((1, 1, 1, 3), -1), ((1, 4, 1, 1), 1), ((3, 1), 0)],
    ids=str,
)
def test_batch_norm_one_value_per_channel_training(shape, axis, dtype):
    c = shape[axis]
    x = np.arange(np.prod(shape), dtype=dtype).reshape(shape)
    rm, rv = np.full(c, 0.5, dtype), np.full(c, 2.0, dtype)
    out = np.full(shape, -7.0, dtype)
    guarded(
        ValueError, fn.batch_norm, x, None, None, rm, rv, axis=axis, out=out, watch=(rm, rv, out, x)
    )
    guarded(ValueError, fn.batch_norm, x, axis=axis, out=out, return_stats=True, watch=(out,))
    y = fn.batch_norm(x, None, None, rm, rv, training=False, axis=axis, out=out)
    assert y is out
    assert_close(
        y, ref.batch_norm(f64(x), None, None, f64(rm), f64(rv), training=False, axis=axis), dtype
    )


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("op", ["group", "instance"])
def test_group_instance_single_value_is_bias(op, dtype):
    x = np.array([[1.0, 2.0, 3.0, 4.0]], dtype).reshape(1, 4, 1)
    b = np.array([0.5, -1.0, 2.0, 3.0], dtype)
    y = forward(fn, op, x, np.ones(4, dtype) * 3, b, groups=4 if op == "group" else None)
    assert np.array_equal(y.ravel(), b)


# --------------------------------------------------------------------------- argument errors


def _call(op, x, w=None, b=None, *, rm=None, rv=None, groups=2, **kw):
    if op == "batch":
        return fn.batch_norm(x, w, b, rm, rv, **kw)
    if op == "group":
        return fn.group_norm(x, groups, w, b, **kw)
    return fn.instance_norm(x, w, b, **kw)


def _bwd_call(op, dy, x, mean, rstd, w=None, *, groups=2, **kw):
    if op == "batch":
        return fn.batch_norm_backward(dy, x, mean, rstd, w, **kw)
    if op == "group":
        return fn.group_norm_backward(dy, x, mean, rstd, groups, w, **kw)
    return fn.instance_norm_backward(dy, x, mean, rstd, w, **kw)


@pytest.fixture
def guards():
    """Running statistics that no failing call may modify."""
    rm = np.array([0.5, -0.5, 1.5, 2.5])
    rv = np.array([1.0, 2.0, 3.0, 4.0])
    return rm, rv


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("x", [np.float64(3.0), np.ones(4), np.ones(0)], ids=["0d", "1d", "1d0"])
def test_too_few_dimensions(op, x):
    out = np.full(x.shape, -7.0)
    rm, rv = np.zeros(4), np.ones(4)
    watch = (out, rm, rv)
    if op == "batch":
        guarded(ValueError, fn.batch_norm, x, None, None, rm, rv, out=out, watch=watch)
        guarded(
            ValueError, fn.batch_norm, x, None, None, rm, rv, training=False, out=out, watch=watch
        )
    else:
        guarded(ValueError, _call, op, x, out=out, watch=watch, groups=1)
    guarded(ValueError, _bwd_call, op, x, x, np.zeros(4), np.ones(4), groups=1)


@pytest.mark.parametrize("op", ["group", "instance"])
@pytest.mark.parametrize("axis", [0, -3])
def test_channel_axis_zero_rejected(op, axis):
    x = np.ones((4, 4, 5))
    out = np.full(x.shape, -7.0)
    guarded(ValueError, _call, op, x, axis=axis, out=out, watch=(out,), groups=1)
    guarded(ValueError, _bwd_call, op, x, x, np.zeros((4, 4)), np.ones((4, 4)), axis=axis, groups=4)


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("axis", [3, -4, 100])
def test_bad_axis(op, axis, guards):
    rm, rv = guards
    x = np.ones((3, 4, 5))
    out = np.full(x.shape, -7.0)
    guarded(AxisError, _call, op, x, rm=rm, rv=rv, axis=axis, out=out, watch=(rm, rv, out))
    guarded(AxisError, _bwd_call, op, x, x, np.zeros(4), np.ones(4), axis=axis)


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("axis", [1.0, "1", None])
def test_non_integer_axis(op, axis, guards):
    rm, rv = guards
    x = np.ones((3, 4, 5))
    out = np.full(x.shape, -7.0)
    guarded(TypeError, _call, op, x, rm=rm, rv=rv, axis=axis, out=out, watch=(rm, rv, out))


@pytest.mark.parametrize("groups", [3, 0, -2, 8])
def test_group_count_value_errors(groups):
    x = np.ones((2, 4, 5))
    out = np.full(x.shape, -7.0)
    guarded(ValueError, fn.group_norm, x, groups, out=out, watch=(out,))
    guarded(ValueError, fn.group_norm_backward, x, x, np.zeros((2, 1)), np.ones((2, 1)), groups)


@pytest.mark.parametrize("groups", [2.0, "2", True, None, np.float64(2.0)], ids=repr)
def test_group_count_type_errors(groups):
    x = np.ones((2, 4, 5))
    out = np.full(x.shape, -7.0)
    guarded(TypeError, fn.group_norm, x, groups, out=out, watch=(out,))
    guarded(TypeError, fn.group_norm_backward, x, x, np.zeros((2, 2)), np.ones((2, 2)), groups)


def test_group_count_numpy_integer_accepted():
    x = make_x(rng_for("npint"), (2, 4, 5), 1, F64)
    assert np.array_equal(fn.group_norm(x, np.int64(2)), fn.group_norm(x, 2))


BAD_LENGTHS = [np.ones(3), np.ones(5), np.ones(0), np.ones((4, 1)), np.ones((1, 4)), 1.0]


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("which", ["weight", "bias"])
@pytest.mark.parametrize("param", BAD_LENGTHS, ids=lambda p: str(np.shape(p)))
def test_parameter_wrong_shape(op, which, param, guards):
    rm, rv = guards
    x = np.ones((3, 4, 5))
    out = np.full(x.shape, -7.0)
    w, b = (param, None) if which == "weight" else (None, param)
    guarded(ValueError, _call, op, x, w, b, rm=rm, rv=rv, out=out, watch=(rm, rv, out))
    if which == "weight":
        mean = np.zeros(4) if op == "batch" else np.zeros((3, 4 if op == "instance" else 2))
        guarded(ValueError, _bwd_call, op, x, x, mean, mean + 1, param)


@pytest.mark.parametrize("which", ["running_mean", "running_var"])
@pytest.mark.parametrize(
    "bad", [np.ones(3), np.ones(5), np.ones(0), np.ones((4, 1))], ids=lambda p: str(p.shape)
)
@pytest.mark.parametrize("training", [True, False])
def test_running_stats_wrong_shape(which, bad, training):
    x = np.ones((3, 4, 5))
    good = np.full(4, 0.25)
    out = np.full(x.shape, -7.0)
    rm, rv = (bad, good) if which == "running_mean" else (good, bad)
    guarded(
        ValueError,
        fn.batch_norm,
        x,
        None,
        None,
        rm,
        rv,
        training=training,
        out=out,
        watch=(rm, rv, out),
    )


@pytest.mark.parametrize("which", ["running_mean", "running_var"])
def test_running_stats_read_only_or_noncontiguous(which):
    rng = rng_for("ro")
    x = make_x(rng, (3, 4, 5), 1, F64)
    out = np.full(x.shape, -7.0)
    ro = np.full(4, 0.5)
    ro.flags.writeable = False
    strided = np.full(8, 0.5)[::2]
    reversed_ = np.full(4, 0.5)[::-1]
    for bad in (ro, strided, reversed_):
        good = np.full(4, 0.25)
        rm, rv = (bad, good) if which == "running_mean" else (good, bad)
        for training in (True, False):
            guarded(
                ValueError,
                fn.batch_norm,
                x,
                None,
                None,
                rm,
                rv,
                training=training,
                out=out,
                watch=(rm, rv, out),
            )


@pytest.mark.parametrize("kind", ["list", "tuple", "float16", "int64", "object"])
def test_running_stats_type_errors(kind):
    x = np.ones((3, 4, 5)) + np.arange(5)
    out = np.full(x.shape, -7.0)
    good = np.full(4, 0.25)
    bad = {
        "list": [0.0] * 4,
        "tuple": (0.0,) * 4,
        "float16": np.zeros(4, np.float16),
        "int64": np.zeros(4, np.int64),
        "object": np.zeros(4, object),
    }[kind]
    guarded(TypeError, fn.batch_norm, x, None, None, bad, good, out=out, watch=(good, out))
    guarded(TypeError, fn.batch_norm, x, None, None, good, bad, out=out, watch=(good, out))


@pytest.mark.parametrize("missing", ["running_mean", "running_var", "both"])
def test_eval_mode_needs_running_stats(missing):
    x = np.ones((3, 4, 5)) + np.arange(5)
    out = np.full(x.shape, -7.0)
    rm, rv = np.zeros(4), np.ones(4)
    args = {
        "running_mean": (None, rv),
        "running_var": (rm, None),
        "both": (None, None),
    }[missing]
    guarded(
        ValueError,
        fn.batch_norm,
        x,
        None,
        None,
        *args,
        training=False,
        out=out,
        watch=(rm, rv, out),
    )


@pytest.mark.parametrize("momentum", [-0.1, 1.1, -1e-12, np.nan, np.inf])
def test_momentum_out_of_range(momentum, guards):
    rm, rv = guards
    x = np.ones((3, 4, 5)) + np.arange(5)
    out = np.full(x.shape, -7.0)
    guarded(
        ValueError,
        fn.batch_norm,
        x,
        None,
        None,
        rm,
        rv,
        momentum=momentum,
        out=out,
        watch=(rm, rv, out),
    )


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("eps", [-1e-5, -np.inf, np.nan, np.inf])
def test_bad_eps(op, eps, guards):
    rm, rv = guards
    x = np.ones((3, 4, 5)) + np.arange(5)
    out = np.full(x.shape, -7.0)
    guarded(ValueError, _call, op, x, rm=rm, rv=rv, eps=eps, out=out, watch=(rm, rv, out))


BAD_DTYPES = [
    np.int32,
    np.int64,
    np.uint8,
    np.bool_,
    np.complex64,
    np.complex128,
    object,
]
if np.dtype(np.longdouble).itemsize > 8:
    BAD_DTYPES.append(np.longdouble)


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("dtype", BAD_DTYPES, ids=lambda d: np.dtype(d).name)
def test_unsupported_dtypes(op, dtype, guards):
    rm, rv = guards
    x = np.ones((3, 4, 5)).astype(dtype)
    out = np.full((3, 4, 5), -7.0)
    guarded(TypeError, _call, op, x, rm=rm, rv=rv, out=out, watch=(rm, rv, out))
    if op == "batch":
        guarded(TypeError, fn.batch_norm, x, None, None, rm, rv, training=False, watch=(rm, rv))
    mean = np.zeros(4) if op == "batch" else np.zeros((3, 4 if op == "instance" else 2))
    guarded(TypeError, _bwd_call, op, np.ones((3, 4, 5)), x, mean, mean + 1)


@pytest.mark.parametrize("op", OPS)
def test_mixed_parameter_dtype_is_cast_to_input(op):
    rng = rng_for("mixed-param", op)
    x = make_x(rng, (3, 4, 7), 1, F32)
    w = rng.uniform(0.5, 2.0, 4)
    b = rng.standard_normal(4)
    y = _call(op, x, w, b)
    assert y.dtype == F32
    assert np.array_equal(y, _call(op, x, w.astype(F32), b.astype(F32)))
    yi = _call(op, x, [1, 2, 3, 4], np.arange(4))
    assert np.array_equal(yi, _call(op, x, np.arange(1, 5, dtype=F32), np.arange(4, dtype=F32)))


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("bad", ["shape", "dtype", "readonly", "list"])
def test_bad_out(op, bad, guards):
    rm, rv = guards
    rng = rng_for("bad-out", op, bad)
    x = make_x(rng, (3, 4, 5), 1, F64)
    out = {
        "shape": np.full((3, 4, 6), -7.0),
        "dtype": np.full((3, 4, 5), -7.0, F32),
        "readonly": np.full((3, 4, 5), -7.0),
        "list": [[[0.0] * 5] * 4] * 3,
    }[bad]
    if bad == "readonly":
        out.flags.writeable = False
    exc = TypeError if bad in ("dtype", "list") else ValueError
    watch = (rm, rv) if bad == "list" else (rm, rv, out)
    guarded(exc, _call, op, x, rm=rm, rv=rv, out=out, watch=watch)


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("which", ["dy", "mean", "rstd"])
def test_backward_wrong_shapes(op, which):
    x = np.ones((3, 4, 5)) + np.arange(5)
    sshape = (4,) if op == "batch" else (3, 4 if op == "instance" else 2)
    args = {"dy": np.ones((3, 4, 5)), "mean": np.zeros(sshape), "rstd": np.ones(sshape)}
    for bad_shape in [(3, 4, 6), (4,), (3, 4), (3, 2), (12,), (1,) + sshape, ()]:
        if bad_shape == (args[which].shape):
            continue
        kw = dict(args)
        kw[which] = np.ones(bad_shape)
        guarded(ValueError, _bwd_call, op, kw["dy"], x, kw["mean"], kw["rstd"])


@pytest.mark.parametrize("op", OPS)
def test_backward_bad_gradient_dtype(op):
    x = np.ones((3, 4, 5)) + np.arange(5)
    sshape = (4,) if op == "batch" else (3, 4 if op == "instance" else 2)
    for dtype in (np.complex128, np.bool_, object):
        guarded(
            TypeError, _bwd_call, op, np.ones(x.shape, dtype), x, np.zeros(sshape), np.ones(sshape)
        )


# --------------------------------------------------------------------------- random shapes


DIM = st.sampled_from([0, 1, 2, 3, 5, 7, 17, 64, 65])


@st.composite
def channel_cases(draw, op):
    ndim = draw(st.integers(2, 4))
    shape = list(draw(st.lists(DIM, min_size=ndim, max_size=ndim)))
    while np.prod(shape) > 20000:
        shape[int(np.argmax(shape))] //= 4
    lo = -ndim if op == "batch" else 1
    axis = draw(st.integers(lo, ndim - 1))
    if op != "batch" and axis % ndim == 0:
        axis = 1
    c = shape[axis]
    groups = None
    if op == "group":
        groups = draw(st.sampled_from(group_choices("group", c) if c else [1]))
    dtype = draw(st.sampled_from(DTYPES))
    affine = draw(st.sampled_from(AFFINE))
    view = draw(st.sampled_from(["contiguous", "reversed", "transposed"]))
    seed = draw(st.integers(0, 2**32 - 1))
    return tuple(shape), axis, groups, dtype, affine, view, seed


def _hypothesis_check(op, case):
    shape, axis, groups, dtype, affine, view, seed = case
    rng = np.random.default_rng(seed)
    x = make_x(rng, shape, axis, dtype)
    if view == "reversed":
        x = x[::-1, ..., ::-1]
    elif view == "transposed":
        x = np.ascontiguousarray(np.swapaxes(x, 0, -1)).swapaxes(0, -1)
    c = shape[axis]
    w, b = make_params(rng, c, dtype, affine)
    n_per_channel = int(np.prod([s for i, s in enumerate(shape) if i != axis % len(shape)]))
    if op == "batch" and n_per_channel == 1:
        with pytest.raises(ValueError):
            fn.batch_norm(x, w, b, axis=axis)
        return
    y, mean, rstd = forward(fn, op, x, w, b, axis=axis, groups=groups, return_stats=True)
    ey, emean, erstd = forward(
        ref, op, f64(x), f64(w), f64(b), axis=axis, groups=groups, return_stats=True
    )
    assert y.shape == shape and y.dtype == dtype
    assert_close(y, ey, dtype)
    assert_close(mean, emean, dtype, "stat")
    assert_close(rstd, erstd, dtype, "stat")
    dy = rng.standard_normal(shape).astype(dtype)
    got = backward(fn, op, dy, x, mean, rstd, w, axis=axis, groups=groups)
    exp = backward(ref, op, f64(dy), f64(x), f64(mean), f64(rstd), f64(w), axis=axis, groups=groups)
    assert got[0].shape == shape
    assert_close(got[0], exp[0], dtype, "grad")
    assert_close(got[2], exp[2], dtype, "grad")
    if w is not None:
        assert_close(got[1], exp[1], dtype, "grad")


@HYPOTHESIS
@given(case=channel_cases("batch"))
def test_hypothesis_batch_norm(case):
    _hypothesis_check("batch", case)


@HYPOTHESIS
@given(case=channel_cases("group"))
def test_hypothesis_group_norm(case):
    _hypothesis_check("group", case)


@HYPOTHESIS
@given(case=channel_cases("instance"))
def test_hypothesis_instance_norm(case):
    _hypothesis_check("instance", case)


@HYPOTHESIS
@given(case=channel_cases("batch"), momentum=st.sampled_from([0.0, 0.1, 0.5, 1.0]))
def test_hypothesis_running_stats(case, momentum):
    shape, axis, _, dtype, _, _, seed = case
    rng = np.random.default_rng(seed)
    x = make_x(rng, shape, axis, dtype)
    c = shape[axis]
    rm = rng.standard_normal(c).astype(dtype)
    rv = rng.uniform(0.5, 2.0, c).astype(dtype)
    rm0, rv0 = rm.copy(), rv.copy()
    n = int(np.prod([s for i, s in enumerate(shape) if i != axis % len(shape)]))
    if n == 1:
        guarded(
            ValueError,
            fn.batch_norm,
            x,
            None,
            None,
            rm,
            rv,
            axis=axis,
            momentum=momentum,
            watch=(rm, rv),
        )
        return
    fn.batch_norm(x, None, None, rm, rv, axis=axis, momentum=momentum)
    if n == 0:
        assert np.array_equal(rm, rm0) and np.array_equal(rv, rv0)
        return
    erm, erv = rm0.copy(), rv0.copy()
    ref.batch_norm(f64(x), None, None, erm, erv, axis=axis, momentum=momentum)
    assert_close(rm, erm, dtype, "stat")
    assert_close(rv, erv, dtype, "stat")


# ---- channels-last float paths: shifts from the first rows, float sums and their fallbacks


def _nhwc_patterns(rng, shape):
    """float32 channels-last inputs that defeat the float fast paths: the first rows of the
    batch far from the rest (the statistics' shift comes from a tile's first rows), a steep
    trend on a large offset, channels of tiny spread, one constant channel."""
    n, h, w, c = shape
    base = rng.standard_normal(shape)
    outliers = base.copy()
    outliers.reshape(-1, c)[:16] += 1e6
    trend = 1e4 + np.linspace(0.0, 50.0, n * h * w).reshape(n, h, w, 1) + 0.1 * base
    tiny = base * np.where(np.arange(c) % 2 == 0, 1e-3, 1.0)
    tiny[..., 0] = 7.25
    return {"outliers": outliers, "trend": trend, "tiny": tiny}


@pytest.mark.parametrize("shape", [(4, 24, 32, 64), (2, 40, 40, 3), (2, 9, 14, 256)], ids=str)
def test_channels_last_float_paths_match_reference(shape):
    rng = rng_for("nhwc-float", shape)
    c = shape[-1]
    w = rng.uniform(0.5, 2.0, c).astype(F32)
    b = rng.standard_normal(c).astype(F32)
    for name, x in _nhwc_patterns(rng, shape).items():
        x = x.astype(F32)
        y, mean, rstd = fn.batch_norm(x, w, b, axis=-1, return_stats=True)
        ey, emean, erstd = ref.batch_norm(f64(x), f64(w), f64(b), axis=-1, return_stats=True)
        assert_close(y, ey, F32, "fwd", name)
        assert_close(mean, emean, F32, "stat", name)
        assert_close(rstd, erstd, F32, "stat", name)
        dy = rng.standard_normal(shape)
        dy[..., 1] = 0.0  # a channel with no gradient: its float sums fall back to double
        dy = dy.astype(F32)
        dx, dw, db = fn.batch_norm_backward(dy, x, mean, rstd, w, axis=-1)
        edx, edw, edb = ref.batch_norm_backward(
            f64(dy), f64(x), f64(mean), f64(rstd), f64(w), axis=-1
        )
        assert_close(dx, edx, F32, "grad", name)
        assert_close(dw, edw, F32, "grad", name)
        assert_close(db, edb, F32, "grad", name)
        g = 1 if c % 4 else 4
        y, mean, rstd = fn.group_norm(x, g, w, b, axis=-1, return_stats=True)
        ey, emean, erstd = ref.group_norm(f64(x), g, f64(w), f64(b), axis=-1, return_stats=True)
        assert_close(y, ey, F32, "fwd", name)
        assert_close(mean, emean, F32, "stat", name)
        assert_close(rstd, erstd, F32, "stat", name)


def _nchw_patterns(rng, shape):
    """Channels-first inputs that defeat the statistics' shifts, which come from the head
    of a tile's first span of each channel: the first sample far from the rest (a retry
    for batch norm where a tile holds more than 17 samples), the head
    of every span far from its tail, a steep trend on a large offset, a constant channel."""
    n, c = shape[:2]
    base = rng.standard_normal(shape)
    first = base.copy()
    first[0] += 1e6
    heads = base.copy()
    heads.reshape(n, c, -1)[:, :, :64] += 1e4
    trend = 1e4 + np.linspace(0.0, 50.0, base.size).reshape(shape) + 0.1 * base
    trend[:, 1] = 7.25
    return {"first": first, "heads": heads, "trend": trend}


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize(
    "shape", [(6, 8, 14, 14), (100, 3, 70), (2, 3, 300), (9, 2, 64), (24, 40, 9, 9)], ids=str
)
def test_channels_first_shifts_match_reference(shape, dtype):
    rng = rng_for("nchw-shift", shape)
    for name, x in _nchw_patterns(rng, shape).items():
        x = x.astype(dtype)
        for op in OPS:
            groups = 1 if op == "group" else None
            y, mean, rstd = forward(fn, op, x, axis=1, groups=groups, return_stats=True)
            ey, emean, erstd = forward(ref, op, f64(x), axis=1, groups=groups, return_stats=True)
            msg = f"{op} {name}"
            assert_close(mean, emean, dtype, "stat", msg)
            if dtype == F64:  # offsets of 1e6: float64 itself is good to ~1e-10 there
                np.testing.assert_allclose(y, ey, rtol=0, atol=1e-8, err_msg=msg)
                np.testing.assert_allclose(rstd, erstd, rtol=1e-8, atol=0, err_msg=msg)
            else:
                assert_close(y, ey, dtype, "fwd", msg)
                assert_close(rstd, erstd, dtype, "stat", msg)


@pytest.mark.parametrize("axis", [1, -1])
def test_float_forward_falls_back_to_double_out_of_range(axis):
    """Variance below the float path's range (subnormal spread), huge values in eval mode:
    the forward computes those in double and still matches the reference."""
    rng = rng_for("float-range", axis)
    shape = (3, 5, 8, 70) if axis == -1 else (3, 70, 8, 8)
    c = shape[axis]
    x = (1e-33 * rng.standard_normal(shape)).astype(F32)
    y, mean, rstd = fn.batch_norm(x, axis=axis, eps=0.0, return_stats=True)
    ey, emean, erstd = ref.batch_norm(f64(x), axis=axis, eps=0.0, return_stats=True)
    assert_close(y, ey, F32, "fwd")
    assert_close(rstd, erstd, F32, "stat")
    big = (3e37 * rng.standard_normal(shape)).astype(F32)
    rm = np.full(c, -1e37, F32)
    rv = np.full(c, 4.0, F32)
    b = np.full(c, 1e36, F32)
    y = fn.batch_norm(big, None, b, rm, rv, training=False, axis=axis)
    ey = ref.batch_norm(f64(big), None, f64(b), f64(rm), f64(rv), training=False, axis=axis)
    assert_close(y, ey, F32, "fwd")


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize(
    "shape,axis",
    [((4, 6, 10, 10), 1), ((4, 10, 10, 6), -1), ((8, 16, 2, 2), 1), ((4, 5, 5, 64), -1)],
    ids=str,
)
def test_backward_float32_overflowing_terms(op, shape, axis):
    """dx is computed in float where that is safe and in double where a float intermediate
    would overflow: dy near float's maximum around a large mean, which dx removes (a float
    path without the fallback gives NaN)."""
    rng = rng_for("chan-bwd-overflow", op, shape, axis)
    c = shape[axis]
    x = rng.standard_normal(shape).astype(F32)
    dy = (1e37 * (3.0 + 0.1 * rng.standard_normal(shape))).astype(F32)
    w = np.full(c, 16.0, F32)
    groups = 2 if op == "group" else None
    _, mean, rstd = forward(fn, op, x, w, axis=axis, groups=groups, return_stats=True)
    dx = backward(fn, op, dy, x, mean, rstd, w, axis=axis, groups=groups)[0]
    edx = backward(ref, op, f64(dy), f64(x), f64(mean), f64(rstd), f64(w), axis=axis,
                   groups=groups)[0]
    assert np.all(np.isfinite(dx))
    s = float(np.abs(edx).max())
    np.testing.assert_allclose(dx / s, edx / s, rtol=0, atol=2e-5)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape,axis", [((3, 9, 11, 8), -1), ((4, 8, 5, 7), 1), ((2, 70, 6), -1)])
def test_group_norm_batch_equals_samples_bitwise(shape, axis, dtype):
    """Group norm over a batch gives, bit for bit, what it gives for each sample alone: a
    batch of small samples is normalized a sample at a time (statistics, then the output
    while the sample is in cache), a single sample by passes over the whole input."""
    rng = rng_for("gn-samples", shape, axis)
    x = (3.0 + rng.standard_normal(shape)).astype(dtype)
    c = shape[axis]
    w = rng.uniform(0.5, 2.0, c).astype(dtype)
    b = rng.standard_normal(c).astype(dtype)
    y, mean, rstd = fn.group_norm(x, 2, w, b, axis=axis, return_stats=True)
    for i in range(shape[0]):
        yi, mi, ri = fn.group_norm(x[i : i + 1], 2, w, b, axis=axis, return_stats=True)
        assert np.array_equal(y[i : i + 1], yi)
        assert np.array_equal(mean[i], mi[0]) and np.array_equal(rstd[i], ri[0])


# --------------------------------------------------------------------------- short spans, wide rows


def _each_simd_level():
    from fastnorm import _kernels, _runtime

    levels = _runtime.SIMD_LEVELS
    return levels[: levels.index(_kernels.isa_supported()) + 1]


SHORT_SPAN_CASES = [
    # channels-first maps under 64 pixels (late CNN stages): group norm's backward and
    # both passes of instance norm take the per-group path, span tails of 1 to 15
    ((4, 16, 7, 7), 1, 4),
    ((3, 12, 5, 3), 1, 3),
    ((2, 64, 1, 17), 1, 8),
    ((2, 32, 2, 2), 1, 32),
    ((5, 8, 3, 11), 1, 1),
    # channels-last rows over 1024 channels (one vector loop per row)
    ((2, 3, 3, 1280), -1, 32),
    ((1, 2, 5, 2056), -1, 8),
]


@pytest.mark.parametrize("case", SHORT_SPAN_CASES, ids=lambda c: f"{c[0]}-axis{c[1]}-G{c[2]}")
def test_short_spans_and_wide_rows_every_simd_level(case):
    """Forward and backward of group, instance and batch norm (training and eval) against
    the float64 reference at every SIMD level the CPU has, on the shapes whose paths use
    masked tails and the row-at-once channels-last normalization."""
    from fastnorm import _runtime

    shape, axis, groups = case
    rng = rng_for("short", shape, axis, groups)
    c = shape[axis]
    x = make_x(rng, shape, axis, F32)
    w, b = make_params(rng, c, F32, "both")
    dy = rng.standard_normal(shape).astype(F32)
    x64, w64, b64, dy64 = f64(x), f64(w), f64(b), f64(dy)
    rm = rng.uniform(-1.0, 1.0, c).astype(F32)
    rv = rng.uniform(0.5, 2.0, c).astype(F32)
    original = _runtime._simd_level()
    try:
        for level in _each_simd_level():
            _runtime._simd_level(level)
            msg = f"simd={level}"
            for op, g in (("group", groups), ("instance", None), ("batch", None)):
                y, mean, rstd = forward(fn, op, x, w, b, axis=axis, groups=g, return_stats=True)
                ey = forward(ref, op, x64, w64, b64, axis=axis, groups=g)
                assert_close(y, ey, F32, err_msg=f"{op} forward {msg}")
                got = backward(fn, op, dy, x, mean, rstd, w, axis=axis, groups=g)
                exp = backward(ref, op, dy64, x64, f64(mean), f64(rstd), w64, axis=axis,
                               groups=g)
                for a, e, what in zip(got, exp, ("dx", "dweight", "dbias"), strict=True):
                    assert_close(a, e, F32, "grad", f"{op} {what} {msg}")
            y = fn.batch_norm(x, w, b, rm, rv, training=False, axis=axis)
            ey = ref.batch_norm(x64, w64, b64, f64(rm), f64(rv), training=False, axis=axis)
            assert_close(y, ey, F32, err_msg=f"batch_norm eval {msg}")
    finally:
        _runtime._simd_level(original)


# Each side of batch norm's channel-by-channel training forward (csrc/batch_norm.inc,
# fn_bn_fuse_ok: channels-first spans of 64 to 1024 bytes, a channel of at most 128 KB)
# and of the two-pass one; float64 spans are twice the bytes of float32 ones.
FUSE_EDGES = [
    (8, 5, 14, 14),  # spans of 196: channel by channel (float32), two-pass (float64)
    (3, 4, 16, 16),  # spans of 256: 1024 bytes in float32, the last fused
    (3, 4, 16, 17),  # 272: two-pass
    (7, 3, 8, 8),  # 64, the shortest fused span
    (7, 3, 9, 7),  # 63: two-pass
    (511, 2, 8, 8),  # 511 x 64 floats: 127.75 KB per channel, fused in float32
    (513, 2, 8, 8),  # 128.25 KB: two-pass
]


@pytest.mark.parametrize("shape", FUSE_EDGES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("center_only", [False, True])
def test_batch_norm_training_forward_each_side_of_the_fused_path(shape, dtype, center_only):
    rng = rng_for("fuse", shape, dtype.name, center_only)
    x = (rng.standard_normal(shape) * 3.0 + 7.0).astype(dtype)
    C = shape[1]
    w = None if center_only else rng.uniform(0.5, 1.5, C).astype(dtype)
    b = rng.standard_normal(C).astype(dtype)
    rm, rv = np.zeros(C, dtype), np.ones(C, dtype)
    rm_r, rv_r = rm.copy(), rv.copy()
    kw = {"center_only": True} if center_only else {}
    y, mean, rstd = fn.batch_norm(x, w, b, rm, None if center_only else rv, return_stats=True,
                                  **kw)
    y_r, mean_r, rstd_r = ref.batch_norm(x.astype(np.float64), w, b, rm_r,
                                         None if center_only else rv_r, return_stats=True, **kw)
    assert_close(y, y_r, dtype)
    assert_close(mean, mean_r, dtype, "stat")
    assert_close(rstd, rstd_r, dtype, "stat")
    assert_close(rm, rm_r, dtype, "stat")
    assert_close(rv, rv_r, dtype, "stat")
    try:
        fn.set_num_threads(2)
        y2 = fn.batch_norm(x, w, b, **kw)
        fn.set_num_threads(1)
        y1 = fn.batch_norm(x, w, b, **kw)
    finally:
        fn.set_num_threads(0)
    np.testing.assert_array_equal(y1, y2)
    np.testing.assert_array_equal(y1, y)
