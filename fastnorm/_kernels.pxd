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
        FN_WIDEN
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

    enum:
        FN_F32
        FN_F64
        FN_F16
        FN_BF16

    # one entry per kernel, the element type (FN_F32 ...) first; see fastnorm.h
    int fn_layer_norm_fwd(int dtype, const void *x, const void *weight, const void *bias,
                          void *y, void *mean, void *rstd, int64_t M, int64_t K, double eps)
    int fn_layer_norm_bwd(int dtype, const void *dy, const void *x, const void *mean,
                          const void *rstd, const void *weight, void *dx, void *dweight,
                          void *dbias, int64_t M, int64_t K)
    int fn_rms_norm_fwd(int dtype, const void *x, const void *weight, void *y, void *rstd,
                        int64_t M, int64_t K, double eps)
    int fn_rms_norm_bwd(int dtype, const void *dy, const void *x, const void *rstd,
                        const void *weight, void *dx, void *dweight, int64_t M, int64_t K)
    int fn_add_layer_norm_fwd(int dtype, const void *x, const void *r, int64_t R,
                              const void *weight, const void *bias, void *y, void *s,
                              void *mean, void *rstd, int64_t M, int64_t K, double eps)
    int fn_add_rms_norm_fwd(int dtype, const void *x, const void *r, int64_t R,
                            const void *weight, void *y, void *s, void *rstd, int64_t M,
                            int64_t K, double eps)
    int fn_add_layer_norm_bwd(int dtype, const void *dy, const void *ds, const void *s,
                              const void *mean, const void *rstd, const void *weight, void *dx,
                              void *dweight, void *dbias, int64_t M, int64_t K)
    int fn_add_rms_norm_bwd(int dtype, const void *dy, const void *ds, const void *s,
                            const void *rstd, const void *weight, void *dx, void *dweight,
                            int64_t M, int64_t K)
    int fn_batch_norm_fwd(int dtype, const void *x, const void *weight, const void *bias,
                          void *y, void *mean_out, void *rstd_out, void *running_mean,
                          void *running_var, int running_f64, int64_t A, int64_t C,
                          int64_t B, double eps, double momentum, int training)
    int fn_batch_norm_bwd(int dtype, const void *dy, const void *x, const void *mean,
                          const void *rstd, const void *weight, void *dx, void *dweight,
                          void *dbias, int64_t A, int64_t C, int64_t B, int training)
    int fn_batch_center_fwd(int dtype, const void *x, const void *bias, void *y,
                            void *mean_out, void *running_mean, int running_f64, int64_t A,
                            int64_t C, int64_t B, double momentum, int training)
    int fn_batch_center_bwd(int dtype, const void *dy, void *dx, void *dbias, int64_t A,
                            int64_t C, int64_t B, int training)
    int fn_group_norm_fwd(int dtype, const void *x, const void *weight, const void *bias,
                          void *y, void *mean_out, void *rstd_out, int64_t N, int64_t A,
                          int64_t C, int64_t B, int64_t G, double eps)
    int fn_group_norm_bwd(int dtype, const void *dy, const void *x, const void *mean,
                          const void *rstd, const void *weight, void *dx, void *dweight,
                          void *dbias, int64_t N, int64_t A, int64_t C, int64_t B,
                          int64_t G)
    int fn_iter_norm_fwd(int dtype, const void *x, const void *weight, const void *bias,
                         void *y, void *mean_out, void *whitening_out, void *running_mean,
                         void *running_whitening, int running_f64, int64_t A, int64_t C,
                         int64_t B, int64_t d, int64_t T, double eps, double momentum,
                         int training)
    int fn_iter_norm_bwd(int dtype, const void *dy, const void *x, const void *mean,
                         const void *weight, const void *whitening, void *dx, void *dweight,
                         void *dbias, int64_t A, int64_t C, int64_t B, int64_t d, int64_t T,
                         double eps, int training)
    int fn_norm_double_bwd(int dtype, const void *x, const void *dy, const void *mean,
                           const void *rstd, const void *weight, const void *ggx,
                           const void *ggw, const void *ggb, void *gx, void *gdy, void *gw,
                           int64_t N, int64_t A, int64_t C, int64_t B, int64_t G, int fixed)
    int fn_batch_moments(int dtype, const void *x, double *mean, double *m2, int64_t A,
                         int64_t C, int64_t B)
    int fn_batch_norm_bwd_sums(int dtype, const void *dy, const void *x, const void *mean,
                               const void *rstd, double *sum_dy, double *sum_dy_xhat,
                               int64_t A, int64_t C, int64_t B)
    int fn_batch_norm_bwd_apply(int dtype, const void *dy, const void *x, const void *mean,
                                const void *rstd, const void *weight, const double *sum_dy,
                                const double *sum_dy_xhat, double count, void *dx,
                                int64_t A, int64_t C, int64_t B)
    int fn_l2_normalize_fwd(int dtype, const void *x, void *y, void *norm_out, int64_t N,
                            int64_t A, int64_t C, int64_t B, double eps)
    int fn_l2_normalize_bwd(int dtype, const void *dy, const void *y, const void *norm,
                            void *dx, int64_t N, int64_t A, int64_t C, int64_t B, double eps)
    int fn_weight_norm_fwd(int dtype, const void *v, const void *g, void *w, void *norm_out,
                           int64_t A, int64_t C, int64_t B)
    int fn_weight_norm_bwd(int dtype, const void *dw, const void *v, const void *g,
                           const void *norm, void *dv, void *dg, int64_t A, int64_t C,
                           int64_t B)
