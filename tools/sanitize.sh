#!/usr/bin/env bash
# Build fastnorm with AddressSanitizer + UndefinedBehaviorSanitizer (FASTNORM_SANITIZE=1)
# in a temporary copy of the repository, then run under them:
#   1. the test suite, once per SIMD level the CPU supports (FASTNORM_SIMD=...);
#   2. a leak check: tools/valgrind_smoke.py (every public function, forward and backward)
#      with LeakSanitizer on, PYTHONMALLOC=malloc and tools/lsan.supp for NumPy's and
#      CPython's own import-time allocations.
# Any ASan, UBSan or LSan report fails the run (exit status 1). The checkout itself is
# never built into or installed from: the editable install there is left alone.
#
# usage: tools/sanitize.sh [extra pytest arguments]
#
# environment:
#   PYTHON=python3          the interpreter (its real executable is used: a pyenv shim is a
#                           shell script, and bash itself "leaks" under LD_PRELOAD=libasan)
#   SANITIZE_SOURCE=tracked  what is copied: the working-tree version of the tracked files
#                           (default: your uncommitted edits, not your untracked files);
#                           HEAD: `git archive HEAD`; all: tracked plus untracked files
#                           that are not ignored
#   SANITIZE_SIMD="avx2 baseline"  SIMD levels for the test suite (default: all supported)
#   SANITIZE_LEAKS=0        skip the leak check
#   SANITIZE_KEEP_GOING=1   UBSan reports do not stop the process (halt_on_error=0), so one
#                           run lists them all; the run still fails if any was printed
#   SANITIZE_KEEP=1         keep the temporary directory (build, logs)
#
# Skipped tests: tests/test_build.py::test_build_without_openmp and
# test_build_one_isa_native. Each compiles its own
# extension (FASTNORM_OPENMP=0 or -DFN_NO_MULTI_ISA, not sanitized) into another temporary directory and runs
# it in a child process, so it checks nothing under ASan; with LD_PRELOAD=libasan set it
# would also run setuptools and gcc/cc1 under ASan for ~30 s. It is a build test, run by
# the normal `make test`.
# Also skipped when present: tests/test_leaks.py::test_repeated_calls_do_not_grow_memory. It
# requires the process's resident set size to stay flat over 20 000 calls, and ASan's
# allocator keeps freed memory in quarantine (up to 256 MiB) and adds shadow memory: under
# ASan the RSS grows by ~180 MiB whatever fastnorm does. Leaks are checked by LSan below.
#
# Why --capture=sys: pytest's default fd-level capture keeps a test's stderr in a temporary
# file and prints it only when the test finishes; a sanitizer report aborts the process
# first, so the report would be lost and pytest would just vanish with exit status 1/134.

set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PYTHON=${PYTHON:-python3}
PY=$("$PYTHON" -c 'import sys; print(sys.executable)') || { echo "sanitize: no $PYTHON" >&2; exit 2; }
CC_BIN=${CC:-gcc}
CC_BIN=${CC_BIN%% *}

LIBASAN=$("$CC_BIN" -print-file-name=libasan.so)
if [[ "$LIBASAN" != /* || ! -e "$LIBASAN" ]]; then
    echo "sanitize: $CC_BIN -print-file-name=libasan.so found no ASan runtime ($LIBASAN)" >&2
    exit 2
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/fastnorm-sanitize.XXXXXX")
cleanup() {
    if [[ "${SANITIZE_KEEP:-0}" == 1 ]]; then
        echo "sanitize: kept $WORK"
    else
        rm -rf "$WORK"
    fi
}
trap cleanup EXIT

SRC="$WORK/src"
LOGS="$WORK/logs"
mkdir -p "$SRC" "$LOGS"

section() { printf '\n==== sanitize: %s\n' "$*"; }
RESULTS=()
FAILED=0
record() { # name status
    if [[ "$2" == 0 ]]; then RESULTS+=("PASS  $1"); else RESULTS+=("FAIL  $1"); FAILED=1; fi
}

# ------------------------------------------------------------------ copy and build
SOURCE=${SANITIZE_SOURCE:-tracked}
section "copying $ROOT ($SOURCE files) to $SRC"
# shellcheck source=tools/copy_tree.sh
source "$ROOT/tools/copy_tree.sh"
copy_tree "sanitize (SANITIZE_SOURCE)" "$ROOT" "$SRC" "$SOURCE"

section "building with FASTNORM_SANITIZE=1"
if ! (cd "$SRC" && FASTNORM_SANITIZE=1 "$PY" setup.py build_ext --inplace) > "$LOGS/build.log" 2>&1; then
    tail -40 "$LOGS/build.log"
    echo "sanitize: build failed (full log: $LOGS/build.log; SANITIZE_KEEP=1 keeps it)" >&2
    SANITIZE_KEEP=1
    exit 2
fi
grep -E "fastnorm build:" "$LOGS/build.log"
SO=$(ls "$SRC"/fastnorm/_kernels*.so 2>/dev/null | head -1)
[[ -n "$SO" ]] || { echo "sanitize: no extension was built" >&2; exit 2; }

# ------------------------------------------------------------------ the runtime environment
SAN_ENV=(
    "LD_PRELOAD=$LIBASAN"
    "PYTHONPATH=$SRC"
    "PYTHONDONTWRITEBYTECODE=1"
)
if [[ "${SANITIZE_KEEP_GOING:-0}" == 1 ]]; then
    UBSAN_OPTS="halt_on_error=0:print_stacktrace=1"
else
    UBSAN_OPTS="halt_on_error=1:abort_on_error=1:print_stacktrace=1"
fi
ASAN_OPTS="detect_leaks=0:abort_on_error=1"
LEAK_ASAN_OPTS="detect_leaks=1:abort_on_error=1:fast_unwind_on_malloc=0:malloc_context_size=64"
LSAN_OPTS="suppressions=$ROOT/tools/lsan.supp:print_suppressions=1"
REPORT_RE='ERROR: (AddressSanitizer|LeakSanitizer)|runtime error:|SUMMARY: (AddressSanitizer|UndefinedBehaviorSanitizer)'
# on the terminal, leave out the interpreter's frames of a report (the log keeps them all)
# and the pytest/pluggy frames of faulthandler's Python traceback
QUIET_RE='^    #[0-9]+ 0x[0-9a-f]+ in .* ((Python|Objects|Include|Modules|Parser)/|\.\./(sysdeps|csu)/|\(/[^ ]*python3[^ ]*\+0x)|^  File ".*/site-packages/(_pytest|pluggy|pytest)/|^  File "<frozen runpy>"'

san() { # run a command under the sanitizers, from $SRC
    (cd "$SRC" && env "${SAN_ENV[@]}" ASAN_OPTIONS="$ASAN_OPTS" UBSAN_OPTIONS="$UBSAN_OPTS" "$@")
}
san_leaks() {
    (cd "$SRC" && env "${SAN_ENV[@]}" PYTHONMALLOC=malloc ASAN_OPTIONS="$LEAK_ASAN_OPTS" \
        LSAN_OPTIONS="$LSAN_OPTS" UBSAN_OPTIONS="$UBSAN_OPTS" "$@")
}

# ------------------------------------------------------------------ is it really sanitized?
section "checking the extension is instrumented and that reports are caught"
status=0
# ldd's output is captured first: `ldd | grep -q` under pipefail fails whenever grep exits
# before ldd has written everything (SIGPIPE)
LIBS=$(ldd "$SO")
if grep -q 'libasan\.so' <<<"$LIBS" && grep -q 'libubsan\.so' <<<"$LIBS"; then
    echo "ok: $(basename "$SO") links $(grep -oE 'lib(asan|ubsan)\.so\.[0-9]+' <<<"$LIBS" | tr '\n' ' ')"
else
    echo "FAIL: $(basename "$SO") does not link libasan and libubsan"; status=1
fi
n_asan=$(nm -D --undefined-only "$SO" | grep -c '__asan_report_' || true)
n_ubsan=$(nm -D --undefined-only "$SO" | grep -c '__ubsan_handle_' || true)
if (( n_asan > 0 && n_ubsan > 0 )); then
    echo "ok: $n_asan __asan_report_* and $n_ubsan __ubsan_handle_* symbols referenced"
else
    echo "FAIL: no ASan/UBSan instrumentation in $SO ($n_asan asan, $n_ubsan ubsan symbols)"; status=1
fi
if info=$(san "$PY" -c 'import fastnorm; from fastnorm import _kernels; print(fastnorm.__file__); print(_kernels.build_info())' 2>&1) \
        && grep -qF "$SRC/fastnorm/__init__.py" <<<"$info" && grep -q 'fsanitize=address,undefined' <<<"$info"; then
    echo "ok: fastnorm imported from $SRC; $(tail -1 <<<"$info")"
else
    echo "FAIL: importing fastnorm under LD_PRELOAD=$LIBASAN:"; echo "$info"; status=1
fi

# Deliberate errors in a scratch extension (in $WORK, deleted at exit), loaded from Python
# exactly like fastnorm: each must be reported and must fail the process.
cat > "$WORK/canary.c" <<'EOF'
#include <stdlib.h>
#include <string.h>
int canary_heap_overflow(int n)
{
    int *a = malloc(n * sizeof *a);
    memset(a, 0, n * sizeof *a);
    volatile int v = a[n]; /* one past the end */
    free(a);
    return v;
}
int canary_misaligned(int n)
{
    char buf[32];
    memset(buf, 0, sizeof buf);
    const float *p = (const float *)(buf + 1 + (n & 1)); /* as fastnorm's g, csrc/vectors.inc */
    return (int)*p;
}
void *volatile canary_sink;
void canary_leak(int n)
{
    char *p = malloc(n);
    memset(p, 1, n);
    canary_sink = p;
    canary_sink = NULL; /* the only pointer is gone */
}
EOF
canary_flags=(-shared -fPIC -O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer)
if ! "$CC_BIN" "${canary_flags[@]}" "$WORK/canary.c" -o "$WORK/canary.so" 2> "$LOGS/canary-build.log"; then
    cat "$LOGS/canary-build.log"; echo "FAIL: cannot build the canary"; status=1
else
    canary() { # name expected-text runner
        local name=$1 want=$2; shift 2
        local out rc
        out=$("$@" "$PY" -c "import ctypes; ctypes.CDLL('$WORK/canary.so').$name(7)" 2>&1); rc=$?
        if (( rc != 0 )) && grep -q "$want" <<<"$out"; then
            echo "ok: canary $name: exit status $rc, \"$(grep -m1 -oE "$want[^ ]*( [^ ]*){0,6}" <<<"$out")\""
        else
            echo "FAIL: canary $name was not caught (exit status $rc):"; tail -20 <<<"$out"; status=1
        fi
    }
    # the canaries always run with the halting options, SANITIZE_KEEP_GOING or not
    saved_ubsan=$UBSAN_OPTS
    UBSAN_OPTS="halt_on_error=1:abort_on_error=1:print_stacktrace=1"
    canary canary_heap_overflow "heap-buffer-overflow" san
    canary canary_misaligned "runtime error: load of misaligned address" san
    canary canary_leak "detected memory leaks" san_leaks
    UBSAN_OPTS=$saved_ubsan
fi
rm -f "$WORK/canary.c" "$WORK/canary.so"
record "instrumentation and canaries" "$status"
if (( status != 0 )); then
    echo "sanitize: the sanitizer setup does not work; not running the tests" >&2
    exit 1
fi

# ------------------------------------------------------------------ the test suite
LEVELS=${SANITIZE_SIMD:-$(san "$PY" -c 'from fastnorm import _kernels, _runtime as r
L = r.SIMD_LEVELS; print(" ".join(reversed(L[:L.index(_kernels.isa_supported()) + 1])))')}
PYTEST_ARGS=(tests -x -q -p no:cacheprovider --capture=sys
             --deselect tests/test_build.py::test_build_without_openmp
             --deselect tests/test_build.py::test_build_one_isa_native
             --deselect tests/test_leaks.py::test_repeated_calls_do_not_grow_memory "$@")
# libstdc++ loaded right after the ASan runtime: C++ libraries built without ASan (PyTorch,
# for tests/test_torch.py) throw exceptions through ASan's __cxa_throw interceptor, which
# aborts when libstdc++ was not loaded before them
LIBSTDCXX=$("$CC_BIN" -print-file-name=libstdc++.so.6)
TEST_PRELOAD=$LIBASAN
[[ "$LIBSTDCXX" == /* && -e "$LIBSTDCXX" ]] && TEST_PRELOAD="$LIBASAN $LIBSTDCXX"
for level in $LEVELS; do
    section "test suite under ASan+UBSan, FASTNORM_SIMD=$level"
    log="$LOGS/pytest-$level.log"
    san env LD_PRELOAD="$TEST_PRELOAD" FASTNORM_SIMD="$level" "$PY" -m pytest "${PYTEST_ARGS[@]}" 2>&1 | tee "$log" |
        grep --line-buffered -vE "$QUIET_RE"
    rc=${PIPESTATUS[0]}
    what="exit status $rc"
    if grep -qE "$REPORT_RE" "$log"; then
        n=$(grep -cE "runtime error:|ERROR: (Address|Leak)Sanitizer" "$log")
        what="$what, $n sanitizer report(s): $(grep -oE '[a-z_]+\.(inc|c|h|pyx):[0-9]+:[0-9]+: runtime error|ERROR: AddressSanitizer: [a-z-]+' "$log" |
            sed 's/: runtime error//' | sort -u | tr '\n' ' ')"
        (( rc == 0 )) && rc=1
    fi
    (( rc == 134 )) && echo "sanitize: pytest aborted (SIGABRT) on the sanitizer report above"
    record "pytest, FASTNORM_SIMD=$level ($what)" "$rc"
done

# ------------------------------------------------------------------ leak check
if [[ "${SANITIZE_LEAKS:-1}" != 0 ]]; then
    section "leak check: tools/valgrind_smoke.py with LeakSanitizer (PYTHONMALLOC=malloc)"
    log="$LOGS/smoke-leaks.log"
    san_leaks "$PY" "$ROOT/tools/valgrind_smoke.py" 2>&1 | tee "$log" |
        grep --line-buffered -vE "$QUIET_RE"
    rc=${PIPESTATUS[0]}
    what="exit status $rc"
    # Leaks are charged to fastnorm only when a frame of the allocation's stack is in its
    # code; the interpreter and NumPy leak a few import-time objects of their own, and
    # which ones varies with the installation (lsan.supp holds the known ones).
    ours=$("$PY" - "$log" <<'PYEOF'
import re, sys
text = open(sys.argv[1], errors="replace").read()
blocks = re.findall(r"(?:Direct|Indirect) leak of .*?(?:\n\s*\n|\Z)", text, re.S)
print(sum(1 for b in blocks if re.search(r"_kernels|csrc/|/fastnorm/", b)))
PYEOF
)
    if grep -q "detected memory leaks" "$log" && [[ "$ours" == 0 ]] &&
        ! grep -qE "runtime error:|ERROR: AddressSanitizer" "$log"; then
        what="$what, no leaks in fastnorm code (outside it: $(grep -m1 'SUMMARY: AddressSanitizer' "$log" | sed 's/SUMMARY: AddressSanitizer: //'))"
        rc=0
    elif grep -q "detected memory leaks" "$log"; then
        what="$what, LEAKS in fastnorm code: $ours; $(grep -m1 'SUMMARY: AddressSanitizer' "$log")"
    elif grep -q "fastnorm smoke: every result matches" "$log"; then
        what="$what, no leaks"
    fi
    if grep -qE "runtime error:|ERROR: AddressSanitizer" "$log"; then
        what="$what, $(grep -cE 'runtime error:|ERROR: AddressSanitizer' "$log") ASan/UBSan report(s)"
        (( rc == 0 )) && rc=1
    fi
    record "leak check of the smoke script ($what)" "$rc"
fi

section "summary"
printf '%s\n' "${RESULTS[@]}"
if (( FAILED )); then
    if [[ "${SANITIZE_KEEP:-0}" != 1 ]]; then
        kept=$(mktemp -d "${TMPDIR:-/tmp}/fastnorm-sanitize-logs.XXXXXX") && cp "$LOGS"/*.log "$kept"/ &&
            LOGS=$kept
    fi
    echo "sanitize: FAILED (full logs, whole stacks included: $LOGS)"
    exit 1
fi
echo "sanitize: OK, no ASan/UBSan/LSan reports"
