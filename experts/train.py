"""``amn experts train``: SB3 PPO or DQN with the rl-zoo Atari hyperparameters.

The algorithm is SB3's, unchanged; what differs from the zoo is the
environment (``AleVecEnv``: the C++ pipeline the student also uses) and a
channels-last policy, both measured faster on this CPU. Checkpoints are
written atomically every few minutes into ``--out`` (outside the repo), and
``--resume`` continues from the newest one with the same schedule.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import torch
from stable_baselines3.common.callbacks import BaseCallback, CallbackList

from experts.atari import PIPELINE_ALE, canonical_game
from experts.registry import write_json_atomic

DEFAULT_ROOT = Path(os.environ.get("AMN_HOME", Path.home() / ".cache" / "amn")) / "experts"


def linear(start: float):
    """SB3 schedule: ``progress_remaining`` goes 1 -> 0 over training."""

    def schedule(progress_remaining: float) -> float:
        return progress_remaining * start

    return schedule


# rl-baselines3-zoo hyperparams/{ppo,dqn}.yml, "atari" entries.
ZOO = {
    "ppo": dict(
        n_envs=8, n_steps=128, n_epochs=4, batch_size=256, learning_rate=2.5e-4,
        clip_range=0.1, ent_coef=0.01, vf_coef=0.5, default_steps=10_000_000,
    ),
    "dqn": dict(
        n_envs=1, buffer_size=100_000, learning_rate=1e-4, batch_size=32,
        learning_starts=100_000, target_update_interval=1000, train_freq=4,
        gradient_steps=1, exploration_fraction=0.1, exploration_final_eps=0.01,
        optimize_memory_usage=False, default_steps=10_000_000,
    ),
}


def _record_resume(out: Path, steps: int, at: int) -> None:
    """A resume with another ``--steps`` rescales the linear schedule from there on; say so in run.json."""
    meta_path = out / "run.json"
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    if meta.get("steps", steps) != steps:
        print(f"note: {meta_path} planned {meta['steps']:,} steps; the schedule now ends at {steps:,}")
        meta.setdefault("steps_changes", []).append(dict(at=at, before=meta["steps"], after=steps))
        meta["steps"] = steps
        write_json_atomic(meta_path, meta)


class AtomicCheckpoint(BaseCallback):
    """Saves ``latest.zip`` every ``every_seconds`` via write-then-rename."""

    def __init__(self, out: Path, every_seconds: float):
        super().__init__()
        self.out, self.every = out, every_seconds
        self.last = time.monotonic()

    def save(self) -> None:
        tmp = self.out / "latest.tmp.zip"
        self.model.save(tmp)
        os.replace(tmp, self.out / "latest.zip")
        write_json_atomic(self.out / "progress.json", {"num_timesteps": self.model.num_timesteps})

    def _on_step(self) -> bool:
        if time.monotonic() - self.last >= self.every:
            self.save()
            self.last = time.monotonic()
        return True


class ProgressBar(BaseCallback):
    """tqdm bar over agent steps with ETA and the recent mean raw game score."""

    def __init__(self, total: int):
        super().__init__()
        self.total = total

    def _on_training_start(self) -> None:
        from tqdm import tqdm

        self.bar = tqdm(total=self.total, initial=self.model.num_timesteps, unit="step",
                        dynamic_ncols=True, mininterval=5.0)

    def _on_step(self) -> bool:
        self.bar.update(self.model.num_timesteps - self.bar.n)
        buf = self.model.ep_info_buffer
        if buf and self.n_calls % 200 == 0:
            self.bar.set_postfix(score=f"{sum(e['r'] for e in buf) / len(buf):.1f}")
        return True

    def _on_training_end(self) -> None:
        self.bar.close()


def train_expert(
    game: str,
    *,
    algo: str = "ppo",
    steps: int | None = None,
    out: Path | None = None,
    resume: bool = False,
    seed: int = 0,
    checkpoint_minutes: float = 5.0,
    channels_last: bool = True,
) -> Path:
    """Train (or resume) an expert; returns the path of the final ``model.zip``."""
    from stable_baselines3 import DQN, PPO

    from experts.sb3_vec_env import AleVecEnv

    game = canonical_game(game)
    if algo not in ZOO:
        raise ValueError(f"unknown algorithm {algo!r}; choose one of: {', '.join(ZOO)}")
    hp = dict(ZOO[algo])
    steps = int(steps or hp.pop("default_steps"))
    hp.pop("default_steps", None)
    n_envs = hp.pop("n_envs")
    out = Path(out or DEFAULT_ROOT / f"{game.lower()}-{algo}-seed{seed}")
    out.mkdir(parents=True, exist_ok=True)
    ckpt = out / "latest.zip"
    if ckpt.exists() and not resume:
        raise FileExistsError(f"{ckpt} exists: pass --resume to continue it, or choose another --out")

    env = AleVecEnv(game, n_envs, seed=seed, num_threads=2)
    cls = {"ppo": PPO, "dqn": DQN}[algo]
    if resume and ckpt.exists():
        model = cls.load(ckpt, env=env, device="cpu")
        print(f"resuming {ckpt} at step {model.num_timesteps:,}")
        _record_resume(out, steps, model.num_timesteps)
    else:
        recorded = dict(hp)
        if algo == "ppo":
            recorded["schedule"] = "learning_rate and clip_range decay linearly to 0 over the steps"
            hp["learning_rate"] = linear(hp["learning_rate"])
            hp["clip_range"] = linear(hp["clip_range"])
        model = cls("CnnPolicy", env, seed=seed, device="cpu", verbose=0,
                    tensorboard_log=str(out / "tb"), **hp)
        meta = dict(game=game, algo=algo, steps=steps, seed=seed, n_envs=n_envs,
                    pipeline=PIPELINE_ALE, hyperparameters=recorded)
        write_json_atomic(out / "run.json", meta)
    if channels_last:
        model.policy.to(memory_format=torch.channels_last)
    # Saved in the zip's data: the student's collector needs to know how this expert saw life losses.
    model.amn_observation_pipeline = PIPELINE_ALE

    remaining = steps - model.num_timesteps
    checkpoint = AtomicCheckpoint(out, checkpoint_minutes * 60)
    if remaining > 0:
        try:
            model.learn(remaining, callback=CallbackList([checkpoint, ProgressBar(steps)]),
                        reset_num_timesteps=False, tb_log_name="run")
        except KeyboardInterrupt:
            print("interrupted: saving a checkpoint")
        checkpoint.save()
    final = out / "model.zip"
    if model.num_timesteps >= steps:
        tmp = out / "model.tmp.zip"
        model.save(tmp)
        os.replace(tmp, final)
    env.close()
    return final
