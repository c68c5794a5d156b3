"""The variance's shift is sampled from at most 64 evenly spaced elements; when that
sample is far from the mean the statistics are summed again around the mean. Rows built
so that the sample sees only outliers must still match the reference closely."""

import numpy as np
import pytest
from conftest import assert_close

import fastnorm as fn
from fastnorm import reference as ref


def adversarial(n, dtype, big=1e3):
    """Noise around 0, with the elements a 64-point sample would read set to `big`."""
    rng = np.random.default_rng(n)
    v = rng.standard_normal(n)
    step = n // 64 if n > 64 else 1
    v[: 64 * step : step] = big
    return v.astype(dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n", [65, 1000, 4097, 20000])
def test_layer_norm_sample_far_from_mean(dtype, n):
    x = np.stack([adversarial(n, dtype), adversarial(n, dtype, big=-5e4)])
    y, mean, rstd = fn.layer_norm(x, return_stats=True)
    ey, em, er = ref.layer_norm(x.astype(np.float64), return_stats=True)
    assert_close(y, ey, dtype)
    assert_close(mean, em, dtype)
    assert_close(rstd, er, dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_group_norm_rows_sample_far_from_mean(dtype):
    x = adversarial(2 * 4 * 3000, dtype).reshape(2, 4, 3000)
    y, mean, rstd = fn.group_norm(x, 2, return_stats=True)
    ey, em, er = ref.group_norm(x.astype(np.float64), 2, return_stats=True)
    assert_close(y, ey, dtype)
    assert_close(mean, em, dtype)
    assert_close(rstd, er, dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_batch_norm_span_tiles_sample_far_from_mean(dtype):
    # channels-first with spans of 3000: statistics from span tiles
    x = np.stack([adversarial(3000, dtype) for _ in range(6)]).reshape(3, 2, 3000)
    y, mean, rstd = fn.batch_norm(x, return_stats=True)
    ey, em, er = ref.batch_norm(x.astype(np.float64), return_stats=True)
    assert_close(y, ey, dtype)
    assert_close(mean, em, dtype)
    assert_close(rstd, er, dtype)


def test_float32_accuracy_kept_when_the_sample_misleads():
    # The float32 sums lose precision in proportion to (shift - mean)^2 / var, which this
    # row makes about 4000: summed around the sample alone, rstd would be off by ~1.5e-6
    # relative; around the mean it stays within a few float32 roundings.
    n = 1 << 18
    x = adversarial(n, np.float32)[None]
    y, _, rstd = fn.layer_norm(x, return_stats=True)
    ey, _, er = ref.layer_norm(x.astype(np.float64), return_stats=True)
    assert abs(rstd[0] / er[0] - 1) < 3e-7
    assert np.abs(y - ey).max() < 3e-7 * np.abs(ey).max()
