"""The square-loss family: squentropy (Hui, Belkin & Wright, ICML 2023) and the rescaled
square loss (Hui & Belkin, ICLR 2021). None is proper; see :mod:`amn.losses.library`."""

from __future__ import annotations

from amn.losses.library import (
    StudentLoss,
    _register,
    _check_positive,
    _masked_log_softmax,
    _expert_argmax,
    _at,
    _n_valid,
)


@_register
class Squentropy(StudentLoss):
    """Squentropy, hard label (Hui, Belkin & Wright, "Cut your Losses with
    Squentropy", ICML 2023).

    ℓ = −log p_c + (1/(K−1)) Σ_{i≠c} z_i², c = expert's argmax, K valid actions,
    z the raw logits (not shift invariant).
    Not proper: under c ~ q its expected loss is the ``squentropy-soft`` loss,
    whose minimiser is flatter than q (see :class:`SquentropySoft`).
    Shapes: logits, target, mask ``[B, A]`` → loss ``[B]``.
    """

    name = "squentropy"
    proper = False
    hard_label = True

    def _rows(self, logits, target, mask, expert_values):
        c = _expert_argmax(target, mask)
        logp = _masked_log_softmax(logits, mask)
        z = logits.masked_fill(~mask, 0.0)
        sq = (z**2).sum(-1) - _at(z, c) ** 2
        return -_at(logp, c) + sq / (_n_valid(mask, logits.dtype) - 1), {}


@_register
class SquentropySoft(StudentLoss):
    """Squentropy with a soft target: the hard loss's expectation under c ~ y
    (Hui, Belkin & Wright, ICML 2023).

    ℓ = −Σ_i y_i log p_i + (1/(K−1)) Σ_i (1 − y_i) z_i², K valid actions.
    Not proper: the square term pulls the logits of likely actions towards 0,
    so the minimiser is flatter than y: y = (0.7, 0.2, 0.1) gives
    p* ≈ (0.51, 0.25, 0.24); a student is less confident than its expert.
    Shapes: logits, target, mask ``[B, A]`` → loss ``[B]``.
    """

    name = "squentropy-soft"
    proper = False

    def _rows(self, logits, target, mask, expert_values):
        logp = _masked_log_softmax(logits, mask)
        z = logits.masked_fill(~mask, 0.0)
        sq = ((1.0 - target) * z**2 * mask).sum(-1)
        return -(target * logp).sum(-1) + sq / (_n_valid(mask, logits.dtype) - 1), {}


@_register
class RescaledSquare(StudentLoss):
    """Rescaled square loss on raw logits (Hui & Belkin, ICLR 2021).

    Hard (default): ℓ = (1/K) [k (z_c − M)² + Σ_{i≠c} z_i²], c = expert's argmax.
    ``soft=True`` (needs k = 1): ℓ = (1/K) Σ_i (z_i − M y_i)².
    Options k > 0 (default 1), M > 0 (default 1), soft (default False).
    Not proper as a policy loss: the soft form's minimiser is z = M·y, so it
    reproduces the target *in the logits* (z/M = y), but the student's policy
    softmax(M·y) is flatter than y for M = 1 (y = (0.7, 0.2, 0.1) gives
    softmax(y) ≈ (0.43, 0.29, 0.28)). The hard form with k = 1 has the same
    expected-loss minimiser under c ~ y (it differs from the soft form by a
    constant); with k ≠ 1 it is z_i = k M y_i / (k y_i + 1 − y_i).
    Shapes: logits, target, mask ``[B, A]`` → loss ``[B]``.
    """

    name = "rescaled-square"
    proper = False

    def __init__(self, k: float = 1.0, M: float = 1.0, soft: bool = False) -> None:
        self.k = _check_positive(self.name, "k", k)
        self.M = _check_positive(self.name, "M", M)
        if not isinstance(soft, bool):
            raise ValueError(f"{self.name}: option soft={soft!r} must be a bool")
        if soft and self.k != 1.0:
            raise ValueError(f"{self.name}: soft=True regresses z onto M*y and needs k=1, got k={k}")
        self.soft = soft

    @property
    def hard_label(self) -> bool:  # type: ignore[override]
        return not self.soft

    def _rows(self, logits, target, mask, expert_values):
        z = logits.masked_fill(~mask, 0.0)
        k_rows = _n_valid(mask, logits.dtype)
        if self.soft:
            return ((z - self.M * target) ** 2).sum(-1) / k_rows, {}
        c = _expert_argmax(target, mask)
        zc = _at(z, c)
        rest = (z**2).sum(-1) - zc**2
        return (self.k * (zc - self.M) ** 2 + rest) / k_rows, {}
