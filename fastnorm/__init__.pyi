"""Type stubs for fastnorm's public API (see the docstrings of the runtime functions)."""

from typing import Any, Literal, TextIO, overload

import numpy as np
from numpy.typing import ArrayLike, DTypeLike, NDArray

# Results have the input's dtype (float16, bfloat16, float32 or float64); statistics and
# parameter gradients of half-precision inputs are float32.
_Array = NDArray[np.floating[Any]]

__version__: str

__all__ = [
    "__version__",
    "layer_norm",
    "add_layer_norm",
    "add_layer_norm_backward",
    "add_rms_norm",
    "add_rms_norm_backward",
    "batch_norm",
    "batch_norm_backward",
    "group_norm",
    "group_norm_backward",
    "instance_norm",
    "instance_norm_backward",
    "iter_norm",
    "iter_norm_backward",
    "layer_norm_backward",
    "rms_norm",
    "rms_norm_backward",
    "l2_normalize",
    "l2_normalize_backward",
    "weight_norm",
    "weight_norm_backward",
    "cosine_norm",
    "cosine_norm_backward",
    "layer_norm_double_backward",
    "rms_norm_double_backward",
    "batch_norm_double_backward",
    "group_norm_double_backward",
    "instance_norm_double_backward",
    "batch_moments",
    "merge_moments",
    "set_num_threads",
    "get_num_threads",
    "set_output_cache",
    "get_output_cache",
    "show_config",
]

def set_num_threads(n: int) -> None: ...
def get_num_threads() -> int: ...
def set_output_cache(nbytes: int) -> None: ...
def get_output_cache() -> tuple[int, int]: ...
def show_config(file: TextIO | None = None) -> None: ...
@overload
def layer_norm(
    x: ArrayLike,
    weight: ArrayLike | None = None,
    bias: ArrayLike | None = None,
    *,
    axis: int = -1,
    eps: float = 1e-05,
    out: NDArray[Any] | None = None,
    return_stats: Literal[False] = False,
) -> _Array: ...
@overload
def layer_norm(
    x: ArrayLike,
    weight: ArrayLike | None = None,
    bias: ArrayLike | None = None,
    *,
    axis: int = -1,
    eps: float = 1e-05,
    out: NDArray[Any] | None = None,
    return_stats: Literal[True],
) -> tuple[_Array, _Array, _Array]: ...
@overload
def layer_norm(
    x: ArrayLike,
    weight: ArrayLike | None = None,
    bias: ArrayLike | None = None,
    *,
    axis: int = -1,
    eps: float = 1e-05,
    out: NDArray[Any] | None = None,
    return_stats: bool = False,
) -> _Array | tuple[_Array, _Array, _Array]: ...
@overload
def add_layer_norm(
    x: ArrayLike,
    residual: ArrayLike,
    weight: ArrayLike | None = None,
    bias: ArrayLike | None = None,
    *,
    axis: int = -1,
    eps: float = 1e-05,
    residual_dtype: DTypeLike | None = None,
    out: NDArray[Any] | None = None,
    residual_out: NDArray[Any] | None = None,
    return_stats: Literal[False] = False,
) -> tuple[_Array, _Array]: ...
@overload
def add_layer_norm(
    x: ArrayLike,
    residual: ArrayLike,
    weight: ArrayLike | None = None,
    bias: ArrayLike | None = None,
    *,
    axis: int = -1,
    eps: float = 1e-05,
    residual_dtype: DTypeLike | None = None,
    out: NDArray[Any] | None = None,
    residual_out: NDArray[Any] | None = None,
    return_stats: Literal[True],
) -> tuple[_Array, _Array, _Array, _Array]: ...
@overload
def add_layer_norm(
    x: ArrayLike,
    residual: ArrayLike,
    weight: ArrayLike | None = None,
    bias: ArrayLike | None = None,
    *,
    axis: int = -1,
    eps: float = 1e-05,
    residual_dtype: DTypeLike | None = None,
    out: NDArray[Any] | None = None,
    residual_out: NDArray[Any] | None = None,
    return_stats: bool = False,
) -> tuple[_Array, _Array] | tuple[_Array, _Array, _Array, _Array]: ...
@overload
def add_rms_norm(
    x: ArrayLike,
    residual: ArrayLike,
    weight: ArrayLike | None = None,
    *,
    axis: int = -1,
    eps: float = 1e-06,
    residual_dtype: DTypeLike | None = None,
    out: NDArray[Any] | None = None,
    residual_out: NDArray[Any] | None = None,
    return_stats: Literal[False] = False,
) -> tuple[_Array, _Array]: ...
@overload
def add_rms_norm(
    x: ArrayLike,
    residual: ArrayLike,
    weight: ArrayLike | None = None,
    *,
    axis: int = -1,
    eps: float = 1e-06,
    residual_dtype: DTypeLike | None = None,
    out: NDArray[Any] | None = None,
    residual_out: NDArray[Any] | None = None,
    return_stats: Literal[True],
) -> tuple[_Array, _Array, _Array]: ...
@overload
def add_rms_norm(
    x: ArrayLike,
    residual: ArrayLike,
    weight: ArrayLike | None = None,
    *,
    axis: int = -1,
    eps: float = 1e-06,
    residual_dtype: DTypeLike | None = None,
    out: NDArray[Any] | None = None,
    residual_out: NDArray[Any] | None = None,
    return_stats: bool = False,
) -> tuple[_Array, _Array] | tuple[_Array, _Array, _Array]: ...
def add_layer_norm_backward(
    dy: ArrayLike,
    ds: ArrayLike | None,
    s: ArrayLike,
    mean: ArrayLike,
    rstd: ArrayLike,
    weight: ArrayLike | None = None,
    *,
    axis: int = -1,
    out: NDArray[Any] | None = None,
) -> tuple[_Array, _Array | None, _Array]: ...
def add_rms_norm_backward(
    dy: ArrayLike,
    ds: ArrayLike | None,
    s: ArrayLike,
    rstd: ArrayLike,
    weight: ArrayLike | None = None,
    *,
    axis: int = -1,
    out: NDArray[Any] | None = None,
) -> tuple[_Array, _Array | None]: ...
@overload
def rms_norm(
    x: ArrayLike,
    weight: ArrayLike | None = None,
    *,
    axis: int = -1,
    eps: float = 1e-06,
    out: NDArray[Any] | None = None,
    return_stats: Literal[False] = False,
) -> _Array: ...
@overload
def rms_norm(
    x: ArrayLike,
    weight: ArrayLike | None = None,
    *,
    axis: int = -1,
    eps: float = 1e-06,
    out: NDArray[Any] | None = None,
    return_stats: Literal[True],
) -> tuple[_Array, _Array]: ...
@overload
def rms_norm(
    x: ArrayLike,
    weight: ArrayLike | None = None,
    *,
    axis: int = -1,
    eps: float = 1e-06,
    out: NDArray[Any] | None = None,
    return_stats: bool = False,
) -> _Array | tuple[_Array, _Array]: ...
@overload
def batch_norm(
    x: ArrayLike,
    weight: ArrayLike | None = None,
    bias: ArrayLike | None = None,
    running_mean: NDArray[Any] | None = None,
    running_var: NDArray[Any] | None = None,
    *,
    training: bool = True,
    momentum: float = 0.1,
    eps: float = 1e-05,
    axis: int = 1,
    out: NDArray[Any] | None = None,
    return_stats: Literal[False] = False,
    center_only: bool = False,
) -> _Array: ...
@overload
def batch_norm(
    x: ArrayLike,
    weight: ArrayLike | None = None,
    bias: ArrayLike | None = None,
    running_mean: NDArray[Any] | None = None,
    running_var: NDArray[Any] | None = None,
    *,
    training: bool = True,
    momentum: float = 0.1,
    eps: float = 1e-05,
    axis: int = 1,
    out: NDArray[Any] | None = None,
    return_stats: Literal[True],
    center_only: bool = False,
) -> tuple[_Array, _Array, _Array]: ...
@overload
def batch_norm(
    x: ArrayLike,
    weight: ArrayLike | None = None,
    bias: ArrayLike | None = None,
    running_mean: NDArray[Any] | None = None,
    running_var: NDArray[Any] | None = None,
    *,
    training: bool = True,
    momentum: float = 0.1,
    eps: float = 1e-05,
    axis: int = 1,
    out: NDArray[Any] | None = None,
    return_stats: bool = False,
    center_only: bool = False,
) -> _Array | tuple[_Array, _Array, _Array]: ...
@overload
def group_norm(
    x: ArrayLike,
    num_groups: int,
    weight: ArrayLike | None = None,
    bias: ArrayLike | None = None,
    *,
    axis: int = 1,
    eps: float = 1e-05,
    out: NDArray[Any] | None = None,
    return_stats: Literal[False] = False,
) -> _Array: ...
@overload
def group_norm(
    x: ArrayLike,
    num_groups: int,
    weight: ArrayLike | None = None,
    bias: ArrayLike | None = None,
    *,
    axis: int = 1,
    eps: float = 1e-05,
    out: NDArray[Any] | None = None,
    return_stats: Literal[True],
) -> tuple[_Array, _Array, _Array]: ...
@overload
def group_norm(
    x: ArrayLike,
    num_groups: int,
    weight: ArrayLike | None = None,
    bias: ArrayLike | None = None,
    *,
    axis: int = 1,
    eps: float = 1e-05,
    out: NDArray[Any] | None = None,
    return_stats: bool = False,
) -> _Array | tuple[_Array, _Array, _Array]: ...
@overload
def instance_norm(
    x: ArrayLike,
    weight: ArrayLike | None = None,
    bias: ArrayLike | None = None,
    *,
    axis: int = 1,
    eps: float = 1e-05,
    out: NDArray[Any] | None = None,
    return_stats: Literal[False] = False,
) -> _Array: ...
@overload
def instance_norm(
    x: ArrayLike,
    weight: ArrayLike | None = None,
    bias: ArrayLike | None = None,
    *,
    axis: int = 1,
    eps: float = 1e-05,
    out: NDArray[Any] | None = None,
    return_stats: Literal[True],
) -> tuple[_Array, _Array, _Array]: ...
@overload
def instance_norm(
    x: ArrayLike,
    weight: ArrayLike | None = None,
    bias: ArrayLike | None = None,
    *,
    axis: int = 1,
    eps: float = 1e-05,
    out: NDArray[Any] | None = None,
    return_stats: bool = False,
) -> _Array | tuple[_Array, _Array, _Array]: ...
@overload
def l2_normalize(
    x: ArrayLike,
    *,
    axis: int = -1,
    eps: float = 1e-12,
    out: NDArray[Any] | None = None,
    return_stats: Literal[False] = False,
) -> _Array: ...
@overload
def l2_normalize(
    x: ArrayLike,
    *,
    axis: int = -1,
    eps: float = 1e-12,
    out: NDArray[Any] | None = None,
    return_stats: Literal[True],
) -> tuple[_Array, _Array]: ...
@overload
def l2_normalize(
    x: ArrayLike,
    *,
    axis: int = -1,
    eps: float = 1e-12,
    out: NDArray[Any] | None = None,
    return_stats: bool = False,
) -> _Array | tuple[_Array, _Array]: ...
@overload
def weight_norm(
    v: ArrayLike, g: ArrayLike, *, axis: int = 0, return_stats: Literal[False] = False
) -> _Array: ...
@overload
def weight_norm(
    v: ArrayLike, g: ArrayLike, *, axis: int = 0, return_stats: Literal[True]
) -> tuple[_Array, _Array]: ...
@overload
def weight_norm(
    v: ArrayLike, g: ArrayLike, *, axis: int = 0, return_stats: bool = False
) -> _Array | tuple[_Array, _Array]: ...
@overload
def cosine_norm(
    x: ArrayLike, w: ArrayLike, *, eps: float = 1e-12, return_stats: Literal[False] = False
) -> _Array: ...
@overload
def cosine_norm(
    x: ArrayLike, w: ArrayLike, *, eps: float = 1e-12, return_stats: Literal[True]
) -> tuple[_Array, _Array, _Array]: ...
@overload
def cosine_norm(
    x: ArrayLike, w: ArrayLike, *, eps: float = 1e-12, return_stats: bool = False
) -> _Array | tuple[_Array, _Array, _Array]: ...
def layer_norm_backward(
    dy: ArrayLike,
    x: ArrayLike,
    mean: ArrayLike,
    rstd: ArrayLike,
    weight: ArrayLike | None = None,
    *,
    axis: int = -1,
    out: NDArray[Any] | None = None,
) -> tuple[_Array, _Array | None, _Array | None]: ...
def rms_norm_backward(
    dy: ArrayLike,
    x: ArrayLike,
    rstd: ArrayLike,
    weight: ArrayLike | None = None,
    *,
    axis: int = -1,
    out: NDArray[Any] | None = None,
) -> tuple[_Array, _Array | None]: ...
def batch_norm_backward(
    dy: ArrayLike,
    x: ArrayLike | None,
    mean: ArrayLike | None,
    rstd: ArrayLike | None,
    weight: ArrayLike | None = None,
    *,
    axis: int = 1,
    training: bool = True,
    out: NDArray[Any] | None = None,
    center_only: bool = False,
) -> tuple[_Array, _Array | None, _Array | None]: ...
def group_norm_backward(
    dy: ArrayLike,
    x: ArrayLike,
    mean: ArrayLike,
    rstd: ArrayLike,
    num_groups: int,
    weight: ArrayLike | None = None,
    *,
    axis: int = 1,
    out: NDArray[Any] | None = None,
) -> tuple[_Array, _Array | None, _Array | None]: ...
def instance_norm_backward(
    dy: ArrayLike,
    x: ArrayLike,
    mean: ArrayLike,
    rstd: ArrayLike,
    weight: ArrayLike | None = None,
    *,
    axis: int = 1,
    out: NDArray[Any] | None = None,
) -> tuple[_Array, _Array | None, _Array | None]: ...
@overload
def iter_norm(
    x: ArrayLike,
    weight: ArrayLike | None = None,
    bias: ArrayLike | None = None,
    running_mean: NDArray[Any] | None = None,
    running_whitening: NDArray[Any] | None = None,
    *,
    group_size: int = 16,
    iterations: int = 5,
    training: bool = True,
    momentum: float = 0.1,
    eps: float = 1e-05,
    axis: int = 1,
    out: NDArray[Any] | None = None,
    return_stats: Literal[False] = False,
) -> _Array: ...
@overload
def iter_norm(
    x: ArrayLike,
    weight: ArrayLike | None = None,
    bias: ArrayLike | None = None,
    running_mean: NDArray[Any] | None = None,
    running_whitening: NDArray[Any] | None = None,
    *,
    group_size: int = 16,
    iterations: int = 5,
    training: bool = True,
    momentum: float = 0.1,
    eps: float = 1e-05,
    axis: int = 1,
    out: NDArray[Any] | None = None,
    return_stats: Literal[True],
) -> tuple[_Array, _Array, _Array]: ...
@overload
def iter_norm(
    x: ArrayLike,
    weight: ArrayLike | None = None,
    bias: ArrayLike | None = None,
    running_mean: NDArray[Any] | None = None,
    running_whitening: NDArray[Any] | None = None,
    *,
    group_size: int = 16,
    iterations: int = 5,
    training: bool = True,
    momentum: float = 0.1,
    eps: float = 1e-05,
    axis: int = 1,
    out: NDArray[Any] | None = None,
    return_stats: bool = False,
) -> _Array | tuple[_Array, _Array, _Array]: ...
def iter_norm_backward(
    dy: ArrayLike,
    x: ArrayLike,
    mean: ArrayLike,
    weight: ArrayLike | None = None,
    *,
    group_size: int = 16,
    iterations: int = 5,
    eps: float = 1e-05,
    axis: int = 1,
    training: bool = True,
    whitening: ArrayLike | None = None,
    out: NDArray[Any] | None = None,
) -> tuple[_Array, _Array | None, _Array]: ...

def l2_normalize_backward(
    dy: ArrayLike,
    y: ArrayLike,
    norm: ArrayLike,
    *,
    axis: int = -1,
    eps: float = 1e-12,
    out: NDArray[Any] | None = None,
) -> _Array: ...
def weight_norm_backward(
    dw: ArrayLike,
    v: ArrayLike,
    g: ArrayLike,
    norm: ArrayLike,
    *,
    axis: int = 0,
    out: NDArray[Any] | None = None,
) -> tuple[_Array, _Array]: ...
def cosine_norm_backward(
    dy: ArrayLike,
    x: ArrayLike,
    w: ArrayLike,
    x_norm: ArrayLike,
    w_norm: ArrayLike,
    *,
    eps: float = 1e-12,
) -> tuple[_Array, _Array]: ...

_Double = tuple[_Array, _Array, _Array | None]

def layer_norm_double_backward(
    ggx: ArrayLike | None,
    ggweight: ArrayLike | None,
    ggbias: ArrayLike | None,
    dy: ArrayLike,
    x: ArrayLike,
    mean: ArrayLike,
    rstd: ArrayLike,
    weight: ArrayLike | None = None,
    *,
    axis: int = -1,
) -> _Double: ...
def rms_norm_double_backward(
    ggx: ArrayLike | None,
    ggweight: ArrayLike | None,
    dy: ArrayLike,
    x: ArrayLike,
    rstd: ArrayLike,
    weight: ArrayLike | None = None,
    *,
    axis: int = -1,
) -> _Double: ...
def batch_norm_double_backward(
    ggx: ArrayLike | None,
    ggweight: ArrayLike | None,
    ggbias: ArrayLike | None,
    dy: ArrayLike,
    x: ArrayLike,
    mean: ArrayLike,
    rstd: ArrayLike,
    weight: ArrayLike | None = None,
    *,
    axis: int = 1,
    training: bool = True,
) -> _Double: ...
def group_norm_double_backward(
    ggx: ArrayLike | None,
    ggweight: ArrayLike | None,
    ggbias: ArrayLike | None,
    dy: ArrayLike,
    x: ArrayLike,
    mean: ArrayLike,
    rstd: ArrayLike,
    num_groups: int,
    weight: ArrayLike | None = None,
    *,
    axis: int = 1,
) -> _Double: ...
def instance_norm_double_backward(
    ggx: ArrayLike | None,
    ggweight: ArrayLike | None,
    ggbias: ArrayLike | None,
    dy: ArrayLike,
    x: ArrayLike,
    mean: ArrayLike,
    rstd: ArrayLike,
    weight: ArrayLike | None = None,
    *,
    axis: int = 1,
) -> _Double: ...

def batch_moments(
    x: ArrayLike, axis: int = 1
) -> tuple[NDArray[np.int64], NDArray[np.float64], NDArray[np.float64]]: ...
def merge_moments(
    *moments: tuple[ArrayLike, ArrayLike, ArrayLike],
) -> tuple[NDArray[np.int64], NDArray[np.float64], NDArray[np.float64]]: ...
