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
