"""Fresh large outputs are faulted in by the calling thread before a multi-threaded kernel
writes them (fastnorm._validate.new_output, _kernels.prefault): nothing in them, and
nothing around them, may change, and the results must be those without it."""

import numpy as np
import pytest

import fastnorm as fn
from fastnorm import _kernels, _validate


@pytest.mark.parametrize("nbytes", [0, 1, 100, 4095, 4096, 4097, 3 * 4096 + 5, 1 << 20])
@pytest.mark.parametrize("offset", [0, 8, 4000])
def test_prefault_keeps_contents(nbytes, offset):
    buf = np.random.default_rng(nbytes + offset).integers(0, 256, nbytes + 2 * 8192, np.uint8)
    before = buf.copy()
    _kernels.prefault(buf[8192 + offset - offset % 8 : 8192 + nbytes])
    assert np.array_equal(buf, before)


def test_prefault_fresh_pages_read_zero_or_as_written():
    a = np.empty(3 << 20, np.uint8)
    a[::4096] = 7
    _kernels.prefault(a)
    assert np.all(a[::4096] == 7)
    b = np.zeros(3 << 20, np.uint8)
    _kernels.prefault(b)
    assert not b.any()


@pytest.fixture
def prefault_everything(monkeypatch):
    """Every fresh output prefaulted (two threads); yields the list of the arrays it was
    asked to prefault."""
    monkeypatch.setattr(_validate, "PREFAULT_BYTES", 0)
    seen, original = [], _kernels.prefault

    def counting(a):
        seen.append(a)
        original(a)

    monkeypatch.setattr(_validate._kernels, "prefault", counting)
    old = fn.get_num_threads()
    fn.set_num_threads(2)
    yield seen
    fn.set_num_threads(old)


def test_outputs_identical_with_prefault(prefault_everything):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((64, 300))
    dy = rng.standard_normal((64, 300))
    w = rng.standard_normal(300)
    xc = rng.standard_normal((4, 6, 5, 7)).astype(np.float32)
    calls = [
        lambda: fn.layer_norm(x, w, None, axis=-1, eps=1e-5),
        lambda: fn.layer_norm_backward(dy, x, *fn.layer_norm(x, return_stats=True)[1:], w),
        lambda: fn.rms_norm_backward(dy, x, fn.rms_norm(x, return_stats=True)[1], w),
        lambda: fn.batch_norm(xc, axis=1, momentum=0.1),
        lambda: fn.group_norm(xc, 3, axis=1),
        lambda: fn.batch_norm_backward(xc, xc, *fn.batch_norm(xc, return_stats=True)[1:]),
        lambda: fn.l2_normalize(x, axis=-1),
        lambda: fn.weight_norm(x, w[:64], axis=0),
    ]
    with_prefault = [c() for c in calls]
    assert len(prefault_everything) >= 4  # the Python path's outputs (not the fast path's)
    _validate.PREFAULT_BYTES = 1 << 62
    without = [c() for c in calls]
    for a, b in zip(with_prefault, without, strict=True):
        for u, v in zip(*(t if isinstance(t, tuple) else (t,) for t in (a, b)), strict=True):
            assert np.array_equal(u, v)
