"""Score an agent on full Atari games, the way the project reports scores.

Protocol (the defaults): full games (game over, not life loss), raw unclipped
score, epsilon-greedy with epsilon 0.01, no sticky actions, up to 30 no-op
starts, 108,000-frame cap, observations from ``experts.atari.make_atari_vec``.
Shared by the expert tools and the student trainer.
"""

from __future__ import annotations

import time
from typing import Callable

import numpy as np

#: Canonical game -> (random score, human score); dqn_zoo ``atari_data.py``.
HUMAN_RANDOM: dict[str, tuple[float, float]] = {
    "Atlantis": (12_850.0, 29_028.1),
    "Boxing": (0.1, 12.1),
    "Breakout": (1.7, 30.5),
    "CrazyClimber": (10_780.5, 35_829.4),
    "Enduro": (0.0, 860.5),
    "Pong": (-20.7, 14.6),
    "Seaquest": (68.4, 42_054.7),
    "SpaceInvaders": (148.0, 1_668.7),
}

#: An agent: observations ``uint8 [N, 4, 84, 84]`` -> greedy actions ``[N]`` (minimal-action-set indices).
Actor = Callable[[np.ndarray], np.ndarray]


def play_games(
    act: Actor,
    game: str,
    episodes: int,
    *,
    epsilon: float = 0.01,
    sticky: bool = False,
    seed: int = 0,
    num_envs: int | None = None,
    max_frames: int = 108_000,
    progress: bool = True,
) -> list[float]:
    """Play ``episodes`` full games and return their raw scores, in the order they finished.

    :param act: greedy policy, ``uint8 [N, 4, 84, 84] -> int [N]`` in the game's minimal
        action set; epsilon-greedy exploration is applied here, not by ``act``
    :param game: any spelling ``experts.atari.canonical_game`` accepts
    :param epsilon: probability of replacing the greedy action by a uniform random one
    :param sticky: sticky actions (repeat probability 0.25, ALE v5) instead of none
    :param seed: seeds the environments and the exploration noise
    :param num_envs: games played in parallel (default ``min(episodes, 8)``)
    :param max_frames: per-game cap in emulator frames (a capped game counts with its score so far)
    :param progress: show a tqdm bar (games done, ETA, running mean)

    Each env is assigned its number of games up front (``episodes`` split as evenly as
    possible) and later games it starts are ignored, so the result is not biased toward
    short games, as "take the first ``episodes`` to finish" would be.
    """
    from tqdm import tqdm

    from experts.atari import EnvSettings, canonical_game, make_atari_vec

    game = canonical_game(game)
    if episodes < 1:
        raise ValueError(f"episodes must be >= 1, got {episodes}")
    if not 0.0 <= epsilon <= 1.0:
        raise ValueError(f"epsilon must be in [0, 1], got {epsilon}")
    n = min(episodes, num_envs or 8)
    if n < 1:
        raise ValueError(f"num_envs must be >= 1, got {num_envs}")
    quota = np.array([episodes // n + (i < episodes % n) for i in range(n)])
    played = np.zeros(n, dtype=np.int64)
    running = np.zeros(n, dtype=np.float64)
    rng = np.random.default_rng(seed)
    results: list[float] = []

    env = make_atari_vec(game, n, settings=EnvSettings(sticky=sticky, max_frames=max_frames))
    num_actions = int(env.single_action_space.n)
    steps, start = 0, time.monotonic()
    try:
        obs, _ = env.reset(seed=seed)
        with tqdm(total=episodes, unit="game", disable=not progress, dynamic_ncols=True,
                  desc=f"{game} eval", mininterval=2.0) as bar:
            while (played < quota).any():
                actions = np.asarray(act(obs)).astype(np.int64).reshape(-1)
                if actions.shape != (n,) or actions.min() < 0 or actions.max() >= num_actions:
                    raise ValueError(f"act must return {n} actions in [0, {num_actions}) for {game}, "
                                     f"got shape {actions.shape} range [{actions.min()}, {actions.max()}]")
                if epsilon > 0:
                    explore = rng.random(n) < epsilon
                    actions[explore] = rng.integers(0, num_actions, int(explore.sum()))
                obs, reward, terminated, truncated, _ = env.step(actions)
                running += reward
                steps += n
                for i in np.flatnonzero(terminated | truncated):
                    if played[i] < quota[i]:
                        results.append(float(running[i]))
                        played[i] += 1
                        bar.update(1)
                        bar.set_postfix(mean=f"{np.mean(results):.1f}",
                                        sps=f"{steps / (time.monotonic() - start):.0f}")
                    running[i] = 0.0
    finally:
        env.close()
    return results


def summarize(returns: list[float]) -> dict:
    """``{"mean", "std", "episodes", "returns"}``; std is the population std (ddof 0, as SB3 reports)."""
    values = np.asarray(returns, dtype=np.float64)
    if values.size == 0:
        raise ValueError("no returns to summarize")
    return {"mean": float(values.mean()), "std": float(values.std()), "episodes": int(values.size),
            "returns": [float(r) for r in values]}


def human_normalized(score: float, game: str) -> float:
    """``(score - random) / (human - random)``; 0 = random play, 1 = human level."""
    from experts.atari import canonical_game

    game = canonical_game(game)
    if game not in HUMAN_RANDOM:
        raise ValueError(f"no random/human reference scores for {game}; known: {', '.join(HUMAN_RANDOM)}")
    random, human = HUMAN_RANDOM[game]
    return (score - random) / (human - random)


def human_normalized_summary(returns: list[float], game: str) -> dict:
    """``summarize(returns)`` plus ``normalized_mean`` (human-normalised mean score)."""
    out = summarize(returns)
    out["normalized_mean"] = human_normalized(out["mean"], game)
    return out
