"""Mimicry diagnostics (amn/mimicry.py): KL, agreement, the CC mean, the held-out set and its numbers."""

from __future__ import annotations

import numpy as np
import torch

from amn import mimicry
from amn.losses import get_loss
from amn.student import Student


def _mask(k: int, rows: int = 1) -> torch.Tensor:
    m = torch.zeros(rows, 18, dtype=torch.bool)
    m[:, :k] = True
    return m


def test_kl_is_zero_at_the_target_and_positive_elsewhere():
    target = torch.tensor([[0.5, 0.3, 0.2] + [0.0] * 15], dtype=torch.float64)
    mask = _mask(3)
    log_q = torch.log_softmax(torch.log(target.clamp_min(1e-30)).masked_fill(~mask, float("-inf")), -1)
    assert abs(float(mimicry.kl(target, log_q))) < 1e-12
    uniform = torch.log(torch.full((1, 18), 1 / 3, dtype=torch.float64)).masked_fill(~mask, float("-inf"))
    expected = sum(p * np.log(p * 3) for p in (0.5, 0.3, 0.2))
    assert abs(float(mimicry.kl(target, uniform)) - expected) < 1e-12


def test_agreement_counts_greedy_matches_over_valid_actions():
    target = torch.tensor([[0.1, 0.9] + [0.0] * 16, [0.8, 0.2] + [0.0] * 16])
    logits = torch.zeros(2, 18)
    logits[:, 1] = 1.0
    logits[:, 5] = 9.0  # an invalid action never counts
    assert mimicry.agreement(logits, target, _mask(2, 2)) == 0.5


def test_cc_mean_is_a_distribution_and_is_uniform_at_tied_logits():
    mask = _mask(6, 3)
    z = torch.tensor([[0.0] * 18, [3.0, 1.0, 0.0, 0.0, -1.0, 2.0] + [0.0] * 12, [40.0, 0.0, 0.0, 1e-9, 5.0, 5.0] + [0.0] * 12])
    mu = mimicry.cc_mean_log(z, mask, 1.0).exp()
    torch.testing.assert_close(mu.sum(-1), torch.ones(3, dtype=torch.float64), atol=1e-12, rtol=0)
    torch.testing.assert_close(mu[0, :6], torch.full((6,), 1 / 6, dtype=torch.float64), atol=1e-12, rtol=0)
    assert (mu[:, 6:] == 0).all()
    # the CC mean is flatter than the softmax (the CC loss's minimiser is λ sharper than its mean)
    assert mu[1, 0] < torch.softmax(z[1, :6].double(), -1)[0]


def test_heldout_set_is_fixed_for_a_seed_and_its_numbers_are_in_range():
    from experts import load_expert

    expert = load_expert("pong")
    a = mimicry.collect_heldout(expert, "Pong", 24, seed=5, envs=4, stride=3)
    b = mimicry.collect_heldout(expert, "Pong", 24, seed=5, envs=4, stride=3)
    assert a.obs.shape == (24, 4, 84, 84) and a.target.shape == (24, 18)
    np.testing.assert_array_equal(a.obs, b.obs)
    np.testing.assert_allclose(a.target.sum(-1), 1.0, atol=1e-6)
    assert len({o.tobytes() for o in a.obs}) > 12  # spread over the games, not one state repeated
    torch.manual_seed(0)
    student = Student(1)
    for name, opts in (("ce", {}), ("cc", {"logit_scale": "auto"})):
        out = mimicry.heldout_diagnostics(student, a, 0, get_loss(name, **opts))
        assert 0.0 <= out["agreement_heldout"] <= 1.0 and out["kl_heldout"] >= 0.0
        assert 0.0 <= out["dead_relu_share"] <= 1.0 and out["logit_spread"] >= 0.0
        assert ("kl_cc_mean_heldout" in out) == (name == "cc")
    # a student that copies the expert's logits agrees everywhere and has KL 0
    class Copy(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))

        def features(self, obs):
            return torch.ones(len(obs), 512)

        def head(self, h, ids):
            z = torch.full((len(h), 18), -30.0)
            z[:, expert.action_set] = expert.values(self.obs) + 0 * h[:, :1]
            return z

    copy = Copy()
    copy.obs = a.obs
    out = mimicry.heldout_diagnostics(copy, a, 0, get_loss("ce"), batch=len(a.obs))
    assert out["agreement_heldout"] == 1.0 and out["kl_heldout"] < 1e-6 and out["dead_relu_share"] == 0.0


def test_a_training_run_logs_every_mimicry_number_per_game(tmp_path):
    from pathlib import Path

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from amn.config import load_config
    from amn.trainer import train

    smoke = Path(__file__).resolve().parents[1] / "configs" / "smoke.yaml"
    cfg = load_config(smoke, ["learning_starts_per_game=100", "replay_capacity_per_game=1000",
                              "log_every_agent_steps=100", "total_agent_steps=400", "heldout_states_per_game=16",
                              "mimicry_every_agent_steps=200", "loss=cc", "loss_options={logit_scale: auto}"])
    train(cfg, tmp_path / "run", progress=False, evaluate=False)
    acc = EventAccumulator(str(tmp_path / "run" / "tb"))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    for key in ("agreement_train", "grad_norm", "agreement_heldout", "kl_heldout", "kl_cc_mean_heldout",
                "logit_spread", "dead_relu_share"):
        assert f"Pong/mimic/{key}" in tags, key
    assert [e.step for e in acc.Scalars("Pong/mimic/agreement_heldout")] == [200, 400]
