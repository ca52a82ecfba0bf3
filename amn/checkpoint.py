"""Atomic student checkpoints: write ``checkpoint.pt.tmp``, then ``os.replace``.

A checkpoint holds the student, the feature-regression projections, the
optimiser, step counters, the RNG states and the resolved config, so ``--resume``
continues the same schedule (ε is a function of the step counters). The replay
memories are *not* saved (100k frames per game is ~700 MB); after a resume they
are refilled by acting, and updates wait until every replay again holds
``learning_starts_per_game`` transitions.

Only tensors and plain Python values (dict, list, tuple, str, int, float, bool, None)
go in, so a checkpoint loads with ``torch.load(weights_only=True)``: loading a run
never runs code from the file. :func:`save_checkpoint` refuses anything else.

A distributed run (``amn/distributed.py``) writes the same format from rank 0: the
unwrapped student (no DDP ``module.`` prefix), so either kind of run loads either
kind of checkpoint, plus ``rng_per_rank`` (every rank's RNG states) for ``--resume``
with the same number of processes.

Format 1 (Python's RNG state as a tuple) is refused with a hint:
``python -m amn.checkpoint PATH`` converts one in place, also loading it with ``weights_only=True``.
"""

from __future__ import annotations

import os
import pickle
import random
import re
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from amn.errors import UsageError

CHECKPOINT_NAME = "checkpoint.pt"
# 2: plain tensors and Python values only (RNG states as lists), loaded with weights_only=True.
FORMAT_VERSION = 2
_PLAIN = (str, int, float, bool, type(None), torch.Tensor)


def rng_state(rng: np.random.Generator) -> dict[str, Any]:
    """The acting/sampling RNG states as plain values: numpy's bit-generator state is a dict of
    ints and a str, torch's a uint8 tensor, Python's ``(version, 625 ints, gauss)`` becomes a list."""
    version, internal, gauss_next = random.getstate()
    return {"numpy": rng.bit_generator.state, "torch": torch.get_rng_state(),
            "python": [version, list(internal), gauss_next]}


def restore_rng(rng: np.random.Generator, state: dict[str, Any]) -> None:
    rng.bit_generator.state = state["numpy"]
    torch.set_rng_state(state["torch"])
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))


def _check_plain(value: Any, where: str) -> None:
    """Raise TypeError (a bug in the caller) at the first value weights-only loading would refuse."""
    if isinstance(value, dict):
        for k, v in value.items():
            _check_plain(k, f"{where} key {k!r}")
            _check_plain(v, f"{where}[{k!r}]")
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            _check_plain(v, f"{where}[{i}]")
    elif not isinstance(value, _PLAIN):
        raise TypeError(f"checkpoint payload{where} is a {type(value).__name__}: only tensors and plain "
                        f"Python values load with weights_only=True")


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    """Write ``payload`` to ``path`` atomically (a crash leaves the previous file intact)."""
    payload = {"format_version": FORMAT_VERSION, **payload}
    _check_plain(payload, "")
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)


def resolve_checkpoint(path: str | Path) -> Path:
    """A run directory or a checkpoint file -> the checkpoint file."""
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT_NAME
    if not path.is_file():
        raise UsageError(f"no checkpoint at {path}")
    return path


def _load_plain(path: Path) -> dict[str, Any]:
    """``torch.load(weights_only=True)`` on the CPU; one clear line if the file is corrupt or holds
    Python objects. Returns a dict with an int ``format_version`` and a ``student``."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for a damaged zip
        # weights_only refuses every global it does not know (os.system, any class) before it runs.
        found = re.search(r"GLOBAL (\S+)", str(err)) if isinstance(err, pickle.UnpicklingError) else None
        if found:
            raise UsageError(f"{path} is not a plain-tensor amn checkpoint: it holds a Python object "
                             f"({found.group(1)}), which amn does not load; use the checkpoint.pt "
                             f"that amn train-student wrote") from None
        raise UsageError(f"checkpoint {path} is unreadable ({type(err).__name__}); "
                         f"it is corrupt or truncated: delete it to start over") from None
    version = ckpt.get("format_version") if isinstance(ckpt, dict) else None
    if not isinstance(version, int) or "student" not in ckpt:
        raise UsageError(f"{path} is not an amn student checkpoint (format {FORMAT_VERSION})")
    return ckpt


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True``; one clear line if it is truncated, corrupt,
    holds Python objects, or is of another format."""
    path = resolve_checkpoint(path)
    ckpt = _load_plain(path)
    version = ckpt["format_version"]
    if version < FORMAT_VERSION:
        raise UsageError(f"{path} is an amn checkpoint of format {version}, this amn reads format "
                         f"{FORMAT_VERSION}; convert it with: python -m amn.checkpoint {path}")
    if version > FORMAT_VERSION:
        raise UsageError(f"{path} is an amn checkpoint of format {version}, newer than this amn "
                         f"(format {FORMAT_VERSION}); update amn to load it")
    return ckpt


def upgrade_checkpoint(path: str | Path) -> Path:
    """Rewrite a format-1 checkpoint as the current format, in place (atomically).

    Format 1 held only plain values too, so it is loaded with ``weights_only=True`` as well: a
    file holding anything else is refused like by :func:`load_checkpoint`."""
    path = resolve_checkpoint(path)
    ckpt = _load_plain(path)
    if ckpt["format_version"] != 1:
        raise UsageError(f"{path} is not an amn checkpoint of format 1 (format {ckpt['format_version']}); "
                         f"nothing to convert")
    for state in [ckpt["rng"], *ckpt.get("rng_per_rank", [])]:
        version, internal, gauss_next = state["python"]
        state["python"] = [version, list(internal), gauss_next]
    ckpt.pop("format_version")
    save_checkpoint(path, ckpt)
    return path


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m amn.checkpoint RUN_DIR|CHECKPOINT  (converts a format-1 checkpoint)")
    try:
        print(f"converted {upgrade_checkpoint(sys.argv[1])} to format {FORMAT_VERSION}")
    except UsageError as err:
        sys.exit(f"amn: error: {err}")
