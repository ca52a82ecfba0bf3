"""The ``amn`` command line.

Each subsystem adds its own subcommands (``add_parsers(subparsers)``), so this
file only routes: ``amn experts ...`` lives in ``experts/cli.py``,
``amn train-student`` and ``amn evaluate`` in ``amn/student_cli.py``, ``amn study`` in
``amn/study.py``, ``amn export-student`` in ``amn/export_student.py``, ``amn plot`` in ``amn/plot.py``.
"""

from __future__ import annotations

import argparse
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


def main(argv: list[str] | None = None) -> int:
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
