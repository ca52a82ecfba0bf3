"""Likelihood-based student losses: cross-entropy (the AMN's policy regression, a categorical
log-likelihood), the continuous-categorical log-likelihood (CC-AMN), cross-entropy plus the
Brier score, and squared error on logits (a Gaussian log-likelihood of the expert's values).
Only ``cc`` is not proper; the table in :mod:`amn.losses.library` gives each minimiser."""

from __future__ import annotations

from typing import ClassVar

import torch

from amn.losses.library import (
    StudentLoss,
    _register,
    _check_positive,
    _masked_log_softmax,
    _n_valid,
)


@_register
class CrossEntropy(StudentLoss):
    """Actor-Mimic policy regression (Parisotto et al., ICLR 2016).

    ℓ = −Σ_i y_i log p_i, p = softmax(α·z) over valid actions (option ``logit_scale`` α,
    default 1). Proper: the expected loss is minimised by softmax(α·z) = y.
    Shapes: logits, target, mask ``[B, A]`` → loss ``[B]``.
    """

    name = "ce"
    proper = True

    def __init__(self, logit_scale: float = 1.0) -> None:
        # α < 1 gives cross-entropy the slow response CC has at uniform logits (α = 1/(K+1)):
        # an experiment that separates that cause from the others (docs/cc_amn_pong.md).
        self.logit_scale = _check_positive(self.name, "logit_scale", logit_scale)

    def _rows(self, logits, target, mask, expert_values):
        z = logits if self.logit_scale == 1.0 else logits * self.logit_scale
        logp = _masked_log_softmax(z, mask)
        return -(target * logp).sum(-1), {}


@_register
class ContinuousCategorical(StudentLoss):
    """CC-AMN: the continuous-categorical negative log-likelihood
    (Gordon-Rodriguez et al., "Uses and Abuses of the Cross-Entropy Loss", PMLR 137).

    ℓ = −[Σ_k y_k log λ_k + log C(λ)], λ = softmax(z) over valid actions.
    Delegates to :func:`amn.losses.cc.cc_loss` with ``normaliser`` in
    {guarded, naive, authors}; that function's diagnostics are passed through.
    Not proper as a policy loss: the CC is an exponential family with
    sufficient statistic y, so the expected loss is minimised where the CC
    *mean* equals y, and λ = softmax(z) is much sharper than y:
    y = (0.7, 0.3) gives λ* ≈ (0.935, 0.065); y = (0.7, 0.2, 0.1) gives
    λ* ≈ (0.9905, 0.0094, 5.3e-5). It keeps the expert's argmax.

    Option ``logit_scale`` α (default 1): the CC is evaluated at α·z, so λ = softmax(α·z).
    α changes neither the student's greedy policy (argmax z) nor the family of
    distributions, only the dynamics. ``"auto"`` is α = K + 1 per row (K valid actions):
    at uniform logits the CC mean's Jacobian in its logits is the flat Dirichlet's
    covariance (I − 11ᵀ/K)/(K(K+1)), 1/(K+1) of the softmax's (I − 11ᵀ/K)/K, so with
    α = K + 1 a step in z moves the CC mean as far as it moves softmax(z) under
    cross-entropy. Its minimiser then has softmax(z*) = y + O(|y − 1/K|²) near uniform
    (exactly μ(α·z*) = y), i.e. the student's softmax is again close to the expert's.
    Shapes: logits, target, mask ``[B, A]`` → loss ``[B]``.
    """

    name = "cc"
    proper = False
    NORMALISERS: ClassVar[tuple[str, ...]] = ("guarded", "naive", "authors")

    def __init__(self, normaliser: str = "guarded", logit_scale: float | str = 1.0) -> None:
        if normaliser not in self.NORMALISERS:
            raise ValueError(
                f"cc: option normaliser={normaliser!r} is not valid; valid: "
                f"{', '.join(self.NORMALISERS)}"
            )
        self.normaliser = normaliser
        if logit_scale != "auto":
            if isinstance(logit_scale, bool) or not isinstance(logit_scale, (int, float)):
                raise ValueError(f"cc: option logit_scale={logit_scale!r} must be a number > 0 or 'auto' (K + 1)")
            logit_scale = _check_positive(self.name, "logit_scale", logit_scale)
        self.logit_scale = logit_scale

    def scale(self, mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor | float:
        """α per row ``[B, 1]`` for ``"auto"`` (K + 1), else the number."""
        if self.logit_scale == "auto":
            return (_n_valid(mask, dtype) + 1).unsqueeze(-1)
        return self.logit_scale

    def _rows(self, logits, target, mask, expert_values):
        from amn.losses.cc import cc_loss

        alpha = self.scale(mask, logits.dtype)
        scaled = logits if isinstance(alpha, float) and alpha == 1.0 else logits * alpha
        loss, diag = cc_loss(scaled, target, mask, normaliser=self.normaliser)
        return loss, dict(diag)


@_register
class CrossEntropyBrier(StudentLoss):
    """Log score plus Brier score (both strictly proper scoring rules).

    ℓ = −Σ_i y_i log p_i + lam · Σ_i (p_i − y_i)², p = softmax(z) over valid
    actions; option ``lam`` ≥ 0 (default 1).
    Proper: a positive mix of strictly proper scores is strictly proper, so the
    expected loss is minimised by softmax(z) = y.
    Shapes: logits, target, mask ``[B, A]`` → loss ``[B]``.
    """

    name = "ce-brier"
    proper = True

    def __init__(self, lam: float = 1.0) -> None:
        self.lam = _check_positive(self.name, "lam", lam, allow_zero=True)

    def _rows(self, logits, target, mask, expert_values):
        logp = _masked_log_softmax(logits, mask)
        p = torch.where(mask, logp.exp(), torch.zeros_like(logp))
        brier = ((p - target) ** 2).sum(-1)
        return -(target * logp).sum(-1) + self.lam * brier, {}


@_register
class MSELogits(StudentLoss):
    """Policy Distillation's MSE on the expert's values (Rusu et al., ICLR 2016).

    ℓ = (1/K) Σ_{i valid} (z_i − v_i)², v = expert_values (Q-values or logits),
    K = number of valid actions of the row. Needs ``expert_values``; the soft
    target is validated but unused.
    Proper w.r.t. targets made at τ = 1: the minimiser is z = v, hence
    softmax(z) = softmax(v), which equals the target only if the target is
    softmax(v) (not softmax(v/τ) for τ ≠ 1).
    Shapes: logits, target, mask, expert_values ``[B, A]`` → loss ``[B]``.
    """

    name = "mse-logits"
    proper = True
    needs_expert_values = True

    def _rows(self, logits, target, mask, expert_values):
        assert expert_values is not None
        z = logits.masked_fill(~mask, 0.0)
        v = expert_values.to(logits.dtype).masked_fill(~mask, 0.0)
        return ((z - v) ** 2).sum(-1) / _n_valid(mask, logits.dtype), {}
