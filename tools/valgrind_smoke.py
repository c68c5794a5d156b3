"""Smoke run of every public fastnorm function, for memory checkers (valgrind, ASan/LSan).

Calls the forward and backward pass of every op of fastnorm._ops (layer_norm, rms_norm,
batch_norm in training and evaluation, running statistics of either dtype, group_norm,
instance_norm, batch_moments, merge_moments, l2_normalize, weight_norm, cosine_norm; also
fastnorm.distributed's synchronized batch norm on one rank) on the registry's small cases
(odd sizes: SIMD tails; both layouts) in float32 and float64, in every input layout the API accepts
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
from fastnorm import _kernels, _ops, _runtime
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


def check(name, got, expected, dtype, tol_dtype=None):
    """Loose comparison with the float64 reference (NaN where the reference has NaN), at the
    accuracy of ``tol_dtype`` (default ``dtype``); integers exactly."""
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
    if got.dtype.kind in "iu":
        if not np.array_equal(got, exp):
            _failures.append(f"{_state['label']}: {name}: {got} != {exp}")
        return
    tol = TOL[np.dtype(tol_dtype or dtype)]
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

# Input variants beyond the layouts, per op: (name, change of the inputs).
def _zero_vector(a, p):
    x = a["x"].copy()
    if x.ndim > 1:
        x[(0,) * (x.ndim - 1)] = 0  # a zero vector (or element) along the way
    return {**a, "x": x}


def _zero_unit(a, p):
    x = a["x"].copy()
    ax = p.get("axis", 0) % x.ndim
    x[(slice(None),) * ax + (0,)] = 0  # one zero slice: a zero norm
    return {**a, "x": x}


def _g_keepdims(a, p):
    x = a["x"]
    ax = p.get("axis", 0) % x.ndim
    keep = tuple(x.shape[ax] if i == ax else 1 for i in range(x.ndim))
    return {**a, "g": a["g"].reshape(keep)}


EXTRA_INPUTS = {
    "l2_normalize": [("zero vector", _zero_vector)],
    "weight_norm": [("zero unit", _zero_unit), ("g keepdims", _g_keepdims)],
}


def _laid_out(op, a, lname):
    """Every array in layout ``lname``, except the running statistics (updated in place;
    non-native byte order is refused there)."""
    return {k: (v if k in op.running else lay(lname, v)) for k, v in a.items()}


def _other_float(a, keys, dtype):
    other = F64 if dtype == F32 else F32
    return {**a, **{k: a[k].astype(other) for k in keys}}


def run_case(op, tag, a, params, dtype, lname="contiguous"):
    """One op forward and backward on ``a`` laid out as ``lname``; every result probed and
    compared with the reference on ``a``'s values."""
    case(f"{op.name} {tag}")
    la = _laid_out(op, a, lname)
    got = op.run(fn, la, params)
    running = [la[k] for k in op.running if k in la]
    probe(*(g for g in got if isinstance(g, np.ndarray)), *running)
    expected = op.run(ref, _ops.float64(a), params)
    for label, g, e in zip(op.labels(a), got, expected, strict=True):
        rdt = op.result_dtype(label, a[label].dtype if label in a else dtype)
        check(label, g, e, rdt, tol_dtype=F32 if F32 in (rdt, np.dtype(dtype)) else F64)


def _first(result):
    """y: the result, or its first element (add_layer_norm returns (y, s))."""
    return result[0] if isinstance(result, tuple) else result


def run_op(op, rng, dtype, quick):
    cases = op.cases[:2] if quick else op.cases
    for shape, params in cases:
        for variant in op.variants:
            p = {**params, **variant}
            base = op.make_inputs(rng, shape, dtype, p)
            inputs = [("affine", base)]
            if op.optional:
                inputs.append(("plain", {k: v for k, v in base.items() if k not in op.optional}))
            if op.running and p.get("training", True):
                inputs.append(("running other dtype", _other_float(base, op.running, dtype)))
            inputs += [(name, change(base, p)) for name, change in EXTRA_INPUTS.get(op.name, [])]
            for iname, a in inputs:
                for lname in layouts(quick):
                    run_case(op, f"{dtype.name} {shape} {p} {lname} {iname}", a, p, dtype,
                             lname)  # fmt: skip
            if op.name == "batch_norm" and p["training"]:
                run_sync(base, p, dtype, f"{dtype.name} {shape} {p}")
            if not op.forward_out:
                continue
            # out= variants, contiguous inputs
            expected = _first(op.call_forward(ref, _ops.float64(base), p))
            for oname, out in out_variants(base["x"].shape, dtype, base["x"].copy()):
                case(f"{op.name} {dtype.name} {shape} {p} {oname}")
                a = {**base, "x": out} if oname == "out=x" else base
                a = {**a, **{k: np.array(a[k]) for k in op.running}}
                got = op.call_forward(fn, a, p, out=out)
                probe(*(got if isinstance(got, tuple) else (got,)))
                y = _first(got)
                check("y", y, expected, dtype)
                if out is not None and y is not out:
                    _failures.append(f"{_state['label']}: the result is not out")


def run_sync(a, p, dtype, tag):
    """fastnorm.distributed's synchronized batch norm with a one-rank communicator."""
    w, b, x, dy, axis = a.get("weight"), a.get("bias"), a["x"], a["dy"], p["axis"]
    case(f"sync_batch_norm {tag}")
    out = fn_dist.sync_batch_norm(x, w, b, axis=axis, comm=_OneRank(), return_stats=True)
    y, mean, rstd = probe(*out)
    exp = ref.batch_norm(f64(x), f64(w), f64(b), axis=axis, return_stats=True)
    check_all(("y", "mean", "rstd"), out, exp, dtype)
    case(f"sync_batch_norm_backward {tag}")
    grads = probe(*fn_dist.sync_batch_norm_backward(dy, x, mean, rstd, w, axis=axis,
                                                    comm=_OneRank()))  # fmt: skip
    exp = ref.batch_norm_backward(f64(dy), f64(x), f64(mean), f64(rstd), f64(w), axis=axis)
    check_all(("dx", "dweight", "dbias"), grads, exp, dtype)


# An empty batch: empty outputs, running statistics untouched.
EMPTY = {"rows": ((0, 9), {}), "channels": ((0, 6, 5), {})}


def run_empty(rng, dtype):
    for op in _ops.OPS:
        if op.family not in EMPTY or op.name in ("batch_moments", "merge_moments"):
            continue
        shape, params = EMPTY[op.family]
        p = {"num_groups": 2} if op.name == "group_norm" else params
        for variant in op.variants:
            if variant.get("training") is False:
                continue
            run_case(op, f"{dtype.name} empty batch {shape}", op.make_inputs(rng, shape, dtype, p),
                     {**p, **variant}, dtype)  # fmt: skip


# Above the 32768-element threshold, with 2 OpenMP threads.
THREADED = {
    "layer_norm": [((5, 6613), {})],
    "rms_norm": [((5, 6613), {})],
    "add_layer_norm": [((5, 6613), {}), ((2, 16384), {})],
    "add_rms_norm": [((5, 6613), {"broadcast": True})],
    "batch_norm": [((3, 6, 43, 43), {}), ((3, 43, 43, 6), {"axis": -1})],
    "group_norm": [((3, 6, 43, 43), {"num_groups": 3}),
                   ((3, 43, 43, 6), {"num_groups": 3, "axis": -1})],
    "instance_norm": [((3, 6, 43, 43), {}), ((3, 43, 43, 6), {"axis": -1})],
    "batch_moments": [((3, 43, 43, 6), {"axis": -1})],
    "merge_moments": [((3, 6, 43, 43), {})],
    "l2_normalize": [((5, 6613), {"axis": 0})],
    "weight_norm": [((5, 6613), {})],
    "cosine_norm": [((150, 140, 231), {})],
    "iter_norm": [((3, 6, 43, 43), {"group_size": 4}), ((3, 43, 43, 6), {"axis": -1})],
}  # fmt: skip


def run_threaded(rng, dtype):
    fn.set_num_threads(2)
    try:
        for op in _ops.OPS:
            if op.name not in THREADED:
                _failures.append(f"{op.name}: no threaded case in THREADED")
                continue
            for shape, params in THREADED[op.name]:
                for variant in op.variants:
                    p = {**params, **variant}
                    a = op.make_inputs(rng, shape, dtype, p)
                    run_case(op, f"threaded {dtype.name} {shape} {p}", a, p, dtype)
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
                    for op in _ops.OPS:
                        run_op(op, rng, dtype, args.quick)
                    run_empty(rng, dtype)
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
