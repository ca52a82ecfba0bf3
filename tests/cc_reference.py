"""A 50-digit mpmath reference for the CC normaliser (tests only).

exp[x_1..x_n] = e^c Σ_m h_m(x − c) / (m + n − 1)!, c the mid-range, with h_m the
complete homogeneous symmetric polynomials (h_m(S ∪ {d}) = h_m(S) + d·h_{m−1}(S ∪ {d})).
Every term is a polynomial in the nodes, so ties need no special case. The
terms alternate for nodes below c, so the working precision is 50 digits plus
the 2R / ln 10 digits they can cancel (R the half-spread), and the series stops
once R^m e^R / m! < 10^-dps (terms are ≤ R^m / (m! (n−1)!), the sum ≥ e^-R / (n−1)!).
Rows wider than 60 with distinct nodes use the closed form instead, at a precision
raised until its cancellation leaves 50 digits (the series would need ~e·R terms).
μ_k = E_CC[x_k] = exp[x, x_k] / exp[x] (node k repeated), ∇ log C = softmax − μ.
"""

from __future__ import annotations

import mpmath


def _dd_exp_series(nodes: list, dps: int):
    c = (max(nodes) + min(nodes)) / 2
    x = [v - c for v in nodes]
    radius = max(abs(v) for v in x)
    n = len(x)
    limit = mpmath.mpf(10) ** (-dps) * mpmath.exp(-radius)
    terms = 1
    while terms <= radius or radius**terms / mpmath.factorial(terms) >= limit:
        terms += 1
    h = [mpmath.mpf(1)] + [mpmath.mpf(0)] * terms
    for d in x:
        for j in range(1, terms + 1):
            h[j] = h[j] + d * h[j - 1]
    return mpmath.exp(c) * mpmath.fsum(h[j] / mpmath.factorial(j + n - 1) for j in range(terms + 1))


def _dd_exp_closed(nodes: list, dps: int):
    """Σ_k e^{x_k} / Π_{i≠k}(x_k − x_i) for distinct nodes, with precision raised until
    the cancellation ratio Σ|t_k| / |Σ t_k| leaves 50 correct digits."""
    extra = 10
    while True:
        with mpmath.workdps(dps + extra):
            t = [mpmath.exp(xk) / mpmath.fprod(xk - xi for i, xi in enumerate(nodes) if i != k)
                 for k, xk in enumerate(nodes)]
            total = mpmath.fsum(t)
            lost = mpmath.log10(mpmath.fsum(abs(v) for v in t) / abs(total)) if total else mpmath.inf
            if lost < extra - 5:
                return +total
        extra = int(min(lost, 10_000)) + 20


def _dd_exp(nodes: list, dps: int):
    """exp[nodes]: the closed form for wide rows of distinct nodes (fast there), else the series."""
    if max(nodes) - min(nodes) > 60 and len(set(nodes)) == len(nodes):
        return _dd_exp_closed(nodes, dps)
    return _dd_exp_series(nodes, dps)


def _dd_mu(nodes: list, k: int, dps: int):
    """exp[x, x_k] = ∂ exp[x] / ∂x_k for distinct nodes, from the closed form's derivative:
    t_k (1 − Σ_{i≠k} 1/(x_k − x_i)) + Σ_{j≠k} t_j / (x_j − x_k), at the closed form's precision + 40."""
    extra = 40
    while True:
        with mpmath.workdps(dps + extra):
            x = nodes
            t = [mpmath.exp(xj) / mpmath.fprod(xj - xi for i, xi in enumerate(x) if i != j) for j, xj in enumerate(x)]
            parts = [t[k] * (1 - mpmath.fsum(1 / (x[k] - xi) for i, xi in enumerate(x) if i != k))]
            parts += [t[j] / (x[j] - x[k]) for j in range(len(x)) if j != k]
            total = mpmath.fsum(parts)
            lost = mpmath.log10(mpmath.fsum(abs(v) for v in parts) / abs(total))
            if lost < extra - 5:
                return +total
        extra = int(min(lost, 10_000)) + 40


def log_normaliser(z: list[float]) -> tuple[float, list[float]]:
    """(log C, ∂ log C / ∂z) for one row of logits, as floats correct to float64 rounding."""
    spread = max(z) - min(z)
    dps = 50 + int(spread / 2.302585) + 5
    with mpmath.workdps(dps):
        nodes = [mpmath.mpf(float(v)) for v in z]
        lse = mpmath.log(mpmath.fsum(mpmath.exp(v) for v in nodes))
        dd = _dd_exp(nodes, dps)
        mu = [_dd_exp_series(nodes + [v], dps) / dd if spread <= 60 else _dd_mu(nodes, k, dps) / dd
              for k, v in enumerate(nodes)]
        softmax = [mpmath.exp(v - lse) for v in nodes]
        return float(lse - mpmath.log(dd)), [float(s - u) for s, u in zip(softmax, mu)]
