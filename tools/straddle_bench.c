/*
 * What loads that straddle two cache lines cost when two streams are read from memory
 * (the statistics pass of a backward reads x and dy): sum x and x * dy over two arrays
 * of N floats (default 6422528, 25.7 MB each), one thread, two ways:
 *
 *   plain    64-byte loads from x and dy as they are;
 *   shifted  the same vectors built from aligned loads, each value shifted into place
 *            from a pair of aligned vectors (vpermt2ps), as csrc/vec.inc's fn_ld4 does.
 *
 * The arrays start OFF floats past a 64-byte boundary (NumPy's large arrays: 4). Prints
 * the median of 31 runs of each; HUGE=1 in the environment puts the arrays on transparent
 * huge pages (as NumPy's large arrays). AVX-512 only:
 *
 *   gcc -O3 -mavx512f tools/straddle_bench.c -o /tmp/straddle && taskset -c 1 /tmp/straddle 4
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench_util.h"

typedef float v16f __attribute__((vector_size(64)));
typedef int32_t v16i __attribute__((vector_size(64)));

static float total(const v16f *a, const v16f *b)
{
    float s = 0.0f;
    for (int q = 0; q < 4; q++)
        for (int l = 0; l < 16; l++)
            s += a[q][l] + b[q][l];
    return s;
}

__attribute__((noinline)) static float plain(const float *x, const float *dy, int64_t n)
{
    v16f a[4] = {{0}}, b[4] = {{0}};
    for (int64_t i = 0; i + 64 <= n; i += 64)
        for (int q = 0; q < 4; q++) {
            v16f u, v;
            memcpy(&u, x + i + 16 * q, sizeof u);
            memcpy(&v, dy + i + 16 * q, sizeof v);
            a[q] += u;
            b[q] += v * u;
        }
    return total(a, b);
}

/* x and dy the same offset past a line, not 0 */
__attribute__((noinline)) static float shifted(const float *x, const float *dy, int64_t n)
{
    const int sh = (int)((uintptr_t)x / 4 % 16);
    const float *xa = x - sh, *da = dy - sh;
    v16i idx;
    for (int l = 0; l < 16; l++)
        idx[l] = l + sh;
    v16f a[4] = {{0}}, b[4] = {{0}}, pu, pv;
    memcpy(&pu, xa, sizeof pu);
    memcpy(&pv, da, sizeof pv);
    for (int64_t i = 0; i + 64 <= n; i += 64)
        for (int q = 0; q < 4; q++) {
            v16f nu, nv;
            memcpy(&nu, xa + i + 16 * q + 16, sizeof nu);
            memcpy(&nv, da + i + 16 * q + 16, sizeof nv);
            const v16f u = __builtin_shuffle(pu, nu, idx), v = __builtin_shuffle(pv, nv, idx);
            pu = nu;
            pv = nv;
            a[q] += u;
            b[q] += v * u;
        }
    return total(a, b);
}

int main(int argc, char **argv)
{
    const int off = argc > 1 ? atoi(argv[1]) : 4;
    const int64_t n = argc > 2 ? atoll(argv[2]) : 6422528;
    if (off < 0 || off > 15)
        return 1;
    const int huge = getenv("HUGE") != NULL;
    float *x = buffer(n, off, huge), *dy = buffer(n, off, huge);
    for (int64_t i = 0; i < n + 16; i++) {
        x[i] = (float)(i % 7);
        dy[i] = (float)(i % 5);
    }
    for (int way = 0; way < 2; way++) {
        if (way == 1 && off == 0)
            break;
        double ts[31];
        float r = 0.0f;
        for (int k = 0; k < 31; k++) {
            const double t = now();
            r = way ? shifted(x, dy, n) : plain(x, dy, n);
            ts[k] = now() - t;
        }
        qsort(ts, 31, sizeof(double), cmp);
        printf("%-8s offset %2d floats: %8.1f us (%g)\n", way ? "shifted" : "plain", off,
               ts[15] * 1e6, (double)r);
    }
    return 0;
}
