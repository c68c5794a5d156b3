"""Tests of the NumPy reference: finite-difference gradients, identities and edge cases."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from gradcheck import check_grad, numerical_grad
from hypothesis import given, settings
from hypothesis import strategies as st

# The reference of the fastnorm under test (installed or the source tree), found without
# importing the package (which needs the compiled extension).
REFERENCE_PATH = Path(importlib.util.find_spec("fastnorm").origin).parent / "reference.py"


def _load_from_path(name="fastnorm_reference"):
    spec = importlib.util.spec_from_file_location(name, REFERENCE_PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


try:
    from fastnorm import reference as ref
except ImportError:
    ref = _load_from_path()


def rng_for(*key):
    return np.random.default_rng(zlib.crc32(repr(key).encode()))


def normal(rng, shape, loc=0.0, scale=1.0):
    return loc + scale * rng.standard_normal(shape)


def positive(rng, shape):
    return rng.uniform(0.5, 2.0, shape)


# --------------------------------------------------------------------------- module


def test_loads_standalone_with_numpy_only():
    code = (
        "import importlib.util, sys\n"
        f"spec = importlib.util.spec_from_file_location('oracle', {str(REFERENCE_PATH)!r})\n"
        "m = importlib.util.module_from_spec(spec)\n"
        "spec.loader.exec_module(m)\n"
        "assert not any(k == 'fastnorm' or k.startswith('fastnorm.') for k in sys.modules)\n"
        "print(len(m.__all__))\n"
    )
    res = subprocess.run(
        [sys.executable, "-I", "-c", code], capture_output=True, text=True, check=False
    )
    assert res.returncode == 0, res.stderr
    assert int(res.stdout) == 29


def test_public_names():
    expected = {
        f"{op}{suffix}"
        for op in (
            "layer_norm",
            "rms_norm",
            "add_layer_norm",
            "add_rms_norm",
            "batch_norm",
            "group_norm",
            "instance_norm",
            "l2_normalize",
            "weight_norm",
            "cosine_norm",
            "iter_norm",
        )
        for suffix in ("", "_backward")
    }
    expected |= {"batch_moments", "merge_moments"}
    expected |= {f"{op}_double_backward" for op in ("layer_norm", "rms_norm", "batch_norm",
                                                    "group_norm", "instance_norm")}
    assert set(ref.__all__) == expected
    for name in expected:
        assert callable(getattr(ref, name))
        assert getattr(ref, name).__doc__


# --------------------------------------------------------------------------- gradients

LN_CASES = [((3, 5), -1), ((2, 3, 4), -1), ((2, 3, 4), 1), ((4,), 0), ((2, 7), 1)]


@pytest.mark.parametrize("affine", [False, True])
@pytest.mark.parametrize(("shape", "axis"), LN_CASES)
def test_layer_norm_backward(shape, axis, affine):
    rng = rng_for("ln", shape, axis, affine)
    x = normal(rng, shape, 0.5, 2.0)
    dy = normal(rng, shape)
    pshape = shape[axis % len(shape) :]
    w = normal(rng, pshape) if affine else None
    b = normal(rng, pshape) if affine else None
    y, mean, rstd = ref.layer_norm(x, w, b, axis=axis, return_stats=True)
    lead = shape[: axis % len(shape)]
    assert y.shape == shape and mean.shape == lead and rstd.shape == lead
    dx, dw, db = ref.layer_norm_backward(dy, x, mean, rstd, w, axis=axis)
    check_grad(lambda a: ref.layer_norm(a, w, b, axis=axis), x, dy, dx)
    if affine:
        check_grad(lambda a: ref.layer_norm(x, a, b, axis=axis), w, dy, dw)
    else:
        assert dw is None
    b0 = np.zeros(pshape) if b is None else b
    check_grad(lambda a: ref.layer_norm(x, w, a, axis=axis), b0, dy, db)


@pytest.mark.parametrize("affine", [False, True])
@pytest.mark.parametrize(("shape", "axis"), LN_CASES)
def test_rms_norm_backward(shape, axis, affine):
    rng = rng_for("rms", shape, axis, affine)
    x = normal(rng, shape, 0.5, 2.0)
    dy = normal(rng, shape)
    pshape = shape[axis % len(shape) :]
    w = normal(rng, pshape) if affine else None
    y, rstd = ref.rms_norm(x, w, axis=axis, return_stats=True)
    assert rstd.shape == shape[: axis % len(shape)]
    dx, dw = ref.rms_norm_backward(dy, x, rstd, w, axis=axis)
    check_grad(lambda a: ref.rms_norm(a, w, axis=axis), x, dy, dx)
    if affine:
        check_grad(lambda a: ref.rms_norm(x, a, axis=axis), w, dy, dw)
    else:
        assert dw is None


BN_CASES = [
    ((4, 3, 2), 1),
    ((4, 2, 3), -1),
    ((5, 3), 1),
    ((2, 3, 2, 2), 1),
    ((2, 2, 2, 3), -1),
    ((3, 2, 4), 0),
    ((2, 4, 3), 2),
]


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("affine", [False, True])
@pytest.mark.parametrize(("shape", "axis"), BN_CASES)
def test_batch_norm_backward(shape, axis, affine, training):
    rng = rng_for("bn", shape, axis, affine, training)
    c = shape[axis]
    x = normal(rng, shape, 1.0, 3.0)
    dy = normal(rng, shape)
    w = normal(rng, c) if affine else None
    b = normal(rng, c) if affine else None
    rm = None if training else normal(rng, c)
    rv = None if training else positive(rng, c)

    def fwd(x_=x, w_=w, b_=b):
        return ref.batch_norm(x_, w_, b_, rm, rv, training=training, axis=axis)

    _, mean, rstd = ref.batch_norm(x, w, b, rm, rv, training=training, axis=axis, return_stats=True)
    assert mean.shape == (c,) and rstd.shape == (c,)
    dx, dw, db = ref.batch_norm_backward(dy, x, mean, rstd, w, axis=axis, training=training)
    check_grad(lambda a: fwd(x_=a), x, dy, dx)
    if affine:
        check_grad(lambda a: fwd(w_=a), w, dy, dw)
    else:
        assert dw is None
    check_grad(lambda a: fwd(b_=a), np.zeros(c) if b is None else b, dy, db)


GN_CASES = [
    ((2, 6, 3), 1, 3),
    ((2, 3, 6), -1, 2),
    ((2, 4, 2, 3), 1, 2),
    ((2, 2, 3, 4), -1, 4),
    ((3, 4), 1, 2),
    ((2, 3, 4, 2), 2, 2),
    ((2, 6, 2), 1, 1),
]


@pytest.mark.parametrize("affine", [False, True])
@pytest.mark.parametrize(("shape", "axis", "groups"), GN_CASES)
def test_group_norm_backward(shape, axis, groups, affine):
    rng = rng_for("gn", shape, axis, groups, affine)
    c = shape[axis]
    x = normal(rng, shape, -1.0, 2.0)
    dy = normal(rng, shape)
    w = normal(rng, c) if affine else None
    b = normal(rng, c) if affine else None
    _, mean, rstd = ref.group_norm(x, groups, w, b, axis=axis, return_stats=True)
    assert mean.shape == (shape[0], groups) and rstd.shape == (shape[0], groups)
    dx, dw, db = ref.group_norm_backward(dy, x, mean, rstd, groups, w, axis=axis)
    check_grad(lambda a: ref.group_norm(a, groups, w, b, axis=axis), x, dy, dx)
    if affine:
        check_grad(lambda a: ref.group_norm(x, groups, a, b, axis=axis), w, dy, dw)
    else:
        assert dw is None
    b0 = np.zeros(c) if b is None else b
    check_grad(lambda a: ref.group_norm(x, groups, w, a, axis=axis), b0, dy, db)


IN_CASES = [((2, 3, 4), 1), ((2, 4, 3), -1), ((2, 3, 2, 2), 1), ((2, 2, 2, 3), -1)]


@pytest.mark.parametrize("affine", [False, True])
@pytest.mark.parametrize(("shape", "axis"), IN_CASES)
def test_instance_norm_backward(shape, axis, affine):
    rng = rng_for("in", shape, axis, affine)
    c = shape[axis]
    x = normal(rng, shape, 2.0, 0.5)
    dy = normal(rng, shape)
    w = normal(rng, c) if affine else None
    b = normal(rng, c) if affine else None
    _, mean, rstd = ref.instance_norm(x, w, b, axis=axis, return_stats=True)
    assert mean.shape == (shape[0], c)
    dx, dw, db = ref.instance_norm_backward(dy, x, mean, rstd, w, axis=axis)
    check_grad(lambda a: ref.instance_norm(a, w, b, axis=axis), x, dy, dx)
    if affine:
        check_grad(lambda a: ref.instance_norm(x, a, b, axis=axis), w, dy, dw)
    else:
        assert dw is None
    b0 = np.zeros(c) if b is None else b
    check_grad(lambda a: ref.instance_norm(x, w, a, axis=axis), b0, dy, db)


@pytest.mark.parametrize(("shape", "axis"), [((3, 5), -1), ((3, 5), 0), ((2, 3, 4), 1)])
def test_l2_normalize_backward(shape, axis):
    rng = rng_for("l2", shape, axis)
    x = normal(rng, shape)
    dy = normal(rng, shape)
    y, norm = ref.l2_normalize(x, axis=axis, return_stats=True)
    assert norm.shape == tuple(s for i, s in enumerate(shape) if i != axis % len(shape))
    dx = ref.l2_normalize_backward(dy, y, norm, axis=axis)
    check_grad(lambda a: ref.l2_normalize(a, axis=axis), x, dy, dx)


WN_CASES = [
    ((4, 3), 0, False),
    ((4, 3), 0, True),
    ((4, 3), 1, False),
    ((3, 4, 2), 1, False),
    ((3, 4, 2), -1, True),
    ((5,), 0, False),
]


@pytest.mark.parametrize(("shape", "axis", "keepdims"), WN_CASES)
def test_weight_norm_backward(shape, axis, keepdims):
    rng = rng_for("wn", shape, axis, keepdims)
    c = shape[axis]
    v = normal(rng, shape)
    g = normal(rng, c)
    if keepdims:
        g = g.reshape([c if i == axis % len(shape) else 1 for i in range(len(shape))])
    dw = normal(rng, shape)
    w, norm = ref.weight_norm(v, g, axis=axis, return_stats=True)
    assert w.shape == shape and norm.shape == (c,)
    dv, dg = ref.weight_norm_backward(dw, v, g, norm, axis=axis)
    assert dg.shape == g.shape
    check_grad(lambda a: ref.weight_norm(a, g, axis=axis), v, dw, dv)
    check_grad(lambda a: ref.weight_norm(v, a, axis=axis), g, dw, dg)


@pytest.mark.parametrize(("n", "m", "d"), [(4, 5, 3), (1, 1, 1), (3, 2, 7)])
def test_cosine_norm_backward(n, m, d):
    rng = rng_for("cn", n, m, d)
    x = normal(rng, (n, d))
    w = normal(rng, (m, d))
    dy = normal(rng, (n, m))
    y, xn, wn = ref.cosine_norm(x, w, return_stats=True)
    assert y.shape == (n, m) and xn.shape == (n,) and wn.shape == (m,)
    if d == 1:
        return  # every cosine is exactly +-1, where the clip has no derivative
    dx, dw = ref.cosine_norm_backward(dy, x, w, xn, wn)
    check_grad(lambda a: ref.cosine_norm(a, w), x, dy, dx)
    check_grad(lambda a: ref.cosine_norm(x, a), w, dy, dw)


def test_numerical_grad_of_a_known_function():
    x = np.array([[1.0, -2.0], [0.5, 3.0]])
    dy = np.array([[1.0, 2.0], [3.0, 4.0]])
    np.testing.assert_allclose(numerical_grad(lambda a: a**3, x, dy), 3 * x**2 * dy, rtol=1e-8)
    np.testing.assert_array_equal(x, [[1.0, -2.0], [0.5, 3.0]])


# --------------------------------------------------------------------------- identities


@pytest.mark.parametrize(("shape", "axis"), [((4, 9), -1), ((3, 7, 5), 1), ((6,), 0)])
def test_layer_norm_rows_have_mean_zero_and_unit_variance(shape, axis):
    x = normal(rng_for("lnstat", shape), shape, 3.0, 10.0)
    axes = tuple(range(axis % len(shape), len(shape)))
    y = ref.layer_norm(x, axis=axis, eps=0.0)
    np.testing.assert_allclose(y.mean(axis=axes), 0.0, atol=1e-12)
    np.testing.assert_allclose(y.var(axis=axes), 1.0, rtol=1e-12)
    y = ref.layer_norm(x, axis=axis)
    np.testing.assert_allclose(y.var(axis=axes), 1.0, rtol=1e-4)


def test_layer_norm_affine_and_stats():
    rng = rng_for("lnaff")
    x = normal(rng, (3, 4, 5))
    w = normal(rng, (4, 5))
    b = normal(rng, (4, 5))
    y, mean, rstd = ref.layer_norm(x, w, b, axis=1, return_stats=True)
    flat = x.reshape(3, -1)
    np.testing.assert_allclose(mean, flat.mean(axis=1), rtol=1e-12)
    np.testing.assert_allclose(rstd, 1 / np.sqrt(flat.var(axis=1) + 1e-5), rtol=1e-12)
    np.testing.assert_allclose(y, ref.layer_norm(x, axis=1) * w + b, rtol=1e-12)


def test_rms_norm_formula():
    x = normal(rng_for("rmsf"), (3, 8))
    w = normal(rng_for("rmsw"), 8)
    y, rstd = ref.rms_norm(x, w, return_stats=True)
    expected = 1 / np.sqrt((x**2).mean(axis=1) + 1e-6)
    np.testing.assert_allclose(rstd, expected, rtol=1e-12)
    np.testing.assert_allclose(y, x * expected[:, None] * w, rtol=1e-12)


def test_batch_norm_equals_layer_norm_on_transposed_view():
    rng = rng_for("bnln")
    x = normal(rng, (6, 4), 1.0, 2.0)
    dy = normal(rng, (6, 4))
    y, mean, rstd = ref.batch_norm(x, return_stats=True)
    y2, mean2, rstd2 = ref.layer_norm(x.T, return_stats=True)
    np.testing.assert_allclose(y, y2.T, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(mean, mean2, rtol=1e-12)
    np.testing.assert_allclose(rstd, rstd2, rtol=1e-12)
    dx, _, db = ref.batch_norm_backward(dy, x, mean, rstd)
    dx2, _, _ = ref.layer_norm_backward(dy.T, x.T, mean2, rstd2)
    np.testing.assert_allclose(dx, dx2.T, rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(db, dy.sum(axis=0), rtol=1e-12)

    for shape, axis in [((3, 4, 2, 5), 1), ((3, 2, 5, 4), -1)]:
        x = normal(rng, shape)
        y, mean, rstd = ref.batch_norm(x, axis=axis, return_stats=True)
        xt = np.moveaxis(x, axis, 0)
        y2, mean2, rstd2 = ref.layer_norm(xt, axis=1, return_stats=True)
        np.testing.assert_allclose(y, np.moveaxis(y2, 0, axis), rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(mean, mean2, rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(rstd, rstd2, rtol=1e-12)


@pytest.mark.parametrize(
    "op",
    [
        lambda x, axis: ref.batch_norm(x, axis=axis, return_stats=True),
        lambda x, axis: ref.group_norm(x, 2, axis=axis, return_stats=True),
        lambda x, axis: ref.instance_norm(x, axis=axis, return_stats=True),
    ],
    ids=["batch", "group", "instance"],
)
def test_channels_last_equals_channels_first(op):
    x = normal(rng_for("layout"), (3, 4, 2, 5))
    first = op(x, 1)
    last = op(np.moveaxis(x, 1, -1), -1)
    np.testing.assert_allclose(first[0], np.moveaxis(last[0], -1, 1), rtol=1e-12, atol=1e-14)
    for a, b in zip(first[1:], last[1:], strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize(("shape", "axis"), IN_CASES)
def test_instance_norm_equals_group_norm_with_one_group_per_channel(shape, axis):
    rng = rng_for("ingn", shape, axis)
    c = shape[axis]
    x = normal(rng, shape)
    dy = normal(rng, shape)
    w = normal(rng, c)
    b = normal(rng, c)
    yi, mi, ri = ref.instance_norm(x, w, b, axis=axis, return_stats=True)
    yg, mg, rg = ref.group_norm(x, c, w, b, axis=axis, return_stats=True)
    np.testing.assert_array_equal(yi, yg)
    np.testing.assert_array_equal(mi, mg)
    np.testing.assert_array_equal(ri, rg)
    gi = ref.instance_norm_backward(dy, x, mi, ri, w, axis=axis)
    gg = ref.group_norm_backward(dy, x, mg, rg, c, w, axis=axis)
    for a, b_ in zip(gi, gg, strict=True):
        np.testing.assert_array_equal(a, b_)


def test_group_norm_with_one_group_is_layer_norm_over_sample():
    x = normal(rng_for("gn1"), (3, 4, 5))
    y, mean, rstd = ref.group_norm(x, 1, return_stats=True)
    y2, mean2, rstd2 = ref.layer_norm(x, axis=1, return_stats=True)
    np.testing.assert_allclose(y, y2, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(mean[:, 0], mean2, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(rstd[:, 0], rstd2, rtol=1e-12)


def test_group_norm_groups_are_consecutive_channel_blocks():
    x = normal(rng_for("gnblocks"), (2, 6, 4))
    _, mean, rstd = ref.group_norm(x, 3, return_stats=True)
    for k in range(3):
        block = x[:, 2 * k : 2 * k + 2].reshape(2, -1)
        np.testing.assert_allclose(mean[:, k], block.mean(axis=1), rtol=1e-12)
        np.testing.assert_allclose(rstd[:, k], 1 / np.sqrt(block.var(axis=1) + 1e-5), rtol=1e-12)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_batch_norm_running_stats_update(dtype):
    rng = rng_for("running", dtype)
    x = normal(rng, (5, 3, 4), 2.0, 3.0)
    rm = normal(rng, 3).astype(dtype)
    rv = positive(rng, 3).astype(dtype)
    rm0, rv0 = rm.astype(np.float64), rv.astype(np.float64)
    m = 0.3
    _, mean, rstd = ref.batch_norm(x, None, None, rm, rv, momentum=m, return_stats=True)
    n = 5 * 4
    batch_mean = x.mean(axis=(0, 2))
    batch_var = x.var(axis=(0, 2))
    np.testing.assert_allclose(mean, batch_mean, rtol=1e-12)
    np.testing.assert_allclose(rstd, 1 / np.sqrt(batch_var + 1e-5), rtol=1e-12)
    tol = 1e-12 if dtype == np.float64 else 1e-6
    assert rm.dtype == dtype and rv.dtype == dtype
    np.testing.assert_allclose(rm, (1 - m) * rm0 + m * batch_mean, rtol=tol)
    np.testing.assert_allclose(rv, (1 - m) * rv0 + m * batch_var * n / (n - 1), rtol=tol)
    np.testing.assert_allclose(rv, (1 - m) * rv0 + m * x.var(axis=(0, 2), ddof=1), rtol=tol)


def test_batch_norm_momentum_extremes():
    x = normal(rng_for("mom"), (4, 3))
    rm, rv = np.zeros(3), np.ones(3)
    ref.batch_norm(x, running_mean=rm, running_var=rv, momentum=0.0)
    np.testing.assert_array_equal(rm, 0.0)
    np.testing.assert_array_equal(rv, 1.0)
    ref.batch_norm(x, running_mean=rm, running_var=rv, momentum=1.0)
    np.testing.assert_allclose(rm, x.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(rv, x.var(axis=0, ddof=1), rtol=1e-12)


def test_batch_norm_eval_uses_running_stats():
    rng = rng_for("eval")
    x = normal(rng, (4, 3, 2))
    dy = normal(rng, (4, 3, 2))
    rm = normal(rng, 3)
    rv = positive(rng, 3)
    w = normal(rng, 3)
    b = normal(rng, 3)
    rm0, rv0 = rm.copy(), rv.copy()
    y, mean, rstd = ref.batch_norm(x, w, b, rm, rv, training=False, return_stats=True)
    np.testing.assert_array_equal(rm, rm0)
    np.testing.assert_array_equal(rv, rv0)
    np.testing.assert_array_equal(mean, rm0)
    np.testing.assert_allclose(rstd, 1 / np.sqrt(rv0 + 1e-5), rtol=1e-15)
    c = (slice(None), None)
    expected = (x - rm0[c]) / np.sqrt(rv0[c] + 1e-5) * w[c] + b[c]
    np.testing.assert_allclose(y, expected, rtol=1e-12, atol=1e-14)
    dx, _, _ = ref.batch_norm_backward(dy, x, mean, rstd, w, training=False)
    np.testing.assert_allclose(dx, dy * (w * rstd)[c], rtol=1e-15)
    with pytest.raises(ValueError, match="running"):
        ref.batch_norm(x, training=False)


def test_batch_norm_rejects_a_single_value_per_channel():
    rm, rv = np.zeros(3), np.ones(3)
    with pytest.raises(ValueError, match="more than 1 value"):
        ref.batch_norm(np.ones((1, 3)), running_mean=rm, running_var=rv)
    np.testing.assert_array_equal(rm, 0.0)
    np.testing.assert_array_equal(rv, 1.0)
    y = ref.batch_norm(np.ones((1, 3)), running_mean=rm, running_var=rv, training=False)
    assert np.isfinite(y).all()


def test_l2_normalize_zero_vector():
    x = np.array([[0.0, 0.0, 0.0], [3.0, 0.0, 4.0]])
    dy = np.array([[1.0, -2.0, 0.5], [0.1, 0.2, 0.3]])
    y, norm = ref.l2_normalize(x, return_stats=True)
    np.testing.assert_array_equal(y[0], 0.0)
    np.testing.assert_allclose(y[1], [0.6, 0.0, 0.8], rtol=1e-15)
    np.testing.assert_array_equal(norm, [0.0, 5.0])
    dx = ref.l2_normalize_backward(dy, y, norm)
    assert np.isfinite(dx).all()
    np.testing.assert_array_equal(dx[0], dy[0] / 1e-12)
    eps = 1e-3
    y, norm = ref.l2_normalize(x, eps=eps, return_stats=True)
    dx = ref.l2_normalize_backward(dy, y, norm, eps=eps)
    check_grad(lambda a: ref.l2_normalize(a, eps=eps), x, dy, dx)


def test_l2_normalize_unit_norm():
    x = normal(rng_for("l2unit"), (4, 6))
    y = ref.l2_normalize(x, axis=0)
    np.testing.assert_allclose(np.linalg.norm(y, axis=0), 1.0, rtol=1e-14)


@pytest.mark.parametrize(("shape", "axis", "keepdims"), WN_CASES)
def test_weight_norm_slice_norm_equals_abs_g(shape, axis, keepdims):
    rng = rng_for("wnnorm", shape, axis)
    c = shape[axis]
    v = normal(rng, shape, 0.0, 5.0)
    g = normal(rng, c)
    w, norm = ref.weight_norm(v, g, axis=axis, return_stats=True)
    others = tuple(i for i in range(len(shape)) if i != axis % len(shape))
    np.testing.assert_allclose(np.sqrt((w**2).sum(axis=others)), np.abs(g), rtol=1e-13)
    np.testing.assert_allclose(norm, np.sqrt((v**2).sum(axis=others)), rtol=1e-14)


def test_weight_norm_zero_slice():
    rng = rng_for("wnzero")
    v = normal(rng, (3, 4))
    v[1] = 0.0
    g = normal(rng, 3)
    dw = normal(rng, (3, 4))
    w, norm = ref.weight_norm(v, g, return_stats=True)
    np.testing.assert_array_equal(w[1], 0.0)
    assert norm[1] == 0.0
    dv, dg = ref.weight_norm_backward(dw, v, g, norm)
    assert np.isfinite(dv).all() and np.isfinite(dg).all()
    np.testing.assert_array_equal(dv[1], 0.0)
    assert dg[1] == 0.0
    keep = [0, 2]
    w2, norm2 = ref.weight_norm(v[keep], g[keep], return_stats=True)
    dv2, dg2 = ref.weight_norm_backward(dw[keep], v[keep], g[keep], norm2)
    np.testing.assert_array_equal(w[keep], w2)
    np.testing.assert_array_equal(dv[keep], dv2)
    np.testing.assert_array_equal(dg[keep], dg2)


def test_cosine_norm_bounded_and_exact_for_parallel_rows():
    rng = rng_for("cnb")
    x = normal(rng, (5, 4))
    w = np.concatenate([3.7 * x[:2], -0.01 * x[2:4], normal(rng, (3, 4))])
    y = ref.cosine_norm(x, w)
    assert np.all(np.abs(y) <= 1.0)
    np.testing.assert_allclose(np.diag(y[:2, :2]), 1.0, rtol=1e-15)
    np.testing.assert_allclose(np.diag(y[2:4, 2:4]), -1.0, rtol=1e-15)
    expected = (x / np.linalg.norm(x, axis=1)[:, None]) @ (w / np.linalg.norm(w, axis=1)[:, None]).T
    np.testing.assert_allclose(y, np.clip(expected, -1, 1), rtol=1e-13, atol=1e-15)


@settings(max_examples=40, deadline=None)
@given(
    st.integers(1, 4),
    st.integers(1, 4),
    st.integers(1, 6),
    st.floats(-1e6, 1e6, allow_nan=False).filter(lambda s: abs(s) > 1e-6),
    st.integers(0, 2**32 - 1),
)
def test_cosine_norm_bounded_property(n, m, d, scale, seed):
    rng = np.random.default_rng(seed)
    x = scale * rng.standard_normal((n, d))
    w = np.concatenate([x[:1] * 2.0, rng.standard_normal((m, d))])
    y = ref.cosine_norm(x, w)
    assert np.all(np.abs(y) <= 1.0)


def test_cosine_norm_zero_rows():
    x = np.array([[0.0, 0.0], [1.0, 2.0]])
    w = np.array([[0.0, 0.0], [2.0, -1.0], [1.0, 1.0]])
    dy = np.ones((2, 3))
    y, xn, wn = ref.cosine_norm(x, w, return_stats=True)
    np.testing.assert_array_equal(y[0], 0.0)
    np.testing.assert_array_equal(y[:, 0], 0.0)
    dx, dw = ref.cosine_norm_backward(dy, x, w, xn, wn)
    assert np.isfinite(dx).all() and np.isfinite(dw).all()


# --------------------------------------------------------------------------- invariances


def test_data_scale_invariance():
    rng = rng_for("scale")
    x = normal(rng, (4, 6), 1.0, 2.0)
    w = normal(rng, (3, 6))
    for lam in (1e-3, 7.0, 1e4):
        np.testing.assert_allclose(
            ref.layer_norm(lam * x, eps=0.0), ref.layer_norm(x, eps=0.0), rtol=1e-10, atol=1e-12
        )
        np.testing.assert_allclose(
            ref.batch_norm(lam * x, eps=0.0), ref.batch_norm(x, eps=0.0), rtol=1e-10, atol=1e-12
        )
        np.testing.assert_allclose(
            ref.cosine_norm(lam * x, w), ref.cosine_norm(x, w), rtol=1e-12, atol=1e-14
        )
    g = np.ones(4)
    assert not np.allclose(ref.weight_norm(2.0 * x, g), 2.0 * ref.weight_norm(x, g))


def test_weight_scale_invariance_and_gradient_scaling():
    rng = rng_for("wscale")
    v = normal(rng, (4, 5))
    g = normal(rng, 4)
    dw = normal(rng, (4, 5))
    lam = 3.5
    w1, n1 = ref.weight_norm(v, g, return_stats=True)
    w2, n2 = ref.weight_norm(lam * v, g, return_stats=True)
    np.testing.assert_allclose(w1, w2, rtol=1e-13)
    dv1, dg1 = ref.weight_norm_backward(dw, v, g, n1)
    dv2, dg2 = ref.weight_norm_backward(dw, lam * v, g, n2)
    np.testing.assert_allclose(dv2, dv1 / lam, rtol=1e-12)
    np.testing.assert_allclose(dg2, dg1, rtol=1e-12)

    x = normal(rng, (3, 5))
    dy = normal(rng, (3, 4))
    y1, xn, wn1 = ref.cosine_norm(x, v, return_stats=True)
    y2, _, wn2 = ref.cosine_norm(x, lam * v, return_stats=True)
    np.testing.assert_allclose(y1, y2, rtol=1e-13, atol=1e-15)
    _, dv1 = ref.cosine_norm_backward(dy, x, v, xn, wn1)
    _, dv2 = ref.cosine_norm_backward(dy, x, lam * v, xn, wn2)
    np.testing.assert_allclose(dv2, dv1 / lam, rtol=1e-12)


# --------------------------------------------------------------------------- values


def test_large_mean_small_spread():
    rng = rng_for("cancel")
    z = normal(rng, (3, 64))
    x = 1e4 + 1e-3 * z
    np.testing.assert_allclose(
        ref.layer_norm(x, eps=0.0), ref.layer_norm(z, eps=0.0), rtol=1e-6, atol=1e-6
    )
    np.testing.assert_allclose(
        ref.batch_norm(x.T, eps=0.0), ref.batch_norm(z.T, eps=0.0), rtol=1e-6, atol=1e-6
    )
    const = np.full((2, 3, 8), 1e9)
    y = ref.group_norm(const, 3, bias=np.array([1.0, 2.0, 3.0]))
    np.testing.assert_array_equal(y, np.broadcast_to(np.array([1.0, 2.0, 3.0])[:, None], y.shape))


def test_constant_input_gives_bias_and_finite_gradients():
    x = np.full((3, 5), 2.5)
    w = np.linspace(0.5, 1.5, 5)
    b = np.arange(5.0)
    dy = normal(rng_for("const"), (3, 5))
    y, mean, rstd = ref.layer_norm(x, w, b, return_stats=True)
    np.testing.assert_array_equal(y, np.broadcast_to(b, x.shape))
    grads = ref.layer_norm_backward(dy, x, mean, rstd, w)
    assert all(np.isfinite(gr).all() for gr in grads)


def test_eps_zero_on_constant_input_is_nan_without_warnings():
    y, mean, rstd = ref.layer_norm(np.ones((2, 4)), eps=0.0, return_stats=True)
    assert np.isnan(y).all()
    assert np.isinf(rstd).all()
    assert np.isnan(ref.batch_norm(np.ones((3, 2)), eps=0.0)).all()


def test_nan_and_inf_stay_in_their_group():
    rng = rng_for("nan")
    x = normal(rng, (4, 6))
    clean = ref.layer_norm(x)
    for bad in (np.nan, np.inf, -np.inf):
        xb = x.copy()
        xb[1, 2] = bad
        y = ref.layer_norm(xb)
        assert np.isnan(y[1]).all()
        np.testing.assert_array_equal(np.delete(y, 1, axis=0), np.delete(clean, 1, axis=0))
    xg = normal(rng, (2, 4, 3))
    xg[0, 3, 1] = np.nan
    y = ref.group_norm(xg, 2)
    assert np.isnan(y[0, 2:]).all()
    assert np.isfinite(y[0, :2]).all() and np.isfinite(y[1]).all()


def test_float32_input_gives_float64_results():
    x = normal(rng_for("f32"), (3, 4)).astype(np.float32)
    y, mean, rstd = ref.layer_norm(x, return_stats=True)
    assert y.dtype == mean.dtype == rstd.dtype == np.float64
    assert ref.batch_norm(x).dtype == np.float64
    assert ref.group_norm(x[:, :, None], 2).dtype == np.float64
    assert ref.l2_normalize(x).dtype == np.float64
    assert ref.weight_norm(x, np.ones(3, np.float32)).dtype == np.float64
    assert ref.cosine_norm(x, x).dtype == np.float64
    dx, _, _ = ref.layer_norm_backward(x, x, mean, rstd)
    assert dx.dtype == np.float64


def test_non_contiguous_views_match_contiguous():
    rng = rng_for("views")
    base = normal(rng, (6, 8, 10))
    for view in (base[::2, :, ::-1], base.transpose(2, 0, 1), base[1:, 1::3]):
        contig = np.ascontiguousarray(view)
        np.testing.assert_allclose(
            ref.layer_norm(view), ref.layer_norm(contig), rtol=1e-13, atol=1e-15
        )
        np.testing.assert_allclose(
            ref.batch_norm(view), ref.batch_norm(contig), rtol=1e-13, atol=1e-15
        )


@pytest.mark.parametrize(
    "call",
    [
        lambda x, out: ref.layer_norm(x, out=out),
        lambda x, out: ref.rms_norm(x, out=out),
        lambda x, out: ref.batch_norm(x, out=out),
        lambda x, out: ref.group_norm(x, 2, out=out),
        lambda x, out: ref.instance_norm(x, out=out),
        lambda x, out: ref.l2_normalize(x, out=out),
    ],
    ids=["layer", "rms", "batch", "group", "instance", "l2"],
)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_out_receives_result(call, dtype):
    x = normal(rng_for("out"), (3, 4, 5))
    out = np.empty(x.shape, dtype=dtype)
    res = call(x, out)
    assert res is out
    np.testing.assert_allclose(out, call(x, None), rtol=1e-6 if dtype == np.float32 else 0)
    stats = ref.layer_norm(x, out=np.empty_like(x), return_stats=True)
    assert len(stats) == 3


def test_out_equal_to_input():
    x = normal(rng_for("inplace"), (3, 5))
    expected = ref.layer_norm(x)
    assert ref.layer_norm(x, out=x) is x
    np.testing.assert_array_equal(x, expected)


# --------------------------------------------------------------------------- empty inputs


def test_empty_batch():
    x = np.zeros((0, 4, 3))
    dy = np.zeros_like(x)
    y, mean, rstd = ref.layer_norm(x, return_stats=True)
    assert y.shape == x.shape and mean.shape == (0, 4)
    dx, _, db = ref.layer_norm_backward(dy, x, mean, rstd)
    assert dx.shape == x.shape
    np.testing.assert_array_equal(db, np.zeros((3,)))

    rm, rv = np.full(4, 0.5), np.full(4, 2.0)
    y, mean, rstd = ref.batch_norm(x, None, None, rm, rv, return_stats=True)
    assert y.shape == x.shape and np.isnan(mean).all() and np.isnan(rstd).all()
    np.testing.assert_array_equal(rm, 0.5)
    np.testing.assert_array_equal(rv, 2.0)
    dx, dw, db = ref.batch_norm_backward(dy, x, mean, rstd, np.ones(4))
    assert dx.shape == x.shape
    np.testing.assert_array_equal(dw, 0.0)
    np.testing.assert_array_equal(db, 0.0)

    y, mean, rstd = ref.group_norm(x, 2, return_stats=True)
    assert y.shape == x.shape and mean.shape == (0, 2)
    dx, _, _ = ref.group_norm_backward(dy, x, mean, rstd, 2)
    assert dx.shape == x.shape
    y, mean, rstd = ref.instance_norm(x, axis=-1, return_stats=True)
    assert mean.shape == (0, 3)

    y, norm = ref.l2_normalize(x, return_stats=True)
    assert y.shape == x.shape and norm.shape == (0, 4)
    assert ref.l2_normalize_backward(dy, y, norm).shape == x.shape

    y, xn, wn = ref.cosine_norm(np.zeros((0, 3)), np.ones((2, 3)), return_stats=True)
    assert y.shape == (0, 2)
    dx, dw = ref.cosine_norm_backward(np.zeros((0, 2)), np.zeros((0, 3)), np.ones((2, 3)), xn, wn)
    assert dx.shape == (0, 3)
    np.testing.assert_array_equal(dw, 0.0)


def test_zero_length_reduction_gives_nan_stats():
    x = np.zeros((3, 0))
    y, mean, rstd = ref.layer_norm(x, return_stats=True)
    assert y.shape == (3, 0) and np.isnan(mean).all() and np.isnan(rstd).all()
    y, rstd = ref.rms_norm(x, return_stats=True)
    assert np.isnan(rstd).all()

    y, mean, rstd = ref.group_norm(np.zeros((2, 4, 0)), 2, return_stats=True)
    assert y.shape == (2, 4, 0) and mean.shape == (2, 2) and np.isnan(mean).all()
    y, mean, rstd = ref.instance_norm(np.zeros((2, 0, 3)), return_stats=True)
    assert y.shape == (2, 0, 3) and mean.shape == (2, 0)
    dx, _, db = ref.instance_norm_backward(np.zeros((2, 0, 3)), np.zeros((2, 0, 3)), mean, rstd)
    assert dx.shape == (2, 0, 3) and db.shape == (0,)

    y, norm = ref.l2_normalize(x, return_stats=True)
    np.testing.assert_array_equal(norm, 0.0)

    w, norm = ref.weight_norm(np.zeros((3, 0)), np.ones(3), return_stats=True)
    assert w.shape == (3, 0)
    np.testing.assert_array_equal(norm, 0.0)
    dv, dg = ref.weight_norm_backward(np.zeros((3, 0)), np.zeros((3, 0)), np.ones(3), norm)
    assert dv.shape == (3, 0)
    np.testing.assert_array_equal(dg, 0.0)


# --------------------------------------------------------------------------- validation


def test_validation_errors():
    x = np.ones((2, 6, 3))
    with pytest.raises(np.exceptions.AxisError):
        ref.layer_norm(x, axis=3)
    with pytest.raises(np.exceptions.AxisError):
        ref.batch_norm(x, axis=-4)
    with pytest.raises(np.exceptions.AxisError):
        ref.l2_normalize(np.float64(1.0))
    with pytest.raises(ValueError, match="eps"):
        ref.layer_norm(x, eps=-1e-5)
    with pytest.raises(ValueError, match="momentum"):
        ref.batch_norm(x, momentum=1.5)
    with pytest.raises(ValueError, match="num_groups"):
        ref.group_norm(x, 4)
    with pytest.raises(ValueError, match="num_groups"):
        ref.group_norm(x, 0)
    with pytest.raises(ValueError, match="axis 0"):
        ref.group_norm(x, 2, axis=0)
    with pytest.raises(ValueError, match="dimensions"):
        ref.batch_norm(np.ones(4))
    with pytest.raises(ValueError, match="dimensions"):
        ref.instance_norm(np.ones(4))
    with pytest.raises(ValueError, match="weight"):
        ref.layer_norm(x, np.ones(4))
    with pytest.raises(ValueError, match="weight"):
        ref.batch_norm(x, np.ones(5))
    with pytest.raises(ValueError, match="running_var"):
        ref.batch_norm(x, running_mean=np.zeros(6), running_var=np.ones(2))
    with pytest.raises(ValueError, match="g must"):
        ref.weight_norm(np.ones((3, 4)), np.ones(4))
    with pytest.raises(ValueError, match="columns"):
        ref.cosine_norm(np.ones((2, 3)), np.ones((2, 4)))


# --------------------------------------------------------------------------- properties

SIZES = st.sampled_from([1, 2, 3, 7, 15, 17, 33])


@settings(max_examples=30, deadline=None)
@given(st.lists(SIZES, min_size=1, max_size=3), st.data())
def test_layer_norm_property(shape, data):
    axis = data.draw(st.integers(-len(shape), len(shape) - 1))
    seed = data.draw(st.integers(0, 2**32 - 1))
    x = np.random.default_rng(seed).standard_normal(shape) * 5.0 + 2.0
    y, mean, rstd = ref.layer_norm(x, axis=axis, return_stats=True)
    axes = tuple(range(axis % len(shape), len(shape)))
    np.testing.assert_allclose(y.mean(axis=axes), 0.0, atol=1e-12)
    np.testing.assert_allclose(mean, x.mean(axis=axes), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(rstd, 1 / np.sqrt(x.var(axis=axes) + 1e-5), rtol=1e-12)


@settings(max_examples=30, deadline=None)
@given(
    st.integers(1, 3),
    st.sampled_from([1, 2, 3, 4, 6]),
    st.lists(SIZES, min_size=0, max_size=2),
    st.integers(0, 2**32 - 1),
)
def test_group_norm_layouts_property(n, groups, spatial, seed):
    c = 2 * groups
    x = np.random.default_rng(seed).standard_normal((n, c, *spatial))
    first, m1, r1 = ref.group_norm(x, groups, return_stats=True)
    last, m2, r2 = ref.group_norm(np.moveaxis(x, 1, -1), groups, axis=-1, return_stats=True)
    np.testing.assert_allclose(first, np.moveaxis(last, -1, 1), rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(m1, m2, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(r1, r2, rtol=1e-12)
