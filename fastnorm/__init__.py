"""fastnorm: fast CPU normalization layers for NumPy arrays.

Forward and backward passes of layer, RMS, batch, group, instance, weight and cosine
normalization (and l2_normalize), computed by C kernels with OpenMP threads and SIMD.
Every function is checked against the float64 NumPy implementations in
:mod:`fastnorm.reference`.
"""

__version__ = "0.1.0"

from ._channels import (
    batch_norm,
    batch_norm_backward,
    group_norm,
    group_norm_backward,
    instance_norm,
    instance_norm_backward,
)
from ._double import (
    batch_norm_double_backward,
    group_norm_double_backward,
    instance_norm_double_backward,
    layer_norm_double_backward,
    rms_norm_double_backward,
)
from ._moments import batch_moments, merge_moments
from ._rows import (
    add_layer_norm,
    add_layer_norm_backward,
    add_rms_norm,
    add_rms_norm_backward,
    layer_norm,
    layer_norm_backward,
    rms_norm,
    rms_norm_backward,
)
from ._runtime import (
    _init_output_cache,
    _init_simd,
    get_num_threads,
    get_output_cache,
    set_num_threads,
    set_output_cache,
    show_config,
)
from ._vectors import (
    cosine_norm,
    cosine_norm_backward,
    l2_normalize,
    l2_normalize_backward,
    weight_norm,
    weight_norm_backward,
)
from ._whiten import iter_norm, iter_norm_backward

_init_simd()
del _init_simd
_init_output_cache()
del _init_output_cache

__all__ = [
    "__version__",
    "layer_norm",
    "add_layer_norm",
    "add_layer_norm_backward",
    "add_rms_norm",
    "add_rms_norm_backward",
    "batch_norm",
    "batch_norm_backward",
    "batch_moments",
    "merge_moments",
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
    "set_num_threads",
    "set_output_cache",
    "get_output_cache",
    "get_num_threads",
    "show_config",
]
