"""Vectors family: weight_norm (axis 0, one norm per row of v), l2_normalize (axis -1) and
cosine_norm (x and w both N x D, y N x N), forward and forward+backward, in float32 on
1024x1024 and 4096x512.

Parametrised over op × shape × implementation. Benchmarks are grouped by op and shape, so each
group compares fastnorm, the NumPy reference and PyTorch on the same input; the cosine_norm
groups also hold ``matmul``, the op's matrix products alone through NumPy's BLAS on rows
normalized beforehand (the forward's x̂ ŵᵀ; forward+backward adds dy ŵ and dyᵀ x̂), the floor
of cosine_norm's time. The float64 reference of cosine_norm takes about 0.6 s a call on 4096x512
(three times that forward+backward), so it is benchmarked only up to
``op.reference_max_size`` elements (1024x1024); fastnorm and torch are still checked against
it on every case. Without torch its cases are skipped before any fixture is set up.

With ``--benchmark-disable`` each benchmark calls its function on a stand-in input of at most
64 rows with the row length kept, which keeps that smoke run to a few seconds.
"""

import importlib.util

import pytest

import fastnorm
from fastnorm import _bench

OPS = _bench.select(["weight_norm", "l2_normalize", "cosine_norm"], ["fwd", "fwd+bwd"])
NO_TORCH = pytest.mark.skipif(
    importlib.util.find_spec("torch") is None, reason="torch is not installed"
)


def _impls(op, shape):
    for impl in _bench.IMPLS:
        if impl != "reference" or op.times_reference(shape):
            yield impl
    if op.matmul is not None:
        yield "matmul"


def _params():
    for op in OPS:
        for shape, dtype in op.cases:
            for impl in _impls(op, shape):
                yield pytest.param(
                    op,
                    shape,
                    dtype,
                    impl,
                    marks=NO_TORCH if impl == "torch" else (),
                    id="-".join((*op.label.split(), _bench.shape_id(shape, "-"), dtype, impl)),
                )


def _smoke_shape(shape):
    n, d = shape
    return (min(n, 64), d)


_last_expected = {}


def _expected(op, shape, dtype, arrays):
    """The reference's first output for the case. Only the latest case's is kept: the
    implementations of a case run one after another, and cosine_norm's float64 y on 4096x512
    takes 128 MB."""
    key = (op, shape, dtype)
    if key not in _last_expected:
        _last_expected.clear()
        fn = _bench.implementation(op, "reference", arrays)
        _last_expected[key] = _bench.to_numpy(fn())
    return _last_expected[key]


@pytest.mark.parametrize(("op", "shape", "dtype", "impl"), list(_params()))
def test_vectors(benchmark, inputs, op, shape, dtype, impl):
    benchmark.group = f"{op.label} {_bench.shape_id(shape)} {dtype}"
    benchmark.extra_info.update(impl=impl, op=op.name, kind=op.kind)
    if benchmark.disabled:
        shape = _smoke_shape(shape)
    arrays = inputs(op, shape, dtype)
    if impl == "matmul":
        fn = op.matmul(arrays)
    else:
        fn = _bench.implementation(op, impl, arrays, _bench.torch_or_none())
    fn()  # one-off lazy set-up (torch's first autograd call takes ~0.2 s) stays out of timing
    result = benchmark(fn)
    if impl == "matmul":
        # the first product, x̂ ŵᵀ, is y before clipping; y itself is checked in the fwd cases
        assert _bench.check(result, fastnorm.cosine_norm(arrays["x"], arrays["w"]), dtype)
    else:
        assert _bench.check(result, _expected(op, shape, dtype, arrays), dtype)
