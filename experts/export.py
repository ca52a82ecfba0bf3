"""Ship an expert: ``export_expert`` writes the project's own format (``experts/shipped.py``),
``record_score`` stores its measured score in the metadata."""

from __future__ import annotations

import os
import re
from datetime import datetime, timezone
from pathlib import Path

import torch

from experts.expert import Expert, load_expert
from experts.registry import write_json_atomic
from experts.shipped import (DEFAULT_PROTOCOL, FORMAT_VERSION, MAX_WEIGHTS_BYTES, SHIPPED_DIR, read_metadata,
                             sha256_file)


def export_expert(
    model,
    name: str,
    *,
    out_dir: str | Path | None = None,
    score: dict | None = None,
    game: str | None = None,
    command: str | None = None,
) -> Path:
    """Write ``<out_dir>/<name>.pt`` (float16 weights) and ``<name>.json``; return the ``.json`` path.

    :param model: an SB3 zip path, an own-format path, a shipped/registered name, or an ``Expert``
    :param name: lower-case file stem, e.g. ``"pong"``
    :param out_dir: default ``experts/shipped/``
    :param score: e.g. ``amn.evaluation.summarize(returns)`` (mean, std, episodes, returns) plus
        ``protocol``; stored as given, ``protocol`` defaulting to the project's
    :param command: the command line that produced the expert, for provenance
    """
    if not re.fullmatch(r"[a-z0-9_]+", name):
        raise ValueError(f"expert name {name!r} must be lower-case letters, digits and underscores (e.g. space_invaders)")
    expert = model if isinstance(model, Expert) else load_expert(model, game=game)
    out = Path(out_dir) if out_dir is not None else SHIPPED_DIR
    out.mkdir(parents=True, exist_ok=True)
    pt, json_path = out / f"{name}.pt", out / f"{name}.json"

    state = {k: v.detach().to(torch.float16).contiguous() for k, v in expert.net.state_dict().items()}
    tmp = pt.with_suffix(".pt.tmp")
    torch.save(state, tmp)
    if tmp.stat().st_size > MAX_WEIGHTS_BYTES:
        tmp.unlink()
        raise ValueError(f"{pt}: weights would be larger than {MAX_WEIGHTS_BYTES} bytes; only the Nature CNN is supported")
    os.replace(tmp, pt)

    if score is not None:
        score = dict(score)
        score.setdefault("protocol", DEFAULT_PROTOCOL)
    meta = {
        "format_version": FORMAT_VERSION,
        "name": name,
        "game": expert.game,
        "algo": expert.algo,
        "num_actions": expert.num_actions,
        "action_set": expert.action_set,
        "action_meanings": expert.action_meanings,
        "observation_pipeline": expert.observation_pipeline,  # the training pipeline, kept from the source
        "training_steps": expert.meta.get("training_steps"),
        "seed": expert.meta.get("seed"),
        "score": score,
        "command": command or f"experts.export_expert({expert.meta.get('source', expert.name)!r}, {name!r})",
        "source": expert.meta.get("source"),
        "source_observation_layout": expert.meta.get("observation_layout"),
        "exported": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "weights": pt.name,
        "sha256": sha256_file(pt),
    }
    write_json_atomic(json_path, meta)
    return json_path


def record_score(json_path: str | Path, score: dict) -> Path:
    """Store ``score`` (as for :func:`export_expert`) in an exported expert's ``.json``, atomically."""
    json_path = Path(json_path)
    meta = read_metadata(json_path)
    meta["score"] = dict(score, protocol=score.get("protocol", DEFAULT_PROTOCOL))
    write_json_atomic(json_path, meta)
    return json_path
