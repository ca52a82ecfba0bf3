"""FIRE after a life loss: pressed for an rl-zoo expert (SB3's ``AtariWrapper`` did it for it
in training), left to the agent for an expert of ``amn experts train``, in the collector and
in evaluation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from experts.atari import PIPELINE_ALE, PIPELINE_SB3, LifeLossFire, life_loss_presses_fire, life_losses

NOOP = 0


# -- the decision -----------------------------------------------------------------------------

def test_only_the_sb3_pipeline_pressed_fire():
    assert life_loss_presses_fire(PIPELINE_SB3) and not life_loss_presses_fire(PIPELINE_ALE)
    with pytest.raises(ValueError, match="unknown observation pipeline 'gym'; expected one of"):
        life_loss_presses_fire("gym")


def test_fire_index_per_action_space_and_games_without_fire():
    assert LifeLossFire.for_game("Breakout", 2, full_actions=True).fire == 1  # FULL_ACTION_MEANINGS
    space = LifeLossFire.for_game("SpaceInvaders", 2, full_actions=False)
    assert space.fire == 1  # NOOP, FIRE, RIGHT, LEFT, RIGHTFIRE, LEFTFIRE
    assert LifeLossFire.for_game("Freeway", 2, full_actions=False) is None  # NOOP, UP, DOWN: SB3 adds no FireResetEnv


def test_fire_replaces_the_action_on_the_step_after_a_life_loss_only():
    fire = LifeLossFire(3, fire=1)
    actions = np.array([3, 2, 0])
    np.testing.assert_array_equal(fire.override(actions), actions)  # nothing lost yet
    fire.observe(np.array([False, True, False]))
    np.testing.assert_array_equal(fire.override(actions), [3, 1, 0])
    fire.observe(np.zeros(3, dtype=bool))  # the FIRE step lost nothing: the agent acts again
    np.testing.assert_array_equal(fire.override(actions), actions)
    fire.observe(np.array([True, False, True]))
    fire.reset()  # a real reset: AtariVectorEnv fires itself
    np.testing.assert_array_equal(fire.override(actions), actions)


def test_a_game_over_is_not_a_life_loss():
    before, after = np.array([3, 1, 2]), np.array([2, 5, 2])  # env 1: game over, the next game has 5
    np.testing.assert_array_equal(life_losses(before, after, np.array([False, True, False])), [True, False, False])


def _collector(pipeline: str, game: str = "Breakout"):
    from amn.collect import Collector
    from amn.config import from_dict
    from amn.replay import GameReplay
    from experts import Expert
    from experts.atari import minimal_action_set
    from experts.network import ExpertNetwork

    expert = Expert(ExpertNetwork(len(minimal_action_set(game))), game, "ppo", {"observation_pipeline": pipeline})
    cfg = from_dict({"games": [{"game": game, "expert": "unused"}], "learning_starts_per_game": 100,
                     "replay_capacity_per_game": 1000})
    return Collector(cfg, [expert], [GameReplay(1000)], seed=0)


@pytest.mark.parametrize("pipeline, game, presses", [
    (PIPELINE_ALE, "Breakout", False), (PIPELINE_SB3, "Breakout", True), (PIPELINE_SB3, "Freeway", False)])
def test_collector_follows_the_experts_pipeline(pipeline, game, presses):
    collector = _collector(pipeline, game)
    try:
        assert (collector.slots[0].life_loss_fire is not None) == presses
    finally:
        collector.close()


# -- real Breakout: a policy that never presses FIRE ------------------------------------------

def _noop_student(obs: torch.Tensor, game_ids: torch.Tensor) -> torch.Tensor:
    """Logits ``[N, 18]`` that always pick NOOP: serves no ball, and keeps the paddle still."""
    logits = torch.zeros(len(obs), 18)
    logits[:, NOOP] = 1.0
    return logits


@pytest.mark.parametrize("pipeline", [PIPELINE_ALE, PIPELINE_SB3])
def test_collector_serves_the_ball_after_a_life_loss_only_for_a_zoo_expert(pipeline):
    """The ball is served at the reset (AtariVectorEnv's FIRE), falls past the still paddle, a
    life is lost. Then, for a zoo expert, the collector's FIRE serves it again: the screen moves
    and the next life is lost within ~30 steps. For an expert of ours the game waits for the
    agent's FIRE: the screen stays frozen and no life is lost in 200 steps."""
    collector = _collector(pipeline)
    slot, rng = collector.slots[0], np.random.default_rng(0)
    try:
        for _ in range(200):
            collector.step(_noop_student, 0.0, rng)
            if slot.tracker.lives[0] < 5:
                break
        else:
            pytest.fail("the served ball was not lost in 200 NOOP steps")
        frames, lives = [], []
        for _ in range(200):
            collector.step(_noop_student, 0.0, rng)
            frames.append(slot.obs[0, -1].copy())
            lives.append(int(slot.tracker.lives[0]))
    finally:
        collector.close()
    moving = any(not np.array_equal(a, b) for a, b in zip(frames, frames[1:]))
    if pipeline == PIPELINE_SB3:
        assert moving and min(lives) < 4, lives
    else:
        assert not moving and set(lives) == {4}, lives


def test_evaluation_serves_the_ball_after_a_life_loss_when_asked():
    """Evaluation, NOOP policy, ε = 0, one game capped at 4,000 frames (1,000 agent steps): with
    FIRE after each life loss its five balls are lost in ~120 steps and the game ends; without,
    it stalls after the first life until the cap."""
    from amn.evaluation import play_games

    steps = {}
    for fire in (False, True):
        calls = []

        def noop(obs: np.ndarray) -> np.ndarray:
            calls.append(len(obs))
            return np.zeros(len(obs), dtype=np.int64)

        play_games(noop, "Breakout", 1, epsilon=0.0, max_frames=4_000, fire_after_life_loss=fire, progress=False)
        steps[fire] = len(calls)
    assert steps[False] >= 990 and steps[True] < 300, steps
