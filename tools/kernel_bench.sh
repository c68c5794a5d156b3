#!/bin/bash
# Build tools/kernel_bench.c against the kernels of one SIMD level (default avx512) and
# run it pinned to one core on one thread:
#   tools/kernel_bench.sh [--isa avx2] OP A C B [N G]
# e.g. tools/kernel_bench.sh bn_moments 256 256 196   (batch norm statistics, 256x256x14x14)
#      tools/kernel_bench.sh ln_bwd 64 65536 1         (layer norm backward, 64 rows)
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
isa=avx512
if [ "${1:-}" = "--isa" ]; then isa=$2; shift 2; fi
out=${TMPDIR:-/tmp}/fastnorm-kernel-bench-$isa
flags="-O3 -std=gnu11 -fno-math-errno -fopenmp -fopenmp-simd -Wno-psabi -I$here/csrc ${FN_CFLAGS:-}"
if [ ! -x "$out" ] || [ -n "$(find "$here/csrc" "$here/tools/kernel_bench.c" "$here/tools/bench_util.h" -newer "$out" -print -quit)" ]; then
    gcc $flags -c "$here/csrc/kernels_$isa.c" -o "$out.k.o"
    gcc $flags -c "$here/csrc/runtime.c" -o "$out.rt.o"
    gcc $flags -DISA="$isa" "$here/tools/kernel_bench.c" "$out.k.o" "$out.rt.o" -lm -o "$out"
fi
OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} exec taskset -c "${FN_CPU:-1}" "$out" "$@"
