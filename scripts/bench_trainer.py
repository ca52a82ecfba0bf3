"""Benchmark the student trainer's hot path for a config.

Runs the same pieces as ``amn.trainer.train`` (collector step = act + env + label,
then updates once the replays are warm), timing each, and prints a table:
agent steps/s and updates/s end to end, the time split, and each component's
bound (the rate if it were the only cost).

    .venv/bin/python scripts/bench_trainer.py --config configs/default.yaml --seconds 60
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

from amn.collect import Collector, load_experts
from amn.config import load_config
from amn.replay import GameReplay
from amn.student import FEATURE_DIM, Student


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=Path("configs/default.yaml"))
    parser.add_argument("--set", action="append", default=[])
    parser.add_argument("--seconds", type=float, default=60.0, help="measured time after warm-up")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = config / default)")
    args = parser.parse_args()

    cfg = load_config(args.config, args.set)
    threads = args.threads or cfg.torch_threads
    if threads:
        torch.set_num_threads(threads)
    from amn.trainer import make_loss

    loss_fn = make_loss(cfg)
    experts = load_experts(cfg)
    G, B = cfg.num_games, cfg.batch_per_game
    warm = max(cfg.batch_per_game * 4, 256)  # small warm-up: the bench measures speed, not learning
    replays = [GameReplay(max(cfg.replay_capacity_per_game // 20, warm + 64), cfg.envs_per_game,
                          store_values=loss_fn.needs_expert_values,
                          feature_dim=FEATURE_DIM if cfg.feature_regression else 0) for _ in range(G)]
    student = Student(G, per_game_heads=cfg.per_game_heads)
    optimizer = torch.optim.Adam(student.parameters(), lr=cfg.lr, betas=tuple(cfg.adam_betas), eps=cfg.adam_eps,
                                 fused=True)
    collector = Collector(cfg, experts, replays, seed=cfg.seed)
    rng = np.random.default_rng(0)
    ids = torch.arange(G).repeat_interleave(B)
    masks = collector.masks[ids]
    timers: dict[str, float] = defaultdict(float)

    def timed_step() -> None:
        """collector.step, with its three phases timed separately."""
        t0 = time.perf_counter()
        actions = collector.act(student, cfg.epsilon, rng).reshape(G, cfg.envs_per_game)
        t1 = time.perf_counter()
        for s, a in zip(collector.slots, actions):
            s.env.send(s.full_to_env[a])
        for s in collector.slots:
            collector.label_and_store(s)
        t2 = time.perf_counter()
        for s in collector.slots:  # what collector.step does after recv, minus bookkeeping
            obs, *_ = s.env.recv()
            s.starts = np.zeros(cfg.envs_per_game, dtype=bool)
            s.obs = obs.copy()
        t3 = time.perf_counter()
        timers["acting (student forward)"] += t1 - t0
        timers["expert labelling + replay add"] += t2 - t1
        timers["env (wait for recv)"] += t3 - t2

    def timed_update() -> None:
        t0 = time.perf_counter()
        batches = [r.sample(B, rng) for r in replays]
        obs = torch.cat([b["obs"] for b in batches])
        target = torch.cat([b["target"] for b in batches])
        t1 = time.perf_counter()
        out = loss_fn(student(obs, ids), target, masks,
                      torch.cat([b["values"] for b in batches]) if loss_fn.needs_expert_values else None)
        optimizer.zero_grad(set_to_none=True)
        out.loss.mean().backward()
        optimizer.step()
        t2 = time.perf_counter()
        timers["replay sampling"] += t1 - t0
        timers["update (fwd+bwd+Adam)"] += t2 - t1

    while min(len(r) for r in replays) < warm:
        timed_step()
    timers.clear()
    steps = updates = 0
    per_update = cfg.train_every_per_game // cfg.envs_per_game or 1
    start = time.perf_counter()
    lock = 0
    while time.perf_counter() - start < args.seconds:
        timed_step()
        lock += 1
        steps += cfg.agent_steps_per_lockstep
        for _ in range(max(1, cfg.envs_per_game // cfg.train_every_per_game) if lock % per_update == 0 else 0):
            timed_update()
            updates += 1
    wall = time.perf_counter() - start
    collector.close()

    print(f"config {args.config} ({', '.join(g.game for g in cfg.games)}; envs_per_game {cfg.envs_per_game}; "
          f"torch threads {torch.get_num_threads()}; loss {cfg.loss})")
    print(f"end to end: {steps / wall:,.0f} agent steps/s, {updates / wall:,.1f} updates/s "
          f"({steps:,} agent steps, {updates:,} updates in {wall:.0f} s)")
    print(f"{'component':<32}{'share':>8}{'ms/call-unit':>14}{'bound (agent steps/s)':>24}")
    for name, t in sorted(timers.items(), key=lambda kv: -kv[1]):
        unit = updates if name.startswith(("update", "replay")) else lock
        print(f"{name:<32}{100 * t / wall:>7.0f}%{1000 * t / max(unit, 1):>14.2f}{steps / t:>24,.0f}")
    other = wall - sum(timers.values())
    print(f"{'other (python bookkeeping)':<32}{100 * other / wall:>7.0f}%")


if __name__ == "__main__":
    main()
