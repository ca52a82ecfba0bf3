"""The ``amn`` command line.

Each subsystem adds its own subcommands (``add_parsers(subparsers)``), so this
file only routes: ``amn experts ...`` lives in ``experts/cli.py``,
``amn train-student`` and ``amn evaluate`` in ``amn/student_cli.py``, ``amn study`` in
``amn/study.py``, ``amn export-student`` in ``amn/export_student.py``, ``amn plot`` in ``amn/plot.py``.
"""

from __future__ import annotations

import argparse
import signal
import sys

from amn.errors import UsageError


def build_parser() -> argparse.ArgumentParser:
    from experts import cli as experts_cli

    parser = argparse.ArgumentParser(prog="amn", description="Actor-Mimic multi-task policy distillation on Atari.")
    sub = parser.add_subparsers(dest="command", required=True)
    experts_cli.add_parsers(sub)
    from amn import student_cli

    student_cli.add_parsers(sub)
    from amn import study

    study.add_parsers(sub)
    from amn import export_student, plot

    export_student.add_parsers(sub)
    plot.add_parsers(sub)
    return parser


def take_back_sigint() -> None:
    """Make Ctrl-C / ``kill -INT`` stop amn wherever it is, also when it inherited SIGINT ignored.

    A non-interactive shell starts a background job (``amn study ... &``) with SIGINT ignored, and
    Python then raises no KeyboardInterrupt. Training catches SIGINT on its own (amn.trainer.StopSignals),
    so without this such a job stopped on SIGINT in training but not during setup or between a
    study's runs. Stopping is always safe: training checkpoints, and every other write is atomic."""
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def main(argv: list[str] | None = None) -> int:
    take_back_sigint()
    args = build_parser().parse_args(argv)
    try:
        result = args.func(args)
    except (UsageError, ValueError, FileNotFoundError, FileExistsError) as err:
        print(f"amn: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # training checkpoints on its own; elsewhere there is nothing to save
        print("amn: interrupted", file=sys.stderr)
        return 130
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
