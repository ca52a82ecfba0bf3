"""Atomic student checkpoints: write ``checkpoint.pt.tmp``, then ``os.replace``.

A checkpoint holds the student, the feature-regression projections, the
optimiser, step counters, the RNG states and the resolved config, so ``--resume``
continues the same schedule (ε is a function of the step counters). The replay
memories are *not* saved (100k frames per game is ~700 MB); after a resume they
are refilled by acting, and updates wait until every replay again holds
``learning_starts_per_game`` transitions.

A distributed run (``amn/distributed.py``) writes the same format from rank 0: the
unwrapped student (no DDP ``module.`` prefix), so either kind of run loads either
kind of checkpoint, plus ``rng_per_rank`` (every rank's RNG states) for ``--resume``
with the same number of processes.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from amn.cli import UsageError

CHECKPOINT_NAME = "checkpoint.pt"
FORMAT_VERSION = 1


def rng_state(rng: np.random.Generator) -> dict[str, Any]:
    return {"numpy": rng.bit_generator.state, "torch": torch.get_rng_state(), "python": random.getstate()}


def restore_rng(rng: np.random.Generator, state: dict[str, Any]) -> None:
    rng.bit_generator.state = state["numpy"]
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    """Write ``payload`` to ``path`` atomically (a crash leaves the previous file intact)."""
    tmp = path.with_name(path.name + ".tmp")
    torch.save({"format_version": FORMAT_VERSION, **payload}, tmp)
    os.replace(tmp, path)


def resolve_checkpoint(path: str | Path) -> Path:
    """A run directory or a checkpoint file -> the checkpoint file."""
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT_NAME
    if not path.is_file():
        raise UsageError(f"no checkpoint at {path}")
    return path


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint; one clear line if it is truncated, corrupt or not ours."""
    path = resolve_checkpoint(path)
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # torch raises many types for a damaged zip/pickle
        raise UsageError(f"checkpoint {path} is unreadable ({type(err).__name__}); "
                         f"it is corrupt or truncated: delete it to start over") from None
    if not isinstance(ckpt, dict) or ckpt.get("format_version") != FORMAT_VERSION or "student" not in ckpt:
        raise UsageError(f"{path} is not an amn student checkpoint (format {FORMAT_VERSION})")
    return ckpt
