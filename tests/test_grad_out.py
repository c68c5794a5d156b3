"""``out=`` on the backward functions: it receives dx (dv for weight norm).

The gradient written into ``out`` must be the one returned without it, bit for bit, and
``out`` itself is returned. ``out`` may be dy (in place), x, a strided view or any other
writeable array of the right shape and dtype; bad ones raise before anything is written.
"""

import numpy as np
import pytest
from conftest import assert_close, assert_identical

import fastnorm as fn
from fastnorm import reference as ref


def _case(name, shape, dtype=np.float32, seed=0):
    """(backward, args, kwargs): a backward call whose first argument is the incoming
    gradient and whose second is the forward's input (or output, for l2_normalize)."""
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal(shape) * 2 + 1).astype(dtype)
    dy = rng.standard_normal(shape).astype(dtype)
    if name in ("layer_norm", "rms_norm"):
        w = rng.uniform(0.5, 1.5, shape[-1]).astype(dtype)
        if name == "layer_norm":
            _, mean, rstd = fn.layer_norm(x, w, w, return_stats=True)
            return fn.layer_norm_backward, (dy, x, mean, rstd, w), {}
        _, rstd = fn.rms_norm(x, w, return_stats=True)
        return fn.rms_norm_backward, (dy, x, rstd, w), {}
    if name in ("batch_norm", "batch_norm_nhwc", "group_norm", "group_norm_nhwc",
                "instance_norm"):
        axis = -1 if name.endswith("nhwc") else 1
        C = shape[axis]
        w = rng.uniform(0.5, 1.5, C).astype(dtype)
        if name.startswith("batch_norm"):
            _, mean, rstd = fn.batch_norm(x, w, w, axis=axis, return_stats=True)
            return fn.batch_norm_backward, (dy, x, mean, rstd, w), {"axis": axis}
        if name.startswith("group_norm"):
            _, mean, rstd = fn.group_norm(x, 2, w, w, axis=axis, return_stats=True)
            return fn.group_norm_backward, (dy, x, mean, rstd, 2, w), {"axis": axis}
        _, mean, rstd = fn.instance_norm(x, w, w, return_stats=True)
        return fn.instance_norm_backward, (dy, x, mean, rstd, w), {}
    if name == "l2_normalize":
        y, norm = fn.l2_normalize(x, return_stats=True)
        return fn.l2_normalize_backward, (dy, y, norm), {}
    assert name == "weight_norm"
    g = rng.uniform(0.5, 2.0, shape[0]).astype(dtype)
    _, norm = fn.weight_norm(x, g, return_stats=True)
    return fn.weight_norm_backward, (dy, x, g, norm), {}


def _call(backward, *args, **kw):
    """The gradients as a tuple (l2_normalize_backward returns dx alone)."""
    r = backward(*args, **kw)
    return r if isinstance(r, tuple) else (r,)


# Shapes that take each kernel path: short rows, rows of 256 KB (the column-chunk path of
# long rows), channels-first and channels-last, small and large weight-norm slices.
CASES = [
    ("layer_norm", (7, 33)),
    ("layer_norm", (3, 65536)),
    ("rms_norm", (40, 1024)),
    ("rms_norm", (2, 70000)),
    ("batch_norm", (4, 6, 9, 9)),
    ("batch_norm_nhwc", (4, 9, 9, 64)),
    ("group_norm", (3, 8, 10, 10)),
    ("group_norm_nhwc", (3, 10, 10, 8)),
    ("instance_norm", (2, 5, 7, 7)),
    ("l2_normalize", (30, 100)),
    ("weight_norm", (20, 3, 3)),
    ("weight_norm", (512, 1024)),
]
IDS = [f"{n}-{'x'.join(map(str, s))}" for n, s in CASES]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(("name", "shape"), CASES, ids=IDS)
def test_out_receives_the_gradient(name, shape, dtype):
    backward, args, kw = _case(name, shape, dtype)
    want = _call(backward, *args, **kw)
    out = np.full(shape, np.nan, dtype)
    got = _call(backward, *args, **kw, out=out)
    assert got[0] is out
    for g, w in zip(got, want, strict=True):
        assert_identical(g, w)


@pytest.mark.parametrize("which", [0, 1], ids=["dy", "x"])
@pytest.mark.parametrize(("name", "shape"), CASES, ids=IDS)
def test_out_is_an_input(name, shape, which):
    """out=dy computes dx in place of dy; out=x must not write dx over the x the kernel
    still reads. Either way, the bits of the call without out."""
    backward, args, kw = _case(name, shape, seed=1 + which)
    want = _call(backward, *args, **kw)
    args = list(args)
    args[which] = out = args[which].copy()
    got = _call(backward, *args, **kw, out=out)
    assert got[0] is out
    for g, w in zip(got, want, strict=True):
        assert_identical(g, w)


@pytest.mark.parametrize(("name", "shape"), CASES[::2], ids=IDS[::2])
def test_out_strided_view(name, shape):
    """A non-contiguous out gets the values; the elements between its own stay as they
    were."""
    backward, args, kw = _case(name, shape, seed=3)
    want = _call(backward, *args, **kw)
    fortran = np.full(shape, 7.0, np.float32, order="F")
    buf = np.full(shape[:-1] + (2 * shape[-1],), 7.0, np.float32)
    view = buf[..., ::2]
    for o in (fortran, view):
        got = _call(backward, *args, **kw, out=o)
        assert got[0] is o
        assert_identical(o, want[0])
    assert np.all(buf[..., 1::2] == 7.0)


@pytest.mark.parametrize(("name", "shape"), CASES, ids=IDS)
def test_out_matches_reference(name, shape):
    backward, args, kw = _case(name, shape, np.float64, seed=4)
    out = np.empty(shape)
    fn_res = _call(backward, *args, **kw, out=out)
    ref_out = np.empty(shape)
    ref_res = _call(getattr(ref, backward.__name__), *args, **kw, out=ref_out)
    assert ref_res[0] is ref_out
    assert_close(out, ref_out, np.float64)
    for g, r in zip(fn_res[1:], ref_res[1:], strict=True):
        assert_close(g, r, np.float64)


@pytest.mark.parametrize(("name", "shape"), CASES[::3], ids=IDS[::3])
def test_bad_out_raises_and_writes_nothing(name, shape):
    backward, args, kw = _case(name, shape, seed=5)
    dy_before = args[0].copy()
    bad = [
        (np.empty(shape[:-1] + (shape[-1] + 1,), np.float32), ValueError, "shape"),
        (np.empty(shape, np.float64), TypeError, "dtype"),
        (np.empty(shape, np.float32).tolist(), TypeError, "ndarray"),
    ]
    ro = np.zeros(shape, np.float32)
    ro.flags.writeable = False
    bad.append((ro, ValueError, "read-only"))
    for o, exc, match in bad:
        with pytest.raises(exc, match=match):
            _call(backward, *args, **kw, out=o)
    assert not ro.any()
    # another argument wrong: out stays as it was
    out = np.full(shape, 5.0, np.float32)
    with pytest.raises(ValueError):
        _call(backward, args[0][..., :-1], *args[1:], **kw, out=out)
    assert np.all(out == 5.0)
    assert_identical(args[0], dy_before)


@pytest.mark.parametrize("name", ["layer_norm", "batch_norm", "group_norm_nhwc",
                                  "l2_normalize", "weight_norm"])
def test_out_empty(name):
    shape = {"layer_norm": (0, 5), "batch_norm": (0, 3, 4), "group_norm_nhwc": (0, 4, 4),
             "l2_normalize": (0, 6), "weight_norm": (3, 0)}[name]
    if name == "weight_norm":
        rng = np.random.default_rng(0)
        v = np.empty(shape, np.float32)
        g = rng.uniform(size=3).astype(np.float32)
        args = (np.empty(shape, np.float32), v, g, np.zeros(3, np.float32))
        backward, kw = fn.weight_norm_backward, {}
    elif name == "l2_normalize":
        args = (np.empty(shape, np.float32),) * 2 + (np.empty((0,), np.float32),)
        backward, kw = fn.l2_normalize_backward, {}
    elif name == "layer_norm":
        e = np.empty((0,), np.float32)
        args = (np.empty(shape, np.float32),) * 2 + (e, e)
        backward, kw = fn.layer_norm_backward, {}
    elif name == "batch_norm":
        e = np.zeros(3, np.float32)
        args = (np.empty(shape, np.float32),) * 2 + (e, e)
        backward, kw = fn.batch_norm_backward, {}
    else:
        e = np.zeros((0, 2), np.float32)
        args = (np.empty(shape, np.float32),) * 2 + (e, e, 2)
        backward, kw = fn.group_norm_backward, {"axis": -1}
    out = np.empty(shape, np.float32)
    got = _call(backward, *args, **kw, out=out)
    assert got[0] is out
    for g, w in zip(got[1:], _call(backward, *args, **kw)[1:], strict=True):
        assert_identical(g, w)
