/* Shared by the kernel translation units; not part of the ABI. */
#ifndef FASTNORM_INTERNAL_H
#define FASTNORM_INTERNAL_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fastnorm.h"

#ifdef _OPENMP
#include <omp.h>
#endif

#define FN_CAT2_(a, b) a##b
#define FN_CAT2(a, b) FN_CAT2_(a, b)
#define FN_CAT3(a, b, c) FN_CAT2(FN_CAT2(a, b), c)

/* Inputs with fewer elements than this run on one thread: starting a team costs more. */
#define FN_SERIAL_ELEMS ((int64_t)1 << 15)

/* x86-64 builds by GCC or clang carry AVX2 and AVX-512 versions of every kernel. */
#if (defined(__x86_64__) || defined(_M_X64)) && (defined(__GNUC__) || defined(__clang__)) && \
    !defined(FN_NO_MULTI_ISA)
#define FN_MULTI_ISA 1
#else
#define FN_MULTI_ISA 0
#endif

/* Eight doubles, as a GCC/clang vector: one AVX-512 register, two AVX2 or four SSE2
 * registers, chosen by each translation unit's target. */
typedef double fn_v8d __attribute__((vector_size(64)));
typedef float fn_v8f __attribute__((vector_size(32)));
typedef float fn_v16f __attribute__((vector_size(64)));

#if FN_MULTI_ISA
#include <immintrin.h>
#endif

/* Number of accumulators in a reduction. Fixed (not the vector width) so that every SIMD
 * level adds in the same order; 16 doubles fill four AVX2 or two AVX-512 registers. */
#define FN_LANES 16

/* Rows per block in the backward's dweight/dbias reduction: at least 8 rows so the
 * partial sums cost little next to the data, at most 64 blocks in all. Depends on the
 * shape alone, never on the thread count. */
static inline int64_t fn_rows_per_block(int64_t M)
{
    int64_t r = (M + 63) / 64;
    return r < 8 ? 8 : r;
}

/* for (int64_t var = 0; var < n; var++) body, on nt threads when nt > 1 (static
 * schedule). Variables declared in body are private to each iteration. One loop body for
 * both cases: two copies could be compiled differently (contraction, vectorization) and
 * then one thread and many would not give bitwise identical results. */
#define FN_PARFOR(nt, var, n, ...)                                                         \
    do {                                                                                   \
        const int64_t fn_n_ = (n);                                                         \
        FN_PRAGMA_OMP(omp parallel for if ((nt) > 1) num_threads(nt) schedule(static))     \
        for (int64_t var = 0; var < fn_n_; var++) {                                        \
            __VA_ARGS__                                                                    \
        }                                                                                  \
    } while (0)

#ifdef _OPENMP
#define FN_PRAGMA_OMP(x) _Pragma(#x)
#else
#define FN_PRAGMA_OMP(x)
#endif

/* Ask for the first bytes of the next row while the current one is processed: rows
 * start on new pages, where the hardware prefetchers stop. */
static inline void fn_prefetch(const void *p, int64_t bytes)
{
    const char *c = (const char *)p;
    if (bytes > 16384)
        bytes = 16384;
    for (int64_t off = 0; off < bytes; off += 64)
        __builtin_prefetch(c + off, 0, 3);
}

/* max(v, 0) that keeps NaN (fmax would turn a NaN variance into 0) */
static inline double fn_nonneg(double v) { return v < 0.0 ? 0.0 : v; }

/* Threads for a loop of `items` independent pieces covering `elems` elements. */
int fn_threads_for(int64_t items, int64_t elems);

#endif
