"""``AleVecEnv`` (the SB3 face of the expert-training env) gives every reset fresh games."""

from __future__ import annotations

import numpy as np

from experts.atari import make_atari_vec
from experts.sb3_vec_env import AleVecEnv


def test_ale_seeds_env_i_with_seed_plus_i():
    """The premise of the seed step: ``reset(seed=s)`` seeds env i with s + i (ale_py's rule),
    so env 1 of a vector seeded 20 starts the game a single env seeded 21 starts."""
    vec, single = make_atari_vec("Breakout", 2), make_atari_vec("Breakout", 1)
    try:
        obs, _ = vec.reset(seed=20)
        alone, _ = single.reset(seed=21)
    finally:
        vec.close()
        single.close()
    np.testing.assert_array_equal(obs[1], alone[0])


def test_resets_never_reuse_a_seed():
    """Two resets of 3 envs get seeds 7..9 then 10..12: no env replays a game another env had.
    Stepping the seed by 1 gave 8..10 the second time, env i the seed env i+1 had just played."""
    env = AleVecEnv("Breakout", 3, seed=7)
    given: list[list[int]] = []
    real_reset = env.env.reset

    def recording_reset(*, seed: int):
        given.append([seed + i for i in range(env.num_envs)])  # ale_py's rule, checked above
        return real_reset(seed=seed)

    env.env.reset = recording_reset
    try:
        env.reset()
        env.reset()
    finally:
        env.close()
    assert given == [[7, 8, 9], [10, 11, 12]]
    assert not set(given[0]) & set(given[1])
