"""Double backward of layer, RMS, batch (training and eval), group and instance norm: the
reference against central finite differences of the reference backward (float64), fastnorm
against the reference in every dtype and layout, the optional arguments and the errors."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import assert_close

import fastnorm as fn
from fastnorm import reference as ref

RM = np.linspace(-0.5, 0.5, 4)
RV = np.linspace(0.5, 2.0, 4)


def _eval_stats(x, w):
    return RM, 1.0 / np.sqrt(RV + 1e-5)


# name -> (x shape, parameter shape, stats(x, w) by the reference forward,
#          backward(lib, dy, x, stats, w), double(lib, ggx, ggw, ggb, dy, x, stats, w),
#          whether there is a bias gradient)
OPS = {
    "layer_norm": ((3, 2, 5), (2, 5),
                   lambda x, w: ref.layer_norm(x, w, axis=1, return_stats=True)[1:],
                   lambda L, dy, x, s, w: L.layer_norm_backward(dy, x, *s, w, axis=1),
                   lambda L, v, a, b, dy, x, s, w: L.layer_norm_double_backward(
                       v, a, b, dy, x, *s, w, axis=1), True),
    "rms_norm": ((4, 6), (6,),
                 lambda x, w: ref.rms_norm(x, w, return_stats=True)[1:],
                 lambda L, dy, x, s, w: L.rms_norm_backward(dy, x, *s, w),
                 lambda L, v, a, b, dy, x, s, w: L.rms_norm_double_backward(v, a, dy, x, *s, w),
                 False),
    "batch_norm": ((3, 4, 5), (4,),
                   lambda x, w: ref.batch_norm(x, w, return_stats=True)[1:],
                   lambda L, dy, x, s, w: L.batch_norm_backward(dy, x, *s, w),
                   lambda L, v, a, b, dy, x, s, w: L.batch_norm_double_backward(
                       v, a, b, dy, x, *s, w), True),
    "batch_norm_nhwc": ((2, 3, 2, 4), (4,),
                        lambda x, w: ref.batch_norm(x, w, axis=-1, return_stats=True)[1:],
                        lambda L, dy, x, s, w: L.batch_norm_backward(dy, x, *s, w, axis=-1),
                        lambda L, v, a, b, dy, x, s, w: L.batch_norm_double_backward(
                            v, a, b, dy, x, *s, w, axis=-1), True),
    "batch_norm_eval": ((3, 4, 5), (4,), _eval_stats,
                        lambda L, dy, x, s, w: L.batch_norm_backward(dy, x, *s, w,
                                                                     training=False),
                        lambda L, v, a, b, dy, x, s, w: L.batch_norm_double_backward(
                            v, a, b, dy, x, *s, w, training=False), True),
    "group_norm": ((2, 4, 3, 2), (4,),
                   lambda x, w: ref.group_norm(x, 2, w, return_stats=True)[1:],
                   lambda L, dy, x, s, w: L.group_norm_backward(dy, x, *s, 2, w),
                   lambda L, v, a, b, dy, x, s, w: L.group_norm_double_backward(
                       v, a, b, dy, x, *s, 2, w), True),
    "group_norm_nhwc": ((2, 3, 4), (4,),
                        lambda x, w: ref.group_norm(x, 2, w, axis=-1, return_stats=True)[1:],
                        lambda L, dy, x, s, w: L.group_norm_backward(dy, x, *s, 2, w, axis=-1),
                        lambda L, v, a, b, dy, x, s, w: L.group_norm_double_backward(
                            v, a, b, dy, x, *s, 2, w, axis=-1), True),
    "instance_norm": ((2, 4, 5), (4,),
                      lambda x, w: ref.instance_norm(x, w, return_stats=True)[1:],
                      lambda L, dy, x, s, w: L.instance_norm_backward(dy, x, *s, w),
                      lambda L, v, a, b, dy, x, s, w: L.instance_norm_double_backward(
                          v, a, b, dy, x, *s, w), True),
}


def _inputs(name, seed=0):
    xs, ps, *_ = OPS[name]
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(xs) * 2.0 + 0.5
    return (x, rng.standard_normal(xs), rng.standard_normal(ps) + 1.0,  # x, dy, w
            rng.standard_normal(xs), rng.standard_normal(ps), rng.standard_normal(ps))


@pytest.mark.parametrize("name", sorted(OPS))
def test_reference_matches_finite_differences_of_the_backward(name):
    """The double backward is the gradient of L = <v, dx> + <a, dweight> + <b, dbias>, the
    backward (and the forward's statistics, which depend on x) recomputed in float64."""
    _, _, stats, backward, double, has_bias = OPS[name]
    x, dy, w, v, a, b = _inputs(name)
    if not has_bias:
        b = None

    def loss(x_, dy_, w_):
        res = backward(ref, dy_, x_, stats(x_, w_), w_)
        total = (v * res[0]).sum() + (a * res[1]).sum()
        return total + ((b * res[2]).sum() if has_bias else 0.0)

    got = double(ref, v, a, b, dy, x, stats(x, w), w)
    h = 1e-6
    for k, base in enumerate((x, dy, w)):
        num = np.zeros_like(base)
        for i in np.ndindex(base.shape):
            args = [x, dy, w]
            plus, minus = base.copy(), base.copy()
            plus[i] += h
            minus[i] -= h
            args[k] = plus
            lp = loss(*args)
            args[k] = minus
            num[i] = (lp - loss(*args)) / (2 * h)
        np.testing.assert_allclose(got[k], num, rtol=1e-6, atol=1e-6,
                                   err_msg=f"{name}: gradient {('x', 'dy', 'weight')[k]}")


@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.float16, "bfloat16"])
@pytest.mark.parametrize("name", sorted(OPS))
def test_matches_reference(name, dtype):
    if dtype == "bfloat16":
        ml = pytest.importorskip("ml_dtypes")
        dtype = ml.bfloat16
    _, _, stats, _, double, has_bias = OPS[name]
    x, dy, w, v, a, b = _inputs(name, seed=1)
    x, dy, v = (z.astype(dtype) for z in (x, dy, v))
    sdtype = np.float64 if dtype == np.float64 else np.float32
    w, a, b = (z.astype(sdtype) for z in (w, a, b))
    st = tuple(np.asarray(s).astype(sdtype) for s in stats(x.astype(np.float64), w))
    f64 = [z.astype(np.float64) for z in (v, a, b, dy, x)]
    expected = double(ref, *f64[:3] if has_bias else (f64[0], f64[1], None), *f64[3:],
                      tuple(s.astype(np.float64) for s in st), w.astype(np.float64))
    got = double(fn, v, a, b if has_bias else None, dy, x, st, w)
    half = np.dtype(dtype).itemsize == 2
    for k, what in enumerate(("gx", "gdy", "gweight")):
        want = np.dtype(dtype) if k < 2 else np.dtype(sdtype)
        assert got[k].dtype == want, (what, got[k].dtype)
        if half:  # one rounding of the result to the half type
            np.testing.assert_allclose(got[k].astype(np.float64), expected[k], rtol=1e-2,
                                       atol=1e-2 * max(1.0, np.abs(expected[k]).max()))
        else:
            assert_close(got[k], expected[k], got[k].dtype, factor=10.0, err_msg=what)


@pytest.mark.parametrize("name", sorted(OPS))
def test_optional_arguments(name):
    """Each of ggx, ggweight, ggbias left out counts as zero; without weight, gweight is None."""
    _, _, stats, _, double, has_bias = OPS[name]
    x, dy, w, v, a, b = _inputs(name, seed=2)
    st = stats(x, w)
    zeros = (np.zeros_like(v), np.zeros_like(a), np.zeros_like(b) if has_bias else None)
    for keep in range(3 if has_bias else 2):
        args = [v, a, b if has_bias else None]
        full = list(zeros)
        full[keep] = args[keep]
        sparse = [None, None, None]
        sparse[keep] = args[keep]
        want = double(fn, *full, dy, x, st, w)
        got = double(fn, *sparse, dy, x, st, w)
        for g, e in zip(got, want, strict=True):
            np.testing.assert_array_equal(g, e)
    gx, gdy, gw = double(fn, v, None, b if has_bias else None, dy, x, st, None)
    assert gw is None
    e = double(ref, v, None, b if has_bias else None, dy, x, st, None)
    assert_close(gx, e[0], np.float64)
    assert_close(gdy, e[1], np.float64)


def test_layouts_strided_inputs():
    x, dy, w, v, a, b = _inputs("batch_norm", seed=3)
    st = ref.batch_norm(x, w, return_stats=True)[1:]
    want = fn.batch_norm_double_backward(v, a, b, dy, x, *st, w)
    # non-contiguous views of the same values
    xt, dyt, vt = (np.asfortranarray(z) for z in (x, dy, v))
    got = fn.batch_norm_double_backward(vt, a, b, dyt, xt, *st, w)
    for g, e in zip(got, want, strict=True):
        np.testing.assert_array_equal(g, e)


def test_empty_input():
    x = np.zeros((0, 4))
    gx, gdy, gw = fn.layer_norm_double_backward(x, None, None, x, x, np.zeros(0), np.zeros(0),
                                                np.ones(4))
    assert gx.shape == gdy.shape == (0, 4) and np.array_equal(gw, np.zeros(4))


def test_errors():
    x, dy, w, v, a, b = _inputs("layer_norm")
    st = ref.layer_norm(x, w, axis=1, return_stats=True)[1:]
    with pytest.raises(ValueError, match="ggweight needs weight"):
        fn.layer_norm_double_backward(v, a, b, dy, x, *st, None, axis=1)
    with pytest.raises(ValueError):
        fn.layer_norm_double_backward(v[:1], a, b, dy, x, *st, w, axis=1)
    with pytest.raises(ValueError):
        fn.layer_norm_double_backward(v, a[:1], b, dy, x, *st, w, axis=1)
    with pytest.raises(ValueError):
        fn.group_norm_double_backward(None, None, None, np.ones((2, 4, 3)), np.ones((2, 4, 3)),
                                      np.ones((2, 3)), np.ones((2, 3)), 3)
