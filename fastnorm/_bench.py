"""Benchmark table and timing helpers, shared by ``python -m fastnorm bench`` and ``bench/``.

Every benchmark is one :class:`Op` entry in :data:`OPS`: an operation, a pass, the cases
(shape, dtype) it runs on, how to make its inputs, and two builders. ``build(lib, arrays)``
returns a zero-argument callable for a module with fastnorm's API; it is used both for
``fastnorm`` and for ``fastnorm.reference``, so the two are timed on the same code path and
can never be swapped by mistake. ``build_torch(torch, arrays)`` does the same with PyTorch.
Builders do all set-up (parameter conversion, saved statistics, tensors) outside the callable,
which holds only the work being timed.

Vector-family entries (weight_norm, l2_normalize, cosine_norm) run on 2-d float32 cases
``(N, D)``. cosine_norm's time is bounded below by its matrix product, not by memory traffic:
its entries carry a ``matmul`` builder, the products alone on pre-normalized rows, which is
timed next to it.

Channels-family entries come in pairs, one per memory layout: ``"NCHW"`` (channel axis 1)
and ``"NHWC"`` (channels-last, channel axis -1). Their cases name the logical shape
``(N, C, H, W)`` in both; the NHWC input is the contiguous ``(N, H, W, C)`` array holding the
same values.

Entries whose pass has an ``out`` parameter have ``takes_out``: their builder also takes
``out``, which :func:`implementation` fills with a preallocated array for :data:`OUT_IMPL`.
The forward writes y there; the backward writes dx (weight_norm: dv) there when it runs
alone, and into a second preallocated array after a forward.

:class:`Cache` keeps the inputs and copy times of a run. The roofline measurements of
``bench/report.py`` and ``bench/scaling.py`` (fastnorm with and without ``out=``, PyTorch and
a copy of the same bytes at several thread counts, and the machine's description) are in
``bench/roofline.py``.

The inputs and the fastnorm/reference calls come from the op registry,
:mod:`fastnorm._ops` (``_build``); this module adds the cases, the PyTorch counterparts and the
matmul floors. A new operation is added to the registry and then by appending entries to
:data:`OPS`.
"""

from __future__ import annotations

import gc
import importlib
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from math import prod

import numpy as np

from fastnorm import _ops

__all__ = [
    "CHANNEL_REFERENCE_MAX_SIZE",
    "ADD_CASES",
    "ADD_SHAPES",
    "CHANNEL_SHAPES",
    "CHANNEL_TINY",
    "COPIES",
    "COSINE_REFERENCE_MAX_SIZE",
    "IMPLS",
    "LAYOUT_AXIS",
    "OPS",
    "OUT_IMPL",
    "ROW_CASES",
    "ROW_SHAPES",
    "VECTOR_CASES",
    "VECTOR_SHAPES",
    "Cache",
    "Op",
    "Timing",
    "blas_threads",
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
# fastnorm writing y into a preallocated array, for entries with ``takes_out``.
OUT_IMPL = "fastnorm_out"

ROW_SHAPES = ((32, 768), (4096, 1024), (64, 65536), (1, 64))
ROW_CASES = tuple((s, "float32") for s in ROW_SHAPES) + (((4096, 1024), "float64"),)

CHANNEL_SHAPES = ((32, 64, 56, 56), (256, 256, 14, 14), (8, 3, 224, 224))
CHANNEL_TINY = (2, 4, 3, 3)
LAYOUT_AXIS = {"NCHW": 1, "NHWC": -1}
# fastnorm.reference takes 0.05-1.5 s per call on the larger channel shapes: it is timed up to
# this many elements and, above it, called once, untimed, to check the results.
CHANNEL_REFERENCE_MAX_SIZE = 1 << 21

LN_EPS = 1e-5
RMS_EPS = 1e-6
BN_EPS = 1e-5
BN_MOMENTUM = 0.1
GN_EPS = 1e-5
GN_GROUPS = 32

VECTOR_SHAPES = ((1024, 1024), (4096, 512))
VECTOR_CASES = tuple((s, "float32") for s in VECTOR_SHAPES)
L2_EPS = 1e-12
# fastnorm.reference's cosine_norm makes N * N * D float64 multiply-adds (about 0.6 s a call on
# 4096x512 at one thread, three times that forward+backward): it is timed up to this x.size.
COSINE_REFERENCE_MAX_SIZE = 1 << 20

# The least memory traffic of each pass, in copies of x (one copy reads x and writes x.size
# values): a forward reads x and writes y; a backward reads x and dy and writes dx.
COPIES = {"fwd": 1.0, "eval": 1.0, "bwd": 1.5, "fwd+bwd": 2.5}

Arrays = dict[str, np.ndarray]
Builder = Callable[[object, Arrays], Callable[[], object]]
Case = tuple[tuple[int, ...], str]


@dataclass(frozen=True)
class Op:
    """One benchmark: an operation and a pass, with its builders and cases.

    Attributes
    ----------
    name : str
        The fastnorm function name, e.g. ``"layer_norm"``; ``--ops`` selects by it.
    kind : str
        ``"fwd"``, ``"bwd"`` (backward alone, from saved statistics), ``"fwd+bwd"``, or
        ``"eval"`` (batch_norm's forward with ``training=False``).
    inputs : callable ``(shape, dtype, rng) -> dict of arrays``
    build : callable ``(lib, arrays) -> callable``
        ``lib`` is :mod:`fastnorm` or :mod:`fastnorm.reference`.
    build_torch : callable ``(torch, arrays) -> callable``, optional
    cases : tuple of ``(shape, dtype name)``
        Every case; ``bench/`` and ``python -m fastnorm bench --full`` run them all.
    default : bool
        Whether ``python -m fastnorm bench`` runs it without ``--pass``.
    default_cases : tuple of ``(shape, dtype name)``, optional
        The subset of ``cases`` that ``python -m fastnorm bench`` runs without ``--full``;
        None for all of them.
    layout : str, optional
        ``"NCHW"`` or ``"NHWC"`` for the channels family, None for the rows and vector families.
    reference_max_size : int, optional
        Largest ``x.size`` on which :mod:`fastnorm.reference` is timed; None for no limit.
    matmul : callable ``(arrays) -> callable``, optional
        For an op built on a matrix product (cosine_norm): the same products alone, through
        NumPy's BLAS on operands normalized beforehand, the floor of the op's time. The op is
        compared with it in place of copy speed.
    traffic : float, optional
        The pass's least memory traffic in copies of x where :data:`COPIES` does not give it
        (add_layer_norm's forward reads x and residual and writes y and s: 2).
    takes_out : bool
        Whether ``build`` also takes ``out``, an array of x's shape and dtype that receives
        the pass's output (:data:`OUT_IMPL`): the forward's y, or dx of a backward alone; a
        fwd+bwd builder makes a second such array for dx. Every op but cosine_norm.
    """

    name: str
    kind: str
    inputs: Callable[[tuple[int, ...], np.dtype, np.random.Generator], Arrays]
    build: Builder
    build_torch: Builder | None = None
    cases: tuple[Case, ...] = ROW_CASES
    default: bool = True
    default_cases: tuple[Case, ...] | None = None
    layout: str | None = None
    reference_max_size: int | None = None
    matmul: Callable[[Arrays], Callable[[], object]] | None = None
    takes_out: bool = False
    traffic: float | None = None

    @property
    def label(self) -> str:
        return " ".join(p for p in (self.name, self.kind, self.layout) if p)

    @property
    def copies(self) -> float:
        """The pass's least memory traffic in copies of x (see :data:`COPIES`; ``traffic``
        where the op moves more arrays)."""
        return COPIES[self.kind] if self.traffic is None else self.traffic

    def run_cases(self, full: bool = False) -> tuple[Case, ...]:
        """The cases ``python -m fastnorm bench`` runs: all with ``full``, else the defaults."""
        if full or self.default_cases is None:
            return self.cases
        return self.default_cases

    def times_reference(self, shape) -> bool:
        """Whether :mod:`fastnorm.reference` is timed on ``shape`` (else only checked)."""
        return self.reference_max_size is None or prod(shape) <= self.reference_max_size


# ---- rows family: layer_norm, rms_norm ------------------------------------------------


def _registry_inputs(name, params=None, *, nhwc=False):
    """An entry's ``inputs``: the registry op's (:mod:`fastnorm._ops`) valid inputs for the
    case. With ``nhwc`` the case's logical (N, C, H, W) is made as (N, H, W, C) arrays."""
    reg = _ops.get(name)

    def inputs(shape, dtype, rng):
        if nhwc:
            shape = (shape[0], *shape[2:], shape[1])
        return reg.make_inputs(rng, shape, dtype, params)

    return inputs


def _build(name, kind, **params):
    """The fastnorm-side builder of an entry, from the registry op's bound calls: ``kind``
    "fwd" or "eval" times the forward, "bwd" the backward from saved statistics, "fwd+bwd"
    both. ``out`` receives the forward's y (or, for an op whose forward takes none, the
    backward's dx); a fwd+bwd makes a second array for dx."""
    reg = _ops.get(name)

    def build(lib, a, out=None):
        a = {**a, **{k: np.array(a[k]) for k in reg.running if k in a}}  # updated in place
        fwd_out = out if reg.forward_out else None
        if kind in ("fwd", "eval"):
            return reg.bind_forward(lib, a, params, out=fwd_out)
        if kind == "bwd":
            saved = reg.call_forward(lib, a, params, stats=True)
            backward = reg.bind_backward(lib, a, params, out=out)
            return lambda: backward(saved)
        dx = (_dx_out(out) if reg.forward_out else out) if reg.backward_out else None
        forward = reg.bind_forward(lib, a, params, out=fwd_out, stats=True)
        backward = reg.bind_backward(lib, a, params, out=dx)
        return lambda: backward(forward())

    return build


def _dx_out(out):
    """The backward's preallocated dx in a fwd+bwd whose forward writes ``out``."""
    return None if out is None else np.empty_like(out)


_row_inputs = _registry_inputs("layer_norm")


def _tensors(torch, a, *names, grad=False):
    """Copies of the named arrays as tensors (the cached inputs stay read-only)."""
    return [torch.from_numpy(np.array(a[n])).requires_grad_(grad) for n in names]


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
    Op(name, kind, _row_inputs, _build(name, kind, eps=eps), torch_build,
       default=kind != "bwd", takes_out=True)
    for name, eps, builders in (
        ("layer_norm", LN_EPS, (_ln_fwd_torch, _ln_fwd_bwd_torch, _ln_bwd_torch)),
        ("rms_norm", RMS_EPS, (_rms_fwd_torch, _rms_fwd_bwd_torch, _rms_bwd_torch)),
    )
    for kind, torch_build in zip(("fwd", "fwd+bwd", "bwd"), builders, strict=True)
]


# ---- residual add fused with the rows: add_layer_norm, add_rms_norm ------------------------

# Hidden sizes of transformers, 12 to 64 MB per array in float32 (and one small batch).
ADD_SHAPES = ((32, 768), (4096, 768), (4096, 1024), (1024, 4096), (2048, 8192))
ADD_CASES = tuple((s, "float32") for s in ADD_SHAPES)
# Least traffic in copies of x: the forward reads x and residual and writes y and s; the
# backward reads dy, ds and s and writes dx.
ADD_TRAFFIC = {"fwd": 2.0, "fwd+bwd": 4.0}

_add_row_inputs = _registry_inputs("add_layer_norm")


def _add_torch(torch, name, x, r, w, b):
    """PyTorch's composite: the sum, then the norm."""
    s = x + r
    k = x.shape[-1:]
    if name == "add_layer_norm":
        return torch.nn.functional.layer_norm(s, k, w, b, LN_EPS), s
    return _rms_torch(torch, s, w), s


def _add_fwd_torch(name):
    def build(torch, a):
        x, r, w, b = _tensors(torch, a, "x", "residual", "weight", "bias")
        return lambda: _add_torch(torch, name, x, r, w, b)

    return build


def _add_fwd_bwd_torch(name):
    def build(torch, a):
        x, r, w, b = _tensors(torch, a, "x", "residual", "weight", "bias", grad=True)
        dy, ds = _tensors(torch, a, "dy", "ds")
        params = (x, r, w, b) if name == "add_layer_norm" else (x, r, w)
        return lambda: torch.autograd.grad(_add_torch(torch, name, x, r, w, b), params, (dy, ds))

    return build


OPS += [
    Op(name, kind, _add_row_inputs, _build(name, kind, eps=eps), torch_build(name),
       cases=ADD_CASES, default_cases=ADD_CASES[:2], takes_out=True, traffic=ADD_TRAFFIC[kind])
    for name, eps in (("add_layer_norm", LN_EPS), ("add_rms_norm", RMS_EPS))
    for kind, torch_build in (("fwd", _add_fwd_torch), ("fwd+bwd", _add_fwd_bwd_torch))
]  # fmt: skip


# ---- channels family: batch_norm, group_norm, instance_norm ----------------------------


_nchw_inputs = _registry_inputs("batch_norm", {"axis": 1})
_nhwc_inputs = _registry_inputs("batch_norm", {"axis": -1}, nhwc=True)


def _groups(a):
    """The registry's groups for group_norm (GN_GROUPS where they divide C, else one)."""
    return _ops.groups(a["weight"].shape, 0)


def _nchw(t, layout):
    """``t`` as PyTorch's (N, C, H, W): an NHWC tensor becomes a channels_last view."""
    return t if layout == "NCHW" else t.permute(0, 3, 1, 2)


def _torch_fwd(torch, a, layout, forward):
    """``forward(x, w, b, rm, rv)`` on tensors, its result in the layout of x (a view)."""
    x, w, b, rm, rv = _tensors(torch, a, "x", "weight", "bias", "running_mean", "running_var")
    x = _nchw(x, layout)
    if layout == "NCHW":
        return lambda: forward(x, w, b, rm, rv)
    return lambda: forward(x, w, b, rm, rv).permute(0, 2, 3, 1)


def _torch_fwd_bwd(torch, a, layout, forward):
    """Forward and autograd backward with the fixed dy; dx comes back in x's layout."""
    x, w, b = _tensors(torch, a, "x", "weight", "bias", grad=True)
    rm, rv, dy = _tensors(torch, a, "running_mean", "running_var", "dy")
    dy = _nchw(dy, layout)
    return lambda: torch.autograd.grad(forward(_nchw(x, layout), w, b, rm, rv), (x, w, b), dy)


def _bn_train_torch(torch):
    f = torch.nn.functional.batch_norm
    return lambda x, w, b, rm, rv: f(x, rm, rv, w, b, True, BN_MOMENTUM, BN_EPS)


def _bn_eval_torch(torch):
    f = torch.nn.functional.batch_norm
    return lambda x, w, b, rm, rv: f(x, rm, rv, w, b, False, BN_MOMENTUM, BN_EPS)


def _gn_torch(torch, groups):
    f = torch.nn.functional.group_norm
    return lambda x, w, b, rm, rv: f(x, groups, w, b, GN_EPS)


def _in_torch(torch):
    f = torch.nn.functional.instance_norm
    return lambda x, w, b, rm, rv: f(x, None, None, w, b, True, 0.1, GN_EPS)


def _bn_fwd_torch(torch, a, layout):
    return _torch_fwd(torch, a, layout, _bn_train_torch(torch))


def _bn_eval_torch_fwd(torch, a, layout):
    return _torch_fwd(torch, a, layout, _bn_eval_torch(torch))


def _bn_fwd_bwd_torch(torch, a, layout):
    return _torch_fwd_bwd(torch, a, layout, _bn_train_torch(torch))


def _gn_fwd_torch(torch, a, layout):
    return _torch_fwd(torch, a, layout, _gn_torch(torch, _groups(a)))


def _gn_fwd_bwd_torch(torch, a, layout):
    return _torch_fwd_bwd(torch, a, layout, _gn_torch(torch, _groups(a)))


def _in_fwd_torch(torch, a, layout):
    return _torch_fwd(torch, a, layout, _in_torch(torch))


def _in_fwd_bwd_torch(torch, a, layout):
    return _torch_fwd_bwd(torch, a, layout, _in_torch(torch))


def _channel_ops(name, kind, build_torch, *, tiny=False, **params):
    """One entry per layout, on :data:`CHANNEL_SHAPES` in float32; the default run takes the
    first shape (plus, with ``tiny``, :data:`CHANNEL_TINY` in NCHW, for per-call overhead).
    Every channels builder takes ``out``."""
    cases = tuple((s, "float32") for s in CHANNEL_SHAPES)
    extra = ((CHANNEL_TINY, "float32"),) if tiny else ()
    return [
        Op(
            name,
            kind,
            inputs,
            _build(name, kind, axis=LAYOUT_AXIS[layout], **params),
            partial(build_torch, layout=layout),
            cases=cases + (extra if layout == "NCHW" else ()),
            default_cases=cases[:1] + (extra if layout == "NCHW" else ()),
            layout=layout,
            reference_max_size=CHANNEL_REFERENCE_MAX_SIZE,
            takes_out=True,
        )
        for layout, inputs in (("NCHW", _nchw_inputs), ("NHWC", _nhwc_inputs))
    ]


OPS += [
    *_channel_ops("batch_norm", "fwd", _bn_fwd_torch, tiny=True, eps=BN_EPS,
                  momentum=BN_MOMENTUM),
    *_channel_ops("batch_norm", "fwd+bwd", _bn_fwd_bwd_torch, eps=BN_EPS, momentum=BN_MOMENTUM),
    *_channel_ops("batch_norm", "eval", _bn_eval_torch_fwd, training=False, eps=BN_EPS),
    *_channel_ops("group_norm", "fwd", _gn_fwd_torch, eps=GN_EPS),
    *_channel_ops("group_norm", "fwd+bwd", _gn_fwd_bwd_torch, eps=GN_EPS),
    *_channel_ops("instance_norm", "fwd", _in_fwd_torch, eps=GN_EPS),
    *_channel_ops("instance_norm", "fwd+bwd", _in_fwd_bwd_torch, eps=GN_EPS),
]


# ---- IterNorm and mean-only batch norm (NCHW) --------------------------------------------

IW_GROUP = 16
IW_ITERATIONS = 5
IW_SHAPES = ((32, 64, 56, 56), (256, 256, 14, 14), (64, 512, 7, 7))
_iw_inputs = _registry_inputs("iter_norm", {"axis": 1, "group_size": IW_GROUP})


def _iw_torch(torch):
    from fastnorm.torch import _iter_norm_composite  # torch's operations: bmm, the loop

    return lambda x, w, b: _iter_norm_composite(x, None, None, w, b, True, BN_MOMENTUM, BN_EPS,
                                                IW_GROUP, IW_ITERATIONS)


def _iw_fwd_torch(torch, a, layout):
    x, w, b = _tensors(torch, a, "x", "weight", "bias")
    f = _iw_torch(torch)

    def call():
        with torch.no_grad():
            return f(x, w, b)

    return call


def _iw_fwd_bwd_torch(torch, a, layout):
    x, w, b = _tensors(torch, a, "x", "weight", "bias", grad=True)
    (dy,) = _tensors(torch, a, "dy")
    f = _iw_torch(torch)
    return lambda: torch.autograd.grad(f(x, w, b), (x, w, b), dy)


def _center_build(lib, a, out=None, *, axis):
    """batch_norm(center_only=True), training, with a running mean (updated in place)."""
    x, b, rm = a["x"], a["bias"], np.array(a["running_mean"])
    return lambda: lib.batch_norm(x, None, b, rm, None, momentum=BN_MOMENTUM, axis=axis,
                                  out=out, center_only=True)


def _center_fwd_torch(torch, a, layout):
    """The same in torch operations: x - mean over (N, H, W) + bias."""
    x, b, rm = _tensors(torch, a, "x", "bias", "running_mean")
    x = _nchw(x, layout)

    def call():
        mean = x.mean(dim=(0, 2, 3))
        rm.mul_(1 - BN_MOMENTUM).add_(mean, alpha=BN_MOMENTUM)
        y = x - (mean - b)[None, :, None, None]
        return y if layout == "NCHW" else y.permute(0, 2, 3, 1)

    return call


def _iw_op(kind, build, build_torch):
    cases = tuple((s, "float32") for s in IW_SHAPES)
    return Op("iter_norm", kind, _iw_inputs, build, partial(build_torch, layout="NCHW"),
              cases=cases, default_cases=cases[:1], layout="NCHW",
              reference_max_size=CHANNEL_REFERENCE_MAX_SIZE, takes_out=True)


OPS += [
    _iw_op("fwd", _build("iter_norm", "fwd", axis=1, group_size=IW_GROUP,
                         iterations=IW_ITERATIONS, eps=BN_EPS), _iw_fwd_torch),
    _iw_op("fwd+bwd", _build("iter_norm", "fwd+bwd", axis=1, group_size=IW_GROUP,
                             iterations=IW_ITERATIONS, eps=BN_EPS), _iw_fwd_bwd_torch),
    *[
        Op("batch_norm_center", "fwd", inputs, partial(_center_build, axis=LAYOUT_AXIS[layout]),
           partial(_center_fwd_torch, layout=layout),
           cases=tuple((s, "float32") for s in CHANNEL_SHAPES),
           default_cases=((CHANNEL_SHAPES[0], "float32"),), layout=layout,
           reference_max_size=CHANNEL_REFERENCE_MAX_SIZE, takes_out=True)
        for layout, inputs in (("NCHW", _nchw_inputs), ("NHWC", _nhwc_inputs))
    ],
]


# ---- vectors family: weight_norm, l2_normalize, cosine_norm ------------------------------


# x (weight_norm's v), g (one gain per row: weight_norm normalizes each x[c, :], axis 0)
# and dy; l2_normalize normalizes each row (axis -1) and takes x and dy.
_vector_inputs = _registry_inputs("weight_norm")
# x and w of the case's shape (N, D), dy of y's shape (N, N).
_cosine_inputs = _registry_inputs("cosine_norm")


def _wn_tensors(torch, a, grad=False):
    """v and g as PyTorch's ``_weight_norm`` takes them for dim 0: g of shape (C, 1)."""
    (v,) = _tensors(torch, a, "x", grad=grad)
    g = torch.from_numpy(np.array(a["g"]).reshape(-1, 1)).requires_grad_(grad)
    return v, g


def _wn_fwd_torch(torch, a):
    v, g = _wn_tensors(torch, a)
    return lambda: torch._weight_norm(v, g, 0)


def _wn_fwd_bwd_torch(torch, a):
    v, g = _wn_tensors(torch, a, grad=True)
    (dw,) = _tensors(torch, a, "dy")
    return lambda: torch.autograd.grad(torch._weight_norm(v, g, 0), (v, g), dw)


def _l2_torch(torch, x):
    return torch.nn.functional.normalize(x, dim=-1, eps=L2_EPS)


def _l2_fwd_torch(torch, a):
    (x,) = _tensors(torch, a, "x")
    return lambda: _l2_torch(torch, x)


def _l2_fwd_bwd_torch(torch, a):
    (x,) = _tensors(torch, a, "x", grad=True)
    (dy,) = _tensors(torch, a, "dy")
    return lambda: torch.autograd.grad(_l2_torch(torch, x), (x,), dy)


def _cos_torch(torch, x, w):
    return (_l2_torch(torch, x) @ _l2_torch(torch, w).T).clamp(-1.0, 1.0)


def _cos_fwd_torch(torch, a):
    x, w = _tensors(torch, a, "x", "w")
    return lambda: _cos_torch(torch, x, w)


def _cos_fwd_bwd_torch(torch, a):
    x, w = _tensors(torch, a, "x", "w", grad=True)
    (dy,) = _tensors(torch, a, "dy")
    return lambda: torch.autograd.grad(_cos_torch(torch, x, w), (x, w), dy)


def _unit_rows(a):
    """The rows of a divided by their norms, in a's dtype: cosine_norm's matmul operands."""
    norm = np.sqrt(np.square(a, dtype=np.float64).sum(axis=1, keepdims=True))
    return (a / np.maximum(norm, L2_EPS)).astype(a.dtype)


def _cos_fwd_matmul(a):
    """cosine_norm's forward product alone: x̂ ŵᵀ."""
    xh, wh = _unit_rows(a["x"]), _unit_rows(a["w"])
    return lambda: np.matmul(xh, wh.T)


def _cos_fwd_bwd_matmul(a):
    """cosine_norm's forward and backward products alone: x̂ ŵᵀ, dy ŵ and dyᵀ x̂."""
    xh, wh, dy = _unit_rows(a["x"]), _unit_rows(a["w"]), a["dy"]
    return lambda: (np.matmul(xh, wh.T), np.matmul(dy, wh), np.matmul(dy.T, xh))


def _vector_op(name, kind, build, build_torch, takes_out=False):
    """An entry on :data:`VECTOR_CASES`; the default run takes the first shape."""
    return Op(
        name,
        kind,
        _vector_inputs,
        build,
        build_torch,
        cases=VECTOR_CASES,
        default_cases=VECTOR_CASES[:1],
        takes_out=takes_out,
    )


def _cosine_op(kind, build, build_torch, matmul):
    """A cosine_norm entry on :data:`VECTOR_CASES`, with its matrix products alone."""
    return Op(
        "cosine_norm",
        kind,
        _cosine_inputs,
        build,
        build_torch,
        cases=VECTOR_CASES,
        default_cases=VECTOR_CASES[:1],
        reference_max_size=COSINE_REFERENCE_MAX_SIZE,
        matmul=matmul,
    )


OPS += [
    _vector_op("weight_norm", "fwd", _build("weight_norm", "fwd"), _wn_fwd_torch),
    _vector_op("weight_norm", "fwd+bwd", _build("weight_norm", "fwd+bwd"), _wn_fwd_bwd_torch,
               takes_out=True),
    _vector_op("l2_normalize", "fwd", _build("l2_normalize", "fwd", eps=L2_EPS), _l2_fwd_torch,
               takes_out=True),
    _vector_op("l2_normalize", "fwd+bwd", _build("l2_normalize", "fwd+bwd", eps=L2_EPS),
               _l2_fwd_bwd_torch, takes_out=True),
    _cosine_op("fwd", _build("cosine_norm", "fwd", eps=L2_EPS), _cos_fwd_torch, _cos_fwd_matmul),
    _cosine_op("fwd+bwd", _build("cosine_norm", "fwd+bwd", eps=L2_EPS), _cos_fwd_bwd_torch,
               _cos_fwd_bwd_matmul),
]


# ---- selection, inputs, implementations ---------------------------------------------


def select(names: Sequence[str] | None = None, kinds: Sequence[str] | None = None) -> list[Op]:
    """The entries of :data:`OPS` with the given names and kinds, in table order.

    ``kinds=None`` picks the default entries. Unknown names or kinds, and a choice that
    selects no entry (an op without that pass), raise ValueError.
    """
    known_names = list(dict.fromkeys(op.name for op in OPS))
    known_kinds = list(dict.fromkeys(op.kind for op in OPS))
    for given, known, what in ((names, known_names, "op"), (kinds, known_kinds, "pass")):
        bad = [n for n in given or () if n not in known]
        if bad:
            raise ValueError(
                f"unknown {what} {', '.join(bad)}; expected some of {', '.join(known)}"
            )
    chosen = [
        op
        for op in OPS
        if (names is None or op.name in names)
        and (op.default if kinds is None else op.kind in kinds)
    ]
    if not chosen:
        have = {n: [op.kind for op in OPS if op.name == n] for n in names or known_names}
        raise ValueError(
            f"no entry for op {', '.join(names or ())} with pass {', '.join(kinds or ())} "
            "(the passes each op has: "
            + "; ".join(f"{n}: {', '.join(dict.fromkeys(k))}" for n, k in have.items())
            + ")"
        )
    return chosen


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


def blas_threads(n: int):
    """Limit the BLAS libraries loaded so far (NumPy's, which cosine_norm's matrix product
    uses, and torch's) to ``n`` threads with threadpoolctl; returns its limiter, whose
    ``restore_original_limits()`` undoes it, or None where threadpoolctl is not installed."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return None
    return threadpool_limits(limits=n, user_api="blas")


def implementation(op: Op, impl: str, arrays: Arrays, torch=None) -> Callable[[], object] | None:
    """The timed callable of ``impl`` (one of :data:`IMPLS`, or :data:`OUT_IMPL`) for ``op``
    on ``arrays``.

    None when ``impl`` is ``"torch"`` and torch is not given or the op has no torch builder,
    or when it is :data:`OUT_IMPL` and the op does not take ``out``. :data:`OUT_IMPL`'s
    ``out`` is allocated here, once, so that its pages are touched by the warm-up call.
    """
    if impl == "fastnorm":
        return op.build(importlib.import_module("fastnorm"), arrays)
    if impl == OUT_IMPL:
        if not op.takes_out:
            return None
        out = np.empty_like(arrays["x"])
        return op.build(importlib.import_module("fastnorm"), arrays, out=out)
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


# ---- roofline: copy speed, thread counts, the machine ----------------------------------

# What bench/report.py and bench/scaling.py time on each case, besides np.copyto.
class Cache:
    """Inputs per ``(op.inputs, shape, dtype)`` and copy times per that and a thread count,
    shared by the entries of a run: the passes of one op, and the ops of one family, get the
    same arrays (see :func:`make_inputs`) and so the same copy times."""

    def __init__(self, rounds: int = 5, target: float = 0.03):
        self.rounds, self.target = rounds, target
        self.arrays: dict = {}
        self.copy_s: dict = {}

    def inputs(self, op: Op, shape, dtype) -> Arrays:
        key = (op.inputs, tuple(shape), dtype)
        if key not in self.arrays:
            self.arrays[key] = make_inputs(op.inputs, shape, dtype)
        return self.arrays[key]

    def _copy(self, kind, op, shape, dtype, threads, make):
        key = (kind, op.inputs, tuple(shape), dtype, threads)
        if key not in self.copy_s:
            fn = make(self.inputs(op, shape, dtype)["x"])
            self.copy_s[key] = measure(fn, rounds=self.rounds, target=self.target).median
        return self.copy_s[key]

    def copy_time(self, op: Op, shape, dtype, threads=None) -> float:
        """Median seconds of ``np.copyto`` of the case's x into a preallocated array (NumPy
        copies on one thread); ``threads`` only keys the cache, one time per thread count."""

        def make(x):
            dst = np.empty_like(x)
            return lambda: np.copyto(dst, x)

        return self._copy("numpy", op, shape, dtype, threads, make)

    def torch_copy_time(self, op: Op, shape, dtype, torch, threads=None) -> float:
        """Median seconds of ``Tensor.copy_`` of the case's x into a preallocated tensor, which
        PyTorch splits over its threads: a copy speed that scales with the thread count."""

        def make(x):
            src = torch.from_numpy(np.array(x))
            dst = torch.empty_like(src)
            return lambda: dst.copy_(src)

        return self._copy("torch", op, shape, dtype, threads, make)
