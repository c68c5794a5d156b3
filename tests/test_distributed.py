"""fastnorm.distributed: synchronized batch norm over a communicator.

Two kinds of tests. In-process ones run the ranks as Python threads sharing a small fake
communicator (the duck-typed protocol: allgather and allreduce), so that the merge logic,
uneven and empty parts, errors and gradients are tested without MPI. The MPI ones launch
``mpirun -n 2`` and ``-n 3`` on this machine (loopback only) with tests/mpi_worker.py,
each rank checking its part against single-process batch_norm on the whole batch; they
are skipped only where mpirun or mpi4py is missing.
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from conftest import FLOAT_DTYPES, assert_close, assert_identical, subprocess_env
from gradcheck import numerical_grad

import fastnorm as fn
from fastnorm import reference as ref
from fastnorm.distributed import sync_batch_norm, sync_batch_norm_backward

HERE = Path(__file__).resolve().parent


# --------------------------------------------------------------------------- a fake communicator


class ThreadGroup:
    """`size` ranks as threads of this process, exchanging objects through shared slots."""

    def __init__(self, size):
        self.size = size
        self.slots = [None] * size
        self.barrier = threading.Barrier(size, timeout=20)
        self.calls = []  # (rank, method) of every collective, for counting

    def run(self, func):
        """Call func(rank, comm) on every rank at once; the list of results by rank.
        An exception on any rank is re-raised (the others are released first)."""
        results, errors = [None] * self.size, [None] * self.size

        def target(rank):
            try:
                results[rank] = func(rank, ThreadComm(self, rank))
            except BaseException as exc:  # noqa: BLE001 - re-raised below
                errors[rank] = exc
                self.barrier.abort()

        threads = [threading.Thread(target=target, args=(r,)) for r in range(self.size)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        first = next((e for e in errors if e is not None), None)
        if first is not None:
            raise first
        return results


def received(obj):
    """A read-only copy of an array, as an engine may hand over a message buffer."""
    a = np.array(obj)
    a.flags.writeable = False
    return a


class ThreadComm:
    """One rank's view: mpi4py's lower-case allgather / allreduce semantics."""

    def __init__(self, group, rank):
        self.group, self.rank = group, rank

    def _exchange(self, obj):
        g = self.group
        g.slots[self.rank] = obj
        g.barrier.wait()
        out = [received(o) for o in g.slots]
        g.barrier.wait()
        return out

    def allgather(self, obj):
        self.group.calls.append((self.rank, "allgather"))
        return self._exchange(obj)

    def allreduce(self, obj):
        self.group.calls.append((self.rank, "allreduce"))
        parts = self._exchange(obj)
        total = np.array(parts[0], dtype=np.float64)
        for p in parts[1:]:
            total = total + p
        return total


def split(a, sizes):
    """a cut along axis 0 into parts of the given sizes."""
    bounds = np.cumsum([0, *sizes])
    return [a[bounds[i] : bounds[i + 1]] for i in range(len(sizes))]


def make_batch(rng, n, sample, axis, dtype, offset=3.0):
    shape = (n, *sample)
    C = shape[axis]
    x = (offset + 2.0 * rng.standard_normal(shape)).astype(dtype)
    dy = rng.standard_normal(shape).astype(dtype)
    w = (1.0 + 0.5 * rng.standard_normal(C)).astype(dtype)
    b = rng.standard_normal(C).astype(dtype)
    return x, dy, w, b


def sync_run(sizes, x, dy, w, b, axis, rm0=None, rv0=None, momentum=0.1):
    """Forward and backward on every rank; per rank (y, mean, rstd, rm, rv, dx, dw, db)."""
    xs, dys = split(x, sizes), split(dy, sizes)
    group = ThreadGroup(len(sizes))

    def rank_fn(rank, comm):
        rm = None if rm0 is None else rm0.copy()
        rv = None if rv0 is None else rv0.copy()
        y, mean, rstd = sync_batch_norm(
            xs[rank], w, b, rm, rv, axis=axis, comm=comm, momentum=momentum, return_stats=True
        )
        dx, dw, db = sync_batch_norm_backward(
            dys[rank], xs[rank], mean, rstd, w, axis=axis, comm=comm
        )
        return y, mean, rstd, rm, rv, dx, dw, db

    return group.run(rank_fn), group


LAYOUTS = [((4, 3, 5), 1), ((3, 5, 4), -1), ((7,), 1), ((2, 3, 6), 2)]
SIZES = [(5, 3), (0, 4), (4, 0, 3), (1, 1, 1), (0, 2, 0), (2, 7, 1, 0)]


# --------------------------------------------------------------------------- in-process ranks


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize(("sample", "axis"), LAYOUTS)
@pytest.mark.parametrize("sizes", SIZES)
def test_matches_batch_norm_on_the_whole_batch(rng, dtype, sample, axis, sizes):
    x, dy, w, b = make_batch(rng, sum(sizes), sample, axis, dtype)
    C = x.shape[axis]
    rm0, rv0 = rng.standard_normal(C), 1.0 + rng.random(C)
    ranks, group = sync_run(sizes, x, dy, w, b, axis, rm0, rv0)
    rm1, rv1 = rm0.copy(), rv0.copy()
    Y, M, R = fn.batch_norm(x, w, b, rm1, rv1, axis=axis, return_stats=True)
    DX, DW, DB = fn.batch_norm_backward(dy, x, M, R, w, axis=axis)
    rmr, rvr = rm0.copy(), rv0.copy()
    Yr = ref.batch_norm(x, w, b, rmr, rvr, axis=axis)
    DXr, DWr, DBr = ref.batch_norm_backward(dy, x, M, R, w, axis=axis)
    y = np.concatenate([r[0] for r in ranks])
    dx = np.concatenate([r[5] for r in ranks])
    assert_close(y, Y, dtype)
    assert_close(y, Yr, dtype)
    assert_close(dx, DX, dtype)
    assert_close(dx, DXr, dtype)
    for r in ranks:
        assert_close(r[1], M, dtype)
        assert_close(r[2], R, dtype)
        assert_close(r[3], rm1, np.float64)
        assert_close(r[4], rv1, np.float64)
        assert_close(r[4], rvr, np.float64)
    # identical on every rank
    for k in (1, 2, 3, 4):
        for r in ranks[1:]:
            assert_identical(r[k], ranks[0][k])
    # parameter gradients: each rank's contribution; their sum is the whole batch's
    assert_close(sum(r[6].astype(np.float64) for r in ranks).astype(dtype), DW, dtype)
    assert_close(sum(r[7].astype(np.float64) for r in ranks).astype(dtype), DBr, dtype)
    for r, part in zip(ranks, split(x, sizes), strict=True):
        assert r[0].shape == part.shape and r[5].shape == part.shape
    # one allgather in the forward, one allreduce in the backward, on every rank
    assert sorted(group.calls) == sorted(
        [(k, "allgather") for k in range(len(sizes))]
        + [(k, "allreduce") for k in range(len(sizes))]
    )


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize(("sample", "axis"), LAYOUTS)
def test_one_rank_is_batch_norm_bit_for_bit(rng, dtype, sample, axis):
    x, dy, w, b = make_batch(rng, 6, sample, axis, dtype)
    C = x.shape[axis]
    for rdt in (np.float32, np.float64):
        rm0, rv0 = rng.standard_normal(C).astype(rdt), (1.0 + rng.random(C)).astype(rdt)
        (got,), _ = sync_run([6], x, dy, w, b, axis, rm0, rv0, momentum=0.3)
        rm1, rv1 = rm0.copy(), rv0.copy()
        Y, M, R = fn.batch_norm(x, w, b, rm1, rv1, axis=axis, momentum=0.3, return_stats=True)
        grads = fn.batch_norm_backward(dy, x, M, R, w, axis=axis)
        for a, e in zip((*got[:3], *got[5:]), (Y, M, R, *grads), strict=True):
            assert_identical(a, e)
        # the same formula, in NumPy here and in C there (which may contract it to FMAs)
        assert_close(got[3], rm1, rdt)
        assert_close(got[4], rv1, rdt)


def test_thread_count_does_not_change_bits(rng, threads):
    """The kernels of the synchronized calls (moments, backward sums, dx) are bitwise
    identical for any thread count."""
    for shape, axis in [((64, 48, 30, 30), 1), ((64, 20, 20, 40), -1)]:
        x, dy, w, b = make_batch(rng, shape[0], shape[1:], axis, np.float32)
        runs = []
        for n in (1, 2, 3):
            with threads(n):
                runs.append(
                    sync_run([shape[0] // 3, shape[0] - shape[0] // 3], x, dy, w, b, axis)[0]
                )
        for other in runs[1:]:
            for got, want in zip(other, runs[0], strict=True):
                for a, e in zip(got, want, strict=True):
                    assert_identical(a, e)


def test_rank_order_changes_only_rounding(rng):
    x, dy, w, b = make_batch(rng, 12, (5, 2), 1, np.float64, offset=1e4)
    parts = split(x, (3, 5, 4))
    a, _ = sync_run((3, 5, 4), x, dy, w, b, 1)
    xr = np.concatenate(parts[::-1])
    dyr = np.concatenate(split(dy, (3, 5, 4))[::-1])
    c, _ = sync_run((4, 5, 3), xr, dyr, w, b, 1)
    assert_close(c[0][1], a[0][1], np.float64)
    assert_close(c[0][2], a[0][2], np.float64)


def test_gradient_against_finite_differences(rng):
    sizes = (3, 0, 2)
    x, dy, w, b = make_batch(rng, sum(sizes), (3, 2), 1, np.float64)

    def forward(x_):
        group = ThreadGroup(len(sizes))
        parts = split(x_, sizes)
        ys = group.run(lambda rank, comm: sync_batch_norm(parts[rank], w, b, comm=comm))
        return np.concatenate(ys)

    ranks, _ = sync_run(sizes, x, dy, w, b, 1)
    dx = np.concatenate([r[5] for r in ranks])
    np.testing.assert_allclose(dx, numerical_grad(forward, x, dy), rtol=1e-6, atol=1e-7)
    dw = sum(r[6] for r in ranks)
    dw_num = numerical_grad(lambda w_: ref.batch_norm(x, w_, b), w, dy)
    np.testing.assert_allclose(dw, dw_num, rtol=1e-6, atol=1e-7)


def test_every_rank_empty(rng):
    C = 3
    rm0, rv0 = np.zeros(C), np.ones(C)
    group = ThreadGroup(2)

    def rank_fn(rank, comm):
        x = np.empty((0, C, 2), np.float32)
        rm, rv = rm0.copy(), rv0.copy()
        y, mean, rstd = sync_batch_norm(x, None, None, rm, rv, comm=comm, return_stats=True)
        dx, dw, db = sync_batch_norm_backward(x, x, mean, rstd, np.ones(C), comm=comm)
        return y, mean, rstd, rm, rv, dx, dw, db

    for y, mean, rstd, rm, rv, dx, dw, db in group.run(rank_fn):
        assert y.shape == (0, C, 2) and y.dtype == np.float32 and dx.shape == (0, C, 2)
        assert np.isnan(mean).all() and np.isnan(rstd).all() and mean.dtype == np.float32
        assert_identical(rm, rm0)
        assert_identical(rv, rv0)
        assert_identical(dw, np.zeros(C, np.float32))
        assert_identical(db, np.zeros(C, np.float32))


def test_one_value_in_the_global_batch_raises_on_every_rank():
    group = ThreadGroup(3)
    rm = np.zeros(2)
    errors = []

    def rank_fn(rank, comm):
        x = np.ones((1 if rank == 1 else 0, 2))
        try:
            sync_batch_norm(x, running_mean=rm, comm=comm)
        except ValueError as exc:
            errors.append(str(exc))

    group.run(rank_fn)
    assert len(errors) == 3 and all("more than 1 value" in e for e in errors)
    assert_identical(rm, np.zeros(2))


def test_channel_count_mismatch_raises_on_every_rank():
    group = ThreadGroup(2)
    errors = []

    def rank_fn(rank, comm):
        try:
            sync_batch_norm(np.ones((4, 2 + rank)), comm=comm)
        except ValueError as exc:
            errors.append(str(exc))

    group.run(rank_fn)
    assert len(errors) == 2 and all("number of channels" in e for e in errors)


def test_bad_comm_and_arguments_raise_before_communicating(rng):
    x = rng.standard_normal((4, 3))

    class GatherOnly:
        def allgather(self, obj):
            raise AssertionError("communicated")

    with pytest.raises(TypeError, match="has no allgather or allreduce"):
        sync_batch_norm(x, comm=object())
    with pytest.raises(TypeError, match="has no allreduce"):
        sync_batch_norm_backward(x, x, np.zeros(3), np.ones(3), comm=GatherOnly())
    with pytest.raises(TypeError):
        sync_batch_norm(x)  # comm is required

    class Silent:  # any call to it would fail the test
        def allgather(self, obj):
            raise AssertionError("communicated")

        allreduce = allgather

    rm = np.zeros(3)
    bad = [
        (ValueError, dict(eps=-1.0)),
        (ValueError, dict(momentum=2.0)),
        (ValueError, dict(weight=np.ones(4))),
        (ValueError, dict(running_var=np.ones(3)[::2])),
        (np.exceptions.AxisError, dict(axis=2)),
    ]
    for exc, kw in bad:
        with pytest.raises(exc):
            sync_batch_norm(x, running_mean=rm, comm=Silent(), **kw)
        assert_identical(rm, np.zeros(3))
    with pytest.raises(TypeError):
        sync_batch_norm(x.astype(np.int32), comm=Silent())
    with pytest.raises(ValueError):
        sync_batch_norm(x[0], comm=Silent())
    with pytest.raises(ValueError):
        sync_batch_norm_backward(x[:2], x, np.zeros(3), np.ones(3), comm=Silent())
    for out, exc in ((np.empty((4, 4)), ValueError), (np.empty((4, 3), np.float32), TypeError)):
        with pytest.raises(exc, match="out must have"):
            sync_batch_norm_backward(x, x, np.zeros(3), np.ones(3), comm=Silent(), out=out)
        with pytest.raises(exc, match="out must have"):
            sync_batch_norm(x, running_mean=rm, comm=Silent(), out=out)
        assert_identical(rm, np.zeros(3))


@pytest.mark.parametrize(("sample", "axis"), LAYOUTS[:2])
def test_backward_out(rng, sample, axis):
    """out= receives dx (y in the forward) with the bits of the call without it; out=dy
    works in place."""
    sizes = (3, 4)
    x, dy, w, b = make_batch(rng, sum(sizes), sample, axis, np.float32)
    xs, dys = split(x, sizes), split(dy, sizes)
    group = ThreadGroup(len(sizes))

    def rank_fn(rank, comm):
        y, mean, rstd = sync_batch_norm(xs[rank], w, b, axis=axis, comm=comm,
                                        return_stats=True)
        want = sync_batch_norm_backward(dys[rank], xs[rank], mean, rstd, w, axis=axis,
                                        comm=comm)
        out = np.full(xs[rank].shape, np.nan, np.float32)
        got = sync_batch_norm_backward(dys[rank], xs[rank], mean, rstd, w, axis=axis,
                                       comm=comm, out=out)
        d = dys[rank].copy()
        inplace = sync_batch_norm_backward(d, xs[rank], mean, rstd, w, axis=axis,
                                           comm=comm, out=d)
        yo = np.full(xs[rank].shape, np.nan, np.float32)
        fwd = sync_batch_norm(xs[rank], w, b, axis=axis, comm=comm, out=yo, return_stats=True)
        return want, got, out, inplace, d, (y, mean, rstd), fwd, yo

    for want, got, out, inplace, d, fwd_want, fwd, yo in group.run(rank_fn):
        assert got[0] is out and inplace[0] is d and fwd[0] is yo
        for res in (got, inplace):
            for a, b_ in zip(res, want, strict=True):
                assert_identical(a, b_)
        for a, b_ in zip(fwd, fwd_want, strict=True):
            assert_identical(a, b_)


def test_eval_mode_is_local(rng):
    x = rng.standard_normal((5, 3, 2))
    rm, rv = rng.standard_normal(3), 1.0 + rng.random(3)

    class Silent:
        def allgather(self, obj):
            raise AssertionError("communicated")

        allreduce = allgather

    y = sync_batch_norm(x, None, None, rm, rv, training=False, comm=Silent())
    assert_identical(y, fn.batch_norm(x, None, None, rm, rv, training=False))


def test_mpi4py_is_not_imported_by_fastnorm():
    code = "import sys, fastnorm.distributed; print('mpi4py' in sys.modules)"
    env = subprocess_env()
    res = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    )
    assert res.stdout.strip() == "False"


# --------------------------------------------------------------------------- real MPI processes

MPIRUN = shutil.which("mpirun")
HAVE_MPI4PY = importlib.util.find_spec("mpi4py") is not None
needs_mpi = pytest.mark.skipif(
    MPIRUN is None or not HAVE_MPI4PY, reason="needs mpirun (OpenMPI) and mpi4py"
)


def mpirun(nranks, args, timeout=60):
    env = subprocess_env(
        OMP_NUM_THREADS="1",
        # the CI machine runs as root; harmless otherwise
        OMPI_ALLOW_RUN_AS_ROOT="1",
        OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
        OMPI_MCA_rmaps_base_oversubscribe="1",
    )
    cmd = [
        MPIRUN, "-n", str(nranks), "--oversubscribe", "--bind-to", "none",
        "--mca", "btl", "self,tcp", "--mca", "btl_tcp_if_include", "lo",
        "--mca", "oob_tcp_if_include", "lo",
        sys.executable, *args,
    ]  # fmt: skip
    return subprocess.run(
        cmd, capture_output=True, text=True, env=env, timeout=timeout, check=False
    )


@needs_mpi
@pytest.mark.parametrize(
    ("nranks", "sizes"),
    [(2, ["5,3", "0,4", "1,1"]), (3, ["4,0,3", "1,1,1", "0,2,0"])],
)
def test_mpirun(nranks, sizes):
    res = mpirun(nranks, [str(HERE / "mpi_worker.py"), *sizes])
    out = res.stdout + res.stderr
    assert res.returncode == 0, out
    oks = [line.split() for line in res.stdout.splitlines() if line.startswith("ok ")]
    assert oks == [["ok", *[str(16 * len(sizes))] * nranks]], out


@needs_mpi
def test_example_trains_like_one_process():
    example = HERE.parent / "examples" / "train_sync_bn.py"
    res = mpirun(2, [str(example)])
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stdout.strip().splitlines()[-1] == "match", res.stdout


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
@pytest.mark.parametrize(("sample", "axis"), LAYOUTS[:2])
def test_half_precision_matches_batch_norm(rng, dtype, sample, axis):
    """float16/bfloat16 ranks: y and dx in the half type, statistics and parameter
    gradients float32, as single-process batch_norm on the whole batch."""
    if dtype == "bfloat16":
        dtype = pytest.importorskip("ml_dtypes").bfloat16
    dtype = np.dtype(dtype)
    x, dy, w, b = make_batch(rng, 9, sample, axis, np.float32)
    x, dy = x.astype(dtype), dy.astype(dtype)
    ranks, _ = sync_run((4, 0, 5), x, dy, w, b, axis)
    Y, M, R = fn.batch_norm(x, w, b, axis=axis, return_stats=True)
    DX, DW, DB = fn.batch_norm_backward(dy, x, M, R, w, axis=axis)
    y = np.concatenate([r[0] for r in ranks])
    dx = np.concatenate([r[5] for r in ranks])
    assert y.dtype == dtype and dx.dtype == dtype
    unit = 2.0**-10 if dtype == np.float16 else 2.0**-7  # two units of the half type
    for got, want in ((y, Y), (dx, DX)):
        want = want.astype(np.float64)
        np.testing.assert_allclose(got.astype(np.float64), want, rtol=unit,
                                   atol=unit * np.abs(want).max())
    for r in ranks:
        assert r[1].dtype == np.float32 and r[2].dtype == np.float32
        assert_close(r[1], M, np.float32)
        assert_close(r[2], R, np.float32)
    assert_close(sum(r[6].astype(np.float64) for r in ranks).astype(np.float32), DW, np.float32)
    assert_close(sum(r[7].astype(np.float64) for r in ranks).astype(np.float32), DB, np.float32)
