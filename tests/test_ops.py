"""The op registry (fastnorm._ops) that the benchmarks, the thread, SIMD-level and leak
tests, the fuzzer and the memory-checker smoke run take their list of ops from."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import FLOAT_DTYPES, check_op_against_reference

import fastnorm as fn
from fastnorm import _ops
from fastnorm import reference as ref

RUNTIME = {"set_num_threads", "get_num_threads", "set_output_cache", "get_output_cache",
           "show_config"}  # fmt: skip


def test_every_public_function_is_in_exactly_one_op():
    public = {name for name in fn.__all__ if callable(getattr(fn, name))} - RUNTIME
    listed = [f for op in _ops.OPS for f in op.functions]
    listed += [op.double_backward for op in _ops.OPS if op.double_backward]
    assert sorted(listed) == sorted(public)
    assert len(set(listed)) == len(listed)


def test_names_are_unique_and_get_finds_them():
    names = [op.name for op in _ops.OPS]
    assert len(set(names)) == len(names)
    for op in _ops.OPS:
        assert _ops.get(op.name) is op
    with pytest.raises(KeyError, match="no op 'nope'"):
        _ops.get("nope")


def test_every_op_has_cases_and_the_reference_has_its_functions():
    for op in _ops.OPS:
        assert op.cases, op.name
        for f in op.functions + ((op.double_backward,) if op.double_backward else ()):
            assert callable(getattr(ref, f)), f
        assert bool(op.backward) == bool(op.grads) == (len(op.functions) == 2), op.name


def test_unknown_parameter_is_a_type_error():
    op = _ops.get("layer_norm")
    a = op.make_inputs(np.random.default_rng(0), (2, 3), np.float32)
    with pytest.raises(TypeError, match="unknown parameters"):
        op.call_forward(fn, a, {"axes": 0})


def test_without_affine_leaves_out_the_optional_parameters():
    op = _ops.get("batch_norm")
    a = op.make_inputs(np.random.default_rng(0), (2, 3, 4), np.float32, affine=False)
    assert "weight" not in a and "bias" not in a and "running_mean" in a


def test_half_x_gets_float32_parameters():
    op = _ops.get("layer_norm")
    a = op.make_inputs(np.random.default_rng(0), (2, 8), np.float16)
    assert a["x"].dtype == np.float16 and a["weight"].dtype == np.float32


def test_run_gives_fresh_running_statistics():
    op = _ops.get("batch_norm")
    a = op.make_inputs(np.random.default_rng(0), (4, 3, 5), np.float64)
    before = a["running_mean"].copy()
    first = op.run(fn, a)
    second = op.run(fn, a)
    np.testing.assert_array_equal(a["running_mean"], before)
    i = op.labels(a).index("running_mean")
    assert not np.array_equal(first[i], before)
    np.testing.assert_array_equal(first[i], second[i])


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("name", [op.name for op in _ops.OPS])
def test_op_matches_reference_on_its_cases(name, dtype):
    check_op_against_reference(_ops.get(name), np.random.default_rng(3), dtype)
