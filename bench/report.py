"""Roofline report: every benchmark entry, forward and backward, against PyTorch and copy speed.

For each entry of ``fastnorm._bench.OPS`` (every op and pass: fwd, bwd, fwd+bwd, eval) and each
of its cases (the default shapes of ``python -m fastnorm bench``, or all with ``--full``), at
each thread count (default: 1 and ``os.cpu_count()``), times fastnorm, fastnorm with ``out=``
(a preallocated y, for the ops that take one), PyTorch's CPU implementation when torch is
installed, and ``np.copyto`` of the same bytes. Prints a table, writes the records and the
machine's description as JSON and, when matplotlib is importable, draws a PNG of the speedup
over PyTorch and the fraction of copy speed per op and pass.

    python bench/report.py [--threads 1,2] [--full] [--quick] [--rounds N] [--round-ms MS]
                           [--ops A,B] [--pass P,Q] [--out DIR]
    python bench/report.py --plot RESULTS.json    # redraw the PNG of a saved run
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import math
import os
import sys
import time
from pathlib import Path

import roofline  # bench/roofline.py, beside this script

from fastnorm import _bench

RESULTS = Path(__file__).resolve().parent / "results"

COLUMNS = (
    ("op", "<", 13),
    ("pass", "<", 7),
    ("shape", "<", 13),
    ("layout", "<", 6),
    ("dtype", "<", 7),
    ("thr", ">", 3),
    ("fastnorm µs", ">", 11),
    ("out= µs", ">", 9),
    ("torch µs", ">", 9),
    ("copy µs", ">", 9),
    ("vs torch", ">", 8),
    ("copy %", ">", 6),
    ("out= copy %", ">", 11),
)

LEGEND = """\
thr: threads of fastnorm, torch and NumPy's BLAS; np.copyto always copies on one thread
out=: fastnorm writing its output into preallocated arrays ('-': weight_norm's forward and
  cosine_norm take no out=): y, dx of a backward alone; a fwd+bwd passes one to its forward
  and one to its backward (weight_norm: to its backward)
vs torch = torch time / fastnorm time (PyTorch's CPU functions, autograd for the backward)
copy % = 100 x k x copy time / fastnorm time, the fraction of copy speed reached: copy time is
  np.copyto of x into a preallocated array, k the least traffic of the pass in copies of x:
  1 for fwd and eval (read x, write y), 1.5 for bwd (read x and dy, write dx), 2.5 for fwd+bwd;
  above one thread it compares with a one-thread copy and can exceed 100%
cosine_norm: copy % does not apply ('-'); after the row, its matrix products alone (np.matmul
  on rows normalized beforehand) and matmul %, 100 x matmul time / fastnorm time
shape: N x C x H x W for the channels ops in both layouts (an NHWC array is N x H x W x C);
  N x D for the vector ops"""


def csv_list(text):
    return [s.strip() for s in text.split(",") if s.strip()]


def _positive_int(text):
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text}")
    return value


def _positive_float(text):
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text}")
    return value


def timing(args):
    """(rounds, seconds per round) from --quick, --rounds and --round-ms."""
    rounds, target = (3, 0.02) if args.quick else (5, 0.03)
    if args.rounds is not None:
        rounds = args.rounds
    if args.round_ms is not None:
        target = args.round_ms / 1e3
    return rounds, target


def add_selection_args(parser):
    """The options report.py and scaling.py share: which cases, how long, where to."""
    parser.add_argument("--full", action="store_true", help="every shape of every op")
    parser.add_argument("--quick", action="store_true", help="fewer, shorter timing rounds")
    parser.add_argument(
        "--rounds",
        type=_positive_int,
        metavar="N",
        help="timing rounds per case, the median taken (default: 5, 3 with --quick)",
    )
    parser.add_argument(
        "--round-ms",
        type=_positive_float,
        metavar="MS",
        help="length of a round in milliseconds (default: 30, 20 with --quick)",
    )
    parser.add_argument("--ops", type=csv_list, metavar="A,B", help="op names (default: all)")
    parser.add_argument(
        "--pass",
        dest="passes",
        type=csv_list,
        metavar="P,Q",
        help="passes among fwd, bwd, fwd+bwd, eval (default: all)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=RESULTS,
        metavar="DIR",
        help=f"output folder (default: {RESULTS})",
    )


def _threads(text):
    counts = []
    for s in csv_list(text):
        n = int(s)
        if n < 1:
            raise argparse.ArgumentTypeError(f"thread counts must be >= 1, got {n}")
        counts.append(n)
    if not counts:
        raise argparse.ArgumentTypeError("no thread count given")
    return list(dict.fromkeys(counts))


def _us(t):
    return "-" if t is None else f"{t * 1e6:.1f}"


def _pct(f):
    return "-" if f is None else f"{100 * f:.0f}%"


def format_row(row):
    values = [row["op"], row["pass"], _bench.shape_id(row["shape"]), row["layout"] or "-"]
    values += [row["dtype"], str(row["threads"]), _us(row["fastnorm_s"])]
    values += [_us(row["fastnorm_out_s"]), _us(row["torch_s"]), _us(row["copy_s"])]
    speedup = row["speedup_vs_torch"]
    values += ["-" if speedup is None else f"{speedup:.2f}x"]
    values += [_pct(row["copy_fraction"]), _pct(row["out_copy_fraction"])]
    line = "  ".join(
        f"{v:{align}{width}}" for v, (_, align, width) in zip(values, COLUMNS, strict=True)
    )
    if row["matmul_s"] is not None:
        line += f"  matmul {_us(row['matmul_s'])} µs, matmul % {_pct(row['matmul_fraction'])}"
    if row["mismatch"]:
        line += "  MISMATCH: " + ", ".join(row["mismatch"])
    return line


def header():
    line = "  ".join(f"{name:{align}{width}}" for name, align, width in COLUMNS)
    return line + "\n" + "-" * len(line)


def geomean(values):
    values = [v for v in values if v is not None and v > 0]
    if not values:
        return None
    return math.exp(sum(math.log(v) for v in values) / len(values))


def summary(rows, threads):
    """One line per thread count: geometric means over the cases."""
    lines = ["geometric mean over the cases:"]
    for n in threads:
        sel = [r for r in rows if r["threads"] == n]
        parts = []
        for key, what, fmt in (
            ("speedup_vs_torch", "vs torch", "{:.2f}x"),
            ("copy_fraction", "copy", "{:.0%}"),
            ("out_copy_fraction", "copy with out=", "{:.0%}"),
        ):
            g = geomean(r[key] for r in sel)
            if g is not None:
                parts.append(f"{what} {fmt.format(g)}")
        lines.append(f"  {n} thread{'s' if n > 1 else ''}: " + ", ".join(parts))
    return "\n".join(lines)


def describe(info):
    f = info["fastnorm"]
    text = (
        f"{info['cpu']}, {info['cpu_count']} CPUs ({info['cpus_available']} available), "
        f"{info['date']}\nfastnorm {f['version']} ({f['simd']}, OpenMP "
        f"{'on' if f['openmp'] else 'off'}), NumPy {info['numpy']}, "
        f"PyTorch {info['torch'] or 'not installed'}"
    )
    busy = info.get("busy_cpus")
    if busy is not None and busy >= 0.25:
        text += (
            f"\nWARNING: other processes kept {busy:.1f} CPUs busy before the run: they skew the"
            " timings, most of all those on several threads"
        )
    return text


def write_json(path, report):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(report, f, indent=2)
        f.write("\n")
    print(f"wrote {path}")


def stamp(info):
    return datetime.datetime.fromisoformat(info["date"]).strftime("%Y%m%d-%H%M%S")


# ---- plot --------------------------------------------------------------------------------


def _labels(rows):
    """The op / pass / layout labels in table order."""
    return list(
        dict.fromkeys(" ".join(p for p in (r["op"], r["pass"], r["layout"]) if p) for r in rows)
    )


def _scatter(ax, pts, **kw):
    if pts:
        ax.scatter(*zip(*pts, strict=True), zorder=3, **kw)


def plot(report, path):
    """Draw the two panels of ``report`` (as written by :func:`write_json`) into ``path``;
    False, with nothing drawn, where matplotlib is not importable."""
    try:
        import matplotlib
    except ImportError:
        return False
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    rows = report["results"]
    info = report["machine"]
    labels = _labels(rows)
    pos = {label: i for i, label in enumerate(labels)}
    threads = sorted({r["threads"] for r in rows})
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    step = 0.6 / len(threads)

    fig = plt.figure(figsize=(15, 2.2 + 0.32 * len(labels)), layout="constrained")
    grid = fig.add_gridspec(2, 2, height_ratios=(0.32 * len(labels), 0.5))
    left = fig.add_subplot(grid[0, 0])
    right = fig.add_subplot(grid[0, 1], sharey=left)
    key = fig.add_subplot(grid[1, :])
    key.axis("off")
    handles = []
    for k, n in enumerate(threads):
        color = colors[k % len(colors)]
        sel = [r for r in rows if r["threads"] == n]
        offset = (k - (len(threads) - 1) / 2) * step

        def y(r, offset=offset):
            return pos[" ".join(p for p in (r["op"], r["pass"], r["layout"]) if p)] + offset

        def points(field, sel=sel, y=y):
            return [(r[field], y(r)) for r in sel if r[field] is not None and r[field] > 0]

        _scatter(left, points("speedup_vs_torch"), color=color, s=22)
        _scatter(right, points("copy_fraction"), color=color, s=22)
        _scatter(right, points("out_copy_fraction"), facecolors="none", edgecolors=color, s=44)
        _scatter(right, points("matmul_fraction"), color=color, marker="D", s=22)
        label = f"{n} thread{'s' if n > 1 else ''}"
        handles.append(Line2D([], [], color=color, marker="o", ls="", label=label))
    marker = {"color": "black", "ls": ""}
    handles += [
        Line2D([], [], marker="o", label="fastnorm", **marker),
        Line2D(
            [], [], marker="o", mfc="none", ms=8, label="fastnorm with out= (copy panel)", **marker
        ),
        Line2D([], [], marker="D", label="cosine_norm: matmul time / fastnorm time", **marker),
    ]
    key.legend(handles=handles, loc="center", ncol=len(handles), frameon=False)

    left.set_xscale("log")
    left.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    left.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}x"))
    left.xaxis.set_minor_formatter(NullFormatter())
    left.axvline(1.0, color="black", lw=1)
    left.set_xlabel("torch time / fastnorm time (log scale)")
    left.set_title("speedup over PyTorch CPU")
    right.axvline(1.0, color="black", lw=1)
    right.set_xlabel("k x np.copyto time / fastnorm time (np.copyto on one thread)")
    right.set_title("fraction of copy speed (k = 1 fwd/eval, 1.5 bwd, 2.5 fwd+bwd)")
    right.set_xlim(left=0)
    right.tick_params(labelleft=False)
    left.set_yticks(range(len(labels)))
    left.set_yticklabels(labels)
    left.set_ylim(len(labels) - 0.5, -0.5)
    for ax in (left, right):
        ax.grid(True, axis="x", which="major", alpha=0.3)
        for i in range(1, len(labels)):
            ax.axhline(i - 0.5, color="grey", lw=0.4, alpha=0.4)
    config = info["fastnorm"]
    fig.suptitle(
        f"fastnorm {config['version']} ({config['simd']}) vs PyTorch {info['torch'] or '-'}, "
        f"NumPy {info['numpy']}: {info['cpu']}, {info['cpu_count']} CPUs, "
        f"{info['date'][:10]}; one dot per shape"
    )
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def _draw(report, path):
    if plot(report, path):
        print(f"wrote {path}")
    else:
        print(
            "matplotlib is not installed: no plot (pip install matplotlib, then "
            f"python bench/report.py --plot {path.with_suffix('.json')})"
        )


# ---- main --------------------------------------------------------------------------------


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    cpus = os.cpu_count() or 1
    parser.add_argument(
        "--threads",
        type=_threads,
        default=list(dict.fromkeys((1, cpus))),
        metavar="N,M",
        help=f"comma-separated thread counts (default: 1,{cpus}, this machine's os.cpu_count())",
    )
    add_selection_args(parser)
    parser.add_argument("--plot", type=Path, metavar="JSON", help="only redraw a saved run's PNG")
    args = parser.parse_args(argv)

    if args.plot is not None:
        with open(args.plot, encoding="utf-8") as f:
            _draw(json.load(f), args.plot.with_suffix(".png"))
        return 0

    kinds = args.passes or list(_bench.COPIES)
    try:
        ops = _bench.select(args.ops, kinds)
    except ValueError as e:
        print(f"report.py: {e}", file=sys.stderr)
        return 2
    torch = _bench.torch_or_none()
    info = roofline.machine_info(torch)
    rounds, target = timing(args)
    ncases = sum(len(op.run_cases(args.full)) for op in ops)
    print(describe(info))
    if importlib.util.find_spec("threadpoolctl") is None:
        print("  NumPy's BLAS (cosine_norm's matrix product) is not pinned: install threadpoolctl")
    counts = ", ".join(map(str, args.threads))
    print(
        f"{len(ops)} entries, {ncases} cases ({'all shapes' if args.full else 'default shapes'}"
        f"), at {counts} thread{'s' if args.threads != [1] else ''}; time per call: median of "
        f"{rounds} rounds of ~{target * 1e3:.0f} ms"
    )
    print(LEGEND)
    print(header(), flush=True)

    start = time.perf_counter()
    rows = []
    for row in roofline.roofline(
        ops, args.threads, full=args.full, rounds=rounds, target=target, torch=torch
    ):
        print(format_row(row), flush=True)
        rows.append(row)
    elapsed = time.perf_counter() - start
    print(f"done in {elapsed:.1f} s")
    print(summary(rows, args.threads))

    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"report-{stamp(info)}.json"
    report = {
        "machine": info,
        "threads": args.threads,
        "full": args.full,
        "rounds": rounds,
        "round_target_s": target,
        "elapsed_s": elapsed,
        "results": rows,
    }
    write_json(path, report)
    _draw(report, path.with_suffix(".png"))

    mismatches = [r for r in rows if r["mismatch"]]
    for r in mismatches:
        print(f"results that disagree with fastnorm's: {format_row(r)}", file=sys.stderr)
    return 1 if mismatches else 0


if __name__ == "__main__":
    sys.exit(main())
