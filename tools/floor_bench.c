/*
 * The least memory traffic of a batch norm training step, channels last, timed alone:
 * the passes every implementation must make (the statistics are over the whole batch, so
 * each pass needs the previous one's sums before it starts), with as little arithmetic as
 * each pass allows, over float32 arrays of R rows of C = 64 channels (default R = 100352:
 * 32x56x56x64, 25.7 MB each), one thread:
 *
 *   fwd stats   read x                     (per-channel sums of x and x*x)
 *   fwd apply   read x, write y            (y = x * a + b per channel)
 *   bwd sums    read x and dy              (per-channel sums of dy and dy*x)
 *   bwd apply   read x and dy, write dx    (dx = dy * a + x * b + c per channel)
 *
 * run in that order, as a step does, 15 times; prints the median of each pass and of
 * their sum. The arrays start OFF floats past a 64-byte boundary (NumPy's large arrays: 4)
 * on transparent huge pages, as NumPy's:
 *
 *   gcc -O3 -march=native tools/floor_bench.c -o /tmp/floor && taskset -c 1 /tmp/floor 4
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench_util.h"

#define C 64
typedef float v16f __attribute__((vector_size(64)));

static v16f ld(const float *p)
{
    v16f v;
    memcpy(&v, p, sizeof v);
    return v;
}

static void st(float *p, v16f v)
{
    memcpy(p, &v, sizeof v);
}

/* per channel: s1 += x, s2 += x * x (four vectors of 16 channels each) */
static void stats(const float *x, int64_t R, float *s1, float *s2)
{
    v16f a[4] = {0}, b[4] = {0};
    for (int64_t r = 0; r < R; r++)
        for (int q = 0; q < 4; q++) {
            const v16f v = ld(x + r * C + 16 * q);
            a[q] += v;
            b[q] += v * v;
        }
    for (int q = 0; q < 4; q++) {
        st(s1 + 16 * q, a[q]);
        st(s2 + 16 * q, b[q]);
    }
}

static void apply(const float *x, int64_t R, const float *ca, const float *cb, float *y)
{
    v16f a[4], b[4];
    for (int q = 0; q < 4; q++) {
        a[q] = ld(ca + 16 * q);
        b[q] = ld(cb + 16 * q);
    }
    for (int64_t r = 0; r < R; r++)
        for (int q = 0; q < 4; q++)
            st(y + r * C + 16 * q, ld(x + r * C + 16 * q) * a[q] + b[q]);
}

static void sums2(const float *x, const float *dy, int64_t R, float *s1, float *s2)
{
    v16f a[4] = {0}, b[4] = {0};
    for (int64_t r = 0; r < R; r++)
        for (int q = 0; q < 4; q++) {
            const v16f d = ld(dy + r * C + 16 * q);
            a[q] += d;
            b[q] += d * ld(x + r * C + 16 * q);
        }
    for (int q = 0; q < 4; q++) {
        st(s1 + 16 * q, a[q]);
        st(s2 + 16 * q, b[q]);
    }
}

static void apply2(const float *x, const float *dy, int64_t R, const float *ca, const float *cb,
                   const float *cc, float *dx)
{
    v16f a[4], b[4], c[4];
    for (int q = 0; q < 4; q++) {
        a[q] = ld(ca + 16 * q);
        b[q] = ld(cb + 16 * q);
        c[q] = ld(cc + 16 * q);
    }
    for (int64_t r = 0; r < R; r++)
        for (int q = 0; q < 4; q++)
            st(dx + r * C + 16 * q,
               ld(dy + r * C + 16 * q) * a[q] + ld(x + r * C + 16 * q) * b[q] + c[q]);
}

int main(int argc, char **argv)
{
    const int off = argc > 1 ? atoi(argv[1]) : 4;
    const int64_t R = argc > 2 ? atoll(argv[2]) : 100352;
    const int64_t n = R * C;
    float *x = buffer(n, off, 1), *dy = buffer(n, off, 1);
    float *y = buffer(n, off, 1), *dx = buffer(n, off, 1);
    for (int64_t i = 0; i < n; i++) {
        x[i] = (float)(i % 97) * 0.01f;
        dy[i] = (float)(i % 89) * 0.01f - 0.4f;
        y[i] = dx[i] = 0.0f;
    }
    float s1[C], s2[C], s3[C], s4[C], ca[C], cb[C], cc[C];
    enum { RUNS = 15 };
    double t[5][RUNS];
    double check = 0.0;
    for (int k = 0; k < RUNS; k++) {
        double t0 = now();
        stats(x, R, s1, s2);
        double t1 = now();
        for (int c = 0; c < C; c++) {
            ca[c] = 1.0f / (1.0f + s2[c] / (float)R);
            cb[c] = -s1[c] / (float)R * ca[c];
        }
        apply(x, R, ca, cb, y);
        double t2 = now();
        sums2(x, dy, R, s3, s4);
        double t3 = now();
        for (int c = 0; c < C; c++)
            cc[c] = -s3[c] / (float)R;
        apply2(x, dy, R, ca, s4, cc, dx);
        double t4 = now();
        t[0][k] = t1 - t0;
        t[1][k] = t2 - t1;
        t[2][k] = t3 - t2;
        t[3][k] = t4 - t3;
        t[4][k] = t4 - t0;
        check += y[k] + dx[k];
    }
    const char *names[5] = {"fwd stats (read x)", "fwd apply (read x, write y)",
                            "bwd sums (read x, dy)", "bwd apply (read x, dy, write dx)", "step"};
    for (int p = 0; p < 5; p++) {
        qsort(t[p], RUNS, sizeof(double), cmp);
        printf("%-34s %8.1f us\n", names[p], t[p][RUNS / 2] * 1e6);
    }
    printf("(offset %d floats, %lld rows of %d; check %g)\n", off, (long long)R, C, check);
    return 0;
}
