"""Channels family: batch_norm (training forward with running statistics, forward+backward,
eval forward), group_norm and instance_norm (forward, forward+backward), in NCHW and NHWC.

Parametrised over op × layout × shape × implementation. Benchmarks are grouped by op, layout
and shape, so each group compares fastnorm, the NumPy reference and PyTorch on the same input.
fastnorm.reference takes up to ~1.5 s a call on the larger shapes, so it is benchmarked only
on the cases up to ``op.reference_max_size`` elements (8x3x224x224 and the tiny batch_norm
case); fastnorm and torch are still checked against it on every case. The implementation is
a parameter here, in place of conftest.py's ``impl`` fixture, so that the reference's larger
cases are never collected; without torch its cases are skipped before any fixture is set up.

With ``--benchmark-disable`` each benchmark calls its function on a stand-in input of the
same op and layout, batch 2 and at most 8x8 pixels with the channels (and so the groups)
kept, which keeps that smoke run to a few seconds.
"""

import importlib.util

import pytest

from fastnorm import _bench

OPS = _bench.select(["batch_norm", "group_norm", "instance_norm"], ["fwd", "fwd+bwd", "eval"])
NO_TORCH = pytest.mark.skipif(
    importlib.util.find_spec("torch") is None, reason="torch is not installed"
)


def _params():
    for op in OPS:
        for shape, dtype in op.cases:
            for impl in _bench.IMPLS:
                if impl == "reference" and not op.times_reference(shape):
                    continue
                yield pytest.param(
                    op,
                    shape,
                    dtype,
                    impl,
                    marks=NO_TORCH if impl == "torch" else (),
                    id="-".join((*op.label.split(), _bench.shape_id(shape, "-"), dtype, impl)),
                )


def _smoke_shape(shape):
    n, c, h, w = shape
    return (min(n, 2), c, min(h, 8), min(w, 8))


_last_expected = {}


def _expected(op, shape, dtype, arrays):
    """The reference's first output for the case. Only the latest case's is kept: the
    implementations of a case run one after another, and the float64 results of the large
    shapes take 50-100 MB each."""
    key = (op, shape, dtype)
    if key not in _last_expected:
        _last_expected.clear()
        fn = _bench.implementation(op, "reference", arrays)
        _last_expected[key] = _bench.to_numpy(fn())
    return _last_expected[key]


@pytest.mark.parametrize(("op", "shape", "dtype", "impl"), list(_params()))
def test_channels(benchmark, inputs, op, shape, dtype, impl):
    benchmark.group = f"{op.label} {_bench.shape_id(shape)} {dtype}"
    benchmark.extra_info.update(impl=impl, op=op.name, kind=op.kind, layout=op.layout)
    if benchmark.disabled:
        shape = _smoke_shape(shape)
    arrays = inputs(op, shape, dtype)
    fn = _bench.implementation(op, impl, arrays, _bench.torch_or_none())
    fn()  # one-off lazy set-up (torch's first autograd call takes ~0.2 s) stays out of timing
    result = benchmark(fn)
    assert _bench.check(result, _expected(op, shape, dtype, arrays), dtype)
