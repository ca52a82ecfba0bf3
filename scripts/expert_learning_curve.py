#!/usr/bin/env python
"""An expert's learning curve from its ``amn experts train`` run directory.

Reads the run's TensorBoard events (SB3's ``rollout/ep_rew_mean``: the mean raw
full-game score of the last 100 training games, played by the stochastic policy
with clipped-reward training underneath) and writes ``<out>.csv`` (agent steps,
training minutes, pauses left out, score) and ``<out>.png``.

    python scripts/expert_learning_curve.py /root/amn-runs/pong-ppo --out docs/results/expert_pong
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path


PAUSE_MINUTES = 2.0  # SB3 logs every rollout (seconds apart); a longer gap is a paused process (SIGSTOP)


def read_curve(run_dir: Path) -> list[tuple[int, float, float]]:
    """``[(agent_steps, training minutes so far, ep_rew_mean), ...]`` over every events file of the run.

    Each ``--resume`` writes a new events file that restarts from its checkpoint, so a later
    file replaces the earlier files' points from its first step on. Training minutes add up the
    gaps between consecutive points of one process, leaving out pauses (gaps over
    ``PAUSE_MINUTES``) and the time between an interruption and its resume.
    """
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    runs = []
    for events in (run_dir / "tb").glob("run_*/events.out.tfevents.*"):
        acc = EventAccumulator(str(events), size_guidance={"scalars": 0})
        acc.Reload()
        if "rollout/ep_rew_mean" in acc.Tags()["scalars"]:
            runs.append([(e.step, e.wall_time, e.value) for e in acc.Scalars("rollout/ep_rew_mean")])
    if not runs:
        raise SystemExit(f"{run_dir}/tb has no rollout/ep_rew_mean yet")
    merged: list[tuple[int, float, float, int]] = []  # (step, wall time, score, process)
    for proc, points in enumerate(sorted(runs, key=lambda r: r[0][1])):
        merged = [p for p in merged if p[0] < points[0][0]] + [(s, w, v, proc) for s, w, v in points]
    curve, minutes = [], 0.0
    for prev, (step, wall, value, proc) in zip([None] + merged, merged):
        if prev is not None and prev[3] == proc and (wall - prev[1]) / 60 <= PAUSE_MINUTES:
            minutes += (wall - prev[1]) / 60
        curve.append((step, minutes, value))
    return curve


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--out", type=Path, required=True, help="path stem: writes <out>.csv and <out>.png")
    args = parser.parse_args(argv)
    curve = read_curve(args.run_dir)
    run = json.loads((args.run_dir / "run.json").read_text())
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with open(args.out.with_suffix(".csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["agent_steps", "training_minutes", "ep_rew_mean"])
        w.writerows((s, f"{m:.2f}", f"{r:.2f}") for s, m, r in curve)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot([s / 1e6 for s, _, _ in curve], [r for _, _, r in curve])
    ax.set_xlabel("agent steps (millions)")
    ax.set_ylabel("training score (mean of last 100 games)")
    ax.set_title(f"{run['game']} {run['algo'].upper()} expert, seed {run['seed']}: "
                 f"{curve[-1][1]:.0f} min of training")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(args.out.with_suffix(".png"), dpi=100)
    print(f"{len(curve)} points, last {curve[-1][0]:,} steps: {curve[-1][2]:.1f}; wrote {args.out}.csv/.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
