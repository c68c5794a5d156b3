"""Data-parallel training of a small NumPy network with synchronized batch norm.

    mpirun -n 2 python examples/train_sync_bn.py

(as root, OpenMPI also wants --allow-run-as-root; on a machine with fewer cores than
ranks, --oversubscribe). The network is Linear -> BatchNorm -> ReLU -> Linear, trained
with SGD on a softmax cross-entropy loss over a synthetic 3-class problem. Each rank
holds its share of every global batch (shares of unequal size when the batch does not
divide evenly); batch norm uses the statistics of the whole global batch
(fastnorm.distributed.sync_batch_norm), and the parameter gradients are summed over the
ranks with one allreduce per step, as any data-parallel trainer does.

Rank 0 then trains the same network in one process on the full batches, and prints how
far the two runs' parameters and losses are apart: float64 rounding, about 1e-15.
"""

import sys

import numpy as np

import fastnorm
from fastnorm.distributed import sync_batch_norm, sync_batch_norm_backward

D_IN, HIDDEN, CLASSES = 10, 32, 3
BATCH, STEPS, LR = 30, 60, 0.2


class SingleProcess:
    """A communicator of one rank (the protocol of fastnorm.distributed)."""

    rank, size = 0, 1

    def allgather(self, obj):
        return [obj]

    def allreduce(self, obj):
        return obj


def make_data(n, seed=0):
    rng = np.random.default_rng(seed)
    centers = 2.0 * rng.standard_normal((CLASSES, D_IN))
    labels = rng.integers(0, CLASSES, n)
    x = centers[labels] + rng.standard_normal((n, D_IN)) + 5.0  # offset: BN has work to do
    return x, labels


def init_params(seed=1):
    rng = np.random.default_rng(seed)
    return {
        "w1": rng.standard_normal((D_IN, HIDDEN)) / np.sqrt(D_IN),
        "b1": np.zeros(HIDDEN),
        "gamma": np.ones(HIDDEN),
        "beta": np.zeros(HIDDEN),
        "w2": rng.standard_normal((HIDDEN, CLASSES)) / np.sqrt(HIDDEN),
        "b2": np.zeros(CLASSES),
    }


def step(p, running, x, labels, n_global, comm):
    """One SGD step on this rank's share (x, labels) of a global batch of n_global.
    Returns the global mean loss."""
    # forward
    h = x @ p["w1"] + p["b1"]
    z, mean, rstd = sync_batch_norm(
        h, p["gamma"], p["beta"], *running, comm=comm, return_stats=True
    )
    a = np.maximum(z, 0.0)
    logits = a @ p["w2"] + p["b2"]
    logits -= logits.max(axis=1, keepdims=True)
    prob = np.exp(logits)
    prob /= prob.sum(axis=1, keepdims=True)
    local_loss = -np.log(prob[np.arange(len(labels)), labels]).sum()
    # backward (the loss is the mean over the global batch)
    dlogits = prob
    dlogits[np.arange(len(labels)), labels] -= 1.0
    dlogits /= n_global
    g = {"w2": a.T @ dlogits, "b2": dlogits.sum(axis=0)}
    dz = (dlogits @ p["w2"].T) * (z > 0)
    dh, g["gamma"], g["beta"] = sync_batch_norm_backward(dz, h, mean, rstd, p["gamma"], comm=comm)
    g["w1"], g["b1"] = x.T @ dh, dh.sum(axis=0)
    # the data-parallel gradient all-reduce: one message with every gradient and the loss
    names = sorted(g)
    flat = np.concatenate([g[k].ravel() for k in names] + [[local_loss]])
    flat = comm.allreduce(flat)
    offset = 0
    for k in names:
        size = p[k].size
        p[k] -= LR * flat[offset : offset + size].reshape(p[k].shape)
        offset += size
    return flat[-1] / n_global


def train(comm, x_all, y_all):
    p = init_params()
    running = (np.zeros(HIDDEN), np.ones(HIDDEN))
    losses = []
    for s in range(STEPS):
        lo = (s * BATCH) % len(x_all)
        xb, yb = x_all[lo : lo + BATCH], y_all[lo : lo + BATCH]
        # this rank's share: contiguous chunks, unequal when BATCH % size != 0
        share = np.array_split(np.arange(len(xb)), comm.size)[comm.rank]
        losses.append(step(p, running, xb[share], yb[share], len(xb), comm))
    return p, running, np.array(losses)


def accuracy(p, running, x, y):
    h = x @ p["w1"] + p["b1"]
    z = fastnorm.batch_norm(h, p["gamma"], p["beta"], *running, training=False)
    return float(((np.maximum(z, 0.0) @ p["w2"] + p["b2"]).argmax(axis=1) == y).mean())


def main():
    try:
        from mpi4py import MPI

        comm = MPI.COMM_WORLD
    except ImportError:
        print("mpi4py is not installed: running the single-process version only")
        comm = SingleProcess()
    x_all, y_all = make_data(BATCH * 10)
    p, running, losses = train(comm, x_all, y_all)
    if comm.rank != 0:
        return 0
    p1, running1, losses1 = train(SingleProcess(), x_all, y_all)
    print(f"{comm.size} ranks, global batch {BATCH}, {STEPS} SGD steps")
    print(
        f"loss: {losses[0]:.4f} -> {losses[-1]:.4f}; "
        f"accuracy {accuracy(p, running, x_all, y_all):.3f}"
    )
    dp = max(float(np.abs(p[k] - p1[k]).max()) for k in p)
    dr = max(float(np.abs(a - b).max()) for a, b in zip(running, running1, strict=True))
    dl = float(np.abs(losses - losses1).max())
    print(
        f"vs one process on the full batches: max |difference| of parameters {dp:.2e}, "
        f"running statistics {dr:.2e}, losses {dl:.2e}"
    )
    ok = max(dp, dr, dl) < 1e-9
    print("match" if ok else "MISMATCH")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
