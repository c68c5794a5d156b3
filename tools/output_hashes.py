"""Hash the outputs of a fixed set of calls, at every SIMD level, to check that a change
leaves every result bit for bit as it was.

Every op, forward and backward, on fixed-seed inputs of every dtype, in both layouts
where there are two, with sizes that take the short, tiled, periodic and long-row paths,
and with streaming stores forced off and on. One line per (SIMD level, case): its hash.

    python tools/output_hashes.py > before.txt      # on the build before the change
    python tools/output_hashes.py > after.txt       # on the build after it
    diff before.txt after.txt                       # nothing: the same bits

    python tools/output_hashes.py --level avx2      # one level only

The levels run in subprocesses (FASTNORM_SIMD is read at import).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys

import numpy as np

HALF = ["float16"]
try:
    import ml_dtypes  # noqa: F401

    HALF.append("bfloat16")
except ImportError:
    pass


def _rng(seed):
    return np.random.default_rng(seed)


def _arr(shape, dtype, seed, offset=0.0):
    a = _rng(seed).standard_normal(shape) + offset
    if dtype == "bfloat16":
        import ml_dtypes

        return a.astype(ml_dtypes.bfloat16)
    return a.astype(dtype)


def _param_dtype(dtype):
    return np.float32 if dtype in ("float16", "bfloat16") else dtype


def cases():
    """(label, thunk) pairs; each thunk returns a tuple of arrays."""
    import fastnorm as fn

    out = []
    dtypes = ["float32", "float64", *HALF]
    rows = [(7, 33), (64, 1024), (300, 257), (8, 70000), (2048, 1024)]
    for dt in dtypes:
        pt = _param_dtype(dt)
        for shape in rows:
            K = shape[-1]
            x = _arr(shape, dt, 1, offset=3.0)
            dy = _arr(shape, dt, 2)
            w = _arr((K,), pt, 3)
            b = _arr((K,), pt, 4)

            def ln(x=x, dy=dy, w=w, b=b):
                y, m, r = fn.layer_norm(x, w, b, return_stats=True)
                return (y, m, r, *fn.layer_norm_backward(dy, x, m, r, w))

            def rms(x=x, dy=dy, w=w):
                y, r = fn.rms_norm(x, w, return_stats=True)
                return (y, r, *fn.rms_norm_backward(dy, x, r, w))

            out.append((f"layer_norm {dt} {shape}", ln))
            out.append((f"rms_norm {dt} {shape}", rms))
    chans = [(2, 4, 3, 3), (8, 64, 28, 28), (4, 3, 224, 224), (2, 2048, 7, 7), (32, 64, 56, 56)]
    for dt in dtypes:
        pt = _param_dtype(dt)
        for shape in chans:
            if dt not in ("float32",) and np.prod(shape) > 4_000_000:
                continue
            N, C, H, W = shape
            for layout, axis in (("NCHW", 1), ("NHWC", -1)):
                sh = shape if axis == 1 else (N, H, W, C)
                x = _arr(sh, dt, 5, offset=1.0)
                dy = _arr(sh, dt, 6)
                w = _arr((C,), pt, 7)
                b = _arr((C,), pt, 8)

                def bn(x=x, dy=dy, w=w, b=b, axis=axis, pt=pt, C=C):
                    rm, rv = np.zeros(C, pt), np.ones(C, pt)
                    y, m, r = fn.batch_norm(x, w, b, rm, rv, axis=axis, return_stats=True)
                    g = fn.batch_norm_backward(dy, x, m, r, w, axis=axis)
                    ye = fn.batch_norm(x, w, b, rm, rv, training=False, axis=axis)
                    ge = fn.batch_norm_backward(dy, x, rm, 1 / np.sqrt(rv + 1e-5), w, axis=axis,
                                                training=False)
                    return (y, m, r, rm, rv, *g, ye, *ge)

                G = 32 if C % 32 == 0 else 1

                def gn(x=x, dy=dy, w=w, b=b, axis=axis, G=G):
                    y, m, r = fn.group_norm(x, G, w, b, axis=axis, return_stats=True)
                    return (y, m, r, *fn.group_norm_backward(dy, x, m, r, G, w, axis=axis))

                def inorm(x=x, dy=dy, w=w, b=b, axis=axis):
                    y, m, r = fn.instance_norm(x, w, b, axis=axis, return_stats=True)
                    return (y, m, r, *fn.instance_norm_backward(dy, x, m, r, w, axis=axis))

                out.append((f"batch_norm {dt} {layout} {shape}", bn))
                out.append((f"group_norm {dt} {layout} {shape} G{G}", gn))
                out.append((f"instance_norm {dt} {layout} {shape}", inorm))
    vecs = [(5, 3, 7, 7), (64, 3, 7, 7), (1024, 1024), (4096, 515)]
    for dt in dtypes:
        pt = _param_dtype(dt)
        for shape in vecs:
            v = _arr(shape, dt, 9)
            dw = _arr(shape, dt, 10)
            g = _arr((shape[0],), pt, 11)

            def wn(v=v, dw=dw, g=g):
                w, n = fn.weight_norm(v, g, return_stats=True)
                return (w, n, *fn.weight_norm_backward(dw, v, g, n))

            def l2(v=v, dw=dw):
                res = []
                for axis in (-1, 0):
                    y, n = fn.l2_normalize(v, axis=axis, return_stats=True)
                    res += [y, n, fn.l2_normalize_backward(dw, y, n, axis=axis)]
                return tuple(res)

            out.append((f"weight_norm {dt} {shape}", wn))
            out.append((f"l2_normalize {dt} {shape}", l2))
    for dt in ("float32", "float64"):
        x, w2 = _arr((33, 70), dt, 12), _arr((17, 70), dt, 13)
        dy = _arr((33, 17), dt, 14)

        def cos(x=x, w2=w2, dy=dy):
            y, xn, wn_ = fn.cosine_norm(x, w2, return_stats=True)
            return (y, xn, wn_, *fn.cosine_norm_backward(dy, x, w2, xn, wn_))

        out.append((f"cosine_norm {dt}", cos))
    return out


def _digest(arrays):
    h = hashlib.sha256()
    for a in arrays:
        if a is None:
            h.update(b"None")
            continue
        a = np.ascontiguousarray(a)
        h.update(str(a.dtype).encode() + str(a.shape).encode())
        h.update(a.view(np.uint8).tobytes())
    return h.hexdigest()[:16]


def run_level(level):
    import fastnorm as fn
    from fastnorm import _kernels

    assert _kernels.isa_active() == level, (_kernels.isa_active(), level)
    for label, thunk in cases():
        for stream, nbytes in (("plain", 1 << 62), ("stream", 0)):
            _kernels.set_stream_bytes(nbytes)
            print(f"{level} {stream} {label}: {_digest(thunk())}", flush=True)
    _kernels.set_stream_bytes(-1)
    del fn


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--level", help="one SIMD level (default: every level the CPU has)")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        run_level(args.level)
        return 0
    if args.level:
        levels = [args.level]
    else:
        from fastnorm import _kernels

        best = _kernels.ISA_LEVELS.index(_kernels.isa_supported())
        levels = list(_kernels.ISA_LEVELS[: best + 1])
    for level in levels:
        env = dict(os.environ, FASTNORM_SIMD=level)
        res = subprocess.run([sys.executable, __file__, "--child", "--level", level], env=env)
        if res.returncode:
            return res.returncode
    return 0


if __name__ == "__main__":
    sys.exit(main())
