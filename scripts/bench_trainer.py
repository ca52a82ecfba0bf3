"""Benchmark the student trainer for a config: the real loop end to end, its parts alone, its ceiling.

1. The machine: CPU model, the flags that decide the kernels (AVX-512, AVX-512-BF16, AMX),
   cores, torch build and threads, the heap setting (``amn/heap.py``), and the precision the
   config resolves to here.
2. Components, each timed alone on warm replays with the trainer's own pieces
   (``Collector``, ``Learner``), in float32 and in bfloat16: the student acting, the
   environments stepping, the experts labelling (+ replay add; always float32), replay
   sampling, and the update (forward + backward + Adam). Medians of ``--repeats`` rounds.
3. The ceiling: the parts' CPU work per lockstep step with the fastest kernel of each
   (the environments' C++ threads included), spread over the cores. No schedule of this
   work on this machine beats it.
4. End to end: ``amn.trainer.train`` itself for ``--seconds`` after its warm-up, as
   TensorBoard's ``perf/agent_steps_per_s`` reports it, as % of the ceiling.
5. ``--peer``: the same run's ratio to the straightforward loop (``scripts/bench_peer.py``).

    .venv/bin/python scripts/bench_trainer.py --config configs/default.yaml --seconds 90 --peer
    .venv/bin/python scripts/bench_trainer.py --set overlap_update=false   # the sequential loop
"""

from __future__ import annotations

import argparse
import copy
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
from amn.learner import Learner, build_student, make_loss
from amn.trainer import train


def time_calls(fn, seconds: float) -> float:
    """Seconds per call of ``fn``, over at least ``seconds`` and 10 calls."""
    fn()
    calls, start = 0, time.perf_counter()
    while calls < 10 or time.perf_counter() - start < seconds:
        fn()
        calls += 1
    return (time.perf_counter() - start) / calls


def cpu_description() -> str:
    """CPU model and the flags that pick oneDNN's kernels, from /proc/cpuinfo (Linux) or platform."""
    model, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                model = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
    except OSError:
        pass
    shown = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile") if f in flags]
    return f"{model} ({', '.join(shown) or 'no AVX2/AVX-512 flags'})"


def components(cfg, seconds: float, precision: str) -> dict[str, float]:
    """Seconds per lockstep step of each part of the loop, each timed alone, in ``precision``."""
    loss_fn = make_loss(cfg)
    experts = load_experts(cfg)
    G, B = cfg.num_games, cfg.batch_per_game
    replays = [GameReplay(2048, cfg.envs_per_game, store_values=loss_fn.needs_expert_values,
                          feature_dim=FEATURE_DIM if cfg.feature_regression else 0) for _ in range(G)]
    student, projections, params, optimizer = build_student(cfg)
    collector = Collector(cfg, experts, replays, seed=cfg.seed, precision=precision)
    learner = Learner(cfg, student, projections, params, optimizer, loss_fn, list(range(G)), collector.masks,
                      Scalars(), precision=precision)
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
    # As the trainer acts: with overlap_update through a copy of the weights, in bfloat16 a bfloat16 one.
    actor = copy.deepcopy(student).to(torch.bfloat16) if precision == "bfloat16" and cfg.overlap_update else student
    try:
        return {
            "student acting": time_calls(lambda: collector.act(actor, cfg.epsilon, rng), seconds),
            "environments": time_calls(env_step, seconds),
            "expert labelling + replay add": time_calls(label, seconds),
            "replay sampling": updates_per_lockstep * time_calls(sample, seconds),
            "update (forward + backward + Adam)": updates_per_lockstep * time_calls(
                lambda: learner.update(batches, 0), seconds),
        }
    finally:
        collector.close()


def end_to_end(cfg_path: Path, overrides: list[str], seconds: float) -> tuple[float, float, float, float]:
    """(agent steps/s, updates/s, update wall ms, update CPU ms) of the real trainer once updates run,
    from its TensorBoard (``perf/*``; the update's times are the learner's own, on its thread)."""
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
        tags = set(acc.Tags()["scalars"])  # the update's times exist once an update has run
        wall, cpu = ({e.step: e.value for e in acc.Scalars(tag)} if tag in tags else {}
                     for tag in ("perf/update_ms", "perf/update_cpu_ms"))
    # The points after the warm-up (updates running), minus the first one that straddles it.
    measured = [(s.value, u.value, wall[s.step], cpu[s.step]) for s, u in zip(steps, updates)
                if u.value > 0 and s.step in wall and s.step in cpu][1:]
    if not measured:
        raise SystemExit(f"no log point after the warm-up within {seconds:.0f} s: pass more --seconds")
    return tuple(float(np.mean([m[i] for m in measured])) for i in range(4))


PARTS = ("student acting", "environments", "expert labelling + replay add", "replay sampling",
         "update (forward + backward + Adam)")


def main() -> None:
    import statistics

    from amn.heap import keep_freed_memory
    from amn.precision import describe, resolve_precision

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=Path("configs/default.yaml"))
    parser.add_argument("--set", action="append", default=[])
    parser.add_argument("--seconds", type=float, default=90.0, help="end-to-end time after the warm-up")
    parser.add_argument("--repeats", type=int, default=3, help="rounds of the component timings (medians)")
    parser.add_argument("--peer", action="store_true", help="also time the straightforward loop")
    parser.add_argument("--peer-seconds", type=float, default=60.0)
    args = parser.parse_args()

    cfg = load_config(args.config, args.set)
    heap = keep_freed_memory()  # as the trainer sets it, also for the parts timed alone
    if cfg.torch_threads:
        torch.set_num_threads(cfg.torch_threads)
    chosen = resolve_precision(cfg.precision, torch.device("cpu"))
    per_lockstep = cfg.agent_steps_per_lockstep
    rounds = {p: [components(cfg, 2.0, p) for _ in range(args.repeats)] for p in ("float32", "bfloat16")}
    parts = {p: {k: statistics.median(r[k] for r in rs) for k in PARTS} for p, rs in rounds.items()}
    rate, update_rate, update_wall, update_cpu = end_to_end(args.config, args.set, args.seconds)
    peer = None
    if args.peer:
        from bench_peer import run_peer

        torch.set_num_threads(os.cpu_count() or 1)  # torch's default, as a user's first loop runs
        peer_threads = torch.get_num_threads()
        peer = run_peer(load_config(args.config, args.set), args.peer_seconds)
        torch.set_num_threads(cfg.torch_threads or peer_threads)

    cores = os.cpu_count() or 1
    print(f"{cpu_description()}, {cores} cores; torch {torch.__version__}, {torch.get_num_threads()} thread(s); {heap}")
    print(f"config {args.config} ({', '.join(g.game for g in cfg.games)}; envs_per_game {cfg.envs_per_game}; "
          f"loss {cfg.loss}; overlap_update {cfg.overlap_update}); {describe(chosen, cfg.precision, torch.device('cpu'))}")
    print(f"{'component (timed alone, median of ' + str(args.repeats) + ')':<40}{'float32 ms':>12}{'bfloat16 ms':>13}"
          f"{'bound (agent steps/s)':>24}")
    fastest = {}
    for name in PARTS:
        t32, t16 = parts["float32"][name], parts["bfloat16"][name]
        fastest[name] = min(t32, t16)
        print(f"{name:<40}{1000 * t32:>12.2f}{1000 * t16:>13.2f}{per_lockstep / parts[chosen][name]:>24,.0f}")
    ceiling = per_lockstep * cores / sum(fastest.values())
    update = parts[chosen]["update (forward + backward + Adam)"] + parts[chosen]["replay sampling"]
    print(f"ceiling (fastest kernel of each part, {1000 * sum(fastest.values()):.1f} ms of CPU work per lockstep "
          f"step over {cores} cores): {ceiling:,.0f} agent steps/s; update bound ({chosen}): {per_lockstep / update:,.0f}")
    print(f"end to end (amn.trainer.train, {chosen}, {args.seconds:.0f} s after warm-up): {rate:,.0f} agent steps/s, "
          f"{update_rate:,.1f} updates/s = {100 * rate / ceiling:.0f} % of the ceiling")
    alone = 1000 * parts[chosen]["update (forward + backward + Adam)"]
    print(f"in that run an update took {update_wall:.2f} ms wall, {update_cpu:.2f} ms of its thread's CPU "
          f"(alone, per lockstep step: {alone:.2f} ms): {update_wall - update_cpu:.2f} ms waiting (the GIL, or preempted), "
          f"{update_cpu - alone:+.2f} ms of contention while running")
    if peer is not None:
        print(f"straightforward loop (scripts/bench_peer.py, float32, {peer_threads} torch threads): "
              f"{peer:,.0f} agent steps/s; the trainer is {rate / peer:.2f}x it")


if __name__ == "__main__":
    main()
