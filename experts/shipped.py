"""The project's own expert format: ``<name>.pt`` (float16 weights) + ``<name>.json`` (metadata).

The ``.pt`` is a plain ``ExpertNetwork`` state dict in float16 (~3.4 MB for the
Nature CNN), loadable with ``weights_only=True``. The ``.json`` says what the
weights are and how good they are, and carries the ``.pt``'s sha256 so a
modified or truncated file is caught at load time.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

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
