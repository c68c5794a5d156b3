/* The kernels compiled for AVX2 + FMA (+ F16C); chosen at run time on CPUs that have them. */
#include "internal.h"

#if FN_MULTI_ISA
/* the target lists stay on one line */
/* clang-format off */
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,fma,f16c"))), apply_to = function)
#else
#pragma GCC target("avx2,fma,f16c")
#endif
/* clang-format on */

#define FN_ISA avx2
#include "kernels.inc"

#if defined(__clang__)
#pragma clang attribute pop
#endif
#endif
