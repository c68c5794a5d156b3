"""No memory growth over many calls (EDGE_CASES 28).

Every public function, forward and backward, is called about 20 000 times in all on small
inputs (with and without the optional parameters, statistics and ``out=``, a non-contiguous
input, and calls that raise TypeError, ValueError or AxisError), plus a few calls large enough
to run on several threads with scratch buffers. After a warm-up, the process's resident set
size (/proc/self/statm) and the memory traced by tracemalloc must stay flat.
"""

from __future__ import annotations

import gc
import os
import tracemalloc

import numpy as np
import pytest
from numpy.exceptions import AxisError

import fastnorm as fn

ROUNDS = 400
WARMUP_ROUNDS = 60
SLACK_BYTES = 1 << 20
CONTRACT_ERRORS = (TypeError, ValueError, AxisError)


def rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _raises(func, *args, **kwargs):
    def call():
        try:
            func(*args, **kwargs)
        except CONTRACT_ERRORS:
            return
        raise AssertionError(f"{func.__name__} did not raise")

    return call


def make_calls(rng, *, big=False):
    """Zero-argument callables covering the public API (and its error paths)."""
    f32, f64 = np.float32, np.float64
    shape = (64, 1024) if big else (4, 7)
    x = rng.standard_normal(shape).astype(f32)
    x64 = x.astype(f64)
    xt = np.asfortranarray(x64)
    dy = rng.standard_normal(shape).astype(f32)
    K = shape[1]
    w, b = rng.standard_normal(K).astype(f32), rng.standard_normal(K).astype(f32)
    out = np.empty_like(x)

    _, mean, rstd = fn.layer_norm(x, w, b, return_stats=True)
    _, rrstd = fn.rms_norm(x, w, return_stats=True)

    img = rng.standard_normal((2, 6, 3, 5) if not big else (8, 32, 16, 16)).astype(f64)
    dimg = rng.standard_normal(img.shape)
    C = img.shape[1]
    cw, cb = rng.standard_normal(C), rng.standard_normal(C)
    rm, rv = np.zeros(C), np.ones(C)
    img_out = np.empty_like(img)
    _, bm, br = fn.batch_norm(img, cw, cb, return_stats=True)
    _, gm, gr = fn.group_norm(img, 2, cw, cb, return_stats=True)
    _, im, ir = fn.instance_norm(img, cw, cb, return_stats=True)
    y, norm = fn.l2_normalize(x, return_stats=True)
    v = rng.standard_normal(shape)
    g = rng.standard_normal(shape[0])
    _, vnorm = fn.weight_norm(v, g, return_stats=True)
    xs = rng.standard_normal((5, 9) if not big else (256, 256))
    ws = rng.standard_normal((3, 9) if not big else (128, 256))
    _, xn, wn = fn.cosine_norm(xs, ws, return_stats=True)
    dcos = rng.standard_normal((xs.shape[0], ws.shape[0]))

    calls = [
        lambda: fn.layer_norm(x),
        lambda: fn.layer_norm(x, w, b, out=out, return_stats=True),
        lambda: fn.layer_norm(xt, axis=0),
        lambda: fn.layer_norm_backward(dy, x, mean, rstd, w),
        lambda: fn.layer_norm_backward(dy, x, mean, rstd),
        lambda: fn.rms_norm(x, w, return_stats=True),
        lambda: fn.rms_norm(x64[:, ::-1]),
        lambda: fn.rms_norm_backward(dy, x, rrstd, w),
        lambda: fn.batch_norm(img, cw, cb, rm, rv, return_stats=True),
        lambda: fn.batch_norm(img, running_mean=rm, running_var=rv, training=False),
        lambda: fn.batch_norm(np.moveaxis(img, 1, -1), cw, cb, axis=-1),
        lambda: fn.batch_norm_backward(dimg, img, bm, br, cw),
        lambda: fn.batch_norm_backward(dimg, img, bm, br, training=False),
        lambda: fn.group_norm(img, 2, cw, cb, out=img_out, return_stats=True),
        lambda: fn.group_norm_backward(dimg, img, gm, gr, 2, cw),
        lambda: fn.instance_norm(img, cw, cb, return_stats=True),
        lambda: fn.instance_norm(img, axis=-1),
        lambda: fn.instance_norm_backward(dimg, img, im, ir, cw),
        lambda: fn.l2_normalize(x, return_stats=True),
        lambda: fn.l2_normalize(x64, axis=0),
        lambda: fn.l2_normalize_backward(dy, y, norm),
        lambda: fn.weight_norm(v, g, return_stats=True),
        lambda: fn.weight_norm_backward(v, v, g, vnorm),
        lambda: fn.cosine_norm(xs, ws, return_stats=True),
        lambda: fn.cosine_norm_backward(dcos, xs, ws, xn, wn),
    ]
    if big:
        return calls
    ro = np.empty_like(x)
    ro.flags.writeable = False
    calls += [
        _raises(fn.layer_norm, x.astype(np.int32)),
        _raises(fn.layer_norm, x, w[:-1]),
        _raises(fn.layer_norm, x, axis=5),
        _raises(fn.layer_norm, x, out=ro),
        _raises(fn.layer_norm, x, eps=-1.0),
        _raises(fn.layer_norm_backward, dy, x, mean[:-1], rstd),
        _raises(fn.rms_norm, x.astype(np.complex64)),
        _raises(fn.rms_norm_backward, dy, x, rrstd, w.astype(bool)),
        _raises(fn.batch_norm, img, momentum=2.0),
        _raises(fn.batch_norm, img, running_mean=rm[:-1], running_var=rv),
        _raises(fn.batch_norm, img[:1, :, :1, :1]),
        _raises(fn.batch_norm_backward, dimg, img, bm, br, axis=7),
        _raises(fn.group_norm, img, 5),
        _raises(fn.group_norm, img, 0),
        _raises(fn.group_norm_backward, dimg, img, gm, gr, 3),
        _raises(fn.instance_norm, img[0, 0, 0]),
        _raises(fn.instance_norm_backward, dimg, img, im, ir, axis=0),
        _raises(fn.l2_normalize, x, eps=np.nan),
        _raises(fn.l2_normalize_backward, dy, y, norm[:-1]),
        _raises(fn.weight_norm, v, g[:-1]),
        _raises(fn.weight_norm_backward, v, v, g, vnorm, axis=2),
        _raises(fn.cosine_norm, xs, ws[:, :-1]),
        _raises(fn.cosine_norm_backward, dcos, xs, ws, xn, wn[:-1]),
        _raises(fn.layer_norm, [[1.0, 2.0], [3.0]]),
        _raises(fn.layer_norm, np.array([object()])),
    ]
    return calls


def run(calls, rounds):
    for _ in range(rounds):
        for call in calls:
            call()


def measure():
    gc.collect()
    return rss_bytes(), tracemalloc.get_traced_memory()[0]


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs /proc/self/statm")
def test_repeated_calls_do_not_grow_memory():
    rng = np.random.default_rng(5)
    small = make_calls(rng)
    big = make_calls(rng, big=True)
    assert len(small) * ROUNDS >= 20_000
    tracemalloc.start()
    try:
        run(small, WARMUP_ROUNDS)
        run(big, 2)
        rss0, traced0 = measure()
        for _ in range(4):
            run(small, ROUNDS // 4)
            run(big, 2)
        rss1, traced1 = measure()
    finally:
        tracemalloc.stop()
    assert rss1 - rss0 < SLACK_BYTES, f"RSS grew by {(rss1 - rss0) / 2**20:.2f} MiB"
    assert traced1 - traced0 < SLACK_BYTES, (
        f"traced memory grew by {(traced1 - traced0) / 2**20:.2f} MiB"
    )
