"""The operations, listed once: each public computation with a builder of valid inputs and
calls that work the same for :mod:`fastnorm` and :mod:`fastnorm.reference`.

Everything that has to "call every op" takes its list from :data:`OPS`: the benchmarks
(:mod:`fastnorm._bench`), the thread-count, SIMD-level and leak tests, the fuzzer's coverage
check, ``tools/valgrind_smoke.py`` and ``tools/output_hashes.py``. A new operation is one
:class:`Op` entry here; ``tests/test_ops.py`` then fails until its public functions are
covered and its calls match the reference.

An entry knows:

- ``inputs(rng, shape, dtype, params)``: a dict of arrays, valid for the call. The names are
  the same in every family: ``x`` (weight_norm's ``v``), ``dy`` (the gradient of the forward's
  first output; weight_norm's ``dw``), the affine parameters ``weight`` and ``bias`` (left
  out of the dict for a call without them), ``running_mean`` / ``running_var``, ``g``
  (weight_norm), ``w`` (cosine_norm's second operand). Half-precision ``x`` gets float32
  parameters, as the API requires.
- ``forward(lib, a, params, out, stats)``: binds the forward call, returning a function of
  no arguments that makes it; with ``stats`` that returns the tuple named by ``outputs``
  (``return_stats=True``). Benchmarks time the bound call, so set-up stays outside it.
- ``backward(lib, a, params, out)``: binds the backward call, returning a function of the
  forward's ``saved`` tuple that returns the tuple named by ``grads``.
- ``params``: the keyword defaults (axis, eps, groups, ...) and ``variants``: the parameter
  sets a caller that covers the op runs (batch norm's training and evaluation modes).
- ``double_backward``: the name of the op's double-backward function, if it has one
  (checked by ``tests/test_double_backward.py``).
- ``cases``: small ``(shape, params)`` pairs with odd sizes (SIMD tails, one-element axes,
  several axes and layouts) on which every check that covers the op runs it.

``lib`` is a module with fastnorm's API: :mod:`fastnorm` or :mod:`fastnorm.reference` (fed
float64 copies, :func:`float64`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np

__all__ = ["OPS", "Op", "float64", "get", "param_dtype"]

Arrays = dict[str, np.ndarray]
# (shape, parameters) pairs
Cases = tuple[tuple[tuple[int, ...], Mapping[str, object]], ...]

# group_norm's groups where a call does not give them: this many where they divide C, else one.
GROUPS = 32


def param_dtype(dtype) -> np.dtype:
    """The dtype of the parameters and statistics that go with an ``x`` of ``dtype``:
    float32 for the half types, else ``dtype``."""
    dtype = np.dtype(dtype)
    return np.dtype(np.float32) if dtype.itemsize == 2 else dtype


def _normal(rng, shape, dtype, loc=0.0, scale=1.0):
    return (loc + scale * rng.standard_normal(shape)).astype(dtype)


def float64(a: Arrays) -> Arrays:
    """Float64 copies of every array, for :mod:`fastnorm.reference` (which updates running
    statistics in place, so they are copies even where the dtype is already float64)."""
    return {k: np.array(v, dtype=np.float64) for k, v in a.items()}


def _norm_axis(ndim, axis):
    return axis + ndim if axis < 0 else axis


@dataclass(frozen=True)
class Op:
    """One operation: its public functions, inputs and calls (see the module docstring)."""

    name: str
    family: str
    functions: tuple[str, ...]
    inputs: Callable[..., Arrays]
    forward: Callable[..., Callable[[], object]]
    outputs: tuple[str, ...]
    backward: Callable[..., Callable[[tuple], tuple]] | None = None
    grads: tuple[str, ...] = ()
    params: Mapping[str, object] = field(default_factory=dict)
    variants: tuple[Mapping[str, object], ...] = ({},)
    optional: tuple[str, ...] = ()
    running: tuple[str, ...] = ()
    forward_out: bool = True
    backward_out: bool = True
    cases: Cases = ()
    dtypes: Mapping[str, str] = field(default_factory=dict)
    double_backward: str | None = None

    def merged(self, params=None) -> dict:
        p = dict(self.params)
        if params:
            unknown = set(params) - set(p)
            if unknown:
                raise TypeError(f"{self.name}: unknown parameters {sorted(unknown)}")
            p.update(params)
        return p

    def make_inputs(self, rng, shape, dtype, params=None, *, affine=True) -> Arrays:
        """Valid inputs for ``shape``; without ``affine`` the optional parameters are left
        out (the call passes None)."""
        a = self.inputs(rng, tuple(shape), np.dtype(dtype), self.merged(params))
        if not affine:
            a = {k: v for k, v in a.items() if k not in self.optional}
        return a

    def bind_forward(self, lib, a, params=None, *, out=None, stats=False) -> Callable[[], object]:
        """The forward call on ``a`` as a function of no arguments (set-up done here, so a
        benchmark times only the call)."""
        return self.forward(lib, a, self.merged(params), out, stats)

    def bind_backward(self, lib, a, params=None, *, out=None) -> Callable[[tuple], tuple]:
        """The backward call as a function of the forward's saved results (set-up done here,
        as in :meth:`bind_forward`)."""
        if self.backward is None:
            raise TypeError(f"{self.name} has no backward")
        return self.backward(lib, a, self.merged(params), out)

    def call_forward(self, lib, a, params=None, *, out=None, stats=False):
        return self.bind_forward(lib, a, params, out=out, stats=stats)()

    def call_backward(self, lib, a, saved, params=None, *, out=None):
        return self.bind_backward(lib, a, params, out=out)(saved)

    def run(self, lib, a, params=None) -> tuple:
        """Forward (with statistics) and backward on ``a``, the running statistics on fresh
        copies: every array produced, in the order ``outputs``, ``running``, ``grads``."""
        a = {**a, **{k: np.array(a[k]) for k in self.running if k in a}}
        saved = self.call_forward(lib, a, params, stats=True)
        saved = saved if isinstance(saved, tuple) else (saved,)
        grads = () if self.backward is None else self.call_backward(lib, a, saved, params)
        return (*saved, *(a[k] for k in self.running if k in a), *grads)

    def result_dtype(self, label, dtype) -> np.dtype:
        """The dtype of the result called ``label`` for an ``x`` of ``dtype``."""
        if label in self.dtypes:
            return np.dtype(self.dtypes[label])
        return np.dtype(dtype) if label in ("y", "s", "w", "dx", "dv", "dw") else param_dtype(dtype)

    def labels(self, a) -> tuple[str, ...]:
        """The names of :meth:`run`'s results."""
        return (*self.outputs, *(k for k in self.running if k in a),
                *(self.grads if self.backward else ()))  # fmt: skip


# ---- rows: layer_norm, rms_norm (normalized over the axes from `axis` on) ------------------


def _row_inputs(rng, shape, dtype, p):
    nshape = shape[_norm_axis(len(shape), p["axis"]) :]
    pt = param_dtype(dtype)
    return {
        "x": _normal(rng, shape, dtype, 0.5, 2.0),
        "weight": _normal(rng, nshape, pt, 1.0, 0.5),
        "bias": _normal(rng, nshape, pt),
        "dy": _normal(rng, shape, dtype),
    }


def _affine_forward(name):
    """The binder of a forward ``name(x, weight, bias, *, axis, eps, out, return_stats)``
    (layer_norm, instance_norm)."""

    def bind(lib, a, p, out, stats):
        f, x, w, b = getattr(lib, name), a["x"], a.get("weight"), a.get("bias")
        axis, eps = p["axis"], p["eps"]
        return lambda: f(x, w, b, axis=axis, eps=eps, out=out, return_stats=stats)

    return bind


def _affine_backward(name):
    """The binder of a backward ``name(dy, x, mean, rstd, weight, *, axis, out)`` from the
    forward's (y, mean, rstd) (layer_norm_backward, instance_norm_backward)."""

    def bind(lib, a, p, out):
        f, dy, x, w, axis = getattr(lib, name), a["dy"], a["x"], a.get("weight"), p["axis"]

        def call(saved):
            _, mean, rstd = saved
            return f(dy, x, mean, rstd, w, axis=axis, out=out)

        return call

    return bind


def _rms_forward(lib, a, p, out, stats):
    x, w, axis, eps = a["x"], a.get("weight"), p["axis"], p["eps"]
    return lambda: lib.rms_norm(x, w, axis=axis, eps=eps, out=out, return_stats=stats)


def _rms_backward(lib, a, p, out):
    dy, x, w, axis = a["dy"], a["x"], a.get("weight"), p["axis"]

    def call(saved):
        _, rstd = saved
        return lib.rms_norm_backward(dy, x, rstd, w, axis=axis, out=out)

    return call


def _add_row_inputs(rng, shape, dtype, p):
    """The rows' inputs and a residual (x's shape, or without x's first axis with
    ``broadcast``: one residual repeated over it) and ds, the residual stream's gradient."""
    a = _row_inputs(rng, shape, dtype, p)
    rshape = shape[1:] if p["broadcast"] else shape
    a["residual"] = _normal(rng, rshape, dtype, -0.5, 1.0)
    a["ds"] = _normal(rng, shape, dtype)
    return a


def _add_ln_forward(lib, a, p, out, stats):
    x, r, w, b = a["x"], a["residual"], a.get("weight"), a.get("bias")
    axis, eps = p["axis"], p["eps"]
    return lambda: lib.add_layer_norm(x, r, w, b, axis=axis, eps=eps, out=out, return_stats=stats)


def _add_ln_backward(lib, a, p, out):
    dy, ds, w, axis = a["dy"], a.get("ds"), a.get("weight"), p["axis"]

    def call(saved):
        _, s, mean, rstd = saved
        return lib.add_layer_norm_backward(dy, ds, s, mean, rstd, w, axis=axis, out=out)

    return call


def _add_rms_forward(lib, a, p, out, stats):
    x, r, w, axis, eps = a["x"], a["residual"], a.get("weight"), p["axis"], p["eps"]
    return lambda: lib.add_rms_norm(x, r, w, axis=axis, eps=eps, out=out, return_stats=stats)


def _add_rms_backward(lib, a, p, out):
    dy, ds, w, axis = a["dy"], a.get("ds"), a.get("weight"), p["axis"]

    def call(saved):
        _, s, rstd = saved
        return lib.add_rms_norm_backward(dy, ds, s, rstd, w, axis=axis, out=out)

    return call


# ---- channels: batch_norm, group_norm, instance_norm (one channel axis) ----------------------


def _channel_inputs(rng, shape, dtype, p):
    C = shape[_norm_axis(len(shape), p["axis"])]
    pt = param_dtype(dtype)
    return {
        "x": _normal(rng, shape, dtype, 1.0, 2.0),
        "weight": _normal(rng, (C,), pt, 1.0, 0.5),
        "bias": _normal(rng, (C,), pt),
        "running_mean": _normal(rng, (C,), pt, 0.0, 0.1),
        "running_var": rng.uniform(0.5, 1.5, C).astype(pt),
        "dy": _normal(rng, shape, dtype),
    }


def _stat_inputs(rng, shape, dtype, p):
    a = _channel_inputs(rng, shape, dtype, p)
    return {k: a[k] for k in ("x", "weight", "bias", "dy")}


def _bn_forward(lib, a, p, out, stats):
    x, w, b, rm, rv = (a.get(k) for k in ("x", "weight", "bias", "running_mean", "running_var"))
    training, momentum, eps, axis = p["training"], p["momentum"], p["eps"], p["axis"]
    # Keywords spelled out: a ``**`` dict costs the tiny-call fast path about 0.4 µs.
    return lambda: lib.batch_norm(x, w, b, rm, rv, training=training, momentum=momentum,
                                  eps=eps, axis=axis, out=out, return_stats=stats)  # fmt: skip


def _bn_backward(lib, a, p, out):
    dy, x, w, axis, training = a["dy"], a["x"], a.get("weight"), p["axis"], p["training"]

    def call(saved):
        _, mean, rstd = saved
        return lib.batch_norm_backward(dy, x, mean, rstd, w, axis=axis, training=training,
                                               out=out)  # fmt: skip

    return call


def groups(x_shape, axis, num_groups=None) -> int:
    """group_norm's groups for a call: ``num_groups``, or :data:`GROUPS` where that divides
    the channels, else one."""
    if num_groups is not None:
        return num_groups
    C = x_shape[_norm_axis(len(x_shape), axis)]
    return GROUPS if C % GROUPS == 0 else 1


def _gn_forward(lib, a, p, out, stats):
    x, w, b, axis, eps = a["x"], a.get("weight"), a.get("bias"), p["axis"], p["eps"]
    G = groups(x.shape, axis, p["num_groups"])
    return lambda: lib.group_norm(x, G, w, b, axis=axis, eps=eps, out=out, return_stats=stats)


def _gn_backward(lib, a, p, out):
    dy, x, w, axis = a["dy"], a["x"], a.get("weight"), p["axis"]
    G = groups(x.shape, axis, p["num_groups"])

    def call(saved):
        _, mean, rstd = saved
        return lib.group_norm_backward(dy, x, mean, rstd, G, w, axis=axis, out=out)

    return call


def _moments_forward(lib, a, p, out, stats):
    x, axis = a["x"], p["axis"]
    return lambda: lib.batch_moments(x, axis=axis)


def _merge_forward(lib, a, p, out, stats):
    """The moments of x merged from those of its two halves along the first other axis."""
    x, axis = a["x"], p["axis"]
    split = 1 if _norm_axis(x.ndim, axis) == 0 else 0
    parts = np.split(x, [x.shape[split] // 2], axis=split)
    return lambda: lib.merge_moments(*(lib.batch_moments(part, axis=axis) for part in parts))


def _iw_inputs(rng, shape, dtype, p):
    """batch norm's inputs with a running whitening near the identity's blocks."""
    a = _channel_inputs(rng, shape, dtype, p)
    del a["running_var"]
    C, d = a["weight"].shape[0], p["group_size"]
    G = -(-C // d)
    rw = np.tile(np.eye(d), (G, 1, 1)) + 0.1 * rng.standard_normal((G, d, d))
    a["running_whitening"] = rw.astype(param_dtype(dtype))
    return a


def _iw_forward(lib, a, p, out, stats):
    x, w, b, rm, rw = (a.get(k) for k in ("x", "weight", "bias", "running_mean",
                                          "running_whitening"))
    d, T, training, momentum = p["group_size"], p["iterations"], p["training"], p["momentum"]
    eps, axis = p["eps"], p["axis"]
    return lambda: lib.iter_norm(x, w, b, rm, rw, group_size=d, iterations=T,
                                 training=training, momentum=momentum, eps=eps, axis=axis,
                                 out=out, return_stats=stats)  # fmt: skip


def _iw_backward(lib, a, p, out):
    dy, x, w = a["dy"], a["x"], a.get("weight")
    d, T, training, eps, axis = (p[k] for k in ("group_size", "iterations", "training", "eps",
                                                "axis"))

    def call(saved):
        _, mean, whitening = saved
        return lib.iter_norm_backward(dy, x, mean, w, group_size=d, iterations=T, eps=eps,
                                      axis=axis, training=training,
                                      whitening=None if training else whitening, out=out)

    return call


# ---- vectors: l2_normalize, weight_norm, cosine_norm ---------------------------------------


def _l2_inputs(rng, shape, dtype, p):
    return {"x": _normal(rng, shape, dtype, 0.2, 1.0), "dy": _normal(rng, shape, dtype)}


def _l2_forward(lib, a, p, out, stats):
    x, axis, eps = a["x"], p["axis"], p["eps"]
    return lambda: lib.l2_normalize(x, axis=axis, eps=eps, out=out, return_stats=stats)


def _l2_backward(lib, a, p, out):
    dy, axis, eps = a["dy"], p["axis"], p["eps"]

    def call(saved):
        y, norm = saved
        return (lib.l2_normalize_backward(dy, y, norm, axis=axis, eps=eps, out=out),)

    return call


def _wn_inputs(rng, shape, dtype, p):
    """x is v; g holds one gain per unit along ``axis``; dy is dw."""
    C = shape[_norm_axis(len(shape), p["axis"])]
    return {
        "x": _normal(rng, shape, dtype, 0.1, 1.0),
        "g": _normal(rng, (C,), param_dtype(dtype), 1.0, 0.5),
        "dy": _normal(rng, shape, dtype),
    }


def _no_out(name, out):
    if out is not None:
        raise TypeError(f"{name} takes no out=")


def _wn_forward(lib, a, p, out, stats):
    _no_out("weight_norm", out)
    v, g, axis = a["x"], a["g"], p["axis"]
    return lambda: lib.weight_norm(v, g, axis=axis, return_stats=stats)


def _wn_backward(lib, a, p, out):
    dw, v, g, axis = a["dy"], a["x"], a["g"], p["axis"]

    def call(saved):
        _, norm = saved
        return lib.weight_norm_backward(dw, v, g, norm, axis=axis, out=out)

    return call


def _cos_inputs(rng, shape, dtype, p):
    """``shape`` is (N, D), for N rows of x and of w, or (N, M, D)."""
    n, m, d = (shape[0], shape[0], shape[1]) if len(shape) == 2 else shape
    return {
        "x": _normal(rng, (n, d), dtype),
        "w": _normal(rng, (m, d), dtype),
        "dy": _normal(rng, (n, m), dtype),
    }


def _cos_forward(lib, a, p, out, stats):
    _no_out("cosine_norm", out)
    x, w, eps = a["x"], a["w"], p["eps"]
    return lambda: lib.cosine_norm(x, w, eps=eps, return_stats=stats)


def _cos_backward(lib, a, p, out):
    _no_out("cosine_norm_backward", out)
    dy, x, w, eps = a["dy"], a["x"], a["w"], p["eps"]

    def call(saved):
        _, x_norm, w_norm = saved
        return lib.cosine_norm_backward(dy, x, w, x_norm, w_norm, eps=eps)

    return call


ROW_CASES: Cases = (
    ((5, 37), {}), ((5, 1), {}), ((5, 3), {}), ((5, 15), {}), ((5, 17), {}), ((5, 33), {}),
    ((5, 4097), {}), ((3, 4, 19), {"axis": 1}), ((2, 3, 5, 7), {"axis": -2}),
)  # fmt: skip
CHANNEL_CASES: Cases = (
    ((3, 6, 5, 7), {"axis": 1}), ((3, 5, 7, 6), {"axis": -1}), ((4, 6), {"axis": 1}),
    ((2, 6, 9), {"axis": 1}), ((2, 9, 6), {"axis": 2}), ((2, 5, 100), {"axis": 1}),
    ((33, 12), {"axis": 1}), ((4, 17, 6), {"axis": -1}),
)  # fmt: skip
GROUP_CASES: Cases = tuple(
    (shape, {**p, "num_groups": g})
    for (shape, p), g in zip(CHANNEL_CASES, (3, 2, 1, 6, 3, 5, 4, 2), strict=True)
)
L2_CASES: Cases = (
    ((5, 37), {"axis": -1}), ((5, 37), {"axis": 0}), ((3, 7, 5), {"axis": 1}), ((9,), {"axis": 0}),
    ((70, 300), {"axis": 0}), ((70, 300), {"axis": 1}),
)  # fmt: skip
WN_CASES: Cases = (
    ((6, 5, 3), {"axis": 0}), ((4, 7), {"axis": 1}), ((7,), {"axis": 0}),
    ((3, 5, 2), {"axis": -1}), ((300, 257), {"axis": 0}), ((4097,), {"axis": 0}),
)  # fmt: skip
ADD_ROW_CASES: Cases = (
    ((5, 37), {}), ((5, 1), {}), ((5, 17), {}), ((5, 4097), {}), ((6, 33), {"broadcast": True}),
    ((3, 4, 19), {"axis": 1}), ((2, 3, 5, 7), {"axis": -2, "broadcast": True}),
)  # fmt: skip
COSINE_CASES: Cases = (((6, 4, 17), {}), ((1, 3, 5), {}), ((7, 9, 33), {}), ((20, 7, 65), {}))

_STATS3 = ("y", "mean", "rstd")
_MOMENT_DTYPES = {"count": "int64", "mean": "float64", "m2": "float64"}
_GRADS3 = ("dx", "dweight", "dbias")

OPS: tuple[Op, ...] = (
    Op("layer_norm", "rows", ("layer_norm", "layer_norm_backward"), _row_inputs,
       _affine_forward("layer_norm"), _STATS3, _affine_backward("layer_norm_backward"), _GRADS3,
       {"axis": -1, "eps": 1e-5},
       optional=("weight", "bias"), double_backward="layer_norm_double_backward",
       cases=ROW_CASES),
    Op("rms_norm", "rows", ("rms_norm", "rms_norm_backward"), _row_inputs, _rms_forward,
       ("y", "rstd"), _rms_backward, ("dx", "dweight"), {"axis": -1, "eps": 1e-6},
       optional=("weight", "bias"), double_backward="rms_norm_double_backward",
       cases=ROW_CASES),
    Op("add_layer_norm", "rows", ("add_layer_norm", "add_layer_norm_backward"), _add_row_inputs,
       _add_ln_forward, ("y", "s", "mean", "rstd"), _add_ln_backward, _GRADS3,
       {"axis": -1, "eps": 1e-5, "broadcast": False}, optional=("weight", "bias", "ds"),
       cases=ADD_ROW_CASES),
    Op("add_rms_norm", "rows", ("add_rms_norm", "add_rms_norm_backward"), _add_row_inputs,
       _add_rms_forward, ("y", "s", "rstd"), _add_rms_backward, ("dx", "dweight"),
       {"axis": -1, "eps": 1e-6, "broadcast": False}, optional=("weight", "bias", "ds"),
       cases=ADD_ROW_CASES),
    Op("batch_norm", "channels", ("batch_norm", "batch_norm_backward"), _channel_inputs,
       _bn_forward, _STATS3, _bn_backward, _GRADS3,
       {"axis": 1, "eps": 1e-5, "training": True, "momentum": 0.1},
       variants=({"training": True}, {"training": False}),
       optional=("weight", "bias"), running=("running_mean", "running_var"),
       double_backward="batch_norm_double_backward",
       cases=CHANNEL_CASES),
    Op("group_norm", "channels", ("group_norm", "group_norm_backward"), _stat_inputs,
       _gn_forward, _STATS3, _gn_backward, _GRADS3, {"axis": 1, "eps": 1e-5, "num_groups": None},
       optional=("weight", "bias"), double_backward="group_norm_double_backward",
       cases=GROUP_CASES),
    Op("instance_norm", "channels", ("instance_norm", "instance_norm_backward"), _stat_inputs,
       _affine_forward("instance_norm"), _STATS3, _affine_backward("instance_norm_backward"),
       _GRADS3, {"axis": 1, "eps": 1e-5},
       optional=("weight", "bias"), double_backward="instance_norm_double_backward",
       cases=CHANNEL_CASES),
    Op("iter_norm", "channels", ("iter_norm", "iter_norm_backward"), _iw_inputs, _iw_forward,
       ("y", "mean", "whitening"), _iw_backward, _GRADS3,
       {"axis": 1, "eps": 1e-5, "training": True, "momentum": 0.1, "group_size": 4,
        "iterations": 5},
       variants=({"training": True}, {"training": False}),
       optional=("weight", "bias"), running=("running_mean", "running_whitening"),
       cases=CHANNEL_CASES),
    Op("batch_moments", "channels", ("batch_moments",), _stat_inputs, _moments_forward,
       ("count", "mean", "m2"), params={"axis": 1}, forward_out=False, cases=CHANNEL_CASES,
       dtypes=_MOMENT_DTYPES),
    Op("merge_moments", "channels", ("merge_moments",), _stat_inputs, _merge_forward,
       ("count", "mean", "m2"), params={"axis": 1}, forward_out=False, cases=CHANNEL_CASES,
       dtypes=_MOMENT_DTYPES),
    Op("l2_normalize", "vectors", ("l2_normalize", "l2_normalize_backward"), _l2_inputs,
       _l2_forward, ("y", "norm"), _l2_backward, ("dx",), {"axis": -1, "eps": 1e-12},
       cases=L2_CASES),
    Op("weight_norm", "vectors", ("weight_norm", "weight_norm_backward"), _wn_inputs,
       _wn_forward, ("w", "norm"), _wn_backward, ("dv", "dg"), {"axis": 0},
       forward_out=False, cases=WN_CASES),
    Op("cosine_norm", "vectors", ("cosine_norm", "cosine_norm_backward"), _cos_inputs,
       _cos_forward, ("y", "x_norm", "w_norm"), _cos_backward, ("dx", "dw"), {"eps": 1e-12},
       forward_out=False, backward_out=False, cases=COSINE_CASES),
)  # fmt: skip

_BY_NAME = {op.name: op for op in OPS}


def get(name: str) -> Op:
    """The entry called ``name``."""
    try:
        return _BY_NAME[name]
    except KeyError:
        raise KeyError(f"no op {name!r}; the ops are {', '.join(_BY_NAME)}") from None
