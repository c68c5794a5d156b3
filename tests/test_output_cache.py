"""The output cache (fastnorm.set_output_cache): the memory of freed outputs of 1 MiB and
more is kept, within its limit, and handed out again for an output of the same size; it
never touches a live array and never changes a result."""

import os
import subprocess
import sys
import threading

import numpy as np
import pytest
from conftest import assert_identical

import fastnorm as fn

MIB = 1 << 20
handler_name = np._core.multiarray.get_handler_name if hasattr(np, "_core") else None


@pytest.fixture(autouse=True)
def fresh_cache():
    """Each test starts with an empty cache of the default size and leaves it so."""
    limit = fn.get_output_cache()[0]
    fn.set_output_cache(0)
    fn.set_output_cache(64 * MIB)
    yield
    fn.set_output_cache(0)
    fn.set_output_cache(limit)


def x_of(nbytes, seed=0):
    return np.random.default_rng(seed).standard_normal((nbytes // 4096, 1024)).astype(np.float32)


def test_freed_output_is_reused():
    x = x_of(4 * MIB)
    y = fn.layer_norm(x)
    if handler_name is not None:
        assert handler_name(y) == "fastnorm_output_cache"
    assert y.flags.owndata and y.flags.writeable
    want, p = y.copy(), y.ctypes.data
    assert fn.get_output_cache() == (64 * MIB, 0)
    del y
    assert fn.get_output_cache() == (64 * MIB, 4 * MIB)
    y = fn.layer_norm(x)  # the fast path's allocation
    assert y.ctypes.data == p
    assert fn.get_output_cache()[1] == 0
    assert_identical(y, want)
    del y
    y, mean, rstd = fn.layer_norm(x, return_stats=True)
    del y
    dx = fn.layer_norm_backward(x, x, mean, rstd)[0]
    assert dx.ctypes.data == p  # another op, same size: the same memory


def test_python_path_outputs_are_cached():
    x = np.random.default_rng(1).standard_normal((16, 64, 32, 32)).astype(np.float32)
    y = fn.batch_norm(x)  # 4 MiB through the Python path (new_output)
    p = y.ctypes.data
    del y
    assert fn.get_output_cache()[1] == x.nbytes
    y, mean, rstd = fn.batch_norm(x, return_stats=True)
    assert y.ctypes.data == p
    dy = np.ones_like(x)
    dx = fn.batch_norm_backward(dy, x, mean, rstd)[0]
    assert dx.ctypes.data != p and y.ctypes.data == p  # y is alive: never handed out


def test_small_outputs_bypass_the_cache():
    x = x_of(MIB // 2)
    y = fn.layer_norm(x)
    if handler_name is not None:
        assert handler_name(y) != "fastnorm_output_cache"
    del y
    assert fn.get_output_cache()[1] == 0


def test_limits_hold():
    x = x_of(2 * MIB)
    ys = [fn.rms_norm(x) for _ in range(12)]
    del ys
    limit, held = fn.get_output_cache()
    assert held == 8 * 2 * MIB  # eight blocks at most
    fn.set_output_cache(5 * MIB)
    assert fn.get_output_cache() == (5 * MIB, 4 * MIB)  # the oldest given back first
    y = fn.rms_norm(x_of(6 * MIB))  # larger than the limit: not kept when freed
    del y
    assert fn.get_output_cache()[1] == 4 * MIB
    fn.set_output_cache(0)
    assert fn.get_output_cache() == (0, 0)
    y = fn.rms_norm(x)
    if handler_name is not None:
        assert handler_name(y) != "fastnorm_output_cache"


def test_results_do_not_depend_on_the_cache():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((8, 32, 32, 64)).astype(np.float32)
    dy = rng.standard_normal(x.shape).astype(np.float32)
    w = rng.uniform(0.5, 1.5, 64).astype(np.float32)

    def step():
        y, mean, rstd = fn.batch_norm(x, w, w, axis=-1, return_stats=True)
        dx, dw, db = fn.batch_norm_backward(dy, x, mean, rstd, w, axis=-1)
        g = fn.group_norm(x, 8, w, w, axis=-1)
        return y.copy(), dx.copy(), dw, db, g.copy()

    with_cache = [step() for _ in range(3)]  # the later steps run in reused memory
    fn.set_output_cache(0)
    without = step()
    for res in with_cache:
        for a, b in zip(res, without, strict=True):
            assert_identical(a, b)


def test_resize_and_live_arrays():
    x = x_of(2 * MIB)
    y = fn.layer_norm(x)
    keep = fn.layer_norm(x)
    want = keep.copy()
    y.resize((y.shape[0] * 2, y.shape[1]), refcheck=False)  # realloc through the handler
    y[...] = 1.0
    del y
    for _ in range(4):
        z = fn.layer_norm(x)
        z[...] = 7.0
        del z
    assert_identical(keep, want)


def test_threads():
    x = x_of(2 * MIB)
    want = fn.layer_norm(x)
    errors = []

    def work():
        try:
            for _ in range(30):
                y = fn.layer_norm(x)
                if not np.array_equal(y, want):
                    errors.append("wrong result")
                del y
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(repr(e))

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert fn.get_output_cache()[1] <= 8 * 2 * MIB


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_fork_child_uses_its_copy():
    x = x_of(2 * MIB)
    want = fn.layer_norm(x)
    y = fn.layer_norm(x)
    del y  # the parent's cache holds a block when it forks
    pid = os.fork()
    if pid == 0:  # child: any failure shows as its exit status
        ok = True
        try:
            for _ in range(5):
                ok &= bool(np.array_equal(fn.layer_norm(x), want))
            fn.set_output_cache(0)
        except BaseException:  # noqa: BLE001
            ok = False
        os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert fn.get_output_cache()[1] == 2 * MIB  # the child's changes stay in the child


def test_arguments():
    with pytest.raises(ValueError):
        fn.set_output_cache(-1)
    with pytest.raises(TypeError):
        fn.set_output_cache("64M")
    with pytest.raises(TypeError):
        fn.set_output_cache(1.5)


@pytest.mark.parametrize(("value", "limit", "warns"), [("0", 0, False), ("1048576", MIB, False),
                                                        ("lots", 64 * MIB, True)])
def test_environment(value, limit, warns):
    code = ("import warnings, fastnorm\n"
            "print(fastnorm.get_output_cache()[0])\n")
    env = dict(os.environ, FASTNORM_OUTPUT_CACHE=value)
    res = subprocess.run([sys.executable, "-W", "always", "-c", code], env=env,
                         capture_output=True, text=True, timeout=120, check=False)
    assert res.returncode == 0, res.stderr
    assert int(res.stdout.split()[-1]) == limit
    assert ("FASTNORM_OUTPUT_CACHE" in res.stderr) == warns
