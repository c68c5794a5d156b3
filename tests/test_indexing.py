"""64-bit indexing (EDGE_CASES 5): inputs with more than 2**31 elements.

Every kernel takes its sizes as ``int64_t`` (csrc/fastnorm.h, and the Cython bindings in
fastnorm/_kernels.pyx declare them ``int64_t``) and computes every offset in ``int64_t``: the
rows family ``i * K + j``, the channels and vectors families ``((n * A + a) * C + c) * B + b``
and the tile bounds derived from them; loop counters over elements are ``int64_t`` too. The
Python layer computes sizes with Python integers (``math.prod``), which do not overflow.

An offset above 2**31 needs a dense buffer of more than 2**31 elements: the kernels always
read C-contiguous memory (a strided or stride-0 view is copied first), so no view can reach
large offsets with little memory. The always-run tests therefore check what is cheap:

* every public function accepts shapes whose element count or a single axis exceeds 2**31 as
  long as one axis is empty (the size arithmetic on the way to the kernels), and
* the kernel bindings take sizes above 2**31 without truncation or OverflowError.

The real case (about 2**31 + 2**16 float32 values, 8.6 GB, normalized in place with
layer_norm and rms_norm, per row of 2**15 values and as a single row of all of them) runs only
with ``FASTNORM_BIG_TESTS=1``: it needs about 9 GB of memory and about 10 s.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import fastnorm as fn
from fastnorm import _kernels

BIG = 2**31 + 1


def test_empty_inputs_with_an_axis_above_int32():
    f32 = np.float32
    x = np.empty((0, BIG), f32)
    for op in (fn.layer_norm, fn.rms_norm, fn.l2_normalize):
        res = op(x, return_stats=True)
        assert res[0].shape == x.shape and res[0].dtype == f32
        assert all(s.shape == (0,) for s in res[1:])
    y, norm = fn.l2_normalize(x, return_stats=True)
    assert fn.l2_normalize_backward(x, y, norm).shape == x.shape

    img = np.empty((0, 4, BIG), f32)
    y, mean, rstd = fn.batch_norm(img, return_stats=True)
    assert y.shape == img.shape and mean.shape == rstd.shape == (4,)
    assert np.isnan(mean).all() and np.isnan(rstd).all()
    dx, dw, db = fn.batch_norm_backward(img, img, mean, rstd, np.ones(4, f32))
    assert dx.shape == img.shape and (dw == 0).all() and (db == 0).all()
    for G, fwd, bwd in (
        (2, lambda a, **k: fn.group_norm(a, 2, **k), fn.group_norm_backward),
        (4, fn.instance_norm, None),
    ):
        y, mean, rstd = fwd(img, return_stats=True)
        assert y.shape == img.shape and mean.shape == rstd.shape == (0, G)
        grads = (
            bwd(img, img, mean, rstd, G, np.ones(4, f32))
            if bwd
            else fn.instance_norm_backward(img, img, mean, rstd, np.ones(4, f32))
        )
        assert grads[0].shape == img.shape and (grads[1] == 0).all() and (grads[2] == 0).all()

    w, norm = fn.weight_norm(x, np.empty(0, f32), return_stats=True)
    assert w.shape == x.shape and norm.shape == (0,)
    dv, dg = fn.weight_norm_backward(x, x, np.empty(0, f32), norm)
    assert dv.shape == x.shape and dg.shape == (0,)

    y, xn, wn = fn.cosine_norm(x, x, return_stats=True)
    assert y.shape == (0, 0) and xn.shape == wn.shape == (0,)
    dx, dw = fn.cosine_norm_backward(y, x, x, xn, wn)
    assert dx.shape == dw.shape == x.shape


def test_kernel_bindings_take_64_bit_sizes():
    """Zero rows of 2**40 values: no work, but an int (32-bit) size would raise."""
    e = np.empty(0, np.float32)
    huge = 2**40
    _kernels.layer_norm_fwd(e, None, None, e, None, None, 0, huge, 1e-5)
    _kernels.rms_norm_fwd(e, None, e, None, 0, huge, 1e-6)
    _kernels.layer_norm_bwd(e, e, e, e, None, e, None, None, 0, huge)
    _kernels.rms_norm_bwd(e, e, e, None, e, None, 0, huge)
    _kernels.l2_normalize_fwd(e, e, None, 0, 1, 1, huge, 1e-12)
    _kernels.l2_normalize_bwd(e, e, e, e, 0, 1, 1, huge, 1e-12)
    with pytest.raises(OverflowError):
        _kernels.rms_norm_fwd(e, None, e, None, 0, 2**64, 1e-6)


@pytest.mark.slow
@pytest.mark.skipif(
    os.environ.get("FASTNORM_BIG_TESTS") != "1",
    reason="needs ~9 GB of memory and ~10 s: set FASTNORM_BIG_TESTS=1 to run",
)
def test_more_than_2_31_elements_in_place():
    M, K = 2**16 + 2, 2**15  # M * K = 2**31 + 2**16: rows from 2**16 on start past 2**31
    assert M * K > 2**31
    p = ((np.arange(K) % 13) - 6) / 4.0  # exact in float32
    s = 1.0 + np.arange(M) % 5  # row scales
    x = np.empty((M, K), np.float32)
    s32, p32 = s[:, None].astype(np.float32), p.astype(np.float32)

    def fill(i0):  # first touch of 8.6 GB, faster on several threads
        np.multiply(s32[i0 : i0 + 4096], p32, out=x[i0 : i0 + 4096])

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(fill, range(0, M, 4096)))
    mp, vp = p.mean(), p.var()
    eps = 1e-5

    # one row per 2**15 values: offsets i * K beyond 2**31
    y, mean, rstd = fn.layer_norm(x, out=x, eps=eps, return_stats=True)
    assert y is x
    np.testing.assert_allclose(mean, s * mp, rtol=1e-6, atol=1e-6)
    rs = 1.0 / np.sqrt(s * s * vp + eps)
    np.testing.assert_allclose(rstd, rs, rtol=1e-5)
    rng = np.random.default_rng(0)
    rows = np.concatenate([[0, 1, 2**16 - 1, 2**16, M - 1], rng.integers(0, M, 16)])
    for i in rows:
        np.testing.assert_allclose(x[i], (p - mp) * s[i] * rs[i], rtol=1e-5, atol=1e-5)

    # one row of all M * K values: element offsets beyond 2**31 within the row
    flat = x.reshape(1, M * K)
    y, rstd1 = fn.rms_norm(flat, out=flat, eps=eps, return_stats=True)
    assert y is flat
    ms = np.mean(s * s * vp / (s * s * vp + eps))  # mean square of the layer_norm output
    r1 = 1.0 / np.sqrt(ms + eps)
    np.testing.assert_allclose(rstd1, [r1], rtol=1e-5)
    cols = np.concatenate([[0, K - 1, 2**31 - 1, 2**31, M * K - 1], rng.integers(0, M * K, 16)])
    i, j = np.divmod(cols, K)
    expected = (p[j] - mp) * s[i] * rs[i] * r1
    np.testing.assert_allclose(flat[0, cols], expected, rtol=1e-5, atol=1e-5)
