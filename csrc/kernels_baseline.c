/* The kernels for any CPU of the target architecture (x86-64: SSE2). */
#include "internal.h"

#define FN_ISA baseline
#include "kernels.inc"
