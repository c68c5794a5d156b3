"""The fast path for the common call (fastnorm._kernels.*_fast): it must give bitwise the
results of the full Python path where it accepts a call, and decline (return None, leaving
the call to the full path, which judges it) every call it cannot prove valid."""

from __future__ import annotations

import numpy as np
import pytest

import fastnorm as fn
from fastnorm import _kernels, _validate

F32, F64 = np.dtype(np.float32), np.dtype(np.float64)
FAST = ("layer_norm_fast", "rms_norm_fast", "layer_norm_bwd_fast", "rms_norm_bwd_fast",
        "batch_norm_fast")


@pytest.fixture
def full_path(monkeypatch):
    """Within the `with` block, the public functions take their full Python path."""

    class Switch:
        def __enter__(self):
            for name in FAST:
                monkeypatch.setattr(_kernels, name, lambda *a: None)

        def __exit__(self, *exc):
            monkeypatch.undo()

    return Switch()


def same_bits(a, b):
    if a is None or b is None:
        assert a is None and b is None
        return
    assert type(a) is type(b) is np.ndarray
    assert a.dtype == b.dtype and a.shape == b.shape and a.flags.c_contiguous
    assert a.tobytes() == b.tobytes()


def same_results(a, b):
    if isinstance(a, tuple):
        assert isinstance(b, tuple) and len(a) == len(b)
        for u, v in zip(a, b, strict=True):
            same_bits(u, v)
    else:
        same_bits(a, b)


def data(rng, shape, dtype, loc=0.0):
    return (loc + rng.standard_normal(shape)).astype(dtype)


# ----------------------------------------------------------------------------- accepted


ROW_CASES = [((1, 64), -1), ((5, 7), -1), ((3, 4, 6), 1), ((3, 4, 6), -2), ((33,), 0),
             ((2, 3, 17), 2), ((4, 1), -1)]


@pytest.mark.parametrize("dtype", [F32, F64])
@pytest.mark.parametrize(("shape", "axis"), ROW_CASES)
@pytest.mark.parametrize("affine", [False, True])
def test_rows_fast_matches_full_path(rng, full_path, dtype, shape, axis, affine):
    x = data(rng, shape, dtype, loc=3.0)
    norm = x.shape[axis:]
    w = data(rng, norm, dtype) if affine else None
    b = data(rng, norm, dtype) if affine else None
    dy = data(rng, shape, dtype)

    assert _kernels.layer_norm_fast(x, w, b, axis, 1e-5, True) is not None
    assert _kernels.rms_norm_fast(x, w, axis, 1e-6, False) is not None
    fast = [fn.layer_norm(x, w, b, axis=axis), fn.layer_norm(x, w, b, axis=axis,
                                                              return_stats=True),
            fn.rms_norm(x, w, axis=axis, eps=0.0), fn.rms_norm(x, w, axis=axis,
                                                               return_stats=True)]
    _, mean, rstd = fast[1]
    _, rrstd = fast[3]
    assert _kernels.layer_norm_bwd_fast(dy, x, mean, rstd, w, axis) is not None
    assert _kernels.rms_norm_bwd_fast(dy, x, rrstd, w, axis) is not None
    fast += [fn.layer_norm_backward(dy, x, mean, rstd, w, axis=axis),
             fn.rms_norm_backward(dy, x, rrstd, w, axis=axis)]
    with full_path:
        full = [fn.layer_norm(x, w, b, axis=axis), fn.layer_norm(x, w, b, axis=axis,
                                                                  return_stats=True),
                fn.rms_norm(x, w, axis=axis, eps=0.0), fn.rms_norm(x, w, axis=axis,
                                                                   return_stats=True),
                fn.layer_norm_backward(dy, x, mean, rstd, w, axis=axis),
                fn.rms_norm_backward(dy, x, rrstd, w, axis=axis)]
    for a, b_ in zip(fast, full, strict=True):
        same_results(a, b_)


BN_CASES = [((2, 4, 3, 3), 1), ((2, 3, 3, 4), -1), ((8, 5), 1), ((1, 3, 2), 1),
            ((3, 2, 5), 0)]


@pytest.mark.parametrize("dtype", [F32, F64])
@pytest.mark.parametrize(("shape", "axis"), BN_CASES)
@pytest.mark.parametrize("affine", [False, True])
@pytest.mark.parametrize(("running", "training"),  # eval mode needs running statistics
                         [(None, True), (F32, True), (F64, True), (F32, False), (F64, False)])
def test_batch_norm_fast_matches_full_path(rng, full_path, dtype, shape, axis, affine,
                                           running, training):
    x = data(rng, shape, dtype, loc=-2.0)
    C = shape[axis]
    w = data(rng, C, dtype) if affine else None
    b = data(rng, C, dtype) if affine else None
    rm0 = None if running is None else data(rng, C, running)
    rv0 = None if running is None else (1.0 + rng.random(C)).astype(running)

    def call(**kw):
        rm = None if rm0 is None else rm0.copy()
        rv = None if rv0 is None else rv0.copy()
        y = fn.batch_norm(x, w, b, rm, rv, training=training, momentum=0.3, eps=1e-4,
                          axis=axis, **kw)
        return y, rm, rv

    args = (x, w, b, None if rm0 is None else rm0.copy(),
            None if rv0 is None else rv0.copy(), training, 0.3, 1e-4, axis, False)
    assert _kernels.batch_norm_fast(*args) is not None
    fast = [call(), call(return_stats=True)]
    with full_path:
        full = [call(), call(return_stats=True)]
    for (y1, rm1, rv1), (y2, rm2, rv2) in zip(fast, full, strict=True):
        same_results(y1, y2)
        same_bits(rm1, rm2)
        same_bits(rv1, rv2)


@pytest.mark.parametrize("dtype", [F32, F64])
@pytest.mark.parametrize(("shape", "axis"), ROW_CASES[:4])
def test_rows_fast_out(rng, full_path, dtype, shape, axis):
    """out= is taken by the fast path (the result is out itself) with the full path's bits,
    also in place (out=x)."""
    x = data(rng, shape, dtype, loc=3.0)
    norm = x.shape[axis:]
    w, b = data(rng, norm, dtype), data(rng, norm, dtype)
    out = np.full(shape, np.nan, dtype)
    assert _kernels.layer_norm_fast(x, w, b, axis, 1e-5, False, out) is out
    assert _kernels.rms_norm_fast(x, w, axis, 1e-5, False, out) is out
    fast = []
    for f, args in ((fn.layer_norm, (w, b)), (fn.rms_norm, (w,))):
        o = np.full(shape, np.nan, dtype)
        y = f(x, *args, axis=axis, out=o)
        assert y is o
        r = f(x, *args, axis=axis, out=np.empty(shape, dtype), return_stats=True)
        xi = x.copy()
        yi = f(xi, *args, axis=axis, out=xi)
        assert yi is xi
        fast += [y, r, yi]
    with full_path:
        full = []
        for f, args in ((fn.layer_norm, (w, b)), (fn.rms_norm, (w,))):
            full += [f(x, *args, axis=axis, out=np.full(shape, np.nan, dtype)),
                     f(x, *args, axis=axis, out=np.empty(shape, dtype), return_stats=True)]
            xi = x.copy()
            full.append(f(xi, *args, axis=axis, out=xi))
    for a, b_ in zip(fast, full, strict=True):
        same_results(a, b_)
    same_bits(fast[0], fn.layer_norm(x, w, b, axis=axis))  # out= or not, the same bits


@pytest.mark.parametrize("dtype", [F32, F64])
@pytest.mark.parametrize("training", [True, False])
def test_batch_norm_fast_out(rng, full_path, dtype, training):
    shape, C = (2, 4, 3, 3), 4
    x = data(rng, shape, dtype, loc=-2.0)
    w, b = data(rng, C, dtype), data(rng, C, dtype)
    rm0, rv0 = data(rng, C, F32), (1.0 + rng.random(C)).astype(F32)

    def call(x, out):
        rm, rv = rm0.copy(), rv0.copy()
        y = fn.batch_norm(x, w, b, rm, rv, training=training, out=out, return_stats=True)
        return y, rm, rv

    out = np.empty(shape, dtype)
    assert _kernels.batch_norm_fast(x, w, b, rm0.copy(), rv0.copy(), training, 0.1, 1e-5, 1,
                                    False, out) is out
    o = np.empty(shape, dtype)
    xi = x.copy()
    fast = [call(x, o), call(xi, xi)]
    assert fast[0][0][0] is o and fast[1][0][0] is xi
    with full_path:
        xi = x.copy()
        full = [call(x, np.empty(shape, dtype)), call(xi, xi)]
    for (y1, rm1, rv1), (y2, rm2, rv2) in zip(fast, full, strict=True):
        same_results(y1, y2)
        same_bits(rm1, rm2)
        same_bits(rv1, rv2)


@pytest.mark.parametrize("dtype", [F32, F64])
@pytest.mark.parametrize(("shape", "axis"), ROW_CASES[:4])
def test_rows_bwd_fast_out(rng, full_path, dtype, shape, axis):
    """The backward's out= (dx) is taken by the fast path with the full path's bits, also
    in place of dy (out=dy)."""
    x = data(rng, shape, dtype, loc=3.0)
    dy = data(rng, shape, dtype)
    norm = x.shape[axis:]
    w = data(rng, norm, dtype)
    _, mean, rstd = fn.layer_norm(x, w, axis=axis, return_stats=True)
    out = np.full(shape, np.nan, dtype)
    assert _kernels.layer_norm_bwd_fast(dy, x, mean, rstd, w, axis, out)[0] is out
    assert _kernels.rms_norm_bwd_fast(dy, x, rstd, w, axis, out)[0] is out

    def calls():
        res = []
        for f, args in ((fn.layer_norm_backward, (mean, rstd, w)),
                        (fn.rms_norm_backward, (rstd, w))):
            o = np.full(shape, np.nan, dtype)
            r = f(dy, x, *args, axis=axis, out=o)
            assert r[0] is o
            d = dy.copy()
            ri = f(d, x, *args, axis=axis, out=d)
            assert ri[0] is d
            res += [r, ri]
        return res

    fast = calls()
    with full_path:
        full = calls()
    for a, b_ in zip(fast, full, strict=True):
        same_results(a, b_)
    same_results(fast[0], fn.layer_norm_backward(dy, x, mean, rstd, w, axis=axis))


def test_declined_bwd_out(rng):
    """A backward out the full path would not write directly is declined, and the public
    function still gives the right dx."""
    x = data(rng, (3, 8), F32, loc=1.0)
    dy = data(rng, (3, 8), F32)
    w = data(rng, 8, F32)
    _, mean, rstd = fn.layer_norm(x, w, return_stats=True)
    want = fn.layer_norm_backward(dy, x, mean, rstd, w)
    ro = np.empty_like(x)
    ro.flags.writeable = False
    bad = {"read-only": ro, "shape": np.empty((8, 3), F32), "dtype": np.empty((3, 8), F64),
           "strided": np.empty((3, 16), F32)[:, ::2], "list": x.tolist()}
    for name, out in bad.items():
        assert _kernels.layer_norm_bwd_fast(dy, x, mean, rstd, w, -1, out) is None, name
        assert _kernels.rms_norm_bwd_fast(dy, x, rstd, w, -1, out) is None, name
    # over x, over part of dy, over the weight: computed into a temporary, then copied
    buf = np.zeros(64, F32)
    for lo, arg in ((0, "x"), (4, "dy"), (8, "weight")):
        buf[:] = 0
        xs, dys, ws = x.copy(), dy.copy(), w.copy()
        out = buf[lo:lo + 24].reshape(3, 8)
        if arg == "x":
            buf[:24] = x.ravel()
            xs = buf[:24].reshape(3, 8)
        elif arg == "dy":
            buf[:24] = dy.ravel()
            dys = buf[:24].reshape(3, 8)
        else:
            buf[16:24] = w
            ws = buf[16:24]
        assert _kernels.layer_norm_bwd_fast(dys, xs, mean, rstd, ws, -1, out) is None, arg
        r = fn.layer_norm_backward(dys, xs, mean, rstd, ws, out=out)
        assert r[0] is out
        for a, b_ in zip(r, want, strict=True):
            np.testing.assert_array_equal(a, b_, err_msg=arg)


def test_declined_out(rng):
    """Every out the full path would not write into directly (or rejects) is declined;
    the public functions then still give the right result through the full path."""
    x = data(rng, (3, 8), F32, loc=1.0)
    w, b = data(rng, 8, F32), data(rng, 8, F32)
    want = fn.layer_norm(x, w, b)
    buf = np.zeros(x.size + 16, F32)
    ro = np.empty_like(x)
    ro.flags.writeable = False
    bad = {k: v for k, v in variants(np.empty_like(x)).items() if k != "reversed"}
    bad |= {"read-only": ro, "shape": np.empty((8, 3), F32), "dtype": np.empty((3, 8), F64),
            "strided": np.empty((3, 16), F32)[:, ::2]}
    for name, out in bad.items():
        assert _kernels.layer_norm_fast(x, w, b, -1, 1e-5, False, out) is None, name
        assert _kernels.rms_norm_fast(x, w, -1, 1e-5, False, out) is None, name
        assert _kernels.batch_norm_fast(x, w, b, None, None, True, 0.1, 1e-5, -1, False,
                                        out) is None, name
    # overlapping an input: the full path computes into a temporary, then copies
    buf[:24] = x.ravel()
    xs = buf[:24].reshape(3, 8)
    for out in (buf[1:25].reshape(3, 8), xs[...], buf[16:40].reshape(3, 8)):
        assert _kernels.layer_norm_fast(xs, w, b, -1, 1e-5, False, out) is None
        buf[:24] = x.ravel()
        np.testing.assert_array_equal(fn.layer_norm(xs, w, b, out=out), want)
    wb = np.concatenate([w, b, np.zeros(24, F32)])
    for out in (wb[:24].reshape(3, 8), wb[8:32].reshape(3, 8)):  # out over weight / bias
        wv, bv = wb[:8], wb[8:16]
        assert _kernels.layer_norm_fast(x, wv, bv, -1, 1e-5, False, out) is None
        np.testing.assert_array_equal(fn.layer_norm(x, wv, bv, out=out), want)
        wb[:16] = np.concatenate([w, b])
    rs = np.zeros(32, F32)
    rm, rv = rs[:8], rs[8:16]
    rv[...] = 1.0
    assert _kernels.batch_norm_fast(x, None, None, rm, rv, True, 0.1, 1e-5, -1, False,
                                    rs[:24].reshape(3, 8)) is None
    np.testing.assert_allclose(fn.batch_norm(x, None, None, rm, rv, axis=-1,
                                             out=rs[:24].reshape(3, 8)),
                               fn.batch_norm(x, axis=-1), rtol=1e-6, atol=1e-6)
    rm[...], rv[...] = 0.0, 1.0
    assert _kernels.batch_norm_fast(x, None, None, rm, rv, True, 0.1, 1e-5, -1, False,
                                    np.empty_like(x)) is not None


# ----------------------------------------------------------------------------- declined


class Sub(np.ndarray):
    pass


def variants(x):
    """Arrays with x's values that the fast path must leave to the full path."""
    swapped = x.astype(x.dtype.newbyteorder())
    buf = np.zeros(x.nbytes + 1, np.uint8)
    misaligned = buf[1:].view(x.dtype).reshape(x.shape)
    misaligned[...] = x
    meta = np.dtype(x.dtype, metadata={"unit": "m"})
    return {
        "float16": x.astype(np.float16),
        "int": x.astype(np.int64),
        "subclass": x.view(Sub),
        "byte-swapped": swapped,
        "misaligned": misaligned,
        "metadata dtype": x.view(meta),
        "fortran": np.asfortranarray(np.tile(x, (1, 2)))[:, : x.shape[1]],
        "reversed": x[:, ::-1],
        "list": x.tolist(),
    }


def test_declined_inputs(rng):
    x = data(rng, (3, 8), F32)
    w = b = data(rng, 8, F32)
    for name, v in variants(x).items():
        assert _kernels.layer_norm_fast(v, w, b, -1, 1e-5, False) is None, name
        assert _kernels.rms_norm_fast(v, w, -1, 1e-5, False) is None, name
        assert _kernels.layer_norm_fast(x, v[0], b, -1, 1e-5, False) is None, name
        assert _kernels.batch_norm_fast(v, None, None, None, None, True, 0.1, 1e-5, 1,
                                        False) is None, name
    assert _kernels.layer_norm_fast(x, w.astype(F64), b, -1, 1e-5, False) is None
    assert _kernels.layer_norm_fast(x.astype(F64), w, None, -1, 1e-5, False) is None
    assert _kernels.layer_norm_fast(x, w[:7], b, -1, 1e-5, False) is None
    assert _kernels.layer_norm_fast(x, w.reshape(1, 8), b, -1, 1e-5, False) is None
    assert _kernels.layer_norm_fast(x, w, b, 0, 1e-5, False) is None  # weight of x.shape[0:]
    assert _kernels.layer_norm_fast(np.zeros((0, 8), F32), w, b, -1, 1e-5, False) is None
    assert _kernels.layer_norm_fast(np.zeros((3, 0), F32), None, None, -1, 1e-5,
                                    False) is None
    assert _kernels.layer_norm_fast(np.float32(1.0), None, None, -1, 1e-5, False) is None
    assert _kernels.layer_norm_fast(np.array(1.0, F32), None, None, -1, 1e-5, False) is None


@pytest.mark.parametrize("axis", [2, -3, 1.0, True, np.int64(1), 2**70, -(2**70), None, "1"])
def test_declined_axis(rng, axis):
    x = data(rng, (3, 8), F32)
    assert _kernels.layer_norm_fast(x, None, None, axis, 1e-5, False) is None
    assert _kernels.rms_norm_fast(x, None, axis, 1e-5, False) is None
    assert _kernels.batch_norm_fast(x, None, None, None, None, True, 0.1, 1e-5, axis,
                                    False) is None
    y, mean, rstd = fn.layer_norm(x, return_stats=True)
    assert _kernels.layer_norm_bwd_fast(x, x, mean, rstd, None, axis) is None
    assert _kernels.rms_norm_bwd_fast(x, x, rstd, None, axis) is None


@pytest.mark.parametrize("eps", [-1e-5, np.nan, np.inf, 0, 1, np.float64(1e-5),
                                 np.float32(1e-5), "1e-5", None])
def test_declined_eps(rng, eps):
    x = data(rng, (3, 8), F32)
    assert _kernels.layer_norm_fast(x, None, None, -1, eps, False) is None
    assert _kernels.rms_norm_fast(x, None, -1, eps, False) is None
    assert _kernels.batch_norm_fast(x, None, None, None, None, True, 0.1, eps, 1,
                                    False) is None


@pytest.mark.parametrize("flag", [1, 0, None, np.True_, "yes"])
def test_declined_flags(rng, flag):
    x = data(rng, (3, 8), F32)
    assert _kernels.layer_norm_fast(x, None, None, -1, 1e-5, flag) is None
    assert _kernels.rms_norm_fast(x, None, -1, 1e-5, flag) is None
    assert _kernels.batch_norm_fast(x, None, None, None, None, True, 0.1, 1e-5, 1,
                                    flag) is None
    assert _kernels.batch_norm_fast(x, None, None, None, None, flag, 0.1, 1e-5, 1,
                                    False) is None


def test_declined_backward(rng):
    x = data(rng, (3, 8), F32)
    w = data(rng, 8, F32)
    _, mean, rstd = fn.layer_norm(x, w, return_stats=True)
    dy = data(rng, (3, 8), F32)
    assert _kernels.layer_norm_bwd_fast(dy, x, mean, rstd, w, -1) is not None
    for name, v in variants(dy).items():
        assert _kernels.layer_norm_bwd_fast(v, x, mean, rstd, w, -1) is None, name
        assert _kernels.rms_norm_bwd_fast(v, x, rstd, w, -1) is None, name
    for bad in (mean.astype(F64), mean[:2], mean.reshape(3, 1), mean.tolist(), None):
        assert _kernels.layer_norm_bwd_fast(dy, x, bad, rstd, w, -1) is None
        assert _kernels.layer_norm_bwd_fast(dy, x, mean, bad, w, -1) is None
        assert _kernels.rms_norm_bwd_fast(dy, x, bad, w, -1) is None
    assert _kernels.layer_norm_bwd_fast(dy, x, mean, rstd, w[:4], -1) is None
    assert _kernels.layer_norm_bwd_fast(dy[:, :4], x, mean, rstd, w, -1) is None
    assert _kernels.layer_norm_bwd_fast(dy.astype(F64), x, mean, rstd, w, -1) is None
    e = np.zeros((0, 8), F32)
    assert _kernels.layer_norm_bwd_fast(e, e, mean[:0], rstd[:0], w, -1) is None
    assert _kernels.rms_norm_bwd_fast(e, e, rstd[:0], w, -1) is None


def test_declined_batch_norm(rng):
    x = data(rng, (2, 4, 3), F32)
    rm, rv = np.zeros(4, F32), np.ones(4, F32)
    ok = (x, None, None, rm, rv, True, 0.1, 1e-5, 1, False)
    assert _kernels.batch_norm_fast(*ok) is not None

    def declined(**changes):
        names = ("x", "weight", "bias", "rm", "rv", "training", "momentum", "eps", "axis",
                 "stats")
        args = dict(zip(names, ok, strict=True)) | changes
        return _kernels.batch_norm_fast(*args.values()) is None

    ro = np.ones(4, F32)
    ro.flags.writeable = False
    assert declined(x=x[0])  # 1-d
    assert declined(x=np.zeros((0, 4, 3), F32))
    assert declined(x=np.zeros((2, 0, 3), F32))
    assert declined(x=np.zeros((1, 4, 1), F32))  # one value per channel in training
    assert declined(weight=np.ones(3, F32))
    assert declined(bias=np.ones(4, F64))
    assert declined(rm=np.zeros(4, F64))  # running statistics of two dtypes
    assert declined(rv=ro)
    assert declined(rm=np.zeros(5, F32))
    assert declined(rm=np.zeros((4, 1), F32))
    assert declined(rm=np.zeros(8, F32)[::2])
    assert declined(rm=np.zeros(4, np.float16), rv=np.ones(4, np.float16))
    assert declined(rm=[0.0] * 4)
    assert declined(training=False, rm=None)
    assert declined(training=False, rv=None)
    for m in (-0.1, 1.5, np.nan, 1, np.float64(0.1), None):
        assert declined(momentum=m)
    assert _kernels.batch_norm_fast(np.zeros((1, 4, 1), F32), None, None, rm, rv, False,
                                    0.1, 1e-5, 1, False) is not None  # eval: allowed


def test_errors_come_from_the_full_path(rng):
    """Calls the fast path declines still raise the full path's errors, nothing written."""
    x = data(rng, (3, 8), F32)
    with pytest.raises(ValueError, match="weight must have shape"):
        fn.layer_norm(x, np.ones(7, F32))
    with pytest.raises(ValueError, match="eps"):
        fn.rms_norm(x, eps=-1.0)
    rm, rv = np.zeros(8, F32), np.ones(8, F32)
    with pytest.raises(ValueError, match="momentum"):
        fn.batch_norm(x, running_mean=rm, running_var=rv, axis=-1, momentum=2.0)
    assert not rm.any() and (rv == 1).all()


@pytest.mark.parametrize("eps", [0.0, 5e-324, 1.7976931348623157e308, -0.0, -5e-324,
                                 float("inf"), float("nan")])
def test_eps_rule_is_the_same_on_both_paths(rng, eps):
    """The fast path accepts exactly the eps values the full checks accept."""
    x = rng.standard_normal((3, 8)).astype(np.float32)
    accepted = _kernels.layer_norm_fast(x, None, None, -1, eps, False) is not None
    try:
        _validate.check_eps(np.float64(eps))  # not a Python float: the full checks
        valid = True
    except ValueError:
        valid = False
    assert accepted == valid
    assert valid == (eps >= 0.0 and eps != float("inf"))


@pytest.mark.parametrize("m", [0.0, -0.0, 1.0, np.nextafter(1.0, 2.0), -5e-324, 0.5,
                               float("nan"), float("inf")])
def test_momentum_rule_is_the_same_on_both_paths(rng, m):
    x = rng.standard_normal((4, 3)).astype(np.float32)
    rm, rv = np.zeros(3, np.float32), np.ones(3, np.float32)
    accepted = _kernels.batch_norm_fast(x, None, None, rm, rv, True, float(m), 1e-5, 1,
                                        False) is not None
    try:
        _validate.check_momentum(np.float64(m))
        valid = True
    except ValueError:
        valid = False
    assert accepted == valid
    assert valid == (0.0 <= m <= 1.0)
