"""Property-based fuzzing of the whole public API against fastnorm.reference.

Every public forward and backward function is called with random shapes (0-d to 4-d, sizes
0 and 1 included), dtypes, memory layouts (transposed, negative strides, stepped, stride-0
broadcast, byte-swapped, misaligned, nested lists), values (NaN, +-Inf, 1e-30, 1e30, the
largest magnitudes of the dtype, subnormals, large mean with a small spread), axes, eps,
momentum, group counts, ``out=`` arrays (a backward's: dx, dy itself among them),
parameters, saved statistics and running statistics.

Each call must either

* return results of the input's dtype and of the reference's shapes that match the float64
  reference computed from the same values (parameters, gradients and statistics cast to the
  input's dtype first, the documented rule), wherever the reference value is finite and
  representable in that dtype; return ``out`` itself when given; leave every other input
  untouched and update the running statistics (training mode) like the reference; or
* raise TypeError or ValueError (``numpy.exceptions.AxisError`` is a ValueError) and leave
  ``out``, the running statistics and every input unchanged.

Any other exception fails, and so does any warning other than NumPy's floating-point
RuntimeWarnings. The call must raise when the design marks the input as an error (an
unsupported dtype, a negative or NaN eps, momentum outside [0, 1], a bad group count or axis,
a wrong ``out=``, unusable running statistics, wrong shapes) and whenever the reference raises
TypeError or ValueError. An unsupported input dtype must give TypeError and a bad axis
AxisError (TypeError for a non-integer axis) when nothing is validated before them.

Each example draws all arguments valid, at most one invalid, or any number invalid, so that
both the computations and every validation path are reached. Values are compared with a
tolerance per dtype widened by the reference's own sensitivity to rounding-sized changes of
its inputs (see PERTURBATION); where that sensitivity reaches the value itself (eps = 0 on a
constant group) a NaN or infinite result is accepted. float64 inputs whose magnitudes make the
reference's plain float64 arithmetic overflow or underflow are checked for the contract only.

250 examples per function by default (a seed per function, fixed); ``pytest --fuzz-examples N``
changes that.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import itertools
import math
import warnings
import zlib
from collections.abc import Callable

import numpy as np
import pytest
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st
from numpy.exceptions import AxisError

import fastnorm as fn
from fastnorm import _ops
from fastnorm import reference as ref

F16, F32, F64 = np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64)
CONTRACT_ERRORS = (TypeError, ValueError)
DEFAULT_EXAMPLES = 250

# rtol, and atol relative to the largest compared magnitude of the array (at least 1, as in
# conftest.assert_close), per result dtype.
TOL = {F32: 1e-5, F64: 1e-11}
# On top of TOL, a result may differ from the reference by SENSITIVITY times the largest change
# of the reference when every input is scaled by an independent random factor within
# 1 +- PERTURBATION ulps of the computing dtype (two draws): rounding errors of a correct
# kernel are of that size where the result is ill-conditioned (cancellation).
PERTURBATION = 8
SENSITIVITY = 16
# The reference computes x * x, rstd ** 3 ... in plain float64. Inputs with a nonzero magnitude
# outside this range can overflow or underflow there (float32 values never do): such calls are
# checked against the contract but not against the reference's values.
SAFE_MAGNITUDES = (1e-100, 1e100)

SIZES = (0, 1, 1, 2, 2, 3, 3, 4, 5, 7, 17, 33)
MAX_ELEMENTS = 2048
# (float16 and bfloat16 inputs are supported; tests/test_half.py covers them)
UNSUPPORTED_DTYPES = tuple(
    np.dtype(t) for t in (np.longdouble, np.int32, np.int64, np.bool_, np.complex64, object)
)
LAYOUTS = (
    "contiguous", "contiguous", "contiguous", "transposed", "reversed", "stepped",
    "broadcast", "byteswapped", "misaligned", "list",
)  # fmt: skip
VALUE_MODES = ("normal", "normal", "offset", "constant", "scaled", "scaled", "specials")
SCALES = {
    F32: (1e-30, 1e30, 1e38, 1e-42),
    F64: (1e-30, 1e30, 1e-80, 1e80, 1e-120, 1e120, 1e300, 1e-310),
}


class _Default:
    def __repr__(self):
        return "DEFAULT"


DEFAULT = _Default()  # the keyword is left out of the call

EPS_VALID = (
    DEFAULT, DEFAULT, 0.0, 0, -0.0, 5e-324, 1e-30, 1e-12, 1e-5, 1e-5, 0.1, 1.0, 2, 1e300,
    np.float32(1e-3),
)  # fmt: skip
EPS_INVALID = (-1e-5, -np.inf, np.nan, np.inf)
MOMENTUM_VALID = (DEFAULT, 0, 0.0, 0.1, 0.5, 1, 1.0, np.float32(0.25))
MOMENTUM_INVALID = (-0.1, 1.5, np.nan, np.inf)


# --------------------------------------------------------------------------- value makers


@contextlib.contextmanager
def quiet():
    """No warnings from the test's own casts and from the reference."""
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        yield


def float_dtype(obj):
    """The dtype fastnorm computes in for the array-like `obj`, or None when unsupported."""
    dt = np.asarray(obj).dtype
    if dt.kind == "f" and dt.itemsize in (4, 8):
        return dt.newbyteorder("=")
    return None


def cast(values, dtype):
    """float64 `values` as an array of `dtype` (any kind)."""
    dtype = np.dtype(dtype)
    with quiet():
        if dtype.kind == "f":
            return values.astype(dtype)
        if dtype.kind in "iu":
            return np.nan_to_num(np.round(np.clip(3 * values, -1e6, 1e6))).astype(dtype)
        if dtype.kind == "b":
            return values > 0
        if dtype.kind == "c":
            return (values + 0.5j * values).astype(dtype)
        return values.astype(object)


def to_ref(obj, dtype):
    """The float64 values the kernels see for `obj`: cast to the computing `dtype` first."""
    if obj is None:
        return None
    a = np.asarray(obj)
    with quiet():
        if dtype is not None and a.dtype.kind in "fiu":
            a = a.astype(dtype)
        return np.array(a, dtype=np.float64)


def snapshot(a):
    return np.ascontiguousarray(a).tobytes()


class Gen:
    """Draws from hypothesis: choices directly, bulk values from a seeded generator.

    Each example runs in one of three modes: "valid" draws only valid arguments, "one_fault"
    at most one invalid choice, "any" as many as come up."""

    def __init__(self, data):
        self._data = data
        self.rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1), label="seed"))
        self.mode = self.pick(("valid", "valid", "one_fault", "any"), label="mode")
        self.faults = 0

    def pick(self, options, label=None):
        return self._data.draw(st.sampled_from(options), label=label)

    def integer(self, lo, hi, label=None):
        return self._data.draw(st.integers(lo, hi), label=label)

    def choose(self, valid, invalid=(), label=None):
        """One of `valid`, or of `invalid` where the mode still allows a fault."""
        if self.mode == "valid" or (self.mode == "one_fault" and self.faults):
            invalid = ()
        options = (*valid, *invalid)
        i, value = self.pick(list(enumerate(options)), label=label)
        if i >= len(valid):
            self.faults += 1
        return value

    def shape(self, min_ndim=0, max_ndim=4):
        """A shape; fewer than `min_ndim` dimensions count as a fault."""
        ndim = self.choose(range(min_ndim, max_ndim + 1), range(min_ndim), label="ndim")
        shape = [self.pick(SIZES) for _ in range(ndim)]
        while math.prod(shape) > MAX_ELEMENTS:
            shape[shape.index(max(shape))] = 3
        return tuple(shape)

    def values(self, shape, dtype, *, positive=False):
        """float64 values meant for an array of `dtype` (None: an unsupported dtype)."""
        mode = self.pick(VALUE_MODES, label="values")
        base = self.rng.standard_normal(shape)
        if mode == "offset":
            v = 1e4 + 1e-3 * base
        elif mode == "constant":
            v = np.full(shape, self.pick((0.0, -2.5, 1e7, 3e9)))
        elif mode == "scaled":
            v = np.clip(base, -3.0, 3.0) * self.pick(SCALES.get(dtype, (1e-3, 1e3)))
        elif mode == "specials":
            v = base.copy()
            if v.size:
                big = {F32: 3e38, F64: 1e300}.get(dtype, 6e4)
                sub = {F32: 1e-40, F64: 5e-320}.get(dtype, 1e-7)
                specials = (np.nan, np.inf, -np.inf, 1e-30, -1e30, big, sub, 0.0)
                k = self.integer(1, 3)
                for i in self.rng.integers(0, v.size, k):
                    v.flat[i] = self.pick(specials)
        else:
            v = base
        if positive:
            v = np.abs(v) + 0.5
        return np.array(v, dtype=np.float64)

    def arrange(self, a, layouts=LAYOUTS):
        """`a` laid out in memory in a drawn way (the values may change for 'broadcast')."""
        kind = self.pick(layouts, label="layout")
        if a.ndim == 0 and kind in ("reversed", "stepped"):
            kind = "contiguous"
        if kind == "transposed":
            return np.array(a, order="F")
        if kind == "reversed":
            idx = (slice(None, None, -1),) * a.ndim
            return np.ascontiguousarray(a[idx])[idx]
        if kind == "stepped":
            big = np.zeros(tuple(2 * s + 1 for s in a.shape), a.dtype)
            view = big[(slice(1, None, 2),) * a.ndim]
            view[...] = a
            return view
        if kind == "broadcast":
            if a.ndim == 0:
                return np.broadcast_to(a, ())
            ax = self.integer(0, a.ndim - 1)
            src = a[tuple(slice(0, 1) if i == ax else slice(None) for i in range(a.ndim))]
            return np.broadcast_to(src, a.shape)
        if kind == "byteswapped" and a.dtype.kind in "fc":
            return a.astype(a.dtype.newbyteorder("S"))
        if kind == "misaligned" and a.dtype.kind in "fiuc":
            raw = np.zeros(a.nbytes + a.itemsize, np.uint8)
            view = raw[1 : 1 + a.nbytes].view(a.dtype).reshape(a.shape)
            view[...] = a
            return view
        if kind == "list" and a.ndim and a.size:
            return a.tolist()
        return a


# --------------------------------------------------------------------------- one call


@dataclasses.dataclass
class Case:
    """One fastnorm call, the reference call it is judged by, and what may change."""

    gen: Gen
    call: Callable[[], object] | None = None
    ref: Callable[[], object] | None = None
    dtype: np.dtype | None = None
    errors: list = dataclasses.field(default_factory=list)
    first_error: tuple | None = None
    out: object = None
    running: list = dataclasses.field(default_factory=list)
    arrays: list = dataclasses.field(default_factory=list)
    ref_values: list = dataclasses.field(default_factory=list)
    dx_scale: Callable[[], float] | None = None
    updates_running: bool = False

    # ---- bookkeeping

    def expect(self, reason, exc=None, *, first=False):
        """The call must raise (with `exc` when `first` and nothing failed before)."""
        self.errors.append(reason)
        if first and self.first_error is None:
            self.first_error = (reason, exc)

    def track(self, obj, dtype=None, *, running=False):
        """Register an argument: arrays are checked for changes; returns its reference
        values (cast to `dtype`, the computing dtype, unless it is a running statistic)."""
        if isinstance(obj, np.ndarray):
            self.arrays.append(obj)
        if obj is None:
            return None
        r = to_ref(obj, None if running else (dtype or self.dtype))
        if r.dtype == np.float64:
            self.ref_values.append(r)
        return r

    def reliable(self):
        lo, hi = SAFE_MAGNITUDES
        for r in self.ref_values:
            m = np.abs(r[np.isfinite(r) & (r != 0)])
            if m.size and (m.min() < lo or m.max() > hi):
                return False
        return True

    # ---- drawn arguments

    def input(self, shape=None, values=None, *, min_ndim=0, name="x"):
        """The primary array input: its dtype decides the computing dtype."""
        g = self.gen
        dtype = g.choose((F32, F32, F64, F64), UNSUPPORTED_DTYPES, label=f"{name} dtype")
        if shape is None:
            shape = g.shape(min_ndim)
        if values is None:
            values = g.values(shape, dtype if dtype in (F32, F64) else None)
        x = g.arrange(cast(values, dtype))
        self.dtype = float_dtype(x)
        if self.dtype is None:
            self.expect(f"{name} of dtype {np.asarray(x).dtype}", TypeError, first=True)
        return x

    def axis(self, ndim, default, *, min_ndim=1, lowest=0):
        """(axis argument, normalized axis or None); axes below `lowest` are not drawn as
        valid ones."""
        g = self.gen
        valid = ("default", "valid", "valid", "numpy") if ndim > lowest else ("default",)
        invalid = ("out_of_range", "not_int", "below") if lowest else ("out_of_range", "not_int")
        kind = g.choose(valid, invalid, label="axis")
        if kind == "default":
            axis, value = DEFAULT, default
        elif kind in ("valid", "numpy") and ndim > lowest:
            value = g.integer(lowest, ndim - 1) - g.pick((0, ndim))
            axis = np.int64(value) if kind == "numpy" else value
        elif kind == "below" and ndim:
            axis = value = g.integer(0, min(lowest, ndim) - 1) - g.pick((0, ndim))
        elif kind == "not_int":
            axis = value = g.pick((1.0, "0", None))
        else:
            axis = value = g.pick((ndim, -ndim - 1, 99))
        if isinstance(value, int) and -ndim <= value < ndim:
            return axis, value % ndim
        if ndim >= min_ndim:
            exc = TypeError if kind == "not_int" else AxisError
            self.expect(f"axis {axis!r} for {ndim} dimensions", exc, first=True)
        else:
            self.expect(f"axis {axis!r} for {ndim} dimensions")
        return axis, None

    def eps(self):
        eps = self.gen.choose(EPS_VALID, EPS_INVALID, label="eps")
        if eps is not DEFAULT and not float(eps) >= 0.0:
            self.expect(f"eps={eps!r}")
        return eps

    def momentum(self):
        m = self.gen.choose(MOMENTUM_VALID, MOMENTUM_INVALID, label="momentum")
        if m is not DEFAULT and not 0.0 <= float(m) <= 1.0:
            self.expect(f"momentum={m!r}")
        return m

    def like(self, shape, name, *, positive=False, values=None, optional=False):
        """A parameter, gradient or statistic that must have `shape`, cast to x's dtype."""
        g = self.gen
        valid = ("same", "same", "same", "same", "float32", "float64", "int32", "float16", "list")
        kind = g.choose(
            ("none", *valid) if optional else valid,
            ("bool", "complex", "wrong_shape", "scalar"),
            label=f"{name} kind",
        )
        if kind == "none":
            return None, None
        dt = self.dtype or F64
        if values is None or kind in ("wrong_shape", "scalar"):
            if kind == "wrong_shape":
                shape = (*shape, 2) if g.pick((True, False)) else (math.prod(shape) + 1,)
            elif kind == "scalar":
                shape = ()
            values = g.values(shape, dt, positive=positive)
        arr_dtype = {
            "float32": F32, "float64": F64, "int32": np.int32, "float16": F16,
            "bool": np.bool_, "complex": np.complex64,
        }.get(kind, dt)  # fmt: skip
        a = cast(values, arr_dtype)
        if kind in ("same", "float32", "float64"):
            a = g.arrange(a)
        elif kind == "list" and a.ndim and a.size:
            a = a.tolist()
        return a, self.track(a)

    def out_array(self, x, shape):
        g = self.gen
        kind = g.choose(
            ("none", "none", "none", "right", "stepped", "x", "alias"),
            ("wrong_shape", "wrong_dtype", "readonly", "list"),
            label="out",
        )
        dt = self.dtype or F64
        writeable_x = (
            isinstance(x, np.ndarray) and x.dtype == dt and x.flags.writeable and x.ndim > 0
        )
        if kind in ("x", "alias") and not isinstance(x, np.ndarray):
            kind = "right"
        if kind == "alias" and not writeable_x:
            kind = "right"
        if kind == "none":
            return DEFAULT
        if kind == "x":
            out = x
            if x.dtype != dt:
                self.expect(f"out=x of dtype {x.dtype}")
            elif not x.flags.writeable:
                self.expect("out=x read-only")
        elif kind == "alias":
            out = x[::-1]
        elif kind == "stepped":
            big = np.full(tuple(2 * s for s in shape), 7.0, dt)
            out = big[(slice(None, None, 2),) * len(shape)]
        elif kind == "wrong_shape":
            out = np.full((*shape, 1), 7.0, dt)
            self.expect("out of the wrong shape")
        elif kind == "wrong_dtype":
            out = np.full(shape, 7.0, g.pick((F32 if dt == F64 else F64, np.int32, F16)))
            self.expect("out of the wrong dtype")
        elif kind == "readonly":
            out = np.full(shape, 7.0, dt)
            out.flags.writeable = False
            self.expect("read-only out")
        elif kind == "list":
            out = np.full(shape, 7.0, dt).tolist()
            self.expect("out that is not an ndarray")
        else:
            out = np.full(shape, 7.0, dt)
        self.out = out
        if isinstance(out, np.ndarray):
            self.arrays.append(out)
        return out

    def running_stats(self, C, training, second=None):
        """(running_mean, running_var) for fastnorm and their float64 copies for the
        reference, which updates those in place. ``second``: (name, shape) of another
        second statistic (iter_norm's running_whitening), drawn with any sign."""
        g = self.gen
        dtype = g.pick((F32, F64, F64), label="running dtype")
        valid = ("none", "same", "same") if training else ("same",)
        invalid = ("list", "readonly", "stepped", "int32", "float16", "byteswapped",
                   "wrong_shape", "other_dtype")  # fmt: skip
        if not training:
            invalid = ("none", *invalid)
        pair = []
        stats = (("running_mean", (C,), False),
                 (*(second or ("running_var", (C,))), second is None))
        for name, shape, var in stats:
            kind = g.choose(valid, invalid, label=name)
            if kind == "none":
                if not training:
                    self.expect(f"training=False without {name}")
                pair.extend((None, None))
                continue
            if kind == "wrong_shape":
                shape = (shape[0] + 1, *shape[1:])
            n = math.prod(shape)
            v = g.values(shape, F64, positive=var)
            if kind == "stepped":
                a = np.zeros(2 * n + 1, dtype)[1::2].reshape(shape)
                a[...] = cast(v, dtype)
            else:
                a = cast(v, {
                    "int32": np.dtype(np.int32), "float16": F16,
                    "byteswapped": dtype.newbyteorder("S"),
                    "other_dtype": F32 if dtype == F64 else F64,
                }.get(kind, dtype))  # fmt: skip
            if kind == "list":
                a = a.tolist()
            if kind == "readonly":
                a.flags.writeable = False
            if kind not in ("same", "other_dtype") and not (kind == "stepped" and n <= 1):
                self.expect(f"{name} ({kind})")
            r = self.track(a, running=True)
            if isinstance(a, np.ndarray):
                self.running.append((a, r))
            pair.extend((a, r))
        rm, rv = pair[0], pair[2]
        if isinstance(rm, np.ndarray) and isinstance(rv, np.ndarray) and rm.dtype != rv.dtype:
            self.expect(f"running statistics of dtypes {rm.dtype} and {rv.dtype}")
        return pair

    # ---- the check

    def check(self):
        snaps = [(a, snapshot(a)) for a in self.arrays]
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                result = self.call()
        except CONTRACT_ERRORS as exc:
            check_warnings(caught)
            if self.first_error is not None and self.first_error[1] is not None:
                reason, want = self.first_error
                assert isinstance(exc, want), (
                    f"{reason}: expected {want.__name__}, got {type(exc).__name__}: {exc}"
                )
            for a, s in snaps:
                assert snapshot(a) == s, f"an argument changed although the call raised {exc!r}"
            return
        check_warnings(caught)
        assert not self.errors, f"no exception although: {'; '.join(self.errors)}"
        assert self.dtype is not None
        expected, perturbed = self.reference()
        out = self.out if isinstance(self.out, np.ndarray) else None
        for a, s in snaps:
            changes = out is not None and np.may_share_memory(a, out)
            if self.updates_running and any(a is r for r, _ in self.running):
                continue
            if not changes:
                assert snapshot(a) == s, "an input array was modified"
        if out is not None:
            y = result[0] if isinstance(result, tuple) else result
            assert y is out, "the result is not the out= array"
        if not self.reliable():
            compare_tree(result, expected, self.dtype, None, "result")
            return
        scale = self.dx_scale() if self.dx_scale else 0.0
        compare_tree(result, expected, self.dtype, perturbed[0], "result", scale)
        for i, (a, r) in enumerate(self.running):
            changes = [p[i] for p in perturbed[1]]
            compare_values(a, r, a.dtype, changes, f"running statistic {i}")

    def reference(self):
        """(expected results, (perturbed results, perturbed running statistics)); the
        running statistics passed to the reference end up as the unperturbed call left them."""
        saved = [r.copy() for r in self.ref_values]
        try:
            with quiet():
                expected = self.ref()
        except Exception as exc:  # the reference rejects what fastnorm accepted
            raise AssertionError(f"fastnorm returned; the reference raised {exc!r}") from exc
        running = [r.copy() for _, r in self.running]
        rel = PERTURBATION * float(np.finfo(self.dtype).eps)
        results, stats = [], []
        for _ in range(2):
            try:
                with quiet():
                    for r, s in zip(self.ref_values, saved, strict=True):
                        r[...] = s * (1.0 + rel * self.gen.rng.uniform(-1.0, 1.0, s.shape))
                    results.append(self.ref())
            except Exception:
                results.append(None)
            stats.append([r.copy() for _, r in self.running])
        for r, s in zip(self.ref_values, saved, strict=True):
            r[...] = s
        for (_, r), v in zip(self.running, running, strict=True):
            r[...] = v
        return expected, (results, stats)


def check_warnings(caught):
    """Floating-point RuntimeWarnings of NumPy operations on non-finite or out-of-range values
    are tolerated; any other warning is a failure."""
    other = [w for w in caught if not issubclass(w.category, RuntimeWarning)]
    assert not other, f"warning: {other[0].category.__name__}: {other[0].message}"


def sensitivity(expected, perturbed):
    """The largest change of the reference under the input perturbations: per element, at
    least the largest finite change over the whole array (a single element's change can be
    small by chance), inf where a perturbed value is not finite."""
    sens = np.zeros(expected.shape)
    for p in perturbed:
        if p is None or np.shape(p) != expected.shape:
            continue
        with np.errstate(all="ignore"):
            d = np.abs(np.asarray(p, dtype=np.float64) - expected)
        sens = np.maximum(sens, np.where(np.isfinite(d), d, np.inf))
    finite = sens[np.isfinite(sens)]
    return np.maximum(sens, finite.max()) if finite.size else sens


def compare_values(actual, expected, dtype, perturbed, what, scale=0.0):
    """`actual` (of `dtype`) against float64 `expected` where that is finite and fits dtype;
    `perturbed`: the reference's values for slightly perturbed inputs; `scale`: a magnitude
    of the terms the result is computed from, when larger than the result's own."""
    fi = np.finfo(dtype)
    mask = np.isfinite(expected) & (np.abs(expected) <= fi.max)
    if not mask.any():
        return
    e = expected[mask]
    a = np.asarray(actual)[mask].astype(np.float64)
    tol = TOL[np.dtype(dtype)]
    scale = max(1.0, float(np.abs(e).max()), scale)
    sens = sensitivity(expected, perturbed)[mask]
    floor = 4 * float(fi.smallest_subnormal)
    with np.errstate(over="ignore"):
        bound = tol * np.abs(e) + tol * scale + SENSITIVITY * sens + floor
    # where the perturbations change the reference by as much as its own magnitude, its
    # value is a rounding artifact (eps = 0 on a constant group): NaN/inf is then acceptable
    ill_posed = sens >= np.abs(e)
    bad = ~(np.abs(a - e) <= bound) & ~(ill_posed & ~np.isfinite(a))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise AssertionError(
            f"{what}: {int(bad.sum())} of {e.size} values differ from the reference, "
            f"first: {a[i]!r} != {e[i]!r} (bound {bound[i]:.3g})"
        )


def compare_tree(actual, expected, dtype, perturbed, what, dx_scale=0.0):
    """Structure, dtypes and shapes; values too unless `perturbed` (a list of the perturbed
    reference results) is None. `dx_scale` applies to the first array of the result."""
    if expected is None:
        assert actual is None, f"{what}: expected None"
        return
    if isinstance(expected, tuple):
        assert isinstance(actual, tuple) and len(actual) == len(expected), (
            f"{what}: expected a tuple of {len(expected)}, got {type(actual).__name__}"
        )
        for i, (a, e) in enumerate(zip(actual, expected, strict=True)):
            sub = None if perturbed is None else [p and p[i] for p in perturbed]
            compare_tree(a, e, dtype, sub, f"{what}[{i}]", dx_scale if i == 0 else 0.0)
        return
    assert isinstance(actual, np.ndarray), f"{what}: not an ndarray but {type(actual)}"
    assert actual.dtype == dtype, f"{what}: dtype {actual.dtype}, expected {dtype}"
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    if perturbed is not None:
        compare_values(actual, expected, dtype, perturbed, what, dx_scale)


def term_scale(*arrays):
    """The product of the largest finite magnitudes of `arrays` (None counts as 1): the size
    of terms like rstd * dy * weight, which cancel exactly in the reference for groups of one
    element but only to rounding in a kernel."""
    scale = 1.0
    for a in arrays:
        if a is not None:
            m = np.abs(a[np.isfinite(a)])
            scale *= float(m.max()) if m.size else 1.0
    return scale


def kwargs(**kw):
    return {k: v for k, v in kw.items() if v is not DEFAULT}


def saved_stats(case, forward, shapes, names, positive):
    """Statistics for a backward call: the reference forward's (cast to x's dtype), or
    random ones, in drawn variants. Returns (objects for fastnorm, reference values)."""
    stats = None
    if forward is not None and case.dtype is not None:
        try:
            with quiet():
                stats = forward()
        except Exception:
            stats = None
    objs, refs = [], []
    for i, (shape, name) in enumerate(zip(shapes, names, strict=True)):
        values = None if stats is None else stats[i]
        if values is not None and values.shape != shape:
            values = None
        if case.gen.pick(("forward", "forward", "forward", "random")) == "random":
            values = None
        obj, r = shaped(case, shape, name, positive=positive[i], values=values)
        objs.append(obj)
        refs.append(r)
    return objs, refs


def shaped(case, shape, name, *, positive=False, optional=False, values=None):
    obj, r = case.like(shape, name, positive=positive, optional=optional, values=values)
    if obj is not None and np.shape(obj) != shape:
        case.expect(f"{name} of shape {np.shape(obj)}, expected {shape}")
    return obj, r


# --------------------------------------------------------------------------- rows family


def build_rows(gen, op, backward):
    rms = op == "rms_norm"
    case = Case(gen)
    x = case.input(min_ndim=1)
    xa = np.asarray(x)
    axis, ax = case.axis(xa.ndim, -1)
    ax = max(xa.ndim - 1, 0) if ax is None else ax
    norm_shape, batch_shape = xa.shape[ax:], xa.shape[:ax]
    xr = case.track(x)
    w, wr = shaped(case, norm_shape, "weight", optional=True)
    if not backward:
        b, br = (None, None) if rms else shaped(case, norm_shape, "bias", optional=True)
        eps = case.eps()
        out = case.out_array(x, xa.shape)
        kw = kwargs(axis=axis, eps=eps, return_stats=gen.pick((DEFAULT, False, True)))
        fkw = kw if out is DEFAULT else {**kw, "out": out}
        if rms:
            case.call = lambda: fn.rms_norm(x, w, **fkw)
            case.ref = lambda: ref.rms_norm(xr, wr, **kw)
        else:
            case.call = lambda: fn.layer_norm(x, w, b, **fkw)
            case.ref = lambda: ref.layer_norm(xr, wr, br, **kw)
        return case
    kw = kwargs(axis=axis)
    dy, dyr = shaped(case, xa.shape, "dy")
    out = case.out_array(dy, xa.shape)  # dx; "x" draws out=dy, in place
    fkw = kw if out is DEFAULT else {**kw, "out": out}
    fwd_eps = gen.pick((0.0, 1e-5, 1.0))
    if rms:
        (rstd,), (rr,) = saved_stats(
            case,
            lambda: ref.rms_norm(xr, axis=ax, eps=fwd_eps, return_stats=True)[1:],
            [batch_shape], ["rstd"], [True],
        )  # fmt: skip
        case.call = lambda: fn.rms_norm_backward(dy, x, rstd, w, **fkw)
        case.dx_scale = lambda: term_scale(dyr, rr, wr)
        case.ref = lambda: ref.rms_norm_backward(dyr, xr, rr, wr, **kw)
    else:
        (mean, rstd), (mr, rr) = saved_stats(
            case,
            lambda: ref.layer_norm(xr, axis=ax, eps=fwd_eps, return_stats=True)[1:],
            [batch_shape, batch_shape], ["mean", "rstd"], [False, True],
        )  # fmt: skip
        case.call = lambda: fn.layer_norm_backward(dy, x, mean, rstd, w, **fkw)
        case.dx_scale = lambda: term_scale(dyr, rr, wr)
        case.ref = lambda: ref.layer_norm_backward(dyr, xr, mr, rr, wr, **kw)
    return case


def build_add_rows(gen, op, backward):
    """add_layer_norm / add_rms_norm: the rows' arguments plus residual (forward) or ds and
    s in place of x (backward)."""
    rms = op == "add_rms_norm"
    case = Case(gen)
    x = case.input(min_ndim=1, name="s" if backward else "x")
    xa = np.asarray(x)
    axis, ax = case.axis(xa.ndim, -1)
    ax = max(xa.ndim - 1, 0) if ax is None else ax
    norm_shape, batch_shape = xa.shape[ax:], xa.shape[:ax]
    xr = case.track(x)
    w, wr = shaped(case, norm_shape, "weight", optional=True)
    if not backward:
        res, resr = shaped(case, xa.shape, "residual")
        b, br = (None, None) if rms else shaped(case, norm_shape, "bias", optional=True)
        eps = case.eps()
        out = case.out_array(x, xa.shape)
        kw = kwargs(axis=axis, eps=eps, return_stats=gen.pick((DEFAULT, False, True)))
        fkw = kw if out is DEFAULT else {**kw, "out": out}
        # the statistics are those of s rounded to x's dtype: the reference rounds it too
        rkw = {**kw, "residual_dtype": case.dtype}
        if rms:
            case.call = lambda: fn.add_rms_norm(x, res, w, **fkw)
            case.ref = lambda: ref.add_rms_norm(xr, resr, wr, **rkw)
        else:
            case.call = lambda: fn.add_layer_norm(x, res, w, b, **fkw)
            case.ref = lambda: ref.add_layer_norm(xr, resr, wr, br, **rkw)
        return case
    kw = kwargs(axis=axis)
    dy, dyr = shaped(case, xa.shape, "dy")
    ds, dsr = shaped(case, xa.shape, "ds", optional=True)
    out = case.out_array(dy, xa.shape)  # dx; "x" draws out=dy, in place
    fkw = kw if out is DEFAULT else {**kw, "out": out}
    fwd_eps = gen.pick((0.0, 1e-5, 1.0))
    case.dx_scale = lambda: max(term_scale(dyr, rr, wr), term_scale(dsr) if ds is not None else 0)
    if rms:
        (rstd,), (rr,) = saved_stats(
            case,
            lambda: ref.rms_norm(xr, axis=ax, eps=fwd_eps, return_stats=True)[1:],
            [batch_shape], ["rstd"], [True],
        )  # fmt: skip
        case.call = lambda: fn.add_rms_norm_backward(dy, ds, x, rstd, w, **fkw)
        case.ref = lambda: ref.add_rms_norm_backward(dyr, dsr, xr, rr, wr, **kw)
    else:
        (mean, rstd), (mr, rr) = saved_stats(
            case,
            lambda: ref.layer_norm(xr, axis=ax, eps=fwd_eps, return_stats=True)[1:],
            [batch_shape, batch_shape], ["mean", "rstd"], [False, True],
        )  # fmt: skip
        case.call = lambda: fn.add_layer_norm_backward(dy, ds, x, mean, rstd, w, **fkw)
        case.ref = lambda: ref.add_layer_norm_backward(dyr, dsr, xr, mr, rr, wr, **kw)
    return case


# --------------------------------------------------------------------------- channels family


def channel_layout(case, xa, name, lowest=0):
    """(axis argument, normalized axis, C, other-axes count n) for a channel-axis op."""
    if xa.ndim < 2:
        case.expect(f"{name} of a {xa.ndim}-d input", ValueError, first=True)
    axis, ax = case.axis(xa.ndim, 1, min_ndim=2, lowest=lowest)
    if ax is None or xa.ndim < 2:
        return axis, ax, case.gen.pick((0, 1, 3, 4)), 2
    C = xa.shape[ax]
    n = math.prod(s for i, s in enumerate(xa.shape) if i != ax)
    return axis, ax, C, n


def build_batch_norm(gen, backward):
    case = Case(gen)
    x = case.input(min_ndim=2)
    xa = np.asarray(x)
    xr = case.track(x)
    axis, ax, C, n = channel_layout(case, xa, "batch_norm")
    w, wr = shaped(case, (C,), "weight", optional=True)
    training = gen.pick((DEFAULT, True, False, 1, 0, np.True_, np.False_), label="training")
    is_training = True if training is DEFAULT else bool(training)
    if backward:
        dy, dyr = shaped(case, xa.shape, "dy")
        fwd_eps = gen.pick((0.0, 1e-5, 1.0))
        (mean, rstd), (mr, rr) = saved_stats(
            case,
            lambda: ref.batch_norm(xr, axis=ax, eps=fwd_eps, return_stats=True)[1:],
            [(C,), (C,)], ["mean", "rstd"], [False, True],
        )  # fmt: skip
        kw = kwargs(axis=axis, training=training)
        out = case.out_array(dy, xa.shape)
        fkw = kw if out is DEFAULT else {**kw, "out": out}
        case.call = lambda: fn.batch_norm_backward(dy, x, mean, rstd, w, **fkw)
        case.dx_scale = lambda: term_scale(dyr, rr, wr)
        case.ref = lambda: ref.batch_norm_backward(dyr, xr, mr, rr, wr, **kw)
        return case
    b, br = shaped(case, (C,), "bias", optional=True)
    rm, rmr, rv, rvr = case.running_stats(C, is_training)
    case.updates_running = is_training
    if xa.ndim >= 2 and is_training and n == 1:
        case.expect("one value per channel in training mode")
    eps = case.eps()
    momentum = case.momentum()
    out = case.out_array(x, xa.shape)
    kw = kwargs(
        training=training, momentum=momentum, eps=eps, axis=axis,
        return_stats=gen.pick((DEFAULT, False, True)),
    )  # fmt: skip
    fkw = kw if out is DEFAULT else {**kw, "out": out}
    case.call = lambda: fn.batch_norm(x, w, b, rm, rv, **fkw)
    case.ref = lambda: ref.batch_norm(xr, wr, br, rmr, rvr, **kw)
    return case


def moments_in(dtype, result):
    """batch_moments / merge_moments return int64 counts and float64 statistics whatever
    x's dtype (checked here and in tests/test_moments.py); compared in x's dtype."""
    count, mean, m2 = result
    assert count.dtype == np.int64 and mean.dtype == F64 and m2.dtype == F64
    with quiet():
        return tuple(a.astype(dtype) for a in result)


def draw_group_size(case):
    """iter_norm's group_size: (argument, its value for the reference's shapes)."""
    gen = case.gen
    kind = gen.choose(("default", "small", "small", "numpy"), ("zero", "negative", "float",
                                                               "bool"), label="group_size")
    if kind == "default":
        return DEFAULT, 16
    if kind in ("small", "numpy"):
        d = gen.pick((1, 2, 3, 4, 5))
        return (np.int64(d) if kind == "numpy" else d), d
    if kind == "bool":
        case.expect("group_size=True", TypeError)
        return True, 1
    case.expect(f"group_size ({kind})")
    return {"zero": 0, "negative": -2, "float": 2.0}[kind], 2


def draw_iterations(case):
    kind = case.gen.choose((DEFAULT, 0, 1, 3), ("negative",), label="iterations")
    if kind == "negative":
        case.expect("iterations=-1")
        return -1
    return kind


def build_iter_norm(gen, backward):
    case = Case(gen)
    x = case.input(min_ndim=2)
    xa = np.asarray(x)
    xr = case.track(x)
    axis, ax, C, _ = channel_layout(case, xa, "iter_norm")
    gs, d = draw_group_size(case)
    iterations = draw_iterations(case)
    G = -(-C // d) if C else 0
    w, wr = shaped(case, (C,), "weight", optional=True)
    training = gen.pick((DEFAULT, True, False), label="training")
    is_training = True if training is DEFAULT else bool(training)
    if backward:
        dy, dyr = shaped(case, xa.shape, "dy")
        (mean,), (mr,) = saved_stats(
            case, lambda: ref.iter_norm(xr, axis=ax, group_size=d, return_stats=True)[1:2],
            [(C,)], ["mean"], [False])  # fmt: skip
        wh = whr = None
        if not is_training:
            wh, whr = shaped(case, (G, d, d), "whitening")
        kw = kwargs(axis=axis, training=training, group_size=gs, iterations=iterations)

        def whitening_used():
            if not is_training:
                return whr
            with quiet():
                return ref.iter_norm(xr, axis=ax, group_size=d, iterations=iterations
                                     if iterations is not DEFAULT else 5, return_stats=True)[2]

        # dx = Wᵀ g - mean(Wᵀ g) + ...: terms of size |W| |dy| |w| cancel to rounding
        case.dx_scale = lambda: term_scale(dyr, wr, whitening_used())
        out = case.out_array(dy, xa.shape)
        fkw = kw if out is DEFAULT else {**kw, "out": out}
        case.call = lambda: fn.iter_norm_backward(dy, x, mean, w, whitening=wh, **fkw)
        case.ref = lambda: ref.iter_norm_backward(dyr, xr, mr, wr, whitening=whr, **kw)
        return case
    b, br = shaped(case, (C,), "bias", optional=True)
    rm, rmr, rw, rwr = case.running_stats(C, is_training, ("running_whitening", (G, d, d)))
    case.updates_running = is_training
    eps = case.eps()
    momentum = case.momentum()
    out = case.out_array(x, xa.shape)
    kw = kwargs(training=training, momentum=momentum, eps=eps, axis=axis, group_size=gs,
                iterations=iterations, return_stats=gen.pick((DEFAULT, False, True)))
    fkw = kw if out is DEFAULT else {**kw, "out": out}
    case.call = lambda: fn.iter_norm(x, w, b, rm, rw, **fkw)
    case.ref = lambda: ref.iter_norm(xr, wr, br, rmr, rwr, **kw)
    return case


def build_moments(gen, merge):
    case = Case(gen)
    x = case.input(min_ndim=2)
    xa = np.asarray(x)
    xr = case.track(x)
    axis, ax, C, n = channel_layout(case, xa, "batch_moments")
    kw = kwargs(axis=axis)
    if not merge or ax is None or xa.ndim < 2:
        parts, refs = [x], [xr]
    else:
        # the batch cut along another axis into parts of drawn sizes, empty ones included
        cut = 1 if ax == 0 else 0
        k = gen.integer(1, 4)
        bounds = sorted(gen.integer(0, xa.shape[cut]) for _ in range(k - 1))
        bounds = [0, *bounds, xa.shape[cut]]
        index = [(slice(None),) * cut + (slice(a, b),) for a, b in itertools.pairwise(bounds)]
        parts, refs = [xa[i] for i in index], [xr[i] for i in index]
    if merge:
        case.call = lambda: moments_in(
            case.dtype, fn.merge_moments(*[fn.batch_moments(p, **kw) for p in parts])
        )
        case.ref = lambda: ref.merge_moments(*[ref.batch_moments(r, **kw) for r in refs])
    else:
        case.call = lambda: moments_in(case.dtype, fn.batch_moments(x, **kw))
        case.ref = lambda: ref.batch_moments(xr, **kw)
    return case


def draw_groups(case, C):
    gen = case.gen
    divisors = [d for d in range(1, C + 1) if C % d == 0] or [1, 2, 3]
    kind = gen.choose(
        ("divisor", "divisor", "divisor", "numpy"),
        ("non_divisor", "zero", "negative", "bool", "float"),
        label="groups",
    )
    if kind == "numpy":
        return np.int64(gen.pick(divisors))
    if kind == "non_divisor":
        others = [g for g in range(2, C + 2) if C % g]
        if others:
            case.expect("num_groups that does not divide C")
            return gen.pick(others)
    if kind == "zero":
        case.expect("num_groups=0")
        return 0
    if kind == "negative":
        case.expect("negative num_groups")
        return -gen.pick(divisors)
    if kind == "bool":
        return True
    if kind == "float":
        case.expect("num_groups=2.0")
        return 2.0
    return gen.pick(divisors)


def build_group_norm(gen, op, backward):
    instance = op == "instance_norm"
    case = Case(gen)
    x = case.input(min_ndim=2)
    xa = np.asarray(x)
    xr = case.track(x)
    axis, ax, C, _ = channel_layout(case, xa, op, lowest=1)
    if ax == 0:
        case.expect("channel axis 0", ValueError, first=True)
    G = C if instance else draw_groups(case, C)
    N = xa.shape[0] if xa.ndim else 1
    w, wr = shaped(case, (C,), "weight", optional=True)
    if backward:
        dy, dyr = shaped(case, xa.shape, "dy")
        fwd_eps = gen.pick((0.0, 1e-5, 1.0))
        g_ok = isinstance(G, int | np.integer) and not isinstance(G, bool) and G > 0
        stat_shape = (N, int(G)) if g_ok else (N, 1)
        kw = kwargs(axis=axis)

        def forward():
            if instance:
                return ref.instance_norm(xr, axis=ax, eps=fwd_eps, return_stats=True)[1:]
            return ref.group_norm(xr, G, axis=ax, eps=fwd_eps, return_stats=True)[1:]

        (mean, rstd), (mr, rr) = saved_stats(
            case, forward, [stat_shape, stat_shape], ["mean", "rstd"], [False, True]
        )
        case.dx_scale = lambda: term_scale(dyr, rr, wr)
        out = case.out_array(dy, xa.shape)
        fkw = kw if out is DEFAULT else {**kw, "out": out}
        if instance:
            case.call = lambda: fn.instance_norm_backward(dy, x, mean, rstd, w, **fkw)
            case.ref = lambda: ref.instance_norm_backward(dyr, xr, mr, rr, wr, **kw)
        else:
            case.call = lambda: fn.group_norm_backward(dy, x, mean, rstd, G, w, **fkw)
            case.ref = lambda: ref.group_norm_backward(dyr, xr, mr, rr, G, wr, **kw)
        return case
    b, br = shaped(case, (C,), "bias", optional=True)
    eps = case.eps()
    out = case.out_array(x, xa.shape)
    kw = kwargs(axis=axis, eps=eps, return_stats=gen.pick((DEFAULT, False, True)))
    fkw = kw if out is DEFAULT else {**kw, "out": out}
    if instance:
        case.call = lambda: fn.instance_norm(x, w, b, **fkw)
        case.ref = lambda: ref.instance_norm(xr, wr, br, **kw)
    else:
        case.call = lambda: fn.group_norm(x, G, w, b, **fkw)
        case.ref = lambda: ref.group_norm(xr, G, wr, br, **kw)
    return case


# --------------------------------------------------------------------------- vectors family


def build_l2_normalize(gen, backward):
    case = Case(gen)
    if not backward:
        x = case.input(min_ndim=1)
        xa = np.asarray(x)
        xr = case.track(x)
        axis, _ = case.axis(xa.ndim, -1)
        eps = case.eps()
        out = case.out_array(x, xa.shape)
        kw = kwargs(axis=axis, eps=eps, return_stats=gen.pick((DEFAULT, False, True)))
        fkw = kw if out is DEFAULT else {**kw, "out": out}
        case.call = lambda: fn.l2_normalize(x, **fkw)
        case.ref = lambda: ref.l2_normalize(xr, **kw)
        return case
    shape = gen.shape(1)
    x64 = gen.values(shape, F64)
    ndim = len(shape)
    pre_axis = gen.integer(-ndim, ndim - 1) if ndim else -1
    fwd_eps = gen.pick((0.0, 1e-12, 1.0))
    y64 = norm64 = None
    if ndim:
        with quiet():
            y64, norm64 = ref.l2_normalize(x64, axis=pre_axis, eps=fwd_eps, return_stats=True)
    from_forward = y64 is not None and gen.pick((True, True, False))
    y = case.input(shape, y64 if from_forward else None, name="y")
    yr = case.track(y)
    ya = np.asarray(y)
    axis, ax = case.axis(ya.ndim, -1)
    norm_shape = ya.shape[:ax] + ya.shape[ax + 1 :] if ax is not None else ya.shape[:-1]
    use_norm = from_forward and ax == pre_axis % max(ndim, 1) and norm64 is not None
    dy, dyr = shaped(case, ya.shape, "dy")
    norm, nr = shaped(case, norm_shape, "norm", positive=True, values=norm64 if use_norm else None)
    eps = case.eps()
    kw = kwargs(axis=axis, eps=eps)
    out = case.out_array(dy, ya.shape)
    fkw = kw if out is DEFAULT else {**kw, "out": out}
    case.call = lambda: fn.l2_normalize_backward(dy, y, norm, **fkw)
    case.ref = lambda: ref.l2_normalize_backward(dyr, yr, nr, **kw)
    return case


def draw_g(case, va, ax):
    """weight_norm's g: shape (C,) or v.ndim dims with ones except at axis, or wrong."""
    gen = case.gen
    C = va.shape[ax] if ax is not None and va.ndim else 2
    keep = tuple(C if i == ax else 1 for i in range(va.ndim))
    kind = gen.choose(("flat", "flat", "keep", "list", "int"), ("wrong", "bool"), label="g")
    shape = keep if kind == "keep" else (C,)
    if kind == "wrong":
        shape = (C + 1,)
        case.expect("g of the wrong shape")
    values = gen.values(shape, case.dtype, positive=True)
    if kind == "int":
        g = cast(values, np.int32)
    elif kind == "bool":
        g = cast(values, np.bool_)
    else:
        g = gen.arrange(cast(values, case.dtype or F64))
        if kind == "list" and isinstance(g, np.ndarray) and g.ndim and g.size:
            g = g.tolist()
    return g, case.track(g)


def build_weight_norm(gen, backward):
    case = Case(gen)
    v = case.input(min_ndim=1, name="v")
    va = np.asarray(v)
    vr = case.track(v)
    if va.ndim < 1:
        case.expect("a 0-d v", ValueError, first=True)
    axis, ax = case.axis(va.ndim, 0)
    g, gr = draw_g(case, va, ax)
    C = va.shape[ax] if ax is not None and va.ndim else 2
    if not backward:
        kw = kwargs(axis=axis, return_stats=gen.pick((DEFAULT, False, True)))
        case.call = lambda: fn.weight_norm(v, g, **kw)
        case.ref = lambda: ref.weight_norm(vr, gr, **kw)
        return case
    dw, dwr = shaped(case, va.shape, "dw")
    (norm,), (nr,) = saved_stats(
        case,
        lambda: ref.weight_norm(vr, gr, axis=ax, return_stats=True)[1:],
        [(C,)], ["norm"], [True],
    )  # fmt: skip
    kw = kwargs(axis=axis)
    out = case.out_array(dw, va.shape)  # dv
    fkw = kw if out is DEFAULT else {**kw, "out": out}
    case.call = lambda: fn.weight_norm_backward(dw, v, g, norm, **fkw)
    case.ref = lambda: ref.weight_norm_backward(dwr, vr, gr, nr, **kw)
    return case


def build_cosine_norm(gen, backward):
    case = Case(gen)
    N, D, M = gen.pick(SIZES[:9]), gen.pick(SIZES), gen.pick(SIZES[:9])
    ndim = gen.choose((2,), (1, 3), label="ndim")
    x = case.input((N, D, 2)[:ndim] if ndim <= 3 else (N, D))
    xa = np.asarray(x)
    xr = case.track(x)
    if xa.ndim != 2:
        case.expect(f"a {xa.ndim}-d x")
    D = xa.shape[1] if xa.ndim == 2 else D
    N = xa.shape[0] if xa.ndim == 2 else N
    w_shape = gen.choose(((M, D),), ((M, D + 1), (M,)), label="w shape")
    if len(w_shape) != 2 or w_shape[1] != D:
        case.expect(f"w of shape {w_shape} for x of shape {xa.shape}")
    kind = gen.choose(("same", "same", "other", "list"), ("int",), label="w kind")
    dt = case.dtype or F64
    w_dtype = {"other": F32 if dt == F64 else F64, "int": np.int32}.get(kind, dt)
    w = gen.arrange(cast(gen.values(w_shape, dt), w_dtype))
    if kind == "list" and isinstance(w, np.ndarray) and w.size:
        w = w.tolist()
    wr = case.track(w)
    eps = case.eps()
    if not backward:
        kw = kwargs(eps=eps, return_stats=gen.pick((DEFAULT, False, True)))
        case.call = lambda: fn.cosine_norm(x, w, **kw)
        case.ref = lambda: ref.cosine_norm(xr, wr, **kw)
        return case
    dy, dyr = shaped(case, (N, M), "dy")
    (x_norm, w_norm), (xnr, wnr) = saved_stats(
        case,
        lambda: ref.cosine_norm(xr, wr, return_stats=True)[1:],
        [(N,), (M,)], ["x_norm", "w_norm"], [True, True],
    )  # fmt: skip
    kw = kwargs(eps=eps)
    case.call = lambda: fn.cosine_norm_backward(dy, x, w, x_norm, w_norm, **kw)
    case.ref = lambda: ref.cosine_norm_backward(dyr, xr, wr, xnr, wnr, **kw)
    return case


# --------------------------------------------------------------------------- the tests

BUILDERS = {
    "layer_norm": functools.partial(build_rows, op="layer_norm", backward=False),
    "layer_norm_backward": functools.partial(build_rows, op="layer_norm", backward=True),
    "rms_norm": functools.partial(build_rows, op="rms_norm", backward=False),
    "rms_norm_backward": functools.partial(build_rows, op="rms_norm", backward=True),
    "add_layer_norm": functools.partial(build_add_rows, op="add_layer_norm", backward=False),
    "add_layer_norm_backward": functools.partial(build_add_rows, op="add_layer_norm",
                                                 backward=True),
    "add_rms_norm": functools.partial(build_add_rows, op="add_rms_norm", backward=False),
    "add_rms_norm_backward": functools.partial(build_add_rows, op="add_rms_norm", backward=True),
    "batch_norm": functools.partial(build_batch_norm, backward=False),
    "batch_norm_backward": functools.partial(build_batch_norm, backward=True),
    "iter_norm": functools.partial(build_iter_norm, backward=False),
    "iter_norm_backward": functools.partial(build_iter_norm, backward=True),
    "batch_moments": functools.partial(build_moments, merge=False),
    "merge_moments": functools.partial(build_moments, merge=True),
    "group_norm": functools.partial(build_group_norm, op="group_norm", backward=False),
    "group_norm_backward": functools.partial(build_group_norm, op="group_norm", backward=True),
    "instance_norm": functools.partial(build_group_norm, op="instance_norm", backward=False),
    "instance_norm_backward": functools.partial(
        build_group_norm, op="instance_norm", backward=True
    ),
    "l2_normalize": functools.partial(build_l2_normalize, backward=False),
    "l2_normalize_backward": functools.partial(build_l2_normalize, backward=True),
    "weight_norm": functools.partial(build_weight_norm, backward=False),
    "weight_norm_backward": functools.partial(build_weight_norm, backward=True),
    "cosine_norm": functools.partial(build_cosine_norm, backward=False),
    "cosine_norm_backward": functools.partial(build_cosine_norm, backward=True),
}


@pytest.fixture
def fuzz_examples(request):
    n = request.config.getoption("--fuzz-examples", default=None)
    return DEFAULT_EXAMPLES if n is None else n


def test_every_function_of_the_registry_is_fuzzed():
    """The fuzzer draws its own (often invalid) arguments, so it has its own builders; the
    list of functions they must cover is the op registry's (tests/test_ops.py checks that
    the registry covers the public API)."""
    assert set(BUILDERS) == {f for op in _ops.OPS for f in op.functions}


@pytest.mark.parametrize("name", list(BUILDERS))
def test_fuzz(name, fuzz_examples):
    build = BUILDERS[name]

    @settings(
        max_examples=fuzz_examples,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
        print_blob=False,
    )
    @seed(zlib.crc32(name.encode()))
    @given(st.data())
    def run(data):
        build(Gen(data)).check()

    run()
