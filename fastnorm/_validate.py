"""Argument checking shared by every public function: the one place where input is judged.

Each helper either returns an array ready for the C kernels (native-endian, aligned,
C-contiguous, of the computing dtype) or raises TypeError / ValueError / AxisError
with a message that says what was expected and what was received.

layer_norm, rms_norm, their backward passes and batch_norm first offer their arguments to
a fast path in C (fastnorm._kernels.*_fast) that runs the kernel only for calls it can prove
valid and of the common kind, and otherwise declines, leaving the call to these checks: an
error is always raised from here.
"""

import math
import operator

import numpy as np

from fastnorm import _kernels

try:
    from numpy.exceptions import AxisError
except ImportError:  # numpy < 1.25
    from numpy import AxisError

try:
    from numpy.lib.array_utils import normalize_axis_index
except ImportError:  # numpy < 2.0
    from numpy.core.multiarray import normalize_axis_index

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
_SUPPORTED = "float16, bfloat16 (ml_dtypes), float32 or float64"

__all__ = [
    "AxisError",
    "as_input",
    "as_like",
    "as_param",
    "check_eps",
    "check_momentum",
    "is_half",
    "stat_dtype",
    "contiguous",
    "make_out",
    "finish_out",
    "normalize_axis",
    "prod",
]

prod = math.prod


def is_half(dt):
    """True for the 16-bit types computed in float32: float16 and ml_dtypes' bfloat16."""
    return dt.itemsize == 2 and (dt.kind == "f" or dt.name == "bfloat16")


def stat_dtype(dt):
    """The dtype of the parameters, statistics and their gradients for input dtype `dt`:
    float32 for the half types, `dt` itself otherwise."""
    return np.dtype(np.float32) if dt.itemsize == 2 else dt


def as_input(x, name="x"):
    """`x` as an ndarray of a supported float dtype (not yet made contiguous)."""
    x = np.asarray(x)
    dt = x.dtype
    if dt in FLOAT_DTYPES:
        return x
    if dt.kind == "f" and dt.itemsize in (2, 4, 8):
        return x if dt.isnative else x.astype(dt.newbyteorder("="))
    if dt.name == "bfloat16" and dt.itemsize == 2 and dt.type.__module__.startswith("ml_dtypes"):
        return x
    raise TypeError(f"{name} must be {_SUPPORTED}, got dtype {dt}")


def contiguous(a):
    """`a` itself when the kernels can read it in place, else a C-ordered aligned copy."""
    f = a.flags
    if f.c_contiguous and f.aligned:
        return a
    return np.array(a, order="C", copy=True)


def _as_float(a, name, dtype):
    a = np.asarray(a)
    if a.dtype.kind not in "fiu" and not is_half(a.dtype):
        raise TypeError(f"{name} must be a real floating (or integer) array, got dtype {a.dtype}")
    return a


def cast(a, dtype):
    """`a` as a contiguous array of `dtype`; values beyond its range become inf, silently
    (the documented cast of parameters and statistics to the input's dtype)."""
    with np.errstate(over="ignore", invalid="ignore"):
        return np.ascontiguousarray(a, dtype=dtype)


def as_param(p, name, shape, dtype):
    """A per-element or per-channel parameter (weight, bias, ...): None, or an array of
    exactly `shape`, returned contiguous in the computing `dtype` (cast if needed)."""
    if p is None:
        return None
    p = _as_float(p, name, dtype)
    if p.shape != shape:
        raise ValueError(f"{name} must have shape {shape}, got {p.shape}")
    if p.dtype != dtype:
        return cast(p, dtype)
    return contiguous(p)


def as_like(a, name, shape, dtype):
    """An array that must match `shape` (a gradient, saved statistics): contiguous, cast
    to `dtype`."""
    a = _as_float(a, name, dtype)
    if a.shape != shape:
        raise ValueError(f"{name} must have shape {shape}, got {a.shape}")
    if a.dtype != dtype:
        return cast(a, dtype)
    return contiguous(a)


def _real(v, name):
    try:
        return float(v)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a real number, got {v!r}") from None


# The ranges themselves are defined once, in C (_kernels.eps_ok / momentum_ok), where the
# fast path applies them too.
def check_eps(eps):
    e = _real(eps, "eps")
    if not _kernels.eps_ok(e):
        raise ValueError(f"eps must be finite and >= 0, got {eps!r}")
    return e


def check_momentum(momentum):
    m = _real(momentum, "momentum")
    if not _kernels.momentum_ok(m):
        raise ValueError(f"momentum must be in [0, 1], got {momentum!r}")
    return m


def normalize_axis(axis, ndim, name="axis"):
    if type(axis) is int and -ndim <= axis < ndim:  # the common case, fast
        return axis + ndim if axis < 0 else axis
    try:
        axis = operator.index(axis)
    except TypeError:
        raise TypeError(f"{name} must be an integer, got {axis!r}") from None
    return normalize_axis_index(axis, ndim)


# Fresh outputs from this size on are faulted in by the calling thread before a
# multi-threaded kernel writes them (see new_output; the fast path of _kernels.pyx uses the
# same value).
PREFAULT_BYTES = _kernels.PREFAULT_BYTES


def new_output(shape, dtype):
    """A fresh output array for a kernel. From PREFAULT_BYTES on, when the kernel runs on
    several threads, its pages are faulted in first by this thread alone: faulted by the
    kernel's threads at once, with the huge pages NumPy asks for, a fresh 32 MiB output
    made layer_norm float64 (4096, 1024) take 34-35 ms at two threads, against 3.4-3.7 ms
    this way. Smaller outputs are left alone: glibc reuses freed memory for them, already
    faulted, and the extra step made 4 MiB outputs up to 4.6x slower (README, "Fresh
    outputs"). Outputs of 1 MiB and more come from the output cache while it is on
    (fastnorm.set_output_cache)."""
    a = _kernels.empty_output(shape, dtype)
    if a.nbytes >= PREFAULT_BYTES and _kernels.get_num_threads() > 1:
        _kernels.prefault(a)
    return a


def check_out(out, shape, dtype, name="out"):
    """Raise unless `out` (not None) is a writeable ndarray of `shape` and `dtype`."""
    if not isinstance(out, np.ndarray):
        raise TypeError(f"{name} must be a numpy.ndarray, got {type(out).__name__}")
    if out.shape != shape:
        raise ValueError(f"{name} must have shape {shape}, got {out.shape}")
    if out.dtype != dtype:
        raise TypeError(f"{name} must have dtype {dtype}, got {out.dtype}")
    if not out.flags.writeable:
        raise ValueError(f"{name} is read-only")


def make_out(out, shape, dtype, inputs, name="out"):
    """The array the kernel writes into: a fresh one when `out` is None, `out` itself when
    the kernel can write it directly, else a temporary (see finish_out).

    The kernel may write directly into `out` when it is C-contiguous and aligned and it
    either shares no memory with `inputs` or is the first input itself (in place)."""
    if out is None:
        return new_output(shape, dtype)
    check_out(out, shape, dtype, name)
    f = out.flags
    if f.c_contiguous and f.aligned:
        others = inputs[1:] if out is inputs[0] else inputs
        if not any(a is not None and np.may_share_memory(out, a) for a in others):
            return out
    return _kernels.empty_output(shape, dtype)


def finish_out(y, out):
    """Return `out` after copying the result into it when the kernel wrote a temporary."""
    if out is None or y is out:
        return y
    np.copyto(out, y)
    return out
