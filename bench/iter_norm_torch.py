"""IterNorm (iterative whitening, Huang et al. 2019) as a PyTorch composite: the baseline the
IterNorm benchmarks compare with, and the autograd check of ``fastnorm.reference.iter_norm``.

``torch_iter_norm`` is the training-mode math of :func:`fastnorm.reference.iter_norm` in torch
operations (channels on axis 1): the channels as a (C, m) matrix, split into groups of
``group_size`` consecutive channels, then per group ``Sigma = Xc Xc^T / m + eps I``,
``S = Sigma / tr(Sigma)``, ``P_k = 1.5 P_{k-1} - 0.5 P_{k-1}^3 S`` from ``P_0 = I``,
``W = P_T / sqrt(tr(Sigma))``, ``y = W Xc * weight + bias``; autograd gives the backward.

    python bench/iter_norm_torch.py

times forward (under ``torch.no_grad``) and forward+backward on a (32, 64, 56, 56) float32
NCHW input, group_size 16, at 1 and 2 torch threads: the median of 5 repeats, in ms.
"""

from __future__ import annotations

import statistics
import time

import torch


def _whiten(xc, eps, iterations):
    """W @ Xc for a (k, d, m) stack of centred groups."""
    d, m = xc.shape[-2:]
    eye = torch.eye(d, dtype=xc.dtype, device=xc.device)
    sigma = torch.bmm(xc, xc.transpose(1, 2)) / m + eps * eye
    tr = sigma.diagonal(dim1=-2, dim2=-1).sum(-1)[:, None, None]
    s = sigma / tr
    p = eye.expand_as(sigma)
    for _ in range(iterations):
        p = 1.5 * p - 0.5 * (p @ p @ p @ s)
    return torch.bmm(p / tr.sqrt(), xc)


def torch_iter_norm(x, weight, bias, group_size=16, iterations=5, eps=1e-5):
    """Training-mode IterNorm of an (N, C, ...) tensor; ``weight``, ``bias``: (C,) or None.

    When ``group_size`` does not divide C the last group has the remaining channels."""
    c = x.shape[1]
    xt = x.transpose(0, 1)
    xm = xt.reshape(c, -1)
    xc = xm - xm.mean(dim=1, keepdim=True)
    full, rem = divmod(c, group_size)
    parts = []
    if full:
        block = xc[: full * group_size].reshape(full, group_size, -1)
        parts.append(_whiten(block, eps, iterations).reshape(full * group_size, -1))
    if rem:
        block = xc[full * group_size :].reshape(1, rem, -1)
        parts.append(_whiten(block, eps, iterations).reshape(rem, -1))
    yhat = parts[0] if len(parts) == 1 else torch.cat(parts)
    y = yhat.reshape(xt.shape).transpose(0, 1)
    shape = (1, c) + (1,) * (x.ndim - 2)
    if weight is not None:
        y = y * weight.reshape(shape)
    if bias is not None:
        y = y + bias.reshape(shape)
    return y


def _median_ms(fn, repeat=5):
    fn()  # warm-up
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times)


def main():
    torch.manual_seed(0)
    shape, group_size = (32, 64, 56, 56), 16
    x = torch.randn(shape, dtype=torch.float32)
    weight = torch.rand(shape[1]) + 0.5
    bias = torch.randn(shape[1])
    dy = torch.randn(shape)
    xg = x.clone().requires_grad_(True)
    wg = weight.clone().requires_grad_(True)
    bg = bias.clone().requires_grad_(True)

    def forward():
        with torch.no_grad():
            torch_iter_norm(x, weight, bias, group_size)

    def forward_backward():
        xg.grad = wg.grad = bg.grad = None
        torch_iter_norm(xg, wg, bg, group_size).backward(dy)

    print(f"torch {torch.__version__} IterNorm composite, {tuple(shape)} float32 NCHW, "
          f"group_size {group_size}, 5 iterations, median of 5 repeats")  # fmt: skip
    for threads in (1, 2):
        torch.set_num_threads(threads)
        fwd = _median_ms(forward)
        fwd_bwd = _median_ms(forward_backward)
        print(f"threads {threads}: forward {fwd:8.1f} ms   forward+backward {fwd_bwd:8.1f} ms")


if __name__ == "__main__":
    main()
