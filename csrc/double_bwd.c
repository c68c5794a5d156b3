/*
 * Second derivatives of the normalizations: the vector-Jacobian product of the backward
 * pass, for double backward (a gradient of a gradient).
 *
 * One kernel covers layer, RMS, batch, group and instance norm. x is (N, A, C, B),
 * contiguous; the parameters are per channel c; the statistics of group (n, g) are
 * mean[n * G + c / (C / G)], rstd[...], over the n_g = A * (C / G) * B values of the group:
 *   layer / RMS norm  (M, K) rows:            N = M, A = 1, C = K, B = 1, G = 1
 *   batch norm        (outer, C, inner):      N = 1, A = outer, B = inner, G = C
 *   group norm        (N, A, C, B), G groups; instance norm: G = C
 * mean == NULL is RMS norm (x̂ = x r). fixed != 0 is batch norm with running statistics
 * (constants of x).
 *
 * The backward maps (x, dy, γ) to dx = r (g − mean(g) − x̂ mean(g x̂)) with g = dy γ,
 * dγ = Σ dy x̂, dβ = Σ dy. Given the gradients ggx, ggw, ggb of a loss with respect to
 * dx, dγ, dβ (each may be NULL: zero) this computes the loss's gradients gx, gdy, gw
 * with respect to x, dy, γ (gw may be NULL). Per group, with v = ggx, a = ggw_c,
 * m = mean(g x̂), q = mean(v x̂), P = Σ v (g − mean(g) − x̂ m) = Σ v dx / r and
 * h = a dy − r (v m + g q) (the gradient with respect to x̂ at fixed r):
 *   gdy = γ r (v − mean(v) − x̂ q) + a x̂ + ggb_c
 *   gγ  = Σ dy r (v − mean(v) − x̂ q)
 *   gx  = r (h − mean(h) − x̂ mean(h x̂)) − P r² x̂ / n_g
 * (RMS norm: the same without the mean(·) terms; fixed statistics: gdy = γ r v + a x̂ +
 * ggb, gγ = Σ dy r v, gx = r a dy.)
 *
 * Serial: sums in double in a fixed order, so the result does not depend on threads.
 */
#include <stdlib.h>

#include "fastnorm.h"

enum { S_G, S_GX, S_V, S_VX, S_VG, S_AD, S_ADX, S_COUNT };

#define FN_DOUBLE_BWD(SFX, T, P)                                                                   \
    static int double_bwd_##SFX(const T *x, const T *dy, const P *mean, const P *rstd, const P *w, \
                                const T *ggx, const P *ggw, const P *ggb, T *gx, T *gdy, P *gw,    \
                                int64_t N, int64_t A, int64_t C, int64_t B, int64_t G, int fixed)  \
    {                                                                                              \
        const int64_t cpg = C / G, groups = N * G;                                                 \
        const double n = (double)(A * cpg * B);                                                    \
        double *sums = calloc((size_t)(groups * S_COUNT), sizeof(double));                         \
        double *gws = calloc((size_t)C, sizeof(double));                                           \
        if (!sums || !gws) {                                                                       \
            free(sums);                                                                            \
            free(gws);                                                                             \
            return FN_ERR_NOMEM;                                                                   \
        }                                                                                          \
        const int centered = mean != NULL;                                                         \
        /* pass 1: the sums of each group */                                                       \
        for (int64_t i0 = 0; i0 < N * A; i0++) {                                                   \
            const int64_t nn = i0 / A;                                                             \
            for (int64_t c = 0; c < C; c++) {                                                      \
                const int64_t k = nn * G + c / cpg;                                                \
                const double mu = centered ? (double)mean[k] : 0.0, r = (double)rstd[k];           \
                const double gam = w ? (double)w[c] : 1.0, a = ggw ? (double)ggw[c] : 0.0;         \
                double *s = sums + k * S_COUNT;                                                    \
                const int64_t off = (i0 * C + c) * B;                                              \
                for (int64_t b = 0; b < B; b++) {                                                  \
                    const double xh = ((double)x[off + b] - mu) * r, d = (double)dy[off + b];      \
                    const double g = d * gam, v = ggx ? (double)ggx[off + b] : 0.0;                \
                    s[S_G] += g;                                                                   \
                    s[S_GX] += g * xh;                                                             \
                    s[S_V] += v;                                                                   \
                    s[S_VX] += v * xh;                                                             \
                    s[S_VG] += v * g;                                                              \
                    s[S_AD] += a * d;                                                              \
                    s[S_ADX] += a * d * xh;                                                        \
                }                                                                                  \
            }                                                                                      \
        }                                                                                          \
        /* pass 2: the gradients */                                                                \
        for (int64_t i0 = 0; i0 < N * A; i0++) {                                                   \
            const int64_t nn = i0 / A;                                                             \
            for (int64_t c = 0; c < C; c++) {                                                      \
                const int64_t k = nn * G + c / cpg;                                                \
                const double mu = centered ? (double)mean[k] : 0.0, r = (double)rstd[k];           \
                const double gam = w ? (double)w[c] : 1.0, a = ggw ? (double)ggw[c] : 0.0;         \
                const double bb = ggb ? (double)ggb[c] : 0.0;                                      \
                const double *s = sums + k * S_COUNT;                                              \
                const double m = s[S_GX] / n, q = s[S_VX] / n;                                     \
                const double gbar = centered ? s[S_G] / n : 0.0;                                   \
                const double vbar = centered ? s[S_V] / n : 0.0;                                   \
                const double Pv = s[S_VG] - n * vbar * gbar - n * q * m;                           \
                const double hbar = centered ? s[S_AD] / n - r * (vbar * m + gbar * q) : 0.0;      \
                const double hx = s[S_ADX] / n - 2.0 * r * m * q;                                  \
                const double pterm = Pv * r * r / n;                                               \
                const int64_t off = (i0 * C + c) * B;                                              \
                double gwc = 0.0;                                                                  \
                for (int64_t b = 0; b < B; b++) {                                                  \
                    const double xh = ((double)x[off + b] - mu) * r, d = (double)dy[off + b];      \
                    const double g = d * gam, v = ggx ? (double)ggx[off + b] : 0.0;                \
                    double t, ox;                                                                  \
                    if (fixed) {                                                                   \
                        t = r * v;                                                                 \
                        ox = r * a * d;                                                            \
                    } else {                                                                       \
                        const double h = a * d - r * (v * m + g * q);                              \
                        t = r * (v - vbar - xh * q);                                               \
                        ox = r * (h - hbar - xh * hx) - pterm * xh;                                \
                    }                                                                              \
                    gdy[off + b] = (T)(gam * t + a * xh + bb);                                     \
                    gx[off + b] = (T)ox;                                                           \
                    gwc += d * t;                                                                  \
                }                                                                                  \
                gws[c] += gwc;                                                                     \
            }                                                                                      \
        }                                                                                          \
        if (gw)                                                                                    \
            for (int64_t c = 0; c < C; c++)                                                        \
                gw[c] = (P)gws[c];                                                                 \
        free(sums);                                                                                \
        free(gws);                                                                                 \
        return FN_OK;                                                                              \
    }

FN_DOUBLE_BWD(f32, float, float)
FN_DOUBLE_BWD(f64, double, double)

int fn_norm_double_bwd(int dtype, const void *x, const void *dy, const void *mean, const void *rstd,
                       const void *weight, const void *ggx, const void *ggw, const void *ggb,
                       void *gx, void *gdy, void *gw, int64_t N, int64_t A, int64_t C, int64_t B,
                       int64_t G, int fixed)
{
    if (N < 0 || A < 0 || C < 1 || B < 0 || G < 1 || C % G)
        return FN_ERR_ARG;
    if (dtype == FN_F32)
        return double_bwd_f32(x, dy, mean, rstd, weight, ggx, ggw, ggb, gx, gdy, gw, N, A, C, B, G,
                              fixed);
    if (dtype == FN_F64)
        return double_bwd_f64(x, dy, mean, rstd, weight, ggx, ggw, ggb, gx, gdy, gw, N, A, C, B, G,
                              fixed);
    return FN_ERR_ARG;
}
