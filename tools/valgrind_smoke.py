"""Smoke run of every public fastnorm function, for memory checkers (valgrind, ASan/LSan).

Calls the forward and backward pass of layer_norm, rms_norm, batch_norm (training and
evaluation, channels-first and channels-last, running statistics of either dtype; also
batch_moments and fastnorm.distributed's synchronized batch norm on one rank),
group_norm, instance_norm, l2_normalize, weight_norm and cosine_norm on small float32 and
float64 inputs with odd sizes (SIMD tails), in every input layout the API accepts
(contiguous, Fortran order, stepped, negative strides, one element off, byte-misaligned,
byte-swapped), with out=None, out= contiguous, out= non-contiguous and out=x, on every
SIMD level the CPU (or valgrind's virtual CPU) supports, with ordinary and streaming
stores, and once above the threading threshold with 2 threads.

Every array fastnorm returns (and every running statistic it updates) is passed to
os.writev on /dev/null: memcheck checks syscall buffers, so an output element the kernels
left unwritten shows up as "Syscall param writev(vector[...]) points to uninitialised
byte(s)" right after the call that produced it (no other code in the process uses writev).
(NumPy keeps small freed data buffers in a cache and hands them out again without malloc,
so an unwritten element of a small output may hold an old, defined value instead: every
result is therefore also compared, loosely, with fastnorm.reference, and the out= arrays
are filled with NaN first. The run fails on a wrong answer, not only on a memory error.)

Usage:  python tools/valgrind_smoke.py [--labels] [--quick]
  --labels  print "fastnorm-smoke: CASE <label>" on stderr before each case, so that a
            memcheck report on stderr can be matched with the call that caused it
  --quick   one SIMD level (the active one), ordinary stores only

Exit status 0 when every result matches the reference.
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

import fastnorm as fn
from fastnorm import _kernels, _runtime
from fastnorm import distributed as fn_dist
from fastnorm import reference as ref

F32, F64 = np.dtype(np.float32), np.dtype(np.float64)
TOL = {F32: 2e-4, F64: 1e-9}

_devnull = os.open(os.devnull, os.O_WRONLY)
_labels = False
_state = {"cases": 0, "calls": 0, "label": ""}
_failures: list[str] = []


class _OneRank:
    """A communicator of one rank (fastnorm.distributed's protocol)."""

    def allgather(self, obj):
        return [obj]

    def allreduce(self, obj):
        return obj


def case(label):
    _state["cases"] += 1
    _state["label"] = label
    if _labels:
        sys.stderr.write(f"fastnorm-smoke: CASE {label}\n")
        sys.stderr.flush()


def probe(*arrays):
    """Hand every byte of each array to a syscall, so that memcheck checks it is defined."""
    for a in arrays:
        if a is None:
            continue
        a = np.ascontiguousarray(a)
        if a.size:
            os.writev(_devnull, [memoryview(a).cast("B")])
    _state["calls"] += 1
    return arrays


def check(name, got, expected, dtype):
    """Loose comparison with the float64 reference (NaN where the reference has NaN)."""
    if expected is None:
        if got is not None:
            _failures.append(f"{_state['label']}: {name}: expected None")
        return
    got = np.asarray(got)
    exp = np.asarray(expected, dtype=np.float64)
    if got.shape != exp.shape:
        _failures.append(f"{_state['label']}: {name}: shape {got.shape} != {exp.shape}")
        return
    if got.dtype != dtype:
        _failures.append(f"{_state['label']}: {name}: dtype {got.dtype} != {dtype}")
        return
    tol = TOL[np.dtype(dtype)]
    finite = exp[np.isfinite(exp)]
    scale = max(1.0, float(np.abs(finite).max())) if finite.size else 1.0
    if not np.allclose(got.astype(np.float64), exp, rtol=tol, atol=tol * scale, equal_nan=True):
        err = np.nanmax(np.abs(got.astype(np.float64) - exp))
        _failures.append(f"{_state['label']}: {name}: max abs error {err:.3g}")


def check_all(names, got, expected, dtype):
    for n, g, e in zip(names, got, expected, strict=True):
        check(n, g, e, dtype)


# ------------------------------------------------------------------------- input layouts


def _stepped(x):
    big = np.zeros(tuple(2 * s + 1 for s in x.shape), dtype=x.dtype)
    view = big[tuple(slice(1, None, 2) for _ in x.shape)]
    view[...] = x
    return view


def _reversed(x):
    flipped = np.ascontiguousarray(x[tuple(slice(None, None, -1) for _ in x.shape)])
    return flipped[tuple(slice(None, None, -1) for _ in x.shape)]


def _offset(x):
    buf = np.zeros(x.size + 1, dtype=x.dtype)
    view = buf[1:].reshape(x.shape)
    view[...] = x
    return view


def _misaligned(x):
    raw = np.zeros(x.nbytes + x.itemsize, dtype=np.uint8)
    view = raw[1 : 1 + x.nbytes].view(x.dtype).reshape(x.shape)
    view[...] = x
    return view


LAYOUTS = {
    "contiguous": lambda x: np.ascontiguousarray(x),
    "fortran": lambda x: np.asfortranarray(x),
    "stepped": _stepped,
    "reversed": _reversed,
    "offset": _offset,
    "misaligned": _misaligned,
    "byteswapped": lambda x: x.astype(x.dtype.newbyteorder("S")),
}


def layouts(quick):
    return ["contiguous", "stepped"] if quick else list(LAYOUTS)


def lay(name, x):
    return None if x is None else LAYOUTS[name](np.asarray(x))


def f64(a):
    return None if a is None else np.asarray(a, dtype=np.float64)


def out_variants(shape, dtype, x=None):
    """(name, out array or None, whether it is x itself)."""
    yield "out=None", None
    yield "out=contiguous", np.full(shape, np.nan, dtype)
    yield "out=stepped", _stepped(np.full(shape, np.nan, dtype))
    if x is not None:
        yield "out=x", x


# ------------------------------------------------------------------------- the ops


def run_rows(rng, dtype, quick):
    # (shape, axis): odd last sizes (vector tails), several normalized axes, K = 1.
    configs = [((5, 37), -1), ((3, 4, 19), 1), ((6, 1), -1), ((2, 3, 5, 7), -2)]
    if quick:
        configs = configs[:2]
    for shape, axis in configs:
        nshape = shape[axis:] if axis >= 0 else shape[len(shape) + axis :]
        x = (rng.standard_normal(shape) * 2 + 0.5).astype(dtype)
        w = (rng.standard_normal(nshape) * 0.5 + 1).astype(dtype)
        b = rng.standard_normal(nshape).astype(dtype)
        dy = rng.standard_normal(shape).astype(dtype)
        for lname in layouts(quick):
            xl, wl, bl, dyl = (lay(lname, a) for a in (x, w, b, dy))
            for wname, ww, bb in (("affine", wl, bl), ("plain", None, None)):
                tag = f"{dtype.name} {shape} axis={axis} {lname} {wname}"
                # layer norm
                case(f"layer_norm {tag}")
                y, mean, rstd = probe(*fn.layer_norm(xl, ww, bb, axis=axis, return_stats=True))
                exp = ref.layer_norm(f64(x), f64(ww), f64(bb), axis=axis, return_stats=True)
                check_all(("y", "mean", "rstd"), (y, mean, rstd), exp, dtype)
                case(f"layer_norm_backward {tag}")
                grads = probe(*fn.layer_norm_backward(dyl, xl, mean, rstd, ww, axis=axis))
                exp = ref.layer_norm_backward(f64(dy), f64(x), f64(mean), f64(rstd), f64(ww),
                                              axis=axis)
                check_all(("dx", "dweight", "dbias"), grads, exp, dtype)
                # rms norm
                case(f"rms_norm {tag}")
                y, rstd = probe(*fn.rms_norm(xl, ww, axis=axis, return_stats=True))
                exp = ref.rms_norm(f64(x), f64(ww), axis=axis, return_stats=True)
                check_all(("y", "rstd"), (y, rstd), exp, dtype)
                case(f"rms_norm_backward {tag}")
                grads = probe(*fn.rms_norm_backward(dyl, xl, rstd, ww, axis=axis))
                exp = ref.rms_norm_backward(f64(dy), f64(x), f64(rstd), f64(ww), axis=axis)
                check_all(("dx", "dweight"), grads, exp, dtype)
        # out= variants, contiguous inputs
        tag = f"{dtype.name} {shape} axis={axis}"
        for oname, out in out_variants(shape, dtype, x.copy()):
            case(f"layer_norm {tag} {oname}")
            xin = out if oname == "out=x" else x
            y = probe(fn.layer_norm(xin, w, b, axis=axis, out=out))[0]
            check("y", y, ref.layer_norm(f64(x), f64(w), f64(b), axis=axis), dtype)
            if out is not None and y is not out:
                _failures.append(f"{_state['label']}: the result is not out")
        for oname, out in out_variants(shape, dtype, x.copy()):
            case(f"rms_norm {tag} {oname}")
            xin = out if oname == "out=x" else x
            y = probe(fn.rms_norm(xin, w, axis=axis, out=out))[0]
            check("y", y, ref.rms_norm(f64(x), f64(w), axis=axis), dtype)
    # an empty batch
    case(f"layer_norm/rms_norm {dtype.name} empty batch")
    x = np.zeros((0, 9), dtype)
    y, mean, rstd = probe(*fn.layer_norm(x, np.ones(9, dtype), return_stats=True))
    probe(*fn.layer_norm_backward(x, x, mean, rstd, np.ones(9, dtype)))
    y, rstd = probe(*fn.rms_norm(x, np.ones(9, dtype), return_stats=True))
    probe(*fn.rms_norm_backward(x, x, rstd, np.ones(9, dtype)))


def run_channels(rng, dtype, quick):
    # (shape, channel axis): NCHW and NHWC with odd sizes; C = 6 for groups of 2 and 3.
    configs = [((3, 6, 5, 7), 1), ((3, 5, 7, 6), -1), ((4, 6), 1), ((2, 6, 9), 1), ((2, 9, 6), 2)]
    if quick:
        configs = configs[:2]
    for shape, axis in configs:
        C = shape[axis]
        x = (rng.standard_normal(shape) * 2 + 1).astype(dtype)
        w = (rng.standard_normal(C) * 0.5 + 1).astype(dtype)
        b = rng.standard_normal(C).astype(dtype)
        dy = rng.standard_normal(shape).astype(dtype)
        rm0 = rng.standard_normal(C)
        rv0 = rng.uniform(0.5, 2.0, C)
        for lname in layouts(quick):
            xl, wl, bl, dyl = (lay(lname, a) for a in (x, w, b, dy))
            for wname, ww, bb in (("affine", wl, bl), ("plain", None, None)):
                tag = f"{dtype.name} {shape} axis={axis} {lname} {wname}"
                # batch norm, training, running statistics of the other float dtype
                case(f"batch_norm train {tag}")
                rdt = F64 if dtype == F32 else F32
                rm, rv = rm0.astype(rdt), rv0.astype(rdt)
                rm_ref, rv_ref = f64(rm).copy(), f64(rv).copy()
                out = fn.batch_norm(xl, ww, bb, rm, rv, axis=axis, momentum=0.3,
                                    return_stats=True)
                y, mean, rstd = probe(*out)
                probe(rm, rv)
                exp = ref.batch_norm(f64(x), f64(ww), f64(bb), rm_ref, rv_ref, axis=axis,
                                     momentum=0.3, return_stats=True)
                check_all(("y", "mean", "rstd"), out, exp, dtype)
                check("running_mean", rm, rm_ref, rdt)
                check("running_var", rv, rv_ref, rdt)
                case(f"batch_norm_backward train {tag}")
                grads = probe(*fn.batch_norm_backward(dyl, xl, mean, rstd, ww, axis=axis))
                exp = ref.batch_norm_backward(f64(dy), f64(x), f64(mean), f64(rstd), f64(ww),
                                              axis=axis)
                check_all(("dx", "dweight", "dbias"), grads, exp, dtype)
                # batch norm, training, no running statistics
                case(f"batch_norm train no-running {tag}")
                y = probe(fn.batch_norm(xl, ww, bb, axis=axis))[0]
                check("y", y, ref.batch_norm(f64(x), f64(ww), f64(bb), axis=axis), dtype)
                # batch norm, evaluation
                case(f"batch_norm eval {tag}")
                rme, rve = rm0.astype(dtype), rv0.astype(dtype)
                out = fn.batch_norm(xl, ww, bb, rme, rve, training=False, axis=axis,
                                    return_stats=True)
                y, mean_e, rstd_e = probe(*out)
                exp = ref.batch_norm(f64(x), f64(ww), f64(bb), f64(rme), f64(rve),
                                     training=False, axis=axis, return_stats=True)
                check_all(("y", "mean", "rstd"), out, exp, dtype)
                case(f"batch_norm_backward eval {tag}")
                grads = probe(*fn.batch_norm_backward(dyl, xl, mean_e, rstd_e, ww, axis=axis,
                                                      training=False))
                exp = ref.batch_norm_backward(f64(dy), f64(x), f64(mean_e), f64(rstd_e),
                                              f64(ww), axis=axis, training=False)
                check_all(("dx", "dweight", "dbias"), grads, exp, dtype)
                # mergeable moments, and synchronized batch norm with a one-rank communicator
                case(f"batch_moments {tag}")
                got = probe(*fn.batch_moments(xl, axis=axis))
                exp = ref.batch_moments(f64(x), axis=axis)
                check_all(("mean", "m2"), got[1:], exp[1:], F64)
                case(f"sync_batch_norm {tag}")
                out = fn_dist.sync_batch_norm(xl, ww, bb, axis=axis, comm=_OneRank(),
                                              return_stats=True)
                y, mean_s, rstd_s = probe(*out)
                exp = ref.batch_norm(f64(x), f64(ww), f64(bb), axis=axis, return_stats=True)
                check_all(("y", "mean", "rstd"), out, exp, dtype)
                case(f"sync_batch_norm_backward {tag}")
                grads = probe(*fn_dist.sync_batch_norm_backward(dyl, xl, mean_s, rstd_s, ww,
                                                                axis=axis, comm=_OneRank()))
                exp = ref.batch_norm_backward(f64(dy), f64(x), f64(mean_s), f64(rstd_s),
                                              f64(ww), axis=axis)
                check_all(("dx", "dweight", "dbias"), grads, exp, dtype)
                # group norm (2 and 3 groups; 1 group = layer norm over C and positions)
                if len(shape) >= 2:
                    for G in (1, 2, 3):
                        case(f"group_norm G={G} {tag}")
                        out = fn.group_norm(xl, G, ww, bb, axis=axis, return_stats=True)
                        y, mean, rstd = probe(*out)
                        exp = ref.group_norm(f64(x), G, f64(ww), f64(bb), axis=axis,
                                             return_stats=True)
                        check_all(("y", "mean", "rstd"), out, exp, dtype)
                        case(f"group_norm_backward G={G} {tag}")
                        grads = probe(*fn.group_norm_backward(dyl, xl, mean, rstd, G, ww,
                                                              axis=axis))
                        exp = ref.group_norm_backward(f64(dy), f64(x), f64(mean), f64(rstd), G,
                                                      f64(ww), axis=axis)
                        check_all(("dx", "dweight", "dbias"), grads, exp, dtype)
                    case(f"instance_norm {tag}")
                    out = fn.instance_norm(xl, ww, bb, axis=axis, return_stats=True)
                    y, mean, rstd = probe(*out)
                    exp = ref.instance_norm(f64(x), f64(ww), f64(bb), axis=axis,
                                            return_stats=True)
                    check_all(("y", "mean", "rstd"), out, exp, dtype)
                    case(f"instance_norm_backward {tag}")
                    grads = probe(*fn.instance_norm_backward(dyl, xl, mean, rstd, ww, axis=axis))
                    exp = ref.instance_norm_backward(f64(dy), f64(x), f64(mean), f64(rstd),
                                                     f64(ww), axis=axis)
                    check_all(("dx", "dweight", "dbias"), grads, exp, dtype)
        # out= variants, contiguous inputs
        tag = f"{dtype.name} {shape} axis={axis}"
        for oname, out in out_variants(shape, dtype, x.copy()):
            case(f"batch_norm {tag} {oname}")
            xin = out if oname == "out=x" else x
            rm, rv = rm0.copy(), rv0.copy()
            y = probe(fn.batch_norm(xin, w, b, rm, rv, axis=axis, out=out))[0]
            probe(rm, rv)
            check("y", y, ref.batch_norm(f64(x), f64(w), f64(b), axis=axis), dtype)
        for oname, out in out_variants(shape, dtype, x.copy()):
            case(f"batch_norm eval {tag} {oname}")
            xin = out if oname == "out=x" else x
            y = probe(fn.batch_norm(xin, w, b, rm0, rv0, training=False, axis=axis, out=out))[0]
            exp = ref.batch_norm(f64(x), f64(w), f64(b), rm0, rv0, training=False, axis=axis)
            check("y", y, exp, dtype)
        if len(shape) >= 2:
            for oname, out in out_variants(shape, dtype, x.copy()):
                case(f"group_norm {tag} {oname}")
                xin = out if oname == "out=x" else x
                y = probe(fn.group_norm(xin, 3, w, b, axis=axis, out=out))[0]
                check("y", y, ref.group_norm(f64(x), 3, f64(w), f64(b), axis=axis), dtype)
            for oname, out in out_variants(shape, dtype, x.copy()):
                case(f"instance_norm {tag} {oname}")
                xin = out if oname == "out=x" else x
                y = probe(fn.instance_norm(xin, w, b, axis=axis, out=out))[0]
                check("y", y, ref.instance_norm(f64(x), f64(w), f64(b), axis=axis), dtype)
    # an empty batch: empty outputs, running statistics untouched
    case(f"batch/group/instance norm {dtype.name} empty batch")
    x = np.zeros((0, 6, 5), dtype)
    rm, rv = np.zeros(6, dtype), np.ones(6, dtype)
    y, mean, rstd = probe(*fn.batch_norm(x, None, None, rm, rv, return_stats=True))
    probe(*fn.batch_norm_backward(x, x, mean, rstd, np.ones(6, dtype)))
    y, mean, rstd = probe(*fn.group_norm(x, 2, np.ones(6, dtype), return_stats=True))
    probe(*fn.group_norm_backward(x, x, mean, rstd, 2, np.ones(6, dtype)))
    y, mean, rstd = probe(*fn.instance_norm(x, return_stats=True))
    probe(*fn.instance_norm_backward(x, x, mean, rstd))


def run_vectors(rng, dtype, quick):
    # l2_normalize over each axis of odd-sized arrays
    configs = [((5, 37), -1), ((5, 37), 0), ((3, 7, 5), 1), ((9,), 0)]
    if quick:
        configs = configs[:2]
    for shape, axis in configs:
        x = rng.standard_normal(shape).astype(dtype)
        if len(shape) > 1:
            x[(0,) * (len(shape) - 1)] = 0  # a zero vector (or element) along the way
        dy = rng.standard_normal(shape).astype(dtype)
        for lname in layouts(quick):
            xl, dyl = lay(lname, x), lay(lname, dy)
            tag = f"{dtype.name} {shape} axis={axis} {lname}"
            case(f"l2_normalize {tag}")
            y, norm = probe(*fn.l2_normalize(xl, axis=axis, return_stats=True))
            exp = ref.l2_normalize(f64(x), axis=axis, return_stats=True)
            check_all(("y", "norm"), (y, norm), exp, dtype)
            case(f"l2_normalize_backward {tag}")
            dx = probe(fn.l2_normalize_backward(dyl, lay(lname, y), norm, axis=axis))[0]
            check("dx", dx, ref.l2_normalize_backward(f64(dy), f64(y), f64(norm), axis=axis),
                  dtype)
        tag = f"{dtype.name} {shape} axis={axis}"
        for oname, out in out_variants(shape, dtype, x.copy()):
            case(f"l2_normalize {tag} {oname}")
            xin = out if oname == "out=x" else x
            y = probe(fn.l2_normalize(xin, axis=axis, out=out))[0]
            check("y", y, ref.l2_normalize(f64(x), axis=axis), dtype)
    # weight norm: g as (C,) or keepdims, one norm per unit along `axis`
    for shape, axis in [((6, 5, 3), 0), ((4, 7), 1), ((7,), 0), ((3, 5, 2), -1)]:
        C = shape[axis]
        v = rng.standard_normal(shape).astype(dtype)
        v[(slice(None),) * (axis % len(shape)) + (0,)] = 0  # one zero slice
        keep = tuple(C if i == axis % len(shape) else 1 for i in range(len(shape)))
        g = (rng.standard_normal(C) + 1).astype(dtype)
        dw = rng.standard_normal(shape).astype(dtype)
        for lname in layouts(quick):
            for gname, gg in (("g(C,)", g), ("g keepdims", g.reshape(keep))):
                vl, gl, dwl = lay(lname, v), lay(lname, gg), lay(lname, dw)
                tag = f"{dtype.name} {shape} axis={axis} {lname} {gname}"
                case(f"weight_norm {tag}")
                w, norm = probe(*fn.weight_norm(vl, gl, axis=axis, return_stats=True))
                exp = ref.weight_norm(f64(v), f64(gg), axis=axis, return_stats=True)
                check_all(("w", "norm"), (w, norm), exp, dtype)
                case(f"weight_norm_backward {tag}")
                grads = probe(*fn.weight_norm_backward(dwl, vl, gl, norm, axis=axis))
                exp = ref.weight_norm_backward(f64(dw), f64(v), f64(gg), f64(norm), axis=axis)
                check_all(("dv", "dg"), grads, exp, dtype)
    # cosine norm: x (N, D), w (M, D), odd D
    for N, M, D in [(6, 4, 17), (1, 3, 5), (7, 9, 33)]:
        x = rng.standard_normal((N, D)).astype(dtype)
        w = rng.standard_normal((M, D)).astype(dtype)
        dy = rng.standard_normal((N, M)).astype(dtype)
        for lname in layouts(quick):
            xl, wl, dyl = lay(lname, x), lay(lname, w), lay(lname, dy)
            tag = f"{dtype.name} N={N} M={M} D={D} {lname}"
            case(f"cosine_norm {tag}")
            y, xn, wn = probe(*fn.cosine_norm(xl, wl, return_stats=True))
            exp = ref.cosine_norm(f64(x), f64(w), return_stats=True)
            check_all(("y", "x_norm", "w_norm"), (y, xn, wn), exp, dtype)
            case(f"cosine_norm_backward {tag}")
            grads = probe(*fn.cosine_norm_backward(dyl, xl, wl, xn, wn))
            exp = ref.cosine_norm_backward(f64(dy), f64(x), f64(w), f64(xn), f64(wn))
            check_all(("dx", "dw"), grads, exp, dtype)


def run_threaded(rng, dtype):
    """Above the 32768-element threshold, with 2 OpenMP threads."""
    fn.set_num_threads(2)
    try:
        x = rng.standard_normal((5, 6613)).astype(dtype)  # 33065 elements, odd row length
        dy = rng.standard_normal(x.shape).astype(dtype)
        case(f"threaded layer_norm/rms_norm {dtype.name} {x.shape}")
        y, mean, rstd = probe(*fn.layer_norm(x, return_stats=True))
        check("y", y, ref.layer_norm(f64(x)), dtype)
        grads = probe(*fn.layer_norm_backward(dy, x, mean, rstd))
        check("dx", grads[0], ref.layer_norm_backward(f64(dy), f64(x), f64(mean), f64(rstd))[0],
              dtype)
        y, rstd = probe(*fn.rms_norm(x, return_stats=True))
        probe(*fn.rms_norm_backward(dy, x, rstd))
        xb = rng.standard_normal((3, 6, 43, 43)).astype(dtype)  # 33282 elements
        dyb = rng.standard_normal(xb.shape).astype(dtype)
        for axis, xx, dd in ((1, xb, dyb), (-1, np.moveaxis(xb, 1, -1).copy(),
                                            np.moveaxis(dyb, 1, -1).copy())):
            case(f"threaded batch/group/instance norm {dtype.name} {xx.shape} axis={axis}")
            rm, rv = np.zeros(6, dtype), np.ones(6, dtype)
            y, mean, rstd = probe(*fn.batch_norm(xx, None, None, rm, rv, axis=axis,
                                                 return_stats=True))
            check("y", y, ref.batch_norm(f64(xx), axis=axis), dtype)
            probe(*fn.batch_norm_backward(dd, xx, mean, rstd, axis=axis))
            y, mean, rstd = probe(*fn.group_norm(xx, 3, axis=axis, return_stats=True))
            check("y", y, ref.group_norm(f64(xx), 3, axis=axis), dtype)
            probe(*fn.group_norm_backward(dd, xx, mean, rstd, 3, axis=axis))
            y, mean, rstd = probe(*fn.instance_norm(xx, axis=axis, return_stats=True))
            probe(*fn.instance_norm_backward(dd, xx, mean, rstd, axis=axis))
        case(f"threaded l2_normalize/weight_norm {dtype.name}")
        y, norm = probe(*fn.l2_normalize(x, axis=0, return_stats=True))
        probe(fn.l2_normalize_backward(dy, y, norm, axis=0))
        g = np.ones(x.shape[0], dtype)
        w, norm = probe(*fn.weight_norm(x, g, return_stats=True))
        probe(*fn.weight_norm_backward(dy, x, g, norm))
    finally:
        fn.set_num_threads(0)


def main(argv=None):
    global _labels
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--labels", action="store_true", help="print each case's label on stderr")
    ap.add_argument("--quick", action="store_true", help="active SIMD level, fewer layouts")
    args = ap.parse_args(argv)
    _labels = args.labels

    print(f"fastnorm smoke: {fn.__file__}")
    print(f"fastnorm smoke: build: {_kernels.build_info()}")
    best = _kernels.isa_supported()
    initial = _runtime._simd_level()
    levels = _runtime.SIMD_LEVELS[: _runtime.SIMD_LEVELS.index(best) + 1]
    if args.quick:
        levels = [initial]
    default_stream = _kernels.get_stream_bytes()
    streams = [("ordinary stores", default_stream)]
    if not args.quick:
        streams.append(("streaming stores", 0))
    try:
        for level in levels:
            _runtime._simd_level(level)
            for sname, nbytes in streams:
                _kernels.set_stream_bytes(nbytes)
                print(f"fastnorm smoke: SIMD {level}, {sname}", flush=True)
                for dtype in (F32, F64):
                    rng = np.random.default_rng(1234)
                    run_rows(rng, dtype, args.quick)
                    run_channels(rng, dtype, args.quick)
                    run_vectors(rng, dtype, args.quick)
                    run_threaded(rng, dtype)
    finally:
        _kernels.set_stream_bytes(-1)
        _runtime._simd_level(initial)
    print(f"fastnorm smoke: {_state['cases']} cases, {_state['calls']} fastnorm calls, "
          f"SIMD levels {', '.join(levels)}")
    if _failures:
        print(f"fastnorm smoke: {len(_failures)} results differ from the reference:")
        for f in _failures[:50]:
            print("  " + f)
        return 1
    print("fastnorm smoke: every result matches the reference")
    return 0


if __name__ == "__main__":
    sys.exit(main())
