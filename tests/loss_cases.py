"""What the student-loss tests share: the losses and options under test, independent float64 reference
formulas (numpy, each row's valid actions only; the library never computes an expectation here),
mixed-K batches, and the minimiser of an expected loss (properness).

Used by tests/test_losses.py, tests/test_loss_minimisers.py and tests/test_loss_domains.py.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from amn.losses.library import LossOutput, get_loss

A = 18  # shared Atari outputs
ALL_NAMES = [
    "ce", "cc", "ce-brier", "mse-logits", "squentropy", "squentropy-soft",
    "rescaled-square", "noel-m", "noel-m-full", "noel-param-m", "noel-l",
    "noel-l-full", "parabolic", "circle", "cos",
]
# (name, options) for everything with a closed form here; cc is the lead's (cc.py).
CASES = [
    ("ce", {}), ("ce-brier", {}), ("ce-brier", {"lam": 0.3}), ("mse-logits", {}),
    ("squentropy", {}), ("squentropy-soft", {}),
    ("rescaled-square", {}), ("rescaled-square", {"k": 2.0, "M": 3.0}),
    ("rescaled-square", {"soft": True, "M": 2.0}),
    ("noel-m", {}), ("noel-m-full", {}), ("noel-param-m", {}),
    ("noel-param-m", {"alpha": 0.5}), ("noel-param-m", {"alpha": 2.5}),
    ("noel-l", {}), ("noel-l-full", {}), ("parabolic", {}), ("circle", {}), ("cos", {}),
]
CASE_IDS = [n + "".join(f"-{k}{v}" for k, v in o.items()) for n, o in CASES]


# --------------------------------------------------------------------------- #
# Independent reference formulas: one row, valid actions only, float64 numpy
# --------------------------------------------------------------------------- #


def ref_row(name: str, opts: dict, z: np.ndarray, y: np.ndarray, v: np.ndarray) -> float:
    k = len(z)
    p = np.exp(z - z.max())
    p /= p.sum()
    c = int(np.argmax(y))
    pc = p[c]
    not_c = np.arange(k) != c
    if name == "ce":
        return float(-(y * np.log(p)).sum())
    if name == "ce-brier":
        return float(-(y * np.log(p)).sum() + opts.get("lam", 1.0) * ((p - y) ** 2).sum())
    if name == "mse-logits":
        return float(((z - v) ** 2).mean())
    if name == "squentropy":
        return float(-np.log(pc) + (z[not_c] ** 2).sum() / (k - 1))
    if name == "squentropy-soft":
        return float(-(y * np.log(p)).sum() + ((1 - y) * z**2).sum() / (k - 1))
    if name == "rescaled-square":
        kk, m = opts.get("k", 1.0), opts.get("M", 1.0)
        if opts.get("soft", False):
            return float(((z - m * y) ** 2).sum() / k)
        return float((kk * (z[c] - m) ** 2 + (z[not_c] ** 2).sum()) / k)
    if name == "noel-m":
        return float(1 / pc - 1)
    if name == "noel-m-full":
        return float(1 / pc - 1 + (1 / (1 - p[not_c]) - 1).sum())
    if name == "noel-param-m":
        return float(pc ** (-opts.get("alpha", 1.0)) - 1)
    if name == "noel-l":
        return float(1 / math.sqrt(pc * (2 - pc)))
    if name == "noel-l-full":
        onehot = (~not_c).astype(float)
        terms = onehot / np.sqrt(1 - (p - 1) ** 2) + (1 - onehot) / np.sqrt(1 - p**2) - 1
        return float(terms.sum())
    if name == "parabolic":
        return float(1 - pc**2)
    if name == "circle":
        return float(math.sqrt(1 - pc**2))
    if name == "cos":
        return float(math.cos(math.pi * pc / 2))
    raise KeyError(name)


# --------------------------------------------------------------------------- #
# Batches
# --------------------------------------------------------------------------- #


def make_batch(seed: int, ks=(4, 6, 18, 9, 4, 6), scale: float = 2.0, dtype=torch.float64):
    """Rows of games with different action-set sizes K at random slots of A=18.

    Returns logits, target (softmax of random expert values), mask, expert_values, all [B, A].
    """
    rng = np.random.default_rng(seed)
    b = len(ks)
    mask = np.zeros((b, A), dtype=bool)
    for r, k in enumerate(ks):
        mask[r, rng.choice(A, size=k, replace=False)] = True
    logits = rng.normal(0, scale, (b, A))
    values = rng.normal(0, scale, (b, A))
    ev = np.where(mask, values, -np.inf)
    target = np.exp(ev - ev.max(1, keepdims=True))
    target /= target.sum(1, keepdims=True)
    t = lambda x: torch.tensor(x, dtype=dtype)  # noqa: E731
    return t(logits), t(target), torch.tensor(mask), t(values)


def call(name: str, opts: dict, logits, target, mask, values) -> LossOutput:
    return get_loss(name, **opts)(logits, target, mask, expert_values=values)


# --------------------------------------------------------------------------- #
# Properness: minimise the expected loss over logits, compare softmax(z*) with q
# --------------------------------------------------------------------------- #


def _targets() -> list[np.ndarray]:
    """One soft target per K = 3..6 with distinct entries, plus the reference's example."""
    rng = np.random.default_rng(5)
    qs = [np.array([0.7, 0.2, 0.1])]
    for k in range(3, 7):
        e = np.exp(rng.normal(0, 1.0, k))
        qs.append(e / e.sum())
    return qs


def _embed(q: np.ndarray, seed: int):
    """Place q at random slots of A: returns target [K, A] one-hots, target [1, A], mask [1, A]."""
    slots = np.random.default_rng(seed).choice(A, size=len(q), replace=False)
    mask = torch.zeros(1, A, dtype=torch.bool)
    mask[0, slots] = True
    soft = torch.zeros(1, A, dtype=torch.float64)
    soft[0, slots] = torch.tensor(q)
    onehots = torch.zeros(len(q), A, dtype=torch.float64)
    onehots[torch.arange(len(q)), slots] = 1.0
    return onehots, soft, mask, torch.tensor(slots)


def minimise(name: str, opts: dict, q: np.ndarray, seed: int = 0, values=None, adam_steps: int = 0):
    """argmin_z of the expected loss: soft losses get q directly, hard-label losses
    Σ_c q_c ℓ(z; c). Returns (softmax(z*) over q's slots, z* at q's slots)."""
    loss = get_loss(name, **opts)
    onehots, soft, mask, slots = _embed(q, seed)
    vals = None
    if values is not None:
        vals = torch.zeros(1, A, dtype=torch.float64)
        vals[0, slots] = torch.tensor(values)
    qt = torch.tensor(q)
    z = torch.zeros(1, A, dtype=torch.float64, requires_grad=True)

    def objective() -> torch.Tensor:
        if loss.hard_label:
            rows = loss(z.expand(len(q), A), onehots, mask.expand(len(q), A)).loss
            return (qt * rows).sum()
        return loss(z, soft, mask, expert_values=vals).loss.sum()

    if adam_steps:
        opt = torch.optim.Adam([z], lr=0.5)
        for _ in range(adam_steps):
            opt.zero_grad()
            objective().backward()
            opt.step()
    else:
        opt = torch.optim.LBFGS([z], lr=1.0, max_iter=1000, tolerance_grad=1e-12,
                                tolerance_change=1e-15, line_search_fn="strong_wolfe")

        def closure():
            opt.zero_grad()
            f = objective()
            f.backward()
            return f

        opt.step(closure)
    zs = z.detach()[0, slots]
    return torch.softmax(zs, -1).numpy(), zs.numpy()


def _normalise(x: np.ndarray) -> np.ndarray:
    return x / x.sum()

