"""No memory growth over many calls (EDGE_CASES 28).

Every op of fastnorm._ops, forward and backward, is called on its first two cases (tens of
thousands of calls in all: with and without the optional parameters, statistics and
``out=``, on a Fortran-ordered x), with calls that raise TypeError, ValueError or AxisError,
plus a few calls large enough to run on several threads with scratch buffers. After a
warm-up, the process's resident set size (/proc/self/statm) and the memory traced by
tracemalloc must stay flat.
"""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import tracemalloc

import numpy as np
import pytest
from conftest import ROOT, subprocess_env
from numpy.exceptions import AxisError

import fastnorm as fn
from fastnorm import _ops

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


BIG = {"rows": (64, 1024), "channels": (8, 32, 16, 16), "vectors": (64, 1024)}
BIG_COSINE = (256, 128, 256)


def op_calls(rng, op, shape, params):
    """Zero-argument calls of one op of fastnorm._ops: forward and backward, with and without
    the optional parameters, statistics and out=, and on a Fortran-ordered x."""
    calls = []
    for affine in (True, False) if op.optional else (True,):
        a = op.make_inputs(rng, shape, np.float32 if affine else np.float64, params,
                           affine=affine)  # fmt: skip
        saved = op.call_forward(fn, a, params, stats=True)
        saved = saved if isinstance(saved, tuple) else (saved,)
        fortran = {**a, "x": np.asfortranarray(a["x"])}
        calls.append(lambda a=a: op.call_forward(fn, a, params))
        calls.append(lambda a=fortran: op.call_forward(fn, a, params, stats=True))
        if op.forward_out:
            out = np.empty_like(a["x"])
            calls.append(lambda a=a, out=out: op.call_forward(fn, a, params, out=out, stats=True))
        if op.backward is not None:
            calls.append(lambda a=a, s=saved: op.call_backward(fn, a, s, params))
            if op.backward_out:
                dx = np.empty_like(a["x"])
                calls.append(lambda a=a, s=saved, dx=dx: op.call_backward(fn, a, s, params,
                                                                          out=dx))  # fmt: skip
    return calls


def make_calls(rng, *, big=False):
    """Zero-argument callables covering the public API (and its error paths)."""
    calls = []
    for op in _ops.OPS:
        if big:
            shape = BIG_COSINE if op.name == "cosine_norm" else BIG[op.family]
            cases = [(shape, {})]
        else:
            cases = op.cases[:2]
        for shape, params in cases:
            for variant in op.variants:
                calls += op_calls(rng, op, shape, {**params, **variant})
    if big:
        return calls
    calls += error_calls(rng)
    return calls


def error_calls(rng):
    """Calls that raise TypeError, ValueError or AxisError."""
    f32 = np.float32
    x = rng.standard_normal((4, 7)).astype(f32)
    dy = rng.standard_normal(x.shape).astype(f32)
    w = rng.standard_normal(7).astype(f32)
    _, mean, rstd = fn.layer_norm(x, w, return_stats=True)
    _, rrstd = fn.rms_norm(x, w, return_stats=True)
    img = rng.standard_normal((2, 6, 3, 5))
    dimg = rng.standard_normal(img.shape)
    rm, rv = np.zeros(6), np.ones(6)
    _, bm, br = fn.batch_norm(img, return_stats=True)
    _, gm, gr = fn.group_norm(img, 2, return_stats=True)
    _, im, ir = fn.instance_norm(img, return_stats=True)
    y, norm = fn.l2_normalize(x, return_stats=True)
    v = rng.standard_normal((4, 7))
    g = rng.standard_normal(4)
    _, vnorm = fn.weight_norm(v, g, return_stats=True)
    xs, ws = rng.standard_normal((5, 9)), rng.standard_normal((3, 9))
    _, xn, wn = fn.cosine_norm(xs, ws, return_stats=True)
    dcos = rng.standard_normal((5, 3))
    ro = np.empty_like(x)
    ro.flags.writeable = False
    return [
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


def test_memory_checker_smoke_script_passes():
    """tools/valgrind_smoke.py (what the sanitizer and valgrind runs execute) covers every op
    of the registry and agrees with the reference, on the active SIMD level."""
    script = ROOT / "tools" / "valgrind_smoke.py"
    if not script.exists():
        pytest.skip("tools/ is not beside the tests")
    run = subprocess.run([sys.executable, str(script), "--quick"], env=subprocess_env(),
                         capture_output=True, text=True, timeout=300)  # fmt: skip
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    assert "every result matches the reference" in run.stdout
