/*
 * What the C timing tools (kernel_bench.c, straddle_bench.c) share: a clock, the
 * comparison for sorting times into a median, and float arrays placed as NumPy places
 * large ones.
 */
#ifndef FASTNORM_BENCH_UTIL_H
#define FASTNORM_BENCH_UTIL_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <time.h>

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static int cmp(const void *a, const void *b)
{
    const double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* n floats (and 64 to spare) starting off floats past a 2 MB boundary; huge: transparent
 * huge pages asked for, as NumPy does for large arrays. Exits on failure. */
static float *buffer(int64_t n, int off, int huge)
{
    const size_t align = (size_t)1 << 21;
    const size_t bytes = ((size_t)(n + 64) * sizeof(float) + align - 1) / align * align;
    float *p = (float *)aligned_alloc(align, bytes);
    if (!p) {
        perror("aligned_alloc");
        exit(1);
    }
    if (huge)
        madvise(p, bytes, MADV_HUGEPAGE);
    return p + off;
}

#endif
