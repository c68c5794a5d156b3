"""Train a small network in pure NumPy with fastnorm's layers.

A fixed random "teacher" network labels Gaussian inputs with one of four classes; a student
MLP (Linear -> BatchNorm -> ReLU -> Linear -> LayerNorm -> ReLU -> weight-normalized Linear)
learns them with softmax cross-entropy and plain SGD. The training loss is printed every few
steps and falls; at the end the student is evaluated with ``training=False`` (BatchNorm then
uses its running statistics) on fresh data.

    python examples/train_numpy.py [--steps 400] [--batch 128] [--lr 0.2]
"""

from __future__ import annotations

import argparse

import numpy as np

from fastnorm import nn

D_IN, HIDDEN, CLASSES = 16, 64, 4


def make_teacher(rng):
    """Labels from the arg-max of a fixed random two-layer network."""
    w1 = rng.standard_normal((D_IN, 32)) / np.sqrt(D_IN)
    w2 = rng.standard_normal((32, CLASSES))

    def label(x):
        return np.argmax(np.tanh(x @ w1) @ w2, axis=1)

    return label


def make_student(rng):
    return nn.Sequential(
        nn.Linear(D_IN, HIDDEN, bias=False, rng=rng),  # BatchNorm's bias replaces it
        nn.BatchNorm(HIDDEN),
        nn.ReLU(),
        nn.Linear(HIDDEN, HIDDEN, rng=rng),
        nn.LayerNorm(HIDDEN),
        nn.ReLU(),
        nn.WeightNorm(nn.Linear(HIDDEN, CLASSES, rng=rng)),
    )


def cross_entropy(logits, labels):
    """Mean softmax cross-entropy and its gradient with respect to the logits."""
    z = logits - logits.max(axis=1, keepdims=True)
    log_p = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    n = len(labels)
    loss = -log_p[np.arange(n), labels].mean()
    grad = np.exp(log_p)
    grad[np.arange(n), labels] -= 1.0
    return float(loss), (grad / n).astype(logits.dtype)


def train(steps=400, batch=128, lr=0.2, seed=0, log_every=25, verbose=True):
    """Train the student; returns the list of per-step training losses and the final
    held-out accuracy (in evaluation mode)."""
    rng = np.random.default_rng(seed)
    teacher = make_teacher(rng)
    model = make_student(rng)
    losses = []
    for step in range(steps):
        x = rng.standard_normal((batch, D_IN)).astype(np.float32)
        logits = model.forward(x, training=True)
        loss, dlogits = cross_entropy(logits, teacher(x))
        model.backward(dlogits)
        for _, p, g in model.params():
            p -= lr * g
        losses.append(loss)
        if verbose and (step % log_every == 0 or step == steps - 1):
            window = losses[-log_every:]
            print(f"step {step:4d}  loss {loss:.4f}  (mean of last {len(window)}: "
                  f"{np.mean(window):.4f})")
    x_test = rng.standard_normal((2000, D_IN)).astype(np.float32)
    accuracy = float(np.mean(np.argmax(model.forward(x_test, training=False), axis=1)
                             == teacher(x_test)))
    if verbose:
        print(f"held-out accuracy (eval mode): {accuracy:.3f}  (chance: {1 / CLASSES:.2f})")
    return losses, accuracy


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--lr", type=float, default=0.2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    train(args.steps, args.batch, args.lr, args.seed)


if __name__ == "__main__":
    main()
