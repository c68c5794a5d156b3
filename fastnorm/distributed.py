"""Synchronized batch norm across processes (data-parallel training).

Each process ("rank") holds part of the global batch. :func:`sync_batch_norm` normalizes
every part with the statistics of the whole global batch, and
:func:`sync_batch_norm_backward` returns the matching gradients, so that the ranks
together compute exactly what :func:`fastnorm.batch_norm` and
:func:`fastnorm.batch_norm_backward` compute on the concatenated batch (to float64
rounding).

The communicator
----------------
``comm`` is any object with two collective methods, with the semantics of mpi4py's
lower-case (pickle-based) methods; an ``mpi4py.MPI.Comm`` such as ``MPI.COMM_WORLD`` is
one:

``comm.allgather(obj) -> list``
    Every rank passes one object (here a float64 NumPy array) and gets the list of all
    ranks' objects, in rank order, the same list on every rank.
``comm.allreduce(obj) -> obj``
    Every rank passes a float64 NumPy array of one shape and gets their elementwise sum.

No other method is called, and no keyword argument is passed, so an adapter for another
engine (``torch.distributed`` with the gloo backend, a thread group in tests) needs only
these two. This module imports nothing from mpi4py itself.

Every call in training mode is collective: every rank of ``comm`` must make it, in the
same order, including ranks that hold no samples. The forward pass does one
``allgather`` (the per-rank moments, 3 x C float64 values), the backward one
``allreduce`` (2 x C + 1 float64 values). Arguments are checked on each rank before any
communication; an error then is raised on that rank alone (the others wait in the
collective, as with any MPI program), while errors that depend on the global batch (one
value per channel in total, mismatched channel counts) are raised on every rank.
"""

import numpy as np

from . import _kernels
from ._channels import _bn_args, _bn_grad_args, batch_norm
from ._moments import _merge
from ._validate import check_out, contiguous, finish_out, make_out, new_output, stat_dtype

__all__ = ["sync_batch_norm", "sync_batch_norm_backward"]


def _check_comm(comm):
    missing = [m for m in ("allgather", "allreduce") if not callable(getattr(comm, m, None))]
    if missing:
        raise TypeError(
            f"comm must have allgather() and allreduce() methods (an mpi4py "
            f"communicator, or an object with the same lower-case collectives); "
            f"{type(comm).__name__} has no {' or '.join(missing)}"
        )
    return comm


def _local_moments(x, A, C, B):
    """This rank's moments as one (3, C) float64 array: count, mean, m2."""
    packed = np.zeros((3, C), np.float64)
    n = A * B
    packed[0] = n
    if n and C:
        mean, m2 = np.empty(C), np.empty(C)
        _kernels.batch_moments(contiguous(x), mean, m2, A, C, B)
        packed[1], packed[2] = mean, m2
    return packed


def _global_moments(gathered, C):
    try:
        parts = [np.asarray(p, dtype=np.float64) for p in gathered]
    except (TypeError, ValueError):
        raise ValueError(
            "sync_batch_norm: comm.allgather returned objects that are not float64 arrays"
        ) from None
    shapes = sorted({p.shape for p in parts})
    if not parts or shapes != [(3, C)]:
        raise ValueError(
            f"sync_batch_norm: the ranks disagree on the number of channels "
            f"(moments of shapes {shapes} gathered, this rank has C={C})"
        )
    return _merge([tuple(p) for p in parts])


def sync_batch_norm(
    x,
    weight=None,
    bias=None,
    running_mean=None,
    running_var=None,
    *,
    training=True,
    momentum=0.1,
    eps=1e-5,
    axis=1,
    comm,
    out=None,
    return_stats=False,
):
    r"""Batch normalization with the statistics of the global batch spread over the ranks
    of ``comm``.

    Each rank passes its part ``x`` of the global batch (split along any axis other than
    the channel axis, normally the batch axis 0; parts may differ in size, and may be
    empty). The per-channel (count, mean, M2) of each part (:func:`fastnorm.batch_moments`,
    the C kernel) are gathered in one collective and merged in rank order with Chan's
    formula (:func:`fastnorm.merge_moments`) identically on every rank; each rank then
    normalizes its part with the global mean and biased variance (the C normalize pass of
    :func:`fastnorm.batch_norm`), and updates the running statistics in place with the
    global mean and unbiased variance, identically on every rank:

    .. math::

        y = \frac{x - \mu_c}{\sqrt{M2_c / n_c + \epsilon}}\,\gamma_c + \beta_c, \quad
        \text{running\_var} \leftarrow (1 - m)\,\text{running\_var} + m\,\frac{M2_c}{n_c - 1}

    with :math:`n_c` the global count. On one rank the result is that of
    :func:`fastnorm.batch_norm` bit for bit; on several it equals batch_norm on the
    concatenated batch to float64 rounding of the statistics.

    Parameters
    ----------
    x : array_like, float32 or float64, at least 2-d
        This rank's part of the batch; every rank must have the same number of channels.
    weight, bias, running_mean, running_var, momentum, eps, axis, out, return_stats
        As in :func:`fastnorm.batch_norm` (weight, bias and the running statistics are
        normally replicated: the same values on every rank; ``out`` is checked before
        any communication).
    training : bool, default True
        ``False`` normalizes with the running statistics, locally: no communication, and
        ``comm`` is not used.
    comm : communicator
        An ``mpi4py.MPI.Comm`` or any object with its lower-case ``allgather`` and
        ``allreduce`` (see :mod:`fastnorm.distributed`). Keyword-only and required.

    Returns
    -------
    y, or (y, mean, rstd)
        ``mean`` and ``rstd`` (shape (C,), x's dtype) are the global statistics, the same
        on every rank; pass them to :func:`sync_batch_norm_backward`.

    Raises
    ------
    ValueError
        As :func:`fastnorm.batch_norm`; the one-value-per-channel check applies to the
        global batch (raised on every rank). Also when the ranks' channel counts differ.
    TypeError
        A ``comm`` without ``allgather`` and ``allreduce``.

    Examples
    --------
    Run under ``mpirun -n 2``::

        from mpi4py import MPI
        import numpy as np, fastnorm
        from fastnorm.distributed import sync_batch_norm

        comm = MPI.COMM_WORLD
        x = np.random.default_rng(comm.rank).standard_normal((8 + comm.rank, 16, 5, 5))
        y, mean, rstd = sync_batch_norm(x, comm=comm, return_stats=True)
    """
    if not training:
        return batch_norm(
            x,
            weight,
            bias,
            running_mean,
            running_var,
            training=False,
            momentum=momentum,
            eps=eps,
            axis=axis,
            out=out,
            return_stats=return_stats,
        )
    x, (A, C, B), eps, momentum, weight, bias, rm, rv = _bn_args(
        x, weight, bias, running_mean, running_var, axis, eps, momentum)
    dtype = x.dtype
    sdtype = stat_dtype(dtype)
    if out is not None:
        check_out(out, x.shape, dtype)
    _check_comm(comm)

    gathered = comm.allgather(_local_moments(x, A, C, B))
    count, mean, m2 = _global_moments(gathered, C)
    n = int(count[0]) if C else 0
    if n == 1:
        raise ValueError(
            f"sync_batch_norm in training mode needs more than 1 value per "
            f"channel in the global batch, got 1 (input shape here {x.shape})"
        )
    if n == 0:
        # No global batch (x is empty on every rank): NaN statistics, running statistics
        # untouched, as batch_norm on an empty batch.
        y = new_output(x.shape, dtype) if out is None else out
        nan = np.full(C, np.nan, sdtype)
        return (y, nan, nan.copy()) if return_stats else y
    mean, var = np.array(mean), m2 / n  # own arrays: the merge may return received ones
    res = batch_norm(
        x, weight, bias, mean, var, training=False, eps=eps, axis=axis, out=out,
        return_stats=return_stats,
    )
    # computed in float64 like the kernel's update, then stored in the arrays' dtype
    with np.errstate(over="ignore", invalid="ignore"):
        if rm is not None:
            rm[...] = (1.0 - momentum) * rm.astype(np.float64) + momentum * mean
        if rv is not None:
            rv[...] = (1.0 - momentum) * rv.astype(np.float64) + momentum * (m2 / (n - 1.0))
    return res


def sync_batch_norm_backward(dy, x, mean, rstd, weight=None, *, axis=1, comm, out=None):
    r"""Gradients of :func:`sync_batch_norm` (training mode) on this rank's part.

    With :math:`\hat x = (x - \mu)\,\mathrm{rstd}`, :math:`n` the global count per channel
    and the sums over the global batch,

    .. math::

        dx = \mathrm{rstd}\,\gamma\,\Big(dy - \tfrac{1}{n}\textstyle\sum dy
             - \hat x\,\tfrac{1}{n}\sum dy\,\hat x\Big)

    Each rank computes its per-channel :math:`\sum dy` and :math:`\sum dy\,\hat x` (one C
    pass over dy and x), the ranks add them and their counts in one ``allreduce``, and dx
    follows in one C pass (dy and x read, dx written). dweight and dbias are this rank's
    contributions, :math:`\sum dy\,\hat x` and :math:`\sum dy` over its own part: as with
    PyTorch's SyncBatchNorm, the data-parallel all-reduce of the parameter gradients sums
    them into the gradients of the global batch.

    Parameters
    ----------
    dy : array_like
        The gradient of y, x's shape.
    x : array_like, float32 or float64
        This rank's input to the forward pass (may be empty).
    mean, rstd : array_like of shape (C,)
        The global statistics returned by :func:`sync_batch_norm` (the same on every rank).
    weight : array_like of shape (C,), optional
    axis : int, default 1
    comm : communicator
        As in :func:`sync_batch_norm`; the call is collective.
    out : ndarray, optional
        Receives dx: x's shape and dtype, writeable (dy included: then through a
        temporary). Checked before any communication.

    Returns
    -------
    dx : ndarray, x's shape and dtype (``out`` when given)
    dweight : ndarray (C,), or None when weight is None
    dbias : ndarray (C,)
    """
    x, (A, C, B), dy, mean, rstd, weight = _bn_grad_args(dy, x, mean, rstd, weight, axis)
    dtype = x.dtype
    sdtype = stat_dtype(dtype)
    xc = contiguous(x)
    dx = make_out(out, x.shape, dtype, (None, dy, xc, mean, rstd, weight))
    _check_comm(comm)
    sums = np.zeros(2 * C + 1, np.float64)  # count, sum dy, sum dy * xhat
    sums[0] = A * B
    s1, s2 = sums[1 : C + 1], sums[C + 1 :]
    if x.size:
        _kernels.batch_norm_bwd_sums(dy, xc, mean, rstd, s1, s2, A, C, B)
    total = np.asarray(comm.allreduce(sums), dtype=np.float64)
    if total.shape != sums.shape:
        raise ValueError(
            f"sync_batch_norm_backward: the ranks disagree on the number of "
            f"channels (sums of shape {total.shape} reduced, this rank has "
            f"C={C})"
        )
    if x.size:
        g1 = np.ascontiguousarray(total[1 : C + 1])
        g2 = np.ascontiguousarray(total[C + 1 :])
        _kernels.batch_norm_bwd_apply(
            dy, xc, mean, rstd, weight, g1, g2, float(total[0]), dx, A, C, B
        )
    dweight = None if weight is None else s2.astype(sdtype)
    return finish_out(dx, out), dweight, s1.astype(sdtype)
