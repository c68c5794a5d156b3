"""Build fastnorm's one extension: the C kernels in csrc/ behind fastnorm/_kernels.pyx.

Environment variables:
  FASTNORM_OPENMP=0    build without OpenMP (serial kernels) even where it is available
  FASTNORM_NATIVE=1    add -march=native (the binary then runs only on CPUs like this one)
  FASTNORM_SANITIZE=1  build with -fsanitize=address,undefined and -O1 -g
"""

import os
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup

HERE = Path(__file__).parent
OPENMP_TEST = r"""
#include <omp.h>
int main(void) {
    int n = 0;
    #pragma omp parallel reduction(+:n)
    n += 1;
    return n > 0 ? 0 : 1;
}
"""


def log(msg):
    print(f"fastnorm build: {msg}", file=sys.stderr, flush=True)


def compiler_command():
    cc = os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc"
    return cc.split()


def compiles(flags, source):
    """Whether the C compiler builds and links `source` with `flags`."""
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "probe.c"
        src.write_text(source)
        # The same CPPFLAGS / CFLAGS / LDFLAGS as the real build (an OpenMP runtime outside
        # the compiler's default paths, such as Homebrew's libomp on macOS, is found there).
        env = [f for name in ("CPPFLAGS", "CFLAGS") for f in os.environ.get(name, "").split()]
        ldenv = os.environ.get("LDFLAGS", "").split()
        cmd = [*compiler_command(), *env, *flags, str(src), "-o", str(Path(tmp) / "probe"),
               *ldenv]
        try:
            res = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        except (OSError, subprocess.SubprocessError):
            return False
        return res.returncode == 0


def env_flag(name):
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def build_flags():
    cflags = ["-O3", "-std=gnu11", "-fno-math-errno", "-fvisibility=hidden"]
    ldflags = []
    if compiles(["-fopenmp-simd"], "int main(void){return 0;}"):
        cflags.append("-fopenmp-simd")
    # A kernel calling a function not yet declared (a source included out of order) fails.
    if compiles(["-Werror=implicit-function-declaration"], "int main(void){return 0;}"):
        cflags.append("-Werror=implicit-function-declaration")
    # The 64-byte vector types live in static inline functions only: no ABI is crossed.
    if compiles(["-Wno-psabi", "-Werror"], "int main(void){return 0;}"):
        cflags.append("-Wno-psabi")

    if os.environ.get("FASTNORM_OPENMP", "").strip() == "0":
        log("OpenMP disabled by FASTNORM_OPENMP=0: building serial kernels")
    elif compiles(["-fopenmp"], OPENMP_TEST):
        log("OpenMP found: building with -fopenmp")
        cflags.append("-fopenmp")
        ldflags.append("-fopenmp")
    else:
        log("WARNING: the C compiler cannot build OpenMP code; building SERIAL kernels "
            "(every call will use one thread)")

    if env_flag("FASTNORM_NATIVE"):
        log("FASTNORM_NATIVE=1: adding -march=native")
        cflags.append("-march=native")
    if env_flag("FASTNORM_SANITIZE"):
        log("FASTNORM_SANITIZE=1: building with AddressSanitizer and UBSan")
        san = ["-fsanitize=address,undefined", "-fno-omit-frame-pointer", "-g"]
        cflags = [f for f in cflags if f != "-O3"] + ["-O1", *san]
        ldflags += san
    return cflags, ldflags


cflags, ldflags = build_flags()
shown = " ".join(f for f in cflags if not f.startswith("-fvisibility"))
log(f"compile flags: {shown}")

sources = ["fastnorm/_kernels.pyx"] + sorted(str(p.relative_to(HERE)) for p in
                                             (HERE / "csrc").glob("*.c"))
ext = Extension(
    "fastnorm._kernels",
    sources=sources,
    include_dirs=["csrc", np.get_include()],
    define_macros=[
        ("NPY_NO_DEPRECATED_API", "NPY_1_9_API_VERSION"),
        ("FN_BUILD_FLAGS", '"' + shown + '"'),
    ],
    extra_compile_args=cflags,
    extra_link_args=ldflags,
    depends=[str(p) for p in (HERE / "csrc").glob("*") if p.suffix in (".h", ".inc")],
)

setup(
    ext_modules=cythonize(
        [ext],
        compiler_directives={
            "language_level": "3",
            "boundscheck": False,
            "wraparound": False,
            "initializedcheck": False,
            "cdivision": True,
            "embedsignature": True,
            "autotestdict": False,  # no __test__ dict: the module matches its stub
        },
    ),
)
