"""Thread limits from outside fastnorm: threadpoolctl, OMP_NUM_THREADS, and how they combine
with fastnorm.set_num_threads.

The checks that a call really ran on one thread count the threads of the process
(/proc/self/task) around a large call in a fresh interpreter: the OpenMP runtime starts its
worker threads at the first parallel region and keeps them, so a call that stayed on the
calling thread leaves the count unchanged."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import fastnorm as fn
from fastnorm import _runtime

OPENMP = _runtime.config()["openmp"]
needs_openmp = pytest.mark.skipif(not OPENMP, reason="serial build: no OpenMP runtime")
needs_proc = pytest.mark.skipif(
    not os.path.isdir("/proc/self/task"), reason="needs /proc/self/task to count threads"
)

PRELUDE = """
import json, os, sys
import numpy as np
import fastnorm as fn

def n_threads():
    return len(os.listdir("/proc/self/task"))

x = np.random.default_rng(0).standard_normal((512, 4096), dtype=np.float32)
fn.layer_norm(x[:2, :8])  # loads everything a call needs, on one thread
"""


def run_python(body, env_extra=None, env_drop=("OMP_NUM_THREADS",)):
    env = dict(os.environ)
    for name in env_drop:
        env.pop(name, None)
    env.update(env_extra or {})
    code = PRELUDE + textwrap.dedent(body)
    res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, timeout=120, check=False)
    assert res.returncode == 0, res.stdout + res.stderr
    return json.loads(res.stdout.strip().splitlines()[-1])


@pytest.fixture
def threadpoolctl():
    return pytest.importorskip("threadpoolctl")


@pytest.fixture(autouse=True)
def _default_threads():
    fn.set_num_threads(0)
    yield
    fn.set_num_threads(0)


# --------------------------------------------------------------------------- linking


@needs_openmp
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads the ELF dynamic section")
def test_extension_links_openmp_runtime_dynamically(threadpoolctl):
    """The OpenMP runtime is a shared library the extension depends on (so that threadpoolctl
    finds and controls it), not code linked into the extension."""
    from fastnorm import _kernels

    libs = [
        info for info in threadpoolctl.threadpool_info() if info["user_api"] == "openmp"
    ]
    assert libs, "threadpoolctl finds no OpenMP runtime in the process"
    with open(_kernels.__file__, "rb") as f:
        blob = f.read()
    needed = {os.path.basename(info["filepath"]).split(".so")[0] for info in libs}
    assert any(name.encode() + b".so" in blob for name in needed), needed
    assert b"omp_get_max_threads" in blob  # an undefined symbol resolved at load time


# --------------------------------------------------------------------------- threadpoolctl


@needs_openmp
def test_threadpool_limits_one_sets_get_num_threads(threadpoolctl):
    before = fn.get_num_threads()
    with threadpoolctl.threadpool_limits(1):
        assert fn.get_num_threads() == 1
    assert fn.get_num_threads() == before
    with threadpoolctl.threadpool_limits(1, user_api="openmp"):
        assert fn.get_num_threads() == 1
    assert fn.get_num_threads() == before


@needs_openmp
def test_threadpool_limits_caps_set_num_threads(threadpoolctl):
    """Inside threadpool_limits(k), set_num_threads(n) gives min(n, k); outside, n."""
    fn.set_num_threads(3)
    assert fn.get_num_threads() == 3
    with threadpoolctl.threadpool_limits(1):
        assert fn.get_num_threads() == 1
        fn.set_num_threads(4)
        assert fn.get_num_threads() == 1
    assert fn.get_num_threads() == 4
    with threadpoolctl.threadpool_limits(2):
        fn.set_num_threads(1)
        assert fn.get_num_threads() == 1  # the smaller of the two
    fn.set_num_threads(0)


@needs_openmp
def test_threadpool_limits_results_identical(threadpoolctl, rng):
    x = rng.standard_normal((256, 4096)).astype(np.float32)
    fn.set_num_threads(2)
    expected = fn.layer_norm(x, return_stats=True)
    with threadpoolctl.threadpool_limits(1):
        got = fn.layer_norm(x, return_stats=True)
    for a, e in zip(got, expected, strict=True):
        np.testing.assert_array_equal(a, e)


@needs_openmp
@needs_proc
def test_threadpool_limits_one_runs_on_one_thread(threadpoolctl):
    out = run_python("""
        from threadpoolctl import threadpool_limits
        fn.set_num_threads(2)
        before = n_threads()
        with threadpool_limits(1):
            reported = fn.get_num_threads()
            for _ in range(3):
                fn.layer_norm(x)
                fn.batch_norm(x, axis=-1)
        limited = n_threads()
        fn.layer_norm(x)  # outside the block: 2 threads, so the runtime starts a worker
        print(json.dumps({"before": before, "limited": limited, "after": n_threads(),
                          "reported": reported}))
    """)
    assert out["reported"] == 1
    assert out["limited"] == out["before"], out
    assert out["after"] > out["before"], out  # the control: threads are started when allowed


# --------------------------------------------------------------------------- OMP_NUM_THREADS


@needs_openmp
@pytest.mark.parametrize("value", [1, 3])
def test_omp_num_threads_sets_default(value):
    out = run_python("""
        default = fn.get_num_threads()
        fn.set_num_threads(2)
        explicit = fn.get_num_threads()
        fn.set_num_threads(0)
        print(json.dumps({"default": default, "explicit": explicit,
                          "reset": fn.get_num_threads()}))
    """, {"OMP_NUM_THREADS": str(value)})
    # set_num_threads(n) is an explicit choice: it wins over the environment variable
    assert out == {"default": value, "explicit": 2, "reset": value}


@needs_openmp
@needs_proc
def test_omp_num_threads_one_runs_on_one_thread():
    out = run_python("""
        before = n_threads()
        for _ in range(3):
            fn.layer_norm(x)
            fn.group_norm(x.reshape(512, 8, 512), 4)
        print(json.dumps({"before": before, "after": n_threads(),
                          "reported": fn.get_num_threads()}))
    """, {"OMP_NUM_THREADS": "1"})
    assert out["reported"] == 1
    assert out["after"] == out["before"], out



# --------------------------------------------------------------------------- serial blocks
#
# cosine_norm runs its row normalizations serially when its matrix products dominate (the
# per-thread flag of _kernels.set_serial): OpenMP threads woken for them would spin while
# the BLAS threads of the product want the cores.


@needs_openmp
@needs_proc
def test_cosine_norm_large_normalizes_on_one_thread():
    out = run_python("""
        from fastnorm import _kernels
        fn.set_num_threads(2)
        a = np.random.default_rng(1).standard_normal((1024, 1024), dtype=np.float32)
        before = n_threads()
        y = fn.cosine_norm(a, a)
        dx, dw = fn.cosine_norm_backward(y, a, a, *fn.cosine_norm(a, a, return_stats=True)[1:])
        after_cosine = n_threads()
        serial_after = _kernels.get_serial()
        fn.l2_normalize(a, axis=1)  # the control: the same normalization, not in a block
        print(json.dumps({"before": before, "after_cosine": after_cosine,
                          "after": n_threads(), "serial_after": serial_after}))
    """, env_extra={"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "2"})
    assert out["after_cosine"] == out["before"], out
    assert out["serial_after"] is False
    assert out["after"] > out["before"], out


def test_serial_flag_is_per_thread_and_restored():
    import threading

    from fastnorm import _kernels
    from fastnorm._vectors import _serial_if

    seen = {}
    with _serial_if(True):
        assert _kernels.get_serial()
        t = threading.Thread(target=lambda: seen.update(other=_kernels.get_serial()))
        t.start()
        t.join()
        with _serial_if(False):  # nested: keeps the outer setting
            assert _kernels.get_serial()
    assert seen["other"] is False
    assert not _kernels.get_serial()
    with pytest.raises(RuntimeError), _serial_if(True):
        raise RuntimeError("inside")
    assert not _kernels.get_serial()


def test_cosine_norm_serial_normalizations_identical(rng):
    # the same bits whether the normalizations ran serially (large) or on threads
    from fastnorm import _kernels

    x = rng.standard_normal((600, 300)).astype(np.float32)
    w = rng.standard_normal((700, 300)).astype(np.float32)
    fn.set_num_threads(2)
    y2, xn2, wn2 = fn.cosine_norm(x, w, return_stats=True)
    g2 = fn.cosine_norm_backward(y2, x, w, xn2, wn2)
    _kernels.set_serial(True)
    try:
        y1, xn1, wn1 = fn.cosine_norm(x, w, return_stats=True)
        g1 = fn.cosine_norm_backward(y1, x, w, xn1, wn1)
    finally:
        _kernels.set_serial(False)
    for a, b in zip((y2, xn2, wn2, *g2), (y1, xn1, wn1, *g1), strict=True):
        assert np.array_equal(a, b)
