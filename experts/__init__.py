"""Atari experts: load (``load_expert``), use (``Expert``) and ship (``export_expert``).

Imports are lazy so ``import experts.atari`` and the CLI start without torch.
"""

from __future__ import annotations

__all__ = ["Expert", "load_expert", "export_expert"]


def __getattr__(name: str):
    if name in ("Expert", "load_expert"):
        from experts import expert

        return getattr(expert, name)
    if name == "export_expert":
        from experts.export import export_expert

        return export_expert
    raise AttributeError(f"module 'experts' has no attribute {name!r}")
