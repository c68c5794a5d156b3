"""Thread count, SIMD level and build configuration."""

import operator
import os
import sys
import warnings

from . import _kernels

__all__ = ["set_num_threads", "get_num_threads", "set_output_cache", "get_output_cache",
           "show_config", "config"]

# The output cache's size when FASTNORM_OUTPUT_CACHE does not say: two outputs of a
# 32x64x56x56 float32 batch norm step (25.7 MB each) fit.
OUTPUT_CACHE_DEFAULT = 64 << 20

SIMD_LEVELS = _kernels.ISA_LEVELS


def set_num_threads(n):
    """Set the number of threads fastnorm's kernels use.

    Parameters
    ----------
    n : int
        ``n >= 1`` uses n threads for large inputs (small inputs always run on one).
        ``0`` returns to the default: the OpenMP runtime's setting, which follows
        ``OMP_NUM_THREADS`` and ``threadpoolctl``.

    Notes
    -----
    The thread count of a call is decided in this order:

    1. In a child created by ``os.fork()``: 1.
    2. With ``n >= 1`` set here: ``n``, except that a lower OpenMP setting of the calling
       thread than the process default caps it, so that
       ``threadpoolctl.threadpool_limits(k)`` limits fastnorm to ``min(n, k)`` threads.
    3. Otherwise (``n = 0``, the default): OpenMP's setting for the calling thread,
       ``omp_get_max_threads()``: ``OMP_NUM_THREADS`` if set, else the number of processors,
       changed by ``threadpoolctl.threadpool_limits`` or ``omp_set_num_threads``.

    The setting made here is process-wide; OpenMP's (and so threadpoolctl's) belongs to the
    thread that made it. :func:`get_num_threads` reports the result of these rules.
    Results do not depend on the thread count: they are bitwise identical for any n.

    Examples
    --------
    >>> import fastnorm
    >>> fastnorm.set_num_threads(1)
    >>> fastnorm.get_num_threads()
    1
    >>> fastnorm.set_num_threads(0)
    """
    try:
        n = operator.index(n)
    except TypeError:
        raise TypeError(f"n must be an integer, got {n!r}") from None
    if not 0 <= n <= 65536:
        raise ValueError(f"n must be in [0, 65536], got {n}")
    _kernels.set_num_threads(n)


def get_num_threads():
    """The number of threads a large call from this thread uses now.

    1 in a build without OpenMP and in a forked child; see :func:`set_num_threads` for how
    ``OMP_NUM_THREADS``, ``threadpoolctl`` and :func:`set_num_threads` combine.
    """
    return _kernels.get_num_threads()


def set_output_cache(nbytes):
    """Set how much memory fastnorm keeps for reuse from its own freed outputs.

    Outputs fastnorm allocates (no ``out=``) of 1 MiB and more come from a small cache:
    when such an array is freed, its memory is kept, up to 8 blocks and ``nbytes`` bytes
    in all (the oldest freed are given back first), and the next output of exactly the
    same size gets it again. Memory newly given by the system is faulted in and zeroed
    page by page as it is first written, which can cost as much as the kernel itself: a
    channels-last batch norm training step on 32x56x56x64 float32 took 8.1-9.3 ms with
    fresh memory at every call and 4.2-4.5 ms with reused memory. ``out=`` avoids the
    question altogether.

    Parameters
    ----------
    nbytes : int
        The most the cache may hold, in bytes; ``0`` turns it off and gives back what it
        holds. The default is 64 MiB, or the environment variable
        ``FASTNORM_OUTPUT_CACHE`` (bytes) at import.

    Notes
    -----
    The cache holds only memory of arrays that were freed; arrays in use are never
    touched, and results do not depend on it. Its content is shown by
    :func:`get_output_cache`.

    Examples
    --------
    >>> import fastnorm
    >>> fastnorm.set_output_cache(0)          # no reuse: every output is fresh memory
    >>> fastnorm.get_output_cache()
    (0, 0)
    >>> fastnorm.set_output_cache(64 << 20)
    """
    try:
        n = operator.index(nbytes)
    except TypeError:
        raise TypeError(f"nbytes must be an integer, got {nbytes!r}") from None
    if not 0 <= n < 1 << 62:
        raise ValueError(f"nbytes must be >= 0, got {n}")
    _kernels.set_output_cache(n)


def get_output_cache():
    """``(limit, held)``: the output cache's limit and the bytes it holds now, for reuse
    (see :func:`set_output_cache`)."""
    return _kernels.output_cache_limit(), _kernels.output_cache_bytes()


def _init_output_cache():
    """The output cache's limit at import: FASTNORM_OUTPUT_CACHE (bytes) or the default."""
    want = os.environ.get("FASTNORM_OUTPUT_CACHE", "").strip()
    n = OUTPUT_CACHE_DEFAULT
    if want:
        try:
            n = int(want)
            if n < 0:
                raise ValueError(want)
        except ValueError:
            n = OUTPUT_CACHE_DEFAULT
            warnings.warn(f"FASTNORM_OUTPUT_CACHE={want!r} ignored: not a byte count >= 0",
                          RuntimeWarning, stacklevel=3)
    _kernels.set_output_cache(n)


def config():
    """The build and runtime configuration as a dict."""
    from . import __version__

    return {
        "version": __version__,
        "build": _kernels.build_info(),
        "openmp": _kernels.openmp_enabled(),
        "num_threads": get_num_threads(),
        "simd": _kernels.isa_active(),
        "simd_supported": _kernels.isa_supported(),
        "output_cache": get_output_cache(),
        "python": sys.version.split()[0],
    }


def show_config(file=None):
    """Print version, compiler, OpenMP, thread count and SIMD level."""
    c = config()
    lines = [
        f"fastnorm {c['version']}",
        f"  build:       {c['build']}",
        f"  OpenMP:      {'on' if c['openmp'] else 'off (serial build)'}",
        f"  threads:     {c['num_threads']}",
        f"  SIMD:        {c['simd']} (best supported: {c['simd_supported']}; "
        f"FASTNORM_SIMD=baseline|avx2|avx512 forces one)",
        f"  out. cache:  {c['output_cache'][0] / 2**20:g} MiB, holding "
        f"{c['output_cache'][1] / 2**20:.1f} MiB (FASTNORM_OUTPUT_CACHE=bytes sets it)",
        f"  Python:      {c['python']}",
    ]
    print("\n".join(lines), file=file or sys.stdout)


def _init_simd():
    """Select the SIMD level at import: the best the CPU supports, or FASTNORM_SIMD."""
    want = os.environ.get("FASTNORM_SIMD", "").strip().lower()
    if not want:
        _kernels.isa_select(_kernels.isa_supported())
        return
    try:
        _kernels.isa_select(want)
    except ValueError as e:
        _kernels.isa_select(_kernels.isa_supported())
        warnings.warn(f"FASTNORM_SIMD={want!r} ignored: {e}", RuntimeWarning, stacklevel=3)


def _simd_level(name=None):
    """Get, or with `name` set, the SIMD level of the kernels (for tests and benchmarks)."""
    if name is not None:
        _kernels.isa_select(name)
    return _kernels.isa_active()
