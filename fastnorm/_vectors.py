"""l2_normalize, weight_norm and cosine_norm: normalization by a Euclidean norm."""

import numpy as np

from . import _kernels
from ._validate import (
    as_input,
    as_like,
    check_eps,
    contiguous,
    finish_out,
    is_half,
    make_out,
    new_output,
    normalize_axis,
    prod,
    stat_dtype,
)

__all__ = [
    "l2_normalize",
    "l2_normalize_backward",
    "weight_norm",
    "weight_norm_backward",
    "cosine_norm",
    "cosine_norm_backward",
]


def _l2_layout(x, axis):
    """(axis, (N, A, C, B) kernel view, norm shape) for a norm along `axis`."""
    axis = normalize_axis(axis, x.ndim)
    s = x.shape
    pre, K, post = prod(s[:axis]), s[axis], prod(s[axis + 1:])
    view = (pre, 1, 1, K) if post == 1 else (pre, K, post, 1)
    return axis, view, s[:axis] + s[axis + 1:]


def l2_normalize(x, *, axis=-1, eps=1e-12, out=None, return_stats=False):
    r"""Divide x by its Euclidean norm along one axis.

    .. math::

        \lVert x \rVert = \sqrt{\textstyle\sum_{i} x_i^2}, \qquad
        y = \frac{x}{\max(\lVert x \rVert, \epsilon)}

    A zero vector gives a zero output (and finite gradients).

    Parameters
    ----------
    x : array_like, float16, bfloat16, float32 or float64
    axis : int, default -1
        The axis along which the norm is taken.
    eps : float, default 1e-12
        Lower bound of the divisor; finite and >= 0.
    out : ndarray, optional
        Receives y (x's shape and dtype, writeable); ``out=x`` works in place.
    return_stats : bool, default False
        Also return ``norm`` (x's shape without ``axis``, x's dtype; float32 for half x):
        the unclamped norm.

    Returns
    -------
    y, or (y, norm)

    Examples
    --------
    >>> import numpy as np, fastnorm
    >>> fastnorm.l2_normalize(np.array([[3.0, 4.0], [0.0, 0.0]]))
    array([[0.6, 0.8],
           [0. , 0. ]])
    """
    x = as_input(x)
    dtype = x.dtype
    axis, view, norm_shape = _l2_layout(x, axis)
    eps = check_eps(eps)
    xc = contiguous(x)
    y = make_out(out, x.shape, dtype, (xc,))
    norm = np.empty(norm_shape, stat_dtype(dtype)) if return_stats else None
    if x.size:
        _kernels.l2_normalize_fwd(xc, y, norm, *view, eps)
    elif norm is not None:
        norm.fill(0)
    y = finish_out(y, out)
    return (y, norm) if return_stats else y


def l2_normalize_backward(dy, y, norm, *, axis=-1, eps=1e-12, out=None):
    r"""Gradient of :func:`l2_normalize` from its output ``y`` and saved ``norm``.

    .. math::

        dx = \frac{dy - y \sum_i dy_i\, y_i}{\lVert x \rVert}
        \quad (\lVert x \rVert > \epsilon), \qquad
        dx = \frac{dy}{\epsilon} \quad \text{otherwise}

    (a NaN norm gives NaN gradients). ``out`` (optional) receives dx: y's shape and
    dtype, writeable; any such array, dy included (then through a temporary).

    Returns
    -------
    dx : ndarray, y's shape and dtype (``out`` when given)
    """
    y = as_input(y, "y")
    dtype = y.dtype
    axis, view, norm_shape = _l2_layout(y, axis)
    eps = check_eps(eps)
    dy = as_like(dy, "dy", y.shape, dtype)
    norm = as_like(norm, "norm", norm_shape, stat_dtype(dtype))
    yc = contiguous(y)
    dx = make_out(out, y.shape, dtype, (None, dy, yc, norm))  # never over an input
    if y.size:
        _kernels.l2_normalize_bwd(dy, yc, norm, dx, *view, eps)
    return finish_out(dx, out)


def _wn_layout(v, g, axis):
    """(A, C, B), g as a contiguous (C,) array of the statistics' dtype, and g's given shape."""
    if v.ndim < 1:
        raise ValueError("weight_norm needs v with at least 1 dimension")
    axis = normalize_axis(axis, v.ndim)
    s = v.shape
    C = s[axis]
    keep = tuple(C if i == axis else 1 for i in range(v.ndim))
    g = np.asarray(g)
    if g.dtype.kind not in "fiu" and not is_half(g.dtype):
        raise TypeError(f"g must be a real floating (or integer) array, got dtype {g.dtype}")
    if g.shape not in ((C,), keep):
        raise ValueError(f"g must have shape {(C,)} or {keep}, got {g.shape}")
    g_shape = g.shape
    g = contiguous(g.reshape(C).astype(stat_dtype(v.dtype), copy=False))  # aligned too
    return (prod(s[:axis]), C, prod(s[axis + 1:])), g, g_shape


def weight_norm(v, g, *, axis=0, return_stats=False):
    r"""Weight normalization: reparametrize a weight as a direction v and a length g.

    .. math::

        \lVert v \rVert_c = \sqrt{\textstyle\sum_{\text{other axes}} v^2}, \qquad
        w = g_c\, \frac{v}{\lVert v \rVert_c}

    for each index c along ``axis`` (PyTorch's ``dim``; 0 = one norm per output unit).
    It normalizes parameters, not data. A zero slice of v gives a zero slice of w.

    Parameters
    ----------
    v : array_like, float16, bfloat16, float32 or float64, at least 1-d
    g : array_like of shape (v.shape[axis],) or v.ndim dims with ones except at axis
    axis : int, default 0
    return_stats : bool, default False
        Also return ``norm`` (shape (v.shape[axis],), v's dtype; float32 for half v).

    Returns
    -------
    w, or (w, norm)

    Examples
    --------
    >>> import numpy as np, fastnorm
    >>> fastnorm.weight_norm(np.array([[3.0, 4.0]]), np.array([10.0]))
    array([[6., 8.]])
    """
    v = as_input(v, "v")
    (A, C, B), g, _ = _wn_layout(v, g, axis)
    w = new_output(v.shape, v.dtype)
    norm = np.empty(C, stat_dtype(v.dtype)) if return_stats else None
    if v.size:
        _kernels.weight_norm_fwd(contiguous(v), g, w, norm, A, C, B)
    elif norm is not None:
        norm.fill(0)
    return (w, norm) if return_stats else w


def weight_norm_backward(dw, v, g, norm, *, axis=0, out=None):
    r"""Gradients of :func:`weight_norm`.

    With :math:`s_c = \sum dw\, v` over the slice c and :math:`n_c = \lVert v \rVert_c`:

    .. math::

        dg_c = \frac{s_c}{n_c}, \qquad
        dv = \frac{g_c}{n_c}\Big(dw - v\,\frac{s_c}{n_c^2}\Big)

    (both zero on a zero slice). ``out`` (optional) receives dv: v's shape and dtype,
    writeable; any such array, dw included (then through a temporary).

    Returns
    -------
    dv : ndarray, v's shape and dtype (``out`` when given)
    dg : ndarray, g's shape, v's dtype (float32 for half v)
    """
    v = as_input(v, "v")
    dtype = v.dtype
    (A, C, B), g, g_shape = _wn_layout(v, g, axis)
    dw = as_like(dw, "dw", v.shape, dtype)
    norm = as_like(norm, "norm", (C,), stat_dtype(dtype))
    vc = contiguous(v)
    dv = make_out(out, v.shape, dtype, (None, dw, vc, g, norm))  # never over an input
    dg = np.zeros(C, stat_dtype(dtype))
    if v.size:
        _kernels.weight_norm_bwd(dw, vc, g, norm, dv, dg, A, C, B)
    return finish_out(dv, out), dg.reshape(g_shape)


def _matrix(a, name, dtype=None):
    """A 2-d operand of cosine_norm, cast to `dtype` if given; half types are computed in
    float32 (the matrix product needs BLAS)."""
    a = as_input(a, name)
    if a.ndim != 2:
        raise ValueError(f"{name} must be 2-d, got shape {a.shape}")
    if dtype is None and is_half(a.dtype):
        dtype = np.dtype(np.float32)
    if dtype is not None and a.dtype != dtype:
        a = a.astype(dtype)
    return a


class _serial_if:
    """Within the block, this thread's kernel calls run serially when `on`.

    cosine_norm's normalizations are small next to its matrix products: with
    min(N, M) >= 256 * threads the products cost several times the serial normalizations
    even on all threads. Waking fastnorm's threads for them would save little, and their
    spinning once done (OpenMP threads wait actively for a while) takes cores from the
    BLAS threads of the product that follows (measured on 2 threads: a 1024 x 1024
    cosine_norm took 2 to 3 times its product's time, and about that time serially).
    The results are the same bit for bit (fixed blocks, any thread count)."""

    def __init__(self, on):
        self.on = on

    def __enter__(self):
        self.prev = _kernels.get_serial()
        if self.on:
            _kernels.set_serial(True)

    def __exit__(self, *exc):
        _kernels.set_serial(self.prev)
        return False


def _serial_normalizations(N, M):
    return min(N, M) >= 256 * _kernels.get_num_threads()


def _unit_rows(a, eps):
    """(rows of a divided by max(norm, eps), norms) with the l2_normalize kernel."""
    y = new_output(a.shape, a.dtype)
    norm = np.empty(a.shape[0], a.dtype)
    if a.size:
        _kernels.l2_normalize_fwd(contiguous(a), y, norm, a.shape[0], 1, 1, a.shape[1], eps)
    else:
        norm.fill(0)
    return y, norm


def cosine_norm(x, w, *, eps=1e-12, return_stats=False):
    r"""Cosine normalization: the cosine of the angle between each input and each weight
    vector, in place of their dot product.

    .. math::

        y_{nm} = \frac{x_n \cdot w_m}{\max(\lVert x_n \rVert, \epsilon)\,
                                       \max(\lVert w_m \rVert, \epsilon)} \in [-1, 1]

    Computed as :func:`l2_normalize` of the rows of both operands (C kernel) followed by
    one matrix product through NumPy's BLAS; rounding overshoot is clipped to [-1, 1].

    Parameters
    ----------
    x : array_like (N, D), float16, bfloat16, float32 or float64
    w : array_like (M, D); cast to x's dtype
    eps : float, default 1e-12
    return_stats : bool, default False
        Also return the row norms ``x_norm`` (N,) and ``w_norm`` (M,).

    Returns
    -------
    y : ndarray (N, M), or (y, x_norm, w_norm)

    Examples
    --------
    >>> import numpy as np, fastnorm
    >>> fastnorm.cosine_norm(np.array([[1.0, 0.0], [1.0, 1.0]]), np.array([[2.0, 0.0]]))
    array([[1.        ],
           [0.70710678]])
    """
    out_dtype = as_input(x).dtype
    x = _matrix(x, "x")
    w = _matrix(w, "w", x.dtype)
    if x.shape[1] != w.shape[1]:
        raise ValueError(f"x and w must have the same number of columns, got x {x.shape} "
                         f"and w {w.shape}")
    eps = check_eps(eps)
    with _serial_if(_serial_normalizations(x.shape[0], w.shape[0])):
        xh, x_norm = _unit_rows(x, eps)
        wh, w_norm = _unit_rows(w, eps)
    y = np.matmul(xh, wh.T)
    np.clip(y, -1.0, 1.0, out=y)
    if y.dtype != out_dtype:  # half input: computed in float32, returned in its dtype
        y = y.astype(out_dtype)
    return (y, x_norm, w_norm) if return_stats else y


def cosine_norm_backward(dy, x, w, x_norm, w_norm, *, eps=1e-12):
    r"""Gradients of :func:`cosine_norm` (the clipping is treated as the identity).

    With :math:`\hat x, \hat w` the normalized rows: :math:`d\hat x = dy\,\hat w` and
    :math:`d\hat w = dy^T \hat x`, then the :func:`l2_normalize_backward` of each.

    Returns
    -------
    dx : ndarray (N, D), dw : ndarray (M, D), in x's dtype
    """
    out_dtype = as_input(x).dtype
    x = _matrix(x, "x")
    dtype = x.dtype
    w = _matrix(w, "w", dtype)
    if x.shape[1] != w.shape[1]:
        raise ValueError(f"x and w must have the same number of columns, got x {x.shape} "
                         f"and w {w.shape}")
    eps = check_eps(eps)
    N, D = x.shape
    M = w.shape[0]
    dy = as_like(dy, "dy", (N, M), dtype)
    x_norm = as_like(x_norm, "x_norm", (N,), dtype)
    w_norm = as_like(w_norm, "w_norm", (M,), dtype)
    # contiguous operands: BLAS rounds differently for other layouts, and results must
    # not depend on the input's strides
    with np.errstate(divide="ignore", invalid="ignore"):  # eps = 0 on a zero row: as forward
        xh = contiguous(x) / np.maximum(x_norm, dtype.type(eps))[:, None]
        wh = contiguous(w) / np.maximum(w_norm, dtype.type(eps))[:, None]
    dxh = np.ascontiguousarray(dy @ wh)
    dwh = np.ascontiguousarray(dy.T @ xh)
    dx = new_output((N, D), dtype)
    dw = np.empty((M, D), dtype)
    with _serial_if(_serial_normalizations(N, M)):
        if dx.size:
            _kernels.l2_normalize_bwd(dxh, xh, x_norm, dx, N, 1, 1, D, eps)
        if dw.size:
            _kernels.l2_normalize_bwd(dwh, wh, w_norm, dw, M, 1, 1, D, eps)
    if dtype != out_dtype:  # half input: computed in float32, returned in its dtype
        dx, dw = dx.astype(out_dtype), dw.astype(out_dtype)
    return dx, dw
