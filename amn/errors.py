"""The error types every layer may raise; this module imports nothing of the package.

It sits at the bottom of the import graph so that the CLI (``amn/cli.py``) can sit on top:
modules raise :class:`UsageError`, the CLI catches it and prints it as one line.
"""

from __future__ import annotations


class UsageError(Exception):
    """A bad input the user can fix; printed as one line, exit code 2."""


class NonFiniteLoss(RuntimeError):
    """The loss or gradient became NaN/inf; the run stops and keeps its last good checkpoint.

    Besides the message: ``step`` (agent step), ``game`` (None for the gradient or another rank)
    and, for a non-finite loss, ``rows`` and ``nonfinite_rows`` of the failing batch.
    """

    def __init__(self, message: str, *, step: int | None = None, game: str | None = None,
                 rows: int = 0, nonfinite_rows: int = 0):
        super().__init__(message)
        self.step, self.game, self.rows, self.nonfinite_rows = step, game, rows, nonfinite_rows
