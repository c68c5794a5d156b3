"""Thread scaling: the roofline measurements of bench/report.py at 1, 2, 4, 8 and 16 threads.

Runs every benchmark entry (every op and pass) on its default shapes (``--full``: all) at each
thread count up to ``os.cpu_count()`` (``--force`` runs the larger counts too), the counts of one
case back to back. Prints each row as bench/report.py does, then, per implementation (fastnorm,
fastnorm with ``out=``, PyTorch), the time at each count and the speedup over the smallest
count, and the copy times: ``np.copyto``, which NumPy runs on one thread whatever the count,
and, with torch installed, ``Tensor.copy_``, which PyTorch splits over its threads. Writes the
records (as bench/report.py's) and the machine's description as JSON.

    python bench/scaling.py [--threads 1,2,4,8,16] [--force] [--full] [--quick] [--rounds N]
                            [--round-ms MS] [--ops A,B] [--pass P,Q] [--out DIR]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import roofline  # bench/roofline.py, beside this script
from report import (
    add_selection_args,
    csv_list,
    describe,
    format_row,
    geomean,
    header,
    stamp,
    timing,
    write_json,
)

from fastnorm import _bench

COUNTS = (1, 2, 4, 8, 16)
IMPL_KEYS = (
    ("fastnorm", "fastnorm_s"),
    ("fastnorm out=", "fastnorm_out_s"),
    ("torch", "torch_s"),
)
LABEL, SHAPE, DTYPE, CELL = 27, 13, 7, 17


def _counts(text):
    counts = sorted({int(s) for s in csv_list(text)})
    if not counts or counts[0] < 1:
        raise argparse.ArgumentTypeError(f"thread counts must be >= 1, got {text!r}")
    return counts


def _threads_text(n):
    return f"{n} thread{'s' if n > 1 else ''}"


def _label(row):
    return " ".join(p for p in (row["op"], row["pass"], row["layout"]) if p)


def _case(row):
    return (_label(row), tuple(row["shape"]), row["dtype"])


def _cell(t, base):
    if t is None:
        return "-"
    if base is None:
        return f"{t * 1e6:.1f}"
    return f"{t * 1e6:.1f} ({base / t:.2f}x)"


def _table(title, keyed, counts):
    """``keyed``: {(label, shape, dtype): {threads: seconds}}, in row order."""
    head = f"{title:<{LABEL}}  {'shape':<{SHAPE}}  {'dtype':<{DTYPE}}"
    head += "".join(f"  {f'{n} thr µs':>{CELL}}" for n in counts)
    lines = [head, "-" * len(head)]
    for (label, shape, dtype), times in keyed.items():
        base = times.get(counts[0])
        line = f"{label:<{LABEL}}  {_bench.shape_id(shape):<{SHAPE}}  {dtype:<{DTYPE}}"
        for n in counts:
            t = times.get(n)
            line += f"  {_cell(t, None if n == counts[0] else base):>{CELL}}"
        lines.append(line)
    return "\n".join(lines)


def scaling_tables(rows, counts):
    """The per-implementation tables, the copy table and the geometric-mean speedups."""
    out = []
    for title, key in IMPL_KEYS:
        keyed = {}
        for r in rows:
            if r[key] is not None:
                keyed.setdefault(_case(r), {})[r["threads"]] = r[key]
        if keyed:
            out.append(_table(title, keyed, counts))
            parts = []
            for n in counts[1:]:
                g = geomean(
                    t[counts[0]] / t[n] for t in keyed.values() if counts[0] in t and n in t
                )
                if g is not None:
                    parts.append(f"{n} thr {g:.2f}x")
            if parts:
                out.append(
                    f"geometric mean speedup over {_threads_text(counts[0])}: {', '.join(parts)}"
                )
            out.append("")
    for title, key in (("np.copyto of x", "copy_s"), ("torch copy_ of x", "torch_copy_s")):
        keyed = {}
        for r in rows:
            if r[key] is not None:
                keyed.setdefault(("", tuple(r["shape"]), r["dtype"]), {}).setdefault(
                    r["threads"], r[key]
                )
        if keyed:
            out.append(_table(title, keyed, counts) + "\n")
    return "\n".join(out)


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--threads",
        type=_counts,
        default=list(COUNTS),
        metavar="N,M",
        help="comma-separated thread counts (default: 1,2,4,8,16)",
    )
    parser.add_argument(
        "--force", action="store_true", help="also run the counts above os.cpu_count()"
    )
    add_selection_args(parser)
    args = parser.parse_args(argv)

    try:
        ops = _bench.select(args.ops, args.passes or list(_bench.COPIES))
    except ValueError as e:
        print(f"scaling.py: {e}", file=sys.stderr)
        return 2
    cpus = os.cpu_count() or 1
    counts = args.threads if args.force else [n for n in args.threads if n <= cpus]
    skipped = sorted(set(args.threads) - set(counts))
    if not counts:
        print(f"scaling.py: no thread count <= {cpus} CPUs; --force runs them", file=sys.stderr)
        return 2
    torch = _bench.torch_or_none()
    info = roofline.machine_info(torch)
    rounds, target = timing(args)
    print(describe(info))
    print(f"thread counts: {', '.join(map(str, counts))}", end="")
    if skipped:
        print(f" ({', '.join(map(str, skipped))} skipped: above {cpus} CPUs; --force runs them)")
    else:
        print()
    ncases = sum(len(op.run_cases(args.full)) for op in ops)
    print(
        f"{len(ops)} entries, {ncases} cases ({'all shapes' if args.full else 'default shapes'});"
        f" time per call: median of {rounds} rounds of ~{target * 1e3:.0f} ms"
    )
    print(header(), flush=True)

    start = time.perf_counter()
    rows = []
    for row in roofline.roofline(
        ops, counts, full=args.full, rounds=rounds, target=target, torch=torch
    ):
        print(format_row(row), flush=True)
        rows.append(row)
    elapsed = time.perf_counter() - start
    print(f"done in {elapsed:.1f} s\n")
    print(
        f"µs per call at each thread count (speedup over {_threads_text(counts[0])}). np.copyto "
        "copies on one thread whatever\nthe count (NumPy does not thread copies), so its time "
        "stays flat; torch copy_ splits the copy over its\nthreads, a copy speed that scales.\n"
    )
    print(scaling_tables(rows, counts))

    args.out.mkdir(parents=True, exist_ok=True)
    report = {
        "machine": info,
        "threads": counts,
        "skipped_threads": skipped,
        "full": args.full,
        "rounds": rounds,
        "round_target_s": target,
        "elapsed_s": elapsed,
        "results": rows,
    }
    write_json(args.out / f"scaling-{stamp(info)}.json", report)
    mismatches = [r for r in rows if r["mismatch"]]
    for r in mismatches:
        print(f"results that disagree with fastnorm's: {format_row(r)}", file=sys.stderr)
    return 1 if mismatches else 0


if __name__ == "__main__":
    sys.exit(main())
