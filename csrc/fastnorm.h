/*
 * fastnorm C ABI.
 *
 * Every kernel works on contiguous buffers in one of two canonical shapes:
 *   rows      (M, K)            each of the M rows is normalized on its own
 *   channels  (outer, C, inner) statistics per channel over outer x inner
 * Kernels return FN_OK or a status code and write results through pointers. Optional
 * arrays (weight, bias, stats, gradients that are not wanted) are passed as NULL.
 * Arguments are validated by the caller; kernels only compute.
 *
 * Results are bitwise identical for any thread count: reductions use blocks fixed by
 * the shape alone and merge them in a fixed order.
 */
#ifndef FASTNORM_H
#define FASTNORM_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

enum {
    FN_OK = 0,
    FN_ERR_NOMEM = 1, /* a scratch allocation failed */
    FN_ERR_ARG = 2,   /* an argument the caller should have rejected (negative size, ...) */
    FN_WIDEN = 3      /* iter_norm: float32 data beyond float arithmetic's range; y, dx and the
                         running statistics untouched: call again with float64 copies */
};

/* SIMD levels the kernels are compiled for; the best supported one is chosen at load. */
enum { FN_ISA_BASELINE = 0, FN_ISA_AVX2 = 1, FN_ISA_AVX512 = 2 };

/* Half-precision element types, as their IEEE 754 binary16 (float16) or bfloat16 bit
 * patterns. Kernels for them (suffixes f16 and bf16) read and write x-shaped arrays in
 * the half type and compute in float (sums in double, as for float32); everything else
 * (weight, bias, statistics, their gradients, norms) is float. */
typedef struct fn_float16 {
    uint16_t bits;
} fn_float16;
typedef struct fn_bfloat16 {
    uint16_t bits;
} fn_bfloat16;

/* ---- runtime ---------------------------------------------------------------------- */

/* Call once before any kernel: registers a fork handler so that a child created by
 * fork() runs serially (GNU libgomp's thread pool does not survive fork). */
void fn_runtime_init(void);
int fn_in_forked_child(void);
/* 0 = follow the OpenMP runtime (OMP_NUM_THREADS, threadpoolctl); n > 0 = use n, unless
 * the calling thread's OpenMP setting was lowered below the process default (threadpoolctl's
 * threadpool_limits), which then caps n. */
void fn_set_num_threads(int n);
/* The number of threads a large call would use now. 1 without OpenMP. */
int fn_get_num_threads(void);
/* Calls from this thread run serially while on != 0 (a per-thread flag): for work so small
 * next to what follows (a BLAS product) that waking the threads would cost more, and their
 * spinning after it would slow the other thread pool. */
void fn_set_serial(int on);
int fn_get_serial(void);
int fn_openmp_enabled(void);
/* Highest level this binary was compiled with and the CPU supports. */
int fn_isa_supported(void);
int fn_isa_active(void);
/* Select a level; returns FN_ERR_ARG when it is not supported here. */
int fn_isa_select(int level);
const char *fn_isa_name(int level);
/* Calls whose footprint (inputs, plus the output twice: its write and the read for
 * ownership) reaches this many bytes write their output with streaming (non-temporal)
 * stores on x86-64; a negative value restores the default (the last-level cache's size,
 * at most 32 MiB). Results do not depend on it. */
void fn_set_stream_bytes(int64_t bytes);
int64_t fn_get_stream_bytes(void);
/* Fault in the pages of a fresh output of `bytes` bytes at p, writable, from the calling
 * thread, without changing its contents (Linux's MADV_POPULATE_WRITE; elsewhere, or on a
 * kernel without it, nothing). Done before a multi-threaded kernel writes a large fresh
 * output: the threads faulting its pages at once, with huge pages asked for (NumPy does
 * from 4 MiB), could take 10x as long as one thread doing it alone. */
void fn_prefault(void *p, int64_t bytes);
/* Compiler and build flags, as one human-readable line. */
const char *fn_build_info(void);

/* A cache of freed output buffers, for the memory fastnorm's large outputs are allocated
 * from (the Python layer routes them here). A freed buffer of at least FN_CACHE_MIN bytes
 * is kept, up to FN_CACHE_SLOTS buffers and fn_cache_set_limit bytes in all (the oldest
 * freed first to make room), and handed out again for an allocation of exactly its size:
 * its pages are already mapped, where memory newly given by the system is faulted in and
 * zeroed page by page. Thread-safe.
 *   fn_cache_malloc / fn_cache_free: malloc / free with the cache in between; new blocks
 *     of 4 MiB and more get transparent huge pages asked for, as NumPy's do;
 *   fn_cache_set_limit(bytes): the most the cache may hold (0: none; what it holds above
 *     the new limit is freed now); fn_cache_limit, fn_cache_bytes: the limit and what it
 *     holds. */
#define FN_CACHE_MIN ((int64_t)1 << 20)
#define FN_CACHE_SLOTS 8
void *fn_cache_malloc(size_t size);
void fn_cache_free(void *p, size_t size);
void fn_cache_set_limit(int64_t bytes);
int64_t fn_cache_limit(void);
int64_t fn_cache_bytes(void);

/* ---- rows family: layer norm and RMS norm over (M, K) ------------------------------
 *
 * layer_norm:  y = (x - mean) * rstd * weight + bias, rstd = 1 / sqrt(var + eps)
 * rms_norm:    y = x * rstd * weight,                 rstd = 1 / sqrt(mean(x^2) + eps)
 * mean/rstd have M entries and may be NULL in the forward pass. y may equal x.
 * Backward: dweight/dbias may be NULL (not computed).
 * add_layer_norm / add_rms_norm: s = x + r (r of R rows, R dividing M: row i adds r's row
 * i % R), then the norm of s; s may equal x or r, y may equal x (not s). Backward: dx =
 * the norm's backward of s + ds (ds may be NULL).
 */
#define FN_ROWS_DECL(T, P, SFX)                                                                    \
    int fn_layer_norm_fwd_##SFX(const T *x, const P *weight, const P *bias, T *y, P *mean,         \
                                P *rstd, int64_t M, int64_t K, double eps);                        \
    int fn_layer_norm_bwd_##SFX(const T *dy, const T *x, const P *mean, const P *rstd,             \
                                const P *weight, T *dx, P *dweight, P *dbias, int64_t M,           \
                                int64_t K);                                                        \
    int fn_rms_norm_fwd_##SFX(const T *x, const P *weight, T *y, P *rstd, int64_t M, int64_t K,    \
                              double eps);                                                         \
    int fn_rms_norm_bwd_##SFX(const T *dy, const T *x, const P *rstd, const P *weight, T *dx,      \
                              P *dweight, int64_t M, int64_t K);                                   \
    int fn_add_layer_norm_fwd_##SFX(const T *x, const T *r, int64_t R, const P *weight,            \
                                    const P *bias, T *y, T *s, P *mean, P *rstd, int64_t M,        \
                                    int64_t K, double eps);                                        \
    int fn_add_rms_norm_fwd_##SFX(const T *x, const T *r, int64_t R, const P *weight, T *y, T *s,  \
                                  P *rstd, int64_t M, int64_t K, double eps);                      \
    int fn_add_layer_norm_bwd_##SFX(const T *dy, const T *ds, const T *s, const P *mean,           \
                                    const P *rstd, const P *weight, T *dx, P *dweight, P *dbias,   \
                                    int64_t M, int64_t K);                                         \
    int fn_add_rms_norm_bwd_##SFX(const T *dy, const T *ds, const T *s, const P *rstd,             \
                                  const P *weight, T *dx, P *dweight, int64_t M, int64_t K);

FN_ROWS_DECL(float, float, f32)
FN_ROWS_DECL(double, double, f64)
FN_ROWS_DECL(fn_float16, float, f16)
FN_ROWS_DECL(fn_bfloat16, float, bf16)

/* ---- channels family: batch, group and instance norm over (N, A, C, B) -------------
 *
 * The channel axis of x is C; A is the product of the axes before it, B of those after
 * (channels-first: B = spatial size; channels-last: B = 1).
 *
 * batch_norm: statistics per channel over A x B. training = 1 computes them from the
 *   batch (A * B >= 2) and, where running_mean / running_var are not NULL, updates them
 *   in place: r = (1 - momentum) * r + momentum * batch value (the unbiased variance for
 *   running_var), computed in double; the running arrays are double when running_f64 is
 *   set, float otherwise, whatever the type of x. training = 0 normalizes with the
 *   running statistics (running_var required; running_mean NULL means zeros). mean_out / rstd_out
 * (C entries) may be NULL. The backward with training = 0 treats the statistics as constants.
 * batch_center: mean-only batch norm, y = x - mean_c + bias_c (bias may be NULL); training = 1
 *   takes the mean from the batch (A * B >= 1) and updates running_mean (may be NULL),
 *   training = 0 subtracts running_mean (required). The backward: dx = dy - mean_c(dy) in
 *   training mode, dx = dy otherwise; dbias = sum dy. dx may be dy.
 * group_norm: x is (N, A, C, B) with N the batch; statistics per (n, group) over A x
 *   (C / G) x B, G dividing C; mean / rstd have N * G entries. Instance norm is G = C.
 */
#define FN_CHANNELS_DECL(T, P, SFX)                                                                \
    int fn_batch_norm_fwd_##SFX(const T *x, const P *weight, const P *bias, T *y, P *mean_out,     \
                                P *rstd_out, void *running_mean, void *running_var,                \
                                int running_f64, int64_t A, int64_t C, int64_t B, double eps,      \
                                double momentum, int training);                                    \
    int fn_batch_norm_bwd_##SFX(const T *dy, const T *x, const P *mean, const P *rstd,             \
                                const P *weight, T *dx, P *dweight, P *dbias, int64_t A,           \
                                int64_t C, int64_t B, int training);                               \
    int fn_group_norm_fwd_##SFX(const T *x, const P *weight, const P *bias, T *y, P *mean_out,     \
                                P *rstd_out, int64_t N, int64_t A, int64_t C, int64_t B,           \
                                int64_t G, double eps);                                            \
    int fn_group_norm_bwd_##SFX(const T *dy, const T *x, const P *mean, const P *rstd,             \
                                const P *weight, T *dx, P *dweight, P *dbias, int64_t N,           \
                                int64_t A, int64_t C, int64_t B, int64_t G);                       \
    int fn_batch_center_fwd_##SFX(const T *x, const P *bias, T *y, P *mean_out,                    \
                                  void *running_mean, int running_f64, int64_t A, int64_t C,       \
                                  int64_t B, double momentum, int training);                       \
    int fn_batch_center_bwd_##SFX(const T *dy, T *dx, P *dbias, int64_t A, int64_t C, int64_t B,   \
                                  int training);

FN_CHANNELS_DECL(float, float, f32)
FN_CHANNELS_DECL(double, double, f64)
FN_CHANNELS_DECL(fn_float16, float, f16)
FN_CHANNELS_DECL(fn_bfloat16, float, bf16)

/* Batch norm statistics that can be merged across batches (synchronized batch norm):
 * batch_moments: per channel, mean and m2 (sum of squared deviations) over A x B, as
 *   doubles (C entries each): the values batch_norm_fwd uses in training mode.
 * batch_norm_bwd_sums: per channel, sum_dy = sum dy and sum_dy_xhat = sum dy * xhat with
 *   xhat = (x - mean) * rstd, as doubles.
 * batch_norm_bwd_apply: dx of the training backward from such sums (of possibly more
 *   batches than this one) over `count` values per channel:
 *   dx = rstd * w * (dy - sum_dy / count - xhat * sum_dy_xhat / count).
 */
#define FN_MOMENTS_DECL(T, P, SFX)                                                                 \
    int fn_batch_moments_##SFX(const T *x, double *mean, double *m2, int64_t A, int64_t C,         \
                               int64_t B);                                                         \
    int fn_batch_norm_bwd_sums_##SFX(const T *dy, const T *x, const P *mean, const P *rstd,        \
                                     double *sum_dy, double *sum_dy_xhat, int64_t A, int64_t C,    \
                                     int64_t B);                                                   \
    int fn_batch_norm_bwd_apply_##SFX(const T *dy, const T *x, const P *mean, const P *rstd,       \
                                      const P *weight, const double *sum_dy,                       \
                                      const double *sum_dy_xhat, double count, T *dx, int64_t A,   \
                                      int64_t C, int64_t B);

FN_MOMENTS_DECL(float, float, f32)
FN_MOMENTS_DECL(double, double, f64)
FN_MOMENTS_DECL(fn_float16, float, f16)
FN_MOMENTS_DECL(fn_bfloat16, float, bf16)

/* ---- vectors family: l2_normalize and weight norm -----------------------------------
 *
 * Both work on an (N, A, C, B) view with one Euclidean norm per (n, c) over A x B.
 * l2_normalize: y = x / max(||x||, eps); norm_out (N * C, may be NULL) gets ||x||.
 *   Backward from (dy, y, norm): dx = (dy - y * sum(dy * y)) / norm where norm > eps,
 *   dy / eps elsewhere.
 * weight_norm (N = 1): w = g[c] * v / ||v||_c (zero slice: w = 0); norm_out has C
 *   entries. Backward: dg = sum(dw * v) / norm, dv = g / norm * (dw - v * dg / norm);
 *   both 0 on a zero slice.
 */
#define FN_VECTORS_DECL(T, P, SFX)                                                                 \
    int fn_l2_normalize_fwd_##SFX(const T *x, T *y, P *norm_out, int64_t N, int64_t A, int64_t C,  \
                                  int64_t B, double eps);                                          \
    int fn_l2_normalize_bwd_##SFX(const T *dy, const T *y, const P *norm, T *dx, int64_t N,        \
                                  int64_t A, int64_t C, int64_t B, double eps);                    \
    int fn_weight_norm_fwd_##SFX(const T *v, const P *g, T *w, P *norm_out, int64_t A, int64_t C,  \
                                 int64_t B);                                                       \
    int fn_weight_norm_bwd_##SFX(const T *dw, const T *v, const P *g, const P *norm, T *dv, P *dg, \
                                 int64_t A, int64_t C, int64_t B);

FN_VECTORS_DECL(float, float, f32)
FN_VECTORS_DECL(double, double, f64)
FN_VECTORS_DECL(fn_float16, float, f16)
FN_VECTORS_DECL(fn_bfloat16, float, bf16)

/* ---- the kernels with the element type as an argument -------------------------------
 *
 * One entry per kernel: `dtype` (FN_F32, FN_F64, FN_F16, FN_BF16) is the type of the
 * x-shaped arrays, every array is passed as void *, typed as in the kernel of that element
 * type above (weights, statistics and norms are float for the half types), and the entry
 * calls that kernel. An unknown dtype returns FN_ERR_ARG. The Python bindings call these.
 */
enum { FN_F32 = 0, FN_F64 = 1, FN_F16 = 2, FN_BF16 = 3 };

int fn_layer_norm_fwd(int dtype, const void *x, const void *weight, const void *bias, void *y,
                      void *mean, void *rstd, int64_t M, int64_t K, double eps);
int fn_layer_norm_bwd(int dtype, const void *dy, const void *x, const void *mean, const void *rstd,
                      const void *weight, void *dx, void *dweight, void *dbias, int64_t M,
                      int64_t K);
int fn_rms_norm_fwd(int dtype, const void *x, const void *weight, void *y, void *rstd, int64_t M,
                    int64_t K, double eps);
int fn_rms_norm_bwd(int dtype, const void *dy, const void *x, const void *rstd, const void *weight,
                    void *dx, void *dweight, int64_t M, int64_t K);
int fn_add_layer_norm_fwd(int dtype, const void *x, const void *r, int64_t R, const void *weight,
                          const void *bias, void *y, void *s, void *mean, void *rstd, int64_t M,
                          int64_t K, double eps);
int fn_add_rms_norm_fwd(int dtype, const void *x, const void *r, int64_t R, const void *weight,
                        void *y, void *s, void *rstd, int64_t M, int64_t K, double eps);
int fn_add_layer_norm_bwd(int dtype, const void *dy, const void *ds, const void *s,
                          const void *mean, const void *rstd, const void *weight, void *dx,
                          void *dweight, void *dbias, int64_t M, int64_t K);
int fn_add_rms_norm_bwd(int dtype, const void *dy, const void *ds, const void *s, const void *rstd,
                        const void *weight, void *dx, void *dweight, int64_t M, int64_t K);
int fn_batch_norm_fwd(int dtype, const void *x, const void *weight, const void *bias, void *y,
                      void *mean_out, void *rstd_out, void *running_mean, void *running_var,
                      int running_f64, int64_t A, int64_t C, int64_t B, double eps, double momentum,
                      int training);
int fn_batch_norm_bwd(int dtype, const void *dy, const void *x, const void *mean, const void *rstd,
                      const void *weight, void *dx, void *dweight, void *dbias, int64_t A,
                      int64_t C, int64_t B, int training);
int fn_batch_center_fwd(int dtype, const void *x, const void *bias, void *y, void *mean_out,
                        void *running_mean, int running_f64, int64_t A, int64_t C, int64_t B,
                        double momentum, int training);
int fn_batch_center_bwd(int dtype, const void *dy, void *dx, void *dbias, int64_t A, int64_t C,
                        int64_t B, int training);
int fn_group_norm_fwd(int dtype, const void *x, const void *weight, const void *bias, void *y,
                      void *mean_out, void *rstd_out, int64_t N, int64_t A, int64_t C, int64_t B,
                      int64_t G, double eps);
int fn_group_norm_bwd(int dtype, const void *dy, const void *x, const void *mean, const void *rstd,
                      const void *weight, void *dx, void *dweight, void *dbias, int64_t N,
                      int64_t A, int64_t C, int64_t B, int64_t G);
int fn_batch_moments(int dtype, const void *x, double *mean, double *m2, int64_t A, int64_t C,
                     int64_t B);
int fn_batch_norm_bwd_sums(int dtype, const void *dy, const void *x, const void *mean,
                           const void *rstd, double *sum_dy, double *sum_dy_xhat, int64_t A,
                           int64_t C, int64_t B);
int fn_batch_norm_bwd_apply(int dtype, const void *dy, const void *x, const void *mean,
                            const void *rstd, const void *weight, const double *sum_dy,
                            const double *sum_dy_xhat, double count, void *dx, int64_t A, int64_t C,
                            int64_t B);
int fn_l2_normalize_fwd(int dtype, const void *x, void *y, void *norm_out, int64_t N, int64_t A,
                        int64_t C, int64_t B, double eps);
int fn_l2_normalize_bwd(int dtype, const void *dy, const void *y, const void *norm, void *dx,
                        int64_t N, int64_t A, int64_t C, int64_t B, double eps);
int fn_weight_norm_fwd(int dtype, const void *v, const void *g, void *w, void *norm_out, int64_t A,
                       int64_t C, int64_t B);
int fn_weight_norm_bwd(int dtype, const void *dw, const void *v, const void *g, const void *norm,
                       void *dv, void *dg, int64_t A, int64_t C, int64_t B);

/* Double backward (the backward's vector-Jacobian product) of layer, RMS, batch, group and
 * instance norm over x as (N, A, C, B) with G groups of channels per n: see double_bwd.c.
 * float32 and float64 only; serial. */
int fn_norm_double_bwd(int dtype, const void *x, const void *dy, const void *mean, const void *rstd,
                       const void *weight, const void *ggx, const void *ggw, const void *ggb,
                       void *gx, void *gdy, void *gw, int64_t N, int64_t A, int64_t C, int64_t B,
                       int64_t G, int fixed);

/* Iterative whitening (IterNorm) over x as (A, C, B), the channels in ceil(C / d) groups
 * of d (the last may be smaller), T Newton iterations: see iter_norm.c. float32 and
 * float64. weight, bias, mean and the whitening matrices have x's type; the whitening
 * matrices are (G, d, d), a smaller last group's in the top-left block (the rest zero).
 * The running statistics are double when running_f64 is set, float otherwise. */
int fn_iter_norm_fwd(int dtype, const void *x, const void *weight, const void *bias, void *y,
                     void *mean_out, void *whitening_out, void *running_mean,
                     void *running_whitening, int running_f64, int64_t A, int64_t C, int64_t B,
                     int64_t d, int64_t T, double eps, double momentum, int training);
int fn_iter_norm_bwd(int dtype, const void *dy, const void *x, const void *mean, const void *weight,
                     const void *whitening, void *dx, void *dweight, void *dbias, int64_t A,
                     int64_t C, int64_t B, int64_t d, int64_t T, double eps, int training);

#ifdef __cplusplus
}
#endif
#endif /* FASTNORM_H */
