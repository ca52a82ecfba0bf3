"""Noel et al.'s eight alternate classification losses, hard-label on the expert's argmax,
computed from log p and log(1 − p) so values and gradients stay accurate as p → 0 or 1.

Five of them are unbounded: M, M-full, ParamM, L and L-full grow like a power of 1/p as the
expert's action becomes unlikely (p_c → 0; for the full variants also as a wrong action
becomes certain, p_i → 1), i.e. like e^(logit spread). The true value then exceeds the
dtype's largest number long before the logits do (noel-m at a gap of ~88 in float32,
~709 in float64). Each of the five is a sum of e^t or e^t − 1 terms with exponents t that
are exact in log space, and :func:`_saturated_sum_exp` takes the row's sum: exact up to a
ceiling e^t₀ = max · e^−24, beyond it a finite, increasing continuation whose gradient is
the exact one scaled by a factor in (0, 1]. So every loss here is finite in value and
gradient on every finite input (Method / Domain / Accuracy in each loss's docstring). The
other three (Parabolic, Circle, Cos) are bounded in [0, 1] and need no ceiling. Logits are
shifted by their valid maximum first, so every log p and log(1 − p) is accurate to
eps × spread whatever the offset of the logits.
"""

from __future__ import annotations

import math

import torch

from amn.losses.library import (
    StudentLoss,
    _register,
    _check_positive,
    _masked_log_p_pair,
    _log_1m_sq,
    _expert_argmax,
    _at,
)

# e^24 ≈ 2.6e10: room between the ceiling and the dtype's largest number for a row's sum of
# terms and a batch mean (the trainer reduces in the logits' dtype).
_HEADROOM = 24.0


def _log_ceiling(dtype: torch.dtype) -> float:
    """t₀ = log(largest finite) − 24: 64.72 in float32 (e^t₀ = 1.28e28), 685.78 in float64
    (6.8e297); half the log range for dtypes too narrow for that (float16: 5.5)."""
    log_max = math.log(torch.finfo(dtype).max)
    return log_max - min(_HEADROOM, 0.5 * log_max)


def _saturated_sum_exp(t: torch.Tensor, keep: torch.Tensor, minus_one: bool = False) -> torch.Tensor:
    """``[B]`` loss ℓ = Σ_i (e^{t_i} − m) over the kept terms (m = 1 with ``minus_one``,
    each term then taken as expm1, else m = 0), saturated as a whole beyond a ceiling.

    t: ``[B, n]`` exact log-space exponents; keep: ``[B, n]`` bool, ≥ 1 per row.
    Method: with T = logsumexp of the kept t (so Σ e^{t_i} = e^T), the result is
    Σ (e^{t_i} − m), summed term by term, while T ≤ t₀ = :func:`_log_ceiling`, and

        e^t₀ · (1 + log1p(T − t₀)) − m·n_kept

    beyond it. This is φ(ℓ) for one increasing function φ that is the identity up to
    ℓ = e^t₀ − m·n_kept and matches value and slope there (C¹), so the gradient is the
    exact gradient times φ'(ℓ) = e^t₀ / ((1 + T − t₀) e^T) ∈ (0, 1]: its direction is
    exact everywhere, its sign entry by entry. Both branches run on clamped inputs, so
    the unused one is finite with a finite derivative and gets an exact zero gradient.
    Domain: every finite t; sup = e^t₀ (1 + log1p(T − t₀)) < e^t₀ (1 + log max + log n)
    ≈ 3.4e-9 × max in float32, 2.7e-8 × max in float64: batch sums of ~10⁶ saturated
    rows stay finite.
    Accuracy: exact to the rounding of the terms for T ≤ t₀; beyond, a documented
    saturation (smaller than the true loss), not the loss.
    """
    t0 = _log_ceiling(t.dtype)
    big = torch.logsumexp(t.masked_fill(~keep, -math.inf), dim=-1)
    clamped = t.clamp(max=t0)  # every kept t_i ≤ T, so this changes nothing where T ≤ t₀
    terms = torch.expm1(clamped) if minus_one else torch.exp(clamped)
    head = torch.where(keep, terms, torch.zeros_like(terms)).sum(-1)
    tail = math.exp(t0) * (1.0 + torch.log1p((big - t0).clamp(min=0.0)))
    if minus_one:
        tail = tail - keep.sum(-1).to(t.dtype)
    return torch.where(big <= t0, head, tail)


class _NoelLoss(StudentLoss):
    """Shared part: p = softmax over valid actions, c = expert's argmax.

    Unlike the authors' notebooks (which return 0 at a zero denominator),
    everything is computed from log p and log(1 − p), both exact at either end,
    so values and gradients stay accurate as p → 0 or 1; no silent guards (the
    unbounded losses' saturation beyond e^t₀ is documented in each docstring).
    """

    proper = False
    hard_label = True

    def _rows(self, logits, target, mask, expert_values):
        c = _expert_argmax(target, mask)
        # Shift invariant: move the largest valid logit to 0 (detached: the gradient is
        # unchanged), so the leave-one-out logsumexps of log(1 − p) are O(spread), not
        # O(|z|), and their rounding error is eps·spread even for offset logits.
        top = logits.detach().masked_fill(~mask, -math.inf).amax(-1, keepdim=True)
        logp, log1mp = _masked_log_p_pair(logits - top, mask)
        return self._noel(logp, log1mp, mask, c), {}

    def _noel(
        self, logp: torch.Tensor, log1mp: torch.Tensor, mask: torch.Tensor, c: torch.Tensor
    ) -> torch.Tensor:
        """logp, log1mp ``[B, A]`` (0 at invalid), c ``[B]`` → loss ``[B]``."""
        raise NotImplementedError


@_register
class NoelM(_NoelLoss):
    """Noel M: ℓ = 1/p_c − 1, the odds (1 − p_c)/p_c.

    Source: Noel et al., "Alternate Loss Functions Can Improve the Performance
    of Artificial Neural Networks" (arXiv 2303.09935).
    Not proper: under c ~ q the minimiser is p ∝ √q.
    Method: ℓ = e^t with t = log(1 − p_c) − log p_c from the exact log-space pair,
    through :func:`_saturated_sum_exp` (one term).
    Domain: finite in value and gradient for every finite input (valid logits with a
    finite spread max − min: |z| < 1.7e38 in float32), float32 and float64. The value is
    exact while ℓ ≤ e^t₀ = 1.28e28 (float32) / 6.8e297 (float64), i.e. p_c ≳ 7.8e-29 /
    1.5e-298: a gap max z − z_c up to ~64 / ~685. Beyond, it saturates as
    e^t₀ (1 + log1p(t − t₀)) (at most ~90 e^t₀ / ~711 e^t₀): increasing, C¹, the gradient
    the exact one times a factor in (0, 1]. Stricter than CE: the logit gradient grows
    like 1/p_c (|∂ℓ/∂z_c| = ℓ) until the ceiling: in float32 a gradient above ~1.8e19 (a
    gap of ~45) overflows a float32 squared gradient norm, which is why the learner takes
    its norm again in float64 then (``amn.learner.clip_grad_norm``).
    Accuracy: relative error of the value a few eps × (1 + spread) (that of log p_c from
    log_softmax), checked against 50-digit mpmath in tests/test_loss_domains.py.
    Shapes: logits, target, mask ``[B, A]`` → loss ``[B]``.
    """

    name = "noel-m"

    def _noel(self, logp, log1mp, mask, c):
        t = (_at(log1mp, c) - _at(logp, c)).unsqueeze(-1)
        return _saturated_sum_exp(t, torch.ones_like(t, dtype=torch.bool))


@_register
class NoelMFull(_NoelLoss):
    """Noel M-full: ℓ = (1/p_c − 1) + Σ_{i≠c} [1/(1 − p_i) − 1].

    Both parts are odds, (1 − p_c)/p_c and p_i/(1 − p_i).
    Source: Noel et al., "Alternate Loss Functions Can Improve the Performance
    of Artificial Neural Networks" (arXiv 2303.09935).
    Not proper: the minimiser under c ~ q is distorted (no closed form; it
    satisfies −q_i/p_i² + (1 − q_i)/(1 − p_i)² = const).
    Method: ℓ = Σ_i e^{t_i}, t_c = log(1 − p_c) − log p_c, t_i = log p_i − log(1 − p_i),
    from the exact log-space pair, through :func:`_saturated_sum_exp`, which saturates
    the row's sum as a whole (so the gradient keeps the exact direction).
    Domain: finite in value and gradient for every finite input (finite valid-logit
    spread), float32 and float64. Exact while ℓ ≤ e^t₀ = 1.28e28 (float32) /
    6.8e297 (float64): p_c, and 1 − p_i of a wrong action, above ~1e-28 / ~1e-298
    (gaps up to ~64 / ~685); beyond, the saturation of noel-m applied to the row's
    total, e^t₀ (1 + log1p(log Σ e^{t_i} − t₀)).
    Accuracy: relative error a few eps × (1 + spread) (mpmath, tests/test_loss_domains.py).
    Shapes: logits, target, mask ``[B, A]`` → loss ``[B]``.
    """

    name = "noel-m-full"

    def _noel(self, logp, log1mp, mask, c):
        is_c = torch.zeros_like(mask).scatter(-1, c.unsqueeze(-1), True)
        t = torch.where(is_c, log1mp - logp, logp - log1mp)
        return _saturated_sum_exp(t, mask)


@_register
class NoelParamM(_NoelLoss):
    """Noel ParamM: ℓ = p_c^(−α) − 1, i.e. expm1(−α log p_c); α = 1 is M.

    Option alpha > 0 (default 1).
    Source: Noel et al., "Alternate Loss Functions Can Improve the Performance
    of Artificial Neural Networks" (arXiv 2303.09935).
    Not proper: under c ~ q the minimiser is p ∝ q^(1/(1+α)).
    Method: ℓ = expm1(t), t = −α log p_c, through :func:`_saturated_sum_exp`.
    Domain: finite in value and gradient for every finite input (finite valid-logit
    spread, and α·(spread + log K) finite), float32 and float64. Exact while
    t ≤ t₀ = 64.72 (float32) / 685.78 (float64), i.e. −log p_c ≤ t₀/α (a gap of ~26
    in float32 for α = 2.5); beyond, e^t₀ (1 + log1p(t − t₀)) − 1. The gradient is
    at most α e^t₀ per entry (finite for α up to ~2.6e10 = e^24).
    Accuracy: relative error a few α·eps × (1 + spread) (mpmath, tests/test_loss_domains.py).
    Shapes: logits, target, mask ``[B, A]`` → loss ``[B]``.
    """

    name = "noel-param-m"

    def __init__(self, alpha: float = 1.0) -> None:
        self.alpha = _check_positive(self.name, "alpha", alpha)

    def _noel(self, logp, log1mp, mask, c):
        t = (-self.alpha * _at(logp, c)).unsqueeze(-1)
        return _saturated_sum_exp(t, torch.ones_like(t, dtype=torch.bool), minus_one=True)


@_register
class NoelL(_NoelLoss):
    """Noel L: ℓ = 1/√(p_c (2 − p_c)); minimum 1 (at p_c = 1), not 0.

    Source: Noel et al., "Alternate Loss Functions Can Improve the Performance
    of Artificial Neural Networks" (arXiv 2303.09935).
    Not proper: the minimiser under c ~ q is distorted (no closed form; it
    satisfies q_i (1 − p_i)/(p_i (2 − p_i))^{3/2} = const).
    Method: ℓ = e^t, t = −½ log(1 − (1 − p_c)²), exact at both ends, through
    :func:`_saturated_sum_exp`.
    Domain: finite in value and gradient for every finite input (finite valid-logit
    spread), float32 and float64. Exact while ℓ ≤ e^t₀ = 1.28e28 (float32) /
    6.8e297 (float64), i.e. −log p_c ≲ 2 t₀ + log 2 (a gap of ~130 / ~1372); beyond,
    e^t₀ (1 + log1p(t − t₀)).
    Accuracy: relative error a few eps × (1 + spread) (mpmath, tests/test_loss_domains.py).
    Shapes: logits, target, mask ``[B, A]`` → loss ``[B]``.
    """

    name = "noel-l"

    def _noel(self, logp, log1mp, mask, c):
        t = (-0.5 * _log_1m_sq(_at(log1mp, c), _at(logp, c))).unsqueeze(-1)
        return _saturated_sum_exp(t, torch.ones_like(t, dtype=torch.bool))


@_register
class NoelLFull(_NoelLoss):
    """Noel L-full: ℓ = Σ_i [y_i/√(1 − (p_i − 1)²) + (1 − y_i)/√(1 − p_i²) − 1],
    y one-hot at the expert's argmax c, i over valid actions.

    Source: Noel et al., "Alternate Loss Functions Can Improve the Performance
    of Artificial Neural Networks" (arXiv 2303.09935).
    Not proper: the minimiser under c ~ q is distorted (no closed form).
    Method: ℓ = Σ_i expm1(t_i), t_i = −½ log(1 − x_i²) with x = 1 − p_c or p_i, each
    exact at both ends, through :func:`_saturated_sum_exp` (the row's sum saturates as a
    whole, so the gradient keeps the exact direction).
    Domain: finite in value and gradient for every finite input (finite valid-logit
    spread), float32 and float64. Exact while Σ e^{t_i} ≤ e^t₀ = 1.28e28 (float32) /
    6.8e297 (float64): gaps up to ~130 / ~1372; beyond,
    e^t₀ (1 + log1p(log Σ e^{t_i} − t₀)) − K.
    Accuracy: relative error a few eps × (1 + spread) (mpmath, tests/test_loss_domains.py).
    Shapes: logits, target, mask ``[B, A]`` → loss ``[B]``.
    """

    name = "noel-l-full"

    def _noel(self, logp, log1mp, mask, c):
        is_c = torch.zeros_like(mask).scatter(-1, c.unsqueeze(-1), True)
        # 1 − (p − 1)² for the expert's action, 1 − p² for the others.
        log_den = torch.where(is_c, _log_1m_sq(log1mp, logp), _log_1m_sq(logp, log1mp))
        return _saturated_sum_exp(-0.5 * log_den, mask, minus_one=True)


@_register
class Parabolic(_NoelLoss):
    """Noel Parabolic: ℓ = 1 − p_c², computed as exp(log(1 − p_c²)).

    Source: Noel et al., "Alternate Loss Functions Can Improve the Performance
    of Artificial Neural Networks" (arXiv 2303.09935).
    Not proper: Σ_c q_c p_c² is convex in p, so the expected loss is minimised
    at the vertex argmax q (reached only as logits → ∞). Bounded in [0, 1];
    gradient vanishes as p_c → 0 ("liberal"). Finite everywhere.
    Shapes: logits, target, mask ``[B, A]`` → loss ``[B]``.
    """

    name = "parabolic"

    def _noel(self, logp, log1mp, mask, c):
        return _log_1m_sq(_at(logp, c), _at(log1mp, c)).exp()


@_register
class Circle(_NoelLoss):
    """Noel Circle: ℓ = √(1 − p_c²), computed as exp(½ log(1 − p_c²)).

    Source: Noel et al., "Alternate Loss Functions Can Improve the Performance
    of Artificial Neural Networks" (arXiv 2303.09935).
    Not proper: √(1 − p²) is concave, so the expected loss is minimised at the
    vertex argmax q (logits → ∞). Bounded in [0, 1]. Finite everywhere.
    Shapes: logits, target, mask ``[B, A]`` → loss ``[B]``.
    """

    name = "circle"

    def _noel(self, logp, log1mp, mask, c):
        return (0.5 * _log_1m_sq(_at(logp, c), _at(log1mp, c))).exp()


@_register
class Cos(_NoelLoss):
    """Noel Cos: ℓ = cos(π p_c / 2), computed as sin(π (1 − p_c) / 2).

    Source: Noel et al., "Alternate Loss Functions Can Improve the Performance
    of Artificial Neural Networks" (arXiv 2303.09935).
    Not proper: cos(πp/2) is concave on [0, 1], so the expected loss is
    minimised at the vertex argmax q (logits → ∞). Bounded in [0, 1]. Finite
    everywhere.
    Shapes: logits, target, mask ``[B, A]`` → loss ``[B]``.
    """

    name = "cos"

    def _noel(self, logp, log1mp, mask, c):
        return torch.sin(0.5 * math.pi * _at(log1mp, c).exp())
