"""The shape grid: every op and pass on shapes taken from real models, against PyTorch.

    python bench/grid.py [--threads 1,2] [--quick] [--ops layer_norm,group_norm,...]
                         [--rounds 5] [--json PATH] [--png PATH]

Cases (float32):
  rows      layer_norm and rms_norm: hidden sizes 64 to 8192 (320, 2560 and 5120 among
            them) x 1 to 4096 tokens, up to 8 M elements (32 MB) per array;
  channels  batch_norm (training forward, eval forward, forward + backward), group_norm
            (8, 16 and 32 groups) and instance_norm on stages of ResNet-18/50,
            MobileNet-v2 and a UNet / diffusion model (224x224 down to 7x7, 3 to 2048
            channels, batch 1 to 32), channels-first (NCHW) and channels-last (NHWC);
  vectors   weight_norm (one norm per output unit) on linear and conv weights and
            l2_normalize on rows of embedding tables and activations.

Each case is timed at each thread count as fastnorm (writing into a preallocated array,
``out=``), PyTorch (the same math on the same memory, ``torch.set_num_threads``) and
``np.copyto`` of x, interleaved round by round; the figures are medians over rounds.
``speedup`` is PyTorch's time over fastnorm's; ``copy`` is the fraction of copy speed,
k x copy time / fastnorm time with k the pass's least traffic in copies of x (1 forward,
1.5 backward, 2.5 forward + backward). Every fastnorm result is checked against
PyTorch's once. Prints a table and a summary, writes JSON and a heatmap PNG.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

import fastnorm as fn
from fastnorm import _bench

COPIES = {"fwd": 1.0, "eval": 1.0, "bwd": 1.5, "fwd+bwd": 2.5}
MAX_ELEMS = 8 << 20

HIDDEN = (64, 320, 768, 1024, 2560, 4096, 5120, 8192)
TOKENS = (1, 8, 64, 256, 1024, 4096)
# (N, C, H, W): ResNet-18/50, MobileNet-v2, UNet / diffusion stages, and first layers
CHANNEL_SHAPES = (
    (8, 3, 224, 224), (32, 64, 56, 56), (8, 256, 56, 56), (32, 128, 28, 28),
    (8, 512, 28, 28), (32, 256, 14, 14), (8, 1024, 14, 14), (32, 512, 7, 7),
    (8, 2048, 7, 7), (1, 2048, 7, 7), (8, 32, 112, 112), (8, 96, 56, 56),
    (8, 144, 28, 28), (8, 384, 14, 14), (32, 960, 7, 7), (8, 1280, 7, 7),
    (2, 320, 64, 64), (2, 640, 32, 32), (4, 1280, 16, 16), (8, 1280, 8, 8),
)
# weight_norm: (out, in) linear and (out, in, k, k) conv weights; l2_normalize: rows
WEIGHT_SHAPES = (
    (768, 768), (3072, 768), (768, 3072), (1000, 2048), (4096, 4096), (64, 3, 7, 7),
    (64, 64, 3, 3), (256, 256, 3, 3), (512, 512, 3, 3), (32, 1, 3, 3), (1280, 320, 1, 1),
)
L2_SHAPES = ((30522, 768), (50257, 64), (8192, 256), (4096, 1024), (1, 4096), (256, 128))
QUICK = {
    "rows": ((1, 768), (64, 320), (256, 3072), (4096, 1024)),
    "channels": ((32, 64, 56, 56), (8, 2048, 7, 7), (8, 1280, 8, 8)),
    "weights": ((768, 3072), (64, 3, 7, 7)),
    "l2": ((8192, 256),),
}


def _t(torch, a, grad=False):
    t = torch.from_numpy(a)
    return t.requires_grad_(True) if grad else t


class Case:
    """One op x pass x layout x shape: a fastnorm callable, a PyTorch one, x for the copy."""

    def __init__(self, op, kind, layout, shape, x, run_fn, run_torch, extra=""):
        self.op, self.kind, self.layout, self.shape = op, kind, layout, shape
        self.x, self.run_fn, self.run_torch, self.extra = x, run_fn, run_torch, extra

    @property
    def label(self):
        return " ".join(p for p in (self.op, self.kind, self.layout) if p)

    @property
    def name(self):
        return "x".join(map(str, self.shape)) + (f" {self.extra}" if self.extra else "")


def _rows_cases(torch, op, shapes, rng):
    for m, k in shapes:
        yield from _rows_case(torch, op, m, k, rng)


def _fastnorm(name, kind, a, **params):
    """fastnorm's timed call from the op registry (fastnorm._bench's builders), writing into
    a preallocated array."""
    return _bench._build(name, kind, **params)(fn, a, out=np.empty_like(a["x"]))


def _rows_case(torch, op, m, k, rng):
    F = torch.nn.functional
    a = _bench.make_inputs(_bench._row_inputs, (m, k), np.float32, int(rng.integers(1 << 31)))
    # PyTorch gets writeable copies of the (read-only) inputs
    tx, tw, tdy = (_t(torch, np.array(a[k]), k != "dy") for k in ("x", "weight", "dy"))
    if op == "layer_norm":
        tb = _t(torch, np.array(a["bias"]), True)
        tf = lambda: F.layer_norm(tx, (k,), tw, tb)  # noqa: E731
        params = (tx, tw, tb)
    else:
        tf = lambda: F.rms_norm(tx, (k,), tw, eps=1e-6)  # noqa: E731
        params = (tx, tw)
    graph = tf()
    yield Case(op, "fwd", None, (m, k), a["x"], _fastnorm(op, "fwd", a),
               lambda: _nograd(torch, tf))
    yield Case(op, "bwd", None, (m, k), a["x"], _fastnorm(op, "bwd", a),
               lambda g=graph, p=params: torch.autograd.grad(g, p, tdy, retain_graph=True))
    yield Case(op, "fwd+bwd", None, (m, k), a["x"], _fastnorm(op, "fwd+bwd", a),
               lambda p=params: torch.autograd.grad(tf(), p, tdy))


def _nograd(torch, f):
    with torch.no_grad():
        return f()


def _channel_cases(torch, op, shapes, rng):
    for shape in shapes:
        yield from list(_channel_case(torch, op, shape, rng))


def _channel_case(torch, op, shape, rng):
    F = torch.nn.functional
    c = shape[1]
    seed = int(rng.integers(1 << 31))
    for layout in ("NCHW", "NHWC"):
        inputs = _bench._nchw_inputs if layout == "NCHW" else _bench._nhwc_inputs
        a = _bench.make_inputs(inputs, shape, np.float32, seed)
        x, axis = a["x"], _bench.LAYOUT_AXIS[layout]
        tx, tdy = torch.from_numpy(np.array(x)), torch.from_numpy(np.array(a["dy"]))
        if layout == "NHWC":
            tx, tdy = tx.permute(0, 3, 1, 2), tdy.permute(0, 3, 1, 2)
        txg = tx.detach().clone(memory_format=torch.preserve_format).requires_grad_(True)
        tw, tb = _t(torch, np.array(a["weight"]), True), _t(torch, np.array(a["bias"]), True)
        if op == "batch_norm":
            # copies, one pair per pass: the training passes update them
            trm, trv, erm, erv = (torch.from_numpy(np.array(a[k]))
                                  for k in ("running_mean", "running_var") * 2)  # fmt: skip
            yield Case(op, "fwd", layout, shape, x, _fastnorm(op, "fwd", a, axis=axis),
                       lambda tx=tx, tw=tw, tb=tb, trm=trm, trv=trv: F.batch_norm(
                           tx, trm, trv, tw.detach(), tb.detach(), True))
            yield Case(op, "eval", layout, shape, x,
                       _fastnorm(op, "eval", a, axis=axis, training=False),
                       lambda tx=tx, tw=tw, tb=tb, erm=erm, erv=erv: F.batch_norm(
                           tx, erm, erv, tw.detach(), tb.detach(), False))
            yield Case(op, "fwd+bwd", layout, shape, x, _fastnorm(op, "fwd+bwd", a, axis=axis),
                       lambda txg=txg, tw=tw, tb=tb, tdy=tdy, trm=trm, trv=trv: torch.autograd.grad(
                           F.batch_norm(txg, trm, trv, tw, tb, True), (txg, tw, tb), tdy))
        elif op == "group_norm":
            for g in (8, 16, 32):
                if c % g:
                    continue
                yield Case(op, "fwd", layout, shape, x,
                           _fastnorm(op, "fwd", a, axis=axis, num_groups=g),
                           lambda tx=tx, tw=tw, tb=tb, g=g: F.group_norm(
                               tx, g, tw.detach(), tb.detach()),
                           extra=f"G{g}")
                yield Case(op, "fwd+bwd", layout, shape, x,
                           _fastnorm(op, "fwd+bwd", a, axis=axis, num_groups=g),
                           lambda txg=txg, tw=tw, tb=tb, tdy=tdy, g=g: torch.autograd.grad(
                               F.group_norm(txg, g, tw, tb), (txg, tw, tb), tdy),
                           extra=f"G{g}")
        else:
            yield Case(op, "fwd", layout, shape, x, _fastnorm(op, "fwd", a, axis=axis),
                       lambda tx=tx, tw=tw, tb=tb: F.instance_norm(tx, weight=tw.detach(),
                                                     bias=tb.detach()))
            yield Case(op, "fwd+bwd", layout, shape, x, _fastnorm(op, "fwd+bwd", a, axis=axis),
                       lambda txg=txg, tw=tw, tb=tb, tdy=tdy: torch.autograd.grad(
                           F.instance_norm(txg, weight=tw, bias=tb), (txg, tw, tb), tdy))


def _vector_cases(torch, op, shapes, rng):
    for shape in shapes:
        yield from _vector_case(torch, op, shape, rng)


def _vector_case(torch, op, shape, rng):
    F = torch.nn.functional
    a = _bench.make_inputs(_bench._vector_inputs, shape, np.float32, int(rng.integers(1 << 31)))
    v = a["x"]
    if op == "weight_norm":
        tv, tdw = _t(torch, np.array(v), True), _t(torch, np.array(a["dy"]))
        g = np.array(a["g"]).reshape((-1,) + (1,) * (len(shape) - 1))
        tg = torch.from_numpy(g).requires_grad_(True)
        yield Case(op, "fwd", None, shape, v, _fastnorm(op, "fwd", a),
                   lambda tv=tv, tg=tg: _nograd(torch, lambda: torch._weight_norm(tv, tg, 0)))
        yield Case(op, "fwd+bwd", None, shape, v, _fastnorm(op, "fwd+bwd", a),
                   lambda tv=tv, tg=tg, tdw=tdw: torch.autograd.grad(
                       torch._weight_norm(tv, tg, 0), (tv, tg), tdw))
    else:
        tx, tdy = _t(torch, np.array(v), True), _t(torch, np.array(a["dy"]))
        yield Case(op, "fwd", None, shape, v, _fastnorm(op, "fwd", a),
                   lambda tx=tx: _nograd(torch, lambda: F.normalize(tx, dim=-1)))
        yield Case(op, "fwd+bwd", None, shape, v, _fastnorm(op, "fwd+bwd", a),
                   lambda tx=tx, tdy=tdy: torch.autograd.grad(
                       F.normalize(tx, dim=-1), (tx,), tdy))


def build_cases(torch, ops, quick):
    rng = np.random.default_rng(0)
    rows = QUICK["rows"] if quick else tuple(
        (m, k) for k in HIDDEN for m in TOKENS if m * k <= MAX_ELEMS)
    chans = QUICK["channels"] if quick else tuple(
        s for s in CHANNEL_SHAPES if math.prod(s) <= MAX_ELEMS)
    weights = QUICK["weights"] if quick else WEIGHT_SHAPES
    l2 = QUICK["l2"] if quick else tuple(s for s in L2_SHAPES if math.prod(s) <= MAX_ELEMS)
    makers = {
        "layer_norm": lambda: _rows_cases(torch, "layer_norm", rows, rng),
        "rms_norm": lambda: _rows_cases(torch, "rms_norm", rows, rng),
        "batch_norm": lambda: _channel_cases(torch, "batch_norm", chans, rng),
        "group_norm": lambda: _channel_cases(torch, "group_norm", chans, rng),
        "instance_norm": lambda: _channel_cases(torch, "instance_norm", chans, rng),
        "weight_norm": lambda: _vector_cases(torch, "weight_norm", weights, rng),
        "l2_normalize": lambda: _vector_cases(torch, "l2_normalize", l2, rng),
    }
    bad = [o for o in ops if o not in makers]
    if bad:
        raise SystemExit(f"unknown op(s) {', '.join(bad)}; expected some of {', '.join(makers)}")
    return [case for op in ops for case in makers[op]()]


def _first(r):
    return r[0] if isinstance(r, (tuple, list)) else r


def check(torch, case):
    """fastnorm's first output against PyTorch's, float32 tolerances."""
    a = np.asarray(_first(case.run_fn()))
    t = _first(case.run_torch())
    if case.layout == "NHWC" and t.dim() == 4:
        t = t.permute(0, 2, 3, 1)
    t = t.detach().numpy()
    return a.shape == t.shape and np.allclose(a, t, rtol=2e-3, atol=2e-3)


def _time(f, reps):
    t0 = time.perf_counter()
    for _ in range(reps):
        f()
    return (time.perf_counter() - t0) / reps


def measure(case, rounds, target=2e-3):
    """Median seconds per call of fastnorm, PyTorch and np.copyto, interleaved by round."""
    dst = np.empty_like(case.x)
    impls = (case.run_fn, case.run_torch, lambda: np.copyto(dst, case.x))
    reps = []
    for f in impls:
        f()
        t = _time(f, 1)
        reps.append(max(1, min(10000, int(target / max(t, 1e-7)))))
    times = [[], [], []]
    for _ in range(rounds):
        for i, f in enumerate(impls):
            times[i].append(_time(f, reps[i]))
    return [statistics.median(t) for t in times]


def run(ops, threads, rounds, quick):
    import torch

    cases = build_cases(torch, ops, quick)
    records = []
    bad = [c for c in cases if not check(torch, c)]
    for c in bad:
        print(f"MISMATCH against PyTorch: {c.label} {c.name}", file=sys.stderr)
    t_start = time.perf_counter()
    for nt in threads:
        fn.set_num_threads(nt)
        torch.set_num_threads(nt)
        for i, c in enumerate(cases):
            tf, tt, tc = measure(c, rounds)
            records.append({
                "op": c.op, "pass": c.kind, "layout": c.layout, "shape": list(c.shape),
                "extra": c.extra, "threads": nt, "fastnorm_us": tf * 1e6,
                "torch_us": tt * 1e6, "copy_us": tc * 1e6, "speedup": tt / tf,
                "copy_fraction": COPIES[c.kind] * tc / tf,
                "matches_torch": c not in bad,
            })
            if i % 25 == 0:
                print(f"  {nt} thread(s): {i + 1}/{len(cases)} cases, "
                      f"{time.perf_counter() - t_start:.0f} s", file=sys.stderr, flush=True)
    return records


def geomean(xs):
    xs = list(xs)
    return math.exp(sum(math.log(x) for x in xs) / len(xs)) if xs else float("nan")


def report(records):
    lines = [f"{'case':44s} {'thr':>3s} {'fastnorm us':>12s} {'torch us':>10s} "
             f"{'speedup':>8s} {'copy':>6s}"]
    for r in records:
        label = " ".join(p for p in (r["op"], r["pass"], r["layout"]) if p)
        name = "x".join(map(str, r["shape"])) + (f" {r['extra']}" if r["extra"] else "")
        mark = "*" if r["speedup"] < 1.0 else " "
        lines.append(f"{label + ' ' + name:44s} {r['threads']:3d} {r['fastnorm_us']:12.1f} "
                     f"{r['torch_us']:10.1f} {r['speedup']:7.2f}x{mark} "
                     f"{100 * r['copy_fraction']:5.0f}%")
    lines.append("")
    lines.append("geometric mean speedup vs PyTorch (cases below 1.0x / cases):")
    for nt in sorted({r["threads"] for r in records}):
        sel = [r for r in records if r["threads"] == nt]
        slow = sum(r["speedup"] < 1.0 for r in sel)
        lines.append(f"  {nt} thread(s): {geomean(r['speedup'] for r in sel):.2f}x "
                     f"({slow} / {len(sel)} below 1.0x)")
        groups = {}
        for r in sel:
            groups.setdefault((r["op"], r["pass"]), []).append(r["speedup"])
        for (op, kind), sp in groups.items():
            lines.append(f"    {op:14s} {kind:8s} {geomean(sp):6.2f}x  min {min(sp):.2f}x")
    worst = sorted(records, key=lambda r: r["speedup"])[:10]
    lines.append("slowest cases:")
    for r in worst:
        lines.append(f"  {r['speedup']:.2f}x  {r['op']} {r['pass']} {r['layout'] or ''} "
                     f"{'x'.join(map(str, r['shape']))} {r['extra']} ({r['threads']} thr)")
    return "\n".join(lines)


def heatmap(records, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    threads = sorted({r["threads"] for r in records})
    keys = list(dict.fromkeys(
        " ".join(p for p in (r["op"], r["pass"], r["layout"]) if p) for r in records))
    fig, axes = plt.subplots(len(threads), 2, figsize=(18, 0.32 * len(keys) * len(threads) + 2),
                             squeeze=False)
    for ti, nt in enumerate(threads):
        rows = {k: [] for k in keys}
        for r in records:
            if r["threads"] == nt:
                rows[" ".join(p for p in (r["op"], r["pass"], r["layout"]) if p)].append(r)
        width = max(len(v) for v in rows.values())
        for pi, (field, title, cmap, lim) in enumerate((
                ("speedup", "speedup vs PyTorch (log scale; x: below 1.0x)", "RdBu", 3.0),
                ("copy_fraction", "fraction of copy speed", "viridis", None))):
            grid = np.full((len(keys), width), np.nan)
            for i, k in enumerate(keys):
                for j, r in enumerate(rows[k]):
                    grid[i, j] = math.log2(r[field]) if field == "speedup" else r[field]
            ax = axes[ti][pi]
            if lim:
                im = ax.imshow(grid, aspect="auto", cmap=cmap, vmin=-lim, vmax=lim,
                               interpolation="nearest")
                cb = fig.colorbar(im, ax=ax, fraction=0.03)
                ticks = [-3, -2, -1, 0, 1, 2, 3]
                cb.set_ticks(ticks)
                cb.set_ticklabels([f"{2.0 ** t:g}x" for t in ticks])
                for i, k in enumerate(keys):
                    for j, r in enumerate(rows[k]):
                        if r["speedup"] < 1.0:
                            ax.text(j, i, "x", ha="center", va="center", fontsize=7)
            else:
                im = ax.imshow(grid, aspect="auto", cmap=cmap, vmin=0, vmax=1.2,
                               interpolation="nearest")
                fig.colorbar(im, ax=ax, fraction=0.03)
            ax.set_yticks(range(len(keys)))
            ax.set_yticklabels(keys, fontsize=7)
            ax.set_xlabel("case (shapes in table order)", fontsize=8)
            ax.set_title(f"{title}, {nt} thread(s)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--threads", default="1,2")
    p.add_argument("--ops", default="layer_norm,rms_norm,batch_norm,group_norm,instance_norm,"
                                    "weight_norm,l2_normalize")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--quick", action="store_true", help="a few shapes per family")
    p.add_argument("--json", default=None)
    p.add_argument("--png", default=None)
    a = p.parse_args(argv)
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H%M")
    outdir = Path(__file__).parent / "results"
    outdir.mkdir(exist_ok=True)
    jpath = Path(a.json or outdir / f"grid-{stamp}.json")
    ppath = Path(a.png or outdir / f"grid-{stamp}.png")
    threads = [int(t) for t in a.threads.split(",")]
    records = run(a.ops.split(","), threads, a.rounds, a.quick)
    print(report(records))
    import torch

    info = {"date": stamp, "machine": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(), "fastnorm": fn.__version__, "torch": torch.__version__,
            "numpy": np.__version__, "rounds": a.rounds}
    jpath.write_text(json.dumps({"info": info, "records": records}, indent=1))
    heatmap(records, ppath)
    print(f"wrote {jpath} and {ppath}")


if __name__ == "__main__":
    main()
