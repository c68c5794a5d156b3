"""layer_norm and rms_norm: the rows family (each row of an (M, K) view normalized alone)."""

import numpy as np

from . import _kernels
from ._validate import (
    as_input,
    as_like,
    as_param,
    check_eps,
    contiguous,
    finish_out,
    is_half,
    make_out,
    normalize_axis,
    prod,
    stat_dtype,
)

__all__ = [
    "add_layer_norm",
    "add_layer_norm_backward",
    "add_rms_norm",
    "add_rms_norm_backward",
    "layer_norm",
    "layer_norm_backward",
    "rms_norm",
    "rms_norm_backward",
]


def _layout(x, axis):
    """(axis, M, K, batch_shape, norm_shape) for a first-normalized-axis `axis`."""
    axis = normalize_axis(axis, x.ndim)
    shape = x.shape
    return axis, prod(shape[:axis]), prod(shape[axis:]), shape[:axis], shape[axis:]


def _stat(shape, dtype, K):
    if K == 0:
        return np.full(shape, np.nan, dtype)
    return np.empty(shape, dtype)


def layer_norm(x, weight=None, bias=None, *, axis=-1, eps=1e-5, out=None, return_stats=False):
    r"""Layer normalization over the trailing axes ``x.shape[axis:]``.

    .. math::

        \mu = \frac{1}{K}\sum_k x_k, \qquad
        \sigma^2 = \frac{1}{K}\sum_k (x_k - \mu)^2, \qquad
        y = \frac{x - \mu}{\sqrt{\sigma^2 + \epsilon}} \, \gamma + \beta

    where the sums run over the K = prod(x.shape[axis:]) elements of one row.

    Parameters
    ----------
    x : array_like, float16, bfloat16, float32 or float64
        Input. Any strides; a non-contiguous input is copied once.
    weight, bias : array_like of shape ``x.shape[axis:]``, optional
        The affine re-scale :math:`\gamma` and re-shift :math:`\beta`, cast to x's dtype (float32
        for half-precision x).
    axis : int, default -1
        The first normalized axis (ONNX convention): axes ``axis, ..., ndim-1`` are
        normalized together.
    eps : float, default 1e-5
        Added to the variance inside the square root; must be finite and >= 0.
    out : ndarray, optional
        Receives y: same shape and dtype as x, writeable. ``out=x`` normalizes in place.
    return_stats : bool, default False
        Also return the statistics that :func:`layer_norm_backward` needs.

    Returns
    -------
    y : ndarray, x's shape and dtype
    mean, rstd : ndarray of shape ``x.shape[:axis]``, only with ``return_stats=True``
        The row means and ``1 / sqrt(var + eps)``, in x's dtype (float32 for half x). A
        zero-length row gives NaN statistics.

    Raises
    ------
    TypeError
        x is not float16/bfloat16/float32/float64, or out has the wrong dtype.
    ValueError
        weight/bias/out of the wrong shape, read-only out, or a negative eps.
    numpy.exceptions.AxisError
        axis out of range.

    Examples
    --------
    >>> import numpy as np, fastnorm
    >>> x = np.array([[1.0, 2.0, 3.0], [2.0, 2.0, 2.0]])
    >>> fastnorm.layer_norm(x, eps=0.0)[0].round(4)
    array([-1.2247,  0.    ,  1.2247])
    """
    r = _kernels.layer_norm_fast(x, weight, bias, axis, eps, return_stats, out)
    if r is not None:
        return r
    x = as_input(x)
    dtype = x.dtype
    sdtype = stat_dtype(dtype)
    axis, M, K, batch_shape, norm_shape = _layout(x, axis)
    eps = check_eps(eps)
    weight = as_param(weight, "weight", norm_shape, sdtype)
    bias = as_param(bias, "bias", norm_shape, sdtype)
    xc = contiguous(x)
    y = make_out(out, x.shape, dtype, (xc, weight, bias))
    mean = rstd = None
    if return_stats:
        mean = _stat(batch_shape, sdtype, K)
        rstd = _stat(batch_shape, sdtype, K)
    if M * K:
        _kernels.layer_norm_fwd(xc, weight, bias, y, mean, rstd, M, K, eps)
    y = finish_out(y, out)
    return (y, mean, rstd) if return_stats else y


def layer_norm_backward(dy, x, mean, rstd, weight=None, *, axis=-1, out=None):
    r"""Gradients of :func:`layer_norm` from the saved statistics.

    With :math:`\hat x = (x - \mu)\,\mathrm{rstd}` and :math:`g = dy \cdot \gamma`
    (K elements per row):

    .. math::

        dx = \mathrm{rstd}\,\Big(g - \tfrac{1}{K}\textstyle\sum g
             - \hat x \,\tfrac{1}{K}\sum g \hat x\Big), \qquad
        d\gamma = \textstyle\sum_{\text{rows}} dy\,\hat x, \qquad
        d\beta = \textstyle\sum_{\text{rows}} dy

    Parameters
    ----------
    dy : array_like, x's shape
        Gradient of the loss with respect to y; cast to x's dtype.
    x : array_like, float16, bfloat16, float32 or float64
        The forward input.
    mean, rstd : array_like of shape ``x.shape[:axis]``
        As returned by ``layer_norm(..., return_stats=True)``.
    weight : array_like of shape ``x.shape[axis:]``, optional
        The forward weight (None if the forward had none).
    axis : int, default -1
        The forward's first normalized axis.
    out : ndarray, optional
        Receives dx: x's shape and dtype, writeable. ``out=dy`` computes dx in place of
        dy (no second array of x's size).

    Returns
    -------
    dx : ndarray, x's shape and dtype (``out`` when given)
    dweight : ndarray of shape ``x.shape[axis:]``, or None when weight is None
    dbias : ndarray of shape ``x.shape[axis:]``
    """
    r = _kernels.layer_norm_bwd_fast(dy, x, mean, rstd, weight, axis, out)
    if r is not None:
        return r
    x = as_input(x)
    dtype = x.dtype
    axis, M, K, batch_shape, norm_shape = _layout(x, axis)
    dy = as_like(dy, "dy", x.shape, dtype)
    sdtype = stat_dtype(dtype)
    mean = as_like(mean, "mean", batch_shape, sdtype)
    rstd = as_like(rstd, "rstd", batch_shape, sdtype)
    weight = as_param(weight, "weight", norm_shape, sdtype)
    xc = contiguous(x)
    # dy first: the kernel may write dx over dy itself (each element read before written)
    dx = make_out(out, x.shape, dtype, (dy, xc, mean, rstd, weight))
    dweight = None if weight is None else np.empty(norm_shape, sdtype)
    dbias = np.empty(norm_shape, sdtype)
    _kernels.layer_norm_bwd(dy, xc, mean, rstd, weight, dx, dweight, dbias, M, K)
    return finish_out(dx, out), dweight, dbias


def rms_norm(x, weight=None, *, axis=-1, eps=1e-6, out=None, return_stats=False):
    r"""RMS normalization over the trailing axes ``x.shape[axis:]`` (no mean subtraction).

    .. math::

        \mathrm{rstd} = \Big(\frac{1}{K}\sum_k x_k^2 + \epsilon\Big)^{-1/2}, \qquad
        y = x \cdot \mathrm{rstd} \cdot \gamma

    Parameters
    ----------
    x : array_like, float16, bfloat16, float32 or float64
        Input. Any strides; a non-contiguous input is copied once.
    weight : array_like of shape ``x.shape[axis:]``, optional
        The re-scale :math:`\gamma`, cast to x's dtype (float32
        for half-precision x).
    axis : int, default -1
        The first normalized axis; axes ``axis, ..., ndim-1`` are normalized together.
    eps : float, default 1e-6
        Added to the mean square; must be finite and >= 0. With eps > 0 a zero row gives
        a zero output.
    out : ndarray, optional
        Receives y: same shape and dtype as x, writeable. ``out=x`` works in place.
    return_stats : bool, default False
        Also return ``rstd`` (shape ``x.shape[:axis]``, x's dtype; float32 for half x).

    Returns
    -------
    y : ndarray, or (y, rstd) with ``return_stats=True``

    Examples
    --------
    >>> import numpy as np, fastnorm
    >>> fastnorm.rms_norm(np.array([3.0, 4.0]), eps=0.0).round(4)
    array([0.8485, 1.1314])
    """
    r = _kernels.rms_norm_fast(x, weight, axis, eps, return_stats, out)
    if r is not None:
        return r
    x = as_input(x)
    dtype = x.dtype
    axis, M, K, batch_shape, norm_shape = _layout(x, axis)
    eps = check_eps(eps)
    sdtype = stat_dtype(dtype)
    weight = as_param(weight, "weight", norm_shape, sdtype)
    xc = contiguous(x)
    y = make_out(out, x.shape, dtype, (xc, weight))
    rstd = _stat(batch_shape, sdtype, K) if return_stats else None
    if M * K:
        _kernels.rms_norm_fwd(xc, weight, y, rstd, M, K, eps)
    y = finish_out(y, out)
    return (y, rstd) if return_stats else y


def rms_norm_backward(dy, x, rstd, weight=None, *, axis=-1, out=None):
    r"""Gradients of :func:`rms_norm` from the saved ``rstd``.

    With :math:`\hat x = x\,\mathrm{rstd}` and :math:`g = dy \cdot \gamma`:

    .. math::

        dx = \mathrm{rstd}\,\Big(g - \hat x\,\tfrac{1}{K}\textstyle\sum g \hat x\Big),
        \qquad d\gamma = \textstyle\sum_{\text{rows}} dy\,\hat x

    The arguments are those of :func:`layer_norm_backward` without ``mean``; ``out``
    receives dx (``out=dy`` works in place).

    Returns
    -------
    dx : ndarray, x's shape and dtype (``out`` when given)
    dweight : ndarray of shape ``x.shape[axis:]``, or None when weight is None
    """
    r = _kernels.rms_norm_bwd_fast(dy, x, rstd, weight, axis, out)
    if r is not None:
        return r
    x = as_input(x)
    dtype = x.dtype
    axis, M, K, batch_shape, norm_shape = _layout(x, axis)
    dy = as_like(dy, "dy", x.shape, dtype)
    sdtype = stat_dtype(dtype)
    rstd = as_like(rstd, "rstd", batch_shape, sdtype)
    weight = as_param(weight, "weight", norm_shape, sdtype)
    xc = contiguous(x)
    dx = make_out(out, x.shape, dtype, (dy, xc, rstd, weight))  # dy first: see layer_norm
    dweight = None if weight is None else np.empty(norm_shape, sdtype)
    _kernels.rms_norm_bwd(dy, xc, rstd, weight, dx, dweight, M, K)
    return finish_out(dx, out), dweight


# ---- residual add fused with the norm ------------------------------------------------------


def _residual(residual, x, axis, rdtype):
    """residual as a contiguous array of rdtype (cast as dy is) whose shape is a suffix of
    x's that holds the normalized axes (it repeats over the leading axes it lacks); returns
    (r, R rows)."""
    shape = np.shape(residual)
    n = len(shape)
    if n < x.ndim - axis or n > x.ndim or shape != x.shape[x.ndim - n :]:
        raise ValueError(
            f"residual must have x's shape {x.shape} or a trailing part of it holding the "
            f"normalized axes {x.shape[axis:]}, got {shape}"
        )
    r = as_like(residual, "residual", shape, rdtype)
    return r, prod(shape[: n - (x.ndim - axis)])


def _residual_dtype(residual_dtype, dtype):
    """The dtype of s: x's, or float32 for half x (an fp32 residual stream)."""
    if residual_dtype is None:
        return dtype
    try:
        rdt = np.dtype(residual_dtype)
    except TypeError:
        raise TypeError(f"residual_dtype must be a dtype, got {residual_dtype!r}") from None
    if rdt == dtype or (is_half(dtype) and rdt == np.float32):
        return rdt
    raise TypeError(
        f"residual_dtype must be x's dtype {dtype} (or float32 for half-precision x), got {rdt}"
    )


def _add_norm(x, residual, weight, bias, axis, eps, residual_dtype, out, residual_out,
              return_stats, centered):  # fmt: skip
    x = as_input(x)
    dtype = x.dtype
    axis, M, K, batch_shape, norm_shape = _layout(x, axis)
    eps = check_eps(eps)
    rdtype = _residual_dtype(residual_dtype, dtype)
    r, R = _residual(residual, x, axis, rdtype)
    sdtype = stat_dtype(dtype)
    weight = as_param(weight, "weight", norm_shape, sdtype)
    bias = as_param(bias, "bias", norm_shape, sdtype) if centered else None
    if (out is not None and residual_out is not None and isinstance(out, np.ndarray)
            and np.may_share_memory(out, residual_out)):  # fmt: skip
        raise ValueError("out and residual_out must not overlap (y and s are both results)")
    xc = contiguous(x)
    mean = rstd = None
    if return_stats:
        mean = _stat(batch_shape, sdtype, K) if centered else None
        rstd = _stat(batch_shape, sdtype, K)
    s = make_out(residual_out, x.shape, rdtype, (r, xc, weight, bias), "residual_out")
    y = ky = make_out(out, x.shape, dtype, (xc, r, weight, bias, s))
    if rdtype != dtype:  # half x, float32 s: the float32 kernel into a float32 y, then rounded
        xc = xc.astype(rdtype)
        ky = np.empty(x.shape, rdtype)
    if M * K:
        if centered:
            _kernels.add_layer_norm_fwd(xc, r, R, weight, bias, ky, s, mean, rstd, M, K, eps)
        else:
            _kernels.add_rms_norm_fwd(xc, r, R, weight, ky, s, rstd, M, K, eps)
    if ky is not y:
        np.copyto(y, ky, casting="unsafe")
    y = finish_out(y, out)
    s = finish_out(s, residual_out)
    if not return_stats:
        return y, s
    return (y, s, mean, rstd) if centered else (y, s, rstd)


def add_layer_norm(x, residual, weight=None, bias=None, *, axis=-1, eps=1e-5, residual_dtype=None,
                   out=None, residual_out=None, return_stats=False):  # fmt: skip
    r"""Layer normalization of a residual sum, ``s = x + residual``, in one pass.

    .. math::

        s = x + r, \qquad y = \mathrm{layer\_norm}(s) = \frac{s - \mu_s}{\sqrt{\sigma_s^2 +
        \epsilon}} \, \gamma + \beta

    The transformer block's ``norm(x + residual)`` that also keeps the sum as the next
    residual: x and residual are read once, y and s written once. s is rounded to
    ``residual_dtype`` and the statistics are those of the rounded s, so y equals
    ``layer_norm(x + residual)`` (bit for bit where ``residual_dtype`` is x's dtype).

    Parameters
    ----------
    x : array_like, float16, bfloat16, float32 or float64
    residual : array_like
        x's shape, or a trailing part of it that holds the normalized axes (it repeats over
        the leading axes, e.g. an (S, H) skip added to every (B, S, H) batch); cast to
        ``residual_dtype``.
    weight, bias, axis, eps
        As in :func:`layer_norm`.
    residual_dtype : dtype, optional
        The dtype of s: x's (default), or float32 for float16/bfloat16 x, a float32
        residual stream (y stays in x's dtype; this case computes in float32 with a
        conversion pass on each side).
    out : ndarray, optional
        Receives y (x's shape and dtype); ``out=x`` writes y over x.
    residual_out : ndarray, optional
        Receives s (x's shape, ``residual_dtype``); ``residual_out=residual`` updates the
        residual stream in place. It must not overlap ``out``.
    return_stats : bool, default False
        Also return the mean and rstd of s's rows, for :func:`add_layer_norm_backward`.

    Returns
    -------
    (y, s), or (y, s, mean, rstd) with ``return_stats=True``

    Examples
    --------
    >>> import numpy as np, fastnorm
    >>> y, s = fastnorm.add_layer_norm(np.array([1.0, 2.0, 3.0]), np.array([1.0, 1.0, 1.0]),
    ...                                eps=0.0)
    >>> s, y.round(4)
    (array([2., 3., 4.]), array([-1.2247,  0.    ,  1.2247]))
    """
    return _add_norm(x, residual, weight, bias, axis, eps, residual_dtype, out, residual_out,
                     return_stats, True)  # fmt: skip


def add_rms_norm(x, residual, weight=None, *, axis=-1, eps=1e-6, residual_dtype=None, out=None,
                 residual_out=None, return_stats=False):  # fmt: skip
    r"""RMS normalization of a residual sum, ``s = x + residual``, in one pass
    (``y = rms_norm(s)``; vLLM's ``fused_add_rms_norm`` with ``out=x,
    residual_out=residual``).

    The arguments are those of :func:`add_layer_norm` without ``bias``.

    Returns
    -------
    (y, s), or (y, s, rstd) with ``return_stats=True``

    Examples
    --------
    >>> import numpy as np, fastnorm
    >>> y, s = fastnorm.add_rms_norm(np.array([1.0, 3.0]), np.array([2.0, 1.0]), eps=0.0)
    >>> s, y.round(4)
    (array([3., 4.]), array([0.8485, 1.1314]))
    """
    return _add_norm(x, residual, weight, None, axis, eps, residual_dtype, out, residual_out,
                     return_stats, False)  # fmt: skip


def _add_norm_backward(dy, ds, s, mean, rstd, weight, axis, out, centered):
    s = as_input(s, "s")
    dtype = s.dtype
    axis, M, K, batch_shape, norm_shape = _layout(s, axis)
    dy = as_like(dy, "dy", s.shape, dtype)
    ds = None if ds is None else as_like(ds, "ds", s.shape, dtype)
    sdtype = stat_dtype(dtype)
    mean = as_like(mean, "mean", batch_shape, sdtype) if centered else None
    rstd = as_like(rstd, "rstd", batch_shape, sdtype)
    weight = as_param(weight, "weight", norm_shape, sdtype)
    sc = contiguous(s)
    # dy first: the kernel may write dx over dy (each element read before written); over
    # ds it may not (ds is added after the row's dx is written), so out=ds takes a temporary
    dx = make_out(out, s.shape, dtype, (dy, ds, sc, mean, rstd, weight))
    dweight = None if weight is None else np.empty(norm_shape, sdtype)
    if centered:
        dbias = np.empty(norm_shape, sdtype)
        _kernels.add_layer_norm_bwd(dy, ds, sc, mean, rstd, weight, dx, dweight, dbias, M, K)
        return finish_out(dx, out), dweight, dbias
    _kernels.add_rms_norm_bwd(dy, ds, sc, rstd, weight, dx, dweight, M, K)
    return finish_out(dx, out), dweight


def add_layer_norm_backward(dy, ds, s, mean, rstd, weight=None, *, axis=-1, out=None):
    r"""Gradients of :func:`add_layer_norm`.

    .. math::

        dx = \mathrm{layer\_norm\_backward}(dy, s)_x + ds

    dx is the gradient of both x and residual (one array; for a residual that repeated over
    leading axes, sum dx over them). dweight and dbias are those of :func:`layer_norm`.

    Parameters
    ----------
    dy : array_like, s's shape
        Gradient of the loss with respect to y.
    ds : array_like, s's shape, or None
        Gradient flowing into the residual stream s from later layers (None: none).
    s : array_like
        The forward's s (its dtype is the computing dtype; dy and ds are cast to it).
    mean, rstd : array_like of shape ``s.shape[:axis]``
        As returned by ``add_layer_norm(..., return_stats=True)``.
    weight, axis
        As in the forward.
    out : ndarray, optional
        Receives dx (s's shape and dtype); ``out=ds`` or ``out=dy`` reuse that array. dy
        and ds are not written otherwise.

    Returns
    -------
    dx, dweight (None without weight), dbias
    """
    return _add_norm_backward(dy, ds, s, mean, rstd, weight, axis, out, True)


def add_rms_norm_backward(dy, ds, s, rstd, weight=None, *, axis=-1, out=None):
    r"""Gradients of :func:`add_rms_norm`: ``dx = rms_norm_backward(dy, s)_x + ds`` (the
    gradient of x and of residual), and dweight. Arguments as in
    :func:`add_layer_norm_backward` without ``mean``.

    Returns
    -------
    dx, dweight (None without weight)
    """
    return _add_norm_backward(dy, ds, s, None, rstd, weight, axis, out, False)
