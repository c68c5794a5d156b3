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
    FN_ERR_ARG = 2    /* an argument the caller should have rejected (negative size, ...) */
};

/* SIMD levels the kernels are compiled for; the best supported one is chosen at load. */
enum { FN_ISA_BASELINE = 0, FN_ISA_AVX2 = 1, FN_ISA_AVX512 = 2 };

/* ---- runtime ---------------------------------------------------------------------- */

/* 0 = follow the OpenMP runtime (OMP_NUM_THREADS, threadpoolctl); n > 0 = use n. */
void fn_set_num_threads(int n);
/* The number of threads a large call would use now. 1 without OpenMP. */
int fn_get_num_threads(void);
int fn_openmp_enabled(void);
/* Highest level this binary was compiled with and the CPU supports. */
int fn_isa_supported(void);
int fn_isa_active(void);
/* Select a level; returns FN_ERR_ARG when it is not supported here. */
int fn_isa_select(int level);
const char *fn_isa_name(int level);
/* Compiler and build flags, as one human-readable line. */
const char *fn_build_info(void);

/* ---- rows family: layer norm and RMS norm over (M, K) ------------------------------
 *
 * layer_norm:  y = (x - mean) * rstd * weight + bias, rstd = 1 / sqrt(var + eps)
 * rms_norm:    y = x * rstd * weight,                 rstd = 1 / sqrt(mean(x^2) + eps)
 * mean/rstd have M entries and may be NULL in the forward pass. y may equal x.
 * Backward: dweight/dbias may be NULL (not computed).
 */
int fn_layer_norm_fwd_f32(const float *x, const float *weight, const float *bias, float *y,
                          float *mean, float *rstd, int64_t M, int64_t K, double eps);
int fn_layer_norm_fwd_f64(const double *x, const double *weight, const double *bias, double *y,
                          double *mean, double *rstd, int64_t M, int64_t K, double eps);
int fn_layer_norm_bwd_f32(const float *dy, const float *x, const float *mean, const float *rstd,
                          const float *weight, float *dx, float *dweight, float *dbias,
                          int64_t M, int64_t K);
int fn_layer_norm_bwd_f64(const double *dy, const double *x, const double *mean,
                          const double *rstd, const double *weight, double *dx, double *dweight,
                          double *dbias, int64_t M, int64_t K);

int fn_rms_norm_fwd_f32(const float *x, const float *weight, float *y, float *rstd, int64_t M,
                        int64_t K, double eps);
int fn_rms_norm_fwd_f64(const double *x, const double *weight, double *y, double *rstd,
                        int64_t M, int64_t K, double eps);
int fn_rms_norm_bwd_f32(const float *dy, const float *x, const float *rstd, const float *weight,
                        float *dx, float *dweight, int64_t M, int64_t K);
int fn_rms_norm_bwd_f64(const double *dy, const double *x, const double *rstd,
                        const double *weight, double *dx, double *dweight, int64_t M, int64_t K);

#ifdef __cplusplus
}
#endif
#endif /* FASTNORM_H */
