"""Benchmark table and timing helpers, shared by ``python -m fastnorm bench`` and ``bench/``.

Every benchmark is one :class:`Op` entry in :data:`OPS`: an operation, a pass, the cases
(shape, dtype) it runs on, how to make its inputs, and two builders. ``build(lib, arrays)``
returns a zero-argument callable for a module with fastnorm's API; it is used both for
``fastnorm`` and for ``fastnorm.reference``, so the two are timed on the same code path and
can never be swapped by mistake. ``build_torch(torch, arrays)`` does the same with PyTorch.
Builders do all set-up (parameter conversion, saved statistics, tensors) outside the callable,
which holds only the work being timed.

A new operation is added by appending entries to :data:`OPS`.
"""

from __future__ import annotations

import gc
import importlib
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "IMPLS",
    "OPS",
    "ROW_CASES",
    "ROW_SHAPES",
    "Op",
    "Timing",
    "check",
    "implementation",
    "make_inputs",
    "measure",
    "select",
    "shape_id",
    "to_numpy",
    "torch_or_none",
]

IMPLS = ("fastnorm", "reference", "torch")

ROW_SHAPES = ((32, 768), (4096, 1024), (64, 65536), (1, 64))
ROW_CASES = tuple((s, "float32") for s in ROW_SHAPES) + (((4096, 1024), "float64"),)

LN_EPS = 1e-5
RMS_EPS = 1e-6

Arrays = dict[str, np.ndarray]
Builder = Callable[[object, Arrays], Callable[[], object]]


@dataclass(frozen=True)
class Op:
    """One benchmark: an operation and a pass, with its builders and cases.

    Attributes
    ----------
    name : str
        The fastnorm function name, e.g. ``"layer_norm"``; ``--ops`` selects by it.
    kind : str
        ``"fwd"``, ``"bwd"`` (backward alone, from saved statistics) or ``"fwd+bwd"``.
    inputs : callable ``(shape, dtype, rng) -> dict of arrays``
    build : callable ``(lib, arrays) -> callable``
        ``lib`` is :mod:`fastnorm` or :mod:`fastnorm.reference`.
    build_torch : callable ``(torch, arrays) -> callable``, optional
    cases : tuple of ``(shape, dtype name)``
    default : bool
        Whether ``python -m fastnorm bench`` runs it without ``--pass``.
    """

    name: str
    kind: str
    inputs: Callable[[tuple[int, ...], np.dtype, np.random.Generator], Arrays]
    build: Builder
    build_torch: Builder | None = None
    cases: tuple[tuple[tuple[int, ...], str], ...] = ROW_CASES
    default: bool = True

    @property
    def label(self) -> str:
        return f"{self.name} {self.kind}"


# ---- rows family: layer_norm, rms_norm ------------------------------------------------


def _row_inputs(shape, dtype, rng):
    k = shape[-1]
    return {
        "x": rng.standard_normal(shape).astype(dtype),
        "weight": (1.0 + 0.1 * rng.standard_normal(k)).astype(dtype),
        "bias": (0.1 * rng.standard_normal(k)).astype(dtype),
        "dy": rng.standard_normal(shape).astype(dtype),
    }


def _tensors(torch, a, *names, grad=False):
    """Copies of the named arrays as tensors (the cached inputs stay read-only)."""
    return [torch.from_numpy(np.array(a[n])).requires_grad_(grad) for n in names]


def _ln_fwd(lib, a):
    x, w, b = a["x"], a["weight"], a["bias"]
    return lambda: lib.layer_norm(x, w, b, eps=LN_EPS)


def _ln_bwd(lib, a):
    x, w, dy = a["x"], a["weight"], a["dy"]
    _, mean, rstd = lib.layer_norm(x, w, a["bias"], eps=LN_EPS, return_stats=True)
    return lambda: lib.layer_norm_backward(dy, x, mean, rstd, w)


def _ln_fwd_bwd(lib, a):
    x, w, b, dy = a["x"], a["weight"], a["bias"], a["dy"]

    def run():
        _, mean, rstd = lib.layer_norm(x, w, b, eps=LN_EPS, return_stats=True)
        return lib.layer_norm_backward(dy, x, mean, rstd, w)

    return run


def _ln_torch(torch, x, w, b):
    return torch.nn.functional.layer_norm(x, x.shape[-1:], w, b, LN_EPS)


def _ln_fwd_torch(torch, a):
    x, w, b = _tensors(torch, a, "x", "weight", "bias")
    return lambda: _ln_torch(torch, x, w, b)


def _ln_bwd_torch(torch, a):
    x, w, b = _tensors(torch, a, "x", "weight", "bias", grad=True)
    (dy,) = _tensors(torch, a, "dy")
    y = _ln_torch(torch, x, w, b)
    return lambda: torch.autograd.grad(y, (x, w, b), dy, retain_graph=True)


def _ln_fwd_bwd_torch(torch, a):
    x, w, b = _tensors(torch, a, "x", "weight", "bias", grad=True)
    (dy,) = _tensors(torch, a, "dy")
    return lambda: torch.autograd.grad(_ln_torch(torch, x, w, b), (x, w, b), dy)


def _rms_fwd(lib, a):
    x, w = a["x"], a["weight"]
    return lambda: lib.rms_norm(x, w, eps=RMS_EPS)


def _rms_bwd(lib, a):
    x, w, dy = a["x"], a["weight"], a["dy"]
    _, rstd = lib.rms_norm(x, w, eps=RMS_EPS, return_stats=True)
    return lambda: lib.rms_norm_backward(dy, x, rstd, w)


def _rms_fwd_bwd(lib, a):
    x, w, dy = a["x"], a["weight"], a["dy"]

    def run():
        _, rstd = lib.rms_norm(x, w, eps=RMS_EPS, return_stats=True)
        return lib.rms_norm_backward(dy, x, rstd, w)

    return run


def _rms_torch(torch, x, w):
    if hasattr(torch, "rms_norm"):
        return torch.rms_norm(x, x.shape[-1:], w, RMS_EPS)
    return x * torch.rsqrt(x.square().mean(-1, keepdim=True) + RMS_EPS) * w


def _rms_fwd_torch(torch, a):
    x, w = _tensors(torch, a, "x", "weight")
    return lambda: _rms_torch(torch, x, w)


def _rms_bwd_torch(torch, a):
    x, w = _tensors(torch, a, "x", "weight", grad=True)
    (dy,) = _tensors(torch, a, "dy")
    y = _rms_torch(torch, x, w)
    return lambda: torch.autograd.grad(y, (x, w), dy, retain_graph=True)


def _rms_fwd_bwd_torch(torch, a):
    x, w = _tensors(torch, a, "x", "weight", grad=True)
    (dy,) = _tensors(torch, a, "dy")
    return lambda: torch.autograd.grad(_rms_torch(torch, x, w), (x, w), dy)


OPS: list[Op] = [
    Op("layer_norm", "fwd", _row_inputs, _ln_fwd, _ln_fwd_torch),
    Op("layer_norm", "fwd+bwd", _row_inputs, _ln_fwd_bwd, _ln_fwd_bwd_torch),
    Op("layer_norm", "bwd", _row_inputs, _ln_bwd, _ln_bwd_torch, default=False),
    Op("rms_norm", "fwd", _row_inputs, _rms_fwd, _rms_fwd_torch),
    Op("rms_norm", "fwd+bwd", _row_inputs, _rms_fwd_bwd, _rms_fwd_bwd_torch),
    Op("rms_norm", "bwd", _row_inputs, _rms_bwd, _rms_bwd_torch, default=False),
]


# ---- selection, inputs, implementations ---------------------------------------------


def select(names: Sequence[str] | None = None, kinds: Sequence[str] | None = None) -> list[Op]:
    """The entries of :data:`OPS` with the given names and kinds, in table order.

    ``kinds=None`` picks the default entries. Unknown names or kinds raise ValueError.
    """
    known_names = list(dict.fromkeys(op.name for op in OPS))
    known_kinds = list(dict.fromkeys(op.kind for op in OPS))
    for given, known, what in ((names, known_names, "op"), (kinds, known_kinds, "pass")):
        bad = [n for n in given or () if n not in known]
        if bad:
            raise ValueError(
                f"unknown {what} {', '.join(bad)}; expected some of {', '.join(known)}"
            )
    return [
        op
        for op in OPS
        if (names is None or op.name in names)
        and (op.default if kinds is None else op.kind in kinds)
    ]


def make_inputs(inputs, shape, dtype, seed: int = 0) -> Arrays:
    """Fixed-seed, read-only arrays from an entry's ``inputs`` function (``op.inputs``).

    Entries that share the function (the passes of one op, the ops of one family) get the
    same arrays for the same case, so callers can cache on ``(op.inputs, shape, dtype)``.
    """
    arrays = inputs(tuple(shape), np.dtype(dtype), np.random.default_rng(seed))
    for a in arrays.values():
        a.flags.writeable = False
    return arrays


def torch_or_none():
    """The torch module, or None where it is not installed."""
    try:
        return importlib.import_module("torch")
    except ImportError:
        return None


def implementation(op: Op, impl: str, arrays: Arrays, torch=None) -> Callable[[], object] | None:
    """The timed callable of ``impl`` (one of :data:`IMPLS`) for ``op`` on ``arrays``.

    None when ``impl`` is ``"torch"`` and torch is not given or the op has no torch builder.
    """
    if impl == "fastnorm":
        return op.build(importlib.import_module("fastnorm"), arrays)
    if impl == "reference":
        return op.build(importlib.import_module("fastnorm.reference"), arrays)
    if impl == "torch":
        if torch is None or op.build_torch is None:
            return None
        return op.build_torch(torch, arrays)
    raise ValueError(f"unknown implementation {impl!r}; expected one of {IMPLS}")


def shape_id(shape, sep: str = "x") -> str:
    return sep.join(str(n) for n in shape)


# ---- results ---------------------------------------------------------------------------


def to_numpy(result) -> np.ndarray:
    """The first output of a benchmark callable (y, or dx for a backward) as a NumPy array."""
    if isinstance(result, tuple | list):
        result = result[0]
    if hasattr(result, "detach"):
        result = result.detach().numpy()
    return np.asarray(result)


def check(result, expected, dtype) -> bool:
    """Whether ``result`` agrees with the reference result ``expected`` for ``dtype``."""
    got = to_numpy(result).astype(np.float64)
    want = to_numpy(expected).astype(np.float64)
    tol = 1e-3 if np.dtype(dtype) == np.float32 else 1e-9
    scale = max(1.0, float(np.abs(want).max(initial=0.0)))
    return got.shape == want.shape and bool(np.allclose(got, want, rtol=tol, atol=tol * scale))


# ---- timing ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Timing:
    """Median seconds per call over ``rounds`` rounds of ``number`` calls each."""

    median: float
    best: float
    number: int
    rounds: int
    result: object = field(repr=False, compare=False)


def _round(fn, number):
    calls = range(number)
    enabled = gc.isenabled()
    gc.disable()
    try:
        t0 = time.perf_counter()
        for _ in calls:
            fn()
        return time.perf_counter() - t0
    finally:
        if enabled:
            gc.enable()


def measure(fn, *, rounds: int = 5, target: float = 0.03, max_number: int = 1 << 22) -> Timing:
    """Time ``fn()`` with :func:`time.perf_counter`.

    One warm-up call (whose result is kept), then the number of calls per round is chosen
    so that a round lasts about ``target`` seconds, and the median per-call time over
    ``rounds`` rounds is reported.
    """
    result = fn()
    number = 1
    while True:
        elapsed = _round(fn, number)
        if elapsed >= 0.2 * target or number >= max_number:
            break
        number *= 10 if elapsed < 0.02 * target else 2
    number = int(min(max_number, max(1, round(number * target / max(elapsed, 1e-9)))))
    times = [_round(fn, number) / number for _ in range(rounds)]
    return Timing(statistics.median(times), min(times), number, rounds, result)
