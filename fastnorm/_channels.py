"""batch_norm, group_norm and instance_norm: the channels family (statistics per channel
or per group of channels, the channel axis anywhere)."""

import numpy as np

from . import _kernels
from ._validate import (
    as_input,
    as_like,
    as_param,
    check_eps,
    check_momentum,
    contiguous,
    finish_out,
    make_out,
    normalize_axis,
    prod,
    stat_dtype,
)

__all__ = [
    "batch_norm",
    "batch_norm_backward",
    "group_norm",
    "group_norm_backward",
    "instance_norm",
    "instance_norm_backward",
]


def _bn_layout(x, axis):
    """(A, C, B): the axes before the channel axis, the channels, the axes after it."""
    if x.ndim < 2:
        raise ValueError(f"batch_norm needs at least 2 dimensions (N, C, ...), got shape "
                         f"{x.shape}")
    axis = normalize_axis(axis, x.ndim)
    s = x.shape
    return prod(s[:axis]), s[axis], prod(s[axis + 1:])


def _gn_layout(x, axis, name):
    """(N, A, C, B) with N the batch axis 0 and C the channel axis."""
    if x.ndim < 2:
        raise ValueError(f"{name} needs at least 2 dimensions (N, C, ...), got shape {x.shape}")
    axis = normalize_axis(axis, x.ndim)
    if axis == 0:
        raise ValueError(f"{name}: the channel axis cannot be axis 0, the batch axis")
    s = x.shape
    return s[0], prod(s[1:axis]), s[axis], prod(s[axis + 1:])


def _check_groups(num_groups, C):
    if isinstance(num_groups, bool) or not hasattr(num_groups, "__index__"):
        raise TypeError(f"num_groups must be an integer, got {num_groups!r}")
    G = int(num_groups)
    if G <= 0:
        raise ValueError(f"num_groups must be positive, got {G}")
    if C % G:
        raise ValueError(f"num_groups={G} must divide the number of channels C={C}")
    return G


def _running(r, name, C):
    """A running statistic, updated in place by the kernel: a writeable, contiguous,
    aligned, native float32/float64 ndarray of shape (C,). Its dtype may differ from x's."""
    if r is None:
        return None
    if not isinstance(r, np.ndarray):
        raise TypeError(f"{name} must be a numpy.ndarray (it is updated in place), "
                        f"got {type(r).__name__}")
    if r.shape != (C,):
        raise ValueError(f"{name} must have shape ({C},), got {r.shape}")
    if r.dtype not in (np.float32, np.float64) or not r.dtype.isnative:
        raise TypeError(f"{name} must be native float32 or float64, got dtype {r.dtype}")
    if not r.flags.writeable:
        raise ValueError(f"{name} is read-only; it must be writeable to be updated in place")
    if not (r.flags.c_contiguous and r.flags.aligned):
        raise ValueError(f"{name} must be contiguous and aligned (it is updated in place)")
    return r


def _bn_args(x, weight, bias, running_mean, running_var, axis, eps, momentum):
    """batch_norm's checked arguments (also sync_batch_norm's): x as an array, its (A, C,
    B) layout, eps, momentum, weight and bias in the statistics' dtype, and the running
    statistics (None or writeable contiguous float32/float64 arrays of one dtype)."""
    x = as_input(x)
    A, C, B = _bn_layout(x, axis)
    eps = check_eps(eps)
    momentum = check_momentum(momentum)
    sdtype = stat_dtype(x.dtype)
    weight = as_param(weight, "weight", (C,), sdtype)
    bias = as_param(bias, "bias", (C,), sdtype)
    rm = _running(running_mean, "running_mean", C)
    rv = _running(running_var, "running_var", C)
    if rm is not None and rv is not None and rm.dtype != rv.dtype:
        raise TypeError(f"running_mean and running_var must have the same dtype, got "
                        f"{rm.dtype} and {rv.dtype}")
    return x, (A, C, B), eps, momentum, weight, bias, rm, rv


def _bn_grad_args(dy, x, mean, rstd, weight, axis):
    """batch_norm_backward's checked arguments (also sync_batch_norm_backward's): x, its
    (A, C, B) layout, dy in x's dtype, mean, rstd and weight in the statistics' dtype."""
    x = as_input(x)
    A, C, B = _bn_layout(x, axis)
    dy = as_like(dy, "dy", x.shape, x.dtype)
    sdtype = stat_dtype(x.dtype)
    mean = as_like(mean, "mean", (C,), sdtype)
    rstd = as_like(rstd, "rstd", (C,), sdtype)
    weight = as_param(weight, "weight", (C,), sdtype)
    return x, (A, C, B), dy, mean, rstd, weight


def _grad_arrays(shape, C, dtype, with_weight, out=None, inputs=()):
    """dx (x's dtype: `out`, or the array the kernel writes for it, see make_out),
    dweight (None without a weight) and dbias (in the statistics' dtype); the per-channel
    ones zeroed when x is empty, since no kernel runs then. dx is never written over an
    input: the channels kernels may read dy again after writing dx."""
    dx = make_out(out, shape, dtype, (None, *inputs))
    empty = dx.size == 0
    make = np.zeros if empty else np.empty
    sdtype = stat_dtype(dtype)
    return dx, make(C, sdtype) if with_weight else None, make(C, sdtype)


def batch_norm(x, weight=None, bias=None, running_mean=None, running_var=None, *,
               training=True, momentum=0.1, eps=1e-5, axis=1, out=None, return_stats=False,
               center_only=False):
    r"""Batch normalization: statistics per channel over every other axis.

    .. math::

        \mu_c = \operatorname{mean}_{\ne c}(x), \quad
        \sigma_c^2 = \operatorname{mean}_{\ne c}\big((x - \mu_c)^2\big), \quad
        y = \frac{x - \mu_c}{\sqrt{\sigma_c^2 + \epsilon}}\,\gamma_c + \beta_c

    In training mode the batch statistics are used and, when given, the running statistics
    are updated in place (PyTorch's convention)::

        running_mean = (1 - momentum) * running_mean + momentum * mu
        running_var  = (1 - momentum) * running_var  + momentum * var * n / (n - 1)

    with n the number of values per channel. With ``training=False`` x is normalized with
    the running statistics, which are left untouched.

    Parameters
    ----------
    x : array_like, float16, bfloat16, float32 or float64, at least 2-d
        Input; any strides.
    weight, bias : array_like of shape (C,), optional
        The per-channel re-scale :math:`\gamma` and re-shift :math:`\beta`.
    running_mean, running_var : ndarray of shape (C,), optional
        Writeable, contiguous float32 or float64 arrays (one dtype for both, which may
        differ from x's), updated in place in training mode (the update is computed in
        float64); both required when ``training=False``.
    training : bool, default True
    momentum : float in [0, 1], default 0.1
    eps : float >= 0, default 1e-5
    axis : int, default 1
        The channel axis: 1 for NCHW-style layouts, -1 for channels-last (NHWC).
    out : ndarray, optional
        Receives y (x's shape and dtype, writeable); ``out=x`` works in place.
    return_stats : bool, default False
        Also return ``mean`` and ``rstd = 1/sqrt(var + eps)`` (shape (C,), x's dtype,
        float32 for half x): the batch statistics in training mode, the running ones
        otherwise.
    center_only : bool, default False
        Mean-only batch norm (Salimans & Kingma 2016, the partner of weight norm):
        :math:`y = x - \mu_c + \beta_c`, with no variance and no scale. ``weight`` must
        be None; ``running_mean`` is updated in training mode (and required with
        ``training=False``), ``running_var`` is not used and left untouched, ``eps`` has no
        effect, and one value per channel is allowed. The ``rstd`` returned with
        ``return_stats`` is all ones (the scale applied).

    Returns
    -------
    y, or (y, mean, rstd)

    Raises
    ------
    ValueError
        One value per channel in training mode, wrong parameter shapes, momentum outside
        [0, 1], negative eps, read-only or non-contiguous running statistics.

    Examples
    --------
    >>> import numpy as np, fastnorm
    >>> x = np.array([[1.0, 10.0], [3.0, 30.0]])           # (N=2, C=2)
    >>> rm, rv = np.zeros(2), np.ones(2)
    >>> fastnorm.batch_norm(x, running_mean=rm, running_var=rv, eps=0.0)
    array([[-1., -1.],
           [ 1.,  1.]])
    >>> rm, rv
    (array([0.2, 2. ]), array([ 1.1, 20.9]))
    """
    if center_only:
        return _bn_center(x, bias, running_mean, training, momentum, eps, axis, out,
                          return_stats, weight)
    r = _kernels.batch_norm_fast(x, weight, bias, running_mean, running_var, training,
                                 momentum, eps, axis, return_stats, out)
    if r is not None:
        return r
    x, (A, C, B), eps, momentum, weight, bias, rm, rv = _bn_args(
        x, weight, bias, running_mean, running_var, axis, eps, momentum)
    dtype = x.dtype
    sdtype = stat_dtype(dtype)
    training = bool(training)
    n = A * B
    if training and n == 1:
        raise ValueError(f"batch_norm in training mode needs more than 1 value per channel, "
                         f"got input shape {x.shape}")
    if not training and (rm is None or rv is None):
        raise ValueError("batch_norm with training=False needs running_mean and running_var")
    xc = contiguous(x)
    y = make_out(out, x.shape, dtype, (xc, weight, bias, rm, rv))
    mean = rstd = None
    if return_stats:
        mean, rstd = np.empty(C, sdtype), np.empty(C, sdtype)
    if n == 0 or C == 0:
        if return_stats and training:  # no batch statistics without a batch
            mean.fill(np.nan)
            rstd.fill(np.nan)
        elif return_stats:  # eval: the running statistics, as for any batch
            mean[...] = rm
            rstd[...] = 1.0 / np.sqrt(rv.astype(np.float64) + eps)
    else:
        _kernels.batch_norm_fwd(xc, weight, bias, y, mean, rstd, rm, rv, A, C, B, eps,
                                momentum, training)
    y = finish_out(y, out)
    return (y, mean, rstd) if return_stats else y


def _bn_center(x, bias, running_mean, training, momentum, eps, axis, out, return_stats,
               weight):
    """batch_norm(..., center_only=True)."""
    if weight is not None:
        raise ValueError("batch_norm with center_only=True takes no weight: there is no "
                         "variance to re-scale by (pass weight=None)")
    x, (A, C, B), _, momentum, _, bias, rm, _ = _bn_args(
        x, None, bias, running_mean, None, axis, eps, momentum)
    training = bool(training)
    if not training and rm is None:
        raise ValueError("batch_norm with center_only=True and training=False needs "
                         "running_mean")
    sdtype = stat_dtype(x.dtype)
    xc = contiguous(x)
    y = make_out(out, x.shape, x.dtype, (xc, bias, rm))
    mean = np.empty(C, sdtype) if return_stats else None
    if A * B == 0 or C == 0:
        if return_stats:
            mean[...] = np.nan if training else rm
    else:
        _kernels.batch_center_fwd(xc, bias, y, mean, rm, A, C, B, momentum, training)
    y = finish_out(y, out)
    return (y, mean, np.ones(C, sdtype)) if return_stats else y


def batch_norm_backward(dy, x, mean, rstd, weight=None, *, axis=1, training=True,
                        out=None, center_only=False):
    r"""Gradients of :func:`batch_norm` from its saved ``mean`` and ``rstd``.

    Training mode (statistics of the batch), with :math:`\hat x = (x - \mu)\,\mathrm{rstd}`,
    :math:`g = dy\,\gamma` and n values per channel:

    .. math::

        dx = \mathrm{rstd}\,\Big(g - \tfrac{1}{n}\textstyle\sum g
             - \hat x\,\tfrac{1}{n}\sum g\hat x\Big)

    With ``training=False`` the statistics are constants and :math:`dx = g\,\mathrm{rstd}`.
    In both, :math:`d\gamma = \sum dy\,\hat x` and :math:`d\beta = \sum dy` per channel.

    ``out`` (optional) receives dx: x's shape and dtype, writeable. It may be any such
    array, dy included (dx is then computed into a temporary and copied over dy).

    With ``center_only=True`` (the gradients of ``batch_norm(..., center_only=True)``):
    :math:`dx = dy - \operatorname{mean}_{\ne c}(dy)` in training mode, :math:`dx = dy`
    otherwise, and :math:`d\beta = \sum dy`; ``weight`` must be None and ``x``, ``mean``
    and ``rstd`` are not used (they may be None). dweight is None.

    Returns
    -------
    dx : ndarray, x's shape and dtype (``out`` when given)
    dweight : ndarray (C,), or None when weight is None
    dbias : ndarray (C,)
    """
    if center_only:
        if weight is not None:
            raise ValueError("batch_norm_backward with center_only=True takes no weight "
                             "(pass weight=None)")
        dy = as_input(dy, "dy")
        A, C, B = _bn_layout(dy, axis)
        dyc = contiguous(dy)
        dx, _, dbias = _grad_arrays(dy.shape, C, dy.dtype, False, out, (dyc,))
        if dx.size:
            _kernels.batch_center_bwd(dyc, dx, dbias, A, C, B, bool(training))
        return finish_out(dx, out), None, dbias
    x, (A, C, B), dy, mean, rstd, weight = _bn_grad_args(dy, x, mean, rstd, weight, axis)
    xc = contiguous(x)
    dx, dweight, dbias = _grad_arrays(x.shape, C, x.dtype, weight is not None, out,
                                      (dy, xc, mean, rstd, weight))
    if dx.size:
        _kernels.batch_norm_bwd(dy, xc, mean, rstd, weight, dx, dweight, dbias,
                                A, C, B, bool(training))
    return finish_out(dx, out), dweight, dbias


def _gn_forward(x, layout, G, weight, bias, eps, out, return_stats):
    N, A, C, B = layout
    dtype = x.dtype
    eps = check_eps(eps)
    sdtype = stat_dtype(dtype)
    weight = as_param(weight, "weight", (C,), sdtype)
    bias = as_param(bias, "bias", (C,), sdtype)
    xc = contiguous(x)
    y = make_out(out, x.shape, dtype, (xc, weight, bias))
    mean = rstd = None
    if return_stats:
        mean, rstd = np.empty((N, G), sdtype), np.empty((N, G), sdtype)
    if A * B * C == 0:
        if return_stats:
            mean.fill(np.nan)
            rstd.fill(np.nan)
    elif N:
        _kernels.group_norm_fwd(xc, weight, bias, y, mean, rstd, N, A, C, B, G, eps)
    y = finish_out(y, out)
    return (y, mean, rstd) if return_stats else y


def _gn_backward(dy, x, layout, mean, rstd, G, weight, out):
    N, A, C, B = layout
    dtype = x.dtype
    dy = as_like(dy, "dy", x.shape, dtype)
    sdtype = stat_dtype(dtype)
    mean = as_like(mean, "mean", (N, G), sdtype)
    rstd = as_like(rstd, "rstd", (N, G), sdtype)
    weight = as_param(weight, "weight", (C,), sdtype)
    xc = contiguous(x)
    dx, dweight, dbias = _grad_arrays(x.shape, C, dtype, weight is not None, out,
                                      (dy, xc, mean, rstd, weight))
    if dx.size:
        _kernels.group_norm_bwd(dy, xc, mean, rstd, weight, dx, dweight, dbias,
                                N, A, C, B, G)
    return finish_out(dx, out), dweight, dbias


def group_norm(x, num_groups, weight=None, bias=None, *, axis=1, eps=1e-5, out=None,
               return_stats=False):
    r"""Group normalization: the C channels split into ``num_groups`` consecutive groups;
    each (sample, group) is normalized over its channels and all spatial positions.

    .. math::

        y = \frac{x - \mu_{n,g}}{\sqrt{\sigma_{n,g}^2 + \epsilon}}\,\gamma_c + \beta_c

    Parameters
    ----------
    x : array_like, float16, bfloat16, float32 or float64, shape (N, ..., C, ...)
        Axis 0 is the batch; ``axis`` is the channel axis (1: channels-first, -1:
        channels-last).
    num_groups : int
        G, a positive divisor of C.
    weight, bias : array_like of shape (C,), optional
        Per-channel re-scale and re-shift.
    eps, out, return_stats
        As in :func:`batch_norm`; the statistics have shape (N, G).

    Returns
    -------
    y, or (y, mean, rstd)
    """
    x = as_input(x)
    layout = _gn_layout(x, axis, "group_norm")
    G = _check_groups(num_groups, layout[2])
    return _gn_forward(x, layout, G, weight, bias, eps, out, return_stats)


def group_norm_backward(dy, x, mean, rstd, num_groups, weight=None, *, axis=1, out=None):
    r"""Gradients of :func:`group_norm`: the batch-norm gradient formula applied per
    (sample, group), with n = (C / G) x spatial values per group. ``out`` receives dx
    (as in :func:`batch_norm_backward`).

    Returns
    -------
    dx, dweight (or None), dbias
    """
    x = as_input(x)
    layout = _gn_layout(x, axis, "group_norm_backward")
    G = _check_groups(num_groups, layout[2])
    return _gn_backward(dy, x, layout, mean, rstd, G, weight, out)


def instance_norm(x, weight=None, bias=None, *, axis=1, eps=1e-5, out=None,
                  return_stats=False):
    r"""Instance normalization: each (sample, channel) normalized over its spatial
    positions; group norm with one channel per group.

    .. math::

        y = \frac{x - \mu_{n,c}}{\sqrt{\sigma_{n,c}^2 + \epsilon}}\,\gamma_c + \beta_c

    Statistics (with ``return_stats=True``) have shape (N, C).
    """
    x = as_input(x)
    layout = _gn_layout(x, axis, "instance_norm")
    return _gn_forward(x, layout, layout[2], weight, bias, eps, out, return_stats)


def instance_norm_backward(dy, x, mean, rstd, weight=None, *, axis=1, out=None):
    """Gradients of :func:`instance_norm` (see :func:`group_norm_backward`); ``out``
    receives dx."""
    x = as_input(x)
    layout = _gn_layout(x, axis, "instance_norm_backward")
    return _gn_backward(dy, x, layout, mean, rstd, layout[2], weight, out)

