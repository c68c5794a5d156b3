#!/usr/bin/env bash
# Run tools/valgrind_smoke.py (every public fastnorm function, forward and backward) under
# valgrind memcheck, against an ordinary (not sanitized) build of fastnorm made in a
# temporary copy of the repository. The checkout itself is never built into.
#
# The build is the shipped one: -O3 from setup.py plus the -g of Python's own CFLAGS, so
# reports carry file:line. Valgrind's virtual CPU has no AVX-512, so the smoke covers the
# baseline and AVX2 kernels (it runs every level the CPU in front of it supports).
#
# Errors are sorted by tools/valgrind_filter.py: the run fails when any error (invalid read
# or write, use of an uninitialised value, uninitialised bytes in a fastnorm output,
# definitely-lost block) has fastnorm code (_kernels / csrc) on one of its stacks, or when
# the smoke script's results differ from fastnorm.reference. tools/valgrind.supp holds
# the suppressions for CPython, NumPy and glibc noise.
#
# usage: tools/valgrind.sh [smoke arguments, e.g. --quick]
# environment:
#   PYTHON=python3            the interpreter
#   VALGRIND_SOURCE=tracked   tracked (working-tree version of the tracked files, default),
#                             HEAD (git archive HEAD) or all (plus untracked, non-ignored)
#   VALGRIND_STRICT=1         also fail on unsuppressed errors outside fastnorm
#   VALGRIND_KEEP=1           keep the temporary directory (build, logs)

set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PYTHON=${PYTHON:-python3}
PY=$("$PYTHON" -c 'import sys; print(sys.executable)') || { echo "valgrind.sh: no $PYTHON" >&2; exit 2; }

if ! command -v valgrind > /dev/null; then
    if [[ $(id -u) == 0 ]] && command -v apt-get > /dev/null; then
        echo "valgrind.sh: installing valgrind (apt-get)"
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq valgrind > /dev/null
    fi
    command -v valgrind > /dev/null || { echo "valgrind.sh: valgrind is not installed" >&2; exit 2; }
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/fastnorm-valgrind.XXXXXX")
cleanup() {
    if [[ "${VALGRIND_KEEP:-0}" == 1 ]]; then echo "valgrind.sh: kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
SRC="$WORK/src"
mkdir -p "$SRC"

SOURCE=${VALGRIND_SOURCE:-tracked}
echo "==== valgrind.sh: copying $ROOT ($SOURCE files) to $SRC"
# shellcheck source=tools/copy_tree.sh
source "$ROOT/tools/copy_tree.sh"
copy_tree "valgrind.sh (VALGRIND_SOURCE)" "$ROOT" "$SRC" "$SOURCE"

echo "==== valgrind.sh: building (no sanitizers)"
if ! (cd "$SRC" && env -u FASTNORM_SANITIZE "$PY" setup.py build_ext --inplace) > "$WORK/build.log" 2>&1; then
    tail -40 "$WORK/build.log"; echo "valgrind.sh: build failed" >&2; VALGRIND_KEEP=1; exit 2
fi
grep "fastnorm build: compile flags" "$WORK/build.log"
SO=$(ls "$SRC"/fastnorm/_kernels*.so | head -1)
# outputs captured first: `cmd | grep -q` under pipefail fails when grep exits early (SIGPIPE)
SYMS=$(nm -D "$SO")
if grep -q '__asan_\|__ubsan_' <<<"$SYMS"; then
    echo "valgrind.sh: $SO is sanitized; valgrind needs an ordinary build" >&2; exit 2
fi
SECTIONS=$(readelf -S "$SO")
if grep -q '\.debug_info' <<<"$SECTIONS"; then
    echo "ok: $(basename "$SO") has debug info (file:line in reports)"
else
    echo "note: $(basename "$SO") has no debug info; reports will name functions only"
fi

echo "==== valgrind.sh: $(valgrind --version) memcheck on tools/valgrind_smoke.py $*"
VG_LOG="$WORK/memcheck.log"
SMOKE_OUT="$WORK/smoke.out"
start=$SECONDS
(cd "$WORK" && env PYTHONPATH="$SRC" PYTHONMALLOC=malloc PYTHONDONTWRITEBYTECODE=1 \
    OMP_WAIT_POLICY=passive \
    valgrind --tool=memcheck --error-exitcode=1 --track-origins=yes --num-callers=40 \
        --fullpath-after= --suppressions="$ROOT/tools/valgrind.supp" \
        --leak-check=full --show-leak-kinds=definite --errors-for-leak-kinds=definite \
        "$PY" "$ROOT/tools/valgrind_smoke.py" --labels "$@" > "$SMOKE_OUT" 2> "$VG_LOG")
vg_rc=$?
echo "(memcheck ran $((SECONDS - start)) s, exit status $vg_rc)"
cat "$SMOKE_OUT"
smoke_ok=0
grep -q "fastnorm smoke: every result matches the reference" "$SMOKE_OUT" && smoke_ok=1
if (( ! smoke_ok )); then
    echo "valgrind.sh: the smoke script failed (wrong results above, or its stderr below)"
    grep -v '^==[0-9]*==\|^fastnorm-smoke: CASE' "$VG_LOG" | tail -30
fi

echo "==== valgrind.sh: errors"
filter_args=("$VG_LOG")
[[ "${VALGRIND_STRICT:-0}" == 1 ]] && filter_args+=(--strict)
"$PY" "$ROOT/tools/valgrind_filter.py" "${filter_args[@]}"
filter_rc=$?

if (( filter_rc == 0 && smoke_ok )); then
    if (( vg_rc != 0 )); then
        echo "valgrind.sh: OK for fastnorm (memcheck's exit status $vg_rc comes from errors outside fastnorm, listed above)"
    else
        echo "valgrind.sh: OK, no memcheck errors"
    fi
    exit 0
fi
[[ "${VALGRIND_KEEP:-0}" == 1 ]] || cp "$VG_LOG" "${TMPDIR:-/tmp}/fastnorm-memcheck.log" &&
    echo "valgrind.sh: FAILED (full memcheck log: ${TMPDIR:-/tmp}/fastnorm-memcheck.log)"
exit 1
