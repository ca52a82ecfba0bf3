"""Noel et al.'s eight alternate classification losses, hard-label on the expert's argmax,
computed from log p and log(1 − p) so values and gradients stay accurate as p → 0 or 1."""

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


class _NoelLoss(StudentLoss):
    """Shared part: p = softmax over valid actions, c = expert's argmax.

    Unlike the authors' notebooks (which return 0 at a zero denominator),
    everything is computed from log p and log(1 − p), both exact at either end,
    so values and gradients stay accurate as p → 0 or 1; no silent guards.
    """

    proper = False
    hard_label = True

    def _rows(self, logits, target, mask, expert_values):
        c = _expert_argmax(target, mask)
        logp, log1mp = _masked_log_p_pair(logits, mask)
        return self._noel(logp, log1mp, mask, c), {}

    def _noel(
        self, logp: torch.Tensor, log1mp: torch.Tensor, mask: torch.Tensor, c: torch.Tensor
    ) -> torch.Tensor:
        """logp, log1mp ``[B, A]`` (0 at invalid), c ``[B]`` → loss ``[B]``."""
        raise NotImplementedError


@_register
class NoelM(_NoelLoss):
    """Noel M: ℓ = 1/p_c − 1, computed as the odds (1 − p_c)/p_c in log space.

    Source: Noel et al., "Alternate Loss Functions Can Improve the Performance
    of Artificial Neural Networks" (arXiv 2303.09935).
    Not proper: under c ~ q the minimiser is p ∝ √q.
    Domain: finite while −log p_c < log(max float) (≈ 88 in float32, 709 in
    float64), i.e. for logit spreads up to about that. Stricter than CE: the
    logit gradient grows like 1/p_c as p_c → 0.
    Shapes: logits, target, mask ``[B, A]`` → loss ``[B]``.
    """

    name = "noel-m"

    def _noel(self, logp, log1mp, mask, c):
        return (_at(log1mp, c) - _at(logp, c)).exp()


@_register
class NoelMFull(_NoelLoss):
    """Noel M-full: ℓ = (1/p_c − 1) + Σ_{i≠c} [1/(1 − p_i) − 1].

    Both parts are odds, (1 − p_c)/p_c and p_i/(1 − p_i), computed in log space.
    Source: Noel et al., "Alternate Loss Functions Can Improve the Performance
    of Artificial Neural Networks" (arXiv 2303.09935).
    Not proper: the minimiser under c ~ q is distorted (no closed form; it
    satisfies −q_i/p_i² + (1 − q_i)/(1 − p_i)² = const).
    Domain: finite for logit spreads below ≈ 88 (float32) / 709 (float64).
    Shapes: logits, target, mask ``[B, A]`` → loss ``[B]``.
    """

    name = "noel-m-full"

    def _noel(self, logp, log1mp, mask, c):
        others = mask.scatter(-1, c.unsqueeze(-1), False)
        odds = torch.where(others, (logp - log1mp).exp(), torch.zeros_like(logp))
        return (_at(log1mp, c) - _at(logp, c)).exp() + odds.sum(-1)


@_register
class NoelParamM(_NoelLoss):
    """Noel ParamM: ℓ = p_c^(−α) − 1, computed as expm1(−α log p_c); α = 1 is M.

    Option alpha > 0 (default 1).
    Source: Noel et al., "Alternate Loss Functions Can Improve the Performance
    of Artificial Neural Networks" (arXiv 2303.09935).
    Not proper: under c ~ q the minimiser is p ∝ q^(1/(1+α)).
    Domain: finite while α·(−log p_c) < log(max float) (≈ 88 float32), e.g.
    logit spreads up to ≈ 35 for α = 2.5 in float32.
    Shapes: logits, target, mask ``[B, A]`` → loss ``[B]``.
    """

    name = "noel-param-m"

    def __init__(self, alpha: float = 1.0) -> None:
        self.alpha = _check_positive(self.name, "alpha", alpha)

    def _noel(self, logp, log1mp, mask, c):
        return torch.expm1(-self.alpha * _at(logp, c))


@_register
class NoelL(_NoelLoss):
    """Noel L: ℓ = 1/√(p_c (2 − p_c)); minimum 1 (at p_c = 1), not 0.

    Source: Noel et al., "Alternate Loss Functions Can Improve the Performance
    of Artificial Neural Networks" (arXiv 2303.09935).
    Not proper: the minimiser under c ~ q is distorted (no closed form; it
    satisfies q_i (1 − p_i)/(p_i (2 − p_i))^{3/2} = const).
    Domain: finite while −log p_c < 2·log(max float) (≈ 177 float32).
    Shapes: logits, target, mask ``[B, A]`` → loss ``[B]``.
    """

    name = "noel-l"

    def _noel(self, logp, log1mp, mask, c):
        return (-0.5 * _log_1m_sq(_at(log1mp, c), _at(logp, c))).exp()


@_register
class NoelLFull(_NoelLoss):
    """Noel L-full: ℓ = Σ_i [y_i/√(1 − (p_i − 1)²) + (1 − y_i)/√(1 − p_i²) − 1],
    y one-hot at the expert's argmax c, i over valid actions.

    Each term is expm1(−½ log(1 − x²)) with x = 1 − p_c or p_i, exact at both ends.
    Source: Noel et al., "Alternate Loss Functions Can Improve the Performance
    of Artificial Neural Networks" (arXiv 2303.09935).
    Not proper: the minimiser under c ~ q is distorted (no closed form).
    Domain: finite for logit spreads below ≈ 177 (float32).
    Shapes: logits, target, mask ``[B, A]`` → loss ``[B]``.
    """

    name = "noel-l-full"

    def _noel(self, logp, log1mp, mask, c):
        is_c = torch.zeros_like(mask).scatter(-1, c.unsqueeze(-1), True)
        # 1 − (p − 1)² for the expert's action, 1 − p² for the others.
        log_den = torch.where(is_c, _log_1m_sq(log1mp, logp), _log_1m_sq(logp, log1mp))
        terms = torch.expm1(-0.5 * log_den)
        return torch.where(mask, terms, torch.zeros_like(terms)).sum(-1)


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
