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
taken under ``c ~ q``. Look losses up with :func:`get_loss`. This module holds the interface,
input validation and the masked building blocks; the losses live in :mod:`amn.losses.likelihood`
(ce, cc, ce-brier, mse-logits), :mod:`amn.losses.square` (Hui & Belkin) and
:mod:`amn.losses.noel` (Noel et al.).
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

    def __init__(self) -> None:
        """No options. A loss with options takes them as keyword arguments of its own ``__init__``
        (``get_loss`` and :meth:`options` read them from its signature)."""

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

