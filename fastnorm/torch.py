"""PyTorch integration: autograd functions, drop-in modules and :func:`convert`.

Importing this module imports torch (``import fastnorm`` alone never does). CPU tensors of
a dtype fastnorm computes (float32, float64) are handed to fastnorm's kernels without a
copy: ``Tensor.numpy()`` views the tensor's memory and the result is written into a
tensor allocated by torch, so the output keeps the input's memory format (channels_last
included). Anything else -- another device or dtype, a tensor subclass, TorchScript,
tracing, ``torch.compile``, autocast, functorch transforms, empty tensors, or arguments
torch would reject -- goes to torch's own operator, so behaviour and errors stay torch's.

Functional API (torch.nn.functional-like signatures)::

    layer_norm(input, normalized_shape, weight=None, bias=None, eps=1e-5)
    rms_norm(input, normalized_shape, weight=None, eps=None)
    batch_norm(input, running_mean, running_var, weight=None, bias=None, training=False,
               momentum=0.1, eps=1e-5)
    group_norm(input, num_groups, weight=None, bias=None, eps=1e-5)
    instance_norm(input, running_mean=None, running_var=None, weight=None, bias=None,
                  use_input_stats=True, momentum=0.1, eps=1e-5)
    normalize(input, p=2.0, dim=1, eps=1e-12)          # F.normalize; p=2 is fastnorm's
    l2_normalize(input, dim=-1, eps=1e-12)
    weight_norm(v, g, dim=0)                            # torch._weight_norm
    cosine_norm(input, weight, eps=1e-12)               # (N, D), (M, D) -> (N, M)
    add_layer_norm(input, residual, normalized_shape, weight=None, bias=None, eps=1e-5)
    add_rms_norm(input, residual, normalized_shape, weight=None, eps=None)
                                                        # -> (y, s), s = input + residual
    add_norm(norm, input, residual)                     # (norm(s), s) for a norm module
    iter_norm(input, running_mean=None, running_whitening=None, weight=None, bias=None,
              training=True, momentum=0.1, eps=1e-5, group_size=16, iterations=5)

Layer, RMS, batch, group and instance norm are differentiable twice (their backward
under ``create_graph=True`` is itself differentiable, by fastnorm's ``*_double_backward``);
a third-order derivative raises. The other functions are differentiable once.

IterNorm (iterative whitening) has no torch.nn counterpart: :class:`IterNorm1d` and
:class:`IterNorm2d` are modules of their own, with the running statistics as buffers.

Modules: :class:`LayerNorm`, :class:`RMSNorm`, :class:`BatchNorm1d`, :class:`BatchNorm2d`,
:class:`BatchNorm3d`, :class:`GroupNorm`, :class:`InstanceNorm1d`, :class:`InstanceNorm2d`,
:class:`InstanceNorm3d`: subclasses of the torch.nn classes of the same name that only
override the computation; :func:`convert` turns a model's layers into them in place.
"""

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

import fastnorm as _fn

__all__ = [
    "layer_norm",
    "rms_norm",
    "batch_norm",
    "group_norm",
    "instance_norm",
    "normalize",
    "l2_normalize",
    "weight_norm",
    "cosine_norm",
    "add_layer_norm",
    "add_rms_norm",
    "add_norm",
    "weight_norm_init_",
    "convert",
    "LayerNorm",
    "RMSNorm",
    "BatchNorm1d",
    "BatchNorm2d",
    "BatchNorm3d",
    "GroupNorm",
    "InstanceNorm1d",
    "InstanceNorm2d",
    "InstanceNorm3d",
    "iter_norm",
    "IterNorm1d",
    "IterNorm2d",
    "TorchDistributedComm",
]

try:  # bfloat16 arrays on the NumPy side
    import ml_dtypes as _ml_dtypes
except ImportError:
    _ml_dtypes = None

# The one place that says which tensor dtypes fastnorm computes; everything else goes to
# torch. bfloat16 needs ml_dtypes (NumPy has no bfloat16 of its own).
FAST_DTYPES = frozenset(
    {torch.float32, torch.float64, torch.float16}
    | ({torch.bfloat16} if _ml_dtypes is not None else set())
)
# Half-precision inputs also take float32 parameters and running statistics (mixed
# precision; fastnorm computes them in float32 anyway).
_HALF = (torch.float16, torch.bfloat16)

_PLAIN_TYPES = (torch.Tensor, nn.Parameter)
_is_wrapped = getattr(torch._C._functorch, "is_functorch_wrapped_tensor", None)


def _context_ok():
    """False inside TorchScript, tracing, torch.compile and CPU autocast."""
    if torch.jit.is_scripting() or torch.jit.is_tracing():
        return False
    if torch.compiler.is_compiling():
        return False
    return not torch.is_autocast_enabled("cpu")


def _tensor_ok(t, dtype):
    return (
        type(t) in _PLAIN_TYPES
        and t.is_cpu
        and t.dtype == dtype
        and t.layout == torch.strided
        and not (_is_wrapped is not None and _is_wrapped(t))
    )


def _param_ok(p, x):
    """A parameter of x's dtype on the CPU, or of float32 for a half-precision x."""
    return _tensor_ok(p, x.dtype) or (x.dtype in _HALF and _tensor_ok(p, torch.float32))


def _fast(x, *params):
    """Whether fastnorm computes this call: a plain, non-empty CPU tensor of a FAST_DTYPES
    dtype, and parameters (None allowed) of the same dtype (or float32, for half x) on the
    CPU."""
    if not (_context_ok() and type(x) in _PLAIN_TYPES and x.dtype in FAST_DTYPES):
        return False
    if not _tensor_ok(x, x.dtype) or x.numel() == 0:
        return False
    return all(p is None or _param_ok(p, x) for p in params)


def _stat_ok(r, x):
    """A running statistic fastnorm can update in place: None, or a contiguous (C,) CPU
    tensor of x's dtype (float32 for a half-precision x: fastnorm keeps running statistics
    in float32 or float64)."""
    return r is None or (
        _tensor_ok(r, torch.float32 if x.dtype in _HALF else x.dtype)
        and tuple(r.shape) == (x.shape[1],)
        and r.is_contiguous()
        and not r.requires_grad
    )


def _np(t):
    """The NumPy view of a CPU tensor (shares its memory), or None. bfloat16 is viewed
    through its bits as ml_dtypes.bfloat16."""
    if t is None:
        return None
    if t.requires_grad:
        t = t.detach()
    if t.dtype == torch.bfloat16:
        return t.view(torch.int16).numpy().view(_ml_dtypes.bfloat16)
    return t.numpy()


def _tensor(a):
    """A tensor on a NumPy array's memory (no copy)."""
    if a is None:
        return None
    if a.dtype.name == "bfloat16":
        return torch.from_numpy(a.view(np.int16)).view(torch.bfloat16)
    return torch.from_numpy(a)


def _needs_grad(*tensors):
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def _grads(ctx, *grads):
    """Gradients for autograd, None where the input does not need one."""
    need = ctx.needs_input_grad
    return tuple(g if n else None for g, n in zip(grads, need, strict=True))


# ---------------------------------------------------------------------------------------
# memory layouts


def _inverse(perm):
    inv = [0] * len(perm)
    for i, p in enumerate(perm):
        inv[p] = i
    return tuple(inv)


def _channel_layout(x, batch_first):
    """(xv, perm, axis): xv a C-contiguous tensor holding x's values with the axes in
    memory order (``x.permute(perm)``, a view; a copy only when x is not dense), and the
    position of x's channel axis 1 in it. ``perm`` is None when xv has x's axis order.
    With ``batch_first`` the batch axis must stay axis 0 (group and instance norm)."""
    if x.is_contiguous():
        return x, None, 1
    strides = x.stride()
    perm = tuple(sorted(range(x.dim()), key=lambda i: (-strides[i], i)))
    if not (batch_first and perm[0] != 0):
        xv = x.permute(perm)
        if xv.is_contiguous():
            return xv, perm, perm.index(1)
    return x.contiguous(), None, 1


def _empty(xv):
    return torch.empty_like(xv, memory_format=torch.contiguous_format)


def _back(t, perm):
    """Undo _channel_layout's permutation (a view: the result has x's strides)."""
    return t if perm is None else t.permute(_inverse(perm))


def _along(t, perm):
    return t if perm is None else t.permute(perm)


# ---------------------------------------------------------------------------------------
# autograd functions


# The normalizations' backward passes are differentiable once more (double backward, for
# gradient penalties and Hessian-vector products): with create_graph=True a first-order
# backward runs as _NormBackwardFn, whose own backward is fastnorm's *_double_backward.
# ``spec`` = (kind, axis, arg): kind "layer", "rms", "batch" (arg: training), "group" (arg:
# num_groups) or "instance"; the channel kinds' axis is found again from x's strides.


def _view(spec, x):
    """(xv, perm, axis): x as the kernels see it (see _channel_layout)."""
    kind, axis, _ = spec
    if kind in ("layer", "rms"):
        return x.contiguous(), None, axis
    return _channel_layout(x, batch_first=kind != "batch")


def _kernel_args(spec, dy, x, mean, rstd):
    """(perm, axis, (dy, x, mean, rstd) as NumPy arrays in the kernels' layout)."""
    xv, perm, axis = _view(spec, x)
    return perm, axis, (_np(_along(dy, perm)), _np(xv), _np(mean), _np(rstd))


def _first_order(spec, dy, x, mean, rstd, weight):
    """fastnorm's backward: (dx, dweight, dbias) tensors (dbias None for RMS norm, dweight
    None without a weight), dx with x's strides."""
    kind, _, arg = spec
    perm, axis, args = _kernel_args(spec, dy, x, mean, rstd)
    w = _np(weight)
    if kind == "layer":
        res = _fn.layer_norm_backward(*args, w, axis=axis)
    elif kind == "rms":
        res = _fn.rms_norm_backward(args[0], args[1], args[3], w, axis=axis) + (None,)
    elif kind == "batch":
        res = _fn.batch_norm_backward(*args, w, axis=axis, training=arg)
    elif kind == "group":
        res = _fn.group_norm_backward(*args, arg, w, axis=axis)
    else:
        res = _fn.instance_norm_backward(*args, w, axis=axis)
    dx, dw, db = res
    return _back(_tensor(dx), perm), _tensor(dw), _tensor(db)


def _second_order(spec, ggx, ggw, ggb, dy, x, mean, rstd, weight):
    """fastnorm's double backward: (gx, gdy, gweight) tensors, gx and gdy with x's strides."""
    kind, _, arg = spec
    perm, axis, args = _kernel_args(spec, dy, x, mean, rstd)
    gg = (None if ggx is None else _np(_along(ggx, perm)), _np(ggw), _np(ggb))
    w = _np(weight)
    if kind == "layer":
        res = _fn.layer_norm_double_backward(*gg, *args, w, axis=axis)
    elif kind == "rms":
        res = _fn.rms_norm_double_backward(gg[0], gg[1], args[0], args[1], args[3], w,
                                           axis=axis)
    elif kind == "batch":
        res = _fn.batch_norm_double_backward(*gg, *args, w, axis=axis, training=arg)
    elif kind == "group":
        res = _fn.group_norm_double_backward(*gg, *args, arg, w, axis=axis)
    else:
        res = _fn.instance_norm_double_backward(*gg, *args, w, axis=axis)
    gx, gdy, gw = res
    return _back(_tensor(gx), perm), _back(_tensor(gdy), perm), _tensor(gw)


class _NormBackwardFn(torch.autograd.Function):
    """A normalization's backward as a differentiable function of (dy, x, weight); its
    outputs are dx, then dweight (with a weight), then dbias (except RMS norm)."""

    @staticmethod
    def forward(ctx, dy, x, weight, mean, rstd, spec):
        ctx.set_materialize_grads(False)
        dx, dw, db = _first_order(spec, dy, x, mean, rstd, weight)
        ctx.save_for_backward(dy, x, weight, mean, rstd)
        ctx.spec = spec
        return tuple(t for t in (dx, dw, db) if t is not None)

    @staticmethod
    def backward(ctx, ggx, *gg):
        dy, x, weight, mean, rstd = ctx.saved_tensors
        ggw = gg[0] if weight is not None else None
        ggb = gg[-1] if ctx.spec[0] != "rms" and gg else None
        args = (ctx.spec, ggx, ggw, ggb, dy, x, mean, rstd, weight)
        if torch.is_grad_enabled():  # create_graph=True once more
            gx, gdy, *gw = _DoubleBackwardFn.apply(*args)
            gw = gw[0] if gw else None
        else:
            gx, gdy, gw = _second_order(*args)
        return _grads(ctx, gdy, gx, gw, None, None, None)


class _DoubleBackwardFn(torch.autograd.Function):
    """The double backward inside a graph (create_graph=True twice): its outputs are tied to
    its inputs so that differentiating them (a third order) raises instead of leaving out
    this part of the derivative."""

    @staticmethod
    def forward(ctx, spec, ggx, ggw, ggb, dy, x, mean, rstd, weight):
        return tuple(t for t in _second_order(spec, ggx, ggw, ggb, dy, x, mean, rstd, weight)
                     if t is not None)

    @staticmethod
    def backward(ctx, *grads):
        raise RuntimeError(
            "fastnorm.torch computes derivatives of layer, RMS, batch, group and instance "
            "norm up to the second order; a third-order derivative is not supported (compute "
            "it with torch's own operators, e.g. on a model not converted by "
            "fastnorm.torch.convert)")


def _norm_backward(ctx, dy, nparams):
    """The backward of the functions below: autograd's gradients for (x, weight[, bias])
    followed by ``nparams`` Nones."""
    x, weight, mean, rstd = ctx.saved_tensors
    if torch.is_grad_enabled():  # create_graph=True: differentiable once more
        out = list(_NormBackwardFn.apply(dy, x, weight, mean, rstd, ctx.spec))
        dx = out.pop(0)
        dw = out.pop(0) if weight is not None else None
        db = out.pop(0) if out else None
    else:
        dx, dw, db = _first_order(ctx.spec, dy, x, mean, rstd, weight)
    grads = (dx, dw) if ctx.spec[0] == "rms" else (dx, dw, db)
    return _grads(ctx, *grads, *(None,) * nparams)


class _LayerNormFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, axis, eps):
        xc = x.contiguous()
        y = _empty(xc)
        _, mean, rstd = _fn.layer_norm(_np(xc), _np(weight), _np(bias), axis=axis, eps=eps,
                                       out=_np(y), return_stats=True)
        ctx.save_for_backward(x, weight, _tensor(mean), _tensor(rstd))
        ctx.spec = ("layer", axis, None)
        return y

    @staticmethod
    def backward(ctx, dy):
        return _norm_backward(ctx, dy, 2)


class _RMSNormFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, axis, eps):
        xc = x.contiguous()
        y = _empty(xc)
        _, rstd = _fn.rms_norm(_np(xc), _np(weight), axis=axis, eps=eps, out=_np(y),
                               return_stats=True)
        ctx.save_for_backward(x, weight, None, _tensor(rstd))
        ctx.spec = ("rms", axis, None)
        return y

    @staticmethod
    def backward(ctx, dy):
        return _norm_backward(ctx, dy, 2)


class _BatchNormFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, running_mean, running_var, training, momentum, eps):
        xv, perm, axis = _channel_layout(x, batch_first=False)
        y = _empty(xv)
        _, mean, rstd = _fn.batch_norm(
            _np(xv), _np(weight), _np(bias), _np(running_mean), _np(running_var),
            training=training, momentum=momentum, eps=eps, axis=axis, out=_np(y),
            return_stats=True)
        ctx.save_for_backward(x, weight, _tensor(mean), _tensor(rstd))
        ctx.spec = ("batch", axis, training)
        return _back(y, perm)

    @staticmethod
    def backward(ctx, dy):
        return _norm_backward(ctx, dy, 5)


class _GroupNormFn(torch.autograd.Function):
    """Group norm; ``num_groups=None`` is instance norm (one channel per group)."""

    @staticmethod
    def forward(ctx, x, weight, bias, num_groups, eps, running):
        xv, perm, axis = _channel_layout(x, batch_first=True)
        y = _empty(xv)
        if num_groups is None:
            _, mean, rstd = _fn.instance_norm(_np(xv), _np(weight), _np(bias), axis=axis,
                                              eps=eps, out=_np(y), return_stats=True)
            if running is not None:
                _update_instance_stats(mean, rstd, x.numel() // (x.shape[0] * x.shape[1]),
                                       eps, *running)
        else:
            _, mean, rstd = _fn.group_norm(_np(xv), num_groups, _np(weight), _np(bias),
                                           axis=axis, eps=eps, out=_np(y), return_stats=True)
        ctx.save_for_backward(x, weight, _tensor(mean), _tensor(rstd))
        ctx.spec = ("instance", axis, None) if num_groups is None else ("group", axis,
                                                                         num_groups)
        return _back(y, perm)

    @staticmethod
    def backward(ctx, dy):
        return _norm_backward(ctx, dy, 3)


def _update_instance_stats(mean, rstd, n, eps, running_mean, running_var, momentum):
    """Running statistics of instance norm, as torch updates them: the batch norm update
    of every (sample, channel) from the same running values, averaged over the samples."""
    var = 1.0 / np.square(rstd.astype(np.float64)) - eps  # the biased variance
    unbiased = var * (n / (n - 1))
    rm, rv = _np(running_mean), _np(running_var)
    rm[...] = (1.0 - momentum) * rm + momentum * mean.astype(np.float64).mean(axis=0)
    rv[...] = (1.0 - momentum) * rv + momentum * unbiased.mean(axis=0)


class _L2NormalizeFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, dim, eps):
        x = x.contiguous()
        y = _empty(x)
        _, norm = _fn.l2_normalize(_np(x), axis=dim, eps=eps, out=_np(y), return_stats=True)
        ctx.save_for_backward(y, _tensor(norm))
        ctx.args = (dim, eps)
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, dy):
        y, norm = ctx.saved_tensors
        dim, eps = ctx.args
        dx = _fn.l2_normalize_backward(_np(dy), _np(y), _np(norm), axis=dim, eps=eps)
        return _grads(ctx, _tensor(dx), None, None)


class _WeightNormFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, v, g, axis):
        w, norm = _fn.weight_norm(_np(v), _np(g), axis=axis, return_stats=True)
        ctx.save_for_backward(v, g, _tensor(norm))
        ctx.axis = axis
        return _tensor(w)

    @staticmethod
    @once_differentiable
    def backward(ctx, dw):
        v, g, norm = ctx.saved_tensors
        dv, dg = _fn.weight_norm_backward(_np(dw), _np(v), _np(g), _np(norm), axis=ctx.axis)
        return _grads(ctx, _tensor(dv), _tensor(dg), None)


class _CosineNormFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, w, eps):
        y, x_norm, w_norm = _fn.cosine_norm(_np(x), _np(w), eps=eps, return_stats=True)
        ctx.save_for_backward(x, w, _tensor(x_norm), _tensor(w_norm))
        ctx.eps = eps
        return _tensor(y)

    @staticmethod
    @once_differentiable
    def backward(ctx, dy):
        x, w, x_norm, w_norm = ctx.saved_tensors
        dx, dw = _fn.cosine_norm_backward(_np(dy), _np(x), _np(w), _np(x_norm), _np(w_norm),
                                          eps=ctx.eps)
        return _grads(ctx, _tensor(dx), _tensor(dw), None)


class _AddNormFn(torch.autograd.Function):
    """s = x + residual, then layer norm (``centered``) or RMS norm of s; returns (y, s).
    The residual has x's trailing ``residual.dim()`` axes (it repeats over the others)."""

    @staticmethod
    def forward(ctx, x, residual, weight, bias, axis, eps, centered):
        ctx.set_materialize_grads(False)  # y or s may not reach the loss
        x = x.contiguous()
        y, s = _empty(x), _empty(x)
        args = (_np(x), _np(residual.contiguous()))
        kw = dict(axis=axis, eps=eps, out=_np(y), residual_out=_np(s), return_stats=True)
        if centered:
            _, _, mean, rstd = _fn.add_layer_norm(*args, _np(weight), _np(bias), **kw)
            ctx.save_for_backward(s, weight, _tensor(mean), _tensor(rstd))
        else:
            _, _, rstd = _fn.add_rms_norm(*args, _np(weight), **kw)
            ctx.save_for_backward(s, weight, _tensor(rstd))
        ctx.layout = (axis, centered)
        return y, s

    @staticmethod
    @once_differentiable
    def backward(ctx, dy, ds):
        axis, centered = ctx.layout
        s, weight, *stats = ctx.saved_tensors
        dw = db = None
        if dy is not None:
            args = (_np(dy), _np(ds), _np(s), *map(_np, stats), _np(weight))
            if centered:
                dx, dw, db = map(_tensor, _fn.add_layer_norm_backward(*args, axis=axis))
            else:
                dx, dw = map(_tensor, _fn.add_rms_norm_backward(*args, axis=axis))
        elif ds is not None:  # only s reaches the loss: y's parameters get no gradient
            dx = ds
        else:
            return (None,) * 7
        # dx is the residual's gradient too; autograd sums it over the axes the residual
        # repeated over (its gradient gets the residual's shape)
        return _grads(ctx, dx, dx, dw, db, None, None, None)


# ---------------------------------------------------------------------------------------
# functional API


def _shape_tuple(normalized_shape):
    if isinstance(normalized_shape, int):
        return (normalized_shape,)
    return tuple(normalized_shape)


def _rows_ok(x, shape, *params):
    k = len(shape)
    return (
        0 < k <= x.dim()
        and tuple(x.shape[x.dim() - k:]) == shape
        and all(p is None or tuple(p.shape) == shape for p in params)
    )


def layer_norm(input, normalized_shape, weight=None, bias=None, eps=1e-5):
    """Layer normalization over the trailing ``normalized_shape`` axes, as
    :func:`torch.nn.functional.layer_norm` (computed by :func:`fastnorm.layer_norm`).

    Parameters
    ----------
    input : Tensor
    normalized_shape : int or sequence of int
        The trailing shape of ``input`` normalized together.
    weight, bias : Tensor of shape ``normalized_shape``, optional
    eps : float, default 1e-5

    Returns
    -------
    Tensor, input's shape and dtype (contiguous)

    Examples
    --------
    >>> import torch, fastnorm.torch as fnt
    >>> fnt.layer_norm(torch.tensor([[1.0, 2.0, 3.0]]), (3,), eps=0.0)
    tensor([[-1.2247,  0.0000,  1.2247]])
    """
    shape = _shape_tuple(normalized_shape)
    if not (_fast(input, weight, bias) and _rows_ok(input, shape, weight, bias)
            and _eps_ok(eps)):
        return F.layer_norm(input, shape, weight, bias, eps)
    axis = input.dim() - len(shape)
    if not _needs_grad(input, weight, bias):
        x = input.contiguous()
        y = _empty(x)
        _fn.layer_norm(_np(x), _np(weight), _np(bias), axis=axis, eps=eps, out=_np(y))
        return y
    return _LayerNormFn.apply(input, weight, bias, axis, eps)


def rms_norm(input, normalized_shape, weight=None, eps=None):
    """RMS normalization over the trailing ``normalized_shape`` axes, as
    :func:`torch.nn.functional.rms_norm` (``eps=None``: ``torch.finfo(input.dtype).eps``).

    Returns
    -------
    Tensor, input's shape and dtype (contiguous)
    """
    shape = _shape_tuple(normalized_shape)
    if not (_fast(input, weight) and _rows_ok(input, shape, weight)
            and (eps is None or _eps_ok(eps))):
        return F.rms_norm(input, shape, weight, eps)
    if eps is None:
        eps = torch.finfo(input.dtype).eps
    axis = input.dim() - len(shape)
    if not _needs_grad(input, weight):
        x = input.contiguous()
        y = _empty(x)
        _fn.rms_norm(_np(x), _np(weight), axis=axis, eps=eps, out=_np(y))
        return y
    return _RMSNormFn.apply(input, weight, axis, eps)


def _add_args(input, residual, shape, *params):
    """(x, residual) for fastnorm's fused add, cast to the dtype of ``input + residual``,
    the residual's leading size-1 axes dropped; or None where torch's composite is the
    computation (the residual broadcasts another way, a dtype or device fastnorm does not
    compute, ...)."""
    if not (isinstance(input, torch.Tensor) and isinstance(residual, torch.Tensor)):
        return None
    dtype = torch.result_type(input, residual)
    if not (dtype in FAST_DTYPES and type(residual) in _PLAIN_TYPES
            and residual.dim() <= input.dim()):
        return None
    lead = 0
    while lead < residual.dim() - len(shape) and residual.shape[lead] == 1:
        lead += 1
    r = residual.to(dtype)[(0,) * lead] if lead else residual.to(dtype)
    x = input.to(dtype)
    if not (_fast(x, r, *params) and _rows_ok(x, shape, *params)
            and r.dim() >= len(shape)
            and tuple(x.shape[x.dim() - r.dim():]) == tuple(r.shape)):
        return None
    return x, r


def _add_norm_call(x, r, k, weight, bias, eps, centered):
    """_AddNormFn on fastnorm's arguments, k normalized axes; outside autograd when no
    input needs a gradient."""
    axis = x.dim() - k
    if not _needs_grad(x, r, weight, bias):
        with torch.no_grad():
            return _AddNormFn.forward(_NoCtx(), x, r, weight, bias, axis, eps, centered)
    return _AddNormFn.apply(x, r, weight, bias, axis, eps, centered)


def add_layer_norm(input, residual, normalized_shape, weight=None, bias=None, eps=1e-5):
    """``s = input + residual`` and ``layer_norm(s)`` in one pass (:func:`fastnorm.add_layer_norm`)
    with autograd; returns ``(y, s)``, as ``s = input + residual;
    y = F.layer_norm(s, normalized_shape, weight, bias, eps)`` does.

    The pre-norm transformer block's ``norm(x + residual)`` that keeps the sum as the next
    residual. Either output may be left out of the loss. The residual may broadcast over
    the leading axes of input (an ``(S, H)`` skip added to every ``(B, S, H)`` batch);
    mixed dtypes compute in the dtype of ``input + residual``.

    Returns
    -------
    (y, s): Tensors of the broadcast shape and the promoted dtype

    Examples
    --------
    >>> import torch, fastnorm.torch as fnt
    >>> y, s = fnt.add_layer_norm(torch.tensor([[1.0, 2.0, 3.0]]), torch.ones(3), 3, eps=0.0)
    >>> s, y
    (tensor([[2., 3., 4.]]), tensor([[-1.2247,  0.0000,  1.2247]]))
    """
    shape = _shape_tuple(normalized_shape)
    xr = _add_args(input, residual, shape, weight, bias) if _eps_ok(eps) else None
    if xr is None:
        s = input + residual
        return F.layer_norm(s, shape, weight, bias, eps), s
    return _add_norm_call(*xr, len(shape), weight, bias, eps, True)


def add_rms_norm(input, residual, normalized_shape, weight=None, eps=None):
    """``s = input + residual`` and ``rms_norm(s)`` in one pass (:func:`fastnorm.add_rms_norm`)
    with autograd; returns ``(y, s)``, as ``s = input + residual;
    y = F.rms_norm(s, normalized_shape, weight, eps)`` does (``eps=None``:
    ``torch.finfo(s.dtype).eps``). Broadcasting and dtypes as in :func:`add_layer_norm`.

    Returns
    -------
    (y, s)
    """
    shape = _shape_tuple(normalized_shape)
    xr = _add_args(input, residual, shape, weight) if eps is None or _eps_ok(eps) else None
    if xr is None:
        s = input + residual
        return F.rms_norm(s, shape, weight, eps), s
    if eps is None:
        eps = torch.finfo(xr[0].dtype).eps
    return _add_norm_call(*xr, len(shape), weight, None, eps, False)


def add_norm(norm, input, residual):
    """``(norm(s), s)`` with ``s = input + residual``, for a pre-norm block's norm module:
    one fused pass (:func:`add_layer_norm`, :func:`add_rms_norm`) when ``norm`` is one of
    this module's :class:`LayerNorm` or :class:`RMSNorm` (e.g. after :func:`convert`),
    otherwise ``s = input + residual`` and ``norm(s)``. A block written with it runs
    unchanged before conversion and fused after.

    Examples
    --------
    >>> import torch, fastnorm.torch as fnt
    >>> norm = torch.nn.LayerNorm(4)
    >>> x, r = torch.randn(2, 4), torch.randn(2, 4)
    >>> y0, s0 = fnt.add_norm(norm, x, r)          # torch: s = x + r; norm(s)
    >>> y1, s1 = fnt.add_norm(fnt.convert(norm), x, r)  # fused
    >>> torch.allclose(y0, y1, atol=1e-6) and torch.equal(s0, s1)
    True
    """
    if type(norm) is LayerNorm and not torch.jit.is_scripting():
        return add_layer_norm(input, residual, norm.normalized_shape, norm.weight, norm.bias,
                              norm.eps)
    if type(norm) is RMSNorm and not torch.jit.is_scripting():
        return add_rms_norm(input, residual, norm.normalized_shape, norm.weight, norm.eps)
    s = input + residual
    return norm(s), s


def _eps_ok(eps):
    """eps fastnorm accepts (finite, >= 0); torch handles any other value its own way."""
    return isinstance(eps, (int, float)) and 0.0 <= eps < float("inf")


def _momentum_ok(momentum):
    return isinstance(momentum, (int, float)) and 0.0 <= momentum <= 1.0


def _channels_ok(x, *params):
    return x.dim() >= 2 and all(p is None or tuple(p.shape) == (x.shape[1],) for p in params)


def batch_norm(input, running_mean, running_var, weight=None, bias=None, training=False,
               momentum=0.1, eps=1e-5):
    """Batch normalization over every axis but the channel axis 1, as
    :func:`torch.nn.functional.batch_norm`: in training, batch statistics, and the running
    statistics (when given) updated in place; otherwise the running statistics.

    Channels-last inputs are computed in their memory order and give a channels-last
    output, without a copy.

    Returns
    -------
    Tensor, input's shape, dtype and strides
    """
    x = input
    ok = (
        _fast(x, weight, bias)
        and _channels_ok(x, weight, bias)
        and (running_mean is None) == (running_var is None)
        and _stat_ok(running_mean, x)
        and _stat_ok(running_var, x)
        and (training or running_mean is not None)
        and _momentum_ok(momentum)
        and _eps_ok(eps)
        and not (training and x.numel() // x.shape[1] == 1)
    )
    if not ok:
        return F.batch_norm(x, running_mean, running_var, weight, bias, training, momentum,
                            eps)
    if not _needs_grad(x, weight, bias):
        xv, perm, axis = _channel_layout(x, batch_first=False)
        y = _empty(xv)
        _fn.batch_norm(_np(xv), _np(weight), _np(bias), _np(running_mean), _np(running_var),
                       training=training, momentum=momentum, eps=eps, axis=axis, out=_np(y))
        return _back(y, perm)
    return _BatchNormFn.apply(x, weight, bias, running_mean, running_var, bool(training),
                              float(momentum), eps)


def _group_call(x, weight, bias, num_groups, eps, running):
    if not _needs_grad(x, weight, bias):
        with torch.no_grad():
            return _GroupNormFn.forward(_NoCtx(), x, weight, bias, num_groups, eps, running)
    return _GroupNormFn.apply(x, weight, bias, num_groups, eps, running)


class _NoCtx:
    """Stands in for autograd's ctx when a forward runs outside autograd."""

    def save_for_backward(self, *tensors):
        pass

    def set_materialize_grads(self, value):
        pass


def group_norm(input, num_groups, weight=None, bias=None, eps=1e-5):
    """Group normalization, as :func:`torch.nn.functional.group_norm`: the channels of
    axis 1 split into ``num_groups`` groups, each (sample, group) normalized alone.

    Channels-last inputs are computed in their memory order, without a copy.

    Returns
    -------
    Tensor, input's shape, dtype and strides
    """
    x = input
    ok = (
        _fast(x, weight, bias)
        and _channels_ok(x, weight, bias)
        and isinstance(num_groups, int)
        and not isinstance(num_groups, bool)
        and num_groups > 0
        and x.shape[1] % num_groups == 0
        and x.numel() // num_groups != 1
        and _eps_ok(eps)
    )
    if not ok:
        return F.group_norm(x, num_groups, weight, bias, eps)
    return _group_call(x, weight, bias, num_groups, eps, None)


def instance_norm(input, running_mean=None, running_var=None, weight=None, bias=None,
                  use_input_stats=True, momentum=0.1, eps=1e-5):
    """Instance normalization, as :func:`torch.nn.functional.instance_norm`: each
    (sample, channel) normalized over its positions. With ``use_input_stats`` and running
    statistics, those are updated in place as torch does (the average over the samples of
    a batch-norm update); with ``use_input_stats=False`` the running statistics normalize.

    Returns
    -------
    Tensor, input's shape, dtype and strides
    """
    x = input
    ok = (
        _fast(x, weight, bias)
        and _channels_ok(x, weight, bias)
        and x.dim() >= 3
        and (running_mean is None) == (running_var is None)
        and _stat_ok(running_mean, x)
        and _stat_ok(running_var, x)
        and (use_input_stats or running_mean is not None)
        and _momentum_ok(momentum)
        and _eps_ok(eps)
        and not (use_input_stats and x.numel() // (x.shape[0] * x.shape[1]) == 1)
    )
    if not ok:
        return F.instance_norm(x, running_mean, running_var, weight, bias, use_input_stats,
                               momentum, eps)
    if not use_input_stats:  # the running statistics, per channel: batch norm's eval mode
        return batch_norm(x, running_mean, running_var, weight, bias, False, momentum, eps)
    running = None if running_mean is None else (running_mean, running_var, float(momentum))
    return _group_call(x, weight, bias, None, eps, running)


def l2_normalize(input, dim=-1, eps=1e-12):
    """``input / max(‖input‖₂, eps)`` along ``dim``: :func:`fastnorm.l2_normalize` with
    autograd; ``F.normalize(input, 2.0, dim, eps)``.

    Returns
    -------
    Tensor, input's shape and dtype (contiguous)
    """
    if not (_fast(input) and isinstance(dim, int) and -input.dim() <= dim < input.dim()
            and _eps_ok(eps)):
        return F.normalize(input, 2.0, dim, eps)
    dim %= input.dim()
    if not _needs_grad(input):
        x = input.contiguous()
        y = _empty(x)
        _fn.l2_normalize(_np(x), axis=dim, eps=eps, out=_np(y))
        return y
    return _L2NormalizeFn.apply(input, dim, eps)


def normalize(input, p=2.0, dim=1, eps=1e-12):
    """:func:`torch.nn.functional.normalize`; the Euclidean norm (``p=2``) is computed by
    fastnorm, other norms by torch."""
    if p != 2:
        return F.normalize(input, p, dim, eps)
    return l2_normalize(input, dim, eps)


def weight_norm(v, g, dim=0):
    """Weight normalization ``w = g · v / ‖v‖`` as ``torch._weight_norm(v, g, dim)``:
    the norm over every axis of ``v`` but ``dim``; ``dim=-1`` (torch's code for
    ``dim=None``) takes one norm over the whole of ``v``.

    Returns
    -------
    Tensor, v's shape and dtype
    """
    ok = _fast(v, g) and isinstance(dim, int) and -1 <= dim < v.dim()
    if ok and dim >= 0:
        C = v.shape[dim]
        ok = g.numel() == C and tuple(g.shape) in ((C,), tuple(
            C if i == dim else 1 for i in range(v.dim())))
    elif ok:
        ok = g.numel() == 1
    if not ok:
        return torch._weight_norm(v, g, dim)
    if dim == -1:
        w = _WeightNormFn.apply(v.reshape(1, -1), g.reshape(1), 0)
        return w.reshape(v.shape)
    return _WeightNormFn.apply(v, g, dim)


def cosine_norm(input, weight, eps=1e-12):
    """Cosine normalization: ``y[n, m]`` is the cosine between row n of ``input`` (N, D)
    and row m of ``weight`` (M, D), in [-1, 1] (:func:`fastnorm.cosine_norm`).

    Returns
    -------
    Tensor (N, M)
    """
    ok = (_fast(input, weight) and input.dim() == 2 and weight.dim() == 2
          and input.shape[1] == weight.shape[1] and weight.numel() > 0 and _eps_ok(eps))
    if not ok:
        y = F.normalize(input, 2.0, 1, eps) @ F.normalize(weight, 2.0, 1, eps).T
        return y + (y.clamp(-1.0, 1.0) - y).detach()  # clip; gradient as the identity
    return _CosineNormFn.apply(input, weight, eps)


def weight_norm_init_(module, x, unit_dim=None):
    """Data-dependent initialization of a weight-normalized layer (Salimans & Kingma, 2016),
    in place: ``module`` carries ``torch.nn.utils.parametrizations.weight_norm`` on its
    ``weight`` and has a bias. Runs it on the batch x with ``g = 1`` and a zero bias, then
    sets ``g = 1/σ`` and ``bias = -μ/σ`` per output unit (μ, σ of the outputs over every
    dimension but ``unit_dim``: the batch, and positions for convolutions), so that its
    outputs on x have zero mean and unit variance per unit. A unit with σ = 0 keeps
    ``g = 1``. Returns ``module``.

    Parameters
    ----------
    module : torch.nn.Module
    x : Tensor
        A batch of the module's inputs.
    unit_dim : int, optional
        The output dimension holding the units: -1 for ``nn.Linear`` (the default for it),
        1 otherwise (convolutions, channels first).

    Examples
    --------
    >>> import torch, fastnorm.torch as fnt
    >>> from torch.nn.utils.parametrizations import weight_norm
    >>> layer = weight_norm(torch.nn.Linear(5, 3))
    >>> x = torch.randn(64, 5)
    >>> y = fnt.weight_norm_init_(layer, x)(x)
    >>> bool(y.mean(0).abs().max() < 1e-5), bool((y.std(0, unbiased=False) - 1).abs().max() < 1e-5)
    (True, True)
    """
    par = getattr(module, "parametrizations", None)
    wn = getattr(par, "weight", None) if par is not None else None
    if wn is None or not hasattr(wn, "original0") or getattr(module, "bias", None) is None:
        raise ValueError("weight_norm_init_ needs a module with a bias and a weight "
                         "parametrized by torch.nn.utils.parametrizations.weight_norm")
    g, bias = wn.original0, module.bias
    if unit_dim is None:
        unit_dim = -1 if isinstance(module, nn.Linear) else 1
    with torch.no_grad():
        g.fill_(1.0)
        bias.zero_()
        t = module(x).to(torch.float64)
        t = t.movedim(unit_dim, -1).reshape(-1, t.shape[unit_dim])
        if t.shape[1] != g.shape[0] or bias.shape != (g.shape[0],):
            raise ValueError(f"the output has {t.shape[1]} units along unit_dim {unit_dim}, "
                             f"the weight {g.shape[0]}")
        mu, sigma = t.mean(dim=0), t.std(dim=0, unbiased=False)
        scale = torch.where(sigma > 0, 1.0 / torch.where(sigma > 0, sigma, 1.0), 1.0)
        g.copy_(scale.reshape(g.shape).to(g.dtype))
        bias.copy_((-mu * scale).to(bias.dtype))
    return module


# ---------------------------------------------------------------------------------------
# modules


# Each forward stays compilable by torch.jit.script: the scripted module calls torch's
# operator, and the fastnorm call sits in a method TorchScript skips (torch.jit.unused).


class LayerNorm(nn.LayerNorm):
    """:class:`torch.nn.LayerNorm` computed by fastnorm (see :func:`layer_norm`)."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if torch.jit.is_scripting():
            return F.layer_norm(input, self.normalized_shape, self.weight, self.bias, self.eps)
        return self._fastnorm(input)

    @torch.jit.unused
    def _fastnorm(self, input: torch.Tensor) -> torch.Tensor:
        return layer_norm(input, self.normalized_shape, self.weight, self.bias, self.eps)


class RMSNorm(nn.RMSNorm):
    """:class:`torch.nn.RMSNorm` computed by fastnorm (see :func:`rms_norm`)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.jit.is_scripting():
            return F.rms_norm(x, self.normalized_shape, self.weight, self.eps)
        return self._fastnorm(x)

    @torch.jit.unused
    def _fastnorm(self, x: torch.Tensor) -> torch.Tensor:
        return rms_norm(x, self.normalized_shape, self.weight, self.eps)


class GroupNorm(nn.GroupNorm):
    """:class:`torch.nn.GroupNorm` computed by fastnorm (see :func:`group_norm`)."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if torch.jit.is_scripting():
            return F.group_norm(input, self.num_groups, self.weight, self.bias, self.eps)
        return self._fastnorm(input)

    @torch.jit.unused
    def _fastnorm(self, input: torch.Tensor) -> torch.Tensor:
        return group_norm(input, self.num_groups, self.weight, self.bias, self.eps)


class _BatchNormMixin:
    """torch's _BatchNorm.forward, with fastnorm's batch_norm."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        self._check_input_dim(input)
        factor = 0.0
        if self.momentum is not None:
            factor = self.momentum
        if self.training and self.track_running_stats:
            if self.num_batches_tracked is not None:
                self.num_batches_tracked.add_(1)
                if self.momentum is None:  # cumulative moving average
                    factor = 1.0 / float(self.num_batches_tracked)
        if self.training:
            use_batch = True
        else:
            use_batch = (self.running_mean is None) and (self.running_var is None)
        keep = not self.training or self.track_running_stats
        rm = self.running_mean if keep else None
        rv = self.running_var if keep else None
        if torch.jit.is_scripting():
            return F.batch_norm(input, rm, rv, self.weight, self.bias, use_batch, factor,
                                self.eps)
        return self._fastnorm(input, rm, rv, use_batch, factor)

    @torch.jit.unused
    def _fastnorm(self, input: torch.Tensor, rm: torch.Tensor | None,
                  rv: torch.Tensor | None, use_batch: bool, factor: float) -> torch.Tensor:
        return batch_norm(input, rm, rv, self.weight, self.bias, use_batch, factor, self.eps)


class BatchNorm1d(_BatchNormMixin, nn.BatchNorm1d):
    """:class:`torch.nn.BatchNorm1d` computed by fastnorm (see :func:`batch_norm`)."""


class BatchNorm2d(_BatchNormMixin, nn.BatchNorm2d):
    """:class:`torch.nn.BatchNorm2d` computed by fastnorm (see :func:`batch_norm`)."""


class BatchNorm3d(_BatchNormMixin, nn.BatchNorm3d):
    """:class:`torch.nn.BatchNorm3d` computed by fastnorm (see :func:`batch_norm`)."""


class _InstanceNormMixin:
    """torch's _InstanceNorm with fastnorm's instance_norm."""

    def _apply_instance_norm(self, input: torch.Tensor) -> torch.Tensor:
        use_input_stats = self.training or not self.track_running_stats
        momentum = 0.0
        if self.momentum is not None:
            momentum = self.momentum
        if torch.jit.is_scripting():
            return F.instance_norm(input, self.running_mean, self.running_var, self.weight,
                                   self.bias, use_input_stats, momentum, self.eps)
        return self._fastnorm(input, use_input_stats, momentum)

    @torch.jit.unused
    def _fastnorm(self, input: torch.Tensor, use_input_stats: bool,
                  momentum: float) -> torch.Tensor:
        return instance_norm(input, self.running_mean, self.running_var, self.weight,
                             self.bias, use_input_stats, momentum, self.eps)


class InstanceNorm1d(_InstanceNormMixin, nn.InstanceNorm1d):
    """:class:`torch.nn.InstanceNorm1d` computed by fastnorm (see :func:`instance_norm`)."""


class InstanceNorm2d(_InstanceNormMixin, nn.InstanceNorm2d):
    """:class:`torch.nn.InstanceNorm2d` computed by fastnorm (see :func:`instance_norm`)."""


class InstanceNorm3d(_InstanceNormMixin, nn.InstanceNorm3d):
    """:class:`torch.nn.InstanceNorm3d` computed by fastnorm (see :func:`instance_norm`)."""


# ---------------------------------------------------------------------------------------
# IterNorm


def _iter_groups(c, group_size):
    """(start, k, d) runs of k consecutive groups of d channels (the last may be smaller)."""
    full, rem = divmod(c, group_size)
    return [r for r in ((0, full, group_size), (full * group_size, 1, rem)) if r[1] and r[2]]


def _iter_norm_composite(x, running_mean, running_whitening, weight, bias, training, momentum,
                         eps, group_size, iterations):  # fmt: skip
    """iter_norm in torch operations (any device or dtype; autograd differentiates it to any
    order): the math of :func:`fastnorm.iter_norm` with the channels on axis 1."""
    c = x.shape[1]
    xm = x.transpose(0, 1).reshape(c, -1)
    G = -(-c // group_size)
    if training:
        mean = xm.mean(dim=1)
    else:
        mean = running_mean.to(x.dtype)
    xc = xm - mean[:, None]
    parts, whitening = [], x.new_zeros((G, group_size, group_size))
    for start, k, d in _iter_groups(c, group_size):
        g0 = start // group_size
        block = xc[start:start + k * d].reshape(k, d, -1)
        if training:
            eye = torch.eye(d, dtype=x.dtype, device=x.device)
            sigma = block @ block.transpose(1, 2) / block.shape[-1] + eps * eye
            tr = sigma.diagonal(dim1=-2, dim2=-1).sum(-1)[:, None, None]
            s, p = sigma / tr, eye.expand_as(sigma)
            for _ in range(iterations):
                p = 1.5 * p - 0.5 * (p @ p @ p @ s)
            w = p / tr.sqrt()
        else:
            w = running_whitening[g0:g0 + k, :d, :d].to(x.dtype)
        whitening[g0:g0 + k, :d, :d] = w.detach()
        parts.append((w @ block).reshape(k * d, -1))
    y = torch.cat(parts).reshape(x.transpose(0, 1).shape).transpose(0, 1)
    if training and xm.shape[1] > 0:
        with torch.no_grad():
            if running_mean is not None:
                running_mean.mul_(1 - momentum).add_(mean.detach().to(running_mean.dtype),
                                                     alpha=momentum)
            if running_whitening is not None:
                running_whitening.mul_(1 - momentum).add_(
                    whitening.to(running_whitening.dtype), alpha=momentum)
    shape = (1, c) + (1,) * (x.dim() - 2)
    if weight is not None:
        y = y * weight.reshape(shape)
    if bias is not None:
        y = y + bias.reshape(shape)
    return y


class _IterNormFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, running_mean, running_whitening, training, momentum, eps,
                group_size, iterations):  # fmt: skip
        xv, perm, axis = _channel_layout(x, batch_first=False)
        y = _empty(xv)
        _, mean, whitening = _fn.iter_norm(
            _np(xv), _np(weight), _np(bias), _np(running_mean), _np(running_whitening),
            group_size=group_size, iterations=iterations, training=training,
            momentum=momentum, eps=eps, axis=axis, out=_np(y), return_stats=True)
        ctx.save_for_backward(x, weight, _tensor(mean), _tensor(whitening))
        ctx.spec = (training, eps, group_size, iterations)
        return _back(y, perm)

    @staticmethod
    @once_differentiable
    def backward(ctx, dy):
        x, weight, mean, whitening = ctx.saved_tensors
        training, eps, group_size, iterations = ctx.spec
        xv, perm, axis = _channel_layout(x, batch_first=False)
        dx, dw, db = _fn.iter_norm_backward(
            _np(_along(dy, perm)), _np(xv), _np(mean), _np(weight), group_size=group_size,
            iterations=iterations, eps=eps, axis=axis, training=training,
            whitening=None if training else _np(whitening))
        return _grads(ctx, _back(_tensor(dx), perm), _tensor(dw), _tensor(db),
                      *(None,) * 7)


def _whitening_ok(r, x, G, d):
    return r is None or (
        _tensor_ok(r, torch.float32 if x.dtype in _HALF else x.dtype)
        and tuple(r.shape) == (G, d, d)
        and r.is_contiguous()
        and not r.requires_grad
    )


def iter_norm(input, running_mean=None, running_whitening=None, weight=None, bias=None,
              training=True, momentum=0.1, eps=1e-5, group_size=16, iterations=5):
    """Iterative whitening (IterNorm) of groups of ``group_size`` channels along axis 1:
    see :func:`fastnorm.iter_norm` for the math. In training the batch statistics are used
    and the running ones (when given: ``running_mean`` (C,), ``running_whitening``
    (ceil(C / group_size), group_size, group_size)) updated in place; otherwise the running
    ones (both required).

    Differentiable once through fastnorm's kernels (an exact backward through the Newton
    iterations); inputs fastnorm does not compute (another device or dtype, ...) go through
    a composite of torch operations instead, with the same math.

    Returns
    -------
    Tensor, input's shape, dtype and strides
    """
    x = input
    if isinstance(group_size, bool) or not isinstance(group_size, int) or group_size < 1:
        raise ValueError(f"group_size must be a positive integer, got {group_size!r}")
    if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 0:
        raise ValueError(f"iterations must be a non-negative integer, got {iterations!r}")
    if x.dim() < 2:
        raise ValueError(f"iter_norm expects at least 2 dimensions (N, C, ...), got {x.dim()}")
    if not training and (running_mean is None or running_whitening is None):
        raise ValueError("iter_norm with training=False needs running_mean and "
                         "running_whitening")
    G = -(-x.shape[1] // group_size)
    ok = (
        _fast(x, weight, bias)
        and _channels_ok(x, weight, bias)
        and _stat_ok(running_mean, x)
        and _whitening_ok(running_whitening, x, G, group_size)
        and _momentum_ok(momentum)
        and _eps_ok(eps)
    )
    if not ok:
        return _iter_norm_composite(x, running_mean, running_whitening, weight, bias,
                                    training, momentum, eps, group_size, iterations)
    if not _needs_grad(x, weight, bias):
        with torch.no_grad():
            return _IterNormFn.forward(_NoCtx(), x, weight, bias, running_mean,
                                       running_whitening, bool(training), float(momentum),
                                       eps, group_size, iterations)
    return _IterNormFn.apply(x, weight, bias, running_mean, running_whitening, bool(training),
                             float(momentum), eps, group_size, iterations)


class _IterNorm(nn.Module):
    """IterNorm as a module: per-channel affine parameters (ones and zeros) and, with
    ``track_running_stats``, the buffers ``running_mean`` (zeros) and ``running_whitening``
    (identity blocks), used in evaluation mode; without them the batch statistics are used
    in both modes."""

    _dims: tuple[int, ...] = ()

    def __init__(self, num_features, group_size=16, iterations=5, eps=1e-5, momentum=0.1,
                 affine=True, track_running_stats=True, device=None, dtype=None):
        super().__init__()
        kw = {"device": device, "dtype": dtype}
        self.num_features, self.group_size, self.iterations = num_features, group_size, iterations
        self.eps, self.momentum, self.affine = eps, momentum, affine
        self.track_running_stats = track_running_stats
        if affine:
            self.weight = nn.Parameter(torch.ones(num_features, **kw))
            self.bias = nn.Parameter(torch.zeros(num_features, **kw))
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        if track_running_stats:
            G = -(-num_features // group_size)
            rw = torch.zeros(G, group_size, group_size, **kw)
            for start, k, d in _iter_groups(num_features, group_size):
                g0 = start // group_size
                rw[g0:g0 + k, :d, :d] = torch.eye(d, **kw)
            self.register_buffer("running_mean", torch.zeros(num_features, **kw))
            self.register_buffer("running_whitening", rw)
        else:
            self.register_buffer("running_mean", None)
            self.register_buffer("running_whitening", None)

    def extra_repr(self):
        return (f"{self.num_features}, group_size={self.group_size}, "
                f"iterations={self.iterations}, eps={self.eps}, momentum={self.momentum}, "
                f"affine={self.affine}, track_running_stats={self.track_running_stats}")

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if input.dim() not in self._dims:
            raise ValueError(f"{type(self).__name__} expects a {' or '.join(map(str, self._dims))}"
                             f"-d input, got {input.dim()}-d")
        use_batch = self.training or self.running_mean is None
        return iter_norm(input, self.running_mean, self.running_whitening, self.weight,
                         self.bias, use_batch, self.momentum, self.eps, self.group_size,
                         self.iterations)


class IterNorm1d(_IterNorm):
    """IterNorm of (N, C) or (N, C, L) inputs (see :func:`iter_norm`)."""

    _dims = (2, 3)


class IterNorm2d(_IterNorm):
    """IterNorm of (N, C, H, W) inputs, channels_last ones included (see
    :func:`iter_norm`)."""

    _dims = (4,)


_CONVERSIONS = {
    nn.LayerNorm: LayerNorm,
    nn.RMSNorm: RMSNorm,
    nn.GroupNorm: GroupNorm,
    nn.BatchNorm1d: BatchNorm1d,
    nn.BatchNorm2d: BatchNorm2d,
    nn.BatchNorm3d: BatchNorm3d,
    nn.InstanceNorm1d: InstanceNorm1d,
    nn.InstanceNorm2d: InstanceNorm2d,
    nn.InstanceNorm3d: InstanceNorm3d,
}


def convert(module):
    """Make every normalization layer of ``module`` (itself included) compute with
    fastnorm, in place, and return ``module``.

    Each :class:`torch.nn.LayerNorm`, ``RMSNorm``, ``BatchNorm1d/2d/3d``, ``GroupNorm`` and
    ``InstanceNorm1d/2d/3d`` (exactly these classes, not subclasses of them, whose forward
    may differ) becomes an instance of the fastnorm.torch subclass of the same name: the
    same object, with the same Parameters, buffers (running statistics,
    ``num_batches_tracked``), hooks and settings, so ``state_dict()``, ``repr`` and
    ``isinstance`` checks are unchanged and an optimizer built before keeps working. Inputs
    fastnorm does not compute (other devices or dtypes) still go to torch. Lazy modules
    (``LazyBatchNorm2d``, ...) are converted once they have become their torch.nn class,
    after their first forward; ``SyncBatchNorm`` is left alone.

    Parameters
    ----------
    module : torch.nn.Module

    Returns
    -------
    module

    Examples
    --------
    >>> import torch, fastnorm.torch as fnt
    >>> model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.BatchNorm2d(8))
    >>> fnt.convert(model)[1].__class__ is fnt.BatchNorm2d
    True
    """
    if not isinstance(module, nn.Module):
        raise TypeError(f"convert expects a torch.nn.Module, got {type(module).__name__}")
    for m in module.modules():
        cls = _CONVERSIONS.get(type(m))
        if cls is not None:
            m.__class__ = cls
    return module


# ---------------------------------------------------------------------------------------
# torch.distributed as a communicator


class TorchDistributedComm:
    """An mpi4py-style communicator over :mod:`torch.distributed` (any backend that runs
    on CPU tensors, e.g. gloo), for code written against ``comm.allreduce`` /
    ``comm.allgather`` with NumPy arrays.

    Parameters
    ----------
    group : torch.distributed.ProcessGroup, optional
        The process group (default: the world). ``torch.distributed`` must be initialized.

    Examples
    --------
    >>> import torch.distributed as dist                      # doctest: +SKIP
    >>> dist.init_process_group("gloo", init_method="tcp://127.0.0.1:29500",
    ...                         rank=rank, world_size=2)      # doctest: +SKIP
    >>> comm = TorchDistributedComm()                         # doctest: +SKIP
    >>> comm.allreduce(np.array([1.0, 2.0]))                   # doctest: +SKIP
    array([2., 4.])
    """

    def __init__(self, group=None):
        import torch.distributed as dist

        if not dist.is_available() or not dist.is_initialized():
            raise RuntimeError("torch.distributed is not initialized: call "
                               "torch.distributed.init_process_group first")
        self._dist = dist
        self.group = group

    @property
    def rank(self):
        return self._dist.get_rank(self.group)

    @property
    def size(self):
        return self._dist.get_world_size(self.group)

    def Get_rank(self):
        return self.rank

    def Get_size(self):
        return self.size

    @staticmethod
    def _arrays(obj):
        if isinstance(obj, (tuple, list)):
            return [np.asarray(a) for a in obj], type(obj)
        return [np.asarray(obj)], None

    @staticmethod
    def _pack(arrays, kind):
        return arrays[0] if kind is None else kind(arrays)

    def allreduce(self, obj):
        """Elementwise sum over the ranks of a NumPy array, or of each array of a tuple or
        list (one message per dtype); returns NumPy arrays of the same shapes and dtypes,
        in a tuple or list like ``obj``."""
        arrays, kind = self._arrays(obj)
        out = [None] * len(arrays)
        for dtype in dict.fromkeys(a.dtype for a in arrays):
            idx = [i for i, a in enumerate(arrays) if a.dtype == dtype]
            flat = np.concatenate([arrays[i].ravel() for i in idx])  # a new array
            self._dist.all_reduce(torch.from_numpy(flat), op=self._dist.ReduceOp.SUM,
                                  group=self.group)
            start = 0
            for i in idx:
                n = arrays[i].size
                out[i] = flat[start:start + n].reshape(arrays[i].shape)
                start += n
        return self._pack(out, kind)

    def allgather(self, obj):
        """Every rank's NumPy array (or tuple/list of arrays), in rank order. All ranks must
        pass arrays of the same shapes and dtypes."""
        arrays, kind = self._arrays(obj)
        per_rank = [[] for _ in range(self.size)]
        for a in arrays:
            t = torch.from_numpy(np.ascontiguousarray(a))
            parts = [torch.empty_like(t) for _ in range(self.size)]
            self._dist.all_gather(parts, t, group=self.group)
            for r, p in enumerate(parts):
                per_rank[r].append(p.numpy())
        return [self._pack(arrs, kind) for arrs in per_rank]
