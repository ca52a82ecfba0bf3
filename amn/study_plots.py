"""``amn study``'s figures, from the curve rows and records of :mod:`amn.study_report`.

Each function writes one PNG (atomically) and returns its path, or None when the runs logged
nothing it could draw (then the summary says so instead of showing an empty figure). The x axis
is agent steps summed over games, as in the configs and TensorBoard. Only reported seeds are
drawn; the caller leaves tuning seeds out.

Every figure draws a variant in the same colour: ``colours`` is :func:`variant_colours` of the
study's variants in the config's order (so ``--only`` keeps each variant's colour); without it, the
variants passed are coloured in their order.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np

#: Mimicry diagnostics drawn, with their axis label.
MIMIC_PLOTS = {"agreement_heldout": "argmax agreement, held out", "agreement_train": "argmax agreement, train",
               "kl_heldout": "KL(expert ‖ student), held out", "kl_cc_mean_heldout": "KL to the CC mean, held out"}


Colour = tuple[float, float, float, float]


def variant_colours(variants: list[str]) -> dict[str, Colour]:
    """A fixed colour per variant by its position: tab10's ten colours (matplotlib's default cycle)
    first, then tab20's ten lighter ones; from the 21st variant the colours repeat."""
    import matplotlib

    tab20 = matplotlib.colormaps["tab20"].colors  # dark/light pairs: the dark ones are tab10's
    palette = [*tab20[0::2], *tab20[1::2]]
    return {v: (*palette[i % len(palette)], 1.0) for i, v in enumerate(variants)}


def _colours(variants: list[str], colours: dict[str, Colour] | None) -> dict[str, Colour]:
    return variant_colours(variants) if colours is None else colours


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only, never a window
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    plt = _pyplot()
    tmp = path.with_name(path.name + ".tmp")
    fig.tight_layout()
    fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    os.replace(tmp, path)
    return path


def _band(values: list[list[float]]) -> tuple[list[float], list[float], list[float]]:
    """Mean, min and max of each list, ignoring NaN; NaN where a list is all NaN."""
    out: tuple[list[float], list[float], list[float]] = ([], [], [])
    for v in values:
        finite = [x for x in v if not math.isnan(x)]
        for dst, fn in zip(out, (np.mean, np.min, np.max)):
            dst.append(float(fn(finite)) if finite else math.nan)
    return out


def plot_returns(rows: list[dict[str, Any]], variants: list[str], experts: dict[str, list[float]],
                 path: Path, colours: dict[str, Colour] | None = None) -> Path:
    """Per game: evaluation return (mean and min–max over seeds) per variant, the expert's mean
    as a dashed line, random play dotted, and a dotted vertical where a run went non-finite."""
    from amn.evaluation import HUMAN_RANDOM

    plt = _pyplot()
    colours = _colours(variants, colours)
    games = list(experts)
    fig, axes = plt.subplots(1, len(games), figsize=(6 * len(games), 4), squeeze=False)
    for ax, game in zip(axes[0], games):
        for v in variants:
            sel = [r for r in rows if r["game"] == game and r["variant"] == v]
            steps = sorted({r["agent_steps"] for r in sel})
            mean, lo, hi = _band([[r["return_mean"] for r in sel if r["agent_steps"] == s] for s in steps])
            ax.plot(steps, mean, marker="o", label=v, color=colours[v])
            ax.fill_between(steps, lo, hi, alpha=0.2, color=colours[v])
            for r in sel:
                if r["status"] == "nonfinite":
                    ax.axvline(r["agent_steps"], color=colours[v], ls=":", lw=1)
        ax.axhline(float(np.mean(experts[game])), color="k", ls="--", lw=1, label="expert (same protocol)")
        if game in HUMAN_RANDOM:
            ax.axhline(HUMAN_RANDOM[game][0], color="0.5", ls=":", lw=1, label="random")
        ax.set(title=f"{game}: evaluation return (mean, min–max over seeds)", xlabel="agent steps (all games)",
               ylabel="return")
        ax.legend(fontsize=8)
    return _save(fig, path)


def plot_normaliser(rows: list[dict[str, Any]], variants: list[str], path: Path,
                    colours: dict[str, Colour] | None = None) -> Path | None:
    """Per variant, over training: the share of loss rows the naive closed form gets wrong, sent to
    cross-entropy, and non-finite (all games and seeds pooled per evaluation interval)."""
    if not any(r["rows"] > 0 for r in rows):
        return None
    plt = _pyplot()
    colours = _colours(variants, colours)
    keys = [("ill_conditioned_rows", "naive form wrong"), ("fallback_rows", "fell back to CE"),
            ("nonfinite_rows", "non-finite")]
    fig, axes = plt.subplots(1, len(keys), figsize=(6 * len(keys), 4), squeeze=False)
    for ax, (key, title) in zip(axes[0], keys):
        for v in variants:
            sel = [r for r in rows if r["variant"] == v and r["rows"] > 0]
            steps = sorted({r["agent_steps"] for r in sel})
            share = [sum(r[key] for r in sel if r["agent_steps"] == s) /
                     sum(r["rows"] for r in sel if r["agent_steps"] == s) for s in steps]
            if steps:
                ax.plot(steps, share, marker="o", label=v, color=colours[v])
        # symlog: the fallback and non-finite shares are ~1e-3 beside naive CC's ~0.5
        ax.set_yscale("symlog", linthresh=1e-4)
        ax.set(title=f"share of rows: {title}", xlabel="agent steps (all games)",
               ylabel="share of loss rows (symlog)", ylim=(0, 1.05))
        ax.legend(fontsize=8)
    return _save(fig, path)


def plot_mimicry(records: list[dict[str, Any]], variants: list[str], games: list[str], path: Path,
                 colours: dict[str, Colour] | None = None) -> Path | None:
    """Agreement and KL over training, one row per logged diagnostic and one column per game:
    mean over seeds at each log point per variant (seeds share their log steps)."""
    logged = [k for k in MIMIC_PLOTS
              if any(r["series"].get(g, {}).get(f"mimic/{k}") for r in records for g in games)]
    if not logged:
        return None
    plt = _pyplot()
    colours = _colours(variants, colours)
    fig, axes = plt.subplots(len(logged), len(games), figsize=(6 * len(games), 3.5 * len(logged)), squeeze=False)
    for row, key in zip(axes, logged):
        for ax, game in zip(row, games):
            for v in variants:
                by_step: dict[int, list[float]] = {}
                for r in records:
                    if r["variant"] == v:
                        for s, value in r["series"].get(game, {}).get(f"mimic/{key}", []):
                            by_step.setdefault(int(s), []).append(float(value))
                if by_step:
                    steps = sorted(by_step)
                    ax.plot(steps, [float(np.mean(by_step[s])) for s in steps], label=v, color=colours[v])
            ax.set(title=f"{game}: {key}", xlabel="agent steps (all games)", ylabel=MIMIC_PLOTS[key])
            if ax.lines:
                ax.legend(fontsize=8)
    return _save(fig, path)


def plot_profile(taus: np.ndarray, profiles: dict[str, np.ndarray], cis: dict[str, np.ndarray],
                 colours: dict[str, Colour], path: Path) -> Path:
    """rliable's performance profile: per variant, the fraction of runs × games whose expert-normalised
    score exceeds τ, with its 95 % CI band.

    :param taus: thresholds ``[T]``; ``profiles``: variant -> ``[T]``; ``cis``: variant -> ``[2, T]``
        (:func:`amn.study_losses.performance_profile`).
    """
    plt = _pyplot()  # before rliable.plot_utils imports pyplot: the Agg backend
    from rliable import plot_utils

    fig, ax = plt.subplots(figsize=(10, 5))
    plot_utils.plot_performance_profiles(profiles, taus, performance_profile_cis=cis, ax=ax,
                                         colors={v: colours[v] for v in profiles},
                                         xlabel="expert-normalised score τ",
                                         ylabel="fraction of runs × games with score > τ",
                                         labelsize="medium", ticklabelsize="small")
    ax.axvline(1.0, color="k", ls="--", lw=1)  # the expert
    ax.set_title("performance profile (reported seeds, 95 % stratified-bootstrap CIs)")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # beside: 15 curves leave no room
    return _save(fig, path)


def plot_game_bars(games: list[str], intervals: dict[str, tuple[np.ndarray, np.ndarray]],
                   colours: dict[str, Colour], path: Path) -> Path:
    """Per game, one bar per variant: % of expert (mean over its seeds) with a 95 % CI whisker.

    :param intervals: variant -> (mean ``[G]``, CI ``[2, G]``), expert-normalised (1 = expert), in
        ``games`` order (:func:`amn.study_losses.per_game_intervals`).
    """
    plt = _pyplot()
    variants = list(intervals)
    width = 0.8 / max(1, len(variants))
    fig, ax = plt.subplots(figsize=(max(8.0, 1.0 + 0.3 * len(games) * len(variants)), 5))
    x = np.arange(len(games))
    for i, v in enumerate(variants):
        mean, ci = intervals[v]
        err = np.abs(np.stack([mean - ci[0], ci[1] - mean]))  # yerr wants distances; abs: rounding at 0 width
        ax.bar(x + (i - (len(variants) - 1) / 2) * width, 100 * mean, width, yerr=100 * err, capsize=2,
               color=colours[v], label=v)
    ax.axhline(100, color="k", ls="--", lw=1, label="expert")
    ax.axhline(0, color="0.5", ls=":", lw=1, label="random")
    ax.set_xticks(x, games)
    ax.set(ylabel="% of expert (mean over seeds, 95 % CI)",
           title="% of expert per game: mean over seeds, 95 % stratified-bootstrap CI over seeds")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # beside the bars, never over them
    return _save(fig, path)


def _annotate_apart(fig, ax, labels: dict[tuple[float, float], list[str]]) -> None:
    """Each point's names beside it, moved down in 9-point steps (at most 8) until the text overlaps
    no label placed before it; from the top of the plot down, so the highest point keeps its place."""
    # The final limits and layout (_save's tight_layout moves the axes), so the text's place on the
    # canvas is where it ends up.
    ax.autoscale_view()
    fig.tight_layout()
    renderer = fig.canvas.get_renderer()
    placed = []
    for (x, y), names in sorted(labels.items(), key=lambda item: (-item[0][1], item[0][0])):
        for step in range(9):
            text = ax.annotate(", ".join(names), (x, y), xytext=(6, 4 - 9 * step), textcoords="offset points",
                               fontsize=7)
            box = text.get_window_extent(renderer)
            if step == 8 or not any(box.overlaps(other) for other in placed):
                break
            text.remove()
        placed.append(box)


def plot_sharpness(rows: list[dict[str, Any]], colours: dict[str, Colour], reference: str, path: Path) -> Path | None:
    """Does a sharper or flatter student play better? Per variant, the IQM of expert-normalised scores
    (95 % CI whisker) against its student's entropy ÷ its expert's (1 = as soft as the expert, < 1
    sharper); circles for proper losses, triangles for the others. Variants at the same point share
    one label (parabolic, circle and cos all collapse onto one action).

    :param rows: :func:`amn.study_losses.variant_rows`; a row without an IQM or an entropy ratio is
        left out. None when no row has both.
    """
    shown = [r for r in rows if not (math.isnan(r["iqm"]) or math.isnan(r["entropy_ratio"]))]
    if not shown:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(9, 6))
    labels: dict[tuple[float, float], list[str]] = {}
    for r in shown:
        x, y = r["entropy_ratio"], r["iqm"]
        err = [[max(0.0, y - r["iqm_lo"])], [max(0.0, r["iqm_hi"] - y)]]
        ax.errorbar([x], [y], yerr=err, fmt="none", capsize=3, color=colours[r["variant"]])
        ax.plot([x], [y], "o" if r["proper"] else "^", ms=8, color=colours[r["variant"]], label=r["variant"])
        labels.setdefault((round(x, 2), round(y, 2)), []).append(r["variant"])
    _annotate_apart(fig, ax, labels)
    # The legend explains the marks; the points carry their names (their lines' labels, for the colours).
    keys = [ax.axvline(1.0, color="k", ls="--", lw=1, label="as soft as the expert")]
    ref = next((r for r in shown if r["variant"] == reference), None)
    if ref is not None:
        keys.append(ax.axhline(ref["iqm"], color="0.5", ls=":", lw=1, label=f"{reference}'s IQM"))
    keys += [ax.plot([], [], "o", color="0.3", label="proper loss")[0],
             ax.plot([], [], "^", color="0.3", label="not proper")[0]]
    ax.set(xlabel="student entropy ÷ expert's (training minibatches, end of run; < 1 sharper)",
           ylabel="IQM of expert-normalised scores (95 % CI)",
           title="sharper or flatter students: do they play better?")
    ax.legend(handles=keys, fontsize=8, loc="lower right")
    return _save(fig, path)
