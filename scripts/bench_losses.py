"""Milliseconds per update for each loss of a study, like for like: the same batches, the same
student, one process, the losses interleaved round by round.

The study's own ``ms / update`` is each run's mean of ``perf/update_ms``, taken while that run's
acting shared the cores, and on whatever else the machine ran meanwhile. This times
``amn.learner.Learner.update`` alone (forward, the loss of every game, backward, clipping, Adam)
on fixed minibatches of real expert-labelled states from the study's games: ``--rounds`` rounds,
each loss ``--updates`` updates per round after a warm-up, the median update of each round, then
the median over rounds (and the spread of the round medians). Prints the machine and a table;
``--csv`` writes it.

    .venv/bin/python scripts/bench_losses.py --config configs/studies/losses.yaml --csv docs/results/losses/update_ms.csv
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

from amn.collect import Collector, load_experts
from amn.heap import keep_freed_memory
from amn.learner import Learner, build_student, make_loss
from amn.precision import resolve_precision
from amn.replay import GameReplay
from amn.student import FEATURE_DIM
from amn.study_config import load_study
from amn.study_report import write_csv
from amn.tb import Scalars

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_trainer import cpu_description  # noqa: E402


def labelled_batches(cfg, states_per_game: int, seed: int = 0) -> tuple[list[dict[str, torch.Tensor]], torch.Tensor]:
    """One minibatch per game (``cfg.batch_per_game`` rows) of expert-labelled states from the real
    environments, with expert values and features stored; and the games' action masks ``[G, 18]``."""
    experts = load_experts(cfg)
    replays = [GameReplay(2 * states_per_game, cfg.envs_per_game, store_values=True, feature_dim=FEATURE_DIM)
               for _ in cfg.games]
    student = build_student(cfg)[0]
    collector = Collector(cfg, experts, replays, seed=seed)
    rng = np.random.default_rng(seed)
    try:
        while min(len(r) for r in replays) < states_per_game:
            collector.step(student, 1.0, rng)  # random play: states from the games, labelled by the experts
    finally:
        collector.close()
    return [r.sample(cfg.batch_per_game, rng) for r in replays], collector.masks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=Path("configs/studies/losses.yaml"), help="a study config")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--updates", type=int, default=30, help="timed updates per loss per round")
    parser.add_argument("--csv", type=Path, help="write the table here")
    args = parser.parse_args()

    heap = keep_freed_memory()  # as the trainer has it
    study = load_study(args.config)
    variants = study.select(None)
    configs = {v: study.run_config(v, study.seeds_of(v)[0]) for v in variants}
    first = configs[variants[0]]
    torch.set_num_threads(first.torch_threads or 1)
    precision = resolve_precision(first.precision, torch.device("cpu"))
    batches, masks = labelled_batches(first, states_per_game=256)
    learners = {}
    for v, cfg in configs.items():
        loss_fn = make_loss(cfg)
        feed = [{k: t for k, t in b.items() if k != "values" or loss_fn.needs_expert_values} for b in batches]
        student, projections, params, optimizer = build_student(cfg)
        learners[v] = (Learner(cfg, student, projections, params, optimizer, loss_fn, list(range(cfg.num_games)),
                               masks, Scalars(), precision=precision), feed)
    rounds: dict[str, list[float]] = {v: [] for v in variants}
    for r in range(args.rounds):
        for v, (learner, feed) in learners.items():
            for _ in range(3):  # warm-up: the allocator's blocks, oneDNN's kernels
                learner.update(feed, 0)
            times = []
            for _ in range(args.updates):
                start = time.perf_counter()
                learner.update(feed, 0)
                times.append(time.perf_counter() - start)
            rounds[v].append(1000 * statistics.median(times))
        print(f"round {r + 1}/{args.rounds} done", file=sys.stderr)

    print(f"{cpu_description()}; torch {torch.__version__}, {torch.get_num_threads()} thread(s); {heap}")
    print(f"{args.config}: {first.num_games} games x {first.batch_per_game} rows per update, precision {precision}; "
          f"median of {args.rounds} rounds of each loss's median over {args.updates} updates")
    rows = []
    for v in variants:
        med, lo, hi = statistics.median(rounds[v]), min(rounds[v]), max(rounds[v])
        rows.append({"variant": v, "loss": configs[v].loss, "update_ms": round(med, 3), "round_min_ms": round(lo, 3),
                     "round_max_ms": round(hi, 3), "vs_ce": round(med / statistics.median(rounds[study.reference]), 3)
                     if study.reference in rounds else ""})
        print(f"{v:<44}{med:>9.2f} ms  (rounds {lo:.2f}-{hi:.2f})  {rows[-1]['vs_ce']}x {study.reference}")
    if args.csv:
        write_csv(args.csv, rows, list(rows[0]))  # atomic, as the study's tables: a killed run leaves the old one


if __name__ == "__main__":
    main()
