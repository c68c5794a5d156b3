"""End-to-end speed of whole PyTorch models before and after ``fastnorm.torch.convert``.

Models (float32, CPU):

- ``resnet-bn``: a ResNet-style stack: a stem convolution, then basic blocks
  (conv3x3-BN-ReLU-conv3x3-BN, residual add, ReLU), in NCHW and channels_last;
- ``resnet-gn``: the same stack with GroupNorm(32) in place of BatchNorm;
- ``mobilenet-bn``: depthwise-separable blocks with BatchNorm, NCHW and channels_last;
- ``transformer``: ``torch.nn.TransformerEncoderLayer`` (post-norm and pre-norm,
  ``norm_first=True``), batch first, no dropout;
- ``prenorm-rms`` / ``prenorm-ln``: LLaMA-style pre-norm blocks (causal attention, an MLP)
  whose residual adds go through ``fastnorm.torch.add_norm``: torch's ``s = x + r;
  norm(s)`` before conversion, the fused add + RMS / layer norm after.

Passes: ``infer`` (eval mode under ``torch.inference_mode``) and ``train`` (a training
step: forward, mean-square loss, backward, SGD step). Each case is timed at each thread
count (``torch.set_num_threads`` and ``fastnorm.set_num_threads`` both), the original and
the converted model (a deep copy) alternating, repetition after repetition, so both see the
same machine load; the table shows medians of the wall time and the speedup (original time
over converted), then medians of the process's CPU time (``time.process_time``, all threads)
and their ratio: on a machine shared with other work, the CPU time of a one-thread run does
not count the time spent waiting for a core, and varies less.
Before timing, the converted model's inference output is checked against the original's.

    python bench/torch_models.py [--threads 1,2] [--repeat 15] [--models a,b] [--tiny]
                                 [--default-malloc]

By default glibc's malloc gets fixed thresholds first (see ``_fix_malloc``), which removes
most of the run-to-run variation coming from page faults.

``--tiny`` runs small sizes with few repetitions: a smoke test of the script.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time

import torch
import torch.nn.functional as F
from torch import nn

import fastnorm
import fastnorm.torch as fnt


class BasicBlock(nn.Module):
    def __init__(self, c, norm):
        super().__init__()
        self.conv1 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.n1 = norm(c)
        self.conv2 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.n2 = norm(c)

    def forward(self, x):
        y = F.relu(self.n1(self.conv1(x)))
        return F.relu(x + self.n2(self.conv2(y)))


def resnet(c, blocks, norm):
    return nn.Sequential(nn.Conv2d(3, c, 3, padding=1, bias=False), norm(c), nn.ReLU(),
                         *[BasicBlock(c, norm) for _ in range(blocks)])


def mobilenet(c, blocks, norm):
    """Depthwise-separable blocks (depthwise conv3x3-BN-ReLU, pointwise conv1x1-BN-ReLU):
    little arithmetic per element, so the normalizations weigh more."""
    layers = [nn.Conv2d(3, c, 3, padding=1, bias=False), norm(c), nn.ReLU()]
    for _ in range(blocks):
        layers += [nn.Conv2d(c, c, 3, padding=1, groups=c, bias=False), norm(c), nn.ReLU(),
                   nn.Conv2d(c, c, 1, bias=False), norm(c), nn.ReLU()]
    return nn.Sequential(*layers)


class _Attention(nn.Module):
    def __init__(self, d, heads):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(d, 3 * d, bias=False)
        self.proj = nn.Linear(d, d, bias=False)

    def forward(self, x):
        b, t, d = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.heads, d // self.heads).transpose(1, 3).unbind(2)
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.proj(a.transpose(1, 2).reshape(b, t, d))


class PreNormBlocks(nn.Module):
    """Pre-norm transformer blocks, the residual stream kept apart from the normalized
    input as LLaMA-style implementations do: ``h, r = add_norm(norm, sublayer(h), r)``
    (``norm`` a torch.nn.LayerNorm or RMSNorm; fused once converted)."""

    def __init__(self, d, heads, ff, blocks, norm):
        super().__init__()
        self.attn = nn.ModuleList(_Attention(d, heads) for _ in range(blocks))
        self.mlp = nn.ModuleList(nn.Sequential(nn.Linear(d, ff), nn.SiLU(), nn.Linear(ff, d))
                                 for _ in range(blocks))
        self.n1 = nn.ModuleList(norm(d) for _ in range(blocks))
        self.n2 = nn.ModuleList(norm(d) for _ in range(blocks + 1))

    def forward(self, x):
        h, residual = self.n2[0](x), x
        for attn, mlp, n1, n2 in zip(self.attn, self.mlp, self.n1, self.n2[1:], strict=True):
            h, residual = fnt.add_norm(n1, attn(h), residual)
            h, residual = fnt.add_norm(n2, mlp(h), residual)
        return h


def _cases(tiny):
    """(name, model, input) for every benchmarked model."""
    if tiny:
        n, c, hw, blocks, seq, d, heads, ff = 2, 32, 8, 1, 8, 32, 4, 64
    else:
        n, c, hw, blocks, seq, d, heads, ff = 16, 64, 32, 2, 128, 512, 8, 2048
    img = torch.randn(n, 3, hw, hw)
    out = []
    bn = resnet(c, blocks, nn.BatchNorm2d)
    out.append(("resnet-bn NCHW", bn, img))
    out.append(("resnet-bn channels_last", copy.deepcopy(bn).to(memory_format=torch.channels_last),
                img.contiguous(memory_format=torch.channels_last)))
    out.append(("resnet-gn NCHW", resnet(c, blocks, lambda ch: nn.GroupNorm(32, ch)), img))
    mb = mobilenet(2 * c, blocks, nn.BatchNorm2d)
    out.append(("mobilenet-bn NCHW", mb, img))
    out.append(("mobilenet-bn channels_last",
                copy.deepcopy(mb).to(memory_format=torch.channels_last),
                img.contiguous(memory_format=torch.channels_last)))
    tokens = torch.randn(n, seq, d)
    for norm_first in (False, True):
        layer = nn.TransformerEncoderLayer(d, heads, ff, dropout=0.0, batch_first=True,
                                           norm_first=norm_first)
        name = "transformer " + ("pre-norm" if norm_first else "post-norm")
        out.append((name, layer, tokens))
    out.append(("prenorm-rms", PreNormBlocks(d, heads, ff, blocks, nn.RMSNorm), tokens))
    out.append(("prenorm-ln", PreNormBlocks(d, heads, ff, blocks, nn.LayerNorm), tokens))
    return out


def _fix_malloc():
    """Fixed glibc malloc thresholds (no trimming of the heap, mmap only above 32 MiB).

    With its default, dynamic thresholds glibc returns freed memory to the system or keeps
    it depending on the order of past allocations, so a training step may page-fault on
    ~100 MB of fresh memory or on none, for either model, a difference larger than the one
    measured. (PyTorch's CPU tuning guides suggest jemalloc or tcmalloc for the same reason.)
    Returns whether the thresholds were set."""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3
        ok = libc.mallopt(m_mmap_threshold, 32 << 20) == 1
        return ok and libc.mallopt(m_trim_threshold, 2**31 - 1) == 1
    except (OSError, AttributeError):
        return False


def _set_threads(n):
    torch.set_num_threads(n)
    fastnorm.set_num_threads(n)


def _infer(model, x):
    model.eval()

    def run():
        with torch.inference_mode():
            model(x)
    return run


def _train(model, x):
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)

    def run():
        opt.zero_grad(set_to_none=True)
        loss = model(x).square().mean()
        loss.backward()
        opt.step()
    return run


def _check(orig, conv, x):
    orig.eval()
    conv.eval()
    with torch.no_grad():
        a, b = orig(x), conv(x)
    err = float((a - b).abs().max())
    if not err <= 1e-3 * max(1.0, float(a.abs().max())):
        raise AssertionError(f"converted model differs from the original: max error {err}")


def _time(fn):
    """(wall seconds, CPU seconds of the process) of one call."""
    t, c = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - t, time.process_time() - c


def _median(times, i):
    return statistics.median(t[i] for t in times)


def bench(name, model, x, threads, repeat, warmup):
    orig = model
    conv = fnt.convert(copy.deepcopy(model))
    _check(orig, conv, x)
    rows = []
    for n in threads:
        _set_threads(n)
        for pass_, make in (("infer", _infer), ("train", _train)):
            fa, fb = make(orig, x), make(conv, x)
            for _ in range(warmup):
                fa()
                fb()
            ta, tb = [], []
            for r in range(repeat):
                if r % 2:
                    tb.append(_time(fb))
                    ta.append(_time(fa))
                else:
                    ta.append(_time(fa))
                    tb.append(_time(fb))
            a, b = _median(ta, 0), _median(tb, 0)
            ca, cb = _median(ta, 1), _median(tb, 1)
            rows.append((name, tuple(x.shape), pass_, n, a, b, ca, cb))
            print(f"{name:26} {'x'.join(map(str, x.shape)):14} {pass_:5} {n:7} "
                  f"{a * 1e3:10.2f} {b * 1e3:12.2f} {a / b:8.2f}x "
                  f"{ca * 1e3:10.2f} {cb * 1e3:12.2f} {ca / cb:8.2f}x", flush=True)
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", default="1,2", help="thread counts, comma-separated")
    p.add_argument("--repeat", type=int, default=15, help="timed repetitions per model")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--models", default="", help="substrings of the model names to run")
    p.add_argument("--tiny", action="store_true", help="small sizes, 1 thread, 2 repeats")
    p.add_argument("--default-malloc", action="store_true",
                   help="keep glibc's dynamic malloc thresholds (noisier: page faults)")
    args = p.parse_args(argv)
    fixed = False if args.default_malloc else _fix_malloc()
    threads = [int(t) for t in args.threads.split(",") if t.strip()]
    repeat, warmup = args.repeat, args.warmup
    if args.tiny:
        threads, repeat, warmup = [1], 2, 1
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, fastnorm {fastnorm.__version__}; medians of {repeat}; "
          f"speedup = torch ms / fastnorm ms; glibc malloc thresholds "
          f"{'fixed' if fixed else 'default'}")
    print(f"{'model':26} {'input':14} {'pass':5} {'threads':>7} {'torch ms':>10} "
          f"{'converted ms':>12} {'speedup':>9} {'torch cpu':>10} {'conv. cpu':>12} "
          f"{'cpu ratio':>9}")
    keys = [k for k in args.models.split(",") if k]
    for name, model, x in _cases(args.tiny):
        if keys and not any(k in name for k in keys):
            continue
        bench(name, model, x, threads, repeat, warmup)
    return 0


if __name__ == "__main__":
    sys.exit(main())
