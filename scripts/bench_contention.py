"""Why the trainer's parts run slower beside each other than alone: the update beside neighbours.

The update (the trainer's ``Learner.update``: forward, backward, Adam on 8 samples of every game,
in the config's precision, 1 torch thread) is timed on the first core while a neighbour process
runs on the second:

- ``none``: nothing;
- ``in-cache``: a 192x192 float32 matrix product in a loop (0.4 MB: compute, no memory traffic);
- ``streamer``: a copy of ``--stream-mb`` MB into another buffer in a loop (memory traffic only);
- ``labelling``: the config's experts labelling batches of ``envs_per_game`` states, as the main
  thread does every lockstep step (their float32 weights: 6.8 MB an expert).

If the two cores only shared compute nothing would change beside the in-cache neighbour (each
core has its own units); if they share the last-level cache and memory, the streamer and the
labelling slow the update, whose own weights, gradients and Adam state are ~30 MB. Rounds
alternate the neighbours; each line is the median over rounds of the mean of ``--updates``.

    .venv/bin/python scripts/bench_contention.py --rounds 3
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

NEIGHBOURS = ("none", "in-cache", "streamer", "labelling")


def neighbour(kind: str, config: Path, stream_mb: int) -> None:
    """Run ``kind`` on this process's core until killed."""
    torch.set_num_threads(1)
    if kind == "in-cache":
        a, b = torch.randn(192, 192), torch.randn(192, 192)
        while True:
            torch.mm(a, b)
    elif kind == "streamer":
        src = torch.ones(stream_mb << 18)  # float32: 4 bytes each
        dst = torch.empty_like(src)
        while True:
            dst.copy_(src)
    elif kind == "labelling":
        from amn.collect import load_experts
        from amn.config import load_config

        cfg = load_config(config)
        experts = load_experts(cfg)
        obs = torch.randint(0, 256, (cfg.envs_per_game, 4, 84, 84), dtype=torch.uint8)
        while True:
            for e in experts:
                e.soft_policy(obs, cfg.temperature)


def time_update(config: Path, updates: int) -> float:
    """Mean ms per update of the trainer's learner on random states and soft targets."""
    from amn.config import load_config
    from amn.learner import Learner, build_student, make_loss
    from amn.precision import resolve_precision
    from amn.tb import Scalars
    from amn.collect import action_mask

    cfg = load_config(config)
    student, projections, params, optimizer = build_student(cfg)
    masks = torch.stack([action_mask(list(range(18))) for _ in cfg.games])
    learner = Learner(cfg, student, projections, params, optimizer, make_loss(cfg), list(range(cfg.num_games)),
                      masks, Scalars(), precision=resolve_precision(cfg.precision, torch.device("cpu")))
    gen = torch.Generator().manual_seed(0)
    batches = [{"obs": torch.randint(0, 256, (cfg.batch_per_game, 4, 84, 84), dtype=torch.uint8, generator=gen),
                "target": torch.softmax(torch.randn(cfg.batch_per_game, 18, generator=gen), -1)}
               for _ in cfg.games]
    for _ in range(10):
        learner.update(batches, 0)
    start = time.perf_counter()
    for _ in range(updates):
        learner.update(batches, 0)
    return 1000 * (time.perf_counter() - start) / updates


def main() -> None:
    from amn.heap import keep_freed_memory

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=Path("configs/default.yaml"))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--updates", type=int, default=100)
    parser.add_argument("--stream-mb", type=int, default=64)
    parser.add_argument("--neighbour", choices=NEIGHBOURS, help=argparse.SUPPRESS)  # the child process
    parser.add_argument("--core", type=int, help=argparse.SUPPRESS)  # the child's core
    args = parser.parse_args()
    if args.neighbour:
        os.sched_setaffinity(0, {args.core})
        neighbour(args.neighbour, args.config, args.stream_mb)
        return
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        raise SystemExit("bench_contention: needs two usable cores (one for the update, one for the neighbour)")
    os.sched_setaffinity(0, {cores[0]})
    torch.set_num_threads(1)
    heap = keep_freed_memory()
    times: dict[str, list[float]] = {k: [] for k in NEIGHBOURS}
    for _ in range(args.rounds):
        for kind in NEIGHBOURS:
            child = None
            if kind != "none":
                child = subprocess.Popen([sys.executable, __file__, "--neighbour", kind, "--config", str(args.config),
                                          "--stream-mb", str(args.stream_mb), "--core", str(cores[1])])
                time.sleep(3.0)  # its imports and experts loaded: it is running its loop
            try:
                times[kind].append(time_update(args.config, args.updates))
            finally:
                if child is not None:
                    child.kill()
                    child.wait()
    from bench_trainer import cpu_description

    print(f"{cpu_description()}; torch {torch.__version__}, 1 thread; {heap}; config {args.config}")
    alone = statistics.median(times["none"])
    for kind in NEIGHBOURS:
        t = statistics.median(times[kind])
        print(f"update beside {kind:<10} {t:7.2f} ms ({100 * (t / alone - 1):+5.1f} %)  rounds: "
              + ", ".join(f"{x:.2f}" for x in times[kind]))


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    main()
