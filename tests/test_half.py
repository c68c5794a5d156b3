"""float16 and bfloat16 inputs: the kernels read and write the half type and compute in
float32/float64 registers; weight, bias, statistics and their gradients are float32.

Checked here: the conversions themselves (every bit pattern, correct rounding), every op
forward and backward against the float64 reference evaluated on the same half values,
the dtype contract, layouts, and determinism across thread counts and SIMD levels.
bfloat16 comes from the optional ml_dtypes package."""

import numpy as np
import pytest
from conftest import threads

import fastnorm as fn
from fastnorm import _kernels
from fastnorm import reference as ref

try:
    import ml_dtypes
except ImportError:  # the bfloat16 cases need it; float16 ones run without it
    ml_dtypes = None

F16 = np.dtype(np.float16)
BF16 = np.dtype(ml_dtypes.bfloat16) if ml_dtypes is not None else None
F32 = np.dtype(np.float32)

# A correctly computed result rounded once to the half type is within half an ulp of the
# exact value (unit roundoff 2^-11 for float16, 2^-8 for bfloat16); the tolerances leave a
# factor of about 2 for the float32 statistics and arithmetic before that rounding.
UNIT = {"float16": 2.0**-11, "bfloat16": 2.0**-8}


def half_dtypes():
    params = [pytest.param(F16, id="float16")]
    mark = pytest.mark.skipif(ml_dtypes is None, reason="bfloat16 needs ml_dtypes")
    params.append(pytest.param(BF16, id="bfloat16", marks=mark))
    return params


HALF = half_dtypes()


def every_value(dtype):
    """All 65536 values of a 16-bit float type."""
    return np.arange(65536, dtype=np.uint32).astype(np.uint16).view(dtype)


def f64(a):
    with np.errstate(invalid="ignore"):  # ml_dtypes warns when it widens a NaN
        return np.asarray(a, dtype=np.float64)


def assert_half_close(actual, expected, dtype, factor=2.0, err_msg=""):
    """`actual` (of `dtype`) within `factor` unit roundoffs of the float64 `expected`,
    relative to the element and to the array's largest magnitude."""
    actual = np.asarray(actual)
    assert actual.dtype == dtype, f"dtype {actual.dtype} != {dtype}. {err_msg}"
    expected = np.asarray(expected, dtype=np.float64)
    assert actual.shape == expected.shape
    u = UNIT[dtype.name] * factor
    scale = max(1.0, float(np.abs(expected[np.isfinite(expected)]).max(initial=0.0)))
    np.testing.assert_allclose(f64(actual), expected, rtol=u, atol=u * scale, equal_nan=True,
                               err_msg=err_msg)


def assert_f32_close(actual, expected, factor=1.0, err_msg=""):
    actual = np.asarray(actual)
    assert actual.dtype == F32, f"dtype {actual.dtype} != float32. {err_msg}"
    expected = np.asarray(expected, dtype=np.float64)
    scale = max(1.0, float(np.abs(expected).max(initial=0.0)))
    tol = 1e-5 * factor
    np.testing.assert_allclose(f64(actual), expected, rtol=tol, atol=tol * scale,
                               err_msg=err_msg)


def eval_bn(x, weight):
    """batch_norm in eval mode with mean 0, variance 1 and eps 0: y = x * weight[c], one
    rounding of an exact product (x is 2-d, channels on axis 1)."""
    C = x.shape[1]
    return fn.batch_norm(x, weight, None, np.zeros(C), np.ones(C), training=False, eps=0.0)


# ---------------------------------------------------------------- the conversions


@pytest.mark.parametrize("dtype", HALF)
@pytest.mark.parametrize("shape", [(65536, 1), (1, 1, 65536), (256, 256)],
                         ids=["column", "span", "square"])
def test_every_value_round_trips(dtype, shape):
    """Every bit pattern widens exactly and rounds back to itself (through the kernels'
    element-wise paths: per-column coefficients, spans, rows)."""
    x = every_value(dtype).reshape(shape)
    y = eval_bn(x.reshape(shape[0], -1) if len(shape) == 2 else x,
                np.ones(x.shape[1], np.float32))
    assert y.dtype == dtype
    # -0 + 0 is +0 and NaN payloads are not kept: compare values, NaN equal to NaN
    np.testing.assert_array_equal(f64(y).ravel(), f64(x).ravel())


def test_float16_rounding_is_to_nearest_even_through_float32():
    """y = x * w, computed exactly, rounded to float32 and then to float16 (what the same
    computation in float32 followed by a conversion gives): bitwise what NumPy's
    conversions give, over normal, subnormal, overflowing and tie cases."""
    rng = np.random.default_rng(1)
    bits = rng.integers(0, 0x7C00, size=(2048, 16), dtype=np.uint16)  # finite, positive
    bits[rng.random(bits.shape) < 0.5] |= 0x8000
    x = bits.view(np.float16)
    w = np.concatenate([
        (rng.random(10) * 3).astype(np.float32),      # generic products
        np.float32([0.5, 2.0**-10, 2.0**-14]),        # into the subnormal range
        np.float32([1.0 + 2.0**-11, 3e4, 1e-6]),      # ties, overflow to inf, underflow
    ])  # fmt: skip
    with np.errstate(over="ignore"):
        expected = (f64(x) * f64(w)).astype(np.float32).astype(np.float16)
    y = eval_bn(x, w)
    np.testing.assert_array_equal(y.view(np.uint16), expected.view(np.uint16))


@pytest.mark.skipif(ml_dtypes is None, reason="bfloat16 needs ml_dtypes")
def test_bfloat16_rounding_is_to_nearest_even_through_float32():
    """As for float16, against ml_dtypes' float32 -> bfloat16 conversion, including
    subnormal results, overflow to inf and ties."""
    rng = np.random.default_rng(2)
    bits = rng.integers(0, 0x7F80, size=(2048, 16), dtype=np.uint16)
    bits[rng.random(bits.shape) < 0.5] |= 0x8000
    x = bits.view(BF16)
    w = (rng.random(16) * 4).astype(np.float32)
    w[:3] = np.float32([2.0**-100, 2.0**100, 1.0 + 2.0**-8])  # underflow, overflow, ties
    with np.errstate(over="ignore", under="ignore"):
        expected = (f64(x) * f64(w)).astype(np.float32).astype(BF16)
    e = np.abs(f64(expected))
    assert (e < 2.0**-126).sum() > 100 and np.isinf(e).sum() > 100  # both edges covered
    y = eval_bn(x, w)
    np.testing.assert_array_equal(y.view(np.uint16), expected.view(np.uint16))


@pytest.mark.parametrize("dtype", HALF)
def test_specials_pass_through(dtype):
    x = np.array([[np.inf, -np.inf, np.nan, 0.0, -0.0, 1.0]], dtype=np.float32).astype(dtype)
    y = eval_bn(x.T, np.ones(1, np.float32)).T
    np.testing.assert_array_equal(f64(y), [[np.inf, -np.inf, np.nan, 0.0, 0.0, 1.0]])


# ---------------------------------------------------------------- every op vs reference


def data(rng, shape, dtype, loc=0.0, scale=1.0):
    return (rng.standard_normal(shape) * scale + loc).astype(np.float32).astype(dtype)


def params(rng, n):
    return (rng.standard_normal(n).astype(np.float32),
            rng.standard_normal(n).astype(np.float32))


@pytest.mark.parametrize("dtype", HALF)
@pytest.mark.parametrize("shape", [(7, 33), (3, 4, 300), (2, 5000)])
def test_layer_norm(dtype, shape):
    rng = np.random.default_rng(3)
    x = data(rng, shape, dtype, loc=2.0, scale=3.0)
    w, b = params(rng, shape[-1])
    y, mean, rstd = fn.layer_norm(x, w, b, return_stats=True)
    y_ref, mean_ref, rstd_ref = ref.layer_norm(f64(x), w, b, return_stats=True)
    assert_half_close(y, y_ref, dtype)
    assert_f32_close(mean, mean_ref)
    assert_f32_close(rstd, rstd_ref)
    dy = data(rng, shape, dtype)
    dx, dw, db = fn.layer_norm_backward(dy, x, mean, rstd, w)
    dx_ref, dw_ref, db_ref = ref.layer_norm_backward(f64(dy), f64(x), mean_ref, rstd_ref, w)
    assert_half_close(dx, dx_ref, dtype)
    assert_f32_close(dw, dw_ref)
    assert_f32_close(db, db_ref)


@pytest.mark.parametrize("dtype", HALF)
@pytest.mark.parametrize("shape", [(7, 33), (2, 5000)])
def test_rms_norm(dtype, shape):
    rng = np.random.default_rng(4)
    x = data(rng, shape, dtype, scale=2.0)
    w, _ = params(rng, shape[-1])
    y, rstd = fn.rms_norm(x, w, return_stats=True)
    y_ref, rstd_ref = ref.rms_norm(f64(x), w, return_stats=True)
    assert_half_close(y, y_ref, dtype)
    assert_f32_close(rstd, rstd_ref)
    dy = data(rng, shape, dtype)
    dx, dw = fn.rms_norm_backward(dy, x, rstd, w)
    dx_ref, dw_ref = ref.rms_norm_backward(f64(dy), f64(x), rstd_ref, w)
    assert_half_close(dx, dx_ref, dtype)
    assert_f32_close(dw, dw_ref)


CHANNEL_SHAPES = [(8, 6, 10, 10), (16, 3, 5), (4, 12, 70)]


@pytest.mark.parametrize("dtype", HALF)
@pytest.mark.parametrize("shape", CHANNEL_SHAPES)
@pytest.mark.parametrize("axis", [1, -1])
def test_batch_norm(dtype, shape, axis):
    rng = np.random.default_rng(5)
    x = data(rng, shape, dtype, loc=1.0, scale=2.0)
    C = shape[axis]
    w, b = params(rng, C)
    rm, rv = np.zeros(C, np.float32), np.ones(C, np.float32)
    rm_ref, rv_ref = np.zeros(C), np.ones(C)
    y, mean, rstd = fn.batch_norm(x, w, b, rm, rv, axis=axis, return_stats=True)
    y_ref, mean_ref, rstd_ref = ref.batch_norm(f64(x), w, b, rm_ref, rv_ref, axis=axis,
                                               return_stats=True)
    assert_half_close(y, y_ref, dtype)
    assert_f32_close(mean, mean_ref)
    assert_f32_close(rstd, rstd_ref)
    assert_f32_close(rm, rm_ref)
    assert_f32_close(rv, rv_ref)
    dy = data(rng, shape, dtype)
    dx, dw, db = fn.batch_norm_backward(dy, x, mean, rstd, w, axis=axis)
    dx_ref, dw_ref, db_ref = ref.batch_norm_backward(f64(dy), f64(x), mean_ref, rstd_ref, w,
                                                     axis=axis)
    assert_half_close(dx, dx_ref, dtype)
    assert_f32_close(dw, dw_ref)
    assert_f32_close(db, db_ref)
    # eval mode: the running statistics, a per-channel scale in the backward
    y = fn.batch_norm(x, w, b, rm, rv, axis=axis, training=False)
    assert_half_close(y, ref.batch_norm(f64(x), w, b, rm_ref, rv_ref, axis=axis,
                                        training=False), dtype)


@pytest.mark.parametrize("dtype", HALF)
@pytest.mark.parametrize("shape", CHANNEL_SHAPES)
@pytest.mark.parametrize("axis", [1, -1])
def test_group_and_instance_norm(dtype, shape, axis):
    rng = np.random.default_rng(6)
    x = data(rng, shape, dtype, loc=-1.0, scale=0.5)
    C = shape[axis]
    G = 3 if C % 3 == 0 else 1
    w, b = params(rng, C)
    dy = data(rng, shape, dtype)
    y, mean, rstd = fn.group_norm(x, G, w, b, axis=axis, return_stats=True)
    y_ref, mean_ref, rstd_ref = ref.group_norm(f64(x), G, w, b, axis=axis, return_stats=True)
    assert_half_close(y, y_ref, dtype)
    assert_f32_close(mean, mean_ref)
    assert_f32_close(rstd, rstd_ref)
    dx, dw, db = fn.group_norm_backward(dy, x, mean, rstd, G, w, axis=axis)
    dx_ref, dw_ref, db_ref = ref.group_norm_backward(f64(dy), f64(x), mean_ref, rstd_ref, G,
                                                     w, axis=axis)
    assert_half_close(dx, dx_ref, dtype)
    assert_f32_close(dw, dw_ref)
    assert_f32_close(db, db_ref)
    if shape[0] * x.size // (shape[0] * C) > 1:  # instance norm needs 2+ values per (n, c)
        y, mean, rstd = fn.instance_norm(x, w, b, axis=axis, return_stats=True)
        y_ref, mean_ref, rstd_ref = ref.instance_norm(f64(x), w, b, axis=axis,
                                                      return_stats=True)
        assert_half_close(y, y_ref, dtype)
        dx, dw, db = fn.instance_norm_backward(dy, x, mean, rstd, w, axis=axis)
        dx_ref, dw_ref, db_ref = ref.instance_norm_backward(f64(dy), f64(x), mean_ref,
                                                            rstd_ref, w, axis=axis)
        assert_half_close(dx, dx_ref, dtype)
        assert_f32_close(dw, dw_ref)


@pytest.mark.parametrize("dtype", HALF)
@pytest.mark.parametrize("shape,axis", [((9, 40), -1), ((9, 40), 0), ((3, 5, 7), 1)])
def test_l2_normalize(dtype, shape, axis):
    rng = np.random.default_rng(7)
    x = data(rng, shape, dtype)
    y, norm = fn.l2_normalize(x, axis=axis, return_stats=True)
    y_ref, norm_ref = ref.l2_normalize(f64(x), axis=axis, return_stats=True)
    assert_half_close(y, y_ref, dtype)
    assert_f32_close(norm, norm_ref)
    dy = data(rng, shape, dtype)
    dx = fn.l2_normalize_backward(dy, y, norm, axis=axis)
    # the reference backward from the same (rounded) y: the kernel's only input
    dx_ref = ref.l2_normalize_backward(f64(dy), f64(y), f64(norm), axis=axis)
    assert_half_close(dx, dx_ref, dtype)


@pytest.mark.parametrize("dtype", HALF)
@pytest.mark.parametrize("shape,axis", [((16, 40), 0), ((6, 4, 3, 3), 0), ((5, 70), 1)])
def test_weight_norm(dtype, shape, axis):
    rng = np.random.default_rng(8)
    v = data(rng, shape, dtype)
    g = rng.standard_normal(shape[axis]).astype(np.float32)
    w, norm = fn.weight_norm(v, g, axis=axis, return_stats=True)
    w_ref, norm_ref = ref.weight_norm(f64(v), g, axis=axis, return_stats=True)
    assert_half_close(w, w_ref, dtype)
    assert_f32_close(norm, norm_ref)
    dw = data(rng, shape, dtype)
    dv, dg = fn.weight_norm_backward(dw, v, g, norm, axis=axis)
    dv_ref, dg_ref = ref.weight_norm_backward(f64(dw), f64(v), g, norm_ref, axis=axis)
    assert_half_close(dv, dv_ref, dtype)
    assert_f32_close(dg, dg_ref)


@pytest.mark.parametrize("dtype", HALF)
def test_cosine_norm(dtype):
    rng = np.random.default_rng(9)
    x, w = data(rng, (12, 32), dtype), data(rng, (5, 32), dtype)
    y, xn, wn = fn.cosine_norm(x, w, return_stats=True)
    y_ref, xn_ref, wn_ref = ref.cosine_norm(f64(x), f64(w), return_stats=True)
    assert_half_close(y, y_ref, dtype)
    assert_f32_close(xn, xn_ref)
    assert np.all(np.abs(f64(y)) <= 1.0)
    dy = data(rng, (12, 5), dtype)
    dx, dw = fn.cosine_norm_backward(dy, x, w, xn, wn)
    dx_ref, dw_ref = ref.cosine_norm_backward(f64(dy), f64(x), f64(w), xn_ref, wn_ref)
    assert_half_close(dx, dx_ref, dtype)
    assert_half_close(dw, dw_ref, dtype)


# ---------------------------------------------------------------- contract and layouts


@pytest.mark.parametrize("dtype", HALF)
def test_parameters_of_any_float_dtype_are_computed_in_float32(dtype):
    rng = np.random.default_rng(10)
    x = data(rng, (5, 16), dtype)
    w32, b32 = params(rng, 16)
    y = fn.layer_norm(x, w32, b32)
    for pdt in (np.float16, np.float64):
        # the parameter rounded to pdt, then computed as float32
        wp, bp = w32.astype(pdt), b32.astype(pdt)
        np.testing.assert_array_equal(
            f64(fn.layer_norm(x, wp, bp)),
            f64(fn.layer_norm(x, wp.astype(np.float32), bp.astype(np.float32))))
    assert fn.layer_norm(x, w32, b32, return_stats=True)[1].dtype == F32
    np.testing.assert_array_equal(f64(y), f64(fn.layer_norm(x, list(w32), list(b32))))


@pytest.mark.parametrize("dtype", HALF)
def test_out_argument(dtype):
    rng = np.random.default_rng(11)
    x = data(rng, (6, 10), dtype)
    expected = fn.rms_norm(x)
    out = np.empty_like(x)
    assert fn.rms_norm(x, out=out) is out
    np.testing.assert_array_equal(out.view(np.uint16), expected.view(np.uint16))
    with pytest.raises(TypeError, match="out must have dtype"):
        fn.rms_norm(x, out=np.empty(x.shape, np.float32))
    fn.rms_norm(x, out=x)  # in place
    np.testing.assert_array_equal(x.view(np.uint16), expected.view(np.uint16))


@pytest.mark.parametrize("dtype", HALF)
def test_strided_inputs_equal_contiguous(dtype):
    rng = np.random.default_rng(12)
    base = data(rng, (10, 6, 12), dtype)
    for x in (base[:, :, ::-1], base.transpose(2, 1, 0), base[::2]):
        xc = np.ascontiguousarray(x)
        for op in (lambda a: fn.layer_norm(a), lambda a: fn.batch_norm(a),
                   lambda a: fn.group_norm(a, 3, axis=1), lambda a: fn.l2_normalize(a, axis=0)):
            np.testing.assert_array_equal(op(x).view(np.uint16), op(xc).view(np.uint16))


def test_unsupported_half_running_stats_type_error():
    x = np.ones((4, 3), np.float16)
    with pytest.raises(TypeError):
        fn.batch_norm(x, running_mean=np.zeros(3, np.float16), running_var=np.ones(3, np.float16))


def test_non_native_float16_is_accepted():
    x = np.arange(12, dtype=np.float16).reshape(3, 4)
    swapped = x.astype(x.dtype.newbyteorder("S"))
    np.testing.assert_array_equal(f64(fn.layer_norm(swapped)), f64(fn.layer_norm(x)))


# ---------------------------------------------------------------- determinism


def run_all(x, dtype):
    """Outputs of every op on a 4-d half input, as bit patterns."""
    C = x.shape[1]
    w = np.linspace(0.5, 1.5, C, dtype=np.float32)
    res = [fn.batch_norm(x, w, w), fn.batch_norm(x, axis=-1), fn.group_norm(x, 2, w, w),
           fn.instance_norm(x), fn.layer_norm(x, axis=1), fn.rms_norm(x),
           fn.l2_normalize(x, axis=1), fn.weight_norm(x, np.ones(x.shape[0]))]
    y, mean, rstd = fn.batch_norm(x, return_stats=True)
    res += list(fn.batch_norm_backward(x, x, mean, rstd, w))
    y, mean, rstd = fn.layer_norm(x, w[0] * np.ones(x.shape[-1], np.float32), axis=-1,
                                  return_stats=True)
    res += [r for r in fn.layer_norm_backward(x, x, mean, rstd, axis=-1) if r is not None]
    return [np.asarray(r).view(np.uint16 if r.dtype.itemsize == 2 else np.uint32) for r in res]


@pytest.mark.parametrize("dtype", HALF)
def test_bitwise_identical_for_any_thread_count(dtype):
    rng = np.random.default_rng(13)
    x = data(rng, (16, 8, 40, 40), dtype)
    with threads(1):
        one = run_all(x, dtype)
    for n in (2, 3):
        with threads(n):
            for a, b in zip(one, run_all(x, dtype), strict=True):
                np.testing.assert_array_equal(a, b)


def supported_levels():
    levels = list(_kernels.ISA_LEVELS)
    return levels[: levels.index(_kernels.isa_supported()) + 1]


@pytest.mark.parametrize("dtype", HALF)
def test_every_simd_level_matches_reference(dtype):
    """The F16C / vector conversions of the AVX levels and the scalar ones of the baseline
    give the same half values; every level within tolerance of the reference."""
    rng = np.random.default_rng(14)
    x = data(rng, (4, 6, 9, 9), dtype, loc=3.0)
    active = _kernels.isa_active()
    try:
        for level in supported_levels():
            _kernels.isa_select(level)
            y, mean, rstd = fn.batch_norm(x, return_stats=True)
            assert_half_close(y, ref.batch_norm(f64(x)), dtype, err_msg=level)
            y = fn.layer_norm(x, axis=1)
            assert_half_close(y, ref.layer_norm(f64(x), axis=1), dtype, err_msg=level)
            dx = fn.batch_norm_backward(x, x, mean, rstd)[0]
            mr, rr = ref.batch_norm(f64(x), return_stats=True)[1:]
            assert_half_close(dx, ref.batch_norm_backward(f64(x), f64(x), mr, rr)[0], dtype,
                              err_msg=level)
    finally:
        _kernels.isa_select(active)


@pytest.mark.parametrize("dtype", HALF)
@pytest.mark.parametrize("axis", [1, -1])
def test_batch_moments(dtype, axis):
    rng = np.random.default_rng(15)
    x = data(rng, (6, 5, 40), dtype, loc=2.0)
    count, mean, m2 = fn.batch_moments(x, axis=axis)
    count_ref, mean_ref, m2_ref = ref.batch_moments(f64(x), axis=axis)
    np.testing.assert_array_equal(count, count_ref)
    np.testing.assert_allclose(mean, mean_ref, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(m2, m2_ref, rtol=1e-10)
