"""Large outputs are written with streaming (non-temporal) stores through an L1 buffer.

The threshold is lowered so that small arrays take that path: its results must be
bitwise identical to ordinary stores and match the reference, for odd lengths,
outputs that do not start on a cache line, and in-place calls.
"""

import os
import sys

import numpy as np
import pytest
from conftest import assert_close

import fastnorm as fn
from fastnorm import _kernels
from fastnorm import reference as ref


@pytest.fixture
def streaming():
    """Run the body twice: with ordinary stores, then with every output streamed."""
    old = _kernels.get_stream_bytes()

    def run(f):
        _kernels.set_stream_bytes(1 << 62)
        try:
            plain = f()
            _kernels.set_stream_bytes(0)
            streamed = f()
        finally:
            _kernels.set_stream_bytes(old)
        return plain, streamed

    yield run
    _kernels.set_stream_bytes(old)


def _same(a, b):
    for u, v in zip(a, b, strict=True):
        if u is None:
            assert v is None
        else:
            assert u.dtype == v.dtype and np.array_equal(u, v, equal_nan=True)


def _out_off_line(shape, dtype):
    """A C-contiguous output whose data starts one element after a 64-byte boundary."""
    n = int(np.prod(shape))
    buf = np.empty(n + 64, dtype)
    start = (-buf.ctypes.data % 64) // buf.itemsize + 1
    return buf[start:start + n].reshape(shape)


ROW_AFFINES = [("layer_norm", a) for a in ("none", "weight", "bias", "both")] + [
    ("rms_norm", a) for a in ("none", "weight")
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("K", [64, 100, 300, 1024, 1031, 4097, 3 * 1024 + 5, 16500])
@pytest.mark.parametrize(("op", "affine"), ROW_AFFINES)
def test_rows_streaming_matches(streaming, dtype, K, op, affine):
    # float32 rows of 256 bytes and more stream straight from the registers, in four
    # loops (weight and bias present or not); others go through an L1 buffer
    rng = np.random.default_rng(K)
    x = (rng.standard_normal((5, K)) * 2 + 3).astype(dtype)
    w = rng.standard_normal(K).astype(dtype) if affine in ("weight", "both") else None
    b = rng.standard_normal(K).astype(dtype) if affine in ("bias", "both") else None
    kw = {"bias": b} if op == "layer_norm" else {}
    dy = rng.standard_normal((5, K)).astype(dtype)
    fwd, bwd = getattr(fn, op), getattr(fn, op + "_backward")

    def call():
        out = _out_off_line(x.shape, dtype)
        res = fwd(x, w, out=out, return_stats=True, **kw)
        assert res[0] is out
        grads = bwd(dy, x, *res[1:], w)
        return (out.copy(), *res[1:], *grads)

    plain, streamed = streaming(call)
    _same(plain, streamed)
    def f64(a):
        return None if a is None else a.astype(np.float64)

    expected = getattr(ref, op)(x.astype(np.float64), f64(w), **{k: f64(v) for k, v in kw.items()})
    assert_close(streamed[0], expected, dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_rows_streaming_in_place(streaming, dtype):
    rng = np.random.default_rng(1)
    x0 = rng.standard_normal((3, 2053)).astype(dtype)

    def call():
        x = x0.copy()
        fn.layer_norm(x, out=x)
        return (x,)

    plain, streamed = streaming(call)
    _same(plain, streamed)
    assert_close(streamed[0], ref.layer_norm(x0.astype(np.float64)), dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(("shape", "G"), [((2, 4, 40, 41), 2), ((3, 6, 1100), 3),
                                          ((2, 3, 2050), 3)])
def test_group_rows_streaming_matches(streaming, dtype, shape, G):
    rng = np.random.default_rng(shape[-1])
    x = rng.standard_normal(shape).astype(dtype)
    C = shape[1]
    w, b = rng.standard_normal(C).astype(dtype), rng.standard_normal(C).astype(dtype)

    def call():
        out = _out_off_line(shape, dtype)
        y, m, r = fn.group_norm(x, G, w, b, out=out, return_stats=True)
        yi = fn.instance_norm(x, w, b)
        return (y.copy(), m, r, yi)

    plain, streamed = streaming(call)
    _same(plain, streamed)
    x64 = x.astype(np.float64)
    assert_close(streamed[0], ref.group_norm(x64, G, w.astype(np.float64), b.astype(np.float64)),
                 dtype)
    assert_close(streamed[3], ref.instance_norm(x64, w.astype(np.float64), b.astype(np.float64)),
                 dtype)


@pytest.mark.parametrize(
    ("C", "B"),
    [(1, 1), (2, 1), (3, 1), (4, 1), (5, 1), (8, 1), (12, 1), (16, 1), (48, 1), (64, 1),
     (2, 2), (3, 4), (4, 4), (6, 8), (16, 4), (5, 3)],
)
def test_short_period_rows_any_output_offset(streaming, C, B):
    """Rows of C * B elements (C channels of B) whose coefficients repeat within a few
    registers are normalized with the coefficients held in registers, from the output's
    first aligned vector on: every start of the output within a cache line gives the
    same bits, streamed or not, and those of the reference."""
    rng = np.random.default_rng(C * 100 + B)
    rows = 1037  # an odd count: a head, whole periods and a part period at the end
    shape = (rows, C, B)
    x = (rng.standard_normal(shape) * 3 + 5).astype(np.float32)
    w, b = rng.standard_normal(C).astype(np.float32), rng.standard_normal(C).astype(np.float32)
    rm, rv = rng.standard_normal(C).astype(np.float32), rng.uniform(0.5, 2, C).astype(np.float32)

    def call():
        res = []
        for k in range(16):
            buf = np.empty(x.size + 32, np.float32)
            start = (-buf.ctypes.data % 64) // 4 + k
            out = buf[start:start + x.size].reshape(shape)
            fn.batch_norm(x, w, b, axis=1, out=out)
            oe = out.copy()
            fn.batch_norm(x, w, b, rm, rv, training=False, axis=1, out=out)
            res.append((oe, out.copy()))
        return res

    plain, streamed = streaming(call)
    for p, s in zip(plain, streamed, strict=True):
        _same(p, s)
        _same(p, plain[0])
    x64, w64, b64 = (a.astype(np.float64) for a in (x, w, b))
    assert_close(plain[0][0], ref.batch_norm(x64, w64, b64, axis=1), np.float32)
    expected = ref.batch_norm(x64, w64, b64, rm.astype(np.float64), rv.astype(np.float64),
                              training=False, axis=1)
    assert_close(plain[0][1], expected, np.float32)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(
    ("shape", "axis"),
    [
        ((3, 5, 7, 64), -1),
        ((2, 9, 11, 3), -1),
        ((2, 4, 5, 1100), -1),
        ((2, 6, 3, 70), 1),
        ((4, 33, 1, 17), 1),
    ],
)
def test_channels_streaming_matches(streaming, dtype, shape, axis):
    """batch_norm (training and eval) and channels-last group_norm, every layout the
    normalization pass has (channels-last rows, short rows, long rows, spans)."""
    rng = np.random.default_rng(shape[-1] + shape[1])
    x = (rng.standard_normal(shape) * 2 + 3).astype(dtype)
    C = shape[axis]
    w, b = rng.standard_normal(C).astype(dtype), rng.standard_normal(C).astype(dtype)
    rm, rv = rng.standard_normal(C).astype(dtype), rng.uniform(0.5, 2, C).astype(dtype)
    G = 1 if C % 2 else 2

    def call():
        out = _out_off_line(shape, dtype)
        y, m, r = fn.batch_norm(x, w, b, axis=axis, out=out, return_stats=True)
        ye = fn.batch_norm(x, w, b, rm, rv, training=False, axis=axis)
        yg = fn.group_norm(x, G, w, b, axis=axis)
        xi = x.copy()
        fn.batch_norm(xi, w, b, axis=axis, out=xi)  # in place: never streamed
        return (out.copy(), m, r, ye, yg, xi)

    plain, streamed = streaming(call)
    _same(plain, streamed)
    x64, w64, b64 = (a.astype(np.float64) for a in (x, w, b))
    expected = ref.batch_norm(x64, w64, b64, axis=axis)
    assert_close(streamed[0], expected, dtype)
    assert_close(streamed[5], expected, dtype)
    assert_close(
        streamed[3],
        ref.batch_norm(
            x64, w64, b64, rm.astype(np.float64), rv.astype(np.float64), training=False, axis=axis
        ),
        dtype,
    )
    assert_close(streamed[4], ref.group_norm(x64, G, w64, b64, axis=axis), dtype)


@pytest.mark.parametrize(("C", "B"), [(1, 1), (3, 1), (4, 1), (12, 1), (16, 1), (48, 1), (64, 1),
                                    (3, 4), (16, 4)])
def test_short_period_backward_with_values_float_cannot_do(streaming, C, B):
    """The backward's dx of rows whose coefficients repeat within a few registers, with dy
    values whose dx float arithmetic must not produce (near 1e35 and 1e-36): those
    vectors and what follows in their super-row are computed in double. Streamed or not
    (the vectors start at other places), the same bits, and those of the reference."""
    rng = np.random.default_rng(C * 10 + B)
    shape = (2053, C, B)
    x = (rng.standard_normal(shape) * 2 + 1).astype(np.float32)
    dy = rng.standard_normal(shape).astype(np.float32)
    flat = dy.reshape(-1)
    flat[rng.choice(flat.size, 5, replace=False)] = np.float32(1e35)
    flat[rng.choice(flat.size, 5, replace=False)] = np.float32(1e-36)
    w = rng.uniform(0.5, 2, C).astype(np.float32)
    _, mean, rstd = fn.batch_norm(x, w, None, axis=1, return_stats=True)

    def call():
        return (*fn.batch_norm_backward(dy, x, mean, rstd, w, axis=1),
                *fn.batch_norm_backward(dy, x, mean, rstd, w, axis=1, training=False))

    plain, streamed = streaming(call)
    _same(plain, streamed)
    d64 = [a.astype(np.float64) for a in (dy, x, mean, rstd, w)]
    for got, exp in zip(plain[:3], ref.batch_norm_backward(*d64, axis=1), strict=True):
        assert_close(got, exp, np.float32)
    for got, exp in zip(plain[3:], ref.batch_norm_backward(*d64, axis=1, training=False),
                        strict=True):
        assert_close(got, exp, np.float32)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(
    ("shape", "axis"),
    [
        ((3, 5, 7, 64), -1),
        ((2, 9, 11, 3), -1),
        ((2, 4, 5, 300), -1),
        ((2, 6, 3, 70), 1),
        ((2, 4, 1100), 1),
        ((4, 33, 1, 17), 1),
    ],
)
def test_channels_backward_streaming_matches(streaming, dtype, shape, axis):
    """The backward's dx (batch norm in training and eval mode, group and instance norm)
    streamed or not: the same bits, and the reference."""
    rng = np.random.default_rng(shape[-1] * 7 + shape[1])
    x = (rng.standard_normal(shape) * 2 + 3).astype(dtype)
    dy = rng.standard_normal(shape).astype(dtype)
    C = shape[axis]
    w = rng.uniform(0.5, 2, C).astype(dtype)
    G = 1 if C % 2 else 2
    _, bm, br = fn.batch_norm(x, w, axis=axis, return_stats=True)
    _, gm, gr = fn.group_norm(x, G, w, axis=axis, return_stats=True)
    _, im, ir = fn.instance_norm(x, w, axis=axis, return_stats=True)

    def call():
        return (
            *fn.batch_norm_backward(dy, x, bm, br, w, axis=axis),
            fn.batch_norm_backward(dy, x, bm, br, w, axis=axis, training=False)[0],
            *fn.group_norm_backward(dy, x, gm, gr, G, w, axis=axis),
            fn.instance_norm_backward(dy, x, im, ir, w, axis=axis)[0],
        )

    plain, streamed = streaming(call)
    _same(plain, streamed)
    def f64(a):
        return a.astype(np.float64)

    expected = ref.batch_norm_backward(f64(dy), f64(x), f64(bm), f64(br), f64(w), axis=axis)
    assert_close(streamed[0], expected[0], dtype)
    expected = ref.group_norm_backward(f64(dy), f64(x), f64(gm), f64(gr), G, f64(w), axis=axis)
    assert_close(streamed[4], expected[0], dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(7, 512), (5, 1031), (9, 20), (3, 4, 5)])
def test_weight_norm_backward_streaming_matches(streaming, dtype, shape):
    rng = np.random.default_rng(shape[-1])
    v = rng.standard_normal(shape).astype(dtype)
    dw = rng.standard_normal(shape).astype(dtype)
    g = rng.uniform(0.5, 2, (shape[0],) + (1,) * (len(shape) - 1)).astype(dtype)
    _, norm = fn.weight_norm(v, g, axis=0, return_stats=True)
    plain, streamed = streaming(lambda: fn.weight_norm_backward(dw, v, g, norm, axis=0))
    _same(plain, streamed)
    def f64(a):
        return a.astype(np.float64)

    expected = ref.weight_norm_backward(f64(dw), f64(v), f64(g), f64(norm), axis=0)
    assert_close(streamed[0], expected[0], dtype)


def _default_stream_bytes():
    """The documented default: the last-level cache's size (L3, else L2) where the system
    reports it, at most 32 MiB."""
    cap = 32 << 20
    if not sys.platform.startswith("linux"):
        return cap
    for name in ("SC_LEVEL3_CACHE_SIZE", "SC_LEVEL2_CACHE_SIZE"):
        try:
            size = os.sysconf(name)
        except (ValueError, OSError):
            size = 0
        if size > 0:
            return min(size, cap)
    return cap


def test_stream_threshold_round_trip():
    old = _kernels.get_stream_bytes()
    try:
        _kernels.set_stream_bytes(12345)
        assert _kernels.get_stream_bytes() == 12345
        _kernels.set_stream_bytes(-1)
        assert _kernels.get_stream_bytes() == _default_stream_bytes()
    finally:
        _kernels.set_stream_bytes(old)
