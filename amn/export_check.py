"""Does an exported student play like the student? ``python -m amn.export_check RUN GAME OUT.zip``.

Two checks of ``amn export-student``'s zip against the run it came from:

* exact: on the same observations (``uint8 [N, 4, 84, 84]``, taken from SB3's pipeline and from
  ``AtariVectorEnv``), the zip's greedy action (``DQN.predict``) is the student's masked argmax;
* statistical: the zip played through the SB3 pipeline it declares (``amn.sb3_pipeline``) scores
  like the student played by ``amn.evaluation.play_games`` (the ``amn evaluate`` protocol: same ε,
  episodes, seed and frame cap), judged by Welch's t-test: the difference of the mean raw scores
  must be within ``t_{0.995, df}`` standard errors (two-sided, 1 %), where a run of identical
  scores (zero variance on both sides) must match exactly.

The two pipelines are different emulator runs (their own no-op starts and random streams), so
only the distribution of scores can agree, not each game.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch


def load_student(run: str | Path):
    """``(student, cfg, ckpt)`` of a run directory or checkpoint, eval mode, on the CPU."""
    from amn.checkpoint import load_checkpoint
    from amn.config import from_dict
    from amn.student import Student

    ckpt = load_checkpoint(run)
    cfg = from_dict(ckpt["config"])
    student = Student(cfg.num_games, per_game_heads=cfg.per_game_heads)
    student.load_state_dict(ckpt["student"])
    return student.eval(), cfg, ckpt


def student_actions(student, game_index: int, action_set: list[int], obs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The student's greedy minimal-set actions ``int [N]`` on ``obs`` ``uint8 [N, 4, 84, 84]``,
    and the margin of each (top logit minus the runner-up, ``float [N]``): a margin near 0 is a tie
    that float rounding may break either way."""
    with torch.inference_mode():
        z = student(torch.from_numpy(np.ascontiguousarray(obs)), torch.full((len(obs),), game_index))
        z = z[:, action_set].double()
    top = z.topk(2, dim=1).values
    return z.argmax(1).numpy(), (top[:, 0] - top[:, 1]).numpy()


def greedy_agreement(student, game_index: int, action_set: list[int], model, obs: np.ndarray) -> dict[str, Any]:
    """How often the zip's ``predict(deterministic=True)`` equals the student's argmax on ``obs``;
    ``unexplained`` counts disagreements on states whose student margin exceeds 1e-4."""
    ours, margin = student_actions(student, game_index, action_set, obs)
    theirs, _ = model.predict(obs, deterministic=True)
    differ = np.asarray(theirs) != ours
    return {"states": int(len(obs)), "agree": int((~differ).sum()),
            "unexplained": int((differ & (margin > 1e-4)).sum())}


def welch(a: list[float], b: list[float], *, alpha: float = 0.01) -> dict[str, Any]:
    """Welch's t-test of ``mean(a) == mean(b)``; ``within_noise`` when ``|diff| <= tolerance``."""
    from scipy import stats

    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    diff = float(a.mean() - b.mean())
    if va + vb == 0:  # both constant: only equal means are "within noise"
        return {"diff": diff, "se": 0.0, "df": None, "tolerance": 0.0, "p": float(diff == 0), "within_noise": diff == 0}
    se = float(np.sqrt(va + vb))
    df = float((va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1)))
    tolerance = float(stats.t.ppf(1 - alpha / 2, df) * se)
    p = float(2 * stats.t.sf(abs(diff) / se, df))
    return {"diff": diff, "se": se, "df": df, "tolerance": tolerance, "p": p, "within_noise": abs(diff) <= tolerance}


def ale_observations(game: str, count: int, seed: int = 0) -> np.ndarray:
    """``count`` observations ``uint8 [count, 4, 84, 84]`` of random play in ``AtariVectorEnv``."""
    from experts.atari import make_atari_vec

    env = make_atari_vec(game, 1)
    rng = np.random.default_rng(seed)
    try:
        obs, _ = env.reset(seed=seed)
        kept = []
        for step in range(count * 5):
            if step % 5 == 0:
                kept.append(obs[0])
            obs, *_ = env.step(rng.integers(0, env.single_action_space.n, 1))
    finally:
        env.close()
    return np.stack(kept)


def compare(run: str | Path, game: str, zip_path: str | Path, *, episodes: int = 8, epsilon: float = 0.05,
            seed: int = 0, max_frames: int = 108_000, num_envs: int = 4, overrides: dict | None = None,
            progress: bool = False) -> dict[str, Any]:
    """Play ``episodes`` games of the student (amn) and of the zip (SB3); return both score lists,
    the Welch test and the greedy-action agreement on both pipelines' observations."""
    from stable_baselines3 import DQN

    from amn import sb3_pipeline
    from amn.evaluation import play_games
    from amn.report import student_actor
    from experts.atari import canonical_game, life_loss_presses_fire, minimal_action_set

    game = canonical_game(game)
    student, cfg, _ = load_student(run)
    games = [g.game for g in cfg.games]
    index, action_set = games.index(game), minimal_action_set(game)
    model = DQN.load(str(zip_path), device="cpu", buffer_size=1)
    pipeline = sb3_pipeline.declared(model)
    ours = play_games(student_actor(student, index, action_set), game, episodes, epsilon=epsilon, seed=seed,
                      max_frames=max_frames, num_envs=num_envs, progress=progress,
                      fire_after_life_loss=life_loss_presses_fire(pipeline["expert_pipeline"]))
    venv = sb3_pipeline.make_declared_env(model, min(num_envs, episodes), seed=seed, overrides=overrides,
                                          env_kwargs={"max_num_frames_per_episode": max_frames})
    try:
        problems = sb3_pipeline.check_pipeline(model, venv)
        theirs, frames = sb3_pipeline.play(model, venv, episodes, epsilon=epsilon, seed=seed, record=256)
    finally:
        venv.close()
    return {"game": game, "episodes": episodes, "epsilon": epsilon, "seed": seed, "max_frames": max_frames,
            "wrapper_kwargs": {**sb3_pipeline.wrapper_kwargs(pipeline), **(overrides or {})},
            "pipeline_problems": problems, "amn": ours, "sb3": theirs,
            "amn_mean": float(np.mean(ours)), "sb3_mean": float(np.mean(theirs)), "welch": welch(theirs, ours),
            "greedy_sb3_obs": greedy_agreement(student, index, action_set, model, frames),
            "greedy_ale_obs": greedy_agreement(student, index, action_set, model, ale_observations(game, 256, seed))}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run")
    p.add_argument("game")
    p.add_argument("zip")
    p.add_argument("--episodes", type=int, default=8)
    p.add_argument("--epsilon", type=float, default=0.05)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-frames", type=int, default=108_000)
    p.add_argument("--envs", type=int, default=4)
    p.add_argument("--override", default="{}", help="JSON AtariWrapper kwargs (play another pipeline on purpose)")
    args = p.parse_args(argv)
    torch.set_num_threads(1)  # the envs and the nets take turns; more threads only contend here
    out = compare(args.run, args.game, args.zip, episodes=args.episodes, epsilon=args.epsilon, seed=args.seed,
                  max_frames=args.max_frames, num_envs=args.envs, overrides=json.loads(args.override))
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
