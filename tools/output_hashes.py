"""Hash the outputs of a fixed set of calls, at every SIMD level, to check that a change
leaves every result bit for bit as it was.

Every op of fastnorm._ops (each variant), forward and backward, on fixed-seed inputs of
every dtype, in both layouts where there are two, with sizes that take the short, tiled,
periodic and long-row paths, and with streaming stores forced off and on. One line per
(SIMD level, case): its hash.

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
import zlib

import numpy as np

HALF = ["float16"]
try:
    import ml_dtypes

    HALF.append("bfloat16")
except ImportError:
    ml_dtypes = None


# Shapes per op that take the short, tiled, periodic and long-row paths; channels shapes are
# the logical (N, C, H, W), run in both layouts.
ROWS = [(7, 33), (64, 1024), (300, 257), (8, 70000), (2048, 1024)]
CHANNELS = [(2, 4, 3, 3), (8, 64, 28, 28), (4, 3, 224, 224), (2, 2048, 7, 7), (32, 64, 56, 56)]
VECTORS = [(5, 3, 7, 7), (64, 3, 7, 7), (1024, 1024), (4096, 515)]
SHAPES = {
    "rows": [(s, {}) for s in ROWS],
    "channels": [(s, {"axis": 1}) for s in CHANNELS]
    + [((n, h, w, c), {"axis": -1}) for n, c, h, w in CHANNELS],
    "vectors": [(s, {}) for s in VECTORS],
}
SHAPES_BY_OP = {
    "l2_normalize": [(s, {"axis": a}) for s in VECTORS for a in (-1, 0)],
    "cosine_norm": [((33, 17, 70), {})],
}
LARGE = 4_000_000  # channels shapes above this many elements: float32 only


def cases():
    """(label, thunk) pairs; each thunk returns a tuple of arrays."""
    import fastnorm as fn
    from fastnorm import _ops

    dtypes = ["float32", "float64", *HALF]
    out = []
    for op in _ops.OPS:
        shapes = SHAPES_BY_OP.get(op.name, SHAPES[op.family])
        for dt in dtypes:
            dtype = np.dtype(getattr(ml_dtypes, dt) if dt == "bfloat16" else dt)
            for shape, params in shapes:
                if op.family == "channels" and dt != "float32" and np.prod(shape) > LARGE:
                    continue
                for variant in op.variants:
                    p = {**params, **variant}
                    seed = zlib.crc32(f"{op.name} {dt} {shape} {p}".encode())
                    a = op.make_inputs(np.random.default_rng(seed), shape, dtype, p)
                    label = f"{op.name} {dt} {shape} {p}"
                    out.append((label, lambda op=op, a=a, p=p: op.run(fn, a, p)))
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
