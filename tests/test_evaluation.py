"""``amn.evaluation``: full games on the real ALE, per-env quotas, scores and normalisation."""

from __future__ import annotations

import math

import numpy as np
import pytest

from amn.evaluation import (HUMAN_RANDOM, human_normalized, human_normalized_summary, play_games,
                            play_games_side_by_side, summarize)


def _noop(obs: np.ndarray) -> np.ndarray:
    return np.zeros(len(obs), dtype=np.int64)


def test_random_policy_full_games():
    """Breakout with uniform random actions ends in a few hundred steps: real full games, fast."""
    returns = play_games(_noop, "breakout", 2, epsilon=1.0, seed=3, progress=False)
    assert len(returns) == 2
    assert all(isinstance(r, float) and 0 <= r < 50 for r in returns)


def test_quota_per_env_is_deterministic():
    kwargs = dict(epsilon=1.0, seed=5, num_envs=2, max_frames=2_000, progress=False)
    first = play_games(_noop, "Breakout", 3, **kwargs)
    assert len(first) == 3  # env 0 plays 2 games, env 1 plays 1; later games are ignored
    assert play_games(_noop, "Breakout", 3, **kwargs) == first


def _paddle_follower(obs: np.ndarray) -> np.ndarray:
    """A policy that reads its own observations: the brightest column of the bottom rows decides."""
    column = obs[:, -1, 70:80, :].sum(axis=1).argmax(axis=1)
    return np.where(column < 42, 3, 2).astype(np.int64)  # Breakout: LEFT / RIGHT


def _fire_then_left(obs: np.ndarray) -> np.ndarray:
    return np.where(obs[:, -1].mean(axis=(1, 2)) > 0, 1, 3).astype(np.int64)


def test_side_by_side_plays_the_same_games_as_alone():
    """Each agent must see its own block of envs, seeded and explored as when it plays alone."""
    kwargs = dict(epsilon=0.3, seed=7, num_envs=2, max_frames=3_000, progress=False)
    alone = [play_games(act, "Breakout", 3, **kwargs) for act in (_paddle_follower, _fire_then_left, _noop)]
    assert play_games_side_by_side([_paddle_follower, _fire_then_left, _noop], "Breakout", 3, **kwargs) == alone
    assert play_games_side_by_side([_noop, _paddle_follower], "Breakout", 3, **kwargs) == [alone[2], alone[0]]
    assert alone[0] != alone[2]  # the agents differ, so a mixed-up block would show


def test_frame_cap_ends_a_game():
    """NOOP in Pong never ends the game by itself within 400 frames: the cap must."""
    returns = play_games(_noop, "Pong", 1, epsilon=0.0, max_frames=400, progress=False)
    assert len(returns) == 1 and -21 <= returns[0] <= 0


def test_bad_arguments():
    with pytest.raises(ValueError, match="episodes must be >= 1"):
        play_games(_noop, "Pong", 0)
    with pytest.raises(ValueError, match="epsilon must be in"):
        play_games(_noop, "Pong", 1, epsilon=1.5)
    with pytest.raises(ValueError, match="unknown game 'Tetrix'; did you mean Tetris"):
        play_games(_noop, "Tetrix", 1)
    with pytest.raises(ValueError, match=r"act must return 1 actions in \[0, 6\)"):
        play_games(lambda obs: np.full(len(obs), 7), "Pong", 1, epsilon=0.0, max_frames=400, progress=False)


def test_summarize_and_normalisation():
    s = summarize([1, 2, 3, 4])
    assert s == {"mean": 2.5, "std": math.sqrt(1.25), "episodes": 4, "returns": [1.0, 2.0, 3.0, 4.0]}
    with pytest.raises(ValueError):
        summarize([])
    random, human = HUMAN_RANDOM["Pong"]
    assert human_normalized(random, "pong") == pytest.approx(0.0)
    assert human_normalized(human, "PongNoFrameskip-v4") == pytest.approx(1.0)
    assert len(HUMAN_RANDOM) == 57  # the Atari-57 table (tests/test_games.py checks its values)
    assert human_normalized_summary([random, human], "Pong")["normalized_mean"] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="no random/human reference scores for Tetris"):
        human_normalized(0.0, "Tetris")  # an ale-py game outside the 57
