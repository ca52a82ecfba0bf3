"""How well the student mimics its experts, beside its returns (TensorBoard ``<Game>/mimic/*``).

Returns are noisy and come only at evaluations; these numbers come with every log point and
show a collapse when it starts:

- ``agreement_train``: top-1 agreement of the student's greedy action with the expert's on
  the update's own minibatch (states the student itself visited), in [0, 1];
- on a fixed held-out set of expert-labelled states per game (``HeldOut``: the expert plays
  ε-greedily in its own environments, with a seed apart from training's, so the set is the same
  at every start and resume of a run on one machine):
  ``agreement_heldout``, ``kl_heldout`` = KL(expert ‖ softmax(z)) in nats, and for ``cc``
  ``kl_cc_mean_heldout`` = KL(expert ‖ CC mean), the distribution CC actually fits;
  ``logit_spread`` (mean over states of max − min valid logit, nats) and
  ``dead_relu_share`` (share of the 512 penultimate units that are 0 on every held-out state);
- ``grad_norm``: the L2 norm of the policy-regression gradient of each game alone, over all
  student parameters (at log points only: one extra backward per game).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from amn.student import NUM_OUTPUTS, Student, masked_logits


@dataclass
class HeldOut:
    """Expert-labelled states of one game: ``obs`` uint8 ``[N, 4, 84, 84]``, ``target`` float32
    ``[N, 18]`` (soft targets, 0 outside the game's actions), ``mask`` bool ``[18]``."""

    game: str
    obs: np.ndarray
    target: np.ndarray
    mask: np.ndarray


def collect_heldout(expert, game: str, n: int, *, seed: int, epsilon: float = 0.05, stride: int = 7,
                    envs: int = 8, temperature: float = 1.0) -> HeldOut:
    """``n`` states of ``game`` visited by ``expert`` (ε-greedy), every ``stride``-th agent step of
    ``envs`` environments after a warm-up, so the states are spread over whole games."""
    from experts.atari import make_atari_vec

    env = make_atari_vec(game, envs)
    rng = np.random.default_rng(seed)
    obs, _ = env.reset(seed=seed)
    kept: list[np.ndarray] = []
    try:
        for t in range(stride * (-(-n // envs)) + 30):
            if t >= 30 and t % stride == 0:
                kept.append(obs.copy())
            greedy = expert.act(obs)
            random = rng.integers(0, len(expert.action_set), envs)
            obs, *_ = env.step(np.where(rng.random(envs) < epsilon, random, greedy))
    finally:
        env.close()
    states = np.concatenate(kept)[:n]
    target = np.zeros((len(states), NUM_OUTPUTS), dtype=np.float32)
    target[:, expert.action_set] = expert.soft_policy(states, temperature).numpy()
    mask = np.zeros(NUM_OUTPUTS, dtype=bool)
    mask[expert.action_set] = True
    return HeldOut(game, states, target, mask)


def kl(target: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """KL(target ‖ q) per row in nats, with 0·log 0 = 0; ``log_q`` −inf only where target is 0."""
    t = target.double()
    terms = torch.where(t > 0, t * (t.clamp_min(1e-300).log() - log_q.double()), torch.zeros_like(t))
    return terms.sum(-1)


def agreement(logits: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> float:
    """Share of rows whose greedy student action is the expert's (its target's argmax)."""
    return float((masked_logits(logits, mask).argmax(-1) == target.argmax(-1)).float().mean())


def cc_mean_log(logits: torch.Tensor, mask: torch.Tensor, scale) -> torch.Tensor:
    """log of the CC mean μ(α·z) over valid actions (−inf elsewhere), by the guarded normaliser:
    μ = ∇ log E(η) = softmax(η) − ∇ log C(η), η = α·z (float64)."""
    from amn.losses import cc_log_normaliser

    eta = (logits.double() * (scale if isinstance(scale, float) else scale.double())).detach()
    eta = eta.masked_fill(~mask, 0.0).requires_grad_(True)
    with torch.enable_grad():
        (grad_log_c,) = torch.autograd.grad(cc_log_normaliser(eta, mask=mask).sum(), eta)
    mu = torch.softmax(masked_logits(eta.detach(), mask), -1) - grad_log_c
    # μ lies in the open simplex; rounding can leave an entry a few ulps under 0
    return mu.clamp_min(1e-300).log().masked_fill(~mask, float("-inf"))


@torch.no_grad()
def heldout_diagnostics(student: Student, heldout: HeldOut, game_id: int, loss_fn,
                        batch: int = 256) -> dict[str, float]:
    """The held-out numbers of one game (see the module docstring)."""
    device = next(student.parameters()).device
    mask = torch.from_numpy(heldout.mask).to(device)
    logits, active = [], None
    for i in range(0, len(heldout.obs), batch):
        obs = torch.from_numpy(heldout.obs[i:i + batch]).to(device)
        h = student.features(obs)
        ids = torch.full((len(obs),), game_id, dtype=torch.long, device=device)
        logits.append(student.head(h, ids).float())
        alive = (h > 0).any(0)
        active = alive if active is None else active | alive
    z = torch.cat(logits)
    target = torch.from_numpy(heldout.target).to(device)
    rows_mask = mask.expand_as(z)
    valid_z = z.masked_fill(~rows_mask, float("nan"))
    out = {
        "agreement_heldout": agreement(z, target, rows_mask),
        "kl_heldout": float(kl(target, torch.log_softmax(masked_logits(z, rows_mask), -1)).mean()),
        "logit_spread": float((valid_z.nan_to_num(-np.inf).amax(-1) - valid_z.nan_to_num(np.inf).amin(-1)).mean()),
        "dead_relu_share": float(1.0 - active.float().mean()),
    }
    if getattr(loss_fn, "name", None) == "cc":
        out["kl_cc_mean_heldout"] = float(kl(target, cc_mean_log(z, rows_mask, loss_fn.scale(rows_mask, z.dtype))).mean())
    return out
