"""Shared fixtures and helpers: fixed-seed data, per-dtype tolerances, thread control and
non-contiguous layouts of the same values."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import numpy as np
import pytest

import fastnorm

SEED = 20240611


def pytest_addoption(parser):
    parser.addoption(
        "--fuzz-examples",
        type=int,
        default=None,
        metavar="N",
        help="examples per function in tests/test_fuzz.py (default 250)",
    )


# Tolerances for comparing a fastnorm result with the float64 reference computed from the same
# input values. ``atol`` is relative to the magnitude of the expected array (its largest finite
# absolute value, at least 1), so that sums over many rows (dweight, dbias) are judged on their
# own scale. float32 results are rounded once to float32 (about 6e-8) after double-precision
# arithmetic; 1e-5 leaves room for that and for float32 statistics, and is far below any error
# a wrong formula would give.
TOLERANCES = {
    np.dtype(np.float32): {"rtol": 1e-5, "atol": 1e-5},
    np.dtype(np.float64): {"rtol": 1e-12, "atol": 1e-12},
}

FLOAT_DTYPES = (np.float32, np.float64)


def tolerance(dtype):
    return TOLERANCES[np.dtype(dtype)]


def _scale(expected):
    finite = expected[np.isfinite(expected)]
    if finite.size == 0:
        return 1.0
    return max(1.0, float(np.abs(finite).max()))


def assert_close(actual, expected64, dtype, *, scale=None, factor=1.0, err_msg=""):
    """Assert that `actual` (a fastnorm result of `dtype`) matches the float64 reference.

    The result must have exactly `dtype` and the reference's shape; NaN and infinities must
    sit at the same places. `factor` widens both tolerances for quantities that amplify
    rounding (gradients of badly conditioned rows)."""
    assert actual is not None, err_msg
    actual = np.asarray(actual)
    expected = np.asarray(expected64, dtype=np.float64)
    assert actual.dtype == np.dtype(dtype), f"dtype {actual.dtype} != {dtype}. {err_msg}"
    assert actual.shape == expected.shape, f"shape {actual.shape} != {expected.shape}. {err_msg}"
    tol = tolerance(dtype)
    s = _scale(expected) if scale is None else scale
    np.testing.assert_allclose(
        actual.astype(np.float64),
        expected,
        rtol=tol["rtol"] * factor,
        atol=tol["atol"] * factor * s,
        equal_nan=True,
        err_msg=err_msg,
    )


def assert_identical(actual, expected, err_msg=""):
    """Bitwise equality (NaN equal to NaN) and the same dtype and shape."""
    if expected is None:
        assert actual is None, err_msg
        return
    assert actual is not None, err_msg
    assert actual.dtype == expected.dtype, f"dtype {actual.dtype} != {expected.dtype}. {err_msg}"
    assert actual.shape == expected.shape, f"shape {actual.shape} != {expected.shape}. {err_msg}"
    np.testing.assert_array_equal(actual, expected, err_msg=err_msg, strict=True)


@pytest.fixture
def rng():
    return np.random.default_rng(SEED)


@contextlib.contextmanager
def threads(n):
    """Run the block with fastnorm.set_num_threads(n), then return to the default."""
    fastnorm.set_num_threads(n)
    try:
        yield n
    finally:
        fastnorm.set_num_threads(0)


@pytest.fixture(name="threads")
def threads_fixture():
    """The `threads(n)` context manager; the default thread count is restored afterwards."""
    try:
        yield threads
    finally:
        fastnorm.set_num_threads(0)


def _stepped(x):
    big = np.zeros(tuple(2 * s + 1 for s in x.shape), dtype=x.dtype)
    view = big[tuple(slice(1, None, 2) for _ in x.shape)]
    view[...] = x
    return view


def _reversed(x):
    flipped = np.ascontiguousarray(x[tuple(slice(None, None, -1) for _ in x.shape)])
    return flipped[tuple(slice(None, None, -1) for _ in x.shape)]


def _transposed(x):
    return np.ascontiguousarray(x.T).T


def _offset(x):
    """Contiguous, one element past the start of its buffer (not SIMD-aligned)."""
    buf = np.zeros(x.size + 1, dtype=x.dtype)
    view = buf[1:].reshape(x.shape)
    view[...] = x
    return view


def _misaligned(x):
    """One byte past an aligned address: numpy's `aligned` flag is False."""
    raw = np.zeros(x.nbytes + x.itemsize, dtype=np.uint8)
    view = raw[1 : 1 + x.nbytes].view(x.dtype).reshape(x.shape)
    view[...] = x
    assert not view.flags.aligned or x.size == 0
    return view


def _byteswapped(x):
    return x.astype(x.dtype.newbyteorder("S"))


LAYOUTS = {
    "transposed": _transposed,
    "stepped": _stepped,
    "reversed": _reversed,
    "offset": _offset,
    "misaligned": _misaligned,
    "byteswapped": _byteswapped,
}


def layouts(x):
    """[(name, view)]: arrays equal in value to `x` (and with its shape) but laid out
    differently in memory: transposed storage, stepped slices, negative strides, an offset of
    one element, a byte-misaligned buffer and the opposite byte order."""
    x = np.asarray(x)
    out = []
    for name, make in LAYOUTS.items():
        v = make(x)
        assert v.shape == x.shape
        np.testing.assert_array_equal(v, x)
        out.append((name, v))
    return out


def broadcast_rows(row, shape):
    """A read-only stride-0 view repeating `row` (shape shape[1:]) along axis 0, and its
    contiguous copy."""
    view = np.broadcast_to(row, shape)
    assert view.strides[0] == 0
    return view, np.ascontiguousarray(view)


ROOT = Path(__file__).resolve().parents[1]
_FROM_SOURCE = ROOT in Path(fastnorm.__file__).resolve().parents


# The directory holding the fastnorm under test (site-packages, or the source tree in
# development): first on the path of the Python subprocesses the tests start.
PACKAGE_PARENT = str(Path(fastnorm.__file__).resolve().parents[1])


def subprocess_env(**extra):
    """os.environ with PACKAGE_PARENT first on PYTHONPATH, and ``extra``."""
    path = os.pathsep.join(p for p in (PACKAGE_PARENT, os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, "PYTHONPATH": path, **extra}


def pytest_sessionstart(session):
    """With FASTNORM_TEST_INSTALLED=1 (CI), refuse to run against the source tree: the run
    must import an installed fastnorm."""
    if os.environ.get("FASTNORM_TEST_INSTALLED") == "1" and _FROM_SOURCE:
        raise pytest.UsageError(
            f"FASTNORM_TEST_INSTALLED=1 but fastnorm was imported from the source tree "
            f"({fastnorm.__file__}); install it (pip install .) and run pytest, not "
            "python -m pytest"
        )


@pytest.fixture(autouse=True, scope="session")
def _cwd_outside_the_source_tree(tmp_path_factory):
    """Testing an installed fastnorm, run from a scratch directory: the subprocesses the
    tests start (``python -c``, mpirun) put their working directory first on sys.path,
    where the source tree's fastnorm/ (not built) would shadow the installed package."""
    if _FROM_SOURCE:
        yield
        return
    old = os.getcwd()
    os.chdir(tmp_path_factory.mktemp("cwd"))
    try:
        yield
    finally:
        os.chdir(old)


def pytest_report_header(config):
    """Which fastnorm the run tests (the source tree or an installed wheel)."""
    return f"fastnorm {fastnorm.__version__}: {fastnorm.__file__}"


def check_op_against_reference(op, rng, dtype, *, factor=2.0, affine=(True, False)):
    """Run ``op`` (a ``fastnorm._ops.Op``) forward and backward on each of its cases and
    variants, with and without the affine parameters, and compare every result (running
    statistics included) with ``fastnorm.reference`` on the same inputs in float64."""
    from fastnorm import _ops
    from fastnorm import reference as ref

    for shape, params in op.cases:
        for variant in op.variants:
            p = {**params, **variant}
            for with_affine in affine if op.optional else (True,):
                a = op.make_inputs(rng, shape, dtype, p, affine=with_affine)
                got = op.run(fastnorm, a, p)
                expected = op.run(ref, _ops.float64(a), p)
                labels = op.labels(a)
                assert len(got) == len(expected) == len(labels)
                for label, g, e in zip(labels, got, expected, strict=True):
                    msg = f"{op.name} {shape} {p} affine={with_affine}: {label}"
                    if e is None:
                        assert g is None, msg
                        continue
                    rdt = op.result_dtype(label, dtype)
                    if rdt.kind in "iu":  # counts: exact
                        assert g.dtype == rdt, msg
                        np.testing.assert_array_equal(g, e, err_msg=msg)
                        continue
                    if rdt != np.dtype(dtype):  # float64 moments of a float32 x: x's accuracy
                        assert g.dtype == rdt, msg
                        g = g.astype(dtype)
                    assert_close(g, e, dtype, factor=factor, err_msg=msg)
