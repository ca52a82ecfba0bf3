"""The README and its pages (docs/*.md): commands run as written on what ships, links resolve."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import yaml

from experts.shipped import shipped_names

ROOT = Path(__file__).resolve().parent.parent


def documents() -> list[Path]:
    """The README and the pages it links under docs/."""
    return [ROOT / "README.md", *sorted(ROOT.joinpath("docs").glob("*.md"))]


def torchrun_commands() -> list[list[str]]:
    """Every ``torchrun ... --config X`` command in the README and its pages, joined across ``\\``."""
    text = "\n".join(p.read_text() for p in documents()).replace("\\\n", " ")
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


def test_every_relative_link_and_image_resolves():
    """A page moved or a plot renamed must not leave the front door pointing at nothing."""
    broken = []
    for page in documents():
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text()):
            if "://" in target:
                continue
            if not (page.parent / target).exists():
                broken.append(f"{page.relative_to(ROOT)} -> {target}")
    assert not broken, broken


def test_readme_links_every_page_under_docs():
    readme = ROOT.joinpath("README.md").read_text()
    missing = [p.name for p in ROOT.joinpath("docs").glob("*.md") if f"(docs/{p.name})" not in readme]
    assert not missing, f"docs pages the README does not link: {missing}"


def amn_commands() -> list[list[str]]:
    """Every ``amn ...`` command line in the README's and its pages' bash blocks (comments dropped)."""
    out = []
    for page in documents():
        for block in re.findall(r"```bash\n(.*?)```", page.read_text().replace("\\\n", " "), flags=re.S):
            for line in block.splitlines():
                words = shlex.split(line.split(" #")[0]) if line.strip() else []
                if words[:1] == ["amn"]:
                    out.append(words)
    return out


def test_every_amn_command_in_the_docs_parses():
    """A renamed flag or subcommand must not leave the README showing a command that fails at once."""
    import argparse

    # the CLI is the top of the import graph, and only amn/__main__ imports it; a test may read it
    from amn.cli import build_parser

    commands = amn_commands()
    assert len(commands) >= 15  # the README's "Use it" block has 10, docs/training.md 5
    parser = build_parser()
    for words in commands:
        try:
            args = parser.parse_args(words[1:])
        except SystemExit:
            raise AssertionError(f"does not parse: {' '.join(words)}") from None
        assert isinstance(args, argparse.Namespace)
        if words[1] == "train-student" and args.config is not None:  # the config and its --set build
            from amn.config import load_config

            load_config(ROOT / args.config, list(args.set or []))
