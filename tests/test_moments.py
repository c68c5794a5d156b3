"""batch_moments and merge_moments: per-channel (count, mean, M2) and their merge."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from conftest import FLOAT_DTYPES, assert_close, assert_identical, layouts

import fastnorm as fn
from fastnorm import reference as ref

SHAPES_AXES = [
    ((6, 4, 3, 5), 1),  # channels-first, span tiles not reached
    ((5, 3, 70), 1),  # B >= 64: span tiles
    ((9, 3, 5, 4), -1),  # channels-last
    ((17, 7), 1),  # 2-d, C < 8
    ((3, 33, 4), 1),
    ((4, 2, 6), 2),  # channel axis in the middle of three
    ((1, 5), 1),  # one value per channel
]


def check_moments(got, x, axis, dtype):
    count, mean, m2 = got
    rc, rmean, rm2 = ref.batch_moments(np.asarray(x, np.float64), axis)
    assert_identical(count, rc)
    assert mean.dtype == np.float64 and m2.dtype == np.float64
    # statistics of float32 data computed in double: judged at float32 tolerance
    tol_dtype = np.float64 if dtype == np.float64 else np.float32
    assert_close(mean.astype(tol_dtype), rmean, tol_dtype)
    assert_close(m2.astype(tol_dtype), rm2, tol_dtype)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize(("shape", "axis"), SHAPES_AXES)
def test_against_reference(rng, dtype, shape, axis):
    x = (2.0 + 3.0 * rng.standard_normal(shape)).astype(dtype)
    check_moments(fn.batch_moments(x, axis=axis), x, axis, dtype)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_large_mean_small_spread(rng, dtype):
    x = (1e4 + 1e-3 * rng.standard_normal((64, 5, 9))).astype(dtype)
    check_moments(fn.batch_moments(x), x, 1, dtype)
    xc = np.full((8, 3), 1e9, dtype)
    count, mean, m2 = fn.batch_moments(xc)
    assert_identical(m2, np.zeros(3))
    assert_identical(mean, np.full(3, 1e9))


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_same_as_batch_norm_statistics(rng, dtype):
    """The values batch_norm normalizes with, bit for bit (one kernel)."""
    x = rng.standard_normal((7, 6, 11)).astype(dtype)
    count, mean, m2 = fn.batch_moments(x)
    _, bmean, brstd = fn.batch_norm(x, eps=1e-5, return_stats=True)
    assert_identical(mean.astype(dtype), bmean)
    assert_identical((1.0 / np.sqrt(m2 / count + 1e-5)).astype(dtype), brstd)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_memory_layouts(rng, dtype):
    x = rng.standard_normal((6, 5, 4)).astype(dtype)
    want = fn.batch_moments(x, axis=-1)
    for name, v in layouts(x):
        for a, w in zip(fn.batch_moments(v, axis=-1), want, strict=True):
            assert_identical(a, w, err_msg=name)


def test_thread_count_does_not_change_bits(rng, threads):
    for shape, axis in [((256, 64, 40), 1), ((4096, 37), 1), ((64, 9, 9, 48), -1)]:
        for dtype in FLOAT_DTYPES:
            x = rng.standard_normal(shape).astype(dtype)
            runs = []
            for n in (1, 2, 3):
                with threads(n):
                    runs.append(fn.batch_moments(x, axis=axis))
            for other in runs[1:]:
                for a, b in zip(other, runs[0], strict=True):
                    assert_identical(a, b)


def test_empty_batch_and_zero_channels():
    count, mean, m2 = fn.batch_moments(np.empty((0, 3, 4), np.float32))
    assert_identical(count, np.zeros(3, np.int64))
    assert np.isnan(mean).all() and mean.shape == (3,)
    assert_identical(m2, np.zeros(3))
    count, mean, m2 = fn.batch_moments(np.empty((5, 0)))
    assert count.shape == mean.shape == m2.shape == (0,)


def test_nan_stays_in_its_channel():
    x = np.arange(12.0).reshape(4, 3)
    x[2, 1] = np.nan
    count, mean, m2 = fn.batch_moments(x)
    assert np.isnan(mean[1]) and np.isnan(m2[1])
    assert np.isfinite(mean[[0, 2]]).all() and np.isfinite(m2[[0, 2]]).all()


def test_bad_input():
    with pytest.raises(TypeError):
        fn.batch_moments(np.ones((3, 2), np.int64))
    with pytest.raises(ValueError):
        fn.batch_moments(np.ones(3))
    with pytest.raises(np.exceptions.AxisError):
        fn.batch_moments(np.ones((3, 2)), axis=2)
    with pytest.raises(TypeError):
        fn.batch_moments(np.ones((3, 2)), axis=1.0)


# --------------------------------------------------------------------------- merge


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("sizes", [(3, 5), (0, 4, 0, 2), (1, 1, 1, 1), (10, 0), (6,)])
def test_merge_equals_moments_of_the_concatenation(rng, dtype, sizes):
    x = (1e3 + rng.standard_normal((sum(sizes), 4, 3))).astype(dtype)
    bounds = np.cumsum([0, *sizes])
    parts = [fn.batch_moments(x[bounds[i] : bounds[i + 1]]) for i in range(len(sizes))]
    count, mean, m2 = fn.merge_moments(*parts)
    rc, rmean, rm2 = ref.batch_moments(x.astype(np.float64))
    assert_identical(count, rc)
    assert_close(mean, rmean, np.float64)
    assert_close(m2, rm2, np.float64, factor=10)
    # the reference's own merge agrees
    c2, mean2, m22 = ref.merge_moments(*parts)
    assert_identical(c2, count)
    assert_close(mean, mean2, np.float64)
    assert_close(m2, m22, np.float64, factor=10)


def test_merge_order_changes_only_rounding(rng):
    x = 5.0 + rng.standard_normal((23, 6))
    cuts = [0, 2, 9, 10, 17, 23]
    parts = [fn.batch_moments(x[a:b]) for a, b in itertools.pairwise(cuts)]
    want = fn.merge_moments(*parts)
    for perm in list(itertools.permutations(parts))[::17]:
        got = fn.merge_moments(*perm)
        assert_identical(got[0], want[0])
        assert_close(got[1], want[1], np.float64)
        assert_close(got[2], want[2], np.float64)


def test_merge_hand_computed():
    # {1, 3} and {5, 7, 9}: mean 5, M2 = 16 + 4 + 0 + 4 + 16 = 40
    a = (np.array([2]), np.array([2.0]), np.array([2.0]))
    b = (np.array([3]), np.array([7.0]), np.array([8.0]))
    for args in ((a, b), (b, a)):
        count, mean, m2 = fn.merge_moments(*args)
        assert_identical(count, np.array([5], np.int64))
        assert_identical(mean, np.array([5.0]))
        assert_identical(m2, np.array([40.0]))


def test_merge_count_zero_parts_are_ignored():
    a = (np.array([2, 0]), np.array([2.0, 1.0]), np.array([2.0, 0.5]))
    empty = (np.array([0, 0]), np.array([np.nan, np.nan]), np.array([np.nan, 0.0]))
    count, mean, m2 = fn.merge_moments(empty, a, empty)
    assert_identical(count, np.array([2, 0], np.int64))
    assert_identical(mean, np.array([2.0, np.nan]))
    assert_identical(m2, np.array([2.0, 0.0]))
    count, mean, m2 = fn.merge_moments(empty)
    assert np.isnan(mean).all()
    assert_identical(m2, np.zeros(2))


def test_merge_single_part_is_itself(rng):
    x = rng.standard_normal((5, 3))
    m = fn.batch_moments(x)
    for a, b in zip(fn.merge_moments(m), m, strict=True):
        assert_identical(a, b)


def test_merge_bad_arguments():
    m = (np.array([2, 2]), np.zeros(2), np.ones(2))
    with pytest.raises(ValueError):
        fn.merge_moments()
    with pytest.raises(ValueError):
        fn.merge_moments(m, (np.array([2]), np.zeros(1), np.ones(1)))
    with pytest.raises(ValueError):
        fn.merge_moments((np.array([2, 2]), np.zeros(3), np.ones(2)))
    with pytest.raises(ValueError):
        fn.merge_moments((np.array([-1, 2]), np.zeros(2), np.ones(2)))
    with pytest.raises(ValueError):
        fn.merge_moments((np.array([1.5, 2]), np.zeros(2), np.ones(2)))
    with pytest.raises(TypeError):
        fn.merge_moments((np.array([2, 2]), np.zeros(2)))
    with pytest.raises(TypeError):
        fn.merge_moments((np.array([2, 2]), np.zeros(2, complex), np.ones(2)))
