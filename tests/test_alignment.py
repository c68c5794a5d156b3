"""Where an input starts within a cache line does not change a result's bits.

NumPy's large arrays start 16 bytes past a 64-byte boundary. Some kernels read such
inputs with aligned vector loads and shift the values into place (AVX-512), others with
ordinary loads; either way each result must be the same, bit for bit, whatever the
offsets of the inputs, and match the float64 reference.
"""

import numpy as np
import pytest
from conftest import assert_close, assert_identical

import fastnorm as fn
from fastnorm import reference as ref


def _at(a, k):
    """A C-contiguous copy of `a` whose data starts k elements past a 64-byte boundary."""
    buf = np.empty(a.size + 64 // a.itemsize + 16, a.dtype)
    start = (-buf.ctypes.data % 64) // a.itemsize + k
    out = buf[start:start + a.size].reshape(a.shape)
    out[...] = a
    assert out.ctypes.data % 64 == (k * a.itemsize) % 64
    return out


# (N, H, W, C): C = 64 and 192 are read as whole slices of 64 columns, 80 as one slice of
# 64 and one vector of 16, 16 as single vectors; 40 leaves 8 columns to the scalar tail.
# At least 256 rows (N * H * W), so that the column sums take their float path.
CHANNELS_LAST = [(4, 10, 10, 64), (2, 12, 12, 192), (3, 10, 10, 80), (4, 10, 10, 16),
                 (3, 10, 10, 40)]


@pytest.mark.parametrize("shape", CHANNELS_LAST)
@pytest.mark.parametrize("op", ["batch_norm", "group_norm"])
def test_channels_last_backward_any_input_offset(shape, op):
    rng = np.random.default_rng(shape[-1] * 7 + len(op))
    x = (rng.standard_normal(shape) * 2 + 3).astype(np.float32)
    dy = rng.standard_normal(shape).astype(np.float32)
    C = shape[-1]
    w = rng.uniform(0.5, 1.5, C).astype(np.float32)
    G = 8 if C % 8 == 0 else 1
    if op == "batch_norm":
        _, mean, rstd = fn.batch_norm(x, w, None, axis=-1, return_stats=True)

        def backward(dy_, x_):
            return fn.batch_norm_backward(dy_, x_, mean, rstd, w, axis=-1)
    else:
        _, mean, rstd = fn.group_norm(x, G, w, None, axis=-1, return_stats=True)

        def backward(dy_, x_):
            return fn.group_norm_backward(dy_, x_, mean, rstd, G, w, axis=-1)

    first = backward(dy, x)
    for k in range(16):
        # x and dy at different offsets from each other as well
        res = backward(_at(dy, (5 * k + 3) % 16), _at(x, k))
        for got, want in zip(res, first, strict=True):
            assert_identical(got, want, err_msg=f"x at {k}, dy at {(5 * k + 3) % 16}")

    x64, dy64, w64, m64, r64 = (a.astype(np.float64) for a in (x, dy, w, mean, rstd))
    if op == "batch_norm":
        expected = ref.batch_norm_backward(dy64, x64, m64, r64, w64, axis=-1)
    else:
        expected = ref.group_norm_backward(dy64, x64, m64, r64, G, w64, axis=-1)
    for got, want in zip(first, expected, strict=True):
        assert_close(got, want, np.float32)


# (M, K): rows of whole blocks of 256, rows with a part block and a tail, and long rows
# (the backward's column-chunked path, from 256 KB a row)
ROWS = [(40, 1024), (9, 4101), (3, 66000)]


@pytest.mark.parametrize("shape", ROWS)
@pytest.mark.parametrize("op", ["layer_norm", "rms_norm"])
def test_rows_backward_any_input_offset(shape, op):
    rng = np.random.default_rng(shape[1] + len(op))
    x = (rng.standard_normal(shape) * 2 + 3).astype(np.float32)
    dy = rng.standard_normal(shape).astype(np.float32)
    w = rng.uniform(0.5, 1.5, shape[1]).astype(np.float32)
    if op == "layer_norm":
        _, mean, rstd = fn.layer_norm(x, w, None, return_stats=True)

        def backward(dy_, x_):
            return fn.layer_norm_backward(dy_, x_, mean, rstd, w)
    else:
        _, rstd = fn.rms_norm(x, w, return_stats=True)

        def backward(dy_, x_):
            return fn.rms_norm_backward(dy_, x_, rstd, w)

    first = backward(dy, x)
    for k in range(16):
        res = backward(_at(dy, (3 * k + 1) % 16), _at(x, k))
        for got, want in zip(res, first, strict=True):
            assert_identical(got, want, err_msg=f"x at {k}, dy at {(3 * k + 1) % 16}")

    x64, dy64, w64, r64 = (a.astype(np.float64) for a in (x, dy, w, rstd))
    if op == "layer_norm":
        expected = ref.layer_norm_backward(dy64, x64, mean.astype(np.float64), r64, w64)
    else:
        expected = ref.rms_norm_backward(dy64, x64, r64, w64)
    for got, want in zip(first, expected, strict=True):
        assert_close(got, want, np.float32)


# (rows, row length): whole blocks of 256, a part block and a tail, and rows long enough
# that each slice's sums ask for the next slice
VECTORS = [(40, 1024), (9, 1000), (6, 70001)]


@pytest.mark.parametrize("shape", VECTORS)
def test_weight_norm_any_input_offset(shape):
    rng = np.random.default_rng(shape[1])
    v = rng.standard_normal(shape).astype(np.float32)
    g = rng.uniform(0.5, 2.0, (shape[0], 1)).astype(np.float32)
    dw = rng.standard_normal(shape).astype(np.float32)
    w, norm = fn.weight_norm(v, g, axis=0, return_stats=True)
    grads = fn.weight_norm_backward(dw, v, g, norm, axis=0)
    for k in range(16):
        vk = _at(v, k)
        wk, nk = fn.weight_norm(vk, g, axis=0, return_stats=True)
        assert_identical(wk, w, err_msg=f"v at {k}")
        assert_identical(nk, norm, err_msg=f"v at {k}")
        for got, want in zip(fn.weight_norm_backward(_at(dw, (7 * k + 2) % 16), vk, g, norm,
                                                     axis=0), grads, strict=True):
            assert_identical(got, want, err_msg=f"v at {k}, dw at {(7 * k + 2) % 16}")
    v64, g64, dw64 = (a.astype(np.float64) for a in (v, g, dw))
    assert_close(w, ref.weight_norm(v64, g64, axis=0), np.float32)
    expected = ref.weight_norm_backward(dw64, v64, g64, norm.astype(np.float64), axis=0)
    for got, want in zip(grads, expected, strict=True):
        assert_close(got, want, np.float32)


@pytest.mark.parametrize("shape", VECTORS)
def test_l2_normalize_any_input_and_output_offset(shape):
    rng = np.random.default_rng(shape[1] + 1)
    x = rng.standard_normal(shape).astype(np.float32)
    dy = rng.standard_normal(shape).astype(np.float32)
    y, norm = fn.l2_normalize(x, return_stats=True)
    dx = fn.l2_normalize_backward(dy, y, norm)
    for k in range(16):
        out = _at(np.zeros_like(x), (k + 9) % 16)
        yk, nk = fn.l2_normalize(_at(x, k), out=out, return_stats=True)
        assert yk is out
        assert_identical(yk, y, err_msg=f"x at {k}, out at {(k + 9) % 16}")
        assert_identical(nk, norm, err_msg=f"x at {k}")
        dxk = fn.l2_normalize_backward(_at(dy, (5 * k + 4) % 16), _at(y, k), norm)
        assert_identical(dxk, dx, err_msg=f"y at {k}, dy at {(5 * k + 4) % 16}")
    x64 = x.astype(np.float64)
    assert_close(y, ref.l2_normalize(x64), np.float32)
    assert_close(dx, ref.l2_normalize_backward(dy.astype(np.float64), y.astype(np.float64),
                                               norm.astype(np.float64)), np.float32)
