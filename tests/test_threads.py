"""Runtime behaviour: thread-count determinism, thread controls, show_config, SIMD levels,
FASTNORM_SIMD, GIL release and concurrent calls from Python threads."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from conftest import FLOAT_DTYPES, assert_identical, check_op_against_reference, threads

import fastnorm as fn
from fastnorm import _kernels, _ops, _runtime

F32, F64 = np.dtype(np.float32), np.dtype(np.float64)
THREAD_COUNTS = (1, 2, 3)


def normal(rng, shape, dtype, loc=0.0, scale=1.0):
    return (loc + scale * rng.standard_normal(shape)).astype(dtype)


# --------------------------------------------------------------------------- every op, big
#
# Each op of fastnorm._ops on shapes above the threading threshold, forward and backward
# (batch norm in both modes), affine: every array it produces, running statistics included,
# must be the same bits for any thread count.

BIG_SHAPES = {
    "layer_norm": [((4, 65536), {}), ((300, 257), {}), ((2000, 33), {}),
                   ((16, 64, 65), {"axis": -2})],
    "rms_norm": [((4, 65536), {}), ((1500, 47), {})],
    "add_layer_norm": [((4, 65536), {}), ((300, 257), {"broadcast": True}), ((2000, 33), {})],
    "add_rms_norm": [((4, 65536), {}), ((1500, 47), {})],
    "batch_norm": [((8, 3, 64, 64), {}), ((8, 64, 64, 3), {"axis": -1}),
                   ((6, 96, 96, 4), {"axis": -1}), ((512, 129), {}), ((2, 3, 40000), {}),
                   ((64, 40, 33), {"axis": -1})],
    "group_norm": [((8, 6, 64, 64), {"num_groups": 3}),
                   ((8, 32, 32, 6), {"num_groups": 2, "axis": -1}),
                   ((2, 4, 20000), {"num_groups": 2})],
    "instance_norm": [((8, 3, 64, 64), {}), ((8, 64, 64, 3), {"axis": -1}),
                      ((3, 70000, 2), {})],
    "iter_norm": [((8, 16, 40, 40), {"group_size": 16}), ((8, 24, 24, 6), {"axis": -1}),
                  ((3, 10, 20000), {"group_size": 4})],
    "batch_moments": [((8, 3, 64, 64), {}), ((8, 64, 64, 3), {"axis": -1})],
    "merge_moments": [((8, 3, 64, 64), {})],
    "l2_normalize": [((300, 257), {"axis": 0}), ((64, 1030), {})],
    "weight_norm": [((300, 257), {}), ((40000,), {})],
    "cosine_norm": [((256, 200, 129), {})],
}  # fmt: skip


def test_big_shapes_cover_every_op():
    assert set(BIG_SHAPES) == {op.name for op in _ops.OPS}


def _big_cases():
    for op in _ops.OPS:
        for shape, params in BIG_SHAPES[op.name]:
            for variant in op.variants:
                p = {**params, **variant}
                yield pytest.param(op.name, shape, p, id=f"{op.name}-{shape}-{p}")


def big_runner(name, shape, params, rng, dtype):
    op = _ops.get(name)
    a = op.make_inputs(rng, shape, dtype, params)
    return lambda: op.run(fn, a, params)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize(("name", "shape", "params"), list(_big_cases()))
def test_bitwise_identical_for_any_thread_count(name, shape, params, dtype):
    case = f"{name} {shape} {params}"
    run = big_runner(name, shape, params, np.random.default_rng(7), dtype)
    with threads(1):
        expected = run()
    for n in THREAD_COUNTS[1:]:
        with threads(n):
            assert fn.get_num_threads() == (n if _runtime.config()["openmp"] else 1)
            got = run()
        assert len(got) == len(expected)
        for i, (g, e) in enumerate(zip(got, expected, strict=True)):
            assert_identical(g, e, f"{case}: output {i} with {n} threads")


def test_repeated_threaded_calls_identical(rng):
    x = normal(rng, (64, 4096), F32)
    with threads(2):
        first = fn.layer_norm(x, return_stats=True)
        for _ in range(5):
            for a, b in zip(fn.layer_norm(x, return_stats=True), first, strict=True):
                assert_identical(a, b)


# --------------------------------------------------------------------------- thread controls


def test_set_get_num_threads_round_trip():
    openmp = _runtime.config()["openmp"]
    fn.set_num_threads(0)
    default = fn.get_num_threads()
    assert default >= 1
    try:
        for n in (1, 2, 3, 7):
            fn.set_num_threads(n)
            assert fn.get_num_threads() == (n if openmp else 1)
        fn.set_num_threads(np.int64(2))
        assert fn.get_num_threads() == (2 if openmp else 1)
        fn.set_num_threads(0)
        assert fn.get_num_threads() == default
    finally:
        fn.set_num_threads(0)


def test_threads_context_manager_restores_default():
    fn.set_num_threads(0)
    default = fn.get_num_threads()
    with threads(3):
        pass
    assert fn.get_num_threads() == default
    with pytest.raises(RuntimeError), threads(2):
        raise RuntimeError
    assert fn.get_num_threads() == default


@pytest.mark.parametrize("n", [-1, -2, -(2**40)])
def test_set_num_threads_negative_value_error(n):
    with threads(2):
        with pytest.raises(ValueError, match="n must be"):
            fn.set_num_threads(n)
        assert fn.get_num_threads() == (2 if _runtime.config()["openmp"] else 1)


@pytest.mark.parametrize("n", [1.5, 2.0, "2", None, [2], np.float64(2)])
def test_set_num_threads_non_integer_type_error(n):
    with threads(2):
        with pytest.raises(TypeError, match="integer"):
            fn.set_num_threads(n)
        assert fn.get_num_threads() == (2 if _runtime.config()["openmp"] else 1)


def test_show_config(capsys):
    fn.show_config()
    text = capsys.readouterr().out
    lines = text.splitlines()
    assert lines[0] == f"fastnorm {fn.__version__}"
    cfg = _runtime.config()
    openmp = [ln for ln in lines if ln.strip().startswith("OpenMP:")]
    simd = [ln for ln in lines if ln.strip().startswith("SIMD:")]
    threads_line = [ln for ln in lines if ln.strip().startswith("threads:")]
    assert len(openmp) == 1 and len(simd) == 1 and len(threads_line) == 1
    assert ("on" if cfg["openmp"] else "off") in openmp[0]
    assert cfg["simd"] in simd[0] and cfg["simd_supported"] in simd[0]
    assert str(cfg["num_threads"]) in threads_line[0]
    buf = io.StringIO()
    fn.show_config(file=buf)
    assert buf.getvalue() == text
    assert capsys.readouterr().out == ""


def test_config_contents():
    cfg = _runtime.config()
    assert cfg["version"] == fn.__version__
    assert isinstance(cfg["openmp"], bool)
    assert cfg["simd"] in _runtime.SIMD_LEVELS
    assert cfg["simd_supported"] == _kernels.isa_supported()
    assert cfg["num_threads"] == fn.get_num_threads()
    assert isinstance(cfg["build"], str) and cfg["build"]


# --------------------------------------------------------------------------- SIMD levels


def supported_levels():
    levels = _runtime.SIMD_LEVELS
    return levels[: levels.index(_kernels.isa_supported()) + 1]


@pytest.fixture
def restore_simd():
    original = _runtime._simd_level()
    try:
        yield original
    finally:
        _runtime._simd_level(original)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("level", supported_levels())
def test_every_supported_simd_level_matches_reference(restore_simd, level, dtype):
    assert _runtime._simd_level(level) == level
    assert _runtime.config()["simd"] == level
    rng = np.random.default_rng(11)
    for op in _ops.OPS:
        check_op_against_reference(op, rng, dtype)


def test_simd_level_unknown_name_value_error(restore_simd):
    with pytest.raises(ValueError, match="unknown SIMD level"):
        _runtime._simd_level("sse9")
    assert _runtime._simd_level() == restore_simd


def test_simd_level_unsupported_value_error(restore_simd):
    levels = _runtime.SIMD_LEVELS
    best = levels.index(_kernels.isa_supported())
    if best == len(levels) - 1:
        pytest.skip("this CPU supports every SIMD level")
    with pytest.raises(ValueError, match="not supported"):
        _runtime._simd_level(levels[best + 1])
    assert _runtime._simd_level() == restore_simd


def test_default_simd_level_is_best_supported():
    if os.environ.get("FASTNORM_SIMD"):
        pytest.skip("FASTNORM_SIMD is set in this environment")
    assert _runtime._simd_level() == _kernels.isa_supported()


PROBE = """
import json, warnings
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    import fastnorm
    from fastnorm import _kernels, _ops, _runtime
print(json.dumps({
    "simd": _runtime.config()["simd"],
    "supported": _kernels.isa_supported(),
    "file": fastnorm.__file__,
    "warnings": [[w.category.__name__, str(w.message)] for w in caught],
}))
"""


def probe(simd_env):
    env = dict(os.environ)
    env.pop("FASTNORM_SIMD", None)
    if simd_env is not None:
        env["FASTNORM_SIMD"] = simd_env
    res = subprocess.run(
        [sys.executable, "-c", PROBE],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert res.returncode == 0, res.stderr
    info = json.loads(res.stdout.strip().splitlines()[-1])
    assert os.path.samefile(os.path.dirname(info["file"]), os.path.dirname(fn.__file__))
    return info


def test_fastnorm_simd_env_selects_baseline():
    info = probe("baseline")
    assert info["simd"] == "baseline"
    assert info["warnings"] == []


def test_fastnorm_simd_env_is_case_and_space_insensitive():
    best = _kernels.isa_supported()
    info = probe(f"  {best.upper()} ")
    assert info["simd"] == best
    assert info["warnings"] == []


def test_fastnorm_simd_env_unset_selects_best():
    info = probe(None)
    assert info["simd"] == info["supported"]
    assert info["warnings"] == []


@pytest.mark.parametrize("value", ["sse9", "avx-512", "fastest"])
def test_fastnorm_simd_env_invalid_warns_and_falls_back(value):
    info = probe(value)
    assert info["simd"] == info["supported"]
    assert len(info["warnings"]) == 1
    category, message = info["warnings"][0]
    assert category == "RuntimeWarning"
    assert "FASTNORM_SIMD" in message and value in message


def test_fastnorm_simd_env_unsupported_level_warns_and_falls_back():
    levels = _runtime.SIMD_LEVELS
    best = levels.index(_kernels.isa_supported())
    if best == len(levels) - 1:
        pytest.skip("this CPU supports every SIMD level")
    info = probe(levels[best + 1])
    assert info["simd"] == info["supported"]
    assert [w[0] for w in info["warnings"]] == ["RuntimeWarning"]


# --------------------------------------------------------------------------- GIL and Python threads


def test_gil_released_during_kernel():
    """A background thread that needs the GIL only for a moment between sleeps makes progress
    while the main thread is inside layer_norm calls.

    The switch interval is raised far above the test's duration, so the main thread never
    gives the GIL up on its own while it runs Python code: the background thread can only
    advance while the main thread waits on something that released the GIL, here the kernel.
    A counter that moves across the calls therefore shows the release; one that stays at zero
    shows a kernel holding the GIL."""
    x = np.random.default_rng(3).standard_normal((64, 65536)).astype(F32)
    out = np.empty_like(x)
    fn.layer_norm(x, out=out)
    state = {"count": 0, "stop": False}
    started = threading.Event()

    def background():
        started.set()
        while not state["stop"]:
            state["count"] += 1
            time.sleep(0.0002)

    old_interval = sys.getswitchinterval()
    t = threading.Thread(target=background, daemon=True)
    progress = 0
    try:
        with threads(1):
            t.start()
            assert started.wait(10)
            sys.setswitchinterval(30.0)
            deadline = time.perf_counter() + 0.25
            calls = 0
            while time.perf_counter() < deadline or calls < 5:
                before = state["count"]
                fn.layer_norm(x, out=out)
                progress += state["count"] - before
                calls += 1
    finally:
        sys.setswitchinterval(old_interval)
        state["stop"] = True
        t.join(10)
    assert progress > 0, f"no progress of another thread during {calls} layer_norm calls"


def test_many_python_threads_match_serial():
    n_threads = 8
    rngs = [np.random.default_rng(100 + i) for i in range(n_threads)]
    jobs = []
    for rng in rngs:
        x = normal(rng, (64, 1031), F32, 1.0, 2.0)
        w = normal(rng, (1031,), F32)
        b = normal(rng, (1031,), F32)
        dy = normal(rng, x.shape, F32)
        xb = normal(rng, (16, 5, 40, 41), F64)
        jobs.append((x, w, b, dy, xb))

    def work(job):
        x, w, b, dy, xb = job
        y, mean, rstd = fn.layer_norm(x, w, b, return_stats=True)
        grads = fn.layer_norm_backward(dy, x, mean, rstd, w)
        rm, rv = np.zeros(5), np.ones(5)
        yb, mb, rb = fn.batch_norm(xb, None, None, rm, rv, return_stats=True)
        return (y, mean, rstd, *grads, yb, mb, rb, rm, rv)

    serial = [work(job) for job in jobs]
    barrier = threading.Barrier(n_threads)

    def concurrent(job):
        barrier.wait(30)
        return [work(job) for _ in range(4)]

    with ThreadPoolExecutor(n_threads) as pool:
        results = list(pool.map(concurrent, jobs))
    for i, (reps, expected) in enumerate(zip(results, serial, strict=True)):
        for rep in reps:
            for a, e in zip(rep, expected, strict=True):
                assert_identical(a, e, f"thread {i}")
