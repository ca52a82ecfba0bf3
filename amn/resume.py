"""``--resume``: what must match the checkpoint, what the new config may change, and the files to cut back.

A resumed run takes its config from ``<run>/config.yaml`` plus ``--set`` overrides, and its
weights, optimiser state and counters from ``<run>/checkpoint.pt``. The two must agree on the
keys that shape the checkpoint's tensors or give them their meaning (:data:`STRUCTURAL_KEYS`);
every other key may change, and where the checkpoint also carries a value (Adam's lr, betas
and eps in its optimiser state) the config's value wins, with one line saying so.

The replays are not part of a checkpoint (``amn/checkpoint.py``): they are refilled after a
resume, so their shape (``replay_capacity_per_game``, ``envs_per_game``) may change freely.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from amn.checkpoint import restore_rng
from amn.config import TrainConfig, apply_overrides, from_dict
from amn.errors import UsageError

if TYPE_CHECKING:
    from amn.distributed import DistInfo

# Key -> why it must not change: the checkpoint's tensors would load but mean something else.
STRUCTURAL_KEYS: dict[str, str] = {
    "games": "the checkpoint's heads, projections and game ids follow its games, their order and experts",
    "per_game_heads": "the checkpoint's output layer is shared or per game",
    "feature_regression": "the checkpoint's feature-regression projections exist or not",
}


def _show(key: str, value: Any) -> str:
    if key == "games":
        return "[" + ", ".join(f"{g['game']}:{g['expert']}" for g in value) + "]"
    return json.dumps(value)


def load_run_config(run_dir: Path, overrides: list[str] | None = None) -> TrainConfig:
    """The resolved config saved in ``run_dir`` (for ``--resume``), with ``--set`` overrides."""
    import yaml

    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        raise UsageError(f"{run_dir} has no config.yaml: not a student run directory")
    data = apply_overrides(yaml.safe_load(path.read_text()), overrides or [])
    return from_dict(data)


def check_compatible(saved: dict[str, Any], cfg: TrainConfig, ckpt_path: Path) -> None:
    """Refuse (one line) to resume the checkpoint written with config ``saved`` under ``cfg``."""
    new = cfg.to_dict()
    for key, why in STRUCTURAL_KEYS.items():
        if saved.get(key) != new[key]:
            raise UsageError(
                f"cannot resume {ckpt_path}: {key} changed from {_show(key, saved.get(key))} to "
                f"{_show(key, new[key])} ({why}); resume with the checkpoint's {key} (drop that --set "
                f"or restore config.yaml) or start a new run in another --run-dir")


def restore(ckpt: dict[str, Any], ckpt_path: Path, cfg: TrainConfig, student: nn.Module, projections: nn.Module,
            optimizer: torch.optim.Optimizer, counters: dict[str, int], rng: np.random.Generator,
            ddp: DistInfo) -> None:
    """Continue from ``ckpt``: weights, optimiser state, ``counters`` (in place, one more resume) and
    this rank's RNG streams. The optimiser then gets ``cfg``'s lr, betas and eps, so nothing differs
    from what config.yaml says; rank 0 prints one line naming what changed from the checkpoint."""
    changed = _load_modules(ckpt, ckpt_path, cfg, student, projections, optimizer)
    if changed and ddp.is_main:
        print(f"resume: the config overrides the checkpoint's optimiser: {', '.join(changed)}", file=sys.stderr)
    counters.update(ckpt["counters"])
    counters["resumes"] += 1
    # Distributed checkpoints keep every rank's RNG: with the same world size each rank continues
    # its own streams; with another one rank 0 takes the first and the others start fresh.
    rng_states = ckpt.get("rng_per_rank", [ckpt["rng"]])
    if len(rng_states) == ddp.world_size:
        restore_rng(rng, rng_states[ddp.rank])
    elif ddp.is_main:
        restore_rng(rng, rng_states[0])


def _load_modules(ckpt: dict[str, Any], ckpt_path: Path, cfg: TrainConfig, student: nn.Module,
                  projections: nn.Module, optimizer: torch.optim.Optimizer) -> list[str]:
    """Load the weights and the optimiser state, then set ``cfg``'s lr, betas and eps in every param
    group (``load_state_dict`` brings back the checkpoint's). Returns the changes, e.g. ``"lr 0.00025 -> 0.001"``."""
    try:
        student.load_state_dict(ckpt["student"])
        projections.load_state_dict(ckpt["projections"])
        optimizer.load_state_dict(ckpt["optimizer"])
    except (RuntimeError, ValueError, KeyError) as err:
        raise UsageError(f"{ckpt_path} does not fit this config: {str(err).splitlines()[0]}; "
                         f"resume with the run's own config.yaml or start a new run") from None
    wanted = {"lr": cfg.lr, "betas": tuple(cfg.adam_betas), "eps": cfg.adam_eps}
    changes = []
    for name, value in wanted.items():
        old = optimizer.param_groups[0][name]
        if (tuple(old) if name == "betas" else old) != value:
            changes.append(f"{name} {_plain(old)} -> {_plain(value)}")
        for group in optimizer.param_groups:
            group[name] = value
    return changes


def _plain(value: Any) -> str:
    return str(list(value)) if isinstance(value, tuple) else str(value)


def cut_evaluations(path: Path, agent_steps: int) -> int:
    """Keep the rows of ``evaluations.jsonl`` with ``agent_steps <= agent_steps`` (the checkpoint's
    step: TensorBoard is purged back to it too, and the resumed run evaluates the later steps again).
    Rewritten atomically; returns the number of rows dropped. A torn last line (the process died
    while appending it) is dropped too; an unreadable line elsewhere is an error."""
    if not path.is_file():
        return 0
    lines = path.read_text().splitlines()
    kept: list[str] = []
    for i, line in enumerate(lines):
        try:
            row = json.loads(line)
            step = row["agent_steps"]
        except (json.JSONDecodeError, TypeError, KeyError):
            if i == len(lines) - 1:
                continue
            raise UsageError(f"{path}:{i + 1} is not an evaluation row (JSON with agent_steps); "
                             f"fix or delete that line, then --resume again") from None
        if step <= agent_steps:
            kept.append(line)
    dropped = len(lines) - len(kept)
    if dropped:
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text("".join(f"{line}\n" for line in kept))
        os.replace(tmp, path)
        print(f"resume: dropped {dropped} row(s) of {path} past the checkpoint's agent step {agent_steps:,}",
              file=sys.stderr)
    return dropped
