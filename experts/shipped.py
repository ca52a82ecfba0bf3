"""The project's own expert format: ``<name>.pt`` (float16 weights) + ``<name>.json`` (metadata).

The ``.pt`` is a plain ``ExpertNetwork`` state dict in float16 (~3.4 MB for the
Nature CNN), loadable with ``weights_only=True``. The ``.json`` says what the
weights are and how good they are, and carries the ``.pt``'s sha256 so a
modified or truncated file is caught at load time.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from datetime import datetime, timezone
from pathlib import Path

import torch

from experts.atari import PIPELINES, canonical_game, minimal_action_set
from experts.network import ExpertNetwork
from experts.registry import write_json_atomic

SHIPPED_DIR = Path(__file__).resolve().parent / "shipped"
FORMAT_VERSION = 1
MAX_WEIGHTS_BYTES = 4 * 1024 * 1024
#: Keys every metadata file must have (``score`` and ``seed`` may be null).
REQUIRED_KEYS = ("format_version", "name", "game", "algo", "num_actions", "action_set", "action_meanings",
                 "observation_pipeline", "training_steps", "seed", "score", "command", "weights", "sha256")
DEFAULT_PROTOCOL = ("full games, raw score, epsilon 0.01, no sticky actions, up to 30 no-op starts, "
                    "108,000-frame cap, ale_py.AtariVectorEnv")


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def shipped_names() -> list[str]:
    """Names of the experts shipped in ``experts/shipped/``."""
    return sorted(p.stem for p in SHIPPED_DIR.glob("*.json"))


def read_metadata(json_path: Path) -> dict:
    """Parse and check a metadata file; one-line errors name the file and the problem."""
    if not json_path.is_file():
        raise FileNotFoundError(f"{json_path}: no such metadata file; an own-format expert is <name>.json + <name>.pt "
                                f"(write them with `amn experts export`)")
    try:
        meta = json.loads(json_path.read_text())
    except (ValueError, UnicodeDecodeError) as err:
        raise ValueError(f"{json_path}: not valid JSON ({err}); re-export it with `amn experts export`") from None
    if not isinstance(meta, dict):
        raise ValueError(f"{json_path}: expected a JSON object; re-export it with `amn experts export`")
    for key in REQUIRED_KEYS:
        if key not in meta:
            raise ValueError(f"{json_path}: missing metadata key {key!r}; re-export it with `amn experts export`")
    return meta


def load_own(path: str | Path, name: str | None = None):
    """Load ``<name>.json`` + its ``.pt`` (either path may be given) as an :class:`experts.Expert`."""
    from experts.expert import Expert

    json_path = Path(path).with_suffix(".json")
    meta = read_metadata(json_path)
    pt = json_path.parent / meta["weights"]
    if not pt.is_file():
        raise FileNotFoundError(f"{pt}: weights file named by {json_path} is missing; copy it beside the .json or re-export")
    digest = sha256_file(pt)
    if digest != meta["sha256"]:
        raise ValueError(f"{pt}: sha256 mismatch (file {digest[:12]}…, {json_path.name} says {str(meta['sha256'])[:12]}…): "
                         f"the weights were modified or truncated; restore or re-export them")
    try:
        game = canonical_game(str(meta["game"]))
    except ValueError as err:
        raise ValueError(f"{json_path}: {err}; fix the 'game' key") from None
    if meta["observation_pipeline"] not in PIPELINES:
        raise ValueError(f"{json_path}: observation_pipeline {meta['observation_pipeline']!r} is not one of "
                         f"{', '.join(PIPELINES)}; re-export it with `amn experts export`")
    action_set = minimal_action_set(game)
    if list(meta["action_set"]) != action_set or int(meta["num_actions"]) != len(action_set):
        raise ValueError(f"{json_path}: action_set {meta['action_set']} (num_actions {meta['num_actions']}) is not "
                         f"{game}'s minimal action set {action_set}; re-export it")
    try:
        state = torch.load(pt, map_location="cpu", weights_only=True)
        net = ExpertNetwork(len(action_set))
        net.load_state_dict({k: v.float() for k, v in state.items()})
    except Exception as err:  # any unreadable or mismatched weights file
        raise ValueError(f"{pt}: cannot load weights ({type(err).__name__}: {str(err).splitlines()[0]}); "
                         f"re-export it with `amn experts export`") from None
    info = dict(meta, format="own", source=str(json_path))
    return Expert(net, game, str(meta["algo"]), info, name=name or json_path.stem)


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
    from experts.expert import Expert, load_expert

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
