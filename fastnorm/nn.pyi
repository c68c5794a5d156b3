"""Type stubs for fastnorm.nn."""

from collections.abc import Iterator
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, DTypeLike, NDArray

_Array = NDArray[Any]
_Param = tuple[str, _Array, _Array]
_Seed = np.random.Generator | int | None

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

class Module:
    dtype: np.dtype[Any]
    grads: dict[str, _Array]
    def __init__(self, dtype: DTypeLike = ...) -> None: ...
    def params(self) -> list[_Param]: ...
    def zero_grad(self) -> None: ...
    def __call__(self, x: ArrayLike, training: bool = True) -> _Array: ...
    def forward(self, x: ArrayLike, training: bool = True) -> _Array: ...
    def backward(self, dy: ArrayLike) -> _Array: ...
    def _own_params(self) -> Iterator[tuple[str, _Array]]: ...

class Linear(Module):
    in_features: int
    out_features: int
    weight: _Array
    bias: _Array | None
    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        *,
        rng: _Seed = None,
        dtype: DTypeLike = ...,
    ) -> None: ...

class ReLU(Module): ...

class Sequential(Module):
    layers: list[Module]
    def __init__(self, *layers: Module) -> None: ...

class _Affine(Module):
    weight: _Array | None
    bias: _Array | None
    def __init__(
        self, shape: tuple[int, ...], affine: bool, bias: bool, dtype: DTypeLike
    ) -> None: ...

class LayerNorm(_Affine):
    normalized_shape: tuple[int, ...]
    eps: float
    def __init__(
        self,
        normalized_shape: int | tuple[int, ...],
        eps: float = 1e-05,
        elementwise_affine: bool = True,
        *,
        dtype: DTypeLike = ...,
    ) -> None: ...

class RMSNorm(LayerNorm):
    def __init__(
        self,
        normalized_shape: int | tuple[int, ...],
        eps: float = 1e-06,
        elementwise_affine: bool = True,
        *,
        dtype: DTypeLike = ...,
    ) -> None: ...

class BatchNorm(_Affine):
    num_features: int
    eps: float
    momentum: float
    axis: int
    center_only: bool
    running_mean: _Array | None
    running_var: _Array | None
    def __init__(
        self,
        num_features: int,
        eps: float = 1e-05,
        momentum: float = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        *,
        axis: int = 1,
        center_only: bool = False,
        dtype: DTypeLike = ...,
    ) -> None: ...

class GroupNorm(_Affine):
    num_groups: int
    num_channels: int
    eps: float
    axis: int
    def __init__(
        self,
        num_groups: int,
        num_channels: int,
        eps: float = 1e-05,
        affine: bool = True,
        *,
        axis: int = 1,
        dtype: DTypeLike = ...,
    ) -> None: ...

class IterNorm(_Affine):
    num_features: int
    group_size: int
    iterations: int
    eps: float
    momentum: float
    axis: int
    running_mean: _Array | None
    running_whitening: _Array | None
    def __init__(
        self,
        num_features: int,
        group_size: int = 16,
        iterations: int = 5,
        eps: float = 1e-05,
        momentum: float = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        *,
        axis: int = 1,
        dtype: DTypeLike = ...,
    ) -> None: ...

class InstanceNorm(_Affine):
    num_features: int
    eps: float
    axis: int
    def __init__(
        self,
        num_features: int,
        eps: float = 1e-05,
        affine: bool = False,
        *,
        axis: int = 1,
        dtype: DTypeLike = ...,
    ) -> None: ...

class WeightNorm(Module):
    layer: Module
    name: str
    axis: int
    v: _Array
    g: _Array
    def __init__(self, layer: Module, name: str = "weight", *, axis: int = 0) -> None: ...
    def init_from_data(self, x: ArrayLike, *, unit_axis: int = -1) -> WeightNorm: ...

class CosineNorm(Module):
    in_features: int
    out_features: int
    eps: float
    weight: _Array
    def __init__(
        self,
        in_features: int,
        out_features: int,
        eps: float = 1e-12,
        *,
        rng: _Seed = None,
        dtype: DTypeLike = ...,
    ) -> None: ...
