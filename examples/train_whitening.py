"""Train small networks in pure NumPy with the two normalizations that sit beside batch norm:
weight norm with mean-only batch norm, and iterative whitening (IterNorm).

The inputs are strongly correlated Gaussian features (a random mixing of independent ones);
a fixed random "teacher" network labels them with one of four classes. Three students of the
same shape learn the labels with softmax cross-entropy and plain SGD:

* ``wn-meanbn``: weight-normalized Linear layers, each followed by mean-only batch norm
  (``BatchNorm(center_only=True)``: the batch mean is subtracted, nothing is divided), the
  scales set by weight norm's data-dependent initialization on a first batch (Salimans &
  Kingma, 2016);
* ``iternorm``: Linear layers followed by IterNorm (groups of 16 channels whitened with 5
  Newton iterations), which also decorrelates the features the layer sees;
* ``batchnorm``: the same with ordinary batch norm, for comparison.

The training loss of each is printed every few steps; at the end each is evaluated with
``training=False`` (running statistics) on fresh data.

    python examples/train_whitening.py [--steps 300] [--batch 128] [--lr 0.1]
"""

from __future__ import annotations

import argparse

import numpy as np

from fastnorm import nn

D_IN, HIDDEN, CLASSES = 32, 64, 4
MODELS = ("wn-meanbn", "iternorm", "batchnorm")


def make_task(rng):
    """(sample(n) -> x, label(x) -> classes): correlated inputs and a teacher's labels."""
    mix = rng.standard_normal((D_IN, D_IN)) * np.logspace(0, -2, D_IN)  # condition ~100
    w1 = rng.standard_normal((D_IN, 32)) / np.sqrt(D_IN)
    w2 = rng.standard_normal((32, CLASSES))
    w1 = np.linalg.solve(mix, w1)  # the teacher looks at the independent factors

    def sample(n):
        return (rng.standard_normal((n, D_IN)) @ mix + 3.0).astype(np.float32)

    def label(x):
        return np.argmax(np.tanh((x - 3.0) @ w1) @ w2, axis=1)

    return sample, label


def make_student(name, rng):
    if name == "wn-meanbn":
        return nn.Sequential(
            nn.WeightNorm(nn.Linear(D_IN, HIDDEN, rng=rng)),
            nn.BatchNorm(HIDDEN, center_only=True),
            nn.ReLU(),
            nn.WeightNorm(nn.Linear(HIDDEN, HIDDEN, rng=rng)),
            nn.BatchNorm(HIDDEN, center_only=True),
            nn.ReLU(),
            nn.WeightNorm(nn.Linear(HIDDEN, CLASSES, rng=rng)),
        )
    norm = {"iternorm": lambda: nn.IterNorm(HIDDEN, group_size=16),
            "batchnorm": lambda: nn.BatchNorm(HIDDEN)}[name]
    return nn.Sequential(
        nn.Linear(D_IN, HIDDEN, bias=False, rng=rng),  # the norm's bias replaces it
        norm(),
        nn.ReLU(),
        nn.Linear(HIDDEN, HIDDEN, bias=False, rng=rng),
        norm(),
        nn.ReLU(),
        nn.Linear(HIDDEN, CLASSES, rng=rng),
    )


def init_from_data(model, x):
    """Weight norm's data-dependent initialization, layer after layer: each WeightNorm is
    initialized on the activations that reach it from the batch x."""
    for layer in model.layers:
        if isinstance(layer, nn.WeightNorm):
            layer.init_from_data(x)
        x = layer.forward(x, training=True)


def cross_entropy(logits, labels):
    """Mean softmax cross-entropy and its gradient with respect to the logits."""
    z = logits - logits.max(axis=1, keepdims=True)
    log_p = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    n = len(labels)
    loss = -log_p[np.arange(n), labels].mean()
    grad = np.exp(log_p)
    grad[np.arange(n), labels] -= 1.0
    return float(loss), (grad / n).astype(logits.dtype)


def train(name, steps=300, batch=128, lr=0.1, seed=0, log_every=50, verbose=True):
    """Train one student; returns its per-step training losses and held-out accuracy."""
    rng = np.random.default_rng(seed)
    sample, label = make_task(rng)
    model = make_student(name, rng)
    if name == "wn-meanbn":
        init_from_data(model, sample(batch))
    losses = []
    for step in range(steps):
        x = sample(batch)
        logits = model.forward(x, training=True)
        loss, dlogits = cross_entropy(logits, label(x))
        model.backward(dlogits)
        for _, p, g in model.params():
            p -= lr * g
        losses.append(loss)
        if verbose and (step % log_every == 0 or step == steps - 1):
            print(f"{name:10s} step {step:4d}  loss {loss:.4f}  "
                  f"(mean of last {log_every}: {np.mean(losses[-log_every:]):.4f})")
    x_test = sample(2000)
    accuracy = float(np.mean(np.argmax(model.forward(x_test, training=False), axis=1)
                             == label(x_test)))
    if verbose:
        print(f"{name:10s} held-out accuracy (eval mode): {accuracy:.3f}")
    return losses, accuracy


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--models", default=",".join(MODELS))
    args = parser.parse_args(argv)
    for name in args.models.split(","):
        train(name, args.steps, args.batch, args.lr, args.seed)


if __name__ == "__main__":
    main()
