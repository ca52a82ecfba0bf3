"""The README's commands run as written on what ships."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import yaml

from experts.shipped import shipped_names

ROOT = Path(__file__).resolve().parent.parent


def torchrun_commands() -> list[list[str]]:
    """Every ``torchrun ... --config X`` command in the README's code blocks, joined across ``\\``."""
    text = ROOT.joinpath("README.md").read_text().replace("\\\n", " ")
    lines = [line for line in text.splitlines() if re.match(r"\s*(srun\s+)?torchrun\s", line)]
    return [shlex.split(line.split("#")[0]) for line in lines]


def _option(words: list[str], name: str) -> str | None:
    return words[words.index(name) + 1] if name in words else None


def test_readme_torchrun_configs_have_a_game_per_process_and_shipped_experts():
    commands = [c for c in torchrun_commands() if "--config" in c]
    assert len(commands) >= 2  # the smoke run and the default
    shipped = set(shipped_names())
    for words in commands:
        cfg = yaml.safe_load(ROOT.joinpath(_option(words, "--config")).read_text())
        nnodes = _option(words, "--nnodes")
        processes = int(_option(words, "--nproc-per-node")) * (2 if nnodes else 1)  # the SLURM example: 2 nodes
        games = cfg["games"]
        assert len(games) >= processes, f"{' '.join(words)}: {processes} processes but {len(games)} games"
        missing = [g["expert"] for g in games if g["expert"] not in shipped]
        assert not missing, f"{' '.join(words)}: experts {missing} are not shipped"
