"""Roofline measurements for bench/report.py and bench/scaling.py: every case of
fastnorm._bench's OPS timed with and without ``out=``, against PyTorch and a copy of the same
bytes, at several thread counts, and a description of the machine that ran them."""

from __future__ import annotations

import datetime
import importlib
import os
import platform
import time
from collections.abc import Sequence

import numpy as np

from fastnorm._bench import OUT_IMPL, Cache, Op, blas_threads, check, implementation, measure

ROOFLINE_IMPLS = ("fastnorm", OUT_IMPL, "torch")


def _ratio(num, den):
    return None if num is None or den is None else num / den


def roofline_case(op: Op, shape, dtype, cache: Cache, threads: int, torch=None) -> dict:
    """Time one case at the thread count set now (see :func:`set_threads`): fastnorm, fastnorm
    with ``out=`` (entries with ``takes_out``), PyTorch (when given), ``np.copyto`` of x, and,
    when given, PyTorch's threaded copy of x; returns the record of one row.

    Times are median seconds per call. ``copy_fraction`` is ``copies * copy_s / fastnorm_s``:
    the fraction of copy speed reached, ``copies`` being the least traffic of the pass in
    copies of x (:data:`COPIES`); ``out_copy_fraction`` the same with out=. For an entry with
    a ``matmul`` builder (cosine_norm) copy speed does not apply (None) and ``matmul_fraction``
    is ``matmul_s / fastnorm_s`` instead. ``traffic_bytes`` is that least traffic in bytes
    (2 x.nbytes per copy: x read, y written) and the ``*_gb_s`` fields the resulting rates.
    ``mismatch`` names the results that disagree with plain fastnorm's (:func:`check`).
    """
    arrays = cache.inputs(op, shape, dtype)
    timings = {}
    for impl in ROOFLINE_IMPLS:
        fn = implementation(op, impl, arrays, torch)
        timings[impl] = (
            None if fn is None else measure(fn, rounds=cache.rounds, target=cache.target)
        )
    secs = {impl: None if t is None else t.median for impl, t in timings.items()}
    fastnorm_s, out_s, torch_s = (secs[impl] for impl in ROOFLINE_IMPLS)
    copy_s = matmul_s = None
    if op.matmul is None:
        copy_s = cache.copy_time(op, shape, dtype, threads)
    else:
        matmul_s = measure(op.matmul(arrays), rounds=cache.rounds, target=cache.target).median
    torch_copy_s = None
    if torch is not None:
        torch_copy_s = cache.torch_copy_time(op, shape, dtype, torch, threads)
    nbytes = arrays["x"].nbytes
    traffic = 2 * op.copies * nbytes
    least = None if copy_s is None else op.copies * copy_s
    expected = timings["fastnorm"].result
    return {
        "op": op.name,
        "pass": op.kind,
        "shape": list(shape),
        "layout": op.layout,
        "dtype": dtype,
        "threads": threads,
        "fastnorm_s": fastnorm_s,
        "fastnorm_out_s": out_s,
        "torch_s": torch_s,
        "copy_s": copy_s,
        "torch_copy_s": torch_copy_s,
        "matmul_s": matmul_s,
        "calls_per_round": {k: None if t is None else t.number for k, t in timings.items()},
        "x_bytes": nbytes,
        "copies": op.copies,
        "traffic_bytes": traffic,
        "speedup_vs_torch": _ratio(torch_s, fastnorm_s),
        "out_speedup_vs_torch": _ratio(torch_s, out_s),
        "copy_fraction": _ratio(least, fastnorm_s),
        "out_copy_fraction": _ratio(least, out_s),
        "matmul_fraction": _ratio(matmul_s, fastnorm_s),
        "fastnorm_gb_s": traffic / fastnorm_s / 1e9,
        "fastnorm_out_gb_s": None if out_s is None else traffic / out_s / 1e9,
        "copy_gb_s": None if copy_s is None else 2 * nbytes / copy_s / 1e9,
        "torch_copy_gb_s": None if torch_copy_s is None else 2 * nbytes / torch_copy_s / 1e9,
        "mismatch": [
            impl
            for impl in ROOFLINE_IMPLS[1:]
            if timings[impl] is not None and not check(timings[impl].result, expected, dtype)
        ],
    }


def set_threads(n: int, torch=None):
    """Run fastnorm, torch (when given) and, where threadpoolctl is installed, the BLAS
    libraries loaded so far on ``n`` threads; returns :func:`blas_threads`'s limiter."""
    importlib.import_module("fastnorm").set_num_threads(n)
    if torch is not None:
        torch.set_num_threads(n)
    return blas_threads(n)


def roofline(
    ops: Sequence[Op],
    threads: Sequence[int],
    *,
    full: bool = False,
    rounds: int = 5,
    target: float = 0.03,
    torch=None,
):
    """Yield :func:`roofline_case` records for every case of ``ops`` (``op.run_cases(full)``)
    at each thread count in ``threads``, the counts of one case back to back so that they run
    under the same conditions. fastnorm's, torch's and the BLAS thread counts are restored
    at the end."""
    cache = Cache(rounds, target)
    torch_threads = None if torch is None else torch.get_num_threads()
    blas = None
    try:
        for op in ops:
            for shape, dtype in op.run_cases(full):
                for n in threads:
                    if blas is not None:
                        blas.restore_original_limits()
                    blas = set_threads(n, torch)
                    yield roofline_case(op, shape, dtype, cache, n, torch)
    finally:
        if blas is not None:
            blas.restore_original_limits()
        importlib.import_module("fastnorm").set_num_threads(0)
        if torch is not None:
            torch.set_num_threads(torch_threads)


def _cpuinfo() -> dict:
    """The first value of each key of /proc/cpuinfo (empty where there is none)."""
    info = {}
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                key, sep, value = line.partition(":")
                if sep and key.strip() not in info:
                    info[key.strip()] = value.strip()
    except OSError:
        pass
    return info


def _memory_gib():
    try:
        with open("/proc/meminfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return round(int(line.split()[1]) / (1 << 20), 1)
    except (OSError, ValueError, IndexError):
        pass
    return None


def _cpu_times():
    with open("/proc/stat", encoding="utf-8") as f:
        fields = [int(v) for v in f.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return sum(fields[:8]), idle


def busy_cpus(interval: float = 0.5):
    """How many CPUs other processes keep busy: the non-idle share of /proc/stat's CPU time
    over ``interval`` seconds of sleep, times the CPU count; None where /proc/stat is
    unreadable."""
    try:
        total0, idle0 = _cpu_times()
        time.sleep(interval)
        total1, idle1 = _cpu_times()
    except (OSError, ValueError, IndexError):
        return None
    total = total1 - total0
    if total <= 0:
        return None
    return round((1 - (idle1 - idle0) / total) * (os.cpu_count() or 1), 2)


def _threadpools():
    """threadpoolctl's view of the BLAS and OpenMP libraries loaded, or None without it."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return None
    keys = ("user_api", "internal_api", "prefix", "version", "num_threads", "threading_layer")
    return [{k: lib.get(k) for k in keys if k in lib} for lib in threadpool_info()]


def machine_info(torch=None) -> dict:
    """The machine and the software a run measured: the CPU model and cache size from
    /proc/cpuinfo, the core count (``os.cpu_count()``, and the CPUs this process may run on),
    memory, the load at the start (:func:`busy_cpus`: other work skews the timings), the date,
    fastnorm's configuration (as :func:`fastnorm.show_config` prints it), and the NumPy,
    PyTorch and thread-pool libraries."""
    cpu = _cpuinfo()
    model = (
        cpu.get("model name") or cpu.get("Hardware") or platform.processor() or platform.machine()
    )
    affinity = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    return {
        "cpu": model,
        "cpu_cache": cpu.get("cache size"),
        "cpu_flags_avx512f": "avx512f" in cpu.get("flags", "").split(),
        "cpu_count": os.cpu_count(),
        "cpus_available": None if affinity is None else len(affinity),
        "memory_gib": _memory_gib(),
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "busy_cpus": busy_cpus(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "fastnorm": importlib.import_module("fastnorm._runtime").config(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "torch": None if torch is None else torch.__version__,
        "threadpools": _threadpools(),
    }
