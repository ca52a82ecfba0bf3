"""``amn plot RUN [RUN ...] -o curves.png``: per-game learning curves from TensorBoard events.

One row per game, one panel per metric (columns no run logged are left out):

=====================  =====================================================  ============
panel                  TensorBoard tag(s) (``amn/tb.py``, ``amn/trainer.py``)  y unit
=====================  =====================================================  ============
episode return         ``<Game>/episode_return`` (training games, raw score)   game score
evaluation return      ``<Game>/eval_return`` (full games, ε = eval_epsilon)   game score
policy-regression      ``<Game>/policy_regression_loss``                       the loss's
agreement with expert  ``<Game>/mimic/agreement_train`` (solid),               fraction
                       ``<Game>/mimic/agreement_heldout`` (dashed)
=====================  =====================================================  ============

The x axis is agent steps summed over the run's games (the trainer's TensorBoard step). Runs are
overlaid, one colour each, labelled by directory name. The expert's level is a dashed line on the
two return panels: its mean score in the run's ``expert_scores.json`` (``amn evaluate``'s cache:
full games before capped ones, then the protocol with the most games), else the shipped expert's
metadata score.
"""

from __future__ import annotations

import argparse
import io
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from amn.errors import UsageError

#: (panel title, y label, [(tag suffix, line style)]).
PANELS: list[tuple[str, str, list[tuple[str, str]]]] = [
    ("episode return", "raw score", [("episode_return", "-")]),
    ("evaluation return", "raw score", [("eval_return", "-")]),
    ("policy-regression loss", "loss", [("policy_regression_loss", "-")]),
    ("agreement with expert", "top-1 agreement", [("mimic/agreement_train", "-"), ("mimic/agreement_heldout", "--")]),
]
RETURN_PANELS = ("episode return", "evaluation return")


@dataclass
class Run:
    """One run directory's curves: ``scalars[tag] = (steps int [n], values float [n])``."""

    label: str
    path: Path
    games: list[str]
    experts: dict[str, str]  # game -> the expert name of the config
    scalars: dict[str, tuple[np.ndarray, np.ndarray]]


def read_scalars(tb_dir: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Every scalar tag of the event files in ``tb_dir``, all points, sorted by step."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(tb_dir), size_guidance={"scalars": 0})  # 0: keep every point
    acc.Reload()
    out = {}
    for tag in acc.Tags()["scalars"]:
        events = sorted(acc.Scalars(tag), key=lambda e: e.step)
        out[tag] = (np.array([e.step for e in events], np.int64), np.array([e.value for e in events], np.float64))
    return out


def load_run(path: str | Path, label: str | None = None) -> Run:
    """A run directory: its config's games and experts (``config.yaml``) and its ``tb/`` events."""
    import yaml

    path = Path(path)
    tb = path / "tb"
    if not tb.is_dir() or not any(tb.glob("events.out.tfevents.*")):
        raise UsageError(f"{path} has no TensorBoard events (tb/events.out.tfevents.*): pass a student run directory")
    scalars = read_scalars(tb)
    config = path / "config.yaml"
    games: list[str] = []
    experts: dict[str, str] = {}
    if config.is_file():
        for g in (yaml.safe_load(config.read_text()) or {}).get("games", []):
            games.append(g["game"])
            experts[g["game"]] = g["expert"]
    # Games logged but not in the config (or no config): every "<Game>/..." tag of a panel.
    suffixes = [s for _, _, lines in PANELS for s, _ in lines]
    for tag in scalars:
        game, _, rest = tag.partition("/")
        if rest in suffixes and game not in games:
            games.append(game)
    return Run(label or path.name, path, games, experts, scalars)


def expert_level(run: Run, game: str) -> tuple[float, str] | None:
    """The expert's mean score for ``game`` and where it came from, or None if unknown."""
    cache = run.path / "expert_scores.json"
    if cache.is_file():
        try:
            entries = json.loads(cache.read_text())
        except json.JSONDecodeError:
            entries = {}
        best = None
        for key, returns in entries.items():
            protocol = json.loads(key)
            if protocol.get("game") == game and returns:
                # Full games first (as the curves' eval_return), then the most games, then the longest cap.
                frames = protocol.get("max_frames", 0)
                rank = (frames >= 108_000, len(returns), frames)
                if best is None or rank > best[0]:
                    best = (rank, returns, protocol)
        if best is not None:
            _, returns, p = best
            cap = "" if p.get("max_frames", 0) >= 108_000 else f", <= {p['max_frames']:,} frames"
            return float(np.mean(returns)), f"{p.get('expert', '?')}: {len(returns)} games, eps {p.get('epsilon')}{cap}"
    name = run.experts.get(game)
    if name is not None:
        from experts.shipped import SHIPPED_DIR

        meta_path = SHIPPED_DIR / f"{name}.json"
        if meta_path.is_file():
            score = json.loads(meta_path.read_text()).get("score") or {}
            if "mean" in score:
                return float(score["mean"]), f"{name}: shipped metadata, {score.get('episodes', '?')} games"
    return None


def unique_labels(paths: list[Path]) -> list[str]:
    """Directory names, with the parent prefixed where two runs share a name."""
    names = [p.name for p in paths]
    return [f"{p.parent.name}/{p.name}" if names.count(p.name) > 1 else p.name for p in paths]


def plot_runs(paths: list[str | Path], out: str | Path, *, labels: list[str] | None = None) -> dict[str, Any]:
    """Draw the curves of ``paths`` into the PNG ``out`` (written atomically).

    Returns ``{"path", "games", "panels", "series": [{"run", "game", "tag", "points"}],
    "expert_levels": [{"game", "run", "value", "source"}], "missing": [{"run", "game", "tag"}]}``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not paths:
        raise UsageError("amn plot needs at least one run directory")
    out = Path(out)
    if out.suffix.lower() != ".png":
        raise UsageError(f"{out}: amn plot writes a PNG; name it e.g. curves.png")
    if not out.parent.is_dir():
        raise UsageError(f"{out.parent} does not exist; create it or write the PNG elsewhere")
    paths = [Path(p) for p in paths]
    if labels and len(labels) != len(paths):
        raise UsageError(f"{len(labels)} --label for {len(paths)} runs: give one label per run, in order, or none")
    labels = labels or unique_labels(paths)
    runs = [load_run(p, label) for p, label in zip(paths, labels)]
    games = list(dict.fromkeys(g for r in runs for g in r.games))
    if not games:
        raise UsageError(f"no per-game curves in {', '.join(map(str, paths))}: the runs logged no <Game>/... tags yet")
    panels = [p for p in PANELS if any(f"{g}/{s}" in r.scalars for r in runs for g in games for s, _ in p[2])]
    if not panels:
        raise UsageError("the runs logged none of: " + ", ".join(f"<Game>/{s}" for _, _, ls in PANELS for s, _ in ls))

    fig, axes = plt.subplots(len(games), len(panels), figsize=(4.2 * len(panels), 3.0 * len(games)), squeeze=False)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    report: dict[str, Any] = {"path": out, "games": games, "panels": [p[0] for p in panels],
                              "series": [], "expert_levels": [], "missing": []}
    for row, game in enumerate(games):
        levels = []
        for r in runs:
            level = expert_level(r, game) if game in r.games else None
            if level is not None and level not in levels:
                levels.append(level)
                report["expert_levels"].append({"game": game, "run": r.label, "value": level[0], "source": level[1]})
        for col, (title, ylabel, lines) in enumerate(panels):
            ax = axes[row][col]
            drawn = 0
            for i, r in enumerate(runs):
                for suffix, style in lines:
                    tag = f"{game}/{suffix}"
                    if tag not in r.scalars:
                        if game in r.games:
                            report["missing"].append({"run": r.label, "game": game, "tag": tag})
                        continue  # this run lacks the tag: no line, the panel stays
                    steps, values = r.scalars[tag]
                    name = r.label if len(lines) == 1 else f"{r.label} ({suffix.rsplit('_', 1)[-1]})"
                    ax.plot(steps, values, style, color=colours[i % len(colours)], lw=1.2, label=name,
                            marker="o" if len(steps) < 8 else None, ms=3)
                    report["series"].append({"run": r.label, "game": game, "tag": tag, "points": int(len(steps))})
                    drawn += 1
            if title in RETURN_PANELS:
                for value, source in levels:
                    ax.axhline(value, color="k", ls="--", lw=0.9, label=f"expert {value:.1f} ({source})")
            ax.set_title(f"{game}: {title}", fontsize=9)
            ax.set_xlabel("agent steps (all games)", fontsize=8)
            ax.set_ylabel(ylabel, fontsize=8)
            ax.tick_params(labelsize=7)
            if ax.has_data():
                ax.legend(fontsize=6, loc="best")
            if not drawn:
                ax.text(0.5, 0.5, "not logged", ha="center", va="center", transform=ax.transAxes, color="0.5")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_bytes(buf.getvalue())
    os.replace(tmp, out)
    return report


def _plot(args: argparse.Namespace) -> int:
    report = plot_runs(args.runs, args.out, labels=args.label)
    for s in report["series"]:
        print(f"{s['run']}: {s['tag']} ({s['points']} points)")
    for e in report["expert_levels"]:
        print(f"{e['game']}: expert level {e['value']:.1f} ({e['source']})")
    for m in report["missing"]:
        print(f"{m['run']}: no {m['tag']} (line skipped)")
    print(f"wrote {report['path']}")
    return 0


def add_parsers(sub) -> None:
    p = sub.add_parser("plot", help="per-game learning curves of one or more runs, overlaid, as a PNG")
    p.add_argument("runs", nargs="+", type=Path, help="student run directories (each with tb/)")
    p.add_argument("-o", "--out", type=Path, required=True, help="the PNG to write, e.g. curves.png")
    p.add_argument("--label", action="append", default=None, help="legend label per run, in order (default: names)")
    p.set_defaults(func=_plot)
