"""Compiled kernels for the guarded normaliser's series path (numba, float64).

``log exp[x_1..x_k]`` for one row is the log of the (1, k) entry of exp(A),
A = diag(y) + N with y = x − min(x) ≥ 0 and N the superdiagonal shift, summed
as a Taylor series in Horner form on the first row only:

    v ← e_1 + v·A / j,  j = T, T−1, ..., 1,   T = (k − 1) + P,

where P is the smallest integer with spread^P / P! < 1e-17 (the tail bound
relative to the leading term 1/(k − 1)!, which is ≤ the sum). Every quantity
is ≥ 0, so there is no cancellation: the relative error is a few ulps per term.

The backward pass is the exact adjoint of the same recursion (reverse-mode by
hand, every v stored): the gradient of log exp[x] is the CC mean μ, which lies
in the simplex. These loops cost O(T·k) per row; written with tensor
operations they cost T kernel launches per batch, which is what made the
pure-PyTorch series 5-10x slower than the naive closed form.
"""

from __future__ import annotations

import math

import numba
import numpy as np

LOG_TAIL = math.log(1e-17)


@numba.njit(cache=True, inline="always")
def _terms(spread: float, k: int) -> int:
    p = 1
    log_s = math.log(max(spread, 1e-300))
    while p * log_s - math.lgamma(p + 1.0) > LOG_TAIL:
        p += 1
    return k - 1 + p


@numba.njit(cache=True)
def _valid_nodes(x: np.ndarray, mask: np.ndarray, r: int, nodes: np.ndarray, index: np.ndarray) -> tuple[int, float]:
    """Row r's valid logits shifted to min 0 into ``nodes``; returns (k, min)."""
    k = 0
    low = np.inf
    for i in range(x.shape[1]):
        if mask[r, i]:
            index[k] = i
            nodes[k] = x[r, i]
            low = min(low, x[r, i])
            k += 1
    for i in range(k):
        nodes[i] -= low
    return k, low


@numba.njit(cache=True)
def series_forward(x: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """log exp[x_valid] per row. x: float64 [N, W]; mask: bool [N, W], ≥ 2 valid per row."""
    n, width = x.shape
    out = np.empty(n)
    v, y = np.empty(width), np.empty(width)
    index = np.empty(width, dtype=np.int64)
    for r in range(n):
        k, low = _valid_nodes(x, mask, r, y, index)
        spread = 0.0
        for i in range(k):
            spread = max(spread, y[i])
        for i in range(k):
            v[i] = 0.0
        v[0] = 1.0
        for j in range(_terms(spread, k), 0, -1):
            inv = 1.0 / j
            for i in range(k - 1, 0, -1):  # high to low: v[i-1] is still the old value
                v[i] = (v[i - 1] + v[i] * y[i]) * inv
            v[0] = 1.0 + v[0] * y[0] * inv
        out[r] = math.log(v[k - 1]) + low
    return out


@numba.njit(cache=True)
def series_backward(x: np.ndarray, mask: np.ndarray, grad_out: np.ndarray) -> np.ndarray:
    """grad_out[r] · ∂ log exp[x_valid] / ∂x per row: the CC mean μ times grad_out, 0 at invalid actions.

    The shift by min(x) drops out: exp[x + c] = e^c exp[x] makes Σ_i ∂/∂y_i log exp[y] = 1,
    which cancels the derivative of the + min(x) term exactly.
    """
    n, width = x.shape
    grad = np.zeros((n, width))
    y = np.empty(width)
    index = np.empty(width, dtype=np.int64)
    adj = np.empty(width)  # adjoint of v after the step with divisor j
    vs = np.zeros((1, width))
    for r in range(n):
        k, low = _valid_nodes(x, mask, r, y, index)
        spread = 0.0
        for i in range(k):
            spread = max(spread, y[i])
        terms = _terms(spread, k)
        if vs.shape[0] < terms + 1:
            vs = np.zeros((2 * terms + 1, width))  # vs[j] = v before the step with divisor j
        for i in range(k):
            vs[terms, i] = 0.0
        vs[terms, 0] = 1.0
        for j in range(terms, 0, -1):
            inv = 1.0 / j
            for i in range(k - 1, 0, -1):
                vs[j - 1, i] = (vs[j, i - 1] + vs[j, i] * y[i]) * inv
            vs[j - 1, 0] = 1.0 + vs[j, 0] * y[0] * inv
        for i in range(k):
            adj[i] = 0.0
        adj[k - 1] = grad_out[r] / vs[0, k - 1]
        for j in range(1, terms + 1):
            inv = 1.0 / j
            for i in range(k):
                grad[r, index[i]] += adj[i] * vs[j, i] * inv
            for i in range(k - 1):
                adj[i] = (adj[i] * y[i] + adj[i + 1]) * inv
            adj[k - 1] = adj[k - 1] * y[k - 1] * inv
    return grad
