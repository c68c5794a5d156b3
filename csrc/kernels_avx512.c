/* The kernels compiled for AVX-512 (F, VL, BW, DQ) with 512-bit vectors. */
#include "internal.h"

#if FN_MULTI_ISA
/* the target lists stay on one line */
/* clang-format off */
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx512f,avx512vl,avx512bw,avx512dq,avx2,fma,f16c"))), apply_to = function)
#else
#pragma GCC target("avx512f,avx512vl,avx512bw,avx512dq,avx2,fma,f16c,prefer-vector-width=512")
#endif
/* clang-format on */

#define FN_ISA avx512
#include "kernels.inc"

#if defined(__clang__)
#pragma clang attribute pop
#endif
#endif
