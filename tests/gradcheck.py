"""Finite-difference gradient checks for the backward passes.

A backward function of ``y = f(x)`` maps an upstream gradient ``dy`` to ``dx``, the gradient of the
scalar ``L(x) = sum(f(x) * dy)``. :func:`numerical_grad` estimates that gradient with central
differences in float64; :func:`check_grad` compares it with an analytic one.

Typical use, one input at a time, holding the others fixed in a closure::

    dx_num = numerical_grad(lambda x_: ref.layer_norm(x_, w, b), x, dy)
    dw_num = numerical_grad(lambda w_: ref.layer_norm(x, w_, b), w, dy)

Keep the arrays small: each element costs two calls of ``f``.
"""

from __future__ import annotations

import numpy as np

__all__ = ["check_grad", "numerical_grad"]


def numerical_grad(f, x, dy, h=1e-6):
    """Central finite-difference gradient of ``sum(f(x) * dy)`` with respect to ``x``.

    Parameters
    ----------
    f : callable
        Takes an array shaped like ``x`` and returns an array shaped like ``dy``. When it
        returns a tuple (a forward with ``return_stats=True``), its first element is used.
    x : array_like
        Point of evaluation; converted to float64 and never modified.
    dy : array_like
        Weights of the outputs (the upstream gradient).
    h : float, default 1e-6
        Step; the error is of order ``h**2`` plus rounding of order ``1e-16 / h``.

    Returns
    -------
    ndarray
        float64, shape of ``x``.
    """
    x = np.array(x, dtype=np.float64)
    dy = np.asarray(dy, dtype=np.float64)
    grad = np.zeros_like(x)

    def loss(a):
        y = f(a)
        if isinstance(y, tuple):
            y = y[0]
        return float(np.sum(np.asarray(y, dtype=np.float64) * dy))

    for idx in np.ndindex(x.shape):
        orig = x[idx]
        x[idx] = orig + h
        up = loss(x.copy())
        x[idx] = orig - h
        down = loss(x.copy())
        x[idx] = orig
        grad[idx] = (up - down) / (2.0 * h)
    return grad


def check_grad(f, x, dy, analytic, *, h=1e-6, rtol=1e-5, atol=1e-6, err_msg=""):
    """Assert that ``analytic`` matches :func:`numerical_grad` of ``f`` at ``x``.

    Parameters
    ----------
    f, x, dy, h
        As for :func:`numerical_grad`.
    analytic : array_like
        The gradient to check, shape of ``x``.
    rtol, atol : float
        Tolerances of :func:`numpy.testing.assert_allclose`.
    err_msg : str
        Added to the failure message.

    Returns
    -------
    ndarray
        The numerical gradient.
    """
    num = numerical_grad(f, x, dy, h=h)
    analytic = np.asarray(analytic, dtype=np.float64)
    assert analytic.shape == num.shape, f"shape {analytic.shape} != {num.shape}. {err_msg}"
    np.testing.assert_allclose(analytic, num, rtol=rtol, atol=atol, err_msg=err_msg)
    return num
