"""Other builds than the default: FASTNORM_OPENMP=0 builds kernels without OpenMP, and
FN_NO_MULTI_ISA with FASTNORM_NATIVE=1 builds one set of kernels for this CPU alone; both
must still match the reference."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

CHECK = """
import json, sys
import numpy as np
import fastnorm
from fastnorm import _runtime, reference as ref

cfg = _runtime.config()
fastnorm.set_num_threads(4)
threads_after_set = fastnorm.get_num_threads()
fastnorm.set_num_threads(0)
rng = np.random.default_rng(5)
errors = {}
for dtype in (np.float32, np.float64):
    x = rng.standard_normal((300, 257)).astype(dtype)
    w = rng.standard_normal(257).astype(dtype)
    b = rng.standard_normal(257).astype(dtype)
    y, mean, rstd = fastnorm.layer_norm(x, w, b, return_stats=True)
    yr = ref.layer_norm(x.astype(np.float64), w, b)
    dy = rng.standard_normal(x.shape).astype(dtype)
    dx = fastnorm.layer_norm_backward(dy, x, mean, rstd, w)[0]
    dxr = ref.layer_norm_backward(dy, x, mean, rstd, w)[0]
    xb = rng.standard_normal((8, 3, 64, 64)).astype(dtype)
    rm, rv = np.zeros(3, dtype), np.ones(3, dtype)
    rm_ref, rv_ref = np.zeros(3), np.ones(3)
    yb = fastnorm.batch_norm(xb, None, None, rm, rv)
    ybr = ref.batch_norm(xb.astype(np.float64), None, None, rm_ref, rv_ref)
    errors[np.dtype(dtype).name] = {
        "layer_norm": float(np.abs(y - yr).max()),
        "layer_norm_backward": float(np.abs(dx - dxr).max() / np.abs(dxr).max()),
        "batch_norm": float(np.abs(yb - ybr).max()),
        "running_var": float(np.abs(rv - rv_ref).max()),
    }
print(json.dumps({"file": fastnorm.__file__, "openmp": cfg["openmp"], "build": cfg["build"],
                  "threads": threads_after_set, "errors": errors}))
"""


def _build_and_check(tmp_path, env):
    """Build a copy of the sources with `env` in place; run CHECK with it; CHECK's report,
    after asserting that the copy was the one imported and that its errors are small."""
    src = tmp_path / "src"
    src.mkdir()
    shutil.copytree(ROOT / "csrc", src / "csrc")
    shutil.copytree(
        ROOT / "fastnorm",
        src / "fastnorm",
        ignore=shutil.ignore_patterns("*.so", "*.pyd", "_kernels.c", "__pycache__"),
    )
    for name in ("setup.py", "pyproject.toml", "README.md"):
        if (ROOT / name).exists():
            shutil.copy2(ROOT / name, src / name)
    env = dict(os.environ, **env)
    env.pop("FASTNORM_SIMD", None)
    build = subprocess.run(
        [sys.executable, "setup.py", "build_ext", "--inplace"],
        cwd=src,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    assert list((src / "fastnorm").glob("_kernels*.so")) or list(
        (src / "fastnorm").glob("_kernels*.pyd")
    )

    code = f"import sys; sys.path.insert(0, {str(src)!r})\n" + CHECK
    res = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert res.returncode == 0, res.stderr
    info = json.loads(res.stdout.strip().splitlines()[-1])
    assert Path(info["file"]).resolve().is_relative_to(src.resolve()), info["file"]
    for dtype, tol in (("float32", 1e-5), ("float64", 1e-12)):
        for name, err in info["errors"][dtype].items():
            assert err < tol, f"{name} {dtype}: error {err}"
    return build, info


@pytest.mark.slow
def test_build_without_openmp(tmp_path):
    build, info = _build_and_check(tmp_path, {"FASTNORM_OPENMP": "0"})
    assert "OpenMP disabled by FASTNORM_OPENMP=0" in build.stderr
    assert re.search(r"-fopenmp(?!-simd)", build.stdout + build.stderr) is None
    assert info["openmp"] is False
    assert "no OpenMP" in info["build"]
    assert info["threads"] == 1


@pytest.mark.slow
@pytest.mark.skipif(sys.platform != "linux", reason="GCC/clang flags")
def test_build_one_isa_native(tmp_path):
    """-DFN_NO_MULTI_ISA -march=native: the baseline kernels compiled for this CPU, with
    whatever intrinsics its SIMD level allows (they were once left undeclared there)."""
    cflags = (os.environ.get("CFLAGS", "") + " -DFN_NO_MULTI_ISA").strip()
    build, info = _build_and_check(tmp_path, {"FASTNORM_NATIVE": "1", "CFLAGS": cflags})
    out = build.stdout + build.stderr
    assert "-march=native" in out and "-DFN_NO_MULTI_ISA" in out
    assert "kernels_avx512" in out or "kernels_baseline" in out
