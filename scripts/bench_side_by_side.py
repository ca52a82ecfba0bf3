#!/usr/bin/env python
"""Wall time of evaluating a student and its expert one after the other vs side by side.

Both agents are the shipped expert here (the student has the same CNN, so the same cost);
the returns must come out identical either way, the time is what is measured.

    python scripts/bench_side_by_side.py --game atlantis --episodes 4 --max-frames 20000
"""

from __future__ import annotations

import argparse
import platform
import time

import torch

from amn.evaluation import play_games, play_games_side_by_side
from experts import load_expert


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--game", default="atlantis", help="a shipped expert's name")
    parser.add_argument("--episodes", type=int, default=4)
    parser.add_argument("--max-frames", type=int, default=20_000)
    parser.add_argument("--epsilon", type=float, default=0.05)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    expert = load_expert(args.game)
    kwargs = dict(epsilon=args.epsilon, seed=0, max_frames=args.max_frames, progress=False)

    start = time.perf_counter()
    alone = [play_games(expert.act, expert.game, args.episodes, **kwargs) for _ in range(2)]
    t_alone = time.perf_counter() - start
    start = time.perf_counter()
    together = play_games_side_by_side([expert.act, expert.act], expert.game, args.episodes, **kwargs)
    t_together = time.perf_counter() - start
    if together != alone:
        raise SystemExit(f"side by side played different games: {together} vs {alone}")
    print(f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads; "
          f"{expert.game}, 2 agents x {args.episodes} games, max {args.max_frames} frames, epsilon {args.epsilon}")
    print(f"one after the other: {t_alone:.1f} s; side by side: {t_together:.1f} s "
          f"({t_alone / t_together:.2f}x); returns identical: {alone[0]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
