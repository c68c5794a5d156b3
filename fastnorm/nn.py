"""Normalization layers as NumPy objects with parameters, forward and backward.

Each layer wraps one pair of fastnorm functions. The conventions are the same for all:

- ``forward(x, training=True)`` returns ``y`` and keeps what the backward pass needs (the
  input and the saved statistics); ``__call__`` is ``forward``.
- ``backward(dy)`` returns ``dx`` for the most recent ``forward`` and stores the gradient of
  every parameter in ``layer.grads[name]`` (replacing, not accumulating, the previous one).
- The parameters are attributes (``layer.weight``, ``layer.bias``; ``None`` when the layer
  has none), also listed by ``layer.params()`` as ``(name, array, grad)`` triples, so that a
  plain SGD step is ``for _, p, g in model.params(): p -= lr * g`` (in place: the arrays
  are the layer's own).
- Parameters and gradients have the layer's ``dtype`` (float32 unless given); the input
  may be float32 or float64 (the parameters are cast to it for the computation).

:class:`BatchNorm` keeps ``running_mean`` and ``running_var`` (not parameters: updated by
``forward`` in training mode, with PyTorch's momentum rule, and used with
``training=False``).

:class:`Linear`, :class:`ReLU` and :class:`Sequential` are small helpers that make the
layers usable in a network; see ``examples/train_numpy.py``.

Examples
--------
>>> import numpy as np
>>> from fastnorm import nn
>>> ln = nn.LayerNorm(8)
>>> x = np.random.default_rng(0).standard_normal((4, 8), dtype=np.float32)
>>> y = ln.forward(x)
>>> dx = ln.backward(np.ones_like(y))
>>> sorted(ln.grads)
['bias', 'weight']
"""

from __future__ import annotations

import operator

import numpy as np

from . import _channels, _rows, _validate, _vectors, _whiten

__all__ = [
    "Module",
    "Linear",
    "ReLU",
    "Sequential",
    "LayerNorm",
    "RMSNorm",
    "BatchNorm",
    "GroupNorm",
    "InstanceNorm",
    "IterNorm",
    "WeightNorm",
    "CosineNorm",
]


def _float_dtype(dtype):
    dtype = np.dtype(dtype)
    if dtype not in (np.float32, np.float64):
        raise TypeError(f"dtype must be float32 or float64, got {dtype}")
    return dtype


def _positive_int(n, name):
    try:
        n = operator.index(n)
    except TypeError:
        raise TypeError(f"{name} must be an integer, got {n!r}") from None
    if n < 1:
        raise ValueError(f"{name} must be >= 1, got {n}")
    return n


def _shape(shape, name):
    if isinstance(shape, (int, np.integer)):
        shape = (shape,)
    shape = tuple(_positive_int(s, name) for s in shape)
    if not shape:
        raise ValueError(f"{name} must have at least one dimension")
    return shape


def _rng(seed):
    return seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)


class Module:
    """Base class: parameter bookkeeping shared by every layer.

    Subclasses list their parameter names in ``_param_names`` and implement
    ``forward(x, training=True)`` and ``backward(dy)``.
    """

    _param_names: tuple[str, ...] = ()

    def __init__(self, dtype=np.float32):
        self.dtype = _float_dtype(dtype)
        self.grads: dict[str, np.ndarray] = {}
        self._cache = None

    def _init_grads(self):
        self.grads = {name: np.zeros_like(p) for name, p in self._own_params()}

    def _own_params(self):
        for name in self._param_names:
            p = getattr(self, name)
            if p is not None:
                yield name, p

    def params(self):
        """The trainable parameters as a list of ``(name, array, grad)``.

        ``array`` is the parameter itself (update it in place); ``grad`` is its gradient
        from the latest ``backward`` (zeros before the first).
        """
        return [(name, p, self.grads[name]) for name, p in self._own_params()]

    def zero_grad(self):
        """Set every stored gradient to zero."""
        for _, _, g in self.params():
            g[...] = 0

    def _store_grad(self, name, g):
        p = getattr(self, name)
        if g is not None and p is not None:
            self.grads[name] = np.asarray(g, dtype=p.dtype)

    def _saved(self):
        if self._cache is None:
            raise RuntimeError(f"{type(self).__name__}.backward called before forward")
        return self._cache

    def __call__(self, x, training=True):
        return self.forward(x, training=training)

    def forward(self, x, training=True):  # pragma: no cover - abstract
        raise NotImplementedError

    def backward(self, dy):  # pragma: no cover - abstract
        raise NotImplementedError


class Linear(Module):
    """Fully connected layer ``y = x Wᵀ + b`` over the last axis.

    Parameters
    ----------
    in_features, out_features : int
        Sizes of the last axis of the input and of the output.
    bias : bool, default True
        Whether to add a learnable bias.
    rng : numpy.random.Generator or int or None
        Source of the initial weights, uniform in ``±1/sqrt(in_features)``.
    dtype : float32 or float64

    Attributes
    ----------
    weight : ndarray, shape (out_features, in_features)
    bias : ndarray, shape (out_features,), or None
    """

    _param_names = ("weight", "bias")

    def __init__(self, in_features, out_features, bias=True, *, rng=None, dtype=np.float32):
        super().__init__(dtype)
        self.in_features = _positive_int(in_features, "in_features")
        self.out_features = _positive_int(out_features, "out_features")
        bound = 1.0 / np.sqrt(self.in_features)
        gen = _rng(rng)
        shape = (self.out_features, self.in_features)
        self.weight = gen.uniform(-bound, bound, shape).astype(self.dtype)
        self.bias = (gen.uniform(-bound, bound, self.out_features).astype(self.dtype)
                     if bias else None)
        self._init_grads()

    def forward(self, x, training=True):
        x = np.asarray(x)
        if x.ndim < 1 or x.shape[-1] != self.in_features:
            raise ValueError(f"Linear expects a last axis of {self.in_features}, "
                             f"got shape {x.shape}")
        y = x @ self.weight.T.astype(x.dtype, copy=False)
        if self.bias is not None:
            y += self.bias.astype(y.dtype, copy=False)
        self._cache = x
        return y

    def backward(self, dy):
        x = self._saved()
        dy = np.asarray(dy)
        x2 = x.reshape(-1, self.in_features)
        dy2 = dy.reshape(-1, self.out_features)
        self._store_grad("weight", dy2.T @ x2)
        if self.bias is not None:
            self._store_grad("bias", dy2.sum(axis=0))
        return dy @ self.weight.astype(dy.dtype, copy=False)


class ReLU(Module):
    """``y = max(x, 0)``; no parameters."""

    def forward(self, x, training=True):
        x = np.asarray(x)
        self._cache = x > 0
        return np.where(self._cache, x, 0).astype(x.dtype, copy=False)

    def backward(self, dy):
        return np.where(self._saved(), dy, 0).astype(np.asarray(dy).dtype, copy=False)


class Sequential(Module):
    """Layers applied one after the other; ``backward`` runs them in reverse.

    ``params()`` names each parameter ``"<index>.<name>"``.
    """

    def __init__(self, *layers):
        super().__init__()
        self.layers = list(layers)

    def params(self):
        return [(f"{i}.{name}", p, g) for i, layer in enumerate(self.layers)
                for name, p, g in layer.params()]

    def forward(self, x, training=True):
        for layer in self.layers:
            x = layer.forward(x, training=training)
        return x

    def backward(self, dy):
        for layer in reversed(self.layers):
            dy = layer.backward(dy)
        return dy


class _Affine(Module):
    """A normalization with an optional per-element weight (ones) and bias (zeros)."""

    _param_names = ("weight", "bias")

    def __init__(self, shape, affine, bias, dtype):
        super().__init__(dtype)
        self.weight = np.ones(shape, self.dtype) if affine else None
        self.bias = np.zeros(shape, self.dtype) if affine and bias else None
        self._init_grads()


class LayerNorm(_Affine):
    """Layer normalization over the trailing ``normalized_shape`` axes.

    ``y = (x - mean) / sqrt(var + eps) * weight + bias``; see :func:`fastnorm.layer_norm`.

    Parameters
    ----------
    normalized_shape : int or tuple of int
        The shape of the trailing axes of the input that are normalized together.
    eps : float, default 1e-5
    elementwise_affine : bool, default True
        Whether to learn ``weight`` (ones) and ``bias`` (zeros) of shape ``normalized_shape``.
    dtype : float32 or float64
    """

    def __init__(self, normalized_shape, eps=1e-5, elementwise_affine=True, *,
                 dtype=np.float32):
        self.normalized_shape = _shape(normalized_shape, "normalized_shape")
        self.eps = eps
        super().__init__(self.normalized_shape, elementwise_affine, True, dtype)

    def _axis(self, x):
        k = len(self.normalized_shape)
        if x.ndim < k or x.shape[x.ndim - k:] != self.normalized_shape:
            raise ValueError(f"{type(self).__name__} expects trailing axes "
                             f"{self.normalized_shape}, got shape {x.shape}")
        return x.ndim - k

    def forward(self, x, training=True):
        x = np.asarray(x)
        axis = self._axis(x)
        y, mean, rstd = _rows.layer_norm(x, self.weight, self.bias, axis=axis, eps=self.eps,
                                         return_stats=True)
        self._cache = (x, mean, rstd, axis)
        return y

    def backward(self, dy):
        x, mean, rstd, axis = self._saved()
        dx, dw, db = _rows.layer_norm_backward(dy, x, mean, rstd, self.weight, axis=axis)
        self._store_grad("weight", dw)
        self._store_grad("bias", db)
        return dx


class RMSNorm(LayerNorm):
    """RMS normalization over the trailing ``normalized_shape`` axes.

    ``y = x / sqrt(mean(x²) + eps) * weight``, no bias; see :func:`fastnorm.rms_norm`.

    Parameters
    ----------
    normalized_shape : int or tuple of int
    eps : float, default 1e-6
    elementwise_affine : bool, default True
        Whether to learn ``weight`` (ones) of shape ``normalized_shape``.
    dtype : float32 or float64
    """

    def __init__(self, normalized_shape, eps=1e-6, elementwise_affine=True, *,
                 dtype=np.float32):
        self.normalized_shape = _shape(normalized_shape, "normalized_shape")
        self.eps = eps
        _Affine.__init__(self, self.normalized_shape, elementwise_affine, False, dtype)

    def forward(self, x, training=True):
        x = np.asarray(x)
        axis = self._axis(x)
        y, rstd = _rows.rms_norm(x, self.weight, axis=axis, eps=self.eps, return_stats=True)
        self._cache = (x, rstd, axis)
        return y

    def backward(self, dy):
        x, rstd, axis = self._saved()
        dx, dw = _rows.rms_norm_backward(dy, x, rstd, self.weight, axis=axis)
        self._store_grad("weight", dw)
        return dx


class BatchNorm(_Affine):
    """Batch normalization of the channel axis ``axis``, with running statistics.

    In training mode (``forward(x, training=True)``) each channel is normalized with the
    batch's mean and biased variance, and the running statistics are updated in place:
    ``running = (1 - momentum) * running + momentum * batch`` (the unbiased variance for
    ``running_var``). With ``training=False`` the running statistics are used and left
    unchanged, and ``backward`` treats them as constants. See :func:`fastnorm.batch_norm`.

    Parameters
    ----------
    num_features : int
        The number of channels C.
    eps : float, default 1e-5
    momentum : float, default 0.1
    affine : bool, default True
        Whether to learn ``weight`` (ones) and ``bias`` (zeros), shape (C,).
    track_running_stats : bool, default True
        Whether to keep ``running_mean`` (zeros) and ``running_var`` (ones). Without them
        (``None``) the batch statistics are used in both modes.
    axis : int, default 1
        The channel axis: 1 for (N, C, ...) inputs, -1 for channels-last ones.
    center_only : bool, default False
        Mean-only batch norm, ``y = x - mean + bias`` (no variance, no weight; ``affine``
        learns the bias alone and ``running_var`` is None): the pairing with
        :class:`WeightNorm` of Salimans & Kingma (2016). See ``batch_norm(...,
        center_only=True)``.
    dtype : float32 or float64
    """

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True,
                 track_running_stats=True, *, axis=1, center_only=False, dtype=np.float32):
        self.num_features = _positive_int(num_features, "num_features")
        _validate.check_momentum(momentum)
        self.eps, self.momentum, self.axis = eps, momentum, operator.index(axis)
        self.center_only = bool(center_only)
        super().__init__((self.num_features,), affine, True, dtype)
        if self.center_only and affine:
            self.weight = None
            self._init_grads()
        self.running_mean = self.running_var = None
        if track_running_stats:
            self.running_mean = np.zeros(self.num_features, self.dtype)
            if not self.center_only:
                self.running_var = np.ones(self.num_features, self.dtype)

    def forward(self, x, training=True):
        x = np.asarray(x)
        # Without running statistics the batch's are used in evaluation too (and nothing
        # is updated).
        use_batch = bool(training) or self.running_mean is None
        y, mean, rstd = _channels.batch_norm(
            x, self.weight, self.bias, self.running_mean, self.running_var,
            training=use_batch, momentum=self.momentum, eps=self.eps, axis=self.axis,
            return_stats=True, center_only=self.center_only,
        )
        self._cache = (x, mean, rstd, use_batch)
        return y

    def backward(self, dy):
        x, mean, rstd, use_batch = self._saved()
        dx, dw, db = _channels.batch_norm_backward(dy, x, mean, rstd, self.weight,
                                                   axis=self.axis, training=use_batch,
                                                   center_only=self.center_only)
        self._store_grad("weight", dw)
        self._store_grad("bias", db)
        return dx


class GroupNorm(_Affine):
    """Group normalization: the C channels in ``num_groups`` groups, each normalized with
    its positions, per sample; see :func:`fastnorm.group_norm`.

    Parameters
    ----------
    num_groups : int
        G, a divisor of ``num_channels``.
    num_channels : int
        C.
    eps : float, default 1e-5
    affine : bool, default True
        Whether to learn ``weight`` (ones) and ``bias`` (zeros), shape (C,).
    axis : int, default 1
        The channel axis (1 or -1 for channels-last).
    dtype : float32 or float64
    """

    def __init__(self, num_groups, num_channels, eps=1e-5, affine=True, *, axis=1,
                 dtype=np.float32):
        self.num_groups = _positive_int(num_groups, "num_groups")
        self.num_channels = _positive_int(num_channels, "num_channels")
        if self.num_channels % self.num_groups:
            raise ValueError(f"num_channels ({self.num_channels}) must be divisible by "
                             f"num_groups ({self.num_groups})")
        self.eps, self.axis = eps, operator.index(axis)
        super().__init__((self.num_channels,), affine, True, dtype)

    def forward(self, x, training=True):
        x = np.asarray(x)
        y, mean, rstd = _channels.group_norm(x, self.num_groups, self.weight, self.bias,
                                             axis=self.axis, eps=self.eps, return_stats=True)
        self._cache = (x, mean, rstd)
        return y

    def backward(self, dy):
        x, mean, rstd = self._saved()
        dx, dw, db = _channels.group_norm_backward(dy, x, mean, rstd, self.num_groups,
                                                   self.weight, axis=self.axis)
        self._store_grad("weight", dw)
        self._store_grad("bias", db)
        return dx


class IterNorm(_Affine):
    """Iterative whitening (IterNorm) of groups of ``group_size`` channels, with running
    statistics: in training mode each group is centred and whitened with the batch's
    covariance (``iterations`` Newton steps) and ``running_mean`` / ``running_whitening``
    are updated in place; with ``training=False`` they are used (and ``backward`` treats
    them as constants). See :func:`fastnorm.iter_norm`.

    Parameters
    ----------
    num_features : int
        The number of channels C.
    group_size : int, default 16
    iterations : int, default 5
    eps : float, default 1e-5
    momentum : float, default 0.1
    affine : bool, default True
        Whether to learn ``weight`` (ones) and ``bias`` (zeros), shape (C,).
    track_running_stats : bool, default True
        Whether to keep ``running_mean`` (zeros) and ``running_whitening`` (identity
        blocks, shape (ceil(C / group_size), group_size, group_size)). Without them the
        batch statistics are used in both modes.
    axis : int, default 1
        The channel axis: 1 for (N, C, ...) inputs, -1 for channels-last ones.
    dtype : float32 or float64
    """

    def __init__(self, num_features, group_size=16, iterations=5, eps=1e-5, momentum=0.1,
                 affine=True, track_running_stats=True, *, axis=1, dtype=np.float32):
        self.num_features = _positive_int(num_features, "num_features")
        self.group_size = _positive_int(group_size, "group_size")
        self.iterations = operator.index(iterations)
        if self.iterations < 0:
            raise ValueError(f"iterations must be >= 0, got {self.iterations}")
        _validate.check_momentum(momentum)
        self.eps, self.momentum, self.axis = eps, momentum, operator.index(axis)
        super().__init__((self.num_features,), affine, True, dtype)
        self.running_mean = self.running_whitening = None
        if track_running_stats:
            d, C = self.group_size, self.num_features
            G = -(-C // d)
            self.running_mean = np.zeros(C, self.dtype)
            self.running_whitening = np.zeros((G, d, d), self.dtype)
            for g in range(G):
                k = min(d, C - g * d)
                self.running_whitening[g, :k, :k] = np.eye(k)

    def _kw(self):
        return {"group_size": self.group_size, "iterations": self.iterations, "eps": self.eps,
                "axis": self.axis}

    def forward(self, x, training=True):
        x = np.asarray(x)
        use_batch = bool(training) or self.running_mean is None
        y, mean, whitening = _whiten.iter_norm(
            x, self.weight, self.bias, self.running_mean, self.running_whitening,
            training=use_batch, momentum=self.momentum, return_stats=True, **self._kw())
        self._cache = (x, mean, whitening, use_batch)
        return y

    def backward(self, dy):
        x, mean, whitening, use_batch = self._saved()
        dx, dw, db = _whiten.iter_norm_backward(
            dy, x, mean, self.weight, training=use_batch,
            whitening=None if use_batch else whitening, **self._kw())
        self._store_grad("weight", dw)
        self._store_grad("bias", db)
        return dx


class InstanceNorm(_Affine):
    """Instance normalization: each (sample, channel) over its positions, in both modes
    (no running statistics); see :func:`fastnorm.instance_norm`.

    Parameters
    ----------
    num_features : int
        C.
    eps : float, default 1e-5
    affine : bool, default False
        Whether to learn ``weight`` (ones) and ``bias`` (zeros), shape (C,) (off by
        default, as in PyTorch).
    axis : int, default 1
        The channel axis (1 or -1 for channels-last).
    dtype : float32 or float64
    """

    def __init__(self, num_features, eps=1e-5, affine=False, *, axis=1, dtype=np.float32):
        self.num_features = _positive_int(num_features, "num_features")
        self.eps, self.axis = eps, operator.index(axis)
        super().__init__((self.num_features,), affine, True, dtype)

    def forward(self, x, training=True):
        x = np.asarray(x)
        y, mean, rstd = _channels.instance_norm(x, self.weight, self.bias, axis=self.axis,
                                                eps=self.eps, return_stats=True)
        self._cache = (x, mean, rstd)
        return y

    def backward(self, dy):
        x, mean, rstd = self._saved()
        dx, dw, db = _channels.instance_norm_backward(dy, x, mean, rstd, self.weight,
                                                      axis=self.axis)
        self._store_grad("weight", dw)
        self._store_grad("bias", db)
        return dx


class WeightNorm(Module):
    """Weight normalization of another layer's parameter: ``w = g · v / ‖v‖``.

    The wrapped layer's parameter ``name`` is replaced by two parameters, the direction
    ``v`` (initialized to the current weight) and the magnitude ``g`` (its norm, so that
    the layer computes the same function at first). ``forward`` writes ``w`` into the
    wrapped layer before calling it; ``backward`` turns its weight gradient into those of
    ``v`` and ``g`` (:func:`fastnorm.weight_norm_backward`). The norm runs over every axis
    but ``axis`` (0: one norm per output unit of a :class:`Linear`).

    Parameters
    ----------
    layer : Module
        A layer with a parameter called ``name`` (e.g. :class:`Linear`).
    name : str, default "weight"
    axis : int, default 0

    Attributes
    ----------
    v : ndarray, the shape of the weight
    g : ndarray, shape (weight.shape[axis],)

    ``params()`` lists ``v``, ``g`` and the wrapped layer's other parameters.
    """

    def __init__(self, layer, name="weight", *, axis=0):
        w = getattr(layer, name, None)
        if not isinstance(w, np.ndarray):
            raise ValueError(f"{type(layer).__name__} has no array parameter {name!r}")
        super().__init__(w.dtype)
        self.layer, self.name = layer, name
        self.axis = _validate.normalize_axis(axis, w.ndim)
        self.v = w.copy()
        other = tuple(i for i in range(w.ndim) if i != self.axis)
        self.g = np.sqrt(np.sum(w.astype(np.float64) ** 2, axis=other)).astype(w.dtype)
        self._param_names = ("v", "g")
        self._init_grads()
        self._norm = None

    def params(self):
        own = [(name, p, self.grads[name]) for name, p in self._own_params()]
        rest = [(n, p, g) for n, p, g in self.layer.params() if n != self.name]
        return own + rest

    def init_from_data(self, x, *, unit_axis=-1):
        """Data-dependent initialization (Salimans & Kingma, 2016): make the wrapped layer's
        outputs on the batch ``x`` have zero mean and unit variance per output unit.

        Runs the layer on x with ``g = 1`` and a zero bias, giving pre-activations t with
        mean μ and standard deviation σ per unit (over every axis of the output but
        ``unit_axis``: the batch, and positions for conv-like layers), then sets ``g = 1/σ``
        and the layer's bias to ``-μ/σ``; v keeps its direction. A unit whose t is constant
        (σ = 0) keeps ``g = 1``. Updates the parameters in place (their gradients are left
        alone) and returns self.

        Parameters
        ----------
        x : array_like
            A batch of the layer's inputs.
        unit_axis : int, default -1
            The axis of the layer's output that holds its output units (-1 for
            :class:`Linear`).

        Raises
        ------
        ValueError
            The wrapped layer has no ``bias``, or its output's ``unit_axis`` does not have
            one entry per unit of g.
        """
        bias = getattr(self.layer, "bias", None)
        if not isinstance(bias, np.ndarray):
            raise ValueError(f"init_from_data needs a bias in the wrapped "
                             f"{type(self.layer).__name__} (it is set to -mean/std)")
        self.g[...] = 1
        bias[...] = 0
        t = np.asarray(self.forward(x, training=False), dtype=np.float64)
        ax = _validate.normalize_axis(unit_axis, t.ndim)
        if t.shape[ax] != self.g.shape[0] or bias.shape != self.g.shape:
            raise ValueError(f"the layer's output has {t.shape[ax]} entries along unit_axis "
                             f"{unit_axis} and its bias shape {bias.shape}, for "
                             f"{self.g.shape[0]} units")
        t = np.moveaxis(t, ax, -1).reshape(-1, t.shape[ax])
        mu, sigma = t.mean(axis=0), t.std(axis=0)
        scale = np.where(sigma > 0, 1.0 / np.where(sigma > 0, sigma, 1.0), 1.0)
        self.g[...] = scale
        bias[...] = -mu * scale
        self._weight()
        return self

    def _weight(self):
        w, norm = _vectors.weight_norm(self.v, self.g, axis=self.axis, return_stats=True)
        setattr(self.layer, self.name, w)
        self._norm = norm
        return w

    def forward(self, x, training=True):
        self._weight()
        y = self.layer.forward(x, training=training)
        self._cache = self._norm
        return y

    def backward(self, dy):
        norm = self._saved()
        dx = self.layer.backward(dy)
        dv, dg = _vectors.weight_norm_backward(self.layer.grads[self.name], self.v, self.g,
                                               norm, axis=self.axis)
        self._store_grad("v", dv)
        self._store_grad("g", dg)
        return dx


class CosineNorm(Module):
    """Cosine normalization: the cosines between the input and ``out_features`` weight
    vectors, ``y[..., m] = x·w_m / (‖x‖ ‖w_m‖)``, in [-1, 1], in place of a linear layer's
    dot products; see :func:`fastnorm.cosine_norm`.

    Parameters
    ----------
    in_features, out_features : int
        D and M: the input's last axis, and the output's.
    eps : float, default 1e-12
    rng : numpy.random.Generator or int or None
        Source of the initial weights (standard normal).
    dtype : float32 or float64

    Attributes
    ----------
    weight : ndarray, shape (out_features, in_features)
    """

    _param_names = ("weight",)

    def __init__(self, in_features, out_features, eps=1e-12, *, rng=None, dtype=np.float32):
        super().__init__(dtype)
        self.in_features = _positive_int(in_features, "in_features")
        self.out_features = _positive_int(out_features, "out_features")
        self.eps = eps
        shape = (self.out_features, self.in_features)
        self.weight = _rng(rng).standard_normal(shape).astype(self.dtype)
        self._init_grads()

    def forward(self, x, training=True):
        x = np.asarray(x)
        if x.ndim < 1 or x.shape[-1] != self.in_features:
            raise ValueError(f"CosineNorm expects a last axis of {self.in_features}, "
                             f"got shape {x.shape}")
        x2 = x.reshape(-1, self.in_features)
        y, xn, wn = _vectors.cosine_norm(x2, self.weight, eps=self.eps, return_stats=True)
        self._cache = (x2, xn, wn, x.shape)
        return y.reshape(*x.shape[:-1], self.out_features)

    def backward(self, dy):
        x2, xn, wn, shape = self._saved()
        dy2 = np.asarray(dy).reshape(-1, self.out_features)
        dx, dw = _vectors.cosine_norm_backward(dy2, x2, self.weight, xn, wn, eps=self.eps)
        self._store_grad("weight", dw)
        return dx.reshape(shape)
