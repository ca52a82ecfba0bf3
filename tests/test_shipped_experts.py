"""The experts shipped in experts/shipped/: they load fast, act on real ALE observations, and
score the same in the student's data collection as in their training pipeline (a short run of
scripts/check_observation_contract.py; the README gives the 10-game figures)."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from experts import load_expert
from experts.atari import PIPELINES, make_atari_vec, minimal_action_set
from experts.shipped import MAX_WEIGHTS_BYTES, SHIPPED_DIR, shipped_names

SHIPPED = shipped_names()


def real_observations(game: str, n: int = 4, steps: int = 60) -> np.ndarray:
    env = make_atari_vec(game, n)
    obs, _ = env.reset(seed=3)
    rng = np.random.default_rng(3)
    for _ in range(steps):
        obs, *_ = env.step(rng.integers(0, len(minimal_action_set(game)), n))
    env.close()
    return obs


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_expert_loads_and_acts(name):
    start = time.monotonic()
    expert = load_expert(name.upper())  # names are case-insensitive
    assert time.monotonic() - start < 2.0
    meta = expert.meta
    assert (SHIPPED_DIR / meta["weights"]).stat().st_size <= MAX_WEIGHTS_BYTES
    assert meta["observation_pipeline"] in PIPELINES and meta["training_steps"] > 0 and meta["command"]
    assert meta["score"]["episodes"] >= 10 and len(meta["score"]["returns"]) == meta["score"]["episodes"]
    obs = real_observations(expert.game)
    policy = expert.soft_policy(obs)
    assert policy.shape == (4, expert.num_actions)
    torch.testing.assert_close(policy.sum(-1), torch.ones(4))
    sharp = expert.soft_policy(obs, temperature=0.01)
    assert (sharp.max(-1).values >= policy.max(-1).values - 1e-6).all()  # sharpens as τ -> 0
    assert expert.features(obs).shape == (4, 512)


# A good Atlantis agent plays to ALE's 108k-frame cap (~27k agent steps a game, ~1 min of CPU per
# pipeline here), so its short run stops each game at this many frames, the same in both pipelines.
SHORT_RUN_MAX_FRAMES = {"Atlantis": 20_000}


@pytest.mark.slow
@pytest.mark.parametrize("name", SHIPPED)
def test_observation_contract_short_run(name):
    """Two games each way (~1 min of CPU), same seed: the collector's return matches the
    training pipeline's within the expert's measured game-to-game spread, and both are far above
    random play. Breakout's games vary a lot (one of the shipped expert's ten scored 243, the
    median is 50), so the floor is 30 % of the way from random to the expert's median game.
    A game stopped at a frame cap must still beat a random player's whole game."""
    from amn.collect import play_through_collector
    from amn.evaluation import HUMAN_RANDOM, play_games

    expert = load_expert(name)
    assert expert.observation_pipeline == "ale_py.AtariVectorEnv"  # shipped experts are trained here
    cap = SHORT_RUN_MAX_FRAMES.get(expert.game, 108_000)
    collected = play_through_collector(expert, 2, epsilon=0.01, seed=5, max_frames=cap)
    trained = play_games(expert.act, expert.game, 2, epsilon=0.01, seed=5, max_frames=cap, progress=False)
    spread = max(expert.meta["score"]["std"], 1.0)
    assert abs(np.mean(collected) - np.mean(trained)) <= 3 * spread, (collected, trained)
    random_score = HUMAN_RANDOM[expert.game][0]
    if cap < 108_000:
        floor = random_score
    else:
        floor = random_score + 0.3 * (np.median(expert.meta["score"]["returns"]) - random_score)
    assert min(np.mean(collected), np.mean(trained)) >= floor, (collected, trained, floor)


def test_collector_frame_cap_ends_a_game():
    """The collector's ``max_frames`` reaches its envs: the Pong expert wins full games by ~18
    points, but a game stopped after 400 frames (100 agent steps) has scored at most a point or two."""
    from amn.collect import play_through_collector

    returns = play_through_collector(load_expert("pong"), 2, seed=5, max_frames=400)
    assert len(returns) == 2 and all(abs(r) <= 2 for r in returns), returns
