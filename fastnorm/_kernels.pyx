"""Thin bindings to the C kernels.

Every kernel wrapper here takes arrays that the public functions (fastnorm._rows, _channels,
_vectors, _moments, through fastnorm._validate) have already validated: C-contiguous,
of the kernel's dtype, of consistent sizes, writeable outputs (optional ones may be None).
They release the GIL around the C call and turn a status code into an exception.
The *_fast functions at the end are the exception: they take a public function's own
arguments and run its kernel only where C-level checks prove the call valid (see there).
"""
cimport numpy as cnp
import numpy as np
from libc.stdint cimport int64_t, uintptr_t

cnp.import_array()
fn_runtime_init()


ISA_LEVELS = tuple(fn_isa_name(i).decode() for i in range(FN_ISA_BASELINE, FN_ISA_AVX512 + 1))


cdef inline void *_p(object a):
    if a is None:
        return NULL
    return cnp.PyArray_DATA(<cnp.ndarray>a)


cdef inline int _check(int status) except -1:
    if status == FN_OK:
        return 0
    if status == FN_ERR_NOMEM:
        raise MemoryError("fastnorm: a kernel could not allocate its scratch memory")
    raise ValueError(f"fastnorm: a kernel rejected its arguments (status {status})")


cdef inline int _kind(cnp.ndarray x) except -1:
    """The C code of x's element type: FN_F32, FN_F64, FN_F16, FN_BF16 (ml_dtypes)."""
    cdef int t = cnp.PyArray_TYPE(x)
    if t == cnp.NPY_FLOAT32:
        return FN_F32
    if t == cnp.NPY_FLOAT64:
        return FN_F64
    if t == cnp.NPY_FLOAT16:
        return FN_F16
    if x.dtype.name == "bfloat16" and x.dtype.itemsize == 2:
        return FN_BF16
    raise TypeError(f"fastnorm kernels take float16, bfloat16, float32 or float64, "
                    f"not {x.dtype}")


# ---- runtime -----------------------------------------------------------------------

def set_num_threads(int n):
    fn_set_num_threads(n)


def get_num_threads():
    return fn_get_num_threads()


def set_serial(bint on):
    fn_set_serial(on)


def get_serial():
    return bool(fn_get_serial())


def in_forked_child():
    return bool(fn_in_forked_child())


def openmp_enabled():
    return bool(fn_openmp_enabled())


def build_info():
    return fn_build_info().decode()


def set_stream_bytes(int64_t nbytes):
    """Calls whose footprint (inputs, plus the output twice: its write and the read for
    ownership) reaches nbytes stream their output; -1 restores the default (the
    last-level cache size, at most 32 MiB)."""
    fn_set_stream_bytes(nbytes)


def get_stream_bytes():
    return fn_get_stream_bytes()


def prefault(arr):
    """Fault in the pages of a fresh C-contiguous output array from this thread (see
    fn_prefault); its contents are left as they are."""
    cdef uintptr_t p = arr.ctypes.data
    fn_prefault(<void *>p, arr.nbytes)


# ---- the output cache: large outputs allocated through NumPy's memory handler API ------
#
# An array made while _CACHE_HANDLER is NumPy's current handler gets its memory from
# fn_cache_malloc and gives it back, when the array dies, through fn_cache_free (NumPy
# keeps each array's handler), which may keep it for the next output of the same size.
# The handler is current only around fastnorm's own allocation of an output (_cached).

cdef extern from "numpy/ndarraytypes.h":
    ctypedef struct PyDataMemAllocator:
        void *ctx
        void *(*malloc)(void *ctx, size_t size) noexcept nogil
        void *(*calloc)(void *ctx, size_t nelem, size_t elsize) noexcept nogil
        void *(*realloc)(void *ctx, void *ptr, size_t new_size) noexcept nogil
        void (*free)(void *ctx, void *ptr, size_t size) noexcept nogil
    ctypedef struct PyDataMem_Handler:
        char name[127]
        unsigned char version
        PyDataMemAllocator allocator

cdef extern from "numpy/arrayobject.h":
    object PyDataMem_SetHandler(object handler)

from cpython.pycapsule cimport PyCapsule_New
from libc.stdlib cimport calloc, realloc
from libc.string cimport strcpy


cdef void *_cache_malloc(void *ctx, size_t size) noexcept nogil:
    return fn_cache_malloc(size)


cdef void *_cache_calloc(void *ctx, size_t nelem, size_t elsize) noexcept nogil:
    return calloc(nelem, elsize)


cdef void *_cache_realloc(void *ctx, void *ptr, size_t new_size) noexcept nogil:
    return realloc(ptr, new_size)


cdef void _cache_free(void *ctx, void *ptr, size_t size) noexcept nogil:
    fn_cache_free(ptr, size)


cdef PyDataMem_Handler _cache_handler
strcpy(_cache_handler.name, b"fastnorm_output_cache")
_cache_handler.version = 1
_cache_handler.allocator.ctx = NULL
_cache_handler.allocator.malloc = _cache_malloc
_cache_handler.allocator.calloc = _cache_calloc
_cache_handler.allocator.realloc = _cache_realloc
_cache_handler.allocator.free = _cache_free
cdef object _CACHE_HANDLER = PyCapsule_New(&_cache_handler, "mem_handler", NULL)


cdef inline bint _cached(int64_t nbytes):
    """Whether an output of nbytes is allocated through the cache."""
    return nbytes >= FN_CACHE_MIN and fn_cache_limit() >= nbytes


def empty_output(shape, dtype):
    """numpy.empty(shape, dtype) for a kernel's output: from the output cache when it is
    large enough (FN_CACHE_MIN) and the cache is on."""
    dt = np.dtype(dtype)
    cdef int64_t n = dt.itemsize
    for d in shape:
        n *= d
    if not _cached(n):
        return np.empty(shape, dt)
    old = PyDataMem_SetHandler(_CACHE_HANDLER)
    try:
        return np.empty(shape, dt)
    finally:
        PyDataMem_SetHandler(old)


def set_output_cache(int64_t nbytes):
    fn_cache_set_limit(nbytes)


def output_cache_limit():
    return fn_cache_limit()


def output_cache_bytes():
    return fn_cache_bytes()


def isa_supported():
    return ISA_LEVELS[fn_isa_supported()]


def isa_active():
    return ISA_LEVELS[fn_isa_active()]


def isa_select(str name):
    if name not in ISA_LEVELS:
        raise ValueError(f"unknown SIMD level {name!r}; expected one of {ISA_LEVELS}")
    if fn_isa_select(ISA_LEVELS.index(name)) != FN_OK:
        raise ValueError(f"SIMD level {name!r} is not supported by this CPU or build "
                         f"(best available: {isa_supported()!r})")


# ---- the kernels ----------------------------------------------------------------------
#
# One C entry per kernel, the element type (_kind) as its first argument: each wrapper
# passes its arrays' data pointers (None: NULL), releases the GIL around the call and
# turns the status into an exception.

def layer_norm_fwd(cnp.ndarray x, object weight, object bias, cnp.ndarray y, object mean,
                   object rstd, int64_t M, int64_t K, double eps):
    cdef int st, t = _kind(x)
    cdef void *px = _p(x)
    cdef void *pw = _p(weight)
    cdef void *pb = _p(bias)
    cdef void *py = _p(y)
    cdef void *pm = _p(mean)
    cdef void *pr = _p(rstd)
    with nogil:
        st = fn_layer_norm_fwd(t, px, pw, pb, py, pm, pr, M, K, eps)
    _check(st)


def layer_norm_bwd(cnp.ndarray dy, cnp.ndarray x, cnp.ndarray mean, cnp.ndarray rstd,
                   object weight, cnp.ndarray dx, object dweight, object dbias,
                   int64_t M, int64_t K):
    cdef int st, t = _kind(x)
    cdef void *pdy = _p(dy)
    cdef void *px = _p(x)
    cdef void *pm = _p(mean)
    cdef void *pr = _p(rstd)
    cdef void *pw = _p(weight)
    cdef void *pdx = _p(dx)
    cdef void *pdw = _p(dweight)
    cdef void *pdb = _p(dbias)
    with nogil:
        st = fn_layer_norm_bwd(t, pdy, px, pm, pr, pw, pdx, pdw, pdb, M, K)
    _check(st)


def rms_norm_fwd(cnp.ndarray x, object weight, cnp.ndarray y, object rstd,
                 int64_t M, int64_t K, double eps):
    cdef int st, t = _kind(x)
    cdef void *px = _p(x)
    cdef void *pw = _p(weight)
    cdef void *py = _p(y)
    cdef void *pr = _p(rstd)
    with nogil:
        st = fn_rms_norm_fwd(t, px, pw, py, pr, M, K, eps)
    _check(st)


def rms_norm_bwd(cnp.ndarray dy, cnp.ndarray x, cnp.ndarray rstd, object weight,
                 cnp.ndarray dx, object dweight, int64_t M, int64_t K):
    cdef int st, t = _kind(x)
    cdef void *pdy = _p(dy)
    cdef void *px = _p(x)
    cdef void *pr = _p(rstd)
    cdef void *pw = _p(weight)
    cdef void *pdx = _p(dx)
    cdef void *pdw = _p(dweight)
    with nogil:
        st = fn_rms_norm_bwd(t, pdy, px, pr, pw, pdx, pdw, M, K)
    _check(st)


def add_layer_norm_fwd(cnp.ndarray x, cnp.ndarray r, int64_t R, object weight, object bias,
                       cnp.ndarray y, cnp.ndarray s, object mean, object rstd, int64_t M,
                       int64_t K, double eps):
    cdef int st, t = _kind(x)
    cdef void *px = _p(x)
    cdef void *pres = _p(r)
    cdef void *pw = _p(weight)
    cdef void *pb = _p(bias)
    cdef void *py = _p(y)
    cdef void *ps = _p(s)
    cdef void *pm = _p(mean)
    cdef void *pr = _p(rstd)
    with nogil:
        st = fn_add_layer_norm_fwd(t, px, pres, R, pw, pb, py, ps, pm, pr, M, K, eps)
    _check(st)


def add_rms_norm_fwd(cnp.ndarray x, cnp.ndarray r, int64_t R, object weight, cnp.ndarray y,
                     cnp.ndarray s, object rstd, int64_t M, int64_t K, double eps):
    cdef int st, t = _kind(x)
    cdef void *px = _p(x)
    cdef void *pres = _p(r)
    cdef void *pw = _p(weight)
    cdef void *py = _p(y)
    cdef void *ps = _p(s)
    cdef void *pr = _p(rstd)
    with nogil:
        st = fn_add_rms_norm_fwd(t, px, pres, R, pw, py, ps, pr, M, K, eps)
    _check(st)


def add_layer_norm_bwd(cnp.ndarray dy, object ds, cnp.ndarray s, cnp.ndarray mean,
                       cnp.ndarray rstd, object weight, cnp.ndarray dx, object dweight,
                       object dbias, int64_t M, int64_t K):
    cdef int st, t = _kind(s)
    cdef void *pdy = _p(dy)
    cdef void *pds = _p(ds)
    cdef void *ps = _p(s)
    cdef void *pm = _p(mean)
    cdef void *pr = _p(rstd)
    cdef void *pw = _p(weight)
    cdef void *pdx = _p(dx)
    cdef void *pdw = _p(dweight)
    cdef void *pdb = _p(dbias)
    with nogil:
        st = fn_add_layer_norm_bwd(t, pdy, pds, ps, pm, pr, pw, pdx, pdw, pdb, M, K)
    _check(st)


def add_rms_norm_bwd(cnp.ndarray dy, object ds, cnp.ndarray s, cnp.ndarray rstd, object weight,
                     cnp.ndarray dx, object dweight, int64_t M, int64_t K):
    cdef int st, t = _kind(s)
    cdef void *pdy = _p(dy)
    cdef void *pds = _p(ds)
    cdef void *ps = _p(s)
    cdef void *pr = _p(rstd)
    cdef void *pw = _p(weight)
    cdef void *pdx = _p(dx)
    cdef void *pdw = _p(dweight)
    with nogil:
        st = fn_add_rms_norm_bwd(t, pdy, pds, ps, pr, pw, pdx, pdw, M, K)
    _check(st)


def batch_norm_fwd(cnp.ndarray x, object weight, object bias, cnp.ndarray y, object mean,
                   object rstd, object running_mean, object running_var, int64_t A,
                   int64_t C, int64_t B, double eps, double momentum, bint training):
    """running_mean / running_var: None or contiguous float32/float64 arrays (both of one
    dtype, which may differ from x's)."""
    cdef int st, t = _kind(x)
    cdef void *px = _p(x)
    cdef void *pw = _p(weight)
    cdef void *pb = _p(bias)
    cdef void *py = _p(y)
    cdef void *pm = _p(mean)
    cdef void *pr = _p(rstd)
    cdef void *prm = _p(running_mean)
    cdef void *prv = _p(running_var)
    cdef object r = running_var if running_var is not None else running_mean
    cdef int r64 = r is not None and cnp.PyArray_TYPE(<cnp.ndarray>r) == cnp.NPY_FLOAT64
    with nogil:
        st = fn_batch_norm_fwd(t, px, pw, pb, py, pm, pr, prm, prv, r64, A, C, B, eps,
                               momentum, training)
    _check(st)


def batch_norm_bwd(cnp.ndarray dy, cnp.ndarray x, cnp.ndarray mean, cnp.ndarray rstd,
                   object weight, cnp.ndarray dx, object dweight, object dbias,
                   int64_t A, int64_t C, int64_t B, bint training):
    cdef int st, t = _kind(x)
    cdef void *pdy = _p(dy)
    cdef void *px = _p(x)
    cdef void *pm = _p(mean)
    cdef void *pr = _p(rstd)
    cdef void *pw = _p(weight)
    cdef void *pdx = _p(dx)
    cdef void *pdw = _p(dweight)
    cdef void *pdb = _p(dbias)
    with nogil:
        st = fn_batch_norm_bwd(t, pdy, px, pm, pr, pw, pdx, pdw, pdb, A, C, B, training)
    _check(st)


def batch_center_fwd(cnp.ndarray x, object bias, cnp.ndarray y, object mean,
                     object running_mean, int64_t A, int64_t C, int64_t B, double momentum,
                     bint training):
    cdef int st, t = _kind(x)
    cdef void *px = _p(x)
    cdef void *pb = _p(bias)
    cdef void *py = _p(y)
    cdef void *pm = _p(mean)
    cdef void *prm = _p(running_mean)
    cdef int r64 = (running_mean is not None
                    and cnp.PyArray_TYPE(<cnp.ndarray>running_mean) == cnp.NPY_FLOAT64)
    with nogil:
        st = fn_batch_center_fwd(t, px, pb, py, pm, prm, r64, A, C, B, momentum, training)
    _check(st)


def batch_center_bwd(cnp.ndarray dy, cnp.ndarray dx, cnp.ndarray dbias, int64_t A, int64_t C,
                     int64_t B, bint training):
    cdef int st, t = _kind(dy)
    cdef void *pdy = _p(dy)
    cdef void *pdx = _p(dx)
    cdef void *pdb = _p(dbias)
    with nogil:
        st = fn_batch_center_bwd(t, pdy, pdx, pdb, A, C, B, training)
    _check(st)


def iter_norm_fwd(cnp.ndarray x, object weight, object bias, cnp.ndarray y, object mean,
                  object whitening, object running_mean, object running_whitening, int64_t A,
                  int64_t C, int64_t B, int64_t d, int64_t T, double eps, double momentum,
                  bint training):
    """running_mean / running_whitening: None or contiguous float32/float64 arrays of one
    dtype (which may differ from x's). Returns False, having written nothing, where
    float32 x is beyond float arithmetic's range (the caller computes in float64).
    """
    cdef int st, t = _kind(x)
    cdef void *px = _p(x)
    cdef void *pw = _p(weight)
    cdef void *pb = _p(bias)
    cdef void *py = _p(y)
    cdef void *pm = _p(mean)
    cdef void *pwh = _p(whitening)
    cdef void *prm = _p(running_mean)
    cdef void *prw = _p(running_whitening)
    cdef object r = running_whitening if running_whitening is not None else running_mean
    cdef int r64 = r is not None and cnp.PyArray_TYPE(<cnp.ndarray>r) == cnp.NPY_FLOAT64
    with nogil:
        st = fn_iter_norm_fwd(t, px, pw, pb, py, pm, pwh, prm, prw, r64, A, C, B, d, T, eps,
                              momentum, training)
    if st == FN_WIDEN:
        return False
    _check(st)
    return True


def iter_norm_bwd(cnp.ndarray dy, cnp.ndarray x, cnp.ndarray mean, object weight,
                  object whitening, cnp.ndarray dx, object dweight, cnp.ndarray dbias,
                  int64_t A, int64_t C, int64_t B, int64_t d, int64_t T, double eps,
                  bint training):
    cdef int st, t = _kind(x)
    cdef void *pdy = _p(dy)
    cdef void *px = _p(x)
    cdef void *pm = _p(mean)
    cdef void *pw = _p(weight)
    cdef void *pwh = _p(whitening)
    cdef void *pdx = _p(dx)
    cdef void *pdw = _p(dweight)
    cdef void *pdb = _p(dbias)
    with nogil:
        st = fn_iter_norm_bwd(t, pdy, px, pm, pw, pwh, pdx, pdw, pdb, A, C, B, d, T, eps,
                              training)
    if st == FN_WIDEN:
        return False
    _check(st)
    return True


def group_norm_fwd(cnp.ndarray x, object weight, object bias, cnp.ndarray y, object mean,
                   object rstd, int64_t N, int64_t A, int64_t C, int64_t B, int64_t G,
                   double eps):
    cdef int st, t = _kind(x)
    cdef void *px = _p(x)
    cdef void *pw = _p(weight)
    cdef void *pb = _p(bias)
    cdef void *py = _p(y)
    cdef void *pm = _p(mean)
    cdef void *pr = _p(rstd)
    with nogil:
        st = fn_group_norm_fwd(t, px, pw, pb, py, pm, pr, N, A, C, B, G, eps)
    _check(st)


def group_norm_bwd(cnp.ndarray dy, cnp.ndarray x, cnp.ndarray mean, cnp.ndarray rstd,
                   object weight, cnp.ndarray dx, object dweight, object dbias,
                   int64_t N, int64_t A, int64_t C, int64_t B, int64_t G):
    cdef int st, t = _kind(x)
    cdef void *pdy = _p(dy)
    cdef void *px = _p(x)
    cdef void *pm = _p(mean)
    cdef void *pr = _p(rstd)
    cdef void *pw = _p(weight)
    cdef void *pdx = _p(dx)
    cdef void *pdw = _p(dweight)
    cdef void *pdb = _p(dbias)
    with nogil:
        st = fn_group_norm_bwd(t, pdy, px, pm, pr, pw, pdx, pdw, pdb, N, A, C, B, G)
    _check(st)


def norm_double_bwd(cnp.ndarray x, cnp.ndarray dy, object mean, cnp.ndarray rstd,
                    object weight, object ggx, object ggw, object ggb, cnp.ndarray gx,
                    cnp.ndarray gdy, object gw, int64_t N, int64_t A, int64_t C, int64_t B,
                    int64_t G, bint fixed):
    cdef int st, t = _kind(x)
    cdef void *px = _p(x)
    cdef void *pdy = _p(dy)
    cdef void *pm = _p(mean)
    cdef void *pr = _p(rstd)
    cdef void *pw = _p(weight)
    cdef void *pvx = _p(ggx)
    cdef void *pvw = _p(ggw)
    cdef void *pvb = _p(ggb)
    cdef void *pgx = _p(gx)
    cdef void *pgdy = _p(gdy)
    cdef void *pgw = _p(gw)
    with nogil:
        st = fn_norm_double_bwd(t, px, pdy, pm, pr, pw, pvx, pvw, pvb, pgx, pgdy, pgw,
                                N, A, C, B, G, fixed)
    _check(st)


def l2_normalize_fwd(cnp.ndarray x, cnp.ndarray y, object norm, int64_t N, int64_t A,
                     int64_t C, int64_t B, double eps):
    cdef int st, t = _kind(x)
    cdef void *px = _p(x)
    cdef void *py = _p(y)
    cdef void *pn = _p(norm)
    with nogil:
        st = fn_l2_normalize_fwd(t, px, py, pn, N, A, C, B, eps)
    _check(st)


def l2_normalize_bwd(cnp.ndarray dy, cnp.ndarray y, cnp.ndarray norm, cnp.ndarray dx,
                     int64_t N, int64_t A, int64_t C, int64_t B, double eps):
    cdef int st, t = _kind(y)
    cdef void *pdy = _p(dy)
    cdef void *py = _p(y)
    cdef void *pn = _p(norm)
    cdef void *pdx = _p(dx)
    with nogil:
        st = fn_l2_normalize_bwd(t, pdy, py, pn, pdx, N, A, C, B, eps)
    _check(st)


def weight_norm_fwd(cnp.ndarray v, cnp.ndarray g, cnp.ndarray w, object norm, int64_t A,
                    int64_t C, int64_t B):
    cdef int st, t = _kind(v)
    cdef void *pv = _p(v)
    cdef void *pg = _p(g)
    cdef void *pw = _p(w)
    cdef void *pn = _p(norm)
    with nogil:
        st = fn_weight_norm_fwd(t, pv, pg, pw, pn, A, C, B)
    _check(st)


def weight_norm_bwd(cnp.ndarray dw, cnp.ndarray v, cnp.ndarray g, cnp.ndarray norm,
                    cnp.ndarray dv, cnp.ndarray dg, int64_t A, int64_t C, int64_t B):
    cdef int st, t = _kind(v)
    cdef void *pdw = _p(dw)
    cdef void *pv = _p(v)
    cdef void *pg = _p(g)
    cdef void *pn = _p(norm)
    cdef void *pdv = _p(dv)
    cdef void *pdg = _p(dg)
    with nogil:
        st = fn_weight_norm_bwd(t, pdw, pv, pg, pn, pdv, pdg, A, C, B)
    _check(st)


# mergeable batch norm statistics (synchronized batch norm); the double arrays are
# contiguous float64 of C entries

def batch_moments(cnp.ndarray x, cnp.ndarray mean, cnp.ndarray m2, int64_t A, int64_t C,
                  int64_t B):
    cdef int st, t = _kind(x)
    cdef void *px = _p(x)
    cdef double *pm = <double *>_p(mean)
    cdef double *pm2 = <double *>_p(m2)
    with nogil:
        st = fn_batch_moments(t, px, pm, pm2, A, C, B)
    _check(st)


def batch_norm_bwd_sums(cnp.ndarray dy, cnp.ndarray x, cnp.ndarray mean, cnp.ndarray rstd,
                        cnp.ndarray sum_dy, cnp.ndarray sum_dy_xhat, int64_t A, int64_t C,
                        int64_t B):
    cdef int st, t = _kind(x)
    cdef void *pdy = _p(dy)
    cdef void *px = _p(x)
    cdef void *pm = _p(mean)
    cdef void *pr = _p(rstd)
    cdef double *ps1 = <double *>_p(sum_dy)
    cdef double *ps2 = <double *>_p(sum_dy_xhat)
    with nogil:
        st = fn_batch_norm_bwd_sums(t, pdy, px, pm, pr, ps1, ps2, A, C, B)
    _check(st)


def batch_norm_bwd_apply(cnp.ndarray dy, cnp.ndarray x, cnp.ndarray mean, cnp.ndarray rstd,
                         object weight, cnp.ndarray sum_dy, cnp.ndarray sum_dy_xhat,
                         double count, cnp.ndarray dx, int64_t A, int64_t C, int64_t B):
    cdef int st, t = _kind(x)
    cdef void *pdy = _p(dy)
    cdef void *px = _p(x)
    cdef void *pm = _p(mean)
    cdef void *pr = _p(rstd)
    cdef void *pw = _p(weight)
    cdef const double *ps1 = <double *>_p(sum_dy)
    cdef const double *ps2 = <double *>_p(sum_dy_xhat)
    cdef void *pdx = _p(dx)
    with nogil:
        st = fn_batch_norm_bwd_apply(t, pdy, px, pm, pr, pw, ps1, ps2, count, pdx, A, C, B)
    _check(st)


# ---- fast path for the common call -------------------------------------------------
#
# A call of a few hundred elements costs more in Python argument checking than in the
# kernel. The *_fast functions below take the public function's arguments as they came and
# run the kernel only when C-level checks prove the call is the common, valid one: base-class
# ndarrays of the canonical native float32/float64 dtype, C-contiguous and aligned,
# parameters of x's dtype and exact shape, an int axis in range, Python float eps (and
# momentum) in range, no empty input, and an `out` (if any) that the full path would write
# into directly (see _fast_dest). For anything else they return None and the caller
# takes its full path in Python, which stays the one place where input is judged and errors
# are raised. The results are those of that path: the same kernels on the same arrays.

from cpython.long cimport PyLong_AsLongAndOverflow
from libc.math cimport INFINITY

cdef object _F32 = cnp.PyArray_DescrFromType(cnp.NPY_FLOAT32)
cdef object _F64 = cnp.PyArray_DescrFromType(cnp.NPY_FLOAT64)


cdef inline int _fast_kind(object a):
    """FN_F32 or FN_F64 for an array the kernels can read in place, else -1."""
    if type(a) is not cnp.ndarray:
        return -1
    if not cnp.PyArray_CHKFLAGS(<cnp.ndarray>a,
                                cnp.NPY_ARRAY_C_CONTIGUOUS | cnp.NPY_ARRAY_ALIGNED):
        return -1
    cdef object d = <object>cnp.PyArray_DESCR(<cnp.ndarray>a)
    if d is _F32:
        return FN_F32
    if d is _F64:
        return FN_F64
    return -1


cdef inline bint _fast_like(object a, int kind, int nd, cnp.npy_intp *dims):
    """Whether `a` is an in-place readable array of dtype `kind` and shape dims[:nd]."""
    if _fast_kind(a) != kind or cnp.PyArray_NDIM(<cnp.ndarray>a) != nd:
        return False
    cdef cnp.npy_intp *ad = cnp.PyArray_DIMS(<cnp.ndarray>a)
    cdef int i
    for i in range(nd):
        if ad[i] != dims[i]:
            return False
    return True


cdef inline bint _fast_param(object p, int kind, int nd, cnp.npy_intp *dims):
    return p is None or _fast_like(p, kind, nd, dims)


cdef inline int _fast_axis(object axis, int nd):
    """`axis` made non-negative when it is an int in [-nd, nd), else -1."""
    cdef int overflow = 0
    cdef long a
    if type(axis) is not int:
        return -1
    a = PyLong_AsLongAndOverflow(axis, &overflow)
    if overflow:
        return -1
    if a < 0:
        a += nd
    if a < 0 or a >= nd:
        return -1
    return <int>a


# The ranges of the scalar arguments: the one definition, used by the fast path here and
# by fastnorm._validate's checks (eps_ok, momentum_ok).

cdef inline bint _eps_ok(double e) noexcept:
    """eps: finite and >= 0 (NaN fails)."""
    return e >= 0.0 and e < INFINITY


cdef inline bint _momentum_ok(double m) noexcept:
    """momentum: in [0, 1] (NaN fails)."""
    return m >= 0.0 and m <= 1.0


def eps_ok(double e):
    return _eps_ok(e)


def momentum_ok(double m):
    return _momentum_ok(m)


cdef inline int _fast_eps(object v, double *res):
    """1 with *res set when `v` is a Python float that is a valid eps."""
    if type(v) is not float or not _eps_ok(<double>v):
        return 0
    res[0] = <double>v
    return 1


cdef inline int _fast_momentum(object v, double *res):
    """1 with *res set when `v` is a Python float that is a valid momentum."""
    if type(v) is not float or not _momentum_ok(<double>v):
        return 0
    res[0] = <double>v
    return 1


cdef inline int _fast_flag(object v):
    """1 / 0 for the objects True / False, -1 for anything else."""
    if v is True:
        return 1
    if v is False:
        return 0
    return -1


cdef inline int64_t _prod(cnp.npy_intp *dims, int n):
    cdef int64_t p = 1
    cdef int i
    for i in range(n):
        p *= dims[i]
    return p


cdef inline object _empty(int nd, cnp.npy_intp *dims, int kind):
    return cnp.PyArray_EMPTY(nd, dims, cnp.NPY_FLOAT64 if kind == FN_F64 else cnp.NPY_FLOAT32, 0)


# Fresh outputs from this size on are faulted in by the calling thread before a
# multi-threaded kernel writes them (see fastnorm._validate.new_output, which reads it).
PREFAULT_BYTES = 32 << 20
cdef int64_t _PREFAULT_BYTES = PREFAULT_BYTES


cdef inline object _empty_out(int nd, cnp.npy_intp *dims, int kind):
    """_empty for a kernel's output (y, dx): as fastnorm._validate.new_output."""
    cdef int64_t nbytes = 8 if kind else 4
    cdef int i
    for i in range(nd):
        nbytes *= dims[i]
    if _cached(nbytes):
        old = PyDataMem_SetHandler(_CACHE_HANDLER)
        try:
            a = _empty(nd, dims, kind)
        finally:
            PyDataMem_SetHandler(old)
    else:
        a = _empty(nd, dims, kind)
    if nbytes >= _PREFAULT_BYTES and fn_get_num_threads() > 1:
        fn_prefault(cnp.PyArray_DATA(<cnp.ndarray>a), nbytes)
    return a


cdef inline int _fast_writeable(object r, int nd, cnp.npy_intp *dims):
    """FN_F32 / FN_F64 for an array a kernel may write in place, of shape
    dims[:nd] and writeable (an out, a running statistic, whose dtype may differ from
    x's); -1 otherwise."""
    cdef int kind = _fast_kind(r)
    if kind < 0 or not _fast_like(r, kind, nd, dims):
        return -1
    if not cnp.PyArray_ISWRITEABLE(<cnp.ndarray>r):
        return -1
    return kind


cdef inline bint _apart(object a, object out):
    """Whether a (None, or a C-contiguous array) and the C-contiguous out share no byte:
    numpy.may_share_memory's answer for such arrays."""
    if a is None:
        return True
    cdef char *p = <char *>cnp.PyArray_DATA(<cnp.ndarray>a)
    cdef char *q = <char *>cnp.PyArray_DATA(<cnp.ndarray>out)
    return (p + cnp.PyArray_NBYTES(<cnp.ndarray>a) <= q
            or q + cnp.PyArray_NBYTES(<cnp.ndarray>out) <= p)


cdef object _fast_dest(object out, object x, int kind, int nd, cnp.npy_intp *dims,
                       object a, object b, object c, object d):
    """The array a fast path writes y into: a fresh one where out is None, out itself
    where the full path would write into it directly (fastnorm._validate.make_out: an
    ndarray of x's dtype and shape, writeable, C-contiguous and aligned, sharing no memory
    with the inputs x, a, b, c, d, or being x itself), else None (the full path judges
    out, and writes through a temporary where it overlaps an input)."""
    if out is None:
        return _empty_out(nd, dims, kind)
    if _fast_writeable(out, nd, dims) != kind:
        return None
    if out is not x and not _apart(x, out):
        return None
    if not (_apart(a, out) and _apart(b, out) and _apart(c, out) and _apart(d, out)):
        return None
    return out


def layer_norm_fast(x, weight, bias, axis, eps, return_stats, out=None):
    """fastnorm.layer_norm(x, weight, bias, axis=axis, eps=eps, out=out,
    return_stats=return_stats) for the common call, or None."""
    cdef int kind = _fast_kind(x)
    if kind < 0:
        return None
    cdef int nd = cnp.PyArray_NDIM(<cnp.ndarray>x)
    cdef cnp.npy_intp *dims = cnp.PyArray_DIMS(<cnp.ndarray>x)
    cdef int ax = _fast_axis(axis, nd)
    cdef int stats = _fast_flag(return_stats)
    cdef double e = 0.0
    if ax < 0 or stats < 0 or not _fast_eps(eps, &e):
        return None
    cdef int64_t M = _prod(dims, ax), K = _prod(dims + ax, nd - ax)
    if M * K == 0:
        return None
    if not (_fast_param(weight, kind, nd - ax, dims + ax)
            and _fast_param(bias, kind, nd - ax, dims + ax)):
        return None
    y = _fast_dest(out, x, kind, nd, dims, weight, bias, None, None)
    if y is None:
        return None
    mean = _empty(ax, dims, kind) if stats else None
    rstd = _empty(ax, dims, kind) if stats else None
    cdef void *px = cnp.PyArray_DATA(<cnp.ndarray>x)
    cdef void *pw = _p(weight)
    cdef void *pb = _p(bias)
    cdef void *py = cnp.PyArray_DATA(<cnp.ndarray>y)
    cdef void *pm = _p(mean)
    cdef void *pr = _p(rstd)
    cdef int st
    with nogil:
        st = fn_layer_norm_fwd(kind, px, pw, pb, py, pm, pr, M, K, e)
    _check(st)
    return (y, mean, rstd) if stats else y


def rms_norm_fast(x, weight, axis, eps, return_stats, out=None):
    """fastnorm.rms_norm(x, weight, axis=axis, eps=eps, out=out, return_stats=return_stats)
    for the common call, or None."""
    cdef int kind = _fast_kind(x)
    if kind < 0:
        return None
    cdef int nd = cnp.PyArray_NDIM(<cnp.ndarray>x)
    cdef cnp.npy_intp *dims = cnp.PyArray_DIMS(<cnp.ndarray>x)
    cdef int ax = _fast_axis(axis, nd)
    cdef int stats = _fast_flag(return_stats)
    cdef double e = 0.0
    if ax < 0 or stats < 0 or not _fast_eps(eps, &e):
        return None
    cdef int64_t M = _prod(dims, ax), K = _prod(dims + ax, nd - ax)
    if M * K == 0 or not _fast_param(weight, kind, nd - ax, dims + ax):
        return None
    y = _fast_dest(out, x, kind, nd, dims, weight, None, None, None)
    if y is None:
        return None
    rstd = _empty(ax, dims, kind) if stats else None
    cdef void *px = cnp.PyArray_DATA(<cnp.ndarray>x)
    cdef void *pw = _p(weight)
    cdef void *py = cnp.PyArray_DATA(<cnp.ndarray>y)
    cdef void *pr = _p(rstd)
    cdef int st
    with nogil:
        st = fn_rms_norm_fwd(kind, px, pw, py, pr, M, K, e)
    _check(st)
    return (y, rstd) if stats else y


def layer_norm_bwd_fast(dy, x, mean, rstd, weight, axis, out=None):
    """fastnorm.layer_norm_backward(dy, x, mean, rstd, weight, axis=axis, out=out) for
    the common call, or None. dx may be written over dy (out=dy)."""
    cdef int kind = _fast_kind(x)
    if kind < 0:
        return None
    cdef int nd = cnp.PyArray_NDIM(<cnp.ndarray>x)
    cdef cnp.npy_intp *dims = cnp.PyArray_DIMS(<cnp.ndarray>x)
    cdef int ax = _fast_axis(axis, nd)
    if ax < 0:
        return None
    cdef int64_t M = _prod(dims, ax), K = _prod(dims + ax, nd - ax)
    if M * K == 0:
        return None
    if not (_fast_like(dy, kind, nd, dims) and _fast_like(mean, kind, ax, dims)
            and _fast_like(rstd, kind, ax, dims)
            and _fast_param(weight, kind, nd - ax, dims + ax)):
        return None
    dx = _fast_dest(out, dy, kind, nd, dims, x, mean, rstd, weight)
    if dx is None:
        return None
    dweight = None if weight is None else _empty(nd - ax, dims + ax, kind)
    dbias = _empty(nd - ax, dims + ax, kind)
    cdef void *pdy = cnp.PyArray_DATA(<cnp.ndarray>dy)
    cdef void *px = cnp.PyArray_DATA(<cnp.ndarray>x)
    cdef void *pm = cnp.PyArray_DATA(<cnp.ndarray>mean)
    cdef void *pr = cnp.PyArray_DATA(<cnp.ndarray>rstd)
    cdef void *pw = _p(weight)
    cdef void *pdx = cnp.PyArray_DATA(<cnp.ndarray>dx)
    cdef void *pdw = _p(dweight)
    cdef void *pdb = cnp.PyArray_DATA(<cnp.ndarray>dbias)
    cdef int st
    with nogil:
        st = fn_layer_norm_bwd(kind, pdy, px, pm, pr, pw, pdx, pdw, pdb, M, K)
    _check(st)
    return dx, dweight, dbias


def rms_norm_bwd_fast(dy, x, rstd, weight, axis, out=None):
    """fastnorm.rms_norm_backward(dy, x, rstd, weight, axis=axis, out=out) for the common
    call, or None. dx may be written over dy (out=dy)."""
    cdef int kind = _fast_kind(x)
    if kind < 0:
        return None
    cdef int nd = cnp.PyArray_NDIM(<cnp.ndarray>x)
    cdef cnp.npy_intp *dims = cnp.PyArray_DIMS(<cnp.ndarray>x)
    cdef int ax = _fast_axis(axis, nd)
    if ax < 0:
        return None
    cdef int64_t M = _prod(dims, ax), K = _prod(dims + ax, nd - ax)
    if M * K == 0:
        return None
    if not (_fast_like(dy, kind, nd, dims) and _fast_like(rstd, kind, ax, dims)
            and _fast_param(weight, kind, nd - ax, dims + ax)):
        return None
    dx = _fast_dest(out, dy, kind, nd, dims, x, rstd, weight, None)
    if dx is None:
        return None
    dweight = None if weight is None else _empty(nd - ax, dims + ax, kind)
    cdef void *pdy = cnp.PyArray_DATA(<cnp.ndarray>dy)
    cdef void *px = cnp.PyArray_DATA(<cnp.ndarray>x)
    cdef void *pr = cnp.PyArray_DATA(<cnp.ndarray>rstd)
    cdef void *pw = _p(weight)
    cdef void *pdx = cnp.PyArray_DATA(<cnp.ndarray>dx)
    cdef void *pdw = _p(dweight)
    cdef int st
    with nogil:
        st = fn_rms_norm_bwd(kind, pdy, px, pr, pw, pdx, pdw, M, K)
    _check(st)
    return dx, dweight


def batch_norm_fast(x, weight, bias, running_mean, running_var, training, momentum, eps,
                    axis, return_stats, out=None):
    """fastnorm.batch_norm(x, weight, bias, running_mean, running_var, training=training,
    momentum=momentum, eps=eps, axis=axis, out=out, return_stats=return_stats) for the
    common call, or None."""
    cdef int kind = _fast_kind(x)
    if kind < 0:
        return None
    cdef int nd = cnp.PyArray_NDIM(<cnp.ndarray>x)
    if nd < 2:
        return None
    cdef cnp.npy_intp *dims = cnp.PyArray_DIMS(<cnp.ndarray>x)
    cdef int ax = _fast_axis(axis, nd)
    cdef int train = _fast_flag(training)
    cdef int stats = _fast_flag(return_stats)
    cdef double e = 0.0, m = 0.0
    if (ax < 0 or train < 0 or stats < 0 or not _fast_eps(eps, &e)
            or not _fast_momentum(momentum, &m)):
        return None
    cdef int64_t A = _prod(dims, ax), C = dims[ax], B = _prod(dims + ax + 1, nd - ax - 1)
    if A * B == 0 or C == 0 or (train and A * B == 1):
        return None
    if not (_fast_param(weight, kind, 1, dims + ax) and _fast_param(bias, kind, 1, dims + ax)):
        return None
    cdef int rk = -1, rvk = -1
    if running_mean is not None:
        rk = _fast_writeable(running_mean, 1, dims + ax)
        if rk < 0:
            return None
    if running_var is not None:
        rvk = _fast_writeable(running_var, 1, dims + ax)
        if rvk < 0 or (rk >= 0 and rk != rvk):
            return None
        rk = rvk
    if not train and (running_mean is None or running_var is None):
        return None
    y = _fast_dest(out, x, kind, nd, dims, weight, bias, running_mean, running_var)
    if y is None:
        return None
    mean = _empty(1, dims + ax, kind) if stats else None
    rstd = _empty(1, dims + ax, kind) if stats else None
    cdef void *px = cnp.PyArray_DATA(<cnp.ndarray>x)
    cdef void *pw = _p(weight)
    cdef void *pb = _p(bias)
    cdef void *py = cnp.PyArray_DATA(<cnp.ndarray>y)
    cdef void *pm = _p(mean)
    cdef void *pr = _p(rstd)
    cdef void *prm = _p(running_mean)
    cdef void *prv = _p(running_var)
    cdef int r64 = rk == FN_F64
    cdef int st
    with nogil:
        st = fn_batch_norm_fwd(kind, px, pw, pb, py, pm, pr, prm, prv, r64, A, C, B, e, m,
                               train)
    _check(st)
    return (y, mean, rstd) if stats else y
