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

/* x86-64 builds by GCC or clang carry AVX2 and AVX-512 versions of every kernel. */
#if (defined(__x86_64__) || defined(_M_X64)) && (defined(__GNUC__) || defined(__clang__)) && \
    !defined(FN_NO_MULTI_ISA)
#define FN_MULTI_ISA 1
#else
#define FN_MULTI_ISA 0
#endif

/* for (int64_t var = 0; var < n; var++) body, on nt threads when nt > 1 (static
 * schedule). Variables declared in body are private to each iteration. */
#define FN_PARFOR(nt, var, n, ...)                                                         \
    do {                                                                                   \
        const int64_t fn_n_ = (n);                                                         \
        if ((nt) > 1) {                                                                    \
            FN_PRAGMA_OMP(omp parallel for num_threads(nt) schedule(static))               \
            for (int64_t var = 0; var < fn_n_; var++) {                                    \
                __VA_ARGS__                                                                \
            }                                                                              \
        } else {                                                                           \
            for (int64_t var = 0; var < fn_n_; var++) {                                    \
                __VA_ARGS__                                                                \
            }                                                                              \
        }                                                                                  \
    } while (0)

#ifdef _OPENMP
#define FN_PRAGMA_OMP(x) _Pragma(#x)
#else
#define FN_PRAGMA_OMP(x)
#endif

/* Threads for a loop of `items` independent pieces covering `elems` elements. */
int fn_threads_for(int64_t items, int64_t elems);

#endif
