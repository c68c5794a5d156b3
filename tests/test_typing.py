"""The type stubs: `python -m mypy.stubtest fastnorm` (the stubs agree with the runtime
package: names, parameters, defaults), and mypy over code that uses the API (the stubs
accept correct calls, infer the tuple returned with return_stats=True, reject wrong ones).

mypy is optional (the extra "typing"); these tests skip without it."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import fastnorm

pytest.importorskip("mypy")

HERE = Path(__file__).resolve().parent
PACKAGE_DIR = Path(fastnorm.__file__).resolve().parent
TIMEOUT = 300


def mypy_env():
    """Point mypy at the fastnorm being tested; an installed one (site-packages) is found
    through its py.typed marker, a source tree through MYPYPATH."""
    env = dict(os.environ)
    root = PACKAGE_DIR.parent
    if root.name not in ("site-packages", "dist-packages"):
        env["MYPYPATH"] = str(root)
    return env


def run(args, cwd):
    res = subprocess.run([sys.executable, "-m", *args], cwd=cwd, env=mypy_env(),
                         capture_output=True, text=True, timeout=TIMEOUT, check=False)
    return res.returncode, res.stdout + res.stderr


def test_stub_files_are_shipped():
    for name in ("py.typed", "__init__.pyi", "_kernels.pyi", "nn.pyi", "reference.pyi"):
        assert (PACKAGE_DIR / name).is_file(), name


def test_stubtest(tmp_path):
    rc, out = run(["mypy.stubtest", "fastnorm", "--mypy-config-file",
                   str(HERE / "stubtest.ini"), "--allowlist",
                   str(HERE / "stubtest_allowlist.txt"), "--ignore-unused-allowlist"], tmp_path)
    assert rc == 0, out
    assert "Success" in out


GOOD = """
import numpy as np
import fastnorm
from fastnorm import nn

x = np.ones((4, 8), np.float32)
y: np.ndarray = fastnorm.layer_norm(x)
y, mean, rstd = fastnorm.layer_norm(x, return_stats=True)
dx, dw, db = fastnorm.layer_norm_backward(np.ones_like(y), x, mean, rstd)
z, r = fastnorm.rms_norm(x, axis=-1, return_stats=True)
w, norm = fastnorm.weight_norm(x, np.ones(4), return_stats=True)
c, xn, wn = fastnorm.cosine_norm(x, x, return_stats=True)
dv, dg = fastnorm.weight_norm_backward(w, x, np.ones(4), norm)
fastnorm.set_num_threads(2)
n: int = fastnorm.get_num_threads()
layer = nn.BatchNorm(8, axis=-1)
out = layer.forward(x, training=False)
for name, p, g in layer.params():
    p -= 0.1 * g
"""

BAD = """
import numpy as np
import fastnorm
from fastnorm import nn

x = np.ones((4, 8), np.float32)
fastnorm.layer_norm(x, axsi=1)
fastnorm.group_norm(x)
y, mean = fastnorm.layer_norm(x, return_stats=True)
s: str = fastnorm.get_num_threads()
nn.GroupNorm(2, 8, momentum=0.1)
"""


def test_mypy_accepts_correct_use_and_rejects_wrong_use(tmp_path):
    (tmp_path / "good.py").write_text(textwrap.dedent(GOOD))
    (tmp_path / "bad.py").write_text(textwrap.dedent(BAD))
    rc, out = run(["mypy", "--no-incremental", "--follow-imports=silent",
                   "--config-file", str(HERE / "stubtest.ini"), "good.py", "bad.py"], tmp_path)
    errors = [line for line in out.splitlines() if ": error:" in line]
    assert not [e for e in errors if e.startswith("good.py")], out
    bad_lines = sorted({int(e.split(":")[1]) for e in errors if e.startswith("bad.py")})
    # one error per wrong line of BAD (lines 7 to 11 of the dedented text)
    assert bad_lines == [7, 8, 9, 10, 11], out
    assert rc == 1
