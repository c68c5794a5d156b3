"""Run by tests/test_distributed.py under ``mpirun -n R``: each rank takes its part of a
global batch (recreated from a seed on every rank) and checks sync_batch_norm and its
backward against fastnorm.batch_norm / batch_norm_backward on the whole batch and against
the float64 reference.

Usage: python mpi_worker.py SIZES [SIZES ...], each SIZES a comma-separated list of the
ranks' batch sizes (one list per case family). On success rank 0 prints "ok" and the
number of cases each rank checked; on a failure the rank prints the error and aborts all.
"""

import sys
import traceback

import numpy as np
from mpi4py import MPI

import fastnorm as fn
from fastnorm import reference as ref
from fastnorm.distributed import sync_batch_norm, sync_batch_norm_backward

TOL = {np.dtype(np.float32): 1e-5, np.dtype(np.float64): 1e-12}
# (shape of one sample, channel axis of x): channels-first, channels-last, 2-d, middle
LAYOUTS = (((4, 3, 5), 1), ((3, 5, 4), -1), ((7,), 1), ((2, 3, 6), 2))


def close(actual, expected, dtype, what):
    expected = np.asarray(expected, np.float64)
    assert actual.dtype == dtype, f"{what}: dtype {actual.dtype}"
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    tol = TOL[np.dtype(dtype)]
    scale = max(1.0, float(np.abs(expected).max())) if expected.size else 1.0
    np.testing.assert_allclose(
        actual.astype(np.float64), expected, rtol=tol, atol=tol * scale, err_msg=what
    )


def same_on_every_rank(comm, a, what):
    parts = comm.allgather(np.ascontiguousarray(a).tobytes())
    assert all(p == parts[0] for p in parts), f"{what} differs between ranks"


def run_case(comm, sizes, sample, axis, dtype, with_affine, seed):
    rank = comm.rank
    rng = np.random.default_rng(seed)
    shape = (sum(sizes), *sample)
    ax = axis
    C = shape[axis]
    xg = (3.0 + 2.0 * rng.standard_normal(shape)).astype(dtype)
    dyg = rng.standard_normal(shape).astype(dtype)
    w = (1.0 + 0.5 * rng.standard_normal(C)).astype(dtype) if with_affine else None
    b = rng.standard_normal(C).astype(dtype) if with_affine else None
    rm0, rv0 = rng.standard_normal(C), 1.0 + rng.random(C)
    lo = sum(sizes[:rank])
    xl, dyl = xg[lo : lo + sizes[rank]], dyg[lo : lo + sizes[rank]]

    rm, rv = rm0.copy(), rv0.copy()
    y, mean, rstd = sync_batch_norm(xl, w, b, rm, rv, axis=ax, comm=comm, return_stats=True)
    rm1, rv1 = rm0.copy(), rv0.copy()
    Y, M, R = fn.batch_norm(xg, w, b, rm1, rv1, axis=ax, return_stats=True)
    rmr, rvr = rm0.copy(), rv0.copy()
    Yr, Mr, Rr = ref.batch_norm(xg, w, b, rmr, rvr, axis=ax, return_stats=True)
    part = slice(lo, lo + sizes[rank])
    tag = f"sizes={sizes} shape={shape} axis={ax} {np.dtype(dtype)} affine={with_affine}"
    close(y, Y[part], dtype, f"y vs batch_norm, {tag}")
    close(y, Yr[part], dtype, f"y vs reference, {tag}")
    close(mean, M, dtype, f"mean, {tag}")
    close(rstd, R, dtype, f"rstd, {tag}")
    close(rm, rm1, np.float64, f"running_mean, {tag}")
    close(rv, rv1, np.float64, f"running_var, {tag}")
    close(rv, rvr, np.float64, f"running_var vs reference, {tag}")
    for a, what in ((mean, "mean"), (rstd, "rstd"), (rm, "running_mean"), (rv, "running_var")):
        same_on_every_rank(comm, a, what)

    dx, dw, db = sync_batch_norm_backward(dyl, xl, mean, rstd, w, axis=ax, comm=comm)
    DX, DW, DB = fn.batch_norm_backward(dyg, xg, M, R, w, axis=ax)
    # the reference from the statistics the kernels use (rounded to x's dtype)
    DXr, DWr, DBr = ref.batch_norm_backward(dyg, xg, M, R, w, axis=ax)
    close(dx, DX[part], dtype, f"dx vs batch_norm_backward, {tag}")
    close(dx, DXr[part], dtype, f"dx vs reference, {tag}")
    db_sum = comm.allreduce(db.astype(np.float64))
    close(db_sum.astype(dtype), DB, dtype, f"dbias summed over ranks, {tag}")
    close(db_sum.astype(dtype), DBr, dtype, f"dbias vs reference, {tag}")
    if with_affine:
        dw_sum = comm.allreduce(dw.astype(np.float64))
        close(dw_sum.astype(dtype), DW, dtype, f"dweight summed over ranks, {tag}")
        close(dw_sum.astype(dtype), DWr, dtype, f"dweight vs reference, {tag}")
    else:
        assert dw is None


def main(argv):
    comm = MPI.COMM_WORLD
    cases = 0
    try:
        for k, spec in enumerate(argv):
            sizes = [int(s) for s in spec.split(",")]
            assert len(sizes) == comm.size, f"{spec}: one size per rank expected"
            for sample, axis in LAYOUTS:
                for dtype in (np.float32, np.float64):
                    for with_affine in (True, False):
                        run_case(
                            comm,
                            sizes,
                            sample,
                            axis,
                            np.dtype(dtype),
                            with_affine,
                            seed=1000 * k + cases,
                        )
                        cases += 1
    except BaseException:
        sys.stdout.write(f"rank {comm.rank} failed:\n{traceback.format_exc()}")
        sys.stdout.flush()
        comm.Abort(1)
    counts = comm.gather(cases)
    if comm.rank == 0:
        print("ok", *counts, flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
