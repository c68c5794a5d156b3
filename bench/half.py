"""float16 / bfloat16 forward passes: fastnorm vs PyTorch (CPU) vs a copy, one thread.

    python bench/half.py [--repeat N]

Times layer_norm, rms_norm and batch_norm (training, NCHW and NHWC) on a few shapes in
float32, float16 and bfloat16 (bfloat16 needs ml_dtypes), fastnorm, torch and np.copyto in
one run, and prints the median times and the ratio torch / fastnorm. A ratio above 1 means fastnorm
is faster. torch is optional: without it only fastnorm and the copy are timed.
"""

import argparse
import statistics
import time

import numpy as np

import fastnorm

try:
    import torch
except ImportError:
    torch = None
try:
    import ml_dtypes
except ImportError:
    ml_dtypes = None


def median_ms(fn, repeat):
    fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times)


def torch_tensor(x):
    """The same values as a torch tensor of the matching dtype (not timed)."""
    if x.dtype.name == "bfloat16":
        return torch.from_numpy(x.astype(np.float32)).to(torch.bfloat16)
    return torch.from_numpy(x)


def cases():
    F = torch.nn.functional if torch else None
    yield ("layer_norm", (4096, 1024),
           lambda x: fastnorm.layer_norm(x),
           lambda t: F.layer_norm(t, t.shape[-1:]))
    yield ("rms_norm", (4096, 1024),
           lambda x: fastnorm.rms_norm(x),
           lambda t: F.rms_norm(t, t.shape[-1:], eps=1e-6))
    yield ("batch_norm NCHW", (32, 64, 56, 56),
           lambda x: fastnorm.batch_norm(x),
           lambda t: F.batch_norm(t, None, None, training=True))
    yield ("batch_norm NHWC", (32, 56, 56, 64),
           lambda x: fastnorm.batch_norm(x, axis=-1),
           lambda t: F.batch_norm(t.permute(0, 3, 1, 2), None, None, training=True))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=15)
    args = parser.parse_args()
    fastnorm.set_num_threads(1)
    if torch is not None:
        torch.set_num_threads(1)
    dtypes = [np.dtype(np.float32), np.dtype(np.float16)]
    if ml_dtypes is not None:
        dtypes.append(np.dtype(ml_dtypes.bfloat16))
    rng = np.random.default_rng(0)
    print(f"{'op':18} {'shape':18} {'dtype':9} {'fastnorm':>9} {'torch':>9} {'ratio':>6} "
          f"{'copy':>7}")
    for name, shape, fast, slow in cases():
        base = rng.standard_normal(shape).astype(np.float32)
        for dt in dtypes:
            x = base.astype(dt)
            t_fast = median_ms(lambda: fast(x), args.repeat)  # noqa: B023
            t_copy = median_ms(lambda: np.copyto(np.empty_like(x), x), args.repeat)  # noqa: B023
            if torch is not None:
                t = torch_tensor(x)
                t_torch = median_ms(lambda: slow(t), args.repeat)  # noqa: B023
                torch_col = f"{t_torch:8.2f}  {t_torch / t_fast:5.2f}x"
            else:
                torch_col = f"{'-':>8}  {'-':>6}"
            print(f"{name:18} {'x'.join(map(str, shape)):18} {dt.name:9} {t_fast:8.2f}  "
                  f"{torch_col} {t_copy:6.2f}  (ms, median of {args.repeat})")


if __name__ == "__main__":
    main()
