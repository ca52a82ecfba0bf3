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

#: Canonical game -> (random score, human score), raw game score, for the 57 games of the standard
#: benchmark. Source: Badia et al. 2020, "Agent57: Outperforming the Atari Human Benchmark" (ICML),
#: appendix, the random and human columns of its per-game score table; the same numbers as
#: dqn_zoo's ``atari_data.py`` (checked one by one). The random column of its 49 games is Mnih et
#: al. 2015's (Nature 518, Extended Data Table 2), whose human column is an older one (Pong 9.3, not
#: 14.6): not used here. The other ale-py games have no reference scores.
HUMAN_RANDOM: dict[str, tuple[float, float]] = {
    "Alien": (227.8, 7_127.7),
    "Amidar": (5.8, 1_719.5),
    "Assault": (222.4, 742.0),
    "Asterix": (210.0, 8_503.3),
    "Asteroids": (719.1, 47_388.7),
    "Atlantis": (12_850.0, 29_028.1),
    "BankHeist": (14.2, 753.1),
    "BattleZone": (2_360.0, 37_187.5),
    "BeamRider": (363.9, 16_926.5),
    "Berzerk": (123.7, 2_630.4),
    "Bowling": (23.1, 160.7),
    "Boxing": (0.1, 12.1),
    "Breakout": (1.7, 30.5),
    "Centipede": (2_090.9, 12_017.0),
    "ChopperCommand": (811.0, 7_387.8),
    "CrazyClimber": (10_780.5, 35_829.4),
    "Defender": (2_874.5, 18_688.9),
    "DemonAttack": (152.1, 1_971.0),
    "DoubleDunk": (-18.6, -16.4),
    "Enduro": (0.0, 860.5),
    "FishingDerby": (-91.7, -38.7),
    "Freeway": (0.0, 29.6),
    "Frostbite": (65.2, 4_334.7),
    "Gopher": (257.6, 2_412.5),
    "Gravitar": (173.0, 3_351.4),
    "Hero": (1_027.0, 30_826.4),
    "IceHockey": (-11.2, 0.9),
    "Jamesbond": (29.0, 302.8),
    "Kangaroo": (52.0, 3_035.0),
    "Krull": (1_598.0, 2_665.5),
    "KungFuMaster": (258.5, 22_736.3),
    "MontezumaRevenge": (0.0, 4_753.3),
    "MsPacman": (307.3, 6_951.6),
    "NameThisGame": (2_292.3, 8_049.0),
    "Phoenix": (761.4, 7_242.6),
    "Pitfall": (-229.4, 6_463.7),
    "Pong": (-20.7, 14.6),
    "PrivateEye": (24.9, 69_571.3),
    "Qbert": (163.9, 13_455.0),
    "Riverraid": (1_338.5, 17_118.0),
    "RoadRunner": (11.5, 7_845.0),
    "Robotank": (2.2, 11.9),
    "Seaquest": (68.4, 42_054.7),
    "Skiing": (-17_098.1, -4_336.9),
    "Solaris": (1_236.3, 12_326.7),
    "SpaceInvaders": (148.0, 1_668.7),
    "StarGunner": (664.0, 10_250.0),
    "Surround": (-10.0, 6.5),
    "Tennis": (-23.8, -8.3),
    "TimePilot": (3_568.0, 5_229.2),
    "Tutankham": (11.4, 167.6),
    "UpNDown": (533.4, 11_693.2),
    "Venture": (0.0, 1_187.5),
    "VideoPinball": (16_256.9, 17_667.9),  # human barely above random: normalised scores swing widely
    "WizardOfWor": (563.5, 4_756.5),
    "YarsRevenge": (3_092.9, 54_576.9),
    "Zaxxon": (32.5, 9_173.3),
}

#: An agent: observations ``uint8 [N, 4, 84, 84]`` -> greedy actions ``[N]`` (minimal-action-set indices).
Actor = Callable[[np.ndarray], np.ndarray]


def play_games(act: Actor, game: str, episodes: int, **protocol) -> list[float]:
    """Play ``episodes`` full games and return their raw scores, in the order they finished (or ``by_slot``).

    ``protocol`` takes the keyword options of :func:`play_games_side_by_side` (epsilon,
    sticky, seed, num_envs, max_frames, fire_after_life_loss, progress, by_slot), documented there;
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
    by_slot: bool = False,
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
    :param by_slot: list each agent's scores by slot (env 0's games in the order it played them,
        then env 1's, ...) rather than in the order they finished. Slot ``j`` starts from the same env
        seed and no-op draw for every agent, explored by the same ε generator, so the agents' lists
        line up as pairs of games; so does a later call with the same protocol (same slots).

    Each env is assigned its number of games up front (``episodes`` split as evenly as
    possible) and later games it starts are ignored, so the result is not biased toward
    short games, as "take the first ``episodes`` to finish" would be. Scores are listed in
    the order they finished unless ``by_slot``.

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
    first_slot = np.cumsum(quota) - quota  # int [n]: env i's games are slots first_slot[i] ...
    played = [np.zeros(n, dtype=np.int64) for _ in acts]
    running = [np.zeros(n, dtype=np.float64) for _ in acts]
    rngs = [np.random.default_rng(seed) for _ in acts]
    results: list[list[tuple[int, float]]] = [[] for _ in acts]  # (slot, score), in the order they finished
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
                                results[b].append((int(first_slot[i] + played[b][i]), float(running[b][i])))
                                played[b][i] += 1
                                bar.update(1)
                                means = "/".join(f"{np.mean([s for _, s in r]):.1f}" if r else "-" for r in results)
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
    return [[score for _, score in (sorted(r) if by_slot else r)] for r in results]


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
        raise ValueError(f"no random/human reference scores for {game}: amn.evaluation.HUMAN_RANDOM has the "
                         f"{len(HUMAN_RANDOM)} games of the Atari-57 benchmark; pick one of those to normalise")
    random, human = HUMAN_RANDOM[game]
    return (score - random) / (human - random)


def human_normalized_summary(returns: list[float], game: str) -> dict:
    """``summarize(returns)`` plus ``normalized_mean`` (human-normalised mean score)."""
    out = summarize(returns)
    out["normalized_mean"] = human_normalized(out["mean"], game)
    return out
