"""NumPy reference implementations of every fastnorm operation.

This module is the oracle against which the C kernels are tested and the baseline the benchmarks
compare with. It is deliberately slow and simple:

* results are float64 whatever the input dtype; this module is the oracle;
* every statistic is computed in float64 with the two-pass formula (the mean first, then the mean
  of the squared deviations), never as ``E[x**2] - E[x]**2``;
* validation is light: shapes, axes and group counts are checked, dtypes are not.

It imports nothing but NumPy and can be loaded on its own from its file path.

Conventions shared by all functions:

* ``rstd = 1 / sqrt(var + eps)`` with the biased (population) variance;
* a reduction over zero elements gives NaN statistics, silently; an empty batch gives empty
  outputs and gradients;
* ``out=``, when given, receives the forward output (a backward's: dx, or dv for weight norm),
  cast to its dtype, and is returned in place of a new array;
* backward functions return ``None`` for the gradient of a parameter that was ``None``.
"""

from __future__ import annotations

import functools
import operator

import numpy as np

__all__ = [
    "add_layer_norm",
    "add_layer_norm_backward",
    "add_rms_norm",
    "add_rms_norm_backward",
    "batch_moments",
    "batch_norm",
    "batch_norm_backward",
    "batch_norm_double_backward",
    "cosine_norm",
    "cosine_norm_backward",
    "group_norm",
    "group_norm_backward",
    "group_norm_double_backward",
    "instance_norm",
    "instance_norm_backward",
    "instance_norm_double_backward",
    "iter_norm",
    "iter_norm_backward",
    "l2_normalize",
    "l2_normalize_backward",
    "layer_norm",
    "layer_norm_backward",
    "layer_norm_double_backward",
    "merge_moments",
    "rms_norm",
    "rms_norm_backward",
    "rms_norm_double_backward",
    "weight_norm",
    "weight_norm_backward",
]

_TINY = np.finfo(np.float64).tiny


# --------------------------------------------------------------------------- helpers


def _quiet(func):
    """Run ``func`` with floating-point warnings off.

    NaN statistics of empty reductions and the inf/NaN of ``eps = 0`` on constant input are
    defined results of the reference, not errors.
    """

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        with np.errstate(all="ignore"):
            return func(*args, **kwargs)

    return wrapper


def _f64(a):
    return np.asarray(a, dtype=np.float64)


def _axis(axis, ndim):
    axis = operator.index(axis)
    if not -ndim <= axis < ndim:
        raise np.exceptions.AxisError(axis, ndim)
    return axis % ndim


def _param(p, shape, name):
    if p is None:
        return None
    p = _f64(p)
    if p.shape != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}, got {p.shape}")
    return p


def _count(shape, axes):
    return int(np.prod([shape[a] for a in axes], dtype=np.int64))


def _mean(a, axes):
    """Mean over ``axes`` with kept dimensions; NaN (no warning) over zero elements."""
    return a.sum(axis=axes, keepdims=True) / _count(a.shape, axes)


def _mean_var(x, axes):
    mean = _mean(x, axes)
    var = _mean((x - mean) ** 2, axes)
    return mean, var


def _finish(y, out):
    if out is None:
        return y
    out[...] = y
    return out


def _channel_shape(ndim, axis):
    shape = [1] * ndim
    shape[axis] = -1
    return shape


def _check_eps(eps):
    if not eps >= 0:
        raise ValueError(f"eps must be >= 0, got {eps!r}")


# --------------------------------------------------------------------------- layer norm


@_quiet
def layer_norm(x, weight=None, bias=None, *, axis=-1, eps=1e-5, out=None, return_stats=False):
    r"""Layer normalization over the trailing axes ``x.shape[axis:]``.

    .. math::

        \mu = \operatorname{mean}(x), \quad
        \sigma^2 = \operatorname{mean}((x - \mu)^2), \quad
        r = 1 / \sqrt{\sigma^2 + \epsilon}, \quad
        y = (x - \mu)\, r\, \gamma + \beta

    with the mean and variance taken over the axes ``axis, ..., x.ndim - 1`` together.

    Parameters
    ----------
    x : array_like
        Input of any shape with at least one axis.
    weight, bias : array_like, optional
        Affine parameters of shape ``x.shape[axis:]``.
    axis : int, default -1
        First normalized axis (ONNX convention).
    eps : float, default 1e-5
        Added to the variance inside the square root.
    out : ndarray, optional
        Receives ``y``.
    return_stats : bool, default False
        Also return ``mean`` and ``rstd``.

    Returns
    -------
    y : ndarray
        Shape of ``x``, float64 (or ``out``).
    mean, rstd : ndarray
        Shape ``x.shape[:axis]``, only with ``return_stats=True``.

    Examples
    --------
    >>> y = layer_norm(np.array([[1.0, 2.0, 3.0]]), eps=0.0)
    >>> np.round(y * np.sqrt(2 / 3), 6)
    array([[-1.,  0.,  1.]])
    """
    _check_eps(eps)
    x = _f64(x)
    axis = _axis(axis, x.ndim)
    axes = tuple(range(axis, x.ndim))
    weight = _param(weight, x.shape[axis:], "weight")
    bias = _param(bias, x.shape[axis:], "bias")
    mean, var = _mean_var(x, axes)
    rstd = 1.0 / np.sqrt(var + eps)
    y = (x - mean) * rstd
    if weight is not None:
        y = y * weight
    if bias is not None:
        y = y + bias
    y = _finish(y, out)
    if return_stats:
        return y, mean.reshape(x.shape[:axis]), rstd.reshape(x.shape[:axis])
    return y


@_quiet
def layer_norm_backward(dy, x, mean, rstd, weight=None, *, axis=-1, out=None):
    r"""Gradients of :func:`layer_norm`.

    With :math:`\hat x = (x - \mu) r`, :math:`g = \gamma\, dy` and means over the normalized axes:

    .. math::

        dx = r \left(g - \operatorname{mean}(g) - \hat x \operatorname{mean}(g \hat x)\right),
        \quad d\gamma = \sum_{\text{leading}} dy\, \hat x,
        \quad d\beta = \sum_{\text{leading}} dy

    Parameters
    ----------
    dy, x : array_like
        Upstream gradient and forward input, same shape.
    mean, rstd : array_like
        Saved statistics, shape ``x.shape[:axis]``.
    weight : array_like, optional
        Shape ``x.shape[axis:]``.
    axis : int, default -1
        First normalized axis.

    Returns
    -------
    dx : ndarray
        Shape of ``x``.
    dweight : ndarray or None
        Shape ``x.shape[axis:]``; ``None`` when ``weight`` is ``None``.
    dbias : ndarray
        Shape ``x.shape[axis:]``, always returned.
    """
    x = _f64(x)
    dy = _f64(dy)
    axis = _axis(axis, x.ndim)
    axes = tuple(range(axis, x.ndim))
    lead = tuple(range(axis))
    stat_shape = x.shape[:axis] + (1,) * (x.ndim - axis)
    mean = _f64(mean).reshape(stat_shape)
    rstd = _f64(rstd).reshape(stat_shape)
    weight = _param(weight, x.shape[axis:], "weight")
    xhat = (x - mean) * rstd
    g = dy if weight is None else dy * weight
    dx = rstd * (g - _mean(g, axes) - xhat * _mean(g * xhat, axes))
    dweight = None if weight is None else (dy * xhat).sum(axis=lead)
    dbias = dy.sum(axis=lead)
    return _finish(dx, out), dweight, dbias


# --------------------------------------------------------------------------- RMS norm


@_quiet
def rms_norm(x, weight=None, *, axis=-1, eps=1e-6, out=None, return_stats=False):
    r"""Root-mean-square normalization over the trailing axes ``x.shape[axis:]``.

    .. math::

        r = 1 / \sqrt{\operatorname{mean}(x^2) + \epsilon}, \quad y = x\, r\, \gamma

    Parameters
    ----------
    x : array_like
        Input of any shape with at least one axis.
    weight : array_like, optional
        Shape ``x.shape[axis:]``.
    axis : int, default -1
        First normalized axis.
    eps : float, default 1e-6
        Added to the mean square inside the square root.
    out : ndarray, optional
        Receives ``y``.
    return_stats : bool, default False
        Also return ``rstd``.

    Returns
    -------
    y : ndarray
        Shape of ``x``.
    rstd : ndarray
        Shape ``x.shape[:axis]``, only with ``return_stats=True``.

    Examples
    --------
    >>> rms_norm(np.array([3.0, -3.0]), eps=0.0)
    array([ 1., -1.])
    """
    _check_eps(eps)
    x = _f64(x)
    axis = _axis(axis, x.ndim)
    axes = tuple(range(axis, x.ndim))
    weight = _param(weight, x.shape[axis:], "weight")
    rstd = 1.0 / np.sqrt(_mean(x * x, axes) + eps)
    y = x * rstd
    if weight is not None:
        y = y * weight
    y = _finish(y, out)
    if return_stats:
        return y, rstd.reshape(x.shape[:axis])
    return y


@_quiet
def rms_norm_backward(dy, x, rstd, weight=None, *, axis=-1, out=None):
    r"""Gradients of :func:`rms_norm`.

    With :math:`g = \gamma\, dy` and means over the normalized axes
    (:math:`\partial r / \partial x_i = -r^3 x_i / K`):

    .. math::

        dx = r\, g - x\, r^3 \operatorname{mean}(g x), \quad
        d\gamma = \sum_{\text{leading}} dy\, x\, r

    Returns
    -------
    dx : ndarray
        Shape of ``x``.
    dweight : ndarray or None
        Shape ``x.shape[axis:]``; ``None`` when ``weight`` is ``None``.
    """
    x = _f64(x)
    dy = _f64(dy)
    axis = _axis(axis, x.ndim)
    axes = tuple(range(axis, x.ndim))
    lead = tuple(range(axis))
    rstd = _f64(rstd).reshape(x.shape[:axis] + (1,) * (x.ndim - axis))
    weight = _param(weight, x.shape[axis:], "weight")
    g = dy if weight is None else dy * weight
    dx = rstd * g - x * rstd**3 * _mean(g * x, axes)
    dweight = None if weight is None else (dy * x * rstd).sum(axis=lead)
    return _finish(dx, out), dweight


# --------------------------------------------------------------------------- residual add


def _residual_sum(x, residual, residual_dtype):
    x, r = _f64(x), _f64(residual)
    if np.broadcast_shapes(x.shape, r.shape) != x.shape:
        raise ValueError(f"residual of shape {r.shape} does not broadcast to x's {x.shape}")
    s = x + r
    if residual_dtype is not None:  # s rounded as fastnorm stores it
        s = s.astype(residual_dtype).astype(np.float64)
    return s


@_quiet
def add_layer_norm(x, residual, weight=None, bias=None, *, axis=-1, eps=1e-5, residual_dtype=None,
                   out=None, residual_out=None, return_stats=False):  # fmt: skip
    """``s = x + residual`` (rounded to ``residual_dtype`` when given), ``y =
    layer_norm(s)``; returns ``(y, s)`` or ``(y, s, mean, rstd)``."""
    s = _residual_sum(x, residual, residual_dtype)
    res = layer_norm(s, weight, bias, axis=axis, eps=eps, out=out, return_stats=return_stats)
    s = _finish(s, residual_out)
    return (res[0], s, res[1], res[2]) if return_stats else (res, s)


@_quiet
def add_layer_norm_backward(dy, ds, s, mean, rstd, weight=None, *, axis=-1, out=None):
    """``dx = layer_norm_backward(dy, s, ...)[0] + ds`` (ds may be None), dweight, dbias."""
    dx, dweight, dbias = layer_norm_backward(dy, s, mean, rstd, weight, axis=axis)
    if ds is not None:
        dx = dx + _f64(ds)
    return _finish(dx, out), dweight, dbias


@_quiet
def add_rms_norm(x, residual, weight=None, *, axis=-1, eps=1e-6, residual_dtype=None, out=None,
                 residual_out=None, return_stats=False):  # fmt: skip
    """``s = x + residual``, ``y = rms_norm(s)``; returns ``(y, s)`` or ``(y, s, rstd)``."""
    s = _residual_sum(x, residual, residual_dtype)
    res = rms_norm(s, weight, axis=axis, eps=eps, out=out, return_stats=return_stats)
    s = _finish(s, residual_out)
    return (res[0], s, res[1]) if return_stats else (res, s)


@_quiet
def add_rms_norm_backward(dy, ds, s, rstd, weight=None, *, axis=-1, out=None):
    """``dx = rms_norm_backward(dy, s, ...)[0] + ds`` (ds may be None), dweight."""
    dx, dweight = rms_norm_backward(dy, s, rstd, weight, axis=axis)
    if ds is not None:
        dx = dx + _f64(ds)
    return _finish(dx, out), dweight


# --------------------------------------------------------------------------- batch norm


def _bn_setup(x, axis):
    x = _f64(x)
    if x.ndim < 2:
        raise ValueError(f"batch_norm expects at least 2 dimensions, got {x.ndim}")
    axis = _axis(axis, x.ndim)
    others = tuple(a for a in range(x.ndim) if a != axis)
    return x, axis, others


@_quiet
def batch_norm(
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
    out=None,
    return_stats=False,
    center_only=False,
):
    r"""Batch normalization: per-channel statistics over every other axis.

    Training mode, with :math:`n` the number of values per channel:

    .. math::

        \mu_c = \operatorname{mean}(x_{\cdot c \cdot}), \quad
        \sigma_c^2 = \operatorname{mean}((x_{\cdot c \cdot} - \mu_c)^2), \quad
        y = (x - \mu_c)\, r_c\, \gamma_c + \beta_c, \quad r_c = 1 / \sqrt{\sigma_c^2 + \epsilon}

    and, when given, the running statistics are updated in place (PyTorch convention):

    .. math::

        \text{running\_mean} \leftarrow (1 - m)\,\text{running\_mean} + m\,\mu, \quad
        \text{running\_var} \leftarrow (1 - m)\,\text{running\_var}
            + m\,\sigma^2 \frac{n}{n - 1}

    Evaluation mode (``training=False``) uses :math:`\mu = \text{running\_mean}` and
    :math:`r = 1/\sqrt{\text{running\_var} + \epsilon}`.

    Parameters
    ----------
    x : array_like
        At least 2 dimensions.
    weight, bias : array_like, optional
        Shape ``(C,)`` with ``C = x.shape[axis]``.
    running_mean, running_var : ndarray, optional
        Shape ``(C,)``; updated in place in training mode, required in evaluation mode.
    training : bool, default True
    momentum : float, default 0.1
        In ``[0, 1]``.
    eps : float, default 1e-5
    axis : int, default 1
        Channel axis; any position, negative allowed (``-1`` for channels-last).
    out : ndarray, optional
        Receives ``y``.
    return_stats : bool, default False
        Also return ``mean`` and ``rstd`` (the ones used to normalize).
    center_only : bool, default False
        Mean-only batch norm: :math:`y = x - \mu_c + \beta_c` (no weight allowed, no
        variance; ``running_var`` is ignored, ``rstd`` is returned as ones).

    Returns
    -------
    y : ndarray
        Shape of ``x``.
    mean, rstd : ndarray
        Shape ``(C,)``, only with ``return_stats=True``.

    Raises
    ------
    ValueError
        In training mode with exactly one value per channel; in evaluation mode without running
        statistics.

    Notes
    -----
    With an empty batch (``n = 0``) the statistics are NaN and the running statistics are left
    untouched.

    Examples
    --------
    >>> x = np.array([[1.0, 10.0], [3.0, 30.0]])
    >>> batch_norm(x, eps=0.0)
    array([[-1., -1.],
           [ 1.,  1.]])
    """
    _check_eps(eps)
    if not 0.0 <= momentum <= 1.0:
        raise ValueError(f"momentum must be in [0, 1], got {momentum!r}")
    x, axis, others = _bn_setup(x, axis)
    c = x.shape[axis]
    n = _count(x.shape, others)
    weight = _param(weight, (c,), "weight")
    bias = _param(bias, (c,), "bias")
    if center_only:
        return _bn_center(x, axis, others, n, weight, bias, running_mean, training, momentum,
                          out, return_stats)
    for name, r in (("running_mean", running_mean), ("running_var", running_var)):
        if r is not None and np.shape(r) != (c,):
            raise ValueError(f"{name} must have shape {(c,)}, got {np.shape(r)}")
    if training:
        if n == 1:
            raise ValueError(f"expected more than 1 value per channel when training, got {n}")
        mean, var = _mean_var(x, others)
        mean, var = mean.reshape(c), var.reshape(c)
        if n > 1:
            if running_mean is not None:
                running_mean[...] = (1.0 - momentum) * _f64(running_mean) + momentum * mean
            if running_var is not None:
                unbiased = var * (n / (n - 1))
                running_var[...] = (1.0 - momentum) * _f64(running_var) + momentum * unbiased
    else:
        if running_mean is None or running_var is None:
            raise ValueError("training=False needs running_mean and running_var")
        mean = _f64(running_mean).copy()
        var = _f64(running_var)
    rstd = 1.0 / np.sqrt(var + eps)
    bshape = _channel_shape(x.ndim, axis)
    y = (x - mean.reshape(bshape)) * rstd.reshape(bshape)
    if weight is not None:
        y = y * weight.reshape(bshape)
    if bias is not None:
        y = y + bias.reshape(bshape)
    y = _finish(y, out)
    if return_stats:
        return y, mean, rstd
    return y


def _bn_center(x, axis, others, n, weight, bias, running_mean, training, momentum, out,
               return_stats):
    """batch_norm(center_only=True): y = x - mean + bias; the running mean alone."""
    c = x.shape[axis]
    if weight is not None:
        raise ValueError("center_only=True takes no weight")
    if training:
        mean = _mean(x, others).reshape(c)
        if n > 0 and running_mean is not None:
            running_mean[...] = (1.0 - momentum) * _f64(running_mean) + momentum * mean
    else:
        if running_mean is None:
            raise ValueError("center_only=True with training=False needs running_mean")
        mean = _f64(running_mean).copy()
    bshape = _channel_shape(x.ndim, axis)
    y = x - mean.reshape(bshape)
    if bias is not None:
        y = y + bias.reshape(bshape)
    y = _finish(y, out)
    return (y, mean, np.ones(c)) if return_stats else y


@_quiet
def batch_norm_backward(dy, x, mean, rstd, weight=None, *, axis=1, training=True, out=None,
                        center_only=False):
    r"""Gradients of :func:`batch_norm`.

    With :math:`\hat x = (x - \mu) r`, :math:`g = \gamma\, dy` and sums over the :math:`n` values
    of each channel, in training mode

    .. math::

        dx = \frac{r}{n}\left(n g - \sum g - \hat x \sum g \hat x\right),

    and in evaluation mode (the statistics are constants) :math:`dx = g\, r`. In both modes

    .. math::

        d\gamma_c = \sum dy\, \hat x, \quad d\beta_c = \sum dy.

    ``center_only=True`` (mean-only batch norm): :math:`dx = dy - \operatorname{mean}(dy)`
    (training) or :math:`dy` (evaluation); ``x``, ``mean`` and ``rstd`` are not used.

    Returns
    -------
    dx : ndarray
        Shape of ``x``.
    dweight : ndarray or None
        Shape ``(C,)``; ``None`` when ``weight`` is ``None``.
    dbias : ndarray
        Shape ``(C,)``.
    """
    if center_only:  # y = x - mean(x) + bias: x, mean and rstd are not needed
        if weight is not None:
            raise ValueError("center_only=True takes no weight")
        dy, axis, others = _bn_setup(dy, axis)
        dx = dy - _mean(dy, others) if training else dy.copy()
        return _finish(dx, out), None, dy.sum(axis=others)
    x, axis, others = _bn_setup(x, axis)
    dy = _f64(dy)
    c = x.shape[axis]
    bshape = _channel_shape(x.ndim, axis)
    mean = _f64(mean).reshape(bshape)
    rstd = _f64(rstd).reshape(bshape)
    weight = _param(weight, (c,), "weight")
    xhat = (x - mean) * rstd
    g = dy if weight is None else dy * weight.reshape(bshape)
    if training:
        dx = rstd * (g - _mean(g, others) - xhat * _mean(g * xhat, others))
    else:
        dx = g * rstd
    dweight = None if weight is None else (dy * xhat).sum(axis=others)
    dbias = dy.sum(axis=others)
    return _finish(dx, out), dweight, dbias


@_quiet
def batch_moments(x, axis=1):
    r"""Per-channel count, mean and M2 (sum of squared deviations) over every other axis.

    Returns
    -------
    count : ndarray of int64, shape ``(C,)``
    mean : ndarray, shape ``(C,)``
        NaN for an empty batch.
    m2 : ndarray, shape ``(C,)``
        :math:`\sum (x - \mu_c)^2`; 0 for an empty batch.
    """
    x, axis, others = _bn_setup(x, axis)
    c = x.shape[axis]
    n = _count(x.shape, others)
    mean = _mean(x, others)
    m2 = ((x - mean) ** 2).sum(axis=others) if n else np.zeros(c)
    return np.full(c, n, dtype=np.int64), mean.reshape(c), m2.reshape(c)


@_quiet
def merge_moments(*moments):
    r"""The moments of several batches put together, from ``(count, mean, m2)`` triples.

    Computed directly rather than pairwise: with :math:`n = \sum n_i`,

    .. math::

        \mu = \frac{1}{n}\sum n_i \mu_i, \quad
        M2 = \sum \big(M2_i + n_i (\mu_i - \mu)^2\big),

    over the parts with :math:`n_i > 0`; NaN mean and zero M2 where :math:`n = 0`.
    """
    if not moments:
        raise ValueError("merge_moments needs at least one (count, mean, m2) triple")
    parts = [tuple(_f64(a) for a in m) for m in moments]
    shape = parts[0][0].shape
    if any(a.shape != shape for p in parts for a in p):
        raise ValueError("merge_moments: every array must have one shape")
    n = sum(p[0] for p in parts)
    mean = sum(np.where(c > 0, c * mu, 0.0) for c, mu, _ in parts) / n
    m2 = sum(np.where(c > 0, q + c * (mu - mean) ** 2, 0.0) for c, mu, q in parts)
    return n.astype(np.int64), np.where(n > 0, mean, np.nan), np.where(n > 0, m2, 0.0)


# --------------------------------------------------------------------------- group / instance norm


def _grouped(x, axis, num_groups, group_size):
    """View ``x`` as ``(N, G, C // G, *spatial)`` with the channel axis moved next to N."""
    xm = np.moveaxis(x, axis, 1)
    return xm.reshape((xm.shape[0], num_groups, group_size) + xm.shape[2:])


def _ungrouped(a, shape, axis):
    moved = (shape[0], shape[axis]) + tuple(s for i, s in enumerate(shape) if i not in (0, axis))
    return np.moveaxis(a.reshape(moved), 1, axis)


def _gn_setup(x, axis, num_groups):
    x = _f64(x)
    if x.ndim < 2:
        raise ValueError(f"group_norm expects at least 2 dimensions, got {x.ndim}")
    axis = _axis(axis, x.ndim)
    if axis == 0:
        raise ValueError("the channel axis cannot be axis 0, the batch axis")
    c = x.shape[axis]
    num_groups = operator.index(num_groups)
    if c == 0 and num_groups == 0:
        return x, axis, 0, 1
    if num_groups <= 0 or c % num_groups:
        raise ValueError(
            f"num_groups must be positive and divide the {c} channels, got {num_groups}"
        )
    return x, axis, num_groups, c // num_groups


def _gn_forward(x, num_groups, weight, bias, axis, eps, out, return_stats):
    _check_eps(eps)
    x, axis, groups, size = _gn_setup(x, axis, num_groups)
    c = x.shape[axis]
    weight = _param(weight, (c,), "weight")
    bias = _param(bias, (c,), "bias")
    xg = _grouped(x, axis, groups, size)
    red = tuple(range(2, xg.ndim))
    mean, var = _mean_var(xg, red)
    rstd = 1.0 / np.sqrt(var + eps)
    y = _ungrouped((xg - mean) * rstd, x.shape, axis)
    bshape = _channel_shape(x.ndim, axis)
    if weight is not None:
        y = y * weight.reshape(bshape)
    if bias is not None:
        y = y + bias.reshape(bshape)
    y = _finish(y, out)
    if return_stats:
        stat_shape = (x.shape[0], groups)
        return y, mean.reshape(stat_shape), rstd.reshape(stat_shape)
    return y


def _gn_backward(dy, x, mean, rstd, num_groups, weight, axis):
    x, axis, groups, size = _gn_setup(x, axis, num_groups)
    dy = _f64(dy)
    c = x.shape[axis]
    weight = _param(weight, (c,), "weight")
    others = tuple(a for a in range(x.ndim) if a != axis)
    bshape = _channel_shape(x.ndim, axis)
    g = dy if weight is None else dy * weight.reshape(bshape)
    xg = _grouped(x, axis, groups, size)
    gg = _grouped(g, axis, groups, size)
    red = tuple(range(2, xg.ndim))
    stat_shape = (x.shape[0], groups) + (1,) * (xg.ndim - 2)
    mean = _f64(mean).reshape(stat_shape)
    rstd = _f64(rstd).reshape(stat_shape)
    xhat_g = (xg - mean) * rstd
    dx_g = rstd * (gg - _mean(gg, red) - xhat_g * _mean(gg * xhat_g, red))
    dx = _ungrouped(dx_g, x.shape, axis)
    xhat = _ungrouped(xhat_g, x.shape, axis)
    dweight = None if weight is None else (dy * xhat).sum(axis=others)
    dbias = dy.sum(axis=others)
    return dx, dweight, dbias


@_quiet
def group_norm(
    x, num_groups, weight=None, bias=None, *, axis=1, eps=1e-5, out=None, return_stats=False
):
    r"""Group normalization.

    The ``C = x.shape[axis]`` channels are split into ``G = num_groups`` consecutive blocks of
    ``C // G`` channels. For each sample ``n`` (axis 0) and group ``k`` the statistics run over the
    channels of the group and every spatial position (all axes but 0 and ``axis``):

    .. math::

        \mu_{nk} = \operatorname{mean}(x_{n,k}), \quad
        \sigma_{nk}^2 = \operatorname{mean}((x_{n,k} - \mu_{nk})^2), \quad
        y = (x - \mu_{nk})\, r_{nk}\, \gamma_c + \beta_c,\quad
        r_{nk} = 1 / \sqrt{\sigma_{nk}^2 + \epsilon}

    Parameters
    ----------
    x : array_like
        Shape ``(N, ..., C, ...)``, at least 2 dimensions.
    num_groups : int
        Positive divisor of ``C``.
    weight, bias : array_like, optional
        Shape ``(C,)``.
    axis : int, default 1
        Channel axis, not 0 (``-1`` for channels-last).
    eps : float, default 1e-5
    out : ndarray, optional
        Receives ``y``.
    return_stats : bool, default False
        Also return ``mean`` and ``rstd``.

    Returns
    -------
    y : ndarray
        Shape of ``x``.
    mean, rstd : ndarray
        Shape ``(N, G)``, only with ``return_stats=True``.

    Examples
    --------
    >>> x = np.array([[1.0, 3.0, 10.0, 30.0]])
    >>> group_norm(x, 2, eps=0.0)
    array([[-1.,  1., -1.,  1.]])
    """
    return _gn_forward(x, num_groups, weight, bias, axis, eps, out, return_stats)


@_quiet
def group_norm_backward(dy, x, mean, rstd, num_groups, weight=None, *, axis=1, out=None):
    r"""Gradients of :func:`group_norm`.

    Within each (sample, group) block, with :math:`\hat x = (x - \mu) r` and
    :math:`g = \gamma_c\, dy`:

    .. math::

        dx = r\left(g - \operatorname{mean}(g) - \hat x \operatorname{mean}(g \hat x)\right),
        \quad d\gamma_c = \sum dy\, \hat x, \quad d\beta_c = \sum dy

    the last two summed over every axis but the channel axis.

    Returns
    -------
    dx : ndarray
        Shape of ``x``.
    dweight : ndarray or None
        Shape ``(C,)``; ``None`` when ``weight`` is ``None``.
    dbias : ndarray
        Shape ``(C,)``.
    """
    dx, dweight, dbias = _gn_backward(dy, x, mean, rstd, num_groups, weight, axis)
    return _finish(dx, out), dweight, dbias


@_quiet
def instance_norm(x, weight=None, bias=None, *, axis=1, eps=1e-5, out=None, return_stats=False):
    r"""Instance normalization: :func:`group_norm` with one group per channel.

    .. math::

        y = (x - \mu_{nc})\, r_{nc}\, \gamma_c + \beta_c

    with the statistics of each (sample, channel) over the spatial positions.

    Returns
    -------
    y : ndarray
        Shape of ``x``.
    mean, rstd : ndarray
        Shape ``(N, C)``, only with ``return_stats=True``.

    Examples
    --------
    >>> x = np.array([[[1.0, 3.0], [10.0, 30.0]]])
    >>> instance_norm(x, eps=0.0)
    array([[[-1.,  1.],
            [-1.,  1.]]])
    """
    x = _f64(x)
    c = x.shape[_axis(axis, x.ndim)] if x.ndim >= 2 else 0
    return _gn_forward(x, c, weight, bias, axis, eps, out, return_stats)


@_quiet
def instance_norm_backward(dy, x, mean, rstd, weight=None, *, axis=1, out=None):
    r"""Gradients of :func:`instance_norm` (:func:`group_norm_backward` with ``G = C``).

    Returns
    -------
    dx : ndarray
        Shape of ``x``.
    dweight : ndarray or None
        Shape ``(C,)``; ``None`` when ``weight`` is ``None``.
    dbias : ndarray
        Shape ``(C,)``.
    """
    x = _f64(x)
    c = x.shape[_axis(axis, x.ndim)] if x.ndim >= 2 else 0
    dx, dweight, dbias = _gn_backward(dy, x, mean, rstd, c, weight, axis)
    return _finish(dx, out), dweight, dbias


# --------------------------------------------------------------------------- iterative whitening


def _t(a):
    return np.swapaxes(a, -1, -2)


def _iw_setup(x, axis, group_size, iterations):
    """x as float64, the channel axis, the (C, m) matrix of x and the group stacks: one
    ``(start, k, d)`` triple per run of ``k`` consecutive groups of ``d`` channels each."""
    x = _f64(x)
    if x.ndim < 2:
        raise ValueError(f"iter_norm expects at least 2 dimensions, got {x.ndim}")
    axis = _axis(axis, x.ndim)
    group_size = operator.index(group_size)
    if group_size <= 0:
        raise ValueError(f"group_size must be positive, got {group_size}")
    if operator.index(iterations) < 0:
        raise ValueError(f"iterations must be >= 0, got {iterations!r}")
    c = x.shape[axis]
    m = _count(x.shape, tuple(a for a in range(x.ndim) if a != axis))
    xm = np.moveaxis(x, axis, 0).reshape(c, m)
    full, rem = divmod(c, group_size)
    stacks = [(0, full, group_size)] if full else []
    if rem:
        stacks.append((full * group_size, 1, rem))
    return x, axis, c, xm, stacks, full + (rem > 0)


def _iw_block(a, start, k, d):
    """Rows ``start : start + k * d`` of a (C, m) matrix as a (k, d, m) stack."""
    return a[start : start + k * d].reshape(k, d, a.shape[1])


def _iw_unmatrix(a, shape, axis):
    moved = (shape[axis],) + tuple(s for i, s in enumerate(shape) if i != axis)
    return np.moveaxis(a.reshape(moved), 0, axis)


def _iw_whiten(xc, eps, iterations):
    """Sigma, trace, S, the Newton iterates P_0..P_T and W for a (k, d, m) centred stack."""
    d, m = xc.shape[-2:]
    eye = np.eye(d)
    sigma = xc @ _t(xc) / m + eps * eye
    tr = np.trace(sigma, axis1=-2, axis2=-1)[:, None, None]
    s = sigma / tr
    ps = [np.broadcast_to(eye, sigma.shape)]
    for _ in range(iterations):
        p = ps[-1]
        ps.append(1.5 * p - 0.5 * (p @ p @ p @ s))
    return sigma, tr, s, ps, ps[-1] / np.sqrt(tr)


def _iw_running(running, c, groups, group_size, name):
    shape = (c,) if name == "running_mean" else (groups, group_size, group_size)
    if running is not None and np.shape(running) != shape:
        raise ValueError(f"{name} must have shape {shape}, got {np.shape(running)}")


@_quiet
def iter_norm(
    x,
    weight=None,
    bias=None,
    running_mean=None,
    running_whitening=None,
    *,
    group_size=16,
    iterations=5,
    training=True,
    momentum=0.1,
    eps=1e-5,
    axis=1,
    out=None,
    return_stats=False,
):
    r"""IterNorm: iterative whitening of groups of channels (Huang et al., 2019).

    The ``C = x.shape[axis]`` channels are split into ``G = ceil(C / group_size)`` consecutive
    groups of ``d = group_size`` channels (the last one has ``C - (G - 1) * group_size`` when
    ``group_size`` does not divide ``C``). With :math:`m` the number of values per channel (every
    other axis) and each group's centred values :math:`X_c = x - \mu` as a :math:`d \times m`
    matrix, in training mode

    .. math::

        \Sigma = X_c X_c^\top / m + \epsilon I, \quad
        S = \Sigma / \operatorname{tr}\Sigma, \quad
        P_0 = I, \quad P_k = \tfrac32 P_{k-1} - \tfrac12 P_{k-1}^3 S \ (k = 1..T), \\
        W = P_T / \sqrt{\operatorname{tr}\Sigma}, \quad
        y = (W X_c)_c\, \gamma_c + \beta_c

    (Newton's iteration for :math:`S^{-1/2}`; ``T = iterations``) and, when given, the running
    statistics are updated in place:
    ``running_mean <- (1 - momentum) * running_mean + momentum * mu`` and likewise
    ``running_whitening`` with :math:`W`. Evaluation mode (``training=False``) uses
    :math:`y = W_\text{run} (x - \text{running\_mean})` per group, then the affine.
    With ``group_size=1`` this is :func:`batch_norm` (:math:`W = r`).

    Parameters
    ----------
    x : array_like
        At least 2 dimensions.
    weight, bias : array_like, optional
        Shape ``(C,)``.
    running_mean : ndarray, optional
        Shape ``(C,)``.
    running_whitening : ndarray, optional
        Shape ``(G, group_size, group_size)``; a last group of ``d' < group_size`` channels
        occupies its top-left ``d' x d'`` block. Both running statistics are updated in place in
        training mode and required in evaluation mode.
    group_size : int, default 16
        Channels per group, positive.
    iterations : int, default 5
        Newton iterations ``T``, >= 0.
    training : bool, default True
    momentum : float, default 0.1
        In ``[0, 1]``.
    eps : float, default 1e-5
        Added to the diagonal of the covariance.
    axis : int, default 1
        Channel axis (``-1`` for channels-last).
    out : ndarray, optional
        Receives ``y``.
    return_stats : bool, default False
        Also return ``mean`` and ``whitening`` (the ones used to normalize).

    Returns
    -------
    y : ndarray
        Shape of ``x``.
    mean : ndarray
        Shape ``(C,)``, only with ``return_stats=True``.
    whitening : ndarray
        Shape ``(G, group_size, group_size)``, the last group's matrix in the top-left block
        and zeros elsewhere; only with ``return_stats=True``.

    Raises
    ------
    ValueError
        In evaluation mode without both running statistics.

    Notes
    -----
    With an empty batch (``m = 0``) the statistics are NaN and the running statistics are left
    untouched.

    Examples
    --------
    >>> x = np.array([[1.0, 10.0], [3.0, 30.0]])
    >>> iter_norm(x, group_size=1, eps=0.0)
    array([[-1., -1.],
           [ 1.,  1.]])
    """
    _check_eps(eps)
    if not 0.0 <= momentum <= 1.0:
        raise ValueError(f"momentum must be in [0, 1], got {momentum!r}")
    x, axis, c, xm, stacks, groups = _iw_setup(x, axis, group_size, iterations)
    weight = _param(weight, (c,), "weight")
    bias = _param(bias, (c,), "bias")
    _iw_running(running_mean, c, groups, group_size, "running_mean")
    _iw_running(running_whitening, c, groups, group_size, "running_whitening")
    if training:
        mean = _mean(xm, (1,)).reshape(c)
        whitening = np.zeros((groups, group_size, group_size))
    else:
        if running_mean is None or running_whitening is None:
            raise ValueError("training=False needs running_mean and running_whitening")
        mean = _f64(running_mean).copy()
        whitening = np.zeros((groups, group_size, group_size))
        for start, k, d in stacks:  # the groups' blocks (a smaller last group's top-left)
            g0 = start // group_size
            whitening[g0 : g0 + k, :d, :d] = _f64(running_whitening)[g0 : g0 + k, :d, :d]
    xc = xm - mean[:, None]
    yhat = np.empty_like(xm)
    for start, k, d in stacks:
        g0 = start // group_size
        block = _iw_block(xc, start, k, d)
        if training:
            whitening[g0 : g0 + k, :d, :d] = _iw_whiten(block, eps, iterations)[-1]
        w = whitening[g0 : g0 + k, :d, :d]
        yhat[start : start + k * d] = (w @ block).reshape(k * d, -1)
    if training and xm.shape[1] > 0:
        if running_mean is not None:
            running_mean[...] = (1.0 - momentum) * _f64(running_mean) + momentum * mean
        if running_whitening is not None:
            keep = 1.0 - momentum
            running_whitening[...] = keep * _f64(running_whitening) + momentum * whitening
    y = _iw_unmatrix(yhat, x.shape, axis)
    bshape = _channel_shape(x.ndim, axis)
    if weight is not None:
        y = y * weight.reshape(bshape)
    if bias is not None:
        y = y + bias.reshape(bshape)
    y = _finish(y, out)
    if return_stats:
        return y, mean, whitening
    return y


def _iw_backward_block(xc, gy, eps, iterations):
    """Training-mode (dx, y_hat) of one (k, d, m) stack: reverse mode through the forward."""
    m = xc.shape[-1]
    sigma, tr, s, ps, w = _iw_whiten(xc, eps, iterations)
    dw = gy @ _t(xc)
    dxc = _t(w) @ gy
    rt = np.sqrt(tr)
    dp = dw / rt
    dtr = -0.5 * (dw * ps[-1]).sum(axis=(-2, -1), keepdims=True) / (tr * rt)
    ds = np.zeros_like(s)
    for p in reversed(ps[:-1]):  # dp is the gradient of the iterate after p
        p2 = p @ p
        ds = ds - 0.5 * _t(p2 @ p) @ dp
        dp = 1.5 * dp - 0.5 * (dp @ _t(p2 @ s) + _t(p) @ dp @ _t(p @ s) + _t(p2) @ dp @ _t(s))
    dtr = dtr - (ds * sigma).sum(axis=(-2, -1), keepdims=True) / tr**2
    dsigma = ds / tr + dtr * np.eye(s.shape[-1])
    dxc = dxc + (dsigma + _t(dsigma)) @ xc / m
    return dxc - _mean(dxc, (-1,)), w @ xc


@_quiet
def iter_norm_backward(dy, x, mean, weight=None, *, group_size=16, iterations=5, eps=1e-5, axis=1,
                       training=True, whitening=None, out=None):  # fmt: skip
    r"""Gradients of :func:`iter_norm`.

    In training mode the exact gradient through the forward's operations, Newton iterations
    included (not that of an exact whitening :math:`\Sigma^{-1/2}`): per group, with
    :math:`G = \gamma\, dy` as a :math:`d \times m` matrix, :math:`dW = G X_c^\top` and
    :math:`dX_c = W^\top G`, then back through :math:`W = P_T / \sqrt{\operatorname{tr}\Sigma}`,

    .. math::

        dP_{k-1} = \tfrac32 dP_k - \tfrac12 \left(dP_k (P^2 S)^\top + P^\top dP_k (P S)^\top
            + (P^2)^\top dP_k S^\top\right), \quad dS \mathrel{+}= -\tfrac12 (P^3)^\top dP_k

    (:math:`P = P_{k-1}`), :math:`S = \Sigma / \operatorname{tr}\Sigma`, and
    :math:`dX_c \mathrel{+}= (d\Sigma + d\Sigma^\top) X_c / m`,
    :math:`dx = dX_c - \operatorname{mean}(dX_c)` per channel. ``mean`` is the forward's batch
    mean, but :math:`X_c` and :math:`\Sigma` are recomputed from ``x`` about its exact batch
    mean (a saved mean rounded to float32 would bias Σ by δδᵀ); ``whitening`` is not used.

    In evaluation mode the statistics are constants: ``mean`` is the running mean,
    ``whitening`` (required, shape ``(G, group_size, group_size)``) the running whitening, and
    :math:`dx = W^\top (\gamma\, dy)` per group. In both modes

    .. math::

        d\gamma_c = \sum dy\, \hat y, \quad d\beta_c = \sum dy

    with :math:`\hat y = W X_c` the output before the affine.

    Returns
    -------
    dx : ndarray
        Shape of ``x``.
    dweight : ndarray or None
        Shape ``(C,)``; ``None`` when ``weight`` is ``None``.
    dbias : ndarray
        Shape ``(C,)``.

    Raises
    ------
    ValueError
        In evaluation mode without ``whitening``.
    """
    _check_eps(eps)
    x, axis, c, xm, stacks, groups = _iw_setup(x, axis, group_size, iterations)
    dy = _f64(dy)
    if dy.shape != x.shape:
        raise ValueError(f"dy must have the shape of x, {x.shape}, got {dy.shape}")
    weight = _param(weight, (c,), "weight")
    mean = _param(mean, (c,), "mean")
    if not training:
        if whitening is None:
            raise ValueError("training=False needs whitening (the running whitening)")
        whitening = _param(whitening, (groups, group_size, group_size), "whitening")
    others = tuple(a for a in range(x.ndim) if a != axis)
    bshape = _channel_shape(x.ndim, axis)
    g = dy if weight is None else dy * weight.reshape(bshape)
    gm = np.moveaxis(g, axis, 0).reshape(xm.shape)
    # training: about x's own batch mean, which the forward computed (the saved mean may be
    # rounded, to float32 say, and would otherwise leave a spurious δδᵀ in Σ)
    xc = xm - (_mean(xm, (1,)) if training else mean[:, None])
    dxm = np.empty_like(xm)
    yhat = np.empty_like(xm)
    for start, k, d in stacks:
        rows = slice(start, start + k * d)
        block, gblock = _iw_block(xc, start, k, d), _iw_block(gm, start, k, d)
        if training:
            dxb, yb = _iw_backward_block(block, gblock, eps, iterations)
        else:
            g0 = start // group_size
            w = whitening[g0 : g0 + k, :d, :d]
            dxb, yb = _t(w) @ gblock, w @ block
        dxm[rows] = dxb.reshape(k * d, -1)
        yhat[rows] = yb.reshape(k * d, -1)
    dx = _iw_unmatrix(dxm, x.shape, axis)
    yhat = _iw_unmatrix(yhat, x.shape, axis)
    dweight = None if weight is None else (dy * yhat).sum(axis=others)
    dbias = dy.sum(axis=others)
    return _finish(dx, out), dweight, dbias


# --------------------------------------------------------------------------- L2 normalize


@_quiet
def l2_normalize(x, *, axis=-1, eps=1e-12, out=None, return_stats=False):
    r"""Divide by the Euclidean norm along one axis.

    .. math::

        \lVert x \rVert = \sqrt{\textstyle\sum x_i^2}, \quad
        y = x / \max(\lVert x \rVert, \epsilon)

    A zero vector gives a zero output.

    Parameters
    ----------
    x : array_like
    axis : int, default -1
        The single normalized axis.
    eps : float, default 1e-12
        Lower bound of the divisor.
    out : ndarray, optional
        Receives ``y``.
    return_stats : bool, default False
        Also return ``norm``.

    Returns
    -------
    y : ndarray
        Shape of ``x``.
    norm : ndarray
        The unclamped norm, shape of ``x`` without ``axis``; only with ``return_stats=True``.

    Examples
    --------
    >>> l2_normalize(np.array([3.0, 4.0]))
    array([0.6, 0.8])
    """
    _check_eps(eps)
    x = _f64(x)
    axis = _axis(axis, x.ndim)
    norm = np.sqrt((x * x).sum(axis=axis))
    y = x / np.expand_dims(np.maximum(norm, eps), axis)
    y = _finish(y, out)
    if return_stats:
        return y, norm
    return y


@_quiet
def l2_normalize_backward(dy, y, norm, *, axis=-1, eps=1e-12, out=None):
    r"""Gradient of :func:`l2_normalize` from its output.

    Where :math:`\lVert x \rVert > \epsilon`, :math:`y = x / \lVert x \rVert` and

    .. math::

        dx = \left(dy - y \textstyle\sum (dy\, y)\right) / \lVert x \rVert;

    elsewhere the divisor is the constant :math:`\epsilon` and :math:`dx = dy / \epsilon`,
    which keeps the gradient of a zero vector finite.

    Parameters
    ----------
    dy, y : array_like
        Upstream gradient and forward output, same shape.
    norm : array_like
        The saved unclamped norm, shape of ``y`` without ``axis``.

    Returns
    -------
    dx : ndarray
        Shape of ``y``.
    """
    dy = _f64(dy)
    y = _f64(y)
    axis = _axis(axis, y.ndim)
    norm = np.expand_dims(_f64(norm), axis)
    big = (norm > eps) | np.isnan(norm)  # a NaN norm gives NaN gradients
    proj = (dy - y * (dy * y).sum(axis=axis, keepdims=True)) / np.where(big, norm, 1.0)
    return _finish(np.where(big, proj, dy / eps), out)


# --------------------------------------------------------------------------- weight norm


def _wn_setup(v, g, axis):
    v = _f64(v)
    if v.ndim == 0:
        raise ValueError("weight_norm expects at least 1 dimension")
    axis = _axis(axis, v.ndim)
    c = v.shape[axis]
    g = _f64(g)
    keep = tuple(c if i == axis else 1 for i in range(v.ndim))
    if g.shape not in ((c,), keep):
        raise ValueError(f"g must have shape {(c,)} or {keep}, got {g.shape}")
    others = tuple(a for a in range(v.ndim) if a != axis)
    return v, g, axis, others, _channel_shape(v.ndim, axis)


@_quiet
def weight_norm(v, g, *, axis=0, return_stats=False):
    r"""Weight normalization: :math:`w = g\, v / \lVert v \rVert` per slice along ``axis``.

    .. math::

        \lVert v \rVert_c = \sqrt{\textstyle\sum_{\text{other axes}} v^2}, \quad
        w = g_c\, v / \max(\lVert v \rVert_c, \text{tiny})

    with ``tiny = np.finfo(np.float64).tiny``: a zero slice of ``v`` gives a zero slice of ``w``
    (and zero gradients, see :func:`weight_norm_backward`).

    Parameters
    ----------
    v : array_like
        The direction, at least 1 dimension.
    g : array_like
        The magnitude, shape ``(v.shape[axis],)`` or ``v.ndim`` dimensions with ones except at
        ``axis``.
    axis : int, default 0
        The axis that is not reduced (PyTorch's ``dim``).
    return_stats : bool, default False
        Also return ``norm``.

    Returns
    -------
    w : ndarray
        Shape of ``v``.
    norm : ndarray
        The unclamped norm, shape ``(v.shape[axis],)``; only with ``return_stats=True``.

    Examples
    --------
    >>> weight_norm(np.array([[3.0, 4.0]]), np.array([10.0]))
    array([[6., 8.]])
    """
    v, g, axis, others, bshape = _wn_setup(v, g, axis)
    norm = np.sqrt((v * v).sum(axis=others))
    w = g.reshape(bshape) * v / np.maximum(norm, _TINY).reshape(bshape)
    if return_stats:
        return w, norm
    return w


@_quiet
def weight_norm_backward(dw, v, g, norm, *, axis=0, out=None):
    r"""Gradients of :func:`weight_norm`.

    With sums over every axis but ``axis`` and :math:`\lVert v \rVert` the saved norm:

    .. math::

        dg = \frac{\sum dw\, v}{\lVert v \rVert}, \quad
        dv = \frac{g}{\lVert v \rVert}\left(dw - v \frac{dg}{\lVert v \rVert}\right)

    For a slice with ``norm == 0`` the function is not differentiable; its ``dv`` and ``dg``
    are defined as 0.

    Returns
    -------
    dv : ndarray
        Shape of ``v``.
    dg : ndarray
        Shape of ``g`` as passed.
    """
    v, g, axis, others, bshape = _wn_setup(v, g, axis)
    dw = _f64(dw)
    norm = _f64(norm)
    zero = norm == 0
    safe = np.where(zero, 1.0, norm)
    dg = np.where(zero, 0.0, (dw * v).sum(axis=others) / safe)
    scale = np.where(zero, 0.0, g.reshape(-1) / safe).reshape(bshape)
    dv = scale * (dw - v * (dg / safe).reshape(bshape))
    return _finish(dv, out), dg.reshape(g.shape)


# --------------------------------------------------------------------------- cosine norm


def _rows(a, name):
    a = _f64(a)
    if a.ndim != 2:
        raise ValueError(f"{name} must have 2 dimensions, got {a.ndim}")
    return a


@_quiet
def cosine_norm(x, w, *, eps=1e-12, return_stats=False):
    r"""Cosine normalization: the cosine similarity of every row of ``x`` with every row of ``w``.

    .. math::

        y_{nm} = \operatorname{clip}\left(\frac{x_n \cdot w_m}
            {\max(\lVert x_n \rVert, \epsilon)\,\max(\lVert w_m \rVert, \epsilon)},
            -1, 1\right)

    Parameters
    ----------
    x : array_like
        Shape ``(N, D)``.
    w : array_like
        Shape ``(M, D)``.
    eps : float, default 1e-12
    return_stats : bool, default False
        Also return the unclamped norms.

    Returns
    -------
    y : ndarray
        Shape ``(N, M)``, in ``[-1, 1]``.
    x_norm, w_norm : ndarray
        Shapes ``(N,)`` and ``(M,)``, only with ``return_stats=True``.

    Examples
    --------
    >>> cosine_norm(np.array([[1.0, 0.0]]), np.array([[2.0, 0.0], [0.0, 5.0]]))
    array([[1., 0.]])
    """
    _check_eps(eps)
    x = _rows(x, "x")
    w = _rows(w, "w")
    if x.shape[1] != w.shape[1]:
        raise ValueError(f"x and w need the same number of columns, got {x.shape} and {w.shape}")
    xh, x_norm = l2_normalize(x, axis=1, eps=eps, return_stats=True)
    wh, w_norm = l2_normalize(w, axis=1, eps=eps, return_stats=True)
    y = np.clip(xh @ wh.T, -1.0, 1.0)
    if return_stats:
        return y, x_norm, w_norm
    return y


@_quiet
def cosine_norm_backward(dy, x, w, x_norm, w_norm, *, eps=1e-12):
    r"""Gradients of :func:`cosine_norm` (the clip is treated as the identity).

    With :math:`\hat x = x / \max(\lVert x \rVert, \epsilon)` and :math:`\hat w` likewise,

    .. math::

        d\hat x = dy\, \hat w, \quad d\hat w = dy^\top \hat x,

    then :func:`l2_normalize_backward` row by row for ``dx`` and ``dw``.

    Returns
    -------
    dx : ndarray
        Shape ``(N, D)``.
    dw : ndarray
        Shape ``(M, D)``.
    """
    dy = _f64(dy)
    x = _rows(x, "x")
    w = _rows(w, "w")
    x_norm = _f64(x_norm)
    w_norm = _f64(w_norm)
    xh = x / np.maximum(x_norm, eps)[:, None]
    wh = w / np.maximum(w_norm, eps)[:, None]
    dx = l2_normalize_backward(dy @ wh, xh, x_norm, axis=1, eps=eps)
    dw = l2_normalize_backward(dy.T @ xh, wh, w_norm, axis=1, eps=eps)
    return dx, dw


# --------------------------------------------------------------------------- double backward


def _zeros_or(a, shape):
    return np.zeros(shape) if a is None else np.broadcast_to(_f64(a), shape)


def _double_core(v, a, b, dy, x, mean, rstd, gam, red, centered, fixed):
    """The double backward on arrays of one shape (mean, rstd broadcast), statistics over
    the axes ``red``: (gx, gdy, dy * t), the last summed to give gweight."""
    mean = mean if centered else 0.0
    xhat = (x - mean) * rstd
    g = dy * gam
    if fixed:
        t = rstd * v
        return rstd * a * dy, gam * t + a * xhat + b, dy * t
    n = _count(x.shape, red)

    def avg(z):
        return _mean(z, red) if centered else 0.0

    m = _mean(g * xhat, red)
    q = _mean(v * xhat, red)
    t = rstd * (v - avg(v) - xhat * q)
    dx_over_r = g - avg(g) - xhat * m
    P = (v * dx_over_r).sum(axis=red, keepdims=True)
    h = a * dy - rstd * (v * m + g * q)
    gx = rstd * (h - avg(h) - xhat * _mean(h * xhat, red)) - P * rstd**2 * xhat / n
    return gx, gam * t + a * xhat + b, dy * t


def _rows_double(ggx, ggweight, ggbias, dy, x, mean, rstd, weight, axis, centered):
    x, dy = _f64(x), _f64(dy)
    axis = _axis(axis, x.ndim)
    red = tuple(range(axis, x.ndim))
    pshape = x.shape[axis:]
    stat_shape = x.shape[:axis] + (1,) * (x.ndim - axis)
    weight = _param(weight, pshape, "weight")
    gam = 1.0 if weight is None else weight
    mean = _f64(mean).reshape(stat_shape) if centered else None
    rstd = _f64(rstd).reshape(stat_shape)
    v = _zeros_or(ggx, x.shape)
    a = _zeros_or(_param(ggweight, pshape, "ggweight"), pshape)
    b = _zeros_or(_param(ggbias, pshape, "ggbias"), pshape)
    gx, gdy, dyt = _double_core(v, a, b, dy, x, mean, rstd, gam, red, centered, False)
    gweight = None if weight is None else dyt.sum(axis=tuple(range(axis)))
    return gx, gdy, gweight


def layer_norm_double_backward(ggx, ggweight, ggbias, dy, x, mean, rstd, weight=None, *,
                               axis=-1):
    r"""Double backward of :func:`layer_norm`: the gradients with respect to x, dy and weight
    of a loss whose gradients with respect to :func:`layer_norm_backward`'s dx, dweight and
    dbias are ``ggx``, ``ggweight``, ``ggbias`` (None: zero).

    With :math:`\hat x = (x - \mu) r`, :math:`g = \gamma\,dy`, means (bars) over a row,
    :math:`v` = ggx, :math:`a` = ggweight, :math:`b` = ggbias, :math:`m = \overline{g\hat x}`,
    :math:`q = \overline{v \hat x}`, :math:`P = \sum v\,dx / r`,
    :math:`h = a\,dy - r(v m + g q)`:

    .. math::

        g_{dy} = \gamma r (v - \bar v - \hat x q) + a \hat x + b, \quad
        g_\gamma = \sum dy\, r (v - \bar v - \hat x q), \quad
        g_x = r (h - \bar h - \hat x\, \overline{h \hat x}) - P r^2 \hat x / n

    Returns
    -------
    gx, gdy : ndarray, x's shape
    gweight : ndarray or None
    """
    return _rows_double(ggx, ggweight, ggbias, dy, x, mean, rstd, weight, axis, True)


def rms_norm_double_backward(ggx, ggweight, dy, x, rstd, weight=None, *, axis=-1):
    r"""Double backward of :func:`rms_norm`: :func:`layer_norm_double_backward`'s formulas
    with :math:`\hat x = x r` and no mean terms."""
    return _rows_double(ggx, ggweight, None, dy, x, None, rstd, weight, axis, False)


def _channel_double(ggx, ggweight, ggbias, dy, x, mean, rstd, weight, axis, groups, fixed):
    """Batch norm (``groups`` None) or group norm (``groups`` G) double backward."""
    x, dy = _f64(x), _f64(dy)
    axis = _axis(axis, x.ndim)
    c = x.shape[axis]
    bshape = _channel_shape(x.ndim, axis)
    others = tuple(i for i in range(x.ndim) if i != axis)
    weight = _param(weight, (c,), "weight")

    def per_channel(p, name):
        p = _param(p, (c,), name)
        return np.zeros(x.shape) if p is None else np.broadcast_to(p.reshape(bshape), x.shape)

    gam = per_channel(weight if weight is not None else np.ones(c), "weight")
    a, b = per_channel(ggweight, "ggweight"), per_channel(ggbias, "ggbias")
    v = _zeros_or(ggx, x.shape)
    if groups is None:
        mean = _f64(mean).reshape(bshape)
        rstd = _f64(rstd).reshape(bshape)
        gx, gdy, dyt = _double_core(v, a, b, dy, x, mean, rstd, gam, others, True, fixed)
    else:
        size = c // groups
        view = [_grouped(z, axis, groups, size) for z in (v, a, b, dy, x, gam)]
        stat_shape = (x.shape[0], groups) + (1,) * (view[0].ndim - 2)
        mean = _f64(mean).reshape(stat_shape)
        rstd = _f64(rstd).reshape(stat_shape)
        red = tuple(range(2, view[0].ndim))
        res = _double_core(*view[:5], mean, rstd, view[5], red, True, False)
        gx, gdy, dyt = (_ungrouped(z, x.shape, axis) for z in res)
    gweight = None if weight is None else dyt.sum(axis=others)
    return gx, gdy, gweight


def batch_norm_double_backward(ggx, ggweight, ggbias, dy, x, mean, rstd, weight=None, *,
                               axis=1, training=True):
    r"""Double backward of :func:`batch_norm` (:func:`layer_norm_double_backward`'s
    formulas per channel); with ``training=False`` the statistics are constants:
    :math:`g_{dy} = \gamma r v + a \hat x + b`, :math:`g_\gamma = \sum dy\,r v`,
    :math:`g_x = r a\,dy`."""
    return _channel_double(ggx, ggweight, ggbias, dy, x, mean, rstd, weight, axis, None,
                           not training)


def group_norm_double_backward(ggx, ggweight, ggbias, dy, x, mean, rstd, num_groups,
                               weight=None, *, axis=1):
    """Double backward of :func:`group_norm` (the formulas per (sample, group))."""
    _, _, groups, _ = _gn_setup(x, axis, num_groups)
    return _channel_double(ggx, ggweight, ggbias, dy, x, mean, rstd, weight, axis, groups,
                           False)


def instance_norm_double_backward(ggx, ggweight, ggbias, dy, x, mean, rstd, weight=None, *,
                                  axis=1):
    """Double backward of :func:`instance_norm` (the formulas per (sample, channel))."""
    c = np.shape(x)[_axis(axis, np.ndim(x))]
    return _channel_double(ggx, ggweight, ggbias, dy, x, mean, rstd, weight, axis, c, False)
