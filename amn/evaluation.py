"""Score an agent on full Atari games, the way the project reports scores.

Protocol (the defaults): full games (game over, not life loss), raw unclipped
score, epsilon-greedy with epsilon 0.01, no sticky actions, up to 30 no-op
starts, 108,000-frame cap, observations from ``experts.atari.make_atari_vec``.
FIRE is pressed for the agent only when a game starts, unless the game is played the
way an rl-zoo expert was trained (``fire_after_life_loss``). Shared by the expert
tools and the student trainer.
"""

from __future__ import annotations

import time
from typing import Callable, Sequence

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


def play_games(act: Actor, game: str, episodes: int, **protocol) -> list[float]:
    """Play ``episodes`` full games and return their raw scores, in the order they finished.

    ``protocol`` takes the keyword options of :func:`play_games_side_by_side` (epsilon,
    sticky, seed, num_envs, max_frames, fire_after_life_loss, progress), documented there;
    this is its one-agent case.
    """
    return play_games_side_by_side([act], game, episodes, **protocol)[0]


def play_games_side_by_side(
    acts: Sequence[Actor],
    game: str,
    episodes: int,
    *,
    epsilon: float = 0.01,
    sticky: bool = False,
    seed: int = 0,
    num_envs: int | None = None,
    max_frames: int = 108_000,
    fire_after_life_loss: bool = False,
    progress: bool = True,
) -> list[list[float]]:
    """Each agent's raw full-game scores, ``[play_games(act, ...) for act in acts]``, played at once.

    :param acts: greedy policies, ``uint8 [N, 4, 84, 84] -> int [N]`` in the game's minimal
        action set; epsilon-greedy exploration is applied here, not by an ``act``
    :param game: any spelling ``experts.atari.canonical_game`` accepts
    :param episodes: full games per agent
    :param epsilon: probability of replacing the greedy action by a uniform random one
    :param sticky: sticky actions (repeat probability 0.25, ALE v5) instead of none
    :param seed: seeds the environments and the exploration noise
    :param num_envs: games played in parallel per agent (default ``min(episodes, 8)``)
    :param max_frames: per-game cap in emulator frames (a capped game counts with its score so far)
    :param fire_after_life_loss: press FIRE (if the game has it) in place of the agent's action on
        the step after each life loss, as SB3's ``AtariWrapper`` did while an rl-zoo expert trained
        (``experts.atari.life_loss_presses_fire(expert.observation_pipeline)``); a student of such
        an expert learned in a collector that did the same. That step counts as a step of the game.
    :param progress: show a tqdm bar (games done, ETA, running means)

    Each env is assigned its number of games up front (``episodes`` split as evenly as
    possible) and later games it starts are ignored, so the result is not biased toward
    short games, as "take the first ``episodes`` to finish" would be. Scores are listed in
    the order they finished.

    Each agent has its own vector env, seeded and explored exactly as when it plays alone,
    so the returns are identical. They take turns: while one agent's network picks its
    actions, the other agents' envs are emulating their last ones (``send`` returns at once,
    ``recv`` waits), which hides part of the emulator's time: two agents side by side take
    1.09x (Atlantis) to 1.17x (Breakout) less wall time than one after the other on this
    2-core machine (``scripts/bench_side_by_side.py``; the CNN forward keeps both cores busy).
    """
    from tqdm import tqdm

    from experts.atari import EnvSettings, LifeLossFire, canonical_game, life_losses, make_atari_vec

    game = canonical_game(game)
    if episodes < 1:
        raise ValueError(f"episodes must be >= 1, got {episodes}")
    if not 0.0 <= epsilon <= 1.0:
        raise ValueError(f"epsilon must be in [0, 1], got {epsilon}")
    n = min(episodes, num_envs or 8)
    if n < 1 or not acts:
        raise ValueError(f"need num_envs >= 1 and at least one agent, got num_envs={num_envs}, {len(acts)} agents")
    quota = np.array([episodes // n + (i < episodes % n) for i in range(n)])
    played = [np.zeros(n, dtype=np.int64) for _ in acts]
    running = [np.zeros(n, dtype=np.float64) for _ in acts]
    rngs = [np.random.default_rng(seed) for _ in acts]
    results: list[list[float]] = [[] for _ in acts]
    envs = []
    steps, start = 0, time.monotonic()
    try:
        for _ in acts:
            envs.append(make_atari_vec(game, n, settings=EnvSettings(sticky=sticky, max_frames=max_frames)))
        num_actions = int(envs[0].single_action_space.n)
        resets = [env.reset(seed=seed) for env in envs]
        obs = [o for o, _ in resets]
        lives = [info["lives"].copy() for _, info in resets]  # int [n] per agent, to see life losses
        fires = [LifeLossFire.for_game(game, n, full_actions=False) if fire_after_life_loss else None for _ in acts]
        sent = [False] * len(acts)
        with tqdm(total=episodes * len(acts), unit="game", disable=not progress, dynamic_ncols=True,
                  desc=f"{game} eval", mininterval=2.0) as bar:
            while any((p < quota).any() for p in played):
                for b, (act, env) in enumerate(zip(acts, envs)):
                    if sent[b]:
                        obs[b], reward, terminated, truncated, info = env.recv()
                        sent[b] = False
                        running[b] += reward
                        steps += n
                        if fires[b] is not None:
                            fires[b].observe(life_losses(lives[b], info["lives"], terminated | truncated))
                        lives[b] = info["lives"].copy()
                        for i in np.flatnonzero(terminated | truncated):
                            if played[b][i] < quota[i]:
                                results[b].append(float(running[b][i]))
                                played[b][i] += 1
                                bar.update(1)
                                means = "/".join(f"{np.mean(r):.1f}" if r else "-" for r in results)
                                bar.set_postfix(mean=means, sps=f"{steps / (time.monotonic() - start):.0f}")
                            running[b][i] = 0.0
                    if not (played[b] < quota).any():
                        continue  # this agent is done; the others play on
                    actions = np.asarray(act(obs[b])).astype(np.int64).reshape(-1)
                    if actions.shape != (n,) or actions.min() < 0 or actions.max() >= num_actions:
                        raise ValueError(f"act must return {n} actions in [0, {num_actions}) for {game}, "
                                         f"got shape {actions.shape} range [{actions.min()}, {actions.max()}]")
                    if epsilon > 0:
                        explore = rngs[b].random(n) < epsilon
                        actions[explore] = rngs[b].integers(0, num_actions, int(explore.sum()))
                    if fires[b] is not None:
                        actions = fires[b].override(actions)  # after ε: the pipeline pressed it, not the agent
                    env.send(actions)
                    sent[b] = True
    finally:
        for env in envs:
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
