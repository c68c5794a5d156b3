"""Type stubs for the compiled bindings (fastnorm/_kernels.pyx).

Arrays are validated by the callers: C-contiguous, of one float dtype; optional outputs
and parameters may be None.
"""

from typing import Any

from numpy.typing import NDArray

_A = NDArray[Any]

ISA_LEVELS: tuple[str, ...]

def set_num_threads(n: int) -> None: ...
def get_num_threads() -> int: ...
def set_serial(on: bool) -> None: ...
def get_serial() -> bool: ...
def in_forked_child() -> bool: ...
def openmp_enabled() -> bool: ...
def build_info() -> str: ...
def set_stream_bytes(nbytes: int) -> None: ...
def get_stream_bytes() -> int: ...
def prefault(arr: _A) -> None: ...
def empty_output(shape: tuple[int, ...], dtype: object) -> _A: ...
def set_output_cache(nbytes: int) -> None: ...
def output_cache_limit() -> int: ...
def output_cache_bytes() -> int: ...

PREFAULT_BYTES: int
def isa_supported() -> str: ...
def isa_active() -> str: ...
def isa_select(name: str) -> None: ...
def eps_ok(e: float) -> bool: ...
def momentum_ok(m: float) -> bool: ...
def layer_norm_fwd(
    x: _A,
    weight: _A | None,
    bias: _A | None,
    y: _A,
    mean: _A | None,
    rstd: _A | None,
    M: int,
    K: int,
    eps: float,
) -> None: ...
def layer_norm_bwd(
    dy: _A,
    x: _A,
    mean: _A,
    rstd: _A,
    weight: _A | None,
    dx: _A,
    dweight: _A | None,
    dbias: _A | None,
    M: int,
    K: int,
) -> None: ...
def rms_norm_fwd(
    x: _A, weight: _A | None, y: _A, rstd: _A | None, M: int, K: int, eps: float
) -> None: ...
def rms_norm_bwd(
    dy: _A, x: _A, rstd: _A, weight: _A | None, dx: _A, dweight: _A | None, M: int, K: int
) -> None: ...
def add_layer_norm_fwd(
    x: _A,
    r: _A,
    R: int,
    weight: _A | None,
    bias: _A | None,
    y: _A,
    s: _A,
    mean: _A | None,
    rstd: _A | None,
    M: int,
    K: int,
    eps: float,
) -> None: ...
def add_rms_norm_fwd(
    x: _A, r: _A, R: int, weight: _A | None, y: _A, s: _A, rstd: _A | None, M: int, K: int,
    eps: float,
) -> None: ...
def add_layer_norm_bwd(
    dy: _A,
    ds: _A | None,
    s: _A,
    mean: _A,
    rstd: _A,
    weight: _A | None,
    dx: _A,
    dweight: _A | None,
    dbias: _A | None,
    M: int,
    K: int,
) -> None: ...
def add_rms_norm_bwd(
    dy: _A, ds: _A | None, s: _A, rstd: _A, weight: _A | None, dx: _A, dweight: _A | None,
    M: int, K: int,
) -> None: ...
def batch_norm_fwd(
    x: _A,
    weight: _A | None,
    bias: _A | None,
    y: _A,
    mean: _A | None,
    rstd: _A | None,
    running_mean: _A | None,
    running_var: _A | None,
    A: int,
    C: int,
    B: int,
    eps: float,
    momentum: float,
    training: bool,
) -> None: ...
def batch_norm_bwd(
    dy: _A,
    x: _A,
    mean: _A,
    rstd: _A,
    weight: _A | None,
    dx: _A,
    dweight: _A | None,
    dbias: _A | None,
    A: int,
    C: int,
    B: int,
    training: bool,
) -> None: ...
def batch_center_fwd(
    x: _A, bias: _A | None, y: _A, mean: _A | None, running_mean: _A | None, A: int, C: int,
    B: int, momentum: float, training: bool,
) -> None: ...
def batch_center_bwd(dy: _A, dx: _A, dbias: _A, A: int, C: int, B: int, training: bool) -> None: ...
def iter_norm_fwd(
    x: _A, weight: _A | None, bias: _A | None, y: _A, mean: _A | None, whitening: _A | None,
    running_mean: _A | None, running_whitening: _A | None, A: int, C: int, B: int, d: int,
    T: int, eps: float, momentum: float, training: bool,
) -> bool: ...
def iter_norm_bwd(
    dy: _A, x: _A, mean: _A, weight: _A | None, whitening: _A | None, dx: _A,
    dweight: _A | None, dbias: _A, A: int, C: int, B: int, d: int, T: int, eps: float,
    training: bool,
) -> bool: ...
def group_norm_fwd(
    x: _A,
    weight: _A | None,
    bias: _A | None,
    y: _A,
    mean: _A | None,
    rstd: _A | None,
    N: int,
    A: int,
    C: int,
    B: int,
    G: int,
    eps: float,
) -> None: ...
def group_norm_bwd(
    dy: _A,
    x: _A,
    mean: _A,
    rstd: _A,
    weight: _A | None,
    dx: _A,
    dweight: _A | None,
    dbias: _A | None,
    N: int,
    A: int,
    C: int,
    B: int,
    G: int,
) -> None: ...
def norm_double_bwd(
    x: _A,
    dy: _A,
    mean: _A | None,
    rstd: _A,
    weight: _A | None,
    ggx: _A | None,
    ggw: _A | None,
    ggb: _A | None,
    gx: _A,
    gdy: _A,
    gw: _A | None,
    N: int,
    A: int,
    C: int,
    B: int,
    G: int,
    fixed: bool,
) -> None: ...
def l2_normalize_fwd(
    x: _A, y: _A, norm: _A | None, N: int, A: int, C: int, B: int, eps: float
) -> None: ...
def l2_normalize_bwd(
    dy: _A, y: _A, norm: _A, dx: _A, N: int, A: int, C: int, B: int, eps: float
) -> None: ...
def weight_norm_fwd(v: _A, g: _A, w: _A, norm: _A | None, A: int, C: int, B: int) -> None: ...
def weight_norm_bwd(
    dw: _A, v: _A, g: _A, norm: _A, dv: _A, dg: _A, A: int, C: int, B: int
) -> None: ...
def batch_moments(x: _A, mean: _A, m2: _A, A: int, C: int, B: int) -> None: ...
def batch_norm_bwd_sums(
    dy: _A, x: _A, mean: _A, rstd: _A, sum_dy: _A, sum_dy_xhat: _A, A: int, C: int, B: int
) -> None: ...
def batch_norm_bwd_apply(
    dy: _A,
    x: _A,
    mean: _A,
    rstd: _A,
    weight: _A | None,
    sum_dy: _A,
    sum_dy_xhat: _A,
    count: float,
    dx: _A,
    A: int,
    C: int,
    B: int,
) -> None: ...

# The fast path for the common call: the public function's result, or None where its full
# path must judge the arguments.
def layer_norm_fast(
    x: object,
    weight: object,
    bias: object,
    axis: object,
    eps: object,
    return_stats: object,
    out: object = None,
) -> Any: ...
def rms_norm_fast(
    x: object, weight: object, axis: object, eps: object, return_stats: object, out: object = None
) -> Any: ...
def layer_norm_bwd_fast(
    dy: object,
    x: object,
    mean: object,
    rstd: object,
    weight: object,
    axis: object,
    out: object = None,
) -> tuple[_A, _A | None, _A] | None: ...
def rms_norm_bwd_fast(
    dy: object, x: object, rstd: object, weight: object, axis: object, out: object = None
) -> tuple[_A, _A | None] | None: ...
def batch_norm_fast(
    x: object,
    weight: object,
    bias: object,
    running_mean: object,
    running_var: object,
    training: object,
    momentum: object,
    eps: object,
    axis: object,
    return_stats: object,
    out: object = None,
) -> Any: ...
