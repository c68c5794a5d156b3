"""iter_norm: iterative whitening of groups of channels (IterNorm, decorrelated batch norm
by Newton's iterations)."""

import operator

import numpy as np

from . import _kernels
from ._channels import _bn_layout, _running
from ._validate import (
    as_input,
    as_like,
    as_param,
    check_eps,
    check_momentum,
    contiguous,
    finish_out,
    make_out,
    stat_dtype,
)

__all__ = ["iter_norm", "iter_norm_backward"]


def _int(v, name, low):
    if isinstance(v, bool) or not hasattr(v, "__index__"):
        raise TypeError(f"{name} must be an integer, got {v!r}")
    v = operator.index(v)
    if v < low:
        raise ValueError(f"{name} must be >= {low}, got {v}")
    return v


def _setup(x, axis, group_size, iterations):
    """x, its (A, C, B) layout, group_size, iterations, the group count and the dtype the
    kernels compute in (float32 for the half types)."""
    x = as_input(x)
    A, C, B = _bn_layout(x, axis)
    d = _int(group_size, "group_size", 1)
    T = _int(iterations, "iterations", 0)
    # the d x d work and scratch grow as d³ T and d² T: bounds that keep the sizes sane
    if d > 4096:
        raise ValueError(f"group_size must be at most 4096, got {d}")
    if T > 1000:
        raise ValueError(f"iterations must be at most 1000, got {T}")
    G = -(-C // d)
    cdtype = np.dtype(np.float64) if x.dtype == np.float64 else np.dtype(np.float32)
    return x, (A, C, B), d, T, G, cdtype


def _running_whitening(rw, rm, G, d):
    if rw is None:
        return None
    if not isinstance(rw, np.ndarray) or rw.shape != (G, d, d):
        raise ValueError(f"running_whitening must be a numpy.ndarray of shape ({G}, {d}, {d}), "
                         f"got {getattr(rw, 'shape', type(rw).__name__)}")
    if not (rw.flags.c_contiguous and rw.flags.aligned) and rw.flags.writeable:
        # (a reshape would update a hidden copy)
        raise ValueError("running_whitening must be contiguous and aligned (it is updated "
                         "in place)")
    rw = _running(rw.reshape(-1), "running_whitening", G * d * d)
    if rm is not None and rm.dtype != rw.dtype:
        raise TypeError(f"running_mean and running_whitening must have the same dtype, got "
                        f"{rm.dtype} and {rw.dtype}")
    return rw


def _in_float64(kernel, inputs, outputs, *rest):
    """``kernel(*inputs, *outputs, *rest)`` again on float64 copies (the kernels said FN_WIDEN
    before writing anything), the results written back into ``outputs``."""
    f8 = [None if a is None else a.astype(np.float64) for a in inputs]
    o8 = [None if o is None else np.zeros(o.shape) for o in outputs]
    kernel(*f8, *o8, *rest)
    for o, r in zip(outputs, o8, strict=True):
        if o is not None:
            o[...] = r


def iter_norm(x, weight=None, bias=None, running_mean=None, running_whitening=None, *,
              group_size=16, iterations=5, training=True, momentum=0.1, eps=1e-5, axis=1,
              out=None, return_stats=False):  # fmt: skip
    r"""Iterative whitening (IterNorm, Huang et al. 2019): groups of channels centred,
    decorrelated and scaled to unit variance, by Newton's iterations instead of an
    eigen-decomposition.

    The C channels are split into ``G = ceil(C / group_size)`` consecutive groups of
    ``d = group_size`` (the last has ``C - (G - 1) * group_size`` channels when
    ``group_size`` does not divide C). With m the number of values per channel and a
    group's centred values :math:`X_c = x - \mu` as a d x m matrix:

    .. math::

        \Sigma = X_c X_c^\top / m + \epsilon I, \quad S = \Sigma / \operatorname{tr}\Sigma,
        \quad P_0 = I, \quad P_k = \tfrac32 P_{k-1} - \tfrac12 P_{k-1}^3 S,

        W = P_T / \sqrt{\operatorname{tr}\Sigma}, \qquad y = (W X_c)_c\,\gamma_c + \beta_c

    with T = ``iterations``. :math:`P_T \to S^{-1/2}`, so :math:`W X_c` has covariance
    close to I: how close depends on T and on the spread of Σ's eigenvalues (correlated
    16-channel groups with the eigenvalues of S between 0.013 and 0.12: within 0.14 of I
    after T = 5, 1.1e-4 after 8, 1e-13 after 10; see tests/test_iter_norm.py). With
    ``group_size=1`` this is :func:`batch_norm`.

    Training mode updates the running statistics in place (when given), as batch norm:
    ``running_mean = (1 - momentum) * running_mean + momentum * mu`` and the same for
    ``running_whitening`` with W. ``training=False`` uses them:
    :math:`y = W_{run} (x - \mathrm{running\_mean})` per group, then the affine.

    Parameters
    ----------
    x : array_like, float16, bfloat16, float32 or float64, at least 2-d
    weight, bias : array_like of shape (C,), optional
    running_mean : ndarray of shape (C,), optional
    running_whitening : ndarray of shape (G, group_size, group_size), optional
        Writeable, contiguous float32 or float64 arrays of one dtype, updated in place in
        training mode (in float64 arithmetic); both required with ``training=False``. A
        last group of d' < group_size channels has its d' x d' matrix in the top-left block
        (start the running whitening at the identity's blocks, e.g.
        ``np.tile(np.eye(group_size), (G, 1, 1))``; the rest is not read).
    group_size : int >= 1, default 16
    iterations : int >= 0, default 5
    training : bool, default True
    momentum : float in [0, 1], default 0.1
    eps : float >= 0, default 1e-5
    axis : int, default 1
        The channel axis: 1 for (N, C, ...) layouts, -1 for channels-last.
    out : ndarray, optional
        Receives y (x's shape and dtype); ``out=x`` works in place.
    return_stats : bool, default False
        Also return ``mean`` (C,) and ``whitening`` (G, group_size, group_size), in x's
        dtype (float32 for half x): the batch's in training mode, the running ones
        otherwise.

    Returns
    -------
    y, or (y, mean, whitening)

    Notes
    -----
    Two passes over x, as batch norm: one accumulates each group's sums and cross-products
    in float64, the other applies :math:`\mathrm{diag}(\gamma) W` to blocks of positions.
    The d x d work (the Newton iterations) runs in float64. Results are bitwise identical
    for any thread count.
    """
    x, (A, C, B), d, T, G, cdtype = _setup(x, axis, group_size, iterations)
    eps = check_eps(eps)
    momentum = check_momentum(momentum)
    sdtype = stat_dtype(x.dtype)
    training = bool(training)
    weight = as_param(weight, "weight", (C,), sdtype)
    bias = as_param(bias, "bias", (C,), sdtype)
    rm = _running(running_mean, "running_mean", C)
    rw = _running_whitening(running_whitening, rm, G, d)
    if not training and (rm is None or rw is None):
        raise ValueError("iter_norm with training=False needs running_mean and "
                         "running_whitening")
    mean = np.empty(C, sdtype) if return_stats else None
    whitening = np.zeros((G, d, d), sdtype) if return_stats else None
    xc = contiguous(x)
    if x.dtype != cdtype:  # half: through float32
        xk = xc.astype(cdtype)
        yk = np.empty(x.shape, cdtype)
    else:
        xk = xc
        yk = make_out(out, x.shape, x.dtype, (xc, weight, bias, rm, rw))
    if C == 0:
        pass
    elif A * B == 0:
        if return_stats:  # training: no batch statistics without a batch
            mean[...] = np.nan if training else rm
            blocks = np.full((G, d, d), np.nan) if training else rw.reshape(G, d, d)
            for g in range(G):  # the groups' blocks, as the kernel returns them
                k = min(d, C - g * d)
                whitening[g, :k, :k] = blocks[g, :k, :k]
    elif not _kernels.iter_norm_fwd(xk, weight, bias, yk, mean, whitening, rm, rw, A, C, B,
                                    d, T, eps, momentum, training):
        # float32 data too large or too small for float arithmetic (|x| near 1e35 or
        # below 1e-30): the same in float64, written back in float32
        _in_float64(_kernels.iter_norm_fwd, (xk, weight, bias), (yk, mean, whitening), rm, rw,
                    A, C, B, d, T, eps, momentum, training)  # fmt: skip
    if x.dtype != cdtype:
        y = make_out(out, x.shape, x.dtype, (xc,))
        y[...] = yk
    else:
        y = yk
    y = finish_out(y, out)
    return (y, mean, whitening) if return_stats else y


def iter_norm_backward(dy, x, mean, weight=None, *, group_size=16, iterations=5, eps=1e-5,
                       axis=1, training=True, whitening=None, out=None):  # fmt: skip
    r"""Gradients of :func:`iter_norm`.

    Training mode: the exact derivative of the forward's steps, the Newton iterations
    included (what reverse-mode differentiation of the same iterations gives, not the
    gradient of an exact whitening). ``mean`` is the forward's batch mean, used as the
    shift of the sums: X_c, Σ and the iterations are recomputed from x about its exact batch
    mean (so a mean saved in float32 costs no accuracy; ``whitening`` is not used). With
    :math:`g = \gamma\,dy` per group, :math:`dW = g X_c^\top` is carried back through
    :math:`W = P_T / \sqrt{\operatorname{tr}\Sigma}` and the iterations to :math:`d\Sigma`;
    then :math:`dX_c = W^\top g + (d\Sigma + d\Sigma^\top) X_c / m` and
    :math:`dx = dX_c - \operatorname{mean}(dX_c)` per channel.

    ``training=False``: the statistics are constants; ``mean`` is the running mean,
    ``whitening`` (required, (G, group_size, group_size)) the running whitening, and
    :math:`dx = W^\top g`. In both modes :math:`d\gamma = \sum dy\,\hat y` with
    :math:`\hat y = W X_c`, and :math:`d\beta = \sum dy`, per channel.

    ``out`` (optional) receives dx (x's shape and dtype).

    Returns
    -------
    dx : ndarray, x's shape and dtype
    dweight : ndarray (C,), or None when weight is None
    dbias : ndarray (C,)
    """
    x, (A, C, B), d, T, G, cdtype = _setup(x, axis, group_size, iterations)
    eps = check_eps(eps)
    sdtype = stat_dtype(x.dtype)
    training = bool(training)
    dy = as_like(dy, "dy", x.shape, x.dtype)
    mean = as_like(mean, "mean", (C,), sdtype)
    weight = as_param(weight, "weight", (C,), sdtype)
    if not training:
        if whitening is None:
            raise ValueError("iter_norm_backward with training=False needs whitening (the "
                             "running whitening the forward used)")
        whitening = as_like(whitening, "whitening", (G, d, d), sdtype)
    else:
        whitening = None
    empty = x.size == 0
    dweight = None if weight is None else (np.zeros if empty else np.empty)(C, sdtype)
    dbias = (np.zeros if empty else np.empty)(C, sdtype)
    xc = contiguous(x)
    if x.dtype != cdtype:
        xk, dyk = xc.astype(cdtype), dy.astype(cdtype)
        dxk = np.empty(x.shape, cdtype)
    else:
        xk, dyk = xc, dy
        dxk = make_out(out, x.shape, x.dtype, (None, dy, xc))
    if not empty and not _kernels.iter_norm_bwd(dyk, xk, mean, weight, whitening, dxk,
                                                dweight, dbias, A, C, B, d, T, eps, training):
        # float32 data beyond float arithmetic's range (see iter_norm): in float64
        _in_float64(_kernels.iter_norm_bwd, (dyk, xk, mean, weight, whitening),
                    (dxk, dweight, dbias), A, C, B, d, T, eps, training)  # fmt: skip
    if x.dtype != cdtype:
        dx = make_out(out, x.shape, x.dtype, (None, dy, xc))
        dx[...] = dxk
    else:
        dx = dxk
    return finish_out(dx, out), dweight, dbias
