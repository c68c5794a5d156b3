"""Mergeable batch norm statistics: per-channel (count, mean, M2) of a batch, and their
combination over several batches (the statistics of the batches put together)."""

import numpy as np

from . import _kernels
from ._channels import _bn_layout
from ._validate import as_input, contiguous

__all__ = ["batch_moments", "merge_moments"]


def batch_moments(x, axis=1):
    r"""Per-channel count, mean and M2 of a batch: the statistics of :func:`batch_norm`
    in a form that can be merged across batches (see :func:`merge_moments`).

    .. math::

        n_c = \#\{x_{\cdot c \cdot}\}, \quad
        \mu_c = \frac{1}{n_c}\sum x_{\cdot c \cdot}, \quad
        M2_c = \sum (x_{\cdot c \cdot} - \mu_c)^2

    computed by the same C kernel as batch norm's training statistics (tiles merged with
    Chan's formula; bitwise identical for any thread count). The biased variance is
    ``M2 / count``, the unbiased one ``M2 / (count - 1)``.

    Parameters
    ----------
    x : array_like, float32 or float64, at least 2-d
        A batch; any strides.
    axis : int, default 1
        The channel axis (1: channels-first, -1: channels-last).

    Returns
    -------
    count : ndarray of int64, shape (C,)
        The number of values per channel (the product of the other axes' lengths; the same
        for every channel, one entry per channel so that each channel merges on its own).
    mean : ndarray of float64, shape (C,)
        NaN where count is 0.
    m2 : ndarray of float64, shape (C,)
        The sum of squared deviations from the mean; 0 where count is 0.

    Examples
    --------
    >>> import numpy as np, fastnorm
    >>> x = np.array([[1.0, 10.0], [3.0, 30.0], [5.0, 20.0]])     # (N=3, C=2)
    >>> count, mean, m2 = fastnorm.batch_moments(x)
    >>> count, mean, m2
    (array([3, 3]), array([ 3., 20.]), array([  8., 200.]))
    """
    x = as_input(x)
    A, C, B = _bn_layout(x, axis)
    n = A * B
    count = np.full(C, n, dtype=np.int64)
    mean = np.empty(C, np.float64)
    m2 = np.empty(C, np.float64)
    if n == 0:
        mean.fill(np.nan)
        m2.fill(0.0)
    elif C:
        _kernels.batch_moments(contiguous(x), mean, m2, A, C, B)
    return count, mean, m2


def _as_moments(m, k):
    """The k-th argument of merge_moments as (count, mean, m2) float64 arrays."""
    try:
        count, mean, m2 = m
    except (TypeError, ValueError):
        raise TypeError(
            f"merge_moments: argument {k} must be a (count, mean, m2) triple, "
            f"got {type(m).__name__}"
        ) from None
    out = []
    for name, a in (("count", count), ("mean", mean), ("m2", m2)):
        a = np.asarray(a)
        if a.dtype.kind not in "fiu":
            raise TypeError(
                f"merge_moments: {name} of argument {k} must be real, got dtype {a.dtype}"
            )
        out.append(a.astype(np.float64))
    count, mean, m2 = out
    if not (count.shape == mean.shape == m2.shape):
        raise ValueError(
            f"merge_moments: count, mean and m2 of argument {k} must have one "
            f"shape, got {count.shape}, {mean.shape}, {m2.shape}"
        )
    if not (np.all(count >= 0) and np.all(count == np.floor(count))):
        raise ValueError(f"merge_moments: the counts of argument {k} must be non-negative integers")
    return count, mean, m2


def _merge(parts):
    """Chan's pairwise formula, folded left in the order given; float64 arrays of one
    shape (never modified). A part with count 0 is skipped whatever its mean and m2
    (NaN included)."""
    n, mu, q = parts[0]
    if not (n > 0).all():
        mu, q = np.where(n > 0, mu, 0.0), np.where(n > 0, q, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        for nb, mb, qb in parts[1:]:
            tot = n + nb
            delta = mb - mu
            new_mu = mu + delta * (nb / tot)
            new_q = q + qb + delta * delta * (n * nb / tot)
            take = nb > 0
            if take.all():
                mu, q = new_mu, new_q
            else:
                mu, q = np.where(take, new_mu, mu), np.where(take, new_q, q)
            n = tot
    if not (n > 0).all():
        mu = np.where(n > 0, mu, np.nan)
    return n, mu, q


def merge_moments(*moments):
    r"""Combine the moments of several batches into those of the batches put together.

    Each argument is a ``(count, mean, m2)`` triple as returned by :func:`batch_moments`
    (arrays of one shape; every argument the same shape). The merge uses Chan's parallel
    formula in float64, folded in the order given:

    .. math::

        n = n_a + n_b, \quad \delta = \mu_b - \mu_a, \quad
        \mu = \mu_a + \delta\,\frac{n_b}{n}, \quad
        M2 = M2_a + M2_b + \delta^2\,\frac{n_a n_b}{n}

    which is exact up to rounding, so the result does not depend on the order of the
    arguments beyond float64 rounding. Entries with count 0 contribute nothing, whatever
    their mean and m2.

    Parameters
    ----------
    *moments : (count, mean, m2) triples
        count: non-negative integers (int64 or integral floats); mean, m2: real arrays.

    Returns
    -------
    count : ndarray of int64
    mean : ndarray of float64
        NaN where the merged count is 0.
    m2 : ndarray of float64
        0 where the merged count is 0.

    Raises
    ------
    ValueError
        No argument, arguments of different shapes, or negative or fractional counts.
    TypeError
        An argument that is not a triple of real arrays.

    Examples
    --------
    >>> import numpy as np, fastnorm
    >>> x = np.array([[1.0], [3.0], [5.0], [7.0]])
    >>> fastnorm.merge_moments(fastnorm.batch_moments(x[:1]), fastnorm.batch_moments(x[1:]))
    (array([4]), array([4.]), array([20.]))
    """
    if not moments:
        raise ValueError("merge_moments needs at least one (count, mean, m2) triple")
    parts = [_as_moments(m, k) for k, m in enumerate(moments)]
    shape = parts[0][0].shape
    for k, p in enumerate(parts):
        if p[0].shape != shape:
            raise ValueError(
                f"merge_moments: argument {k} has shape {p[0].shape}, argument 0 has {shape}"
            )
    n, mu, q = _merge(parts)
    return n.astype(np.int64), mu, q
