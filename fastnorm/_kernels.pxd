# Declarations of the C ABI in csrc/fastnorm.h.
from libc.stdint cimport int64_t, uint16_t


cdef extern from "fastnorm.h" nogil:
    ctypedef struct fn_float16:
        uint16_t bits
    ctypedef struct fn_bfloat16:
        uint16_t bits

    enum:
        FN_OK
        FN_ERR_NOMEM
        FN_ERR_ARG
        FN_ISA_BASELINE
        FN_ISA_AVX2
        FN_ISA_AVX512

    void fn_runtime_init()
    int fn_in_forked_child()
    void fn_set_num_threads(int n)
    int fn_get_num_threads()
    void fn_set_serial(int on)
    int fn_get_serial()
    int fn_openmp_enabled()
    int fn_isa_supported()
    int fn_isa_active()
    int fn_isa_select(int level)
    const char *fn_isa_name(int level)
    const char *fn_build_info()
    void fn_set_stream_bytes(int64_t bytes)
    int64_t fn_get_stream_bytes()
    void fn_prefault(void *p, int64_t nbytes)
    enum:
        FN_CACHE_MIN
    void *fn_cache_malloc(size_t size)
    void fn_cache_free(void *p, size_t size)
    void fn_cache_set_limit(int64_t nbytes)
    int64_t fn_cache_limit()
    int64_t fn_cache_bytes()

    int fn_layer_norm_fwd_f32(const float *x, const float *weight, const float *bias,
                              float *y, float *mean, float *rstd, int64_t M, int64_t K,
                              double eps)
    int fn_layer_norm_fwd_f64(const double *x, const double *weight, const double *bias,
                              double *y, double *mean, double *rstd, int64_t M, int64_t K,
                              double eps)
    int fn_layer_norm_bwd_f32(const float *dy, const float *x, const float *mean,
                              const float *rstd, const float *weight, float *dx,
                              float *dweight, float *dbias, int64_t M, int64_t K)
    int fn_layer_norm_bwd_f64(const double *dy, const double *x, const double *mean,
                              const double *rstd, const double *weight, double *dx,
                              double *dweight, double *dbias, int64_t M, int64_t K)
    int fn_rms_norm_fwd_f32(const float *x, const float *weight, float *y, float *rstd,
                            int64_t M, int64_t K, double eps)
    int fn_rms_norm_fwd_f64(const double *x, const double *weight, double *y, double *rstd,
                            int64_t M, int64_t K, double eps)
    int fn_rms_norm_bwd_f32(const float *dy, const float *x, const float *rstd,
                            const float *weight, float *dx, float *dweight, int64_t M,
                            int64_t K)
    int fn_rms_norm_bwd_f64(const double *dy, const double *x, const double *rstd,
                            const double *weight, double *dx, double *dweight, int64_t M,
                            int64_t K)

    int fn_batch_norm_fwd_f32(const float *x, const float *weight, const float *bias,
                              float *y, float *mean_out, float *rstd_out,
                              void *running_mean, void *running_var, int running_f64,
                              int64_t A, int64_t C, int64_t B, double eps, double momentum,
                              int training)
    int fn_batch_norm_fwd_f64(const double *x, const double *weight, const double *bias,
                              double *y, double *mean_out, double *rstd_out,
                              void *running_mean, void *running_var, int running_f64,
                              int64_t A, int64_t C, int64_t B, double eps, double momentum,
                              int training)
    int fn_batch_norm_bwd_f32(const float *dy, const float *x, const float *mean,
                              const float *rstd, const float *weight, float *dx,
                              float *dweight, float *dbias, int64_t A, int64_t C, int64_t B,
                              int training)
    int fn_batch_norm_bwd_f64(const double *dy, const double *x, const double *mean,
                              const double *rstd, const double *weight, double *dx,
                              double *dweight, double *dbias, int64_t A, int64_t C,
                              int64_t B, int training)
    int fn_group_norm_fwd_f32(const float *x, const float *weight, const float *bias,
                              float *y, float *mean_out, float *rstd_out, int64_t N,
                              int64_t A, int64_t C, int64_t B, int64_t G, double eps)
    int fn_group_norm_fwd_f64(const double *x, const double *weight, const double *bias,
                              double *y, double *mean_out, double *rstd_out, int64_t N,
                              int64_t A, int64_t C, int64_t B, int64_t G, double eps)
    int fn_group_norm_bwd_f32(const float *dy, const float *x, const float *mean,
                              const float *rstd, const float *weight, float *dx,
                              float *dweight, float *dbias, int64_t N, int64_t A, int64_t C,
                              int64_t B, int64_t G)
    int fn_group_norm_bwd_f64(const double *dy, const double *x, const double *mean,
                              const double *rstd, const double *weight, double *dx,
                              double *dweight, double *dbias, int64_t N, int64_t A,
                              int64_t C, int64_t B, int64_t G)

    int fn_l2_normalize_fwd_f32(const float *x, float *y, float *norm_out, int64_t N,
                                int64_t A, int64_t C, int64_t B, double eps)
    int fn_l2_normalize_fwd_f64(const double *x, double *y, double *norm_out, int64_t N,
                                int64_t A, int64_t C, int64_t B, double eps)
    int fn_l2_normalize_bwd_f32(const float *dy, const float *y, const float *norm,
                                float *dx, int64_t N, int64_t A, int64_t C, int64_t B,
                                double eps)
    int fn_l2_normalize_bwd_f64(const double *dy, const double *y, const double *norm,
                                double *dx, int64_t N, int64_t A, int64_t C, int64_t B,
                                double eps)
    int fn_weight_norm_fwd_f32(const float *v, const float *g, float *w, float *norm_out,
                               int64_t A, int64_t C, int64_t B)
    int fn_weight_norm_fwd_f64(const double *v, const double *g, double *w,
                               double *norm_out, int64_t A, int64_t C, int64_t B)
    int fn_weight_norm_bwd_f32(const float *dw, const float *v, const float *g,
                               const float *norm, float *dv, float *dg, int64_t A, int64_t C,
                               int64_t B)
    int fn_weight_norm_bwd_f64(const double *dw, const double *v, const double *g,
                               const double *norm, double *dv, double *dg, int64_t A,
                               int64_t C, int64_t B)

    # float16 / bfloat16: x-shaped arrays in the half type, everything else float
    int fn_layer_norm_fwd_f16(const fn_float16 *x, const float *weight, const float *bias,
                              fn_float16 *y, float *mean, float *rstd, int64_t M, int64_t K,
                              double eps)
    int fn_layer_norm_fwd_bf16(const fn_bfloat16 *x, const float *weight, const float *bias,
                               fn_bfloat16 *y, float *mean, float *rstd, int64_t M,
                               int64_t K, double eps)
    int fn_layer_norm_bwd_f16(const fn_float16 *dy, const fn_float16 *x, const float *mean,
                              const float *rstd, const float *weight, fn_float16 *dx,
                              float *dweight, float *dbias, int64_t M, int64_t K)
    int fn_layer_norm_bwd_bf16(const fn_bfloat16 *dy, const fn_bfloat16 *x,
                               const float *mean, const float *rstd, const float *weight,
                               fn_bfloat16 *dx, float *dweight, float *dbias, int64_t M,
                               int64_t K)
    int fn_rms_norm_fwd_f16(const fn_float16 *x, const float *weight, fn_float16 *y,
                            float *rstd, int64_t M, int64_t K, double eps)
    int fn_rms_norm_fwd_bf16(const fn_bfloat16 *x, const float *weight, fn_bfloat16 *y,
                             float *rstd, int64_t M, int64_t K, double eps)
    int fn_rms_norm_bwd_f16(const fn_float16 *dy, const fn_float16 *x, const float *rstd,
                            const float *weight, fn_float16 *dx, float *dweight, int64_t M,
                            int64_t K)
    int fn_rms_norm_bwd_bf16(const fn_bfloat16 *dy, const fn_bfloat16 *x, const float *rstd,
                             const float *weight, fn_bfloat16 *dx, float *dweight,
                             int64_t M, int64_t K)
    int fn_batch_norm_fwd_f16(const fn_float16 *x, const float *weight, const float *bias,
                              fn_float16 *y, float *mean_out, float *rstd_out,
                              void *running_mean, void *running_var, int running_f64,
                              int64_t A, int64_t C, int64_t B, double eps, double momentum,
                              int training)
    int fn_batch_norm_fwd_bf16(const fn_bfloat16 *x, const float *weight, const float *bias,
                               fn_bfloat16 *y, float *mean_out, float *rstd_out,
                               void *running_mean, void *running_var, int running_f64,
                               int64_t A, int64_t C, int64_t B, double eps, double momentum,
                               int training)
    int fn_batch_norm_bwd_f16(const fn_float16 *dy, const fn_float16 *x, const float *mean,
                              const float *rstd, const float *weight, fn_float16 *dx,
                              float *dweight, float *dbias, int64_t A, int64_t C, int64_t B,
                              int training)
    int fn_batch_norm_bwd_bf16(const fn_bfloat16 *dy, const fn_bfloat16 *x,
                               const float *mean, const float *rstd, const float *weight,
                               fn_bfloat16 *dx, float *dweight, float *dbias, int64_t A,
                               int64_t C, int64_t B, int training)
    int fn_group_norm_fwd_f16(const fn_float16 *x, const float *weight, const float *bias,
                              fn_float16 *y, float *mean_out, float *rstd_out, int64_t N,
                              int64_t A, int64_t C, int64_t B, int64_t G, double eps)
    int fn_group_norm_fwd_bf16(const fn_bfloat16 *x, const float *weight, const float *bias,
                               fn_bfloat16 *y, float *mean_out, float *rstd_out, int64_t N,
                               int64_t A, int64_t C, int64_t B, int64_t G, double eps)
    int fn_group_norm_bwd_f16(const fn_float16 *dy, const fn_float16 *x, const float *mean,
                              const float *rstd, const float *weight, fn_float16 *dx,
                              float *dweight, float *dbias, int64_t N, int64_t A, int64_t C,
                              int64_t B, int64_t G)
    int fn_group_norm_bwd_bf16(const fn_bfloat16 *dy, const fn_bfloat16 *x,
                               const float *mean, const float *rstd, const float *weight,
                               fn_bfloat16 *dx, float *dweight, float *dbias, int64_t N,
                               int64_t A, int64_t C, int64_t B, int64_t G)
    int fn_l2_normalize_fwd_f16(const fn_float16 *x, fn_float16 *y, float *norm_out,
                                int64_t N, int64_t A, int64_t C, int64_t B, double eps)
    int fn_l2_normalize_fwd_bf16(const fn_bfloat16 *x, fn_bfloat16 *y, float *norm_out,
                                 int64_t N, int64_t A, int64_t C, int64_t B, double eps)
    int fn_l2_normalize_bwd_f16(const fn_float16 *dy, const fn_float16 *y,
                                const float *norm, fn_float16 *dx, int64_t N, int64_t A,
                                int64_t C, int64_t B, double eps)
    int fn_l2_normalize_bwd_bf16(const fn_bfloat16 *dy, const fn_bfloat16 *y,
                                 const float *norm, fn_bfloat16 *dx, int64_t N, int64_t A,
                                 int64_t C, int64_t B, double eps)
    int fn_weight_norm_fwd_f16(const fn_float16 *v, const float *g, fn_float16 *w,
                               float *norm_out, int64_t A, int64_t C, int64_t B)
    int fn_weight_norm_fwd_bf16(const fn_bfloat16 *v, const float *g, fn_bfloat16 *w,
                                float *norm_out, int64_t A, int64_t C, int64_t B)
    int fn_weight_norm_bwd_f16(const fn_float16 *dw, const fn_float16 *v, const float *g,
                               const float *norm, fn_float16 *dv, float *dg, int64_t A,
                               int64_t C, int64_t B)
    int fn_weight_norm_bwd_bf16(const fn_bfloat16 *dw, const fn_bfloat16 *v, const float *g,
                                const float *norm, fn_bfloat16 *dv, float *dg, int64_t A,
                                int64_t C, int64_t B)
    int fn_batch_moments_f32(const float *x, double *mean, double *m2, int64_t A, int64_t C,
                             int64_t B)
    int fn_batch_moments_f64(const double *x, double *mean, double *m2, int64_t A,
                             int64_t C, int64_t B)
    int fn_batch_norm_bwd_sums_f32(const float *dy, const float *x, const float *mean,
                                   const float *rstd, double *sum_dy, double *sum_dy_xhat,
                                   int64_t A, int64_t C, int64_t B)
    int fn_batch_norm_bwd_sums_f64(const double *dy, const double *x, const double *mean,
                                   const double *rstd, double *sum_dy, double *sum_dy_xhat,
                                   int64_t A, int64_t C, int64_t B)
    int fn_batch_norm_bwd_apply_f32(const float *dy, const float *x, const float *mean,
                                    const float *rstd, const float *weight,
                                    const double *sum_dy, const double *sum_dy_xhat,
                                    double count, float *dx, int64_t A, int64_t C, int64_t B)
    int fn_batch_norm_bwd_apply_f64(const double *dy, const double *x, const double *mean,
                                    const double *rstd, const double *weight,
                                    const double *sum_dy, const double *sum_dy_xhat,
                                    double count, double *dx, int64_t A, int64_t C,
                                    int64_t B)
    int fn_batch_moments_f16(const fn_float16 *x, double *mean, double *m2, int64_t A,
                             int64_t C, int64_t B)
    int fn_batch_moments_bf16(const fn_bfloat16 *x, double *mean, double *m2, int64_t A,
                              int64_t C, int64_t B)
    int fn_batch_norm_bwd_sums_f16(const fn_float16 *dy, const fn_float16 *x,
                                   const float *mean, const float *rstd, double *sum_dy,
                                   double *sum_dy_xhat, int64_t A, int64_t C, int64_t B)
    int fn_batch_norm_bwd_sums_bf16(const fn_bfloat16 *dy, const fn_bfloat16 *x,
                                    const float *mean, const float *rstd, double *sum_dy,
                                    double *sum_dy_xhat, int64_t A, int64_t C, int64_t B)
    int fn_batch_norm_bwd_apply_f16(const fn_float16 *dy, const fn_float16 *x,
                                    const float *mean, const float *rstd,
                                    const float *weight, const double *sum_dy,
                                    const double *sum_dy_xhat, double count, fn_float16 *dx,
                                    int64_t A, int64_t C, int64_t B)
    int fn_batch_norm_bwd_apply_bf16(const fn_bfloat16 *dy, const fn_bfloat16 *x,
                                     const float *mean, const float *rstd,
                                     const float *weight, const double *sum_dy,
                                     const double *sum_dy_xhat, double count,
                                     fn_bfloat16 *dx, int64_t A, int64_t C, int64_t B)
