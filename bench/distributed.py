"""Synchronized batch norm: the cost of communication per call against the local kernels.

    mpirun -n 2 python bench/distributed.py [--reps N] [--threads T]
    mpirun -n 4 python bench/distributed.py

(as root OpenMPI also wants --allow-run-as-root, and --oversubscribe with more ranks than
cores). Every rank holds a share of the global batch (the per-rank shapes below) and is
pinned to --threads fastnorm threads (default 1). For each shape rank 0 prints, in
microseconds per call, a statistic (--stat: min, the default, or median) over --reps calls
of the slowest rank's time, every call started together after a barrier:

* bn fwd / bn bwd: fastnorm.batch_norm and batch_norm_backward on the rank's share alone
  (no communication: the local kernel time);
* sync fwd / sync bwd: sync_batch_norm and sync_batch_norm_backward over all ranks;
* gather / reduce: the collectives alone, comm.allgather of the (3, C) moments and
  comm.allreduce of the 2C + 1 sums, the messages the sync calls send;
* overhead: (sync fwd + sync bwd) / (bn fwd + bn bwd) - 1.

The minimum is the cost of a call when no rank is descheduled during it; on a shared or
oversubscribed machine (more ranks than free cores) the median also counts the scheduler's
stalls of a waiting rank, which are of the order of a time slice (milliseconds).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from mpi4py import MPI

import fastnorm as fn
from fastnorm.distributed import sync_batch_norm, sync_batch_norm_backward

# per-rank shapes (N, C, H, W) or (N, C): conv activations small and large, an MLP layer
SHAPES = [(8, 64, 28, 28), (16, 256, 14, 14), (32, 64, 56, 56), (256, 1024), (32, 128)]


def timed(comm, func, reps, stat):
    """`stat` (np.min or np.median) over reps of the slowest rank's time for one call, in
    microseconds."""
    func()  # warm-up
    times = []
    for _ in range(reps):
        comm.Barrier()
        t0 = time.perf_counter()
        func()
        times.append(time.perf_counter() - t0)
    worst = np.max(comm.allgather(np.array(times)), axis=0)
    return 1e6 * float(stat(worst))


def measure(comm, shape, rng, reps, stat):
    """The columns of one row: times of the local and synchronized calls and of the
    collectives alone, for a float32 share of `shape` on every rank."""
    x = rng.standard_normal(shape).astype(np.float32)
    dy = rng.standard_normal(shape).astype(np.float32)
    C = shape[1]
    w, b = np.ones(C, np.float32), np.zeros(C, np.float32)
    rm, rv = np.zeros(C, np.float32), np.ones(C, np.float32)
    _, mean, rstd = fn.batch_norm(x, w, b, rm, rv, return_stats=True)
    moments, sums = np.zeros((3, C)), np.zeros(2 * C + 1)
    calls = {
        "bn fwd": lambda: fn.batch_norm(x, w, b, rm, rv),
        "sync fwd": lambda: sync_batch_norm(x, w, b, rm, rv, comm=comm),
        "gather": lambda: comm.allgather(moments),
        "bn bwd": lambda: fn.batch_norm_backward(dy, x, mean, rstd, w),
        "sync bwd": lambda: sync_batch_norm_backward(dy, x, mean, rstd, w, comm=comm),
        "reduce": lambda: comm.allreduce(sums),
    }
    return {name: timed(comm, call, reps, stat) for name, call in calls.items()}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=30)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--stat", choices=("min", "median"), default="min")
    args = parser.parse_args()
    stat = np.min if args.stat == "min" else np.median
    comm = MPI.COMM_WORLD
    fn.set_num_threads(args.threads)
    rng = np.random.default_rng(comm.rank)
    if comm.rank == 0:
        lib = MPI.Get_library_version().split(",")[0].strip()
        print(
            f"{comm.size} ranks x {args.threads} thread(s), {lib}; float32, "
            f"{args.stat} microseconds per call"
        )
        print(
            f"{'per-rank shape':>18} {'bn fwd':>9} {'sync fwd':>9} {'gather':>8} "
            f"{'bn bwd':>9} {'sync bwd':>9} {'reduce':>8} {'overhead':>9}"
        )
    for shape in SHAPES:
        t = measure(comm, shape, rng, args.reps, stat)
        over = (t["sync fwd"] + t["sync bwd"]) / (t["bn fwd"] + t["bn bwd"]) - 1.0
        if comm.rank == 0:
            print(
                f"{'x'.join(map(str, shape)):>18} {t['bn fwd']:9.1f} {t['sync fwd']:9.1f} "
                f"{t['gather']:8.1f} {t['bn bwd']:9.1f} {t['sync bwd']:9.1f} "
                f"{t['reduce']:8.1f} {100 * over:8.0f}%"
            )


if __name__ == "__main__":
    main()
