"""Fixtures for the pytest-benchmark suite: cached fixed-seed inputs and pinned threads."""

import functools

import pytest

import fastnorm
from fastnorm import _bench


@functools.cache
def _cached_inputs(make, shape, dtype):
    return _bench.make_inputs(make, shape, dtype)


def _inputs(op, shape, dtype):
    return _cached_inputs(op.inputs, shape, dtype)


@functools.cache
def _expected(op, shape, dtype):
    return _bench.to_numpy(_bench.implementation(op, "reference", _inputs(op, shape, dtype))())


@pytest.fixture(scope="module", params=_bench.IMPLS)
def impl(request):
    """The implementation timed: "fastnorm", "reference" or "torch" (skipped without torch).

    Module-scoped so that the skip happens before the function-scoped benchmark fixture is
    set up: an unused benchmark fixture warns, and warnings are errors in this project.
    """
    if request.param == "torch":
        pytest.importorskip("torch")
    return request.param


@pytest.fixture
def inputs():
    """``inputs(op, shape, dtype)``: read-only arrays, the same for every implementation."""
    return _inputs


@pytest.fixture
def expected():
    """``expected(op, shape, dtype)``: fastnorm.reference's first output, to check results."""
    return _expected


@pytest.fixture(scope="session", autouse=True)
def one_thread():
    """Every benchmark runs fastnorm and torch on one thread, and NumPy's BLAS (cosine_norm's
    matrix product) too where threadpoolctl is installed."""
    torch = _bench.torch_or_none()
    if torch is not None:
        torch_threads = torch.get_num_threads()
        torch.set_num_threads(1)
    fastnorm.set_num_threads(1)
    blas = _bench.blas_threads(1)
    yield
    if blas is not None:
        blas.restore_original_limits()
    fastnorm.set_num_threads(0)
    if torch is not None:
        torch.set_num_threads(torch_threads)
