"""Type stubs for fastnorm.reference: the same signatures as the fast functions."""

from . import add_layer_norm as add_layer_norm
from . import add_layer_norm_backward as add_layer_norm_backward
from . import add_rms_norm as add_rms_norm
from . import add_rms_norm_backward as add_rms_norm_backward
from . import batch_moments as batch_moments
from . import batch_norm as batch_norm
from . import batch_norm_backward as batch_norm_backward
from . import batch_norm_double_backward as batch_norm_double_backward
from . import cosine_norm as cosine_norm
from . import cosine_norm_backward as cosine_norm_backward
from . import group_norm as group_norm
from . import group_norm_backward as group_norm_backward
from . import group_norm_double_backward as group_norm_double_backward
from . import instance_norm as instance_norm
from . import instance_norm_backward as instance_norm_backward
from . import instance_norm_double_backward as instance_norm_double_backward
from . import iter_norm as iter_norm
from . import iter_norm_backward as iter_norm_backward
from . import l2_normalize as l2_normalize
from . import l2_normalize_backward as l2_normalize_backward
from . import layer_norm as layer_norm
from . import layer_norm_backward as layer_norm_backward
from . import layer_norm_double_backward as layer_norm_double_backward
from . import merge_moments as merge_moments
from . import rms_norm as rms_norm
from . import rms_norm_backward as rms_norm_backward
from . import rms_norm_double_backward as rms_norm_double_backward
from . import weight_norm as weight_norm
from . import weight_norm_backward as weight_norm_backward

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
