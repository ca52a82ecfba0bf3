"""Benchmark the student trainer for a config: the real loop end to end, and its parts alone.

1. Components, each timed alone on warm replays with the trainer's own pieces
   (``Collector``, ``Learner``): the student acting, the environments stepping, the
   experts labelling (+ replay add), replay sampling, and one update (forward +
   backward + Adam). Each gives a bound: the agent steps/s if it were the only cost.
2. End to end: ``amn.trainer.train`` itself for ``--seconds`` after its warm-up, as
   TensorBoard's ``perf/agent_steps_per_s`` reports it.

The update is the cost the schedule cannot avoid, so its bound is the reference:
with ``overlap_update`` the games and the experts run beside it on the second core,
and the goal is end to end >= 80 % of it.

    .venv/bin/python scripts/bench_trainer.py --config configs/default.yaml --seconds 90
    .venv/bin/python scripts/bench_trainer.py --set overlap_update=false   # the sequential loop
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from amn.collect import Collector, load_experts
from amn.config import load_config
from amn.replay import GameReplay
from amn.student import FEATURE_DIM
from amn.tb import Scalars
from amn.trainer import Learner, build_student, make_loss, train


def time_calls(fn, seconds: float) -> float:
    """Seconds per call of ``fn``, over at least ``seconds`` and 10 calls."""
    fn()
    calls, start = 0, time.perf_counter()
    while calls < 10 or time.perf_counter() - start < seconds:
        fn()
        calls += 1
    return (time.perf_counter() - start) / calls


def components(cfg, seconds: float) -> dict[str, float]:
    """Seconds per lockstep step of each part of the loop, each timed alone."""
    loss_fn = make_loss(cfg)
    experts = load_experts(cfg)
    G, B = cfg.num_games, cfg.batch_per_game
    replays = [GameReplay(2048, cfg.envs_per_game, store_values=loss_fn.needs_expert_values,
                          feature_dim=FEATURE_DIM if cfg.feature_regression else 0) for _ in range(G)]
    student, projections, params, optimizer = build_student(cfg)
    collector = Collector(cfg, experts, replays, seed=cfg.seed)
    learner = Learner(cfg, student, projections, params, optimizer, loss_fn, list(range(G)), collector.masks,
                      Scalars())
    rng = np.random.default_rng(0)
    while min(len(r) for r in replays) < 512:
        collector.step(student, cfg.epsilon, rng)

    def env_step() -> None:  # valid random actions, no labelling in between: the envs alone
        for s in collector.slots:
            s.env.send(rng.integers(0, len(s.action_set), cfg.envs_per_game))
        for s in collector.slots:
            s.obs = s.env.recv()[0].copy()

    def label() -> None:
        for s in collector.slots:
            collector.label_and_store(s)

    def sample() -> list:
        return [r.sample(B, rng) for r in replays]

    batches = sample()
    updates_per_lockstep = cfg.envs_per_game / cfg.train_every_per_game
    try:
        return {
            "student acting": time_calls(lambda: collector.act(student, cfg.epsilon, rng), seconds),
            "environments": time_calls(env_step, seconds),
            "expert labelling + replay add": time_calls(label, seconds),
            "replay sampling": updates_per_lockstep * time_calls(sample, seconds),
            "update (forward + backward + Adam)": updates_per_lockstep * time_calls(
                lambda: learner.update(batches, 0), seconds),
        }
    finally:
        collector.close()


def end_to_end(cfg_path: Path, overrides: list[str], seconds: float) -> tuple[float, float]:
    """(agent steps/s, updates/s) of the real trainer once updates run, from its TensorBoard."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_config(cfg_path, overrides + [
            "learning_starts_per_game=1000", "log_every_agent_steps=1000", "total_agent_steps=100000000",
            f"max_minutes={seconds / 60 + 0.5}", "checkpoint_minutes=1000"])
        train(cfg, Path(tmp) / "run", progress=False, evaluate=False)
        acc = EventAccumulator(str(Path(tmp) / "run" / "tb"), size_guidance={"scalars": 0})
        acc.Reload()
        steps = acc.Scalars("perf/agent_steps_per_s")
        updates = acc.Scalars("perf/updates_per_s")
    # The points after the warm-up (updates running), minus the first one that straddles it.
    measured = [(s.value, u.value) for s, u in zip(steps, updates) if u.value > 0][1:]
    if not measured:
        raise SystemExit(f"no log point after the warm-up within {seconds:.0f} s: pass more --seconds")
    return float(np.mean([m[0] for m in measured])), float(np.mean([m[1] for m in measured]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=Path("configs/default.yaml"))
    parser.add_argument("--set", action="append", default=[])
    parser.add_argument("--seconds", type=float, default=90.0, help="end-to-end time after the warm-up")
    args = parser.parse_args()

    cfg = load_config(args.config, args.set)
    if cfg.torch_threads:
        torch.set_num_threads(cfg.torch_threads)
    per_lockstep = cfg.agent_steps_per_lockstep
    parts = components(cfg, seconds=5.0)
    rate, update_rate = end_to_end(args.config, args.set, args.seconds)

    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores; torch {torch.__version__}, "
          f"{torch.get_num_threads()} thread(s); config {args.config} ({', '.join(g.game for g in cfg.games)}; "
          f"envs_per_game {cfg.envs_per_game}; loss {cfg.loss}; overlap_update {cfg.overlap_update})")
    print(f"{'component (timed alone)':<38}{'ms per lockstep':>16}{'bound (agent steps/s)':>24}")
    for name, t in parts.items():
        print(f"{name:<38}{1000 * t:>16.2f}{per_lockstep / t:>24,.0f}")
    update = parts["update (forward + backward + Adam)"] + parts["replay sampling"]
    collect = parts["student acting"] + parts["expert labelling + replay add"] + parts["environments"]
    print(f"sequential bound (all parts in turn): {per_lockstep / (update + collect):,.0f} agent steps/s; "
          f"update bound (update + sampling): {per_lockstep / update:,.0f}")
    print(f"end to end (amn.trainer.train, {args.seconds:.0f} s after warm-up): {rate:,.0f} agent steps/s, "
          f"{update_rate:,.1f} updates/s = {100 * rate / (per_lockstep / update):.0f} % of the update bound")


if __name__ == "__main__":
    main()
