"""The learner's per-game numbers, taken over all games' rows at once, against a game-by-game reference;
and its stop on non-finite logits or losses names the first game with the problem."""

from __future__ import annotations

import copy

import pytest
import torch

from amn.collect import action_mask
from amn.config import GameConfig, TrainConfig
from amn.errors import NonFiniteLoss, UsageError
from amn.learner import Learner, build_student, make_loss
from amn.losses import LossOutput
from amn.student import FEATURE_DIM, entropy, masked_logits
from amn.tb import Scalars
from experts.atari import minimal_action_set

GAMES = ("Pong", "Breakout", "SpaceInvaders")
B = 5


def setup(feature_regression: bool, loss_fn=None, per_game_heads: bool = False, log_every: int = 0):
    cfg = TrainConfig(games=[GameConfig(g, "unused") for g in GAMES], batch_per_game=B, torch_threads=1,
                      feature_regression=feature_regression, log_every_agent_steps=log_every,
                      per_game_heads=per_game_heads)
    student, projections, params, optimizer = build_student(cfg)
    masks = torch.stack([action_mask(minimal_action_set(g)) for g in GAMES])  # [G, 18]
    gen = torch.Generator().manual_seed(0)
    batches = []
    for mask in masks:
        batch = {"obs": torch.randint(0, 256, (B, 4, 84, 84), generator=gen, dtype=torch.uint8),
                 "target": torch.softmax(3 * torch.randn(B, 18, generator=gen).masked_fill(~mask, float("-inf")), -1)}
        if feature_regression:
            batch["features"] = torch.rand(B, FEATURE_DIM, generator=gen)
        batches.append(batch)
    stats = Scalars()
    loss_fn = loss_fn or make_loss(cfg)
    learner = Learner(cfg, student, projections, params, optimizer, loss_fn, list(range(len(GAMES))), masks, stats)
    return learner, student, projections, masks, batches, stats, loss_fn


@pytest.mark.parametrize("feature_regression", [False, True])
def test_per_game_numbers_equal_a_game_by_game_computation(feature_regression):
    # log_every 1: every update also logs each game's own gradient norm
    learner, student, projections, masks, batches, stats, loss_fn = setup(feature_regression, log_every=1)
    before, before_proj = copy.deepcopy(student), copy.deepcopy(projections)  # the weights the update sees
    learner.update(batches, step=0)
    for g, (game, batch, mask) in enumerate(zip(GAMES, batches, masks)):
        rows = mask.expand(B, -1)
        with torch.no_grad():
            h = before.features(batch["obs"])
            z = before.head(h, torch.full((B,), g))
            expected = {
                "policy_regression_loss": float(loss_fn(z, batch["target"], rows).loss.mean()),
                "student_entropy": float(entropy(torch.softmax(masked_logits(z, rows), -1)).mean()),
                "target_entropy": float(entropy(batch["target"]).mean()),
                "mimic/agreement_train": float((masked_logits(z, rows).argmax(-1) == batch["target"].argmax(-1))
                                               .float().mean()),
            }
            if feature_regression:
                expected["feature_regression_loss"] = float(
                    (before_proj[g](h) - batch["features"]).pow(2).sum(-1).mean())
        with torch.enable_grad():  # the game's own policy-regression gradient over every parameter
            z = before.head(before.features(batch["obs"]), torch.full((B,), g))
            params = list(before.parameters()) + list(before_proj.parameters())
            grads = torch.autograd.grad(loss_fn(z, batch["target"], rows).loss.mean(), params, allow_unused=True)
            expected["mimic/grad_norm"] = float(torch.sqrt(sum(x.double().pow(2).sum() for x in grads if x is not None)))
        for tag, value in expected.items():
            assert stats.counts[f"{game}/{tag}"] == 1, tag
            assert stats.sums[f"{game}/{tag}"] == pytest.approx(value, rel=1e-5, abs=1e-6), (game, tag)
    assert ("Pong/feature_regression_loss" in stats.sums) == feature_regression
    total = sum(stats.sums[f"{g}/policy_regression_loss"] for g in GAMES) / len(GAMES)
    if not feature_regression:
        assert stats.sums["train/loss"] == pytest.approx(total, rel=1e-6)


def test_non_finite_logits_name_the_first_game_with_them_and_invalid_actions_do_not_count():
    learner, student, _, _, batches, _, _ = setup(False, per_game_heads=True)
    with torch.no_grad():
        for head in student.heads:  # UP (2) is in none of the three games' action sets
            head.bias[2] = float("nan")
    learner.update(batches, step=6)  # masked out: no stop
    with torch.no_grad():  # Breakout's and SpaceInvaders' own heads at FIRE (1), valid in both
        student.heads[1].bias[1] = student.heads[2].bias[1] = float("inf")
    with pytest.raises(NonFiniteLoss, match="student logits are NaN/inf at agent step 7 in Breakout$") as info:
        learner.update(batches, step=7)
    assert info.value.game == "Breakout" and info.value.step == 7


def test_a_non_finite_loss_names_its_game_and_rows():
    ce = make_loss(TrainConfig(games=[GameConfig("Pong", "unused")]))
    calls = []

    def second_game_breaks(logits, target, mask, expert_values=None):
        out = ce(logits, target, mask)
        calls.append(len(calls))
        if len(calls) == 2:  # Breakout: two rows go infinite
            out = LossOutput(loss=out.loss.clone().index_fill_(0, torch.tensor([0, 3]), float("inf")),
                             diagnostics=out.diagnostics)
        return out

    learner, _, _, _, batches, _, _ = setup(False, loss_fn=second_game_breaks)
    with pytest.raises(NonFiniteLoss, match=r"non-finite policy-regression loss \(inf\) at agent step 3 in "
                                            r"Breakout \(loss ce\): 2 of 5 rows non-finite") as info:
        learner.update(batches, step=3)
    assert info.value.game == "Breakout" and info.value.nonfinite_rows == 2 and info.value.rows == B


def test_a_non_finite_loss_comes_before_a_later_games_non_finite_logits():
    ce = make_loss(TrainConfig(games=[GameConfig("Pong", "unused")]))

    def first_game_breaks(logits, target, mask, expert_values=None):
        out = ce(logits, target, mask)
        return LossOutput(loss=out.loss * float("nan"), diagnostics=out.diagnostics)

    learner, student, _, _, batches, _, _ = setup(False, loss_fn=first_game_breaks, per_game_heads=True)
    with torch.no_grad():
        student.heads[1].bias[1] = float("inf")  # Breakout's logits too, after Pong in game order
    with pytest.raises(NonFiniteLoss, match=r"non-finite policy-regression loss \(nan\) at agent step 2 in Pong "):
        learner.update(batches, step=2)


def test_a_loss_without_one_value_per_row_is_refused():
    ce = make_loss(TrainConfig(games=[GameConfig("Pong", "unused")]))

    def batch_mean(logits, target, mask, expert_values=None):
        out = ce(logits, target, mask)
        return LossOutput(loss=out.loss.mean(), diagnostics=out.diagnostics)

    learner, _, _, _, batches, _, _ = setup(False, loss_fn=batch_mean)
    with pytest.raises(UsageError, match=r"returned shape \[\], expected \[5\]: one value per row"):
        learner.update(batches, step=0)
