"""Streaming stores or ordinary ones: an op followed by a reader of its output.

A streamed output skips the read of every line written but leaves the caches, so the next
op reads it from memory. For each op and output size this times the pair
``op(out=o); np.maximum(o, 0, out=o2)`` with streaming forced on and off
(``fastnorm._kernels.set_stream_bytes``), alternating, and prints the medians: where
"normal" wins, the default threshold (``FN_STREAM_BYTES`` in ``csrc/internal.h``) should
not stream.

    python bench/stream_pair.py [--threads 1,2] [--mib 8,12,16,25] [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

import fastnorm
from fastnorm import _kernels


def _cases(mib):
    rng = np.random.default_rng(0)
    n = int(mib * (1 << 20) // 4)
    rows = max(1, n // 1024)
    x = rng.standard_normal((rows, 1024), dtype=np.float32)
    o, o2 = np.empty_like(x), np.empty_like(x)
    w = np.ones(1024, np.float32)
    _, mean, rstd = fastnorm.layer_norm(x, return_stats=True)
    nchw = x.reshape(-1, 64, 16, 1)  # (N, 64 channels, 16x1 maps)
    oc, oc2 = o.reshape(nchw.shape), o2.reshape(nchw.shape)

    def pair(f, out, out2):
        def run():
            f()
            np.maximum(out, 0, out=out2)
        return run

    return [
        ("batch_norm fwd", pair(lambda: fastnorm.batch_norm(nchw, out=oc), oc, oc2)),
        ("layer_norm fwd", pair(lambda: fastnorm.layer_norm(x, w, out=o), o, o2)),
        ("layer_norm bwd", pair(lambda: fastnorm.layer_norm_backward(x, x, mean, rstd, w,
                                                                      out=o), o, o2)),
    ]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", default="1,2")
    p.add_argument("--mib", default="8,12,16,25", help="output sizes in MiB")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--calls", type=int, default=15)
    args = p.parse_args(argv)
    old = _kernels.get_stream_bytes()
    print(f"default threshold (footprint): {old >> 20} MiB; medians in µs")
    print(f"{'op':16} {'MiB':>5} {'thr':>3} {'streamed':>10} {'normal':>10} "
          f"{'normal/streamed':>16}")
    try:
        for mib in (float(m) for m in args.mib.split(",")):
            for name, run in _cases(mib):
                for nt in (int(t) for t in args.threads.split(",")):
                    fastnorm.set_num_threads(nt)
                    res = {0: [], 1: []}
                    for _ in range(args.rounds):
                        for key, nbytes in ((0, 0), (1, 1 << 62)):
                            _kernels.set_stream_bytes(nbytes)
                            run()
                            ts = []
                            for _ in range(args.calls):
                                t = time.perf_counter()
                                run()
                                ts.append(time.perf_counter() - t)
                            res[key].append(statistics.median(ts))
                    s, n = statistics.median(res[0]), statistics.median(res[1])
                    print(f"{name:16} {mib:5g} {nt:3} {s * 1e6:10.0f} {n * 1e6:10.0f} "
                          f"{n / s:16.2f}", flush=True)
    finally:
        _kernels.set_stream_bytes(old)
        fastnorm.set_num_threads(0)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
