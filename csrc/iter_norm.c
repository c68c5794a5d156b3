/*
 * Iterative whitening (IterNorm, Huang et al. 2019): the small per-group work between the
 * data passes of iter_norm.inc.
 *
 * Per group of dg channels over m positions, with Xc = x - μ (dg x m):
 *   Σ = Xc Xcᵀ / m + εI,  t = tr Σ,  S = Σ / t,
 *   P₀ = I,  P_k = 1.5 P_{k-1} - 0.5 P_{k-1}³ S  (k = 1..T),  W = P_T / √t,
 *   y = γ ⊙ (W Xc) + β.
 * The backward is the exact derivative of these steps (what reverse-mode differentiation
 * of the iterations gives). With g = γ ⊙ dy and E = Σ dy Xcᵀ:
 *   dγ_c = Σ_j W_cj E_cj,  dβ = Σ dy,  dW = diag(γ) E,
 *   dP_T = dW / √t,  dt = -½ t^{-3/2} <dW, P_T>,
 *   through P_k = 1.5 P - 0.5 P P P S (P = P_{k-1}, G = dP_k):
 *     dS += -½ (P³)ᵀ G,  dP_{k-1} = 1.5 G - ½ (G (P²S)ᵀ + Pᵀ G (PS)ᵀ + (P²)ᵀ G Sᵀ),
 *   dΣ = dS / t + (dt - <dS, Σ> / t²) I,  M = (dΣ + dΣᵀ) / m,
 *   dx = Wᵀ g + M Xc - mean_m(Wᵀ g + M Xc)   (the centering's derivative).
 * dx is linear in (dy, x) per position, so the second data pass applies K1 = Wᵀ diag(γ),
 * K2 = M and a constant per channel. With the running statistics (training = 0) W and μ
 * are constants: dx = Wᵀ g.
 *
 * The statistics come from iter_stats around a shift (the mean of the first positions in
 * the forward, the given mean in the backward): with δ = Σ (x - s) / m, μ = s + δ and
 * Σ = XX / m - δδᵀ + εI. All of it in double; serial (d x d work per group).
 */
#include "internal.h"

/* c = alpha op(a) op(b) + beta c, n x n row-major; op transposes when ta / tb. The
 * operands are first copied untransposed into tmp (2 n²), so that the inner loop runs down
 * contiguous rows (and vectorizes); c must not be a or b. The one loop of the d x d work
 * that matters (about 20% of an iter_norm forward and backward of 64x512x7x7 at d = 16 in
 * the baseline's 2-wide vectors): compiled for each SIMD level, the active one called. */
static inline FN_ALWAYS_INLINE void iw_mm_body(const double *a, int ta, const double *b, int tb,
                                               double *c, int64_t n, double alpha, double beta,
                                               double *tmp)
{
    const int64_t n2 = n * n;
    if (ta) {
        for (int64_t i = 0; i < n; i++)
            for (int64_t k = 0; k < n; k++)
                tmp[i * n + k] = a[k * n + i];
        a = tmp;
    }
    if (tb) {
        for (int64_t k = 0; k < n; k++)
            for (int64_t j = 0; j < n; j++)
                tmp[n2 + k * n + j] = b[j * n + k];
        b = tmp + n2;
    }
    for (int64_t i = 0; i < n; i++) {
        double *ci = c + i * n;
        for (int64_t j = 0; j < n; j++)
            ci[j] = beta != 0.0 ? beta * ci[j] : 0.0;
        for (int64_t k = 0; k < n; k++) {
            const double aik = alpha * a[i * n + k];
            const double *bk = b + k * n;
            for (int64_t j = 0; j < n; j++)
                ci[j] += aik * bk[j];
        }
    }
}

#define IW_MM_PARAMS                                                                               \
    const double *a, int ta, const double *b, int tb, double *c, int64_t n, double alpha,          \
        double beta, double *tmp
#define IW_MM_ARGS a, ta, b, tb, c, n, alpha, beta, tmp

static void iw_mm_baseline(IW_MM_PARAMS)
{
    iw_mm_body(IW_MM_ARGS);
}

#if FN_MULTI_ISA
int fn_isa_active(void);

__attribute__((target("avx2,fma"))) static void iw_mm_avx2(IW_MM_PARAMS)
{
    iw_mm_body(IW_MM_ARGS);
}

__attribute__((target("avx512f,avx2,fma"))) static void iw_mm_avx512(IW_MM_PARAMS)
{
    iw_mm_body(IW_MM_ARGS);
}
#endif

static void iw_mm(IW_MM_PARAMS)
{
#if FN_MULTI_ISA
    switch (fn_isa_active()) {
    case FN_ISA_AVX512:
        iw_mm_avx512(IW_MM_ARGS);
        return;
    case FN_ISA_AVX2:
        iw_mm_avx2(IW_MM_ARGS);
        return;
    default:
        break;
    }
#endif
    iw_mm_baseline(IW_MM_ARGS);
}

static double iw_dot(const double *a, const double *b, int64_t n2)
{
    double s = 0.0;
    for (int64_t i = 0; i < n2; i++)
        s += a[i] * b[i];
    return s;
}

/* The Newton iterations on Σ (n x n): P[0..T] (T + 1 matrices) and W = P_T / √t; t = tr Σ.
 * scratch: 4 n² doubles. */
static double iw_newton(const double *sigma, int64_t n, int64_t T, double *P, double *W,
                        double *scratch)
{
    const int64_t n2 = n * n;
    double t = 0.0;
    for (int64_t i = 0; i < n; i++)
        t += sigma[i * n + i];
    double *P2 = scratch, *P3S = scratch + n2, *mt = scratch + 2 * n2;
    for (int64_t i = 0; i < n2; i++)
        P[i] = i % (n + 1) == 0 ? 1.0 : 0.0;
    for (int64_t k = 1; k <= T; k++) {
        const double *Pp = P + (k - 1) * n2;
        double *Pk = P + k * n2;
        iw_mm(Pp, 0, Pp, 0, P2, n, 1.0, 0.0, mt);          /* P² */
        iw_mm(P2, 0, Pp, 0, P3S, n, 1.0, 0.0, mt);         /* P³ */
        iw_mm(P3S, 0, sigma, 0, Pk, n, -0.5 / t, 0.0, mt); /* -½ P³ S */
        for (int64_t i = 0; i < n2; i++)
            Pk[i] += 1.5 * Pp[i];
    }
    const double r = 1.0 / sqrt(t);
    for (int64_t i = 0; i < n2; i++)
        W[i] = P[T * n2 + i] * r;
    return t;
}

/* dΣ from dW through the iterations (see the top of the file). scratch: 10 n². */
static void iw_newton_bwd(const double *sigma, const double *P, int64_t n, int64_t T, double t,
                          const double *dW, double *dsigma, double *scratch)
{
    const int64_t n2 = n * n;
    double *G = scratch, *Gp = G + n2, *S = Gp + n2, *dS = S + n2, *P2 = dS + n2, *PS = P2 + n2;
    double *P2S = PS + n2, *tmp = P2S + n2, *mt = tmp + n2;
    const double r = 1.0 / sqrt(t);
    for (int64_t i = 0; i < n2; i++) {
        G[i] = dW[i] * r;
        S[i] = sigma[i] / t;
        dS[i] = 0.0;
    }
    double dt = -0.5 * r * r * r * iw_dot(dW, P + T * n2, n2);
    for (int64_t k = T; k >= 1; k--) {
        const double *Pp = P + (k - 1) * n2;
        iw_mm(Pp, 0, Pp, 0, P2, n, 1.0, 0.0, mt);
        iw_mm(Pp, 0, S, 0, PS, n, 1.0, 0.0, mt);
        iw_mm(P2, 0, S, 0, P2S, n, 1.0, 0.0, mt);
        /* dS += -½ (P³)ᵀ G, P³ = P² P */
        iw_mm(P2, 0, Pp, 0, tmp, n, 1.0, 0.0, mt);
        iw_mm(tmp, 1, G, 0, dS, n, -0.5, 1.0, mt);
        /* dP_{k-1} = 1.5 G - ½ (G (P²S)ᵀ + Pᵀ G (PS)ᵀ + (P²)ᵀ G Sᵀ) */
        iw_mm(G, 0, P2S, 1, Gp, n, -0.5, 0.0, mt);
        iw_mm(Pp, 1, G, 0, tmp, n, 1.0, 0.0, mt);
        iw_mm(tmp, 0, PS, 1, Gp, n, -0.5, 1.0, mt);
        iw_mm(P2, 1, G, 0, tmp, n, 1.0, 0.0, mt);
        iw_mm(tmp, 0, S, 1, Gp, n, -0.5, 1.0, mt);
        for (int64_t i = 0; i < n2; i++)
            G[i] = Gp[i] + 1.5 * G[i];
    }
    dt -= iw_dot(dS, sigma, n2) / (t * t);
    for (int64_t i = 0; i < n2; i++)
        dsigma[i] = dS[i] / t + (i % (n + 1) == 0 ? dt : 0.0);
}

/* The element types' entries: float32 and float64 only. */
static int iw_stats(int dtype, const void *x, const void *dy, const double *shift, int64_t A,
                    int64_t C, int64_t B, int64_t d, double *out)
{
    if (dtype == FN_F32)
        return fn_iter_stats_f32(x, dy, shift, A, C, B, d, out);
    if (dtype == FN_F64)
        return fn_iter_stats_f64(x, dy, shift, A, C, B, d, out);
    return FN_ERR_ARG;
}

/* iw_stats around the shift s (C entries, updated): when some channel's shift lies far from
 * its mean against its spread (fn_shift_ok: the sums would cancel), once more around the
 * mean just found. */
static int iw_stats_shifted(int dtype, const void *x, const void *dy, double *s, int64_t A,
                            int64_t C, int64_t B, int64_t d, double *out)
{
    for (int64_t c = 0; c < C; c++) /* a shift, not a statistic: any finite value does */
        if (!isfinite(s[c]))
            s[c] = 0.0;
    int status = iw_stats(dtype, x, dy, s, A, C, B, d, out);
    const int64_t G = fn_iw_groups(C, d), per = 2 * d + 2 * d * d;
    const double m = (double)(A * B);
    int ok = 1;
    for (int64_t g = 0; status == FN_OK && g < G && ok; g++) {
        const int64_t dg = fn_iw_size(C, d, g);
        const double *sx = out + g * per, *xx = sx + 2 * dg;
        for (int64_t i = 0; i < dg && ok; i++)
            ok = fn_shift_ok(sx[i], xx[i * dg + i], m);
    }
    if (status != FN_OK || ok)
        return status;
    for (int64_t g = 0; g < G; g++) {
        const int64_t dg = fn_iw_size(C, d, g);
        for (int64_t i = 0; i < dg; i++)
            s[g * d + i] += out[g * per + i] / m;
    }
    return iw_stats(dtype, x, dy, s, A, C, B, d, out);
}

static int iw_apply(int dtype, const void *u, const void *v, const double *K1, const double *K2,
                    const double *shift, const double *c, void *out, int64_t A, int64_t C,
                    int64_t B, int64_t d)
{
    if (dtype == FN_F32)
        return fn_iter_apply_f32(u, v, K1, K2, shift, c, out, A, C, B, d);
    if (dtype == FN_F64)
        return fn_iter_apply_f64(u, v, K1, K2, shift, c, out, A, C, B, d);
    return FN_ERR_ARG;
}

static double iw_get(const void *p, int f64, int64_t i)
{
    return f64 ? ((const double *)p)[i] : (double)((const float *)p)[i];
}

static void iw_set(void *p, int f64, int64_t i, double v)
{
    if (f64)
        ((double *)p)[i] = v;
    else
        ((float *)p)[i] = (float)v;
}

/* Σ (dg x dg) and δ of group g from iter_stats' output. */
static void iw_sigma(const double *st, int64_t dg, double m, double eps, double *sigma,
                     double *delta)
{
    const double *sx = st, *xx = st + 2 * dg;
    for (int64_t i = 0; i < dg; i++)
        delta[i] = sx[i] / m;
    for (int64_t i = 0; i < dg; i++)
        for (int64_t j = 0; j < dg; j++)
            sigma[i * dg + j] = xx[i * dg + j] / m - delta[i] * delta[j] + (i == j ? eps : 0.0);
}

/* Group g's trace of Σ (its total variance) from iter_stats' output. */
static double iw_trace(const double *st, int64_t C, int64_t d, int64_t g, double m, double eps)
{
    const int64_t dg = fn_iw_size(C, d, g), per = 2 * d + 2 * d * d;
    const double *sx = st + g * per, *xx = sx + 2 * dg;
    double t = 0.0;
    for (int64_t i = 0; i < dg; i++)
        t += xx[i * dg + i] / m - (sx[i] / m) * (sx[i] / m) + eps;
    return t;
}

/* Each group's data scale sc[g] = sqrt(tr Σ), and whether float32 data are within float
 * arithmetic's range for the data passes: every trace between 1e-60 and 1e70, so that the
 * centred values cannot overflow a float and the whitening's entries (about 1/sqrt(tr Σ))
 * are normal floats. NaN traces pass (they stay in their group whatever the arithmetic). */
static int iw_scales(const double *st, int64_t C, int64_t d, double m, double eps, double *sc)
{
    int ok = 1;
    for (int64_t g = 0; g < fn_iw_groups(C, d); g++) {
        const double t = iw_trace(st, C, d, g, m, eps);
        if (t < 1e-60 || t > 1e70)
            ok = 0;
        sc[g] = sqrt(t);
    }
    return ok;
}

/* Whether the coefficients of a float32 apply pass keep its terms in float range: each
 * group's entries of K (G blocks of d x d) times sc[g]^p (p = 1 or 2; sc: the group's data scale,
 * so that |K| sc^p is the size of a term) and the constants c below 1e30 (a weight near FLT_MAX
 * times a whitening above 1 would overflow the float coefficient itself). */
static int iw_coef_ok(const double *K, const double *sc, int p, int64_t G, int64_t d,
                      const double *c, int64_t C)
{
    for (int64_t g = 0; K && g < G; g++) {
        const double f = p == 1 ? sc[g] : sc[g] * sc[g];
        for (int64_t i = 0; i < d * d; i++)
            if (fabs(K[g * d * d + i]) * f >= 1e30)
                return 0;
    }
    for (int64_t i = 0; c && i < C; i++)
        if (fabs(c[i]) >= 1e30)
            return 0;
    return 1;
}

int fn_iter_norm_fwd(int dtype, const void *x, const void *weight, const void *bias, void *y,
                     void *mean_out, void *whitening_out, void *running_mean,
                     void *running_whitening, int running_f64, int64_t A, int64_t C, int64_t B,
                     int64_t d, int64_t T, double eps, double momentum, int training)
{
    const int f64 = dtype == FN_F64;
    if ((dtype != FN_F32 && !f64) || A < 0 || C < 1 || B < 0 || d < 1 || T < 0 ||
        (training && A * B < 1) || (!training && (!running_mean || !running_whitening)))
        return FN_ERR_ARG;
    const int64_t G = fn_iw_groups(C, d), d2 = d * d, per = 2 * d + 2 * d2, P = A * B;
    const double m = (double)P;
    /* mu, shift, bias (C each); st (G per); K (G d²); W (G d²); per group: P_0..P_T,
     * Σ, scratch (4 d²), its W, δ */
    const int64_t gw = (T + 7) * d2 + d;
    const size_t nd = (size_t)(3 * C + G * per + 2 * G * d2 + G + (training ? G * gw : 0));
    double *mem = (double *)malloc(nd * sizeof(double));
    if (!mem)
        return FN_ERR_NOMEM;
    double *mu = mem, *shift = mu + C, *bb = shift + C, *st = bb + C, *K = st + G * per;
    double *Wall = K + G * d2, *sc = Wall + G * d2, *work = sc + G;
    int status = FN_OK;
    memset(Wall, 0, (size_t)(G * d2) * sizeof(double));
    for (int64_t g = 0; g < G; g++)
        sc[g] = 1.0;
    if (training) {
        /* shift: the mean of the first (up to 64) positions */
        const int64_t np = P < 64 ? P : 64;
        for (int64_t c = 0; c < C; c++) {
            double s = 0.0;
            for (int64_t p = 0; p < np; p++)
                s += iw_get(x, f64, ((p / B) * C + c) * B + p % B);
            shift[c] = s / (double)np;
        }
        status = iw_stats_shifted(dtype, x, NULL, shift, A, C, B, d, st);
        if (status == FN_OK && !iw_scales(st, C, d, m, eps, sc) && !f64)
            status = FN_WIDEN;
        if (status != FN_OK)
            goto done;
        /* the groups' Newton iterations, independent of each other */
        const int nt = fn_threads_for(G, G * T * d2 * d);
        FN_PARFOR(nt, g, G, {
            const int64_t c0 = g * d, dg = fn_iw_size(C, d, g);
            double *Pk = work + g * gw, *sigma = Pk + (T + 1) * d2, *scratch = sigma + d2;
            double *Wc = scratch + 4 * d2, *delta = Wc + d2;
            iw_sigma(st + g * per, dg, m, eps, sigma, delta);
            iw_newton(sigma, dg, T, Pk, Wc, scratch);
            for (int64_t i = 0; i < dg; i++) {
                mu[c0 + i] = shift[c0 + i] + delta[i];
                for (int64_t j = 0; j < dg; j++)
                    Wall[g * d2 + i * d + j] = Wc[i * dg + j];
            }
        });
    } else {
        for (int64_t c = 0; c < C; c++)
            mu[c] = iw_get(running_mean, running_f64, c);
        for (int64_t g = 0; g < G; g++) {
            const int64_t dg = fn_iw_size(C, d, g);
            for (int64_t i = 0; i < dg; i++)
                for (int64_t j = 0; j < dg; j++)
                    Wall[g * d2 + i * d + j] =
                        iw_get(running_whitening, running_f64, g * d2 + i * d + j);
        }
    }
    /* K = diag(γ) W, c = β */
    for (int64_t g = 0; g < G; g++)
        for (int64_t i = 0; i < d; i++)
            for (int64_t j = 0; j < d; j++) {
                const int64_t c = g * d + i;
                const double wc = weight && c < C ? iw_get(weight, f64, c) : 1.0;
                K[g * d2 + i * d + j] = wc * Wall[g * d2 + i * d + j];
            }
    for (int64_t c = 0; c < C; c++)
        bb[c] = bias ? iw_get(bias, f64, c) : 0.0;
    if (!f64 && !iw_coef_ok(K, sc, 1, G, d, bb, C)) {
        status = FN_WIDEN; /* nothing written yet */
        goto done;
    }
    if (P > 0)
        status = iw_apply(dtype, NULL, x, NULL, K, mu, bb, y, A, C, B, d);
    if (status != FN_OK)
        goto done;
    for (int64_t c = 0; c < C; c++) {
        if (mean_out)
            iw_set(mean_out, f64, c, mu[c]);
        if (training && running_mean)
            iw_set(running_mean, running_f64, c,
                   (1.0 - momentum) * iw_get(running_mean, running_f64, c) + momentum * mu[c]);
    }
    for (int64_t i = 0; i < G * d2; i++) {
        if (whitening_out)
            iw_set(whitening_out, f64, i, Wall[i]);
        if (training && running_whitening)
            iw_set(running_whitening, running_f64, i,
                   (1.0 - momentum) * iw_get(running_whitening, running_f64, i) +
                       momentum * Wall[i]);
    }
done:
    free(mem);
    return status;
}

int fn_iter_norm_bwd(int dtype, const void *dy, const void *x, const void *mean, const void *weight,
                     const void *whitening, void *dx, void *dweight, void *dbias, int64_t A,
                     int64_t C, int64_t B, int64_t d, int64_t T, double eps, int training)
{
    const int f64 = dtype == FN_F64;
    if ((dtype != FN_F32 && !f64) || A < 0 || C < 1 || B < 0 || d < 1 || T < 0 ||
        (!training && !whitening))
        return FN_ERR_ARG;
    const int64_t G = fn_iw_groups(C, d), d2 = d * d, per = 2 * d + 2 * d2, P = A * B;
    const double m = (double)P;
    /* per group: P_0..P_T, Σ, W, dW, dΣ, scratch (11 d²: the iterations' 10, E), δ, v */
    const int64_t gw = (T + 16) * d2 + 2 * d;
    const size_t nd = (size_t)(2 * C + G * per + 2 * G * d2 + G + G * gw);
    double *mem = (double *)malloc(nd * sizeof(double));
    if (!mem)
        return FN_ERR_NOMEM;
    double *mu = mem, *cc = mu + C, *st = cc + C, *K1 = st + G * per, *K2 = K1 + G * d2;
    double *sc = K2 + G * d2, *work = sc + G;
    for (int64_t c = 0; c < C; c++)
        mu[c] = iw_get(mean, f64, c);
    /* mu: the given mean as the shift in training (the statistics are about x's own batch
     * mean, δ = mean(x - mu) away), the running mean itself in evaluation */
    int status = training ? iw_stats_shifted(dtype, x, dy, mu, A, C, B, d, st)
                          : iw_stats(dtype, x, dy, mu, A, C, B, d, st);
    for (int64_t g = 0; g < G; g++)
        sc[g] = 1.0;
    if (status == FN_OK && training && !iw_scales(st, C, d, m, eps, sc) && !f64)
        status = FN_WIDEN;
    if (status != FN_OK)
        goto done;
    memset(K1, 0, (size_t)(2 * G * d2) * sizeof(double));
    /* the groups' derivatives, independent of each other */
    const int nt = fn_threads_for(G, G * T * d2 * d * (training ? 3 : 0));
    FN_PARFOR(nt, g, G, {
        double *Pk = work + g * gw, *sigma = Pk + (T + 1) * d2, *W = sigma + d2, *dW = W + d2;
        double *dsig = dW + d2, *scratch = dsig + d2, *delta = scratch + 11 * d2, *v = delta + d;
        const int64_t c0 = g * d, dg = fn_iw_size(C, d, g), n2 = dg * dg;
        const double *s = st + g * per, *sdy = s + dg, *E = s + 2 * dg + n2;
        iw_sigma(s, dg, m, eps, sigma, delta);
        if (!training) /* Xc = x - the running mean, exactly the given one */
            for (int64_t i = 0; i < dg; i++)
                delta[i] = 0.0;
        /* E about the batch mean: Σ dy (x - s - δ)ᵀ */
        double *Ec = scratch + 10 * d2;
        for (int64_t i = 0; i < dg; i++)
            for (int64_t j = 0; j < dg; j++)
                Ec[i * dg + j] = E[i * dg + j] - sdy[i] * delta[j];
        double t = 0.0;
        if (training)
            t = iw_newton(sigma, dg, T, Pk, W, scratch);
        else
            for (int64_t i = 0; i < dg; i++)
                for (int64_t j = 0; j < dg; j++)
                    W[i * dg + j] = iw_get(whitening, f64, g * d2 + i * d + j);
        for (int64_t i = 0; i < dg; i++) {
            const int64_t c = c0 + i;
            const double wc = weight ? iw_get(weight, f64, c) : 1.0;
            double dwc = 0.0;
            for (int64_t j = 0; j < dg; j++) {
                dwc += W[i * dg + j] * Ec[i * dg + j];
                dW[i * dg + j] = wc * Ec[i * dg + j];
                K1[g * d2 + j * d + i] = W[i * dg + j] * wc; /* (Wᵀ diag γ)_{ji} */
            }
            if (dweight)
                iw_set(dweight, f64, c, dwc);
            iw_set(dbias, f64, c, sdy[i]);
        }
        for (int64_t i = 0; i < dg; i++) {
            /* the constant: -mean_m(Wᵀ g) - M δ (Xc's mean about the given mean is δ) */
            double a = 0.0;
            for (int64_t j = 0; j < dg; j++) {
                const double wj = weight ? iw_get(weight, f64, c0 + j) : 1.0;
                a += W[j * dg + i] * wj * sdy[j];
            }
            cc[c0 + i] = -a / m;
        }
        if (training) {
            iw_newton_bwd(sigma, Pk, dg, T, t, dW, dsig, scratch);
            for (int64_t i = 0; i < dg; i++) {
                double a = 0.0;
                for (int64_t j = 0; j < dg; j++) {
                    const double Mij = (dsig[i * dg + j] + dsig[j * dg + i]) / m;
                    K2[g * d2 + i * d + j] = Mij;
                    a += Mij * delta[j];
                }
                v[i] = a;
            }
            for (int64_t i = 0; i < dg; i++)
                cc[c0 + i] -= v[i];
        }
    });
    if (!training)
        for (int64_t c = 0; c < C; c++)
            cc[c] = 0.0;
    if (!f64 && !(iw_coef_ok(K1, sc, 1, G, d, cc, C) &&
                  iw_coef_ok(training ? K2 : NULL, sc, 2, G, d, NULL, 0))) {
        status = FN_WIDEN; /* dweight and dbias are written again by the float64 call */
        goto done;
    }
    if (P > 0)
        status = iw_apply(dtype, dy, x, K1, training ? K2 : NULL, mu, cc, dx, A, C, B, d);
done:
    free(mem);
    return status;
}
