"""Process life: fork after OpenMP threads were used, and multiprocessing.

GNU libgomp's thread pool does not survive fork(): a parallel region in the child waits
forever for threads that only exist in the parent. fastnorm registers a fork handler and
runs every kernel serially in a forked child. Each scenario runs in a fresh interpreter
with a timeout, so a hang fails the test instead of stalling the suite.
"""

import subprocess
import sys
import textwrap

import pytest

import fastnorm as fn

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="fork() is POSIX")

TIMEOUT = 120

SETUP = """
import os, sys
import numpy as np
import fastnorm as fn
x = np.random.default_rng(0).standard_normal((256, 4096), dtype=np.float32)
img = np.random.default_rng(1).standard_normal((8, 3, 64, 64), dtype=np.float32)
"""


def run(body):
    code = SETUP + textwrap.dedent(body)
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=TIMEOUT, check=False)
    assert res.returncode == 0, res.stdout + res.stderr
    return res.stdout


@pytest.mark.skipif(not fn._runtime.config()["openmp"], reason="serial build: no thread pool")
def test_call_in_forked_child_after_parent_used_threads():
    out = run("""
        fn.set_num_threads(2)
        y0 = fn.layer_norm(x)               # the parent starts OpenMP threads
        b0 = fn.batch_norm(img)
        assert fn.get_num_threads() == 2
        pid = os.fork()
        if pid == 0:
            ok = (np.array_equal(fn.layer_norm(x), y0) and np.array_equal(fn.batch_norm(img), b0)
                  and fn.get_num_threads() == 1 and fn._kernels.in_forked_child())
            os._exit(0 if ok else 3)
        _, status = os.waitpid(pid, 0)
        print("child", os.waitstatus_to_exitcode(status))
        assert not fn._kernels.in_forked_child()
        assert fn.get_num_threads() == 2     # the parent keeps its threads
        assert np.array_equal(fn.layer_norm(x), y0)
    """)
    assert "child 0" in out


POOL = """
import multiprocessing as mp

def work(seed):
    import numpy as np
    import fastnorm as fn
    v = np.random.default_rng(seed).standard_normal((64, 2048))
    return fn.layer_norm(v).sum(), fn.batch_norm(v).sum()

if __name__ == "__main__":
    fn.set_num_threads(2)
    fn.layer_norm(x)
    expected = [work(s) for s in range(4)]
    with mp.get_context(sys.argv[1]).Pool(2) as pool:
        got = pool.map(work, range(4))
    assert got == expected, (got, expected)
    print("ok")
"""


@pytest.mark.parametrize("method", ["fork", "spawn", "forkserver"])
def test_multiprocessing_pool(tmp_path, method):
    script = tmp_path / "pool.py"
    script.write_text(SETUP + POOL)
    res = subprocess.run([sys.executable, str(script), method], capture_output=True, text=True,
                         timeout=TIMEOUT, check=False, cwd=tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "ok" in res.stdout
