"""The straightforward loop: multi-task policy distillation written the way a user writes it first.

    .venv/bin/python scripts/bench_peer.py --config configs/default.yaml --seconds 60

One gymnasium env per game through SB3's ``AtariWrapper`` (``NoFrameskip-v4``, frame stack
4), the games stepped one after another; at every step a batch-1 forward of the student to
act (ε-greedy) and a batch-1 forward of the game's expert to label the state; a plain replay
per game; and the same schedule as the trainer: once every game has made
``train_every_per_game`` steps, one update (forward, backward, Adam) on ``batch_per_game``
samples of every game, cross-entropy on the soft targets. float32, torch's default threads.
It is the reference for ``scripts/bench_trainer.py``'s "× a straightforward loop".
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch


def make_env(game: str, seed: int):
    import ale_py
    import gymnasium as gym
    from stable_baselines3.common.atari_wrappers import AtariWrapper

    gym.register_envs(ale_py)
    env = AtariWrapper(gym.make(f"{game}NoFrameskip-v4"), terminal_on_life_loss=False, clip_reward=False)
    env.reset(seed=seed)
    return env


def run_peer(cfg, seconds: float, warmup_steps: int = 500) -> float:
    """Agent steps/s of the straightforward loop on ``cfg``'s games, once updates run."""
    from amn.collect import load_experts
    from amn.student import Student

    experts = load_experts(cfg)
    G, B, every = cfg.num_games, cfg.batch_per_game, cfg.train_every_per_game
    student = Student(G)
    optimizer = torch.optim.Adam(student.parameters(), lr=cfg.lr, eps=cfg.adam_eps)
    envs = [make_env(g.game, cfg.seed + i) for i, g in enumerate(cfg.games)]
    stacks = [np.zeros((4, 84, 84), np.uint8) for _ in range(G)]
    replay_obs: list[list[np.ndarray]] = [[] for _ in range(G)]
    replay_target: list[list[np.ndarray]] = [[] for _ in range(G)]
    masks = torch.zeros(G, 18, dtype=torch.bool)
    for g, expert in enumerate(experts):
        masks[g, expert.action_set] = True
    rng = np.random.default_rng(cfg.seed)
    steps, start = 0, None
    while True:
        for g, (env, expert) in enumerate(zip(envs, experts)):
            obs = torch.from_numpy(stacks[g][None])
            with torch.no_grad():
                logits = student(obs, torch.tensor([g]))[0, expert.action_set]
                target = np.zeros(18, np.float32)
                target[expert.action_set] = expert.soft_policy(obs.numpy())[0].numpy()
            a = int(rng.integers(len(expert.action_set))) if rng.random() < cfg.epsilon else int(logits.argmax())
            frame, _, terminated, truncated, _ = env.step(a)
            if terminated or truncated:
                frame, _ = env.reset()
                stacks[g][:] = 0
            replay_obs[g].append(stacks[g].copy())
            replay_target[g].append(target)
            stacks[g] = np.concatenate([stacks[g][1:], frame.transpose(2, 0, 1)])
        steps += G
        if steps // G % every == 0 and len(replay_obs[0]) >= B:
            idx = [rng.integers(len(replay_obs[g]), size=B) for g in range(G)]
            obs = torch.from_numpy(np.stack([replay_obs[g][i] for g in range(G) for i in idx[g]]))
            target = torch.from_numpy(np.stack([replay_target[g][i] for g in range(G) for i in idx[g]]))
            ids = torch.arange(G).repeat_interleave(B)
            logp = torch.log_softmax(student(obs, ids).masked_fill(~masks[ids], -1e9), -1)
            loss = -(target * logp).sum(-1).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        if steps == warmup_steps * G:
            start, start_steps = time.perf_counter(), steps
        if start is not None and time.perf_counter() - start >= seconds:
            for env in envs:
                env.close()
            return (steps - start_steps) / (time.perf_counter() - start)


def main() -> None:
    from amn.config import load_config

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=Path("configs/default.yaml"))
    parser.add_argument("--seconds", type=float, default=60.0)
    args = parser.parse_args()
    cfg = load_config(args.config)
    print(f"straightforward loop: {run_peer(cfg, args.seconds):,.0f} agent steps/s "
          f"({torch.get_num_threads()} torch threads)")


if __name__ == "__main__":
    main()
