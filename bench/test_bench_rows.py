"""Rows family: layer_norm and rms_norm, forward and forward+backward.

Parametrised over op × shape × dtype here and over the implementation by the ``impl``
fixture of conftest.py. Benchmarks are grouped by op and shape, so each group compares
fastnorm, the NumPy reference and PyTorch on the same input.
"""

import pytest

from fastnorm import _bench

OPS = _bench.select(["layer_norm", "rms_norm"], ["fwd", "fwd+bwd"])
SHAPES = _bench.ROW_SHAPES


@pytest.mark.parametrize("dtype", ["float32"])
@pytest.mark.parametrize("shape", SHAPES, ids=[_bench.shape_id(s, "-") for s in SHAPES])
@pytest.mark.parametrize("op", OPS, ids=[op.label.replace(" ", "-") for op in OPS])
def test_rows(benchmark, inputs, expected, impl, op, shape, dtype):
    fn = _bench.implementation(op, impl, inputs(op, shape, dtype), _bench.torch_or_none())
    benchmark.group = f"{op.label} {_bench.shape_id(shape)} {dtype}"
    benchmark.extra_info.update(impl=impl, op=op.name, kind=op.kind)
    fn()  # one-off lazy set-up (torch's first autograd call takes ~0.2 s) stays out of timing
    result = benchmark(fn)
    assert _bench.check(result, expected(op, shape, dtype), dtype)
