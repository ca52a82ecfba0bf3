#!/usr/bin/env python
"""Does an expert score the same in the student's data collection as in its training pipeline?

Plays full games (raw score, no life-loss terminals, epsilon-greedy, no sticky
actions, up to 30 no-op starts, 108k-frame cap) through

* ``amn.collect.Collector``: the student's data-collection environment, the expert
  acting on the collector's training view (what it labels during distillation);
* ``ale_py.AtariVectorEnv`` as evaluation uses it (``amn.evaluation.play_games``),
  the pipeline of ``amn experts train`` (FIRE pressed after a life loss where the
  expert's pipeline pressed it); and
* SB3's ``make_atari_env("<Game>NoFrameskip-v4")`` + ``VecFrameStack(4)`` (the RL-zoo's
  ``AtariWrapper``, OpenCV resize), transposed to channel first, as the zoo trained: a
  life loss ends the agent's episode (a new frame stack, FIRE pressed at the reset), the
  score is the full game's (``Monitor``, under the wrappers),

then prints each mean ± std and a Welch t statistic for the difference between the
collector and the expert's own training pipeline, and writes
``docs/results/observation_contract_<expert>.csv``. The two resizes do not give
identical pixels, so an expert trained through one pipeline must be checked
through the other.

    python scripts/check_observation_contract.py pong --episodes 10
    python scripts/check_observation_contract.py ../shared/experts/ppo-PongNoFrameskip-v4.zip --episodes 4
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def play_sb3_pipeline(act, game: str, episodes: int, *, epsilon: float, seed: int, num_envs: int) -> list[float]:
    """Full-game raw returns through SB3's ``AtariWrapper`` pipeline; same per-env quotas as ``play_games``.

    ``terminal_on_life_loss`` stays on, as in the zoo's training: each life is an episode for the
    agent (``VecFrameStack`` starts a new stack, ``FireResetEnv`` presses FIRE), and a game ends
    when ``Monitor``, below the wrappers, reports its raw return in ``info["episode"]``."""
    import ale_py
    import gymnasium as gym
    from stable_baselines3.common.env_util import make_atari_env
    from stable_baselines3.common.vec_env import VecFrameStack

    gym.register_envs(ale_py)
    n = min(episodes, num_envs)
    env = VecFrameStack(make_atari_env(f"{game}NoFrameskip-v4", n_envs=n, seed=seed,
                                       wrapper_kwargs=dict(clip_reward=False)), 4)
    quota = np.array([episodes // n + (i < episodes % n) for i in range(n)])
    played = np.zeros(n, dtype=np.int64)
    rng = np.random.default_rng(seed)
    num_actions = int(env.action_space.n)
    results: list[float] = []
    obs = env.reset()
    while (played < quota).any():
        # VecFrameStack gives [N, 84, 84, 4]; the expert takes AtariVectorEnv's [N, 4, 84, 84].
        actions = np.asarray(act(np.ascontiguousarray(obs.transpose(0, 3, 1, 2)))).astype(np.int64)
        explore = rng.random(n) < epsilon
        actions[explore] = rng.integers(0, num_actions, int(explore.sum()))
        obs, _, _, infos = env.step(actions)
        for i, info in enumerate(infos):
            if "episode" in info and played[i] < quota[i]:  # a game over, not a life loss
                results.append(float(info["episode"]["r"]))
                played[i] += 1
                print(f"  sb3 pipeline game {len(results)}/{episodes}: {results[-1]:g}", flush=True)
    env.close()
    return results


def welch(a: list[float], b: list[float]) -> tuple[float, float, float, float]:
    """Difference of means ``a - b``, its standard error, Welch's t and Welch-Satterthwaite df."""
    va, vb = np.var(a, ddof=1) / len(a), np.var(b, ddof=1) / len(b)
    se = math.sqrt(va + vb)
    diff = float(np.mean(a) - np.mean(b))
    t = diff / se if se > 0 else (0.0 if diff == 0 else math.inf)
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1)) if va + vb > 0 else math.inf
    return diff, se, t, df


def main(argv: list[str] | None = None) -> int:
    import torch

    from amn.collect import play_through_collector
    from amn.evaluation import play_games
    from experts import load_expert
    from experts.atari import PIPELINE_ALE, PIPELINE_SB3, life_loss_presses_fire

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("expert", help="expert name or path (as for load_expert)")
    parser.add_argument("--game", default=None)
    parser.add_argument("--episodes", type=int, default=4, help="full games per pipeline")
    parser.add_argument("--epsilon", type=float, default=0.01)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num-envs", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=None, help="CSV (default docs/results/observation_contract_<expert>.csv)")
    args = parser.parse_args(argv)
    if args.episodes < 2:
        parser.error("--episodes must be >= 2 (the std needs two games)")

    torch.set_num_threads(args.threads)
    expert = load_expert(args.expert, game=args.game)
    print(f"{expert.name}: {expert.game}, {expert.algo}, trained through {expert.observation_pipeline}; "
          f"{args.episodes} full games per pipeline, epsilon {args.epsilon}")
    games = {}
    for label, play in [
        ("amn.collect.Collector", lambda: play_through_collector(expert, args.episodes, epsilon=args.epsilon,
                                                                  seed=args.seed)),
        (PIPELINE_ALE, lambda: play_games(expert.act, expert.game, args.episodes, epsilon=args.epsilon,
                                          seed=args.seed, num_envs=args.num_envs, progress=False,
                                          fire_after_life_loss=life_loss_presses_fire(expert.observation_pipeline))),
        (PIPELINE_SB3, lambda: play_sb3_pipeline(expert.act, expert.game, args.episodes, epsilon=args.epsilon,
                                                 seed=args.seed, num_envs=args.num_envs)),
    ]:
        t0 = time.monotonic()
        games[label] = play()
        print(f"  {label} games: {games[label]} ({time.monotonic() - t0:.0f} s)")

    trained = expert.observation_pipeline
    diff, se, t, df = welch(games["amn.collect.Collector"], games[trained])
    for label, r in games.items():
        print(f"{label:>22}: {np.mean(r):7.2f} ± {np.std(r, ddof=1):.2f} (sample std, {len(r)} games)")
    verdict = ("consistent within noise" if abs(t) < 2
               else "more than 2 s.e. apart: play more games (scores are often bimodal) or suspect the pipeline")
    print(f"collector - {trained}: {diff:.2f} ± {se:.2f} (s.e.), Welch t = {t:.2f}, df = {df:.1f} -> {verdict}")

    out = args.out or ROOT / "docs" / "results" / f"observation_contract_{expert.name}.csv"
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["pipeline", "game", "episodes", "epsilon", "seed", "mean", "std", "returns"])
        for label, r in games.items():
            w.writerow([label, expert.game, len(r), args.epsilon, args.seed, f"{np.mean(r):.3f}",
                        f"{np.std(r, ddof=1):.3f}", " ".join(f"{x:g}" for x in r)])
        w.writerow([f"difference_collector_minus_{trained}", expert.game, "", "", "", f"{diff:.3f}", f"{se:.3f}",
                    f"welch_t={t:.3f} df={df:.1f}"])
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
