"""Time a batch-norm training step (forward with statistics, then backward) on one input,
with fresh outputs at every step or with ``out=`` on both passes:

    taskset -c 1 python bench/train_step.py fresh
    taskset -c 1 python bench/train_step.py out

Prints the median of the last 20 of 25 steps, one thread. The input is float32
32x56x56x64, channels last; the outputs of a step are freed before the next one, as in a
training loop (see the README, "Fresh outputs").
"""

import argparse
import statistics
import time

import numpy as np

import fastnorm as fn


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("mode", choices=["fresh", "out"])
    p.add_argument("--shape", default="32,56,56,64", help="N,H,W,C (default 32,56,56,64)")
    p.add_argument("--steps", type=int, default=25)
    args = p.parse_args()
    fn.set_num_threads(1)
    shape = tuple(int(n) for n in args.shape.split(","))
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape, dtype=np.float32)
    dy = rng.standard_normal(shape, dtype=np.float32)
    w, b = np.ones(shape[-1], np.float32), np.zeros(shape[-1], np.float32)
    y_out = dx_out = None
    if args.mode == "out":
        y_out, dx_out = np.empty_like(x), np.empty_like(x)
    times = []
    for _ in range(args.steps):
        t = time.perf_counter()
        y, mean, rstd = fn.batch_norm(x, w, b, axis=-1, return_stats=True, out=y_out)
        dx, dw, db = fn.batch_norm_backward(dy, x, mean, rstd, w, axis=-1, out=dx_out)
        del y, dx
        times.append(time.perf_counter() - t)
    kept = times[5:] if len(times) > 5 else times
    print(f"{args.mode}: {statistics.median(kept) * 1e3:.2f} ms a step")


if __name__ == "__main__":
    main()
