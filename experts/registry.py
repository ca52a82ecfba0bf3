"""The user's registry of imported experts: ``$AMN_HOME/experts/registry.json``.

``AMN_HOME`` defaults to ``~/.cache/amn`` (the same root as ``experts.train.DEFAULT_ROOT``);
it is read at call time so tests and users can redirect it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path


def experts_home() -> Path:
    """``$AMN_HOME/experts`` (default ``~/.cache/amn/experts``)."""
    return Path(os.environ.get("AMN_HOME", Path.home() / ".cache" / "amn")) / "experts"


def registry_path() -> Path:
    return experts_home() / "registry.json"


def load_registry() -> dict[str, dict]:
    """Name -> entry (``path``, ``game``, ``algo``, ...). Empty if there is no registry yet."""
    path = registry_path()
    if not path.is_file():
        return {}
    try:
        entries = json.loads(path.read_text())
    except ValueError as err:
        raise ValueError(f"{path}: not valid JSON ({err}); fix or delete it and re-import your experts") from None
    if not isinstance(entries, dict):
        raise ValueError(f"{path}: expected a JSON object of name -> entry; fix or delete it")
    return entries


def register(name: str, entry: dict) -> Path:
    """Add or replace ``name`` (written atomically); returns the registry path."""
    entries = load_registry()
    entries[name.lower()] = entry
    path = registry_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, entries, sort_keys=True)
    return path


def write_json_atomic(path: Path, obj: dict, *, sort_keys: bool = False) -> None:
    """Write ``obj`` as indented JSON to ``path`` via write-then-rename: a kill never leaves half a file."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=sort_keys) + "\n")
    os.replace(tmp, path)
