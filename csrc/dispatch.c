/*
 * The public kernels: each forwards to the version compiled for the active SIMD level.
 * The level is chosen once at import (fn_isa_select) and never changes during a call.
 */
#include "internal.h"

int fn_isa_active(void);

#if FN_MULTI_ISA
#define FN_DISPATCH(name, params, args)                                                            \
    int name##_baseline params;                                                                    \
    int name##_avx2 params;                                                                        \
    int name##_avx512 params;                                                                      \
    int name params                                                                                \
    {                                                                                              \
        switch (fn_isa_active()) {                                                                 \
        case FN_ISA_AVX512:                                                                        \
            return name##_avx512 args;                                                             \
        case FN_ISA_AVX2:                                                                          \
            return name##_avx2 args;                                                               \
        default:                                                                                   \
            return name##_baseline args;                                                           \
        }                                                                                          \
    }
#else
#define FN_DISPATCH(name, params, args)                                                            \
    int name##_baseline params;                                                                    \
    int name params                                                                                \
    {                                                                                              \
        return name##_baseline args;                                                               \
    }
#endif

#define FN_ROWS_DISPATCH(T, P, SFX)                                                                \
    FN_DISPATCH(fn_layer_norm_fwd_##SFX,                                                           \
                (const T *x, const P *w, const P *b, T *y, P *mean, P *rstd, int64_t M, int64_t K, \
                 double eps),                                                                      \
                (x, w, b, y, mean, rstd, M, K, eps))                                               \
    FN_DISPATCH(fn_layer_norm_bwd_##SFX,                                                           \
                (const T *dy, const T *x, const P *mean, const P *rstd, const P *w, T *dx, P *dw,  \
                 P *db, int64_t M, int64_t K),                                                     \
                (dy, x, mean, rstd, w, dx, dw, db, M, K))                                          \
    FN_DISPATCH(fn_rms_norm_fwd_##SFX,                                                             \
                (const T *x, const P *w, T *y, P *rstd, int64_t M, int64_t K, double eps),         \
                (x, w, y, rstd, M, K, eps))                                                        \
    FN_DISPATCH(                                                                                   \
        fn_rms_norm_bwd_##SFX,                                                                     \
        (const T *dy, const T *x, const P *rstd, const P *w, T *dx, P *dw, int64_t M, int64_t K),  \
        (dy, x, rstd, w, dx, dw, M, K))                                                            \
    FN_DISPATCH(fn_add_layer_norm_fwd_##SFX,                                                       \
                (const T *x, const T *r, int64_t R, const P *w, const P *b, T *y, T *s, P *mean,   \
                 P *rstd, int64_t M, int64_t K, double eps),                                       \
                (x, r, R, w, b, y, s, mean, rstd, M, K, eps))                                      \
    FN_DISPATCH(fn_add_rms_norm_fwd_##SFX,                                                         \
                (const T *x, const T *r, int64_t R, const P *w, T *y, T *s, P *rstd, int64_t M,    \
                 int64_t K, double eps),                                                           \
                (x, r, R, w, y, s, rstd, M, K, eps))                                               \
    FN_DISPATCH(fn_add_layer_norm_bwd_##SFX,                                                       \
                (const T *dy, const T *ds, const T *s, const P *mean, const P *rstd, const P *w,   \
                 T *dx, P *dw, P *db, int64_t M, int64_t K),                                       \
                (dy, ds, s, mean, rstd, w, dx, dw, db, M, K))                                      \
    FN_DISPATCH(fn_add_rms_norm_bwd_##SFX,                                                         \
                (const T *dy, const T *ds, const T *s, const P *rstd, const P *w, T *dx, P *dw,    \
                 int64_t M, int64_t K),                                                            \
                (dy, ds, s, rstd, w, dx, dw, M, K))

FN_ROWS_DISPATCH(float, float, f32)
FN_ROWS_DISPATCH(double, double, f64)
FN_ROWS_DISPATCH(fn_float16, float, f16)
FN_ROWS_DISPATCH(fn_bfloat16, float, bf16)

#define FN_CHANNELS_DISPATCH(T, P, SFX)                                                            \
    FN_DISPATCH(fn_batch_norm_fwd_##SFX,                                                           \
                (const T *x, const P *w, const P *b, T *y, P *mean, P *rstd, void *rm, void *rv,   \
                 int r64, int64_t A, int64_t C, int64_t B, double eps, double mom, int training),  \
                (x, w, b, y, mean, rstd, rm, rv, r64, A, C, B, eps, mom, training))                \
    FN_DISPATCH(fn_batch_norm_bwd_##SFX,                                                           \
                (const T *dy, const T *x, const P *mean, const P *rstd, const P *w, T *dx, P *dw,  \
                 P *db, int64_t A, int64_t C, int64_t B, int training),                            \
                (dy, x, mean, rstd, w, dx, dw, db, A, C, B, training))                             \
    FN_DISPATCH(fn_group_norm_fwd_##SFX,                                                           \
                (const T *x, const P *w, const P *b, T *y, P *mean, P *rstd, int64_t N, int64_t A, \
                 int64_t C, int64_t B, int64_t G, double eps),                                     \
                (x, w, b, y, mean, rstd, N, A, C, B, G, eps))                                      \
    FN_DISPATCH(fn_group_norm_bwd_##SFX,                                                           \
                (const T *dy, const T *x, const P *mean, const P *rstd, const P *w, T *dx, P *dw,  \
                 P *db, int64_t N, int64_t A, int64_t C, int64_t B, int64_t G),                    \
                (dy, x, mean, rstd, w, dx, dw, db, N, A, C, B, G))                                 \
    FN_DISPATCH(fn_batch_center_fwd_##SFX,                                                         \
                (const T *x, const P *b, T *y, P *mean, void *rm, int r64, int64_t A, int64_t C,   \
                 int64_t B, double mom, int training),                                             \
                (x, b, y, mean, rm, r64, A, C, B, mom, training))                                  \
    FN_DISPATCH(fn_batch_center_bwd_##SFX,                                                         \
                (const T *dy, T *dx, P *db, int64_t A, int64_t C, int64_t B, int training),        \
                (dy, dx, db, A, C, B, training))

FN_CHANNELS_DISPATCH(float, float, f32)
FN_CHANNELS_DISPATCH(double, double, f64)
FN_CHANNELS_DISPATCH(fn_float16, float, f16)
FN_CHANNELS_DISPATCH(fn_bfloat16, float, bf16)

#define FN_MOMENTS_DISPATCH(T, P, SFX)                                                             \
    FN_DISPATCH(fn_batch_moments_##SFX,                                                            \
                (const T *x, double *mean, double *m2, int64_t A, int64_t C, int64_t B),           \
                (x, mean, m2, A, C, B))                                                            \
    FN_DISPATCH(fn_batch_norm_bwd_sums_##SFX,                                                      \
                (const T *dy, const T *x, const P *mean, const P *rstd, double *s1, double *s2,    \
                 int64_t A, int64_t C, int64_t B),                                                 \
                (dy, x, mean, rstd, s1, s2, A, C, B))                                              \
    FN_DISPATCH(fn_batch_norm_bwd_apply_##SFX,                                                     \
                (const T *dy, const T *x, const P *mean, const P *rstd, const P *w,                \
                 const double *s1, const double *s2, double count, T *dx, int64_t A, int64_t C,    \
                 int64_t B),                                                                       \
                (dy, x, mean, rstd, w, s1, s2, count, dx, A, C, B))

FN_MOMENTS_DISPATCH(float, float, f32)
FN_MOMENTS_DISPATCH(double, double, f64)
FN_MOMENTS_DISPATCH(fn_float16, float, f16)
FN_MOMENTS_DISPATCH(fn_bfloat16, float, bf16)

#define FN_VECTORS_DISPATCH(T, P, SFX)                                                             \
    FN_DISPATCH(                                                                                   \
        fn_l2_normalize_fwd_##SFX,                                                                 \
        (const T *x, T *y, P *nrm, int64_t N, int64_t A, int64_t C, int64_t B, double eps),        \
        (x, y, nrm, N, A, C, B, eps))                                                              \
    FN_DISPATCH(fn_l2_normalize_bwd_##SFX,                                                         \
                (const T *dy, const T *y, const P *nrm, T *dx, int64_t N, int64_t A, int64_t C,    \
                 int64_t B, double eps),                                                           \
                (dy, y, nrm, dx, N, A, C, B, eps))                                                 \
    FN_DISPATCH(fn_weight_norm_fwd_##SFX,                                                          \
                (const T *v, const P *g, T *w, P *nrm, int64_t A, int64_t C, int64_t B),           \
                (v, g, w, nrm, A, C, B))                                                           \
    FN_DISPATCH(fn_weight_norm_bwd_##SFX,                                                          \
                (const T *dw, const T *v, const P *g, const P *nrm, T *dv, P *dg, int64_t A,       \
                 int64_t C, int64_t B),                                                            \
                (dw, v, g, nrm, dv, dg, A, C, B))

FN_VECTORS_DISPATCH(float, float, f32)
FN_VECTORS_DISPATCH(double, double, f64)
FN_VECTORS_DISPATCH(fn_float16, float, f16)
FN_VECTORS_DISPATCH(fn_bfloat16, float, bf16)

#define FN_ITER_DISPATCH(T, SFX)                                                                   \
    FN_DISPATCH(fn_iter_stats_##SFX,                                                               \
                (const T *x, const T *dy, const double *shift, int64_t A, int64_t C, int64_t B,    \
                 int64_t d, double *out),                                                          \
                (x, dy, shift, A, C, B, d, out))                                                   \
    FN_DISPATCH(fn_iter_apply_##SFX,                                                               \
                (const T *u, const T *v, const double *K1, const double *K2, const double *shift,  \
                 const double *c, T *out, int64_t A, int64_t C, int64_t B, int64_t d),             \
                (u, v, K1, K2, shift, c, out, A, C, B, d))

FN_ITER_DISPATCH(float, f32)
FN_ITER_DISPATCH(double, f64)

/* The entries with the element type as an argument (fastnorm.h): each passes its void *
 * arrays on to the kernel of that type, which converts them implicitly. */
#define FN_BY_DTYPE(name, params, args)                                                            \
    int fn_##name params                                                                           \
    {                                                                                              \
        switch (dtype) {                                                                           \
        case FN_F32:                                                                               \
            return fn_##name##_f32 args;                                                           \
        case FN_F64:                                                                               \
            return fn_##name##_f64 args;                                                           \
        case FN_F16:                                                                               \
            return fn_##name##_f16 args;                                                           \
        case FN_BF16:                                                                              \
            return fn_##name##_bf16 args;                                                          \
        default:                                                                                   \
            return FN_ERR_ARG;                                                                     \
        }                                                                                          \
    }

FN_BY_DTYPE(layer_norm_fwd,
            (int dtype, const void *x, const void *w, const void *b, void *y, void *mean,
             void *rstd, int64_t M, int64_t K, double eps),
            (x, w, b, y, mean, rstd, M, K, eps))
FN_BY_DTYPE(layer_norm_bwd,
            (int dtype, const void *dy, const void *x, const void *mean, const void *rstd,
             const void *w, void *dx, void *dw, void *db, int64_t M, int64_t K),
            (dy, x, mean, rstd, w, dx, dw, db, M, K))
FN_BY_DTYPE(rms_norm_fwd,
            (int dtype, const void *x, const void *w, void *y, void *rstd, int64_t M, int64_t K,
             double eps),
            (x, w, y, rstd, M, K, eps))
FN_BY_DTYPE(rms_norm_bwd,
            (int dtype, const void *dy, const void *x, const void *rstd, const void *w, void *dx,
             void *dw, int64_t M, int64_t K),
            (dy, x, rstd, w, dx, dw, M, K))
FN_BY_DTYPE(add_layer_norm_fwd,
            (int dtype, const void *x, const void *r, int64_t R, const void *w, const void *b,
             void *y, void *s, void *mean, void *rstd, int64_t M, int64_t K, double eps),
            (x, r, R, w, b, y, s, mean, rstd, M, K, eps))
FN_BY_DTYPE(add_rms_norm_fwd,
            (int dtype, const void *x, const void *r, int64_t R, const void *w, void *y, void *s,
             void *rstd, int64_t M, int64_t K, double eps),
            (x, r, R, w, y, s, rstd, M, K, eps))
FN_BY_DTYPE(add_layer_norm_bwd,
            (int dtype, const void *dy, const void *ds, const void *s, const void *mean,
             const void *rstd, const void *w, void *dx, void *dw, void *db, int64_t M, int64_t K),
            (dy, ds, s, mean, rstd, w, dx, dw, db, M, K))
FN_BY_DTYPE(add_rms_norm_bwd,
            (int dtype, const void *dy, const void *ds, const void *s, const void *rstd,
             const void *w, void *dx, void *dw, int64_t M, int64_t K),
            (dy, ds, s, rstd, w, dx, dw, M, K))
FN_BY_DTYPE(batch_norm_fwd,
            (int dtype, const void *x, const void *w, const void *b, void *y, void *mean,
             void *rstd, void *rm, void *rv, int r64, int64_t A, int64_t C, int64_t B, double eps,
             double mom, int training),
            (x, w, b, y, mean, rstd, rm, rv, r64, A, C, B, eps, mom, training))
FN_BY_DTYPE(batch_norm_bwd,
            (int dtype, const void *dy, const void *x, const void *mean, const void *rstd,
             const void *w, void *dx, void *dw, void *db, int64_t A, int64_t C, int64_t B,
             int training),
            (dy, x, mean, rstd, w, dx, dw, db, A, C, B, training))
FN_BY_DTYPE(batch_center_fwd,
            (int dtype, const void *x, const void *b, void *y, void *mean, void *rm, int r64,
             int64_t A, int64_t C, int64_t B, double mom, int training),
            (x, b, y, mean, rm, r64, A, C, B, mom, training))
FN_BY_DTYPE(batch_center_bwd,
            (int dtype, const void *dy, void *dx, void *db, int64_t A, int64_t C, int64_t B,
             int training),
            (dy, dx, db, A, C, B, training))
FN_BY_DTYPE(group_norm_fwd,
            (int dtype, const void *x, const void *w, const void *b, void *y, void *mean,
             void *rstd, int64_t N, int64_t A, int64_t C, int64_t B, int64_t G, double eps),
            (x, w, b, y, mean, rstd, N, A, C, B, G, eps))
FN_BY_DTYPE(group_norm_bwd,
            (int dtype, const void *dy, const void *x, const void *mean, const void *rstd,
             const void *w, void *dx, void *dw, void *db, int64_t N, int64_t A, int64_t C,
             int64_t B, int64_t G),
            (dy, x, mean, rstd, w, dx, dw, db, N, A, C, B, G))
FN_BY_DTYPE(batch_moments,
            (int dtype, const void *x, double *mean, double *m2, int64_t A, int64_t C, int64_t B),
            (x, mean, m2, A, C, B))
FN_BY_DTYPE(batch_norm_bwd_sums,
            (int dtype, const void *dy, const void *x, const void *mean, const void *rstd,
             double *s1, double *s2, int64_t A, int64_t C, int64_t B),
            (dy, x, mean, rstd, s1, s2, A, C, B))
FN_BY_DTYPE(batch_norm_bwd_apply,
            (int dtype, const void *dy, const void *x, const void *mean, const void *rstd,
             const void *w, const double *s1, const double *s2, double count, void *dx, int64_t A,
             int64_t C, int64_t B),
            (dy, x, mean, rstd, w, s1, s2, count, dx, A, C, B))
FN_BY_DTYPE(l2_normalize_fwd,
            (int dtype, const void *x, void *y, void *nrm, int64_t N, int64_t A, int64_t C,
             int64_t B, double eps),
            (x, y, nrm, N, A, C, B, eps))
FN_BY_DTYPE(l2_normalize_bwd,
            (int dtype, const void *dy, const void *y, const void *nrm, void *dx, int64_t N,
             int64_t A, int64_t C, int64_t B, double eps),
            (dy, y, nrm, dx, N, A, C, B, eps))
FN_BY_DTYPE(weight_norm_fwd,
            (int dtype, const void *v, const void *g, void *w, void *nrm, int64_t A, int64_t C,
             int64_t B),
            (v, g, w, nrm, A, C, B))
FN_BY_DTYPE(weight_norm_bwd,
            (int dtype, const void *dw, const void *v, const void *g, const void *nrm, void *dv,
             void *dg, int64_t A, int64_t C, int64_t B),
            (dw, v, g, nrm, dv, dg, A, C, B))
