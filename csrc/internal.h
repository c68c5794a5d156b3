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

/* x86-64 builds by GCC or clang: FN_X86, the intrinsics of <immintrin.h>, which each
 * translation unit uses as far as its target allows; and FN_MULTI_ISA, AVX2 and AVX-512
 * versions of every kernel beside the baseline one, chosen at run time. FN_NO_MULTI_ISA
 * builds the baseline one alone, for the target the compiler is given (-march=native:
 * that machine's SIMD level). */
#if (defined(__x86_64__) || defined(_M_X64)) && (defined(__GNUC__) || defined(__clang__))
#define FN_X86 1
#else
#define FN_X86 0
#endif
#if FN_X86 && !defined(FN_NO_MULTI_ISA)
#define FN_MULTI_ISA 1
#else
#define FN_MULTI_ISA 0
#endif

/* Eight doubles, as a GCC/clang vector: one AVX-512 register, two AVX2 or four SSE2
 * registers, chosen by each translation unit's target. */
typedef double fn_v8d __attribute__((vector_size(64)));
typedef float fn_v8f __attribute__((vector_size(32)));
typedef float fn_v16f __attribute__((vector_size(64)));
typedef int32_t fn_v16i __attribute__((vector_size(64)));

/* The low and high eight lanes of a vector of sixteen floats (a shuffle, not a trip through
 * memory: GCC stores the vector and reloads half of it, which stalls store forwarding) */
#if defined(__clang__) || (defined(__GNUC__) && __GNUC__ >= 12)
#define FN_HAVE_SHUFFLE 1
#define fn_lo8f(v) __builtin_shufflevector((v), (v), 0, 1, 2, 3, 4, 5, 6, 7)
#define fn_hi8f(v) __builtin_shufflevector((v), (v), 8, 9, 10, 11, 12, 13, 14, 15)
#else
#define FN_HAVE_SHUFFLE 0
static inline fn_v8f fn_lo8f(fn_v16f v)
{
    fn_v8f r;
    memcpy(&r, &v, sizeof r);
    return r;
}
static inline fn_v8f fn_hi8f(fn_v16f v)
{
    fn_v8f r;
    memcpy(&r, (const char *)&v + sizeof r, sizeof r);
    return r;
}
#endif

#if FN_X86
#include <immintrin.h>
#endif

/* ---- half-precision storage: exact widening, rounding to nearest even ------------------
 *
 * Written without branches (selects only) so that loops over them vectorize. A value
 * computed in double is rounded to float first, then to the half type: the result of
 * the same computation in float32 followed by a conversion, as other libraries do. */

static inline uint32_t fn_fbits(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

static inline float fn_bitsf(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* float16 -> float, exact */
static inline float fn_f16_to_float(fn_float16 h)
{
    const uint32_t sign = (uint32_t)(h.bits & 0x8000u) << 16, a = h.bits & 0x7fffu;
    /* normal: rebias the exponent (15 -> 127); inf/NaN: all-ones exponent; subnormal
     * (and zero): m * 2^-24, as the float with exponent field 113 minus 2^-14 */
    const uint32_t normal = (a << 13) + 0x38000000u;
    const uint32_t special = normal + 0x38000000u;
    const float sub = fn_bitsf((a << 13) + 0x38800000u) - 6.103515625e-05f;
    const uint32_t m = a >= 0x7c00u ? special : normal;
    return fn_bitsf(sign | (a < 0x0400u ? fn_fbits(sub) : m));
}

/* bfloat16 -> float, exact: the upper half of a float */
static inline float fn_bf16_to_float(fn_bfloat16 h)
{
    return fn_bitsf((uint32_t)h.bits << 16);
}

/* float -> float16, to nearest even; overflow gives inf, NaN a quiet NaN */
static inline fn_float16 fn_f16_from_float(float f)
{
    const uint32_t u = fn_fbits(f), sign = (u >> 16) & 0x8000u, a = u & 0x7fffffffu;
    /* normal: rebias, then round the 13 dropped bits (a carry moves to the exponent) */
    const uint32_t normal = (a - 0x38000000u + 0xfffu + ((a >> 13) & 1u)) >> 13;
    /* subnormal: adding 0.5 leaves the float's rounding (to nearest even) at 2^-24 */
    const uint32_t sub = fn_fbits(fn_bitsf(a) + 0.5f) - 0x3f000000u;
    const uint32_t r = a > 0x7f800000u    ? 0x7e00u | ((a >> 13) & 0x3ffu) /* as F16C does */
                       : a >= 0x477ff000u ? 0x7c00u /* 65520 and above round to inf */
                       : a >= 0x38800000u ? normal
                                          : sub;
    const fn_float16 h = {(uint16_t)(sign | r)};
    return h;
}

/* float -> bfloat16, to nearest even; NaN stays a quiet NaN */
static inline fn_bfloat16 fn_bf16_from_float(float f)
{
    const uint32_t u = fn_fbits(f);
    const uint32_t r = (u & 0x7fffffffu) > 0x7f800000u ? (u >> 16) | 0x40u
                                                       : (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
    const fn_bfloat16 h = {(uint16_t)r};
    return h;
}

static inline fn_float16 fn_f16_from_double(double v)
{
    return fn_f16_from_float((float)v);
}

static inline fn_bfloat16 fn_bf16_from_double(double v)
{
    return fn_bf16_from_float((float)v);
}

/* p + off, or NULL for an absent (NULL) array */
#define FN_AT(p, off) ((p) ? (p) + (off) : NULL)

/* Number of accumulators in a reduction. Fixed (not the vector width) so that every SIMD
 * level adds in the same order; 16 doubles fill four AVX2 or two AVX-512 registers. */
#define FN_LANES 16

/* Rows per block in the backward's dweight/dbias reduction, at most 64 blocks in all.
 * A block's partial sums cost about 100 bytes of traffic per column (zeroing its double
 * and float slices, the float flushes, the merge) against 12 per column for each of its
 * rows (dy, x, dx): at least 32 rows keep that under a quarter of the data's, where 8
 * made the backward of cache-sized arrays (a few hundred rows) 1.25x slower. Depends on
 * the shape alone, never on the thread count. */
static inline int64_t fn_rows_per_block(int64_t M)
{
    int64_t r = (M + 63) / 64;
    return r < 32 ? 32 : r;
}

/* Order streaming stores before anything that follows (they are weakly ordered). */
static inline void fn_sfence(void)
{
#if FN_X86
    _mm_sfence();
#endif
}

/* for (int64_t var = 0; var < n; var++) body, with nt from fn_threads_for: nt == 0 (the
 * shape is too small to share) runs a plain loop, without the cost of an OpenMP region;
 * nt >= 1 runs the OpenMP loop on nt threads (static schedule). Variables declared in
 * body are private to each iteration.
 * The two copies of body may be compiled differently (contraction, vectorization), so
 * which one runs must depend on the shape alone, never on the thread count: that is what
 * keeps results bitwise identical for 1 thread and many. */
#define FN_PARFOR(nt, var, n, ...)                                                                 \
    do {                                                                                           \
        const int64_t fn_n_ = (n);                                                                 \
        if ((nt) == 0) {                                                                           \
            for (int64_t var = 0; var < fn_n_; var++) {                                            \
                __VA_ARGS__                                                                        \
            }                                                                                      \
            fn_sfence();                                                                           \
        } else {                                                                                   \
            FN_PRAGMA_OMP(omp parallel if ((nt) > 1) num_threads(nt))                              \
            {                                                                                      \
                FN_PRAGMA_OMP(omp for schedule(static) nowait)                                     \
                for (int64_t var = 0; var < fn_n_; var++) {                                        \
                    __VA_ARGS__                                                                    \
                }                                                                                  \
                fn_sfence(); /* this thread's streaming stores, before the barrier */              \
            }                                                                                      \
        }                                                                                          \
    } while (0)

/* Before a loop whose arrays may only alias exactly (out == in, element i read before it is
 * written, by iteration i): no loop-carried dependence, so the compiler vectorizes it
 * without run-time overlap checks (which reject exact aliasing and some distinct arrays,
 * leaving a scalar loop). */
#if defined(__clang__)
#define FN_IVDEP _Pragma("clang loop vectorize(assume_safety)")
#elif defined(__GNUC__)
#define FN_IVDEP _Pragma("GCC ivdep")
#else
#define FN_IVDEP
#endif

#if defined(__GNUC__)
#define FN_ALWAYS_INLINE __attribute__((always_inline))
#else
#define FN_ALWAYS_INLINE
#endif

/* Before a loop the compiler must not unroll */
#if defined(__clang__)
#define FN_NO_UNROLL _Pragma("clang loop unroll(disable)")
#elif defined(__GNUC__)
#define FN_NO_UNROLL _Pragma("GCC unroll 1")
#else
#define FN_NO_UNROLL
#endif

#ifdef _OPENMP
#define FN_PRAGMA_OMP(x) _Pragma(#x)
#else
#define FN_PRAGMA_OMP(x)
#endif

/* A call writes its output with non-temporal (streaming) stores when the bytes that
 * ordinary stores would move through the caches, its footprint, reach fn_stream_bytes:
 * its inputs, its output, and the output again for the read of each line before it is
 * written (the read that streaming saves). A streamed output leaves the caches, and the
 * next op (the next layer, reading it at once) then takes it from memory; below the
 * threshold the output is still in the last-level cache when it is read next, and
 * ordinary stores win the pair (docs/performance.md has the measured crossovers). The
 * default is the last-level cache's size, at most FN_STREAM_BYTES: a large server cache
 * is shared with the other cores. Spans shorter than FN_STREAM_MIN bytes are stored
 * normally (streaming pays on whole lines), except float32 rows of the rows family from
 * 256 bytes: consecutive rows are one contiguous output, and they stream straight from
 * the registers (fn_rows_apply_nt, fn_rows_dx_nt). */
#define FN_STREAM_BYTES ((int64_t)32 << 20)
#define FN_STREAM_MIN 4096
extern int64_t fn_stream_bytes;
/* Elements computed into an L1 buffer before being streamed out. */
#define FN_CHUNK 1024

/* Whether a call whose footprint is `arrays` times its output's `bytes` (inputs, plus 2
 * for the output and its read for ownership) streams its output. With the inputs alone it
 * tells whether they are far larger than the caches (when to prefetch further ahead). */
static inline int fn_stream_ok(int64_t bytes, int arrays)
{
    return FN_X86 && bytes * arrays >= fn_stream_bytes;
}

/* Run CALL, which writes `len` outputs to `out` for output elements j0..j0+len, either
 * once over the whole span (out = dst, j0 = 0, len = n) or, when streaming, chunk by
 * chunk into an L1 buffer that fn_stream_<T> copies to dst with streaming stores.
 * FN_PARFOR fences each thread's streaming stores at the end of the loop. */
#define FN_OUTPUT(stream, T, SFX_STREAM, dst, n, j0, len, out, CALL)                               \
    do {                                                                                           \
        if (!(stream) || (int64_t)((n) * sizeof(T)) < FN_STREAM_MIN) {                             \
            const int64_t j0 = 0, len = (n);                                                       \
            T *out = (dst);                                                                        \
            CALL;                                                                                  \
        } else {                                                                                   \
            T fn_buf_[FN_CHUNK] __attribute__((aligned(64)));                                      \
            for (int64_t j0 = 0; j0 < (n); j0 += FN_CHUNK) {                                       \
                const int64_t len = (n) - j0 < FN_CHUNK ? (n) - j0 : FN_CHUNK;                     \
                T *out = fn_buf_;                                                                  \
                CALL;                                                                              \
                SFX_STREAM((dst) + j0, fn_buf_, len);                                              \
            }                                                                                      \
        }                                                                                          \
    } while (0)

/* A shift may be used for the corrected two-pass variance when it lies within 4 standard
 * deviations of the mean (mean - shift = sd / n): the cancellation in sd2 - sd^2 / n then
 * costs at most a factor 17 of the sums' rounding. Otherwise (or with NaN/Inf) the caller
 * sums again around the mean just found. */
static inline int fn_shift_ok(double sd, double sd2, double n)
{
    const double d = sd / n;
    return d * d * n <= 16.0 * (sd2 - sd * d);
}

/* max(v, 0) that keeps NaN (fmax would turn a NaN variance into 0) */
static inline double fn_nonneg(double v)
{
    return v < 0.0 ? 0.0 : v;
}

/* Threads for a loop of `items` independent pieces covering `elems` elements: 0 when the
 * shape alone says one thread (too few elements or pieces; see FN_PARFOR), else between 1
 * and the thread count. */
int fn_threads_for(int64_t items, int64_t elems);

/* IterNorm's data passes (iter_norm.inc; float32 and float64): see iter_norm.c. */
/* IterNorm's groups of d channels among C, and group g's channel count (the last may
 * have fewer). */
static inline int64_t fn_iw_groups(int64_t C, int64_t d)
{
    return (C + d - 1) / d;
}
static inline int64_t fn_iw_size(int64_t C, int64_t d, int64_t g)
{
    return C - g * d < d ? C - g * d : d;
}
#define FN_ITER_DECL(T, SFX)                                                                       \
    int fn_iter_stats_##SFX(const T *x, const T *dy, const double *shift, int64_t A, int64_t C,    \
                            int64_t B, int64_t d, double *out);                                    \
    int fn_iter_apply_##SFX(const T *u, const T *v, const double *K1, const double *K2,            \
                            const double *shift, const double *c, T *out, int64_t A, int64_t C,    \
                            int64_t B, int64_t d);
FN_ITER_DECL(float, f32)
FN_ITER_DECL(double, f64)

#endif
