/*
 * Times one C kernel directly, without Python: the harness behind the "C harness"
 * figures of the README. Built by tools/kernel_bench.sh against one SIMD level.
 *
 *   kernel_bench OP A C B [N G]
 *
 * OP: bn_fwd (batch norm training forward), bn_moments, bn_bwd (training backward),
 * bn_eval, gn_fwd, gn_bwd (group norm with N samples and G groups; A counts all rows,
 * N of them per batch), ln_fwd, ln_bwd, rms_fwd, rms_bwd (layer and RMS norm of A rows
 * of C elements), wn_fwd, wn_bwd (weight norm of A rows of C elements, one norm per
 * row), bn_sums (the batch norm backward's per-channel sums alone), copy.
 * The (A, C, B) view is the kernels' own: channels-first batch norm is (N, C, H*W),
 * channels-last (N*H*W, C, 1). The arrays start FN_OFF floats (default 4: 16 bytes, as
 * NumPy's large arrays do) past a 64-byte boundary, the output FN_OFF_OUT floats (default
 * FN_OFF); on transparent huge pages as NumPy's large arrays (FN_NO_HUGE=1: 4 KB pages,
 * as the figures of the README's first five rounds). Prints the median of 21 calls (FN_REPS
 * calls, for a profile).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench_util.h"

#ifndef ISA
#define ISA avx512
#endif
#define CAT_(a, b) a##_##b
#define CAT(a, b) CAT_(a, b)
#define K(name) CAT(name, ISA)

int K(fn_batch_norm_fwd_f32)(const float *x, const float *w, const float *b, float *y, float *mo,
                             float *ro, void *rm, void *rv, int f64, int64_t A, int64_t C,
                             int64_t B, double eps, double mom, int training);
int K(fn_batch_moments_f32)(const float *x, double *mean, double *m2, int64_t A, int64_t C,
                            int64_t B);
int K(fn_batch_norm_bwd_f32)(const float *dy, const float *x, const float *mean, const float *rstd,
                             const float *w, float *dx, float *dw, float *db, int64_t A, int64_t C,
                             int64_t B, int training);
int K(fn_group_norm_fwd_f32)(const float *x, const float *w, const float *b, float *y, float *mo,
                             float *ro, int64_t N, int64_t A, int64_t C, int64_t B, int64_t G,
                             double eps);
int K(fn_group_norm_bwd_f32)(const float *dy, const float *x, const float *mean, const float *rstd,
                             const float *w, float *dx, float *dw, float *db, int64_t N, int64_t A,
                             int64_t C, int64_t B, int64_t G);
int K(fn_layer_norm_fwd_f32)(const float *x, const float *w, const float *b, float *y, float *mean,
                             float *rstd, int64_t M, int64_t K, double eps);
int K(fn_rms_norm_fwd_f32)(const float *x, const float *w, float *y, float *rstd, int64_t M,
                           int64_t K, double eps);
int K(fn_rms_norm_bwd_f32)(const float *dy, const float *x, const float *rstd, const float *w,
                           float *dx, float *dw, int64_t M, int64_t K);
int K(fn_weight_norm_fwd_f32)(const float *v, const float *g, float *w, float *norm, int64_t A,
                              int64_t C, int64_t B);
int K(fn_weight_norm_bwd_f32)(const float *dw, const float *v, const float *g, const float *norm,
                              float *dv, float *dg, int64_t A, int64_t C, int64_t B);
int K(fn_batch_norm_bwd_sums_f32)(const float *dy, const float *x, const float *mean,
                                  const float *rstd, double *sum_dy, double *sum_dy_xhat, int64_t A,
                                  int64_t C, int64_t B);
int K(fn_layer_norm_bwd_f32)(const float *dy, const float *x, const float *mean, const float *rstd,
                             const float *w, float *dx, float *dw, float *db, int64_t M, int64_t K);

int main(int argc, char **argv)
{
    if (argc < 5) {
        fprintf(stderr, "usage: %s OP A C B [N G]\n", argv[0]);
        return 2;
    }
    const char *op = argv[1];
    int64_t A = atoll(argv[2]);
    const int64_t C = atoll(argv[3]), B = atoll(argv[4]);
    const int64_t N = argc > 5 ? atoll(argv[5]) : 1, G = argc > 6 ? atoll(argv[6]) : 1;
    const int off = getenv("FN_OFF") ? atoi(getenv("FN_OFF")) : 4;
    const int gn = !strncmp(op, "gn_", 3);
    if (gn)
        A /= N; /* rows per sample */
    const int64_t n = N * A * C * B, ns = N * C > A ? N * C : A;
    /* FN_OFF_OUT: the output's own offset (NumPy's fresh outputs often start elsewhere in
     * a cache line than the inputs) */
    const int offo = getenv("FN_OFF_OUT") ? atoi(getenv("FN_OFF_OUT")) : off;
    const int huge = !getenv("FN_NO_HUGE");
    float *x = buffer(n, off, huge), *y = buffer(n, offo, huge), *dy = buffer(n, off, huge);
    float *w = malloc((size_t)C * 4), *b = malloc((size_t)C * 4), *dw = malloc((size_t)C * 4);
    float *db = malloc((size_t)C * 4), *mo = malloc((size_t)ns * 4), *ro = malloc((size_t)ns * 4);
    double *dm = malloc((size_t)C * 8), *d2 = malloc((size_t)C * 8);
    float *gv = malloc((size_t)ns * 4); /* weight norm's g, one per row */
    for (int64_t i = 0; i < ns; i++)
        gv[i] = 1.5f;
    for (int64_t i = 0; i < n; i++) {
        x[i] = (float)((i * 7919) % 1000) / 500.0f - 1.0f;
        dy[i] = (float)((i * 104729) % 1000) / 500.0f - 1.0f;
        y[i] = 0.0f;
    }
    for (int64_t c = 0; c < C; c++) {
        w[c] = 1.0f + (float)c * 1e-3f;
        b[c] = 0.1f;
    }
    /* statistics for the backward passes */
    if (!strncmp(op, "wn_", 3))
        K(fn_weight_norm_fwd_f32)(x, gv, y, ro, 1, A, C);
    else if (!strncmp(op, "ln_", 3) || !strncmp(op, "rms_", 4))
        for (int64_t i = 0; i < A; i++) {
            mo[i] = 0.01f * (float)i;
            ro[i] = 1.5f;
        }
    else if (gn)
        K(fn_group_norm_fwd_f32)(x, w, b, y, mo, ro, N, A, C, B, G, 1e-5);
    else
        K(fn_batch_norm_fwd_f32)(x, w, b, y, mo, ro, NULL, NULL, 0, A, C, B, 1e-5, 0.1, 1);
    const int reps = getenv("FN_REPS") ? atoi(getenv("FN_REPS")) : 21;
    double *ts = malloc((size_t)(reps > 0 ? reps : 1) * sizeof(double));
    for (int r = 0; r < reps; r++) {
        const double t = now();
        if (!strcmp(op, "bn_fwd"))
            K(fn_batch_norm_fwd_f32)(x, w, b, y, mo, ro, NULL, NULL, 0, A, C, B, 1e-5, 0.1, 1);
        else if (!strcmp(op, "bn_moments"))
            K(fn_batch_moments_f32)(x, dm, d2, A, C, B);
        else if (!strcmp(op, "bn_bwd"))
            K(fn_batch_norm_bwd_f32)(dy, x, mo, ro, w, y, dw, db, A, C, B, 1);
        else if (!strcmp(op, "bn_sums"))
            K(fn_batch_norm_bwd_sums_f32)(dy, x, mo, ro, dm, d2, A, C, B);
        else if (!strcmp(op, "bn_eval"))
            K(fn_batch_norm_fwd_f32)(x, w, b, y, mo, ro, NULL, ro, 0, A, C, B, 1e-5, 0.1, 0);
        else if (!strcmp(op, "gn_fwd"))
            K(fn_group_norm_fwd_f32)(x, w, b, y, mo, ro, N, A, C, B, G, 1e-5);
        else if (!strcmp(op, "gn_bwd"))
            K(fn_group_norm_bwd_f32)(dy, x, mo, ro, w, y, dw, db, N, A, C, B, G);
        else if (!strcmp(op, "ln_fwd"))
            K(fn_layer_norm_fwd_f32)(x, w, b, y, mo, ro, A, C, 1e-5);
        else if (!strcmp(op, "ln_bwd"))
            K(fn_layer_norm_bwd_f32)(dy, x, mo, ro, w, y, dw, db, A, C);
        else if (!strcmp(op, "rms_fwd"))
            K(fn_rms_norm_fwd_f32)(x, w, y, ro, A, C, 1e-5);
        else if (!strcmp(op, "rms_bwd"))
            K(fn_rms_norm_bwd_f32)(dy, x, ro, w, y, dw, A, C);
        else if (!strcmp(op, "wn_fwd"))
            K(fn_weight_norm_fwd_f32)(x, gv, y, ro, 1, A, C);
        else if (!strcmp(op, "wn_bwd"))
            K(fn_weight_norm_bwd_f32)(dy, x, gv, ro, y, mo, 1, A, C);
        else if (!strcmp(op, "copy"))
            memcpy(y, x, (size_t)n * sizeof(float));
        else {
            fprintf(stderr, "unknown OP %s\n", op);
            return 2;
        }
        ts[r] = now() - t;
    }
    qsort(ts, (size_t)reps, sizeof(double), cmp);
    printf("%s median %.1f us\n", op, ts[reps / 2] * 1e6);
    return 0;
}
