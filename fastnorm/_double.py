"""Double backward of layer, RMS, batch, group and instance norm: the gradients of a loss
that depends on the backward's results (dx, dweight, dbias) with respect to the backward's
inputs (x, dy, weight), for gradient penalties, MAML and Hessian-vector products."""

import numpy as np

from . import _kernels
from ._channels import _bn_layout, _check_groups, _gn_layout
from ._rows import _layout
from ._validate import as_input, as_like, as_param, contiguous, stat_dtype


def _double(ggx, ggweight, ggbias, dy, x, mean, rstd, weight, nacg, stat_shape, pshape,
            fixed, centered=True):  # fmt: skip
    """The checked call of the C kernel: x as (N, A, C, B) with G groups, statistics of
    ``stat_shape``, parameters of ``pshape``; returns (gx, gdy, gweight)."""
    N, A, C, B, G = nacg
    dtype = x.dtype
    sdtype = stat_dtype(dtype)
    cdtype = np.float64 if dtype == np.float64 else np.float32  # half x computes in float32
    dy = as_like(dy, "dy", x.shape, dtype)
    ggx = None if ggx is None else as_like(ggx, "ggx", x.shape, dtype)
    mean = as_like(mean, "mean", stat_shape, sdtype) if centered else None
    rstd = as_like(rstd, "rstd", stat_shape, sdtype)
    weight = as_param(weight, "weight", pshape, sdtype)
    ggweight = as_param(ggweight, "ggweight", pshape, sdtype)
    ggbias = as_param(ggbias, "ggbias", pshape, sdtype) if centered else None
    if ggweight is not None and weight is None:
        raise ValueError("ggweight needs weight (without a weight there is no dweight)")
    arrays = [contiguous(a) if a is not None else None for a in (x, dy, ggx)]
    if dtype != cdtype:
        arrays = [None if a is None else a.astype(cdtype) for a in arrays]
    xc, dyc, ggxc = arrays
    gx = np.empty(x.shape, cdtype)
    gdy = np.empty(x.shape, cdtype)
    gweight = None if weight is None else np.zeros(pshape, sdtype)
    if x.size:
        _kernels.norm_double_bwd(xc, dyc, mean, rstd, weight, ggxc, ggweight, ggbias, gx, gdy,
                                 gweight, N, A, C, B, G, fixed)
    if dtype != cdtype:
        gx, gdy = gx.astype(dtype), gdy.astype(dtype)
    return gx, gdy, gweight


def _rows_double(ggx, ggweight, ggbias, dy, x, mean, rstd, weight, axis, centered):
    x = as_input(x)
    axis, M, K, batch_shape, norm_shape = _layout(x, axis)
    return _double(ggx, ggweight, ggbias, dy, x, mean, rstd, weight, (M, 1, K, 1, 1),
                   batch_shape, norm_shape, False, centered)


def layer_norm_double_backward(ggx, ggweight, ggbias, dy, x, mean, rstd, weight=None, *,
                               axis=-1):  # fmt: skip
    r"""Double backward of :func:`layer_norm`: the gradients, with respect to x, dy and
    weight, of a loss whose gradients with respect to :func:`layer_norm_backward`'s results
    dx, dweight and dbias are ``ggx``, ``ggweight`` and ``ggbias`` (each None for zero).

    With :math:`\hat x = (x - \mu)\,r` and :math:`g = dy\,\gamma` the backward is
    :math:`dx = r\,(g - \bar g - \hat x\,\overline{g \hat x})`,
    :math:`d\gamma = \sum dy\,\hat x`, :math:`d\beta = \sum dy` (bars: means over the n
    values sharing a statistic). For the gradients :math:`v` = ``ggx``, :math:`a` =
    ``ggweight``, :math:`b` = ``ggbias`` of a loss with respect to dx, dγ, dβ, with
    :math:`m = \overline{g \hat x}`, :math:`q = \overline{v \hat x}`,
    :math:`P = \sum v\,dx / r` and :math:`h = a\,dy - r\,(v m + g q)`:

    .. math::

        g_{dy} = \gamma\,r\,(v - \bar v - \hat x q) + a \hat x + b, \qquad
        g_\gamma = \sum dy\,r\,(v - \bar v - \hat x q),

        g_x = r\,(h - \bar h - \hat x\,\overline{h \hat x}) - \frac{P\,r^2}{n}\,\hat x

    Parameters
    ----------
    ggx : array_like of x's shape, or None
    ggweight, ggbias : array_like of the weight's shape, or None
    dy, x, mean, rstd, weight, axis
        As passed to :func:`layer_norm_backward`.

    Returns
    -------
    gx, gdy : ndarray, x's shape and dtype
    gweight : ndarray of the weight's shape, or None without weight
    """
    return _rows_double(ggx, ggweight, ggbias, dy, x, mean, rstd, weight, axis, True)


def rms_norm_double_backward(ggx, ggweight, dy, x, rstd, weight=None, *, axis=-1):
    r"""Double backward of :func:`rms_norm` (see :func:`layer_norm_double_backward`): the
    same formulas with :math:`\hat x = x\,r` and no mean terms (:math:`\bar v`,
    :math:`\bar h`, :math:`\bar g` dropped).

    Returns
    -------
    gx, gdy, gweight (None without weight)
    """
    return _rows_double(ggx, ggweight, None, dy, x, None, rstd, weight, axis, False)


def batch_norm_double_backward(ggx, ggweight, ggbias, dy, x, mean, rstd, weight=None, *,
                               axis=1, training=True):  # fmt: skip
    r"""Double backward of :func:`batch_norm` from :func:`batch_norm_backward`'s inputs
    (see :func:`layer_norm_double_backward`; the statistics are per channel). With
    ``training=False`` the statistics are constants: :math:`g_{dy} = \gamma r v + a \hat x
    + b`, :math:`g_\gamma = \sum dy\,r\,v`, :math:`g_x = r\,a\,dy`.

    Returns
    -------
    gx, gdy, gweight (None without weight)
    """
    x = as_input(x)
    A, C, B = _bn_layout(x, axis)
    return _double(ggx, ggweight, ggbias, dy, x, mean, rstd, weight, (1, A, C, B, C), (C,),
                   (C,), not training)


def group_norm_double_backward(ggx, ggweight, ggbias, dy, x, mean, rstd, num_groups,
                               weight=None, *, axis=1):  # fmt: skip
    """Double backward of :func:`group_norm` (see :func:`layer_norm_double_backward`; the
    statistics are per (sample, group)).

    Returns
    -------
    gx, gdy, gweight (None without weight)
    """
    x = as_input(x)
    N, A, C, B = _gn_layout(x, axis, "group_norm_double_backward")
    G = _check_groups(num_groups, C)
    return _double(ggx, ggweight, ggbias, dy, x, mean, rstd, weight, (N, A, C, B, G), (N, G),
                   (C,), False)


def instance_norm_double_backward(ggx, ggweight, ggbias, dy, x, mean, rstd, weight=None, *,
                                  axis=1):  # fmt: skip
    """Double backward of :func:`instance_norm` (group norm with one channel per group).

    Returns
    -------
    gx, gdy, gweight (None without weight)
    """
    x = as_input(x)
    N, A, C, B = _gn_layout(x, axis, "instance_norm_double_backward")
    return _double(ggx, ggweight, ggbias, dy, x, mean, rstd, weight, (N, A, C, B, C), (N, C),
                   (C,), False)
