"""Command line: ``python -m fastnorm info`` and ``python -m fastnorm bench``."""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time

import numpy as np

import fastnorm

from . import _bench
from ._runtime import config

COLUMNS = (
    ("op", "<", 13),
    ("pass", "<", 7),
    ("shape", "<", 13),
    ("layout", "<", 6),
    ("dtype", "<", 7),
    ("fastnorm µs", ">", 12),
    ("reference µs", ">", 13),
    ("torch µs", ">", 11),
    ("vs ref", ">", 8),
    ("vs torch", ">", 8),
    ("copy %", ">", 7),
)

LEGEND = """\
speedup = other time / fastnorm time
copy % = 100 x k x copy time / fastnorm time, the fraction of copy speed reached: copy time is
  np.copyto of x into a preallocated array (timed once per input in this run), k the least
  traffic of the pass in copies of x: 1 for fwd and eval (read x, write y), 1.5 for bwd
  (read x and dy, write dx), 2.5 for fwd+bwd (the forward's 1 plus the backward's 1.5)
matmul (cosine_norm rows): time of the op's matrix products alone, np.matmul on rows normalized
  beforehand (fwd: x^ w^T; fwd+bwd: also dy w^ and dy^T x^), and fastnorm/matmul the ratio;
  these products bound cosine_norm's time, so copy % does not apply ('-')
shape: N x C x H x W for the channels ops in both layouts (an NHWC array is N x H x W x C);
  N x D for the vector ops: l2_normalize normalizes each row, weight_norm each row of v (axis 0),
  cosine_norm takes x and w both N x D and gives y N x N
reference '-': above the op's reference size limit; checked against one untimed call"""


def _torch_version(torch):
    return torch.__version__ if torch is not None else None


def cmd_info(args):
    fastnorm.show_config()
    torch = _bench.torch_or_none()
    print(f"  NumPy:       {np.__version__}")
    print(f"  PyTorch:     {_torch_version(torch) or 'not installed'}")
    return 0


def _us(t):
    return "-" if t is None else f"{t * 1e6:.1f}"


def _ratio(num, den):
    return "-" if num is None or den is None else f"{num / den:.2f}x"


def _csv(text):
    return [s.strip() for s in text.split(",") if s.strip()]


def _positive(text):
    n = int(text)
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {n}")
    return n


def _run_case(op, shape, dtype, torch, cache):
    """Time every implementation of one case (and its matrix products alone, for an op that
    has them); the JSON record of one table row."""
    arrays = cache.inputs(op, shape, dtype)
    timings = {}
    expected = None
    for impl in _bench.IMPLS:
        fn = _bench.implementation(op, impl, arrays, torch)
        if fn is None:
            timings[impl] = None
        elif impl == "reference" and not op.times_reference(shape):
            timings[impl] = None
            expected = fn()
        else:
            timings[impl] = _bench.measure(fn, rounds=cache.rounds, target=cache.target)
    if timings["reference"] is not None:
        expected = timings["reference"].result
    fastnorm_s = timings["fastnorm"].median
    matmul_s = copy_s = None
    if op.matmul is not None:
        timing = _bench.measure(op.matmul(arrays), rounds=cache.rounds, target=cache.target)
        matmul_s = timing.median
    else:
        copy_s = cache.copy_time(op, shape, dtype)
    return {
        "op": op.name,
        "pass": op.kind,
        "shape": list(shape),
        "layout": op.layout,
        "dtype": dtype,
        **{f"{k}_s": None if t is None else t.median for k, t in timings.items()},
        **{f"{k}_calls_per_round": None if t is None else t.number for k, t in timings.items()},
        "copy_s": copy_s,
        "copies": op.copies,
        "copy_fraction": None if copy_s is None else op.copies * copy_s / fastnorm_s,
        "matmul_s": matmul_s,
        "vs_matmul": None if matmul_s is None else fastnorm_s / matmul_s,
        "mismatch": [
            k
            for k in ("fastnorm", "torch")
            if timings[k] is not None and not _bench.check(timings[k].result, expected, dtype)
        ],
    }


def _case_name(row):
    parts = (row["op"], row["pass"], _bench.shape_id(row["shape"]), row["layout"], row["dtype"])
    return " ".join(p for p in parts if p)


def _format(row):
    fn, ref, tch = row["fastnorm_s"], row["reference_s"], row["torch_s"]
    values = [row["op"], row["pass"], _bench.shape_id(row["shape"]), row["layout"] or "-"]
    values += [row["dtype"], _us(fn), _us(ref), _us(tch), _ratio(ref, fn), _ratio(tch, fn)]
    copy = row["copy_fraction"]
    values += ["-" if copy is None else f"{100 * copy:.0f}%"]
    line = "  ".join(
        f"{v:{align}{width}}" for v, (_, align, width) in zip(values, COLUMNS, strict=True)
    )
    if row["matmul_s"] is not None:
        line += f"  matmul {_us(row['matmul_s'])} µs, fastnorm/matmul {row['vs_matmul']:.2f}"
    if row["mismatch"]:
        line += "  MISMATCH: " + ", ".join(row["mismatch"])
    return line


def cmd_bench(args):
    try:
        ops = _bench.select(args.ops, args.passes)
    except ValueError as e:
        print(f"fastnorm bench: {e}", file=sys.stderr)
        return 2
    torch = _bench.torch_or_none()
    fastnorm.set_num_threads(args.threads)
    if torch is not None:
        torch.set_num_threads(args.threads)
    blas = _bench.blas_threads(args.threads)
    rounds, target = (3, 0.02) if args.quick else (5, 0.03)
    cases = [(op, shape, dtype) for op in ops for shape, dtype in op.run_cases(args.full)]
    total = sum(len(op.cases) for op in ops)

    print(
        f"fastnorm {fastnorm.__version__} ({config()['simd']}), NumPy {np.__version__}, "
        f"PyTorch {_torch_version(torch) or 'not installed'}"
    )
    print(
        f"threads: {args.threads} (fastnorm {fastnorm.get_num_threads()}"
        + (f", torch {torch.get_num_threads()}" if torch is not None else "")
        + (f", BLAS {args.threads})" if blas is not None else ")")
    )
    if blas is None:
        print("  NumPy's BLAS (cosine_norm's matrix product) is not pinned: install threadpoolctl")
    if args.full or len(cases) == total:
        print(f"cases: all {total}" + (" (--full)" if args.full else ""))
    else:
        print(
            f"cases: the default {len(cases)} of {total}, the channels ops on their first shape"
            " in NCHW and NHWC\n  and the tiny batch_norm one, the vector ops on their first"
            " shape; --full runs all"
        )
    print(f"time per call: median of {rounds} rounds of ~{target * 1e3:.0f} ms")
    print(LEGEND)
    header = "  ".join(f"{name:{align}{width}}" for name, align, width in COLUMNS)
    print(header)
    print("-" * len(header), flush=True)

    start = time.perf_counter()
    rows = []
    cache = _bench.Cache(rounds, target)
    for op, shape, dtype in cases:
        row = _run_case(op, shape, dtype, torch, cache)
        print(_format(row), flush=True)
        rows.append(row)
    print(f"done in {time.perf_counter() - start:.1f} s", flush=True)
    if args.json:
        report = {
            "fastnorm": config(),
            "numpy": np.__version__,
            "torch": _torch_version(torch),
            "machine": platform.machine(),
            "processor": platform.processor(),
            "threads": args.threads,
            "rounds": rounds,
            "round_target_s": target,
            "results": rows,
        }
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(report, f, indent=2)
            f.write("\n")
        print(f"wrote {args.json}")
    mismatches = [f"{_case_name(r)}: {', '.join(r['mismatch'])}" for r in rows if r["mismatch"]]
    if mismatches:
        print(
            "results that disagree with fastnorm.reference:\n  " + "\n  ".join(mismatches),
            file=sys.stderr,
        )
        return 1
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m fastnorm", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    info = sub.add_parser("info", help="build configuration and library versions")
    info.set_defaults(func=cmd_info)
    bench = sub.add_parser(
        "bench", help="time fastnorm against fastnorm.reference and PyTorch (if installed)"
    )
    bench.add_argument("--quick", action="store_true", help="fewer, shorter timing rounds")
    bench.add_argument(
        "--full",
        action="store_true",
        help="every case of the channels and vector ops (default: their first shape, and the"
        " tiny channels one)",
    )
    bench.add_argument(
        "--threads",
        type=_positive,
        default=1,
        metavar="N",
        help="threads for fastnorm and torch (default: 1)",
    )
    bench.add_argument(
        "--ops",
        type=_csv,
        default=None,
        metavar="A,B",
        help="comma-separated op names (default: all), e.g. layer_norm,batch_norm",
    )
    bench.add_argument(
        "--pass",
        dest="passes",
        type=_csv,
        default=None,
        metavar="P,Q",
        help="comma-separated passes among fwd, fwd+bwd, bwd, eval (default: all but bwd)",
    )
    bench.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    bench.set_defaults(func=cmd_bench)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
