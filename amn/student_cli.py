"""``amn train-student`` and ``amn evaluate``."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from amn.errors import UsageError

if TYPE_CHECKING:
    from amn.config import TrainConfig
    from amn.distributed import DistInfo


def _train(args: argparse.Namespace) -> int:
    from amn import distributed

    # The config first: its device picks the process group's backend (nccl for cuda, gloo for cpu).
    cfg = _load_train_config(args)
    device = distributed.resolve_device(cfg.device, distributed.launched_local_rank())
    # Under torchrun (WORLD_SIZE > 1) join the process group; a plain run stays single-process.
    ddp = distributed.init_from_env(device)
    try:
        return _train_in(args, cfg, ddp)
    finally:
        distributed.shutdown()


def _load_train_config(args: argparse.Namespace) -> TrainConfig:
    from amn.config import load_config
    from amn.resume import load_run_config

    if args.resume:
        if args.run_dir is None:
            raise UsageError("--resume needs --run-dir DIR (the run to continue)")
        # The run's own resolved config; --config is not needed, --set may extend e.g. the budget.
        return load_run_config(args.run_dir, args.set)
    if args.config is None:
        raise UsageError("train-student needs --config configs/NAME.yaml (or --resume --run-dir DIR)")
    return load_config(args.config, args.set)


def _train_in(args: argparse.Namespace, cfg: TrainConfig, ddp: DistInfo) -> int:
    from amn import distributed
    from amn.errors import NonFiniteLoss
    from amn.trainer import train

    run_dir = args.run_dir
    if run_dir is None:  # a new run (--resume needs --run-dir)
        run_dir = Path("runs") / f"{cfg.name}-{time.strftime('%Y%m%d-%H%M%S')}"
        run_dir = Path(distributed.all_gather(str(run_dir))[0])  # distributed: rank 0's timestamp for all
    try:
        summary = train(cfg, run_dir, resume=args.resume, progress=not args.no_progress,
                        evaluate=not args.no_eval)
    except NonFiniteLoss as err:
        rank = f"[rank {ddp.rank}] " if ddp.enabled else ""  # the rank that saw it names the game
        print(f"amn: {rank}training stopped: {err}; the last good checkpoint in {run_dir} is kept", file=sys.stderr)
        return 1
    if summary["status"] == "interrupted" and ddp.is_main:
        print(f"interrupted at {summary['agent_steps']:,} agent steps; checkpoint saved. Continue with:\n"
              f"  amn train-student --run-dir {run_dir} --resume", file=sys.stderr)
    if summary["status"] == "interrupted":
        return 130
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from amn.report import evaluate_run, format_table

    from amn.video import check_video_args

    check_video_args(args)  # before any game is played
    if args.episodes < 0:
        raise UsageError(f"--episodes must be >= 0, got {args.episodes}")
    if args.episodes > 0:
        report = evaluate_run(args.path, games=args.games, episodes=args.episodes, epsilon=args.epsilon,
                              sticky=args.sticky, seed=args.seed, max_frames=args.max_frames,
                              json_path=args.json, plot_path=args.plot, progress=not args.no_progress)
        print(format_table(report))
    if args.video is not None:
        from amn.video import describe, record_run

        for result in record_run(args.path, args.video, games=args.games, epsilon=args.epsilon,
                                 sticky=args.sticky, seed=args.seed, max_frames=args.video_max_frames,
                                 fps=args.video_fps, gif=args.gif, progress=not args.no_progress):
            print(describe(result))
    return 0


def add_parsers(sub) -> None:
    train = sub.add_parser("train-student", help="train a multi-task Actor-Mimic student from experts")
    train.add_argument("--config", type=Path, help="configs/NAME.yaml")
    train.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="override a config value (YAML syntax), e.g. --set total_agent_steps=1e6")
    train.add_argument("--run-dir", type=Path, default=None, help="default: runs/<config name>-<timestamp>")
    train.add_argument("--resume", action="store_true", help="continue the run in --run-dir from its checkpoint")
    train.add_argument("--no-eval", action="store_true", help="skip the evaluation at the end")
    train.add_argument("--no-progress", action="store_true", help="no progress bars")
    train.set_defaults(func=_train)

    ev = sub.add_parser("evaluate", help="score a trained student and its experts on full games")
    ev.add_argument("path", type=Path, help="a run directory or a checkpoint file")
    ev.add_argument("--games", nargs="+", default=None, help="subset of the student's games")
    ev.add_argument("--episodes", type=int, default=8, help="full games per game (default 8; 0 with --video: "
                    "the videos only)")
    ev.add_argument("--epsilon", type=float, default=0.05)
    ev.add_argument("--sticky", action="store_true", help="sticky actions (p=0.25) instead of none")
    ev.add_argument("--seed", type=int, default=0)
    ev.add_argument("--max-frames", type=int, default=None, help="per-game frame cap (default: the run's)")
    ev.add_argument("--json", type=Path, default=None)
    ev.add_argument("--plot", type=Path, default=None, help="bar chart PNG")
    ev.add_argument("--no-progress", action="store_true")
    from amn.video import add_video_arguments

    add_video_arguments(ev, "DIR/<Game>.mp4 per game: the student (left) beside its expert (right), "
                            "the same game (same seed, same epsilon stream)", "<Game>")
    ev.set_defaults(func=_evaluate)
