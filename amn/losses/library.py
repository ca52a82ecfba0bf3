"""Student losses for multi-task policy distillation, behind one interface.

Every loss takes the student's outputs ``logits [B, A]`` (A = 18 shared Atari
actions), the expert's soft policy ``target [B, A]`` and the bool ``mask [B, A]``
of each row's valid actions (each game has its own minimal action set, and rows
of different games share a batch). Softmaxes and sums run over valid actions
only: invalid logits get exactly zero gradient and never influence the loss.
Each loss returns a per-row ``[B]`` loss; the caller reduces over the batch.

Whether a loss is *proper* (the minimiser of its expected loss reproduces the
soft target ``q``) matters for distillation, since the student should copy the
expert's policy, not just its argmax:

====================  ======  =================================================
name                  proper  minimiser of the expected loss
====================  ======  =================================================
ce                    yes     softmax(z) = q
cc                    no      CC mean = q; softmax(z) much sharper than q
ce-brier              yes     softmax(z) = q
mse-logits            yes*    z = expert values (*q only if q = softmax(values))
squentropy(-soft)     no      flatter than q
rescaled-square       no      z = M q, i.e. softmax(M q) (k = 1)
noel-m                no      p proportional to sqrt(q)
noel-param-m          no      p proportional to q^(1/(1+alpha))
noel-m-full           no      distorted; no closed form
noel-l, noel-l-full   no      distorted; no closed form
parabolic             no      all mass on argmax q (at infinite logits)
circle, cos           no      all mass on argmax q (at infinite logits)
====================  ======  =================================================

Hard-label losses use the expert's argmax action ``c``; their expected loss is
taken under ``c ~ q``. Look losses up with :func:`get_loss`.
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

__all__ = ["LOSSES", "LossOutput", "StudentLoss", "get_loss", "validate_inputs"]

_PROB_HINT = "pass probabilities, e.g. softmax(expert_values / temperature)"


@dataclass
class LossOutput:
    """Result of one loss call.

    loss: ``[B]`` per-row loss, same dtype as the logits.
    diagnostics: counts for this call, at least ``{"rows": B}``.
    """

    loss: torch.Tensor
    diagnostics: dict[str, int] = field(default_factory=dict)


# --------------------------------------------------------------------------- #
# Validation
# --------------------------------------------------------------------------- #


def _sum_tolerance(dtype: torch.dtype) -> float:
    # 1e-4 is ample for float32/64; low-precision targets cannot hit it.
    return max(1e-4, 16 * torch.finfo(dtype).eps)


def _rows_msg(what: str, bad: torch.Tensor, b: int) -> str:
    return f"{what}: {int(bad.sum())} of {b} rows"


def validate_inputs(
    logits: torch.Tensor,
    target: torch.Tensor,
    mask: torch.Tensor,
    expert_values: torch.Tensor | None = None,
) -> torch.Tensor:
    """Check a loss call's inputs; return the target in the logits' dtype.

    Shapes: logits, target, mask (bool) and expert_values all ``[B, A]``.
    Only entries at valid actions are checked for finiteness, because invalid
    logits must not influence anything. Raises ``ValueError`` with one line
    saying how many rows are wrong, how, and what to do.
    Returns: ``[B, A]`` target in ``logits.dtype``, exactly 0 outside the mask.
    """
    tensors = {"logits": logits, "target": target, "mask": mask}
    if expert_values is not None:
        tensors["expert_values"] = expert_values
    for nm, t in tensors.items():
        if not isinstance(t, torch.Tensor):
            raise ValueError(f"{nm}: expected a torch.Tensor, got {type(t).__name__}")
    shapes = {nm: list(t.shape) for nm, t in tensors.items()}
    if logits.dim() != 2 or any(s != shapes["logits"] for s in shapes.values()):
        listed = ", ".join(f"{nm} {s}" for nm, s in shapes.items())
        raise ValueError(
            f"shapes: {listed} must all be [B, A]; place each game's values in its "
            "action slots of the shared outputs"
        )
    if mask.dtype != torch.bool:
        raise ValueError(f"mask: dtype {mask.dtype}, expected torch.bool; pass mask.bool()")
    if not logits.is_floating_point():
        raise ValueError(f"logits: dtype {logits.dtype}, expected a floating dtype")
    if not target.is_floating_point():
        raise ValueError(f"target: dtype {target.dtype}, expected a floating dtype; {_PROB_HINT}")
    b = logits.shape[0]

    with torch.no_grad():
        n_valid = mask.sum(-1)
        bad = n_valid < 2
        if bad.any():
            raise ValueError(
                f"{_rows_msg('mask', bad, b)} have fewer than 2 valid actions "
                f"(min {int(n_valid.min())}); give each row its game's minimal action set"
            )
        bad = (~torch.isfinite(logits) & mask).any(-1)
        if bad.any():
            raise ValueError(
                f"{_rows_msg('logits', bad, b)} have NaN or inf at valid actions; the "
                "student has diverged: lower the learning rate or clip gradients"
            )
        if expert_values is not None:
            bad = (~torch.isfinite(expert_values) & mask).any(-1)
            if bad.any():
                raise ValueError(
                    f"{_rows_msg('expert_values', bad, b)} have NaN or inf at valid "
                    "actions; check the expert's outputs"
                )
        t = target.detach().double()
        bad = (~torch.isfinite(t)).any(-1)
        if bad.any():
            raise ValueError(f"{_rows_msg('target', bad, b)} contain NaN or inf; {_PROB_HINT}")
        bad = (t < 0).any(-1)
        if bad.any():
            raise ValueError(
                f"{_rows_msg('target', bad, b)} have negative entries "
                f"(min {float(t.min()):.3g}); {_PROB_HINT}"
            )
        tol = _sum_tolerance(target.dtype)
        outside = t.masked_fill(mask, 0.0).sum(-1)
        bad = outside > tol
        if bad.any():
            raise ValueError(
                f"{_rows_msg('target', bad, b)} put mass on actions outside the mask "
                f"(max {float(outside.max()):.3g}); zero the target outside each game's "
                "valid actions or fix the mask"
            )
        err = (t.masked_fill(~mask, 0.0).sum(-1) - 1.0).abs()
        bad = err > tol
        if bad.any():
            raise ValueError(
                f"{_rows_msg('target', bad, b)} do not sum to 1 over the valid actions "
                f"(max error {float(err.max()):.3g}); {_PROB_HINT}"
            )
    return target.to(logits.dtype).masked_fill(~mask, 0.0)


# --------------------------------------------------------------------------- #
# Masked building blocks, shapes [B, A] unless stated
# --------------------------------------------------------------------------- #


def _masked_log_softmax(logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """log softmax over valid actions; exactly 0 (not -inf) at invalid ones.

    masked_fill/where route zero gradient to invalid logits even when they are
    NaN, and the 0 fill keeps ``0 * log p`` products NaN-free.
    """
    logp = torch.log_softmax(logits.masked_fill(~mask, -math.inf), dim=-1)
    return torch.where(mask, logp, torch.zeros_like(logp))


def _masked_log1m_softmax(logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """log(1 - p_i) over valid actions, as logsumexp of the other valid logits
    minus logsumexp of all of them; 0 at invalid actions.

    ``1 - exp(log p_i)`` rounds to 0 once p_i is within eps of 1, which turns
    1/(1-p) into inf and kills gradients; the leave-one-out logsumexp keeps
    full relative precision there (p_i → 0 is handled by
    :func:`_masked_log_p_pair`). Costs a ``[B, A, A]`` temporary (A = 18: cheap).
    """
    zm = logits.masked_fill(~mask, -math.inf)
    a = zm.shape[-1]
    eye = torch.eye(a, dtype=torch.bool, device=zm.device)
    others = zm.unsqueeze(-2).expand(*zm.shape[:-1], a, a).masked_fill(eye, -math.inf)
    # Each row has >= 2 valid actions, so every leave-one-out set has a finite entry.
    log1mp = torch.logsumexp(others, dim=-1) - torch.logsumexp(zm, dim=-1, keepdim=True)
    return torch.where(mask, log1mp, torch.zeros_like(log1mp))


def _log1mexp(log_x: torch.Tensor, use: torch.Tensor) -> torch.Tensor:
    """log(1 − x) from log x where ``use`` (there log x < −ln 2, so it is exact).

    Elsewhere the input is replaced by −1 so the unused branch of the caller's
    ``where`` stays finite: log1p(−1) = −inf would turn zero gradients into NaN.
    """
    safe = torch.where(use, log_x, torch.full_like(log_x, -1.0))
    return torch.log1p(-safe.exp())


def _masked_log_p_pair(logits: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(log p, log(1 − p)) over valid actions, both to full relative precision.

    log_softmax gives log p ≈ 0 only to absolute precision eps·|z| when p → 1,
    and the leave-one-out log(1 − p) ≈ 0 likewise when p → 0; in each case the
    other quantity is exact, so log1p(−exp(·)) of it is the precise branch.
    Both are 0 at invalid actions.
    """
    logp = _masked_log_softmax(logits, mask)
    log1mp = _masked_log1m_softmax(logits, mask)
    ln_half = -math.log(2.0)
    p_near_one, p_small = log1mp < ln_half, logp < ln_half
    return (
        torch.where(p_near_one, _log1mexp(log1mp, p_near_one), logp),
        torch.where(p_small, _log1mexp(logp, p_small), log1mp),
    )


def _log_1m_sq(log_x: torch.Tensor, log1mx: torch.Tensor) -> torch.Tensor:
    """log(1 − x²) for x in [0, 1], exact at both ends.

    Small x: log1p(−x²); otherwise log(1 − x) + log1p(x). With x = 1 − p this
    gives log(p(2 − p)) = log(1 − (1 − p)²), Noel's L denominator.
    """
    small = log_x < -0.5 * math.log(2.0)
    safe = torch.where(small, 2.0 * log_x, torch.full_like(log_x, -1.0))
    return torch.where(small, torch.log1p(-safe.exp()), log1mx + torch.log1p(log_x.exp()))


def _expert_argmax(target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``[B]`` long: the expert's argmax over valid actions (first one on ties)."""
    return target.masked_fill(~mask, -math.inf).argmax(dim=-1)


def _at(x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """``x[b, c[b]]`` as ``[B]``."""
    return x.gather(-1, c.unsqueeze(-1)).squeeze(-1)


def _n_valid(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``[B]`` number of valid actions K per row."""
    return mask.sum(-1).to(dtype)


# --------------------------------------------------------------------------- #
# Base class and registry
# --------------------------------------------------------------------------- #

LOSSES: dict[str, type[StudentLoss]] = {}


def _register(cls: type[StudentLoss]) -> type[StudentLoss]:
    LOSSES[cls.name] = cls
    return cls


class StudentLoss:
    """Callable per-row student loss; subclasses implement :meth:`_rows`.

    ``loss(logits [B, A], target [B, A], mask [B, A] bool, expert_values=None)``
    returns a :class:`LossOutput` with a ``[B]`` loss in the logits' dtype.
    """

    name: ClassVar[str] = ""
    proper: ClassVar[bool] = False
    needs_expert_values: ClassVar[bool] = False
    hard_label: ClassVar[bool] = False  # uses only the expert's argmax action

    def options(self) -> dict[str, Any]:
        """The constructor options of this instance, for logging."""
        params = inspect.signature(type(self).__init__).parameters
        return {k: getattr(self, k) for k in params if k != "self"}

    def __repr__(self) -> str:
        opts = ", ".join(f"{k}={v!r}" for k, v in self.options().items())
        return f"{type(self).__name__}({opts})"

    def __call__(
        self,
        logits: torch.Tensor,
        target: torch.Tensor,
        mask: torch.Tensor,
        expert_values: torch.Tensor | None = None,
    ) -> LossOutput:
        if self.needs_expert_values and expert_values is None:
            raise ValueError(
                f"{self.name} needs expert_values [B, A] (the expert's raw Q-values or "
                "logits in the same action slots); pass expert_values=..."
            )
        target = validate_inputs(
            logits, target, mask, expert_values if self.needs_expert_values else None
        )
        loss, diag = self._rows(logits, target, mask, expert_values)
        return LossOutput(loss=loss, diagnostics={**diag, "rows": int(logits.shape[0])})

    def _rows(
        self,
        logits: torch.Tensor,
        target: torch.Tensor,
        mask: torch.Tensor,
        expert_values: torch.Tensor | None,
    ) -> tuple[torch.Tensor, dict[str, int]]:
        raise NotImplementedError


def _check_positive(name: str, option: str, value: float, allow_zero: bool = False) -> float:
    ok = isinstance(value, (int, float)) and math.isfinite(value)
    ok = ok and (value >= 0 if allow_zero else value > 0)
    if not ok:
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name}: option {option}={value!r} must be a finite number {bound}")
    return float(value)


def get_loss(name: str, **options: Any) -> StudentLoss:
    """Build the loss registered as ``name`` with keyword ``options``.

    Unknown names or options raise ``ValueError`` listing the valid ones.
    """
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; valid losses: {', '.join(sorted(LOSSES))}")
    cls = LOSSES[name]
    valid = [k for k in inspect.signature(cls.__init__).parameters if k != "self"]
    unknown = sorted(set(options) - set(valid))
    if unknown:
        listed = ", ".join(valid) if valid else "none"
        raise ValueError(f"loss {name!r}: unknown option(s) {', '.join(unknown)}; valid options: {listed}")
    return cls(**options)


# --------------------------------------------------------------------------- #
# Proper losses
# --------------------------------------------------------------------------- #


@_register
class CrossEntropy(StudentLoss):
    """Actor-Mimic policy regression (Parisotto et al., ICLR 2016).

    ℓ = −Σ_i y_i log p_i, p = softmax(z) over valid actions.
    Proper: the expected loss is minimised by softmax(z) = y.
    Shapes: logits, target, mask ``[B, A]`` → loss ``[B]``.
    """

    name = "ce"
    proper = True

    def __init__(self) -> None:
        pass

    def _rows(self, logits, target, mask, expert_values):
        logp = _masked_log_softmax(logits, mask)
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
    Shapes: logits, target, mask ``[B, A]`` → loss ``[B]``.
    """

    name = "cc"
    proper = False
    NORMALISERS: ClassVar[tuple[str, ...]] = ("guarded", "naive", "authors")

    def __init__(self, normaliser: str = "guarded") -> None:
        if normaliser not in self.NORMALISERS:
            raise ValueError(
                f"cc: option normaliser={normaliser!r} is not valid; valid: "
                f"{', '.join(self.NORMALISERS)}"
            )
        self.normaliser = normaliser

    def _rows(self, logits, target, mask, expert_values):
        # Imported lazily so this module imports while cc.py is being written.
        from amn.losses.cc import cc_loss

        loss, diag = cc_loss(logits, target, mask, normaliser=self.normaliser)
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

    def __init__(self) -> None:
        pass

    def _rows(self, logits, target, mask, expert_values):
        assert expert_values is not None
        z = logits.masked_fill(~mask, 0.0)
        v = expert_values.to(logits.dtype).masked_fill(~mask, 0.0)
        return ((z - v) ** 2).sum(-1) / _n_valid(mask, logits.dtype), {}


# --------------------------------------------------------------------------- #
# Square-loss family (Hui & Belkin)
# --------------------------------------------------------------------------- #


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

    def __init__(self) -> None:
        pass

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

    def __init__(self) -> None:
        pass

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


# --------------------------------------------------------------------------- #
# Noel et al.'s eight losses
# --------------------------------------------------------------------------- #

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

    def __init__(self) -> None:
        pass

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

    def __init__(self) -> None:
        pass

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

    def __init__(self) -> None:
        pass

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

    def __init__(self) -> None:
        pass

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

    def __init__(self) -> None:
        pass

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

    def __init__(self) -> None:
        pass

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

    def __init__(self) -> None:
        pass

    def _noel(self, logp, log1mp, mask, c):
        return torch.sin(0.5 * math.pi * _at(log1mp, c).exp())
