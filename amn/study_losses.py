"""``amn study``'s per-variant (per-loss) table and its two rliable figures, from the final rows.

Written beside the other outputs of :mod:`amn.study_report`: ``variants.csv`` (:func:`variant_columns`)
and a section of ``summary.md`` (:func:`variants_markdown`), one row per variant:

- ``loss``, ``options`` (the loss's constructor options, defaults included) and ``proper`` (the loss
  class's ``proper`` attribute, :mod:`amn.losses.library`);
- ``seeds`` and ``runs``: the variant's reported seeds (each variant may have its own);
- ``pct_expert_<Game>``: 100 × the mean over its seeds of the aggregate score (expert-normalised; a run
  that went non-finite counts as random, 0 %), NaN for a game left out of the aggregates;
- ``vs_reference_<Game>``: its distance above random as a share of the reference's, averaged over seeds,
  (mean score − random) / (reference's mean score − random) = ``pct_expert`` / the reference's;
- ``iqm``, ``poi`` with their CIs: the aggregates of :func:`amn.study_report.aggregate_rows`;
- ``agreement_heldout``, ``kl_heldout`` (KL(expert ‖ student)): the mean over games and seeds of the
  value logged nearest the run's final evaluation (NaN where none was logged);
- ``entropy_ratio``: the student's entropy over its expert's soft target's on the training minibatches
  (the learner's means over the log interval nearest the final evaluation), per game and seed, then
  the mean over games and seeds: 1 as soft as the expert, below 1 sharper, above 1 flatter;
- ``seed_spread``: the sample standard deviation (ddof 1) over seeds of each seed's mean aggregate
  score over games, NaN with one seed;
- ``update_ms``: the median over its runs of each run's mean wall time per update (``perf/update_ms``).

Figures (reported seeds, the games with a usable normaliser): ``profile.png``, rliable's performance
profile (score distribution over runs × games, Agarwal et al. 2021), and ``game_bars.png``, per game
the mean over seeds with a 95 % stratified-bootstrap CI over that variant's seeds (rliable, the game
the one stratum). With two seeds that CI is coarse (a resample is one of three means); it shows how
far apart the seeds are, not a tight interval. ``sharpness.png``: each variant's IQM (95 % CI) against
its student's entropy ÷ its expert's, proper losses apart: do sharper or flatter students play better?
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from amn.study_report import NAN, Seeds, fmt_ms, fmt_pct, normalisers, score_matrices, seeded_global_rng, seeds_of

#: Columns of variants.csv before the per-game ones, and after them.
HEAD_COLUMNS = ["variant", "loss", "options", "proper", "seeds", "runs", "nonfinite_runs"]
TAIL_COLUMNS = ["iqm", "iqm_lo", "iqm_hi", "reference", "poi", "poi_lo", "poi_hi", "agreement_heldout",
                "kl_heldout", "entropy_ratio", "seed_spread", "update_ms"]


def variant_columns(games: list[str]) -> list[str]:
    """variants.csv's columns: one ``pct_expert_<Game>`` per game between the fixed ones."""
    return [*HEAD_COLUMNS, *[f"pct_expert_{g}" for g in games], *[f"vs_reference_{g}" for g in games],
            *TAIL_COLUMNS]


def loss_options(loss: str, kwargs: dict[str, Any]) -> dict[str, Any]:
    """Every constructor option of ``loss`` built with ``kwargs`` (the defaults filled in)."""
    from amn.losses import get_loss

    return get_loss(loss, **kwargs).options()


def is_proper(loss: str) -> bool:
    """The registered loss class's ``proper`` attribute."""
    from amn.losses import LOSSES

    return bool(LOSSES[loss].proper)


def _mean(values: list[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return float(np.mean(finite)) if finite else NAN


def variant_rows(finals: list[dict[str, Any]], aggregates: list[dict[str, Any]], variants: list[str], seeds: Seeds,
                 losses: dict[str, tuple[str, dict[str, Any]]], experts: dict[str, list[float]],
                 reference: str) -> list[dict[str, Any]]:
    """One row of :func:`variant_columns` per variant.

    :param finals: the reported final rows (:func:`amn.study_report.final_rows`, tuning seeds left out)
    :param aggregates: :func:`amn.study_report.aggregate_rows` of the same finals ([] without a usable game)
    :param losses: variant -> (loss name, ``TrainConfig.loss_kwargs``)
    """
    usable, _ = normalisers(experts)
    by_variant = {a["variant"]: a for a in aggregates}
    out = []
    for v in variants:
        mine = seeds_of(seeds, v)
        sel = [r for r in finals if r["variant"] == v and r["seed"] in mine]
        loss, kwargs = losses[v]
        row: dict[str, Any] = {
            "variant": v, "loss": loss, "options": json.dumps(loss_options(loss, kwargs)),
            "proper": is_proper(loss), "seeds": " ".join(str(s) for s in mine), "runs": len(mine),
            "nonfinite_runs": len({r["seed"] for r in sel if r["status"] == "nonfinite"})}
        for g in experts:
            row[f"pct_expert_{g}"] = 100 * _mean([r["aggregate_score"] for r in sel if r["game"] == g]) \
                if g in usable else NAN
        agg = by_variant.get(v, {})
        row.update({k: agg.get(k, NAN) for k in ("iqm", "iqm_lo", "iqm_hi", "poi", "poi_lo", "poi_hi")})
        row["reference"] = reference
        row["agreement_heldout"] = _mean([r["agreement_heldout"] for r in sel])
        row["kl_heldout"] = _mean([r["kl_heldout"] for r in sel])
        row["entropy_ratio"] = _mean([r["student_entropy"] / r["target_entropy"] for r in sel
                                      if r["target_entropy"] > 0])
        per_seed = [np.mean([r["aggregate_score"] for r in sel if r["seed"] == s and r["game"] in usable])
                    for s in mine if any(r["seed"] == s and r["game"] in usable for r in sel)]
        row["seed_spread"] = float(np.std(per_seed, ddof=1)) if len(per_seed) > 1 else NAN
        per_run = {r["seed"]: r["update_ms"] for r in sel}
        ms = [x for x in per_run.values() if not math.isnan(x)]
        row["update_ms"] = float(np.median(ms)) if ms else NAN
        out.append(row)
    ref = next((r for r in out if r["variant"] == reference), None)
    for row in out:
        for g in experts:
            base = ref[f"pct_expert_{g}"] if ref is not None else NAN
            row[f"vs_reference_{g}"] = row[f"pct_expert_{g}"] / base if base > 0 else NAN
    return out


def _num(x: float, spec: str = ".2f") -> str:
    return "—" if math.isnan(x) else format(x, spec)


def variants_markdown(rows: list[dict[str, Any]], games: list[str], reference: str) -> list[str]:
    """summary.md's per-variant section: one line per row of :func:`variant_rows`."""
    lines = ["## Per variant (loss)", "",
             f"| variant | proper | seeds | {' | '.join(f'{g} % of expert' for g in games)} | IQM [95 % CI] "
             f"| P(> `{reference}`) [95 % CI] | agreement (held out) | KL(expert ‖ student) | entropy ÷ expert's "
             "| spread over seeds | ms / update |", "|---|---|---|" + "---|" * len(games) + "---|---|---|---|---|---|---|"]
    for r in rows:
        pct = " | ".join(fmt_pct(r[f"pct_expert_{g}"]) for g in games)
        iqm = "—" if math.isnan(r["iqm"]) else f"{r['iqm']:.2f} [{r['iqm_lo']:.2f}, {r['iqm_hi']:.2f}]"
        poi = "(reference)" if r["variant"] == reference else (
            "—" if math.isnan(r["poi"]) else f"{r['poi']:.2f} [{r['poi_lo']:.2f}, {r['poi_hi']:.2f}]")
        lines.append(f"| `{r['variant']}` | {'yes' if r['proper'] else 'no'} | {r['runs']} ({r['seeds']}) | {pct} "
                     f"| {iqm} | {poi} | {_num(r['agreement_heldout'])} | {_num(r['kl_heldout'], '.3f')} "
                     f"| {_num(r['entropy_ratio'])} | {_num(r['seed_spread'])} | {fmt_ms(r['update_ms'])} |")
    lines += ["", "% of expert: mean over the variant's seeds of the expert-normalised final score (a run that went "
              "non-finite counts as random). proper: the loss class's `proper` (its expected loss is minimised by "
              "the expert's policy). Agreement and KL: mean over games and seeds of the held-out value logged nearest "
              "the final evaluation. Entropy ÷ expert's: the student's entropy over its soft target's on the training "
              "minibatches near the end (1 as soft as the expert, < 1 sharper, > 1 flatter), mean over games and "
              "seeds. Spread: sample std over seeds of each seed's mean score over games. "
              "ms / update: median over the variant's runs of each run's mean update wall time."]
    lines += ["", f"Distance above random as a share of `{reference}`'s, per game: (mean score − random) / "
              f"(`{reference}`'s mean score − random), means over each variant's seeds; — where `{reference}` is not above "
              f"random on that game (no distance to share).", "",
              f"| variant | {' | '.join(games)} |", "|---|" + "---|" * len(games)]
    lines += [f"| `{r['variant']}` | " + " | ".join(_num(r[f"vs_reference_{g}"]) for g in games) + " |" for r in rows]
    return lines


def performance_profile(scores: dict[str, np.ndarray], reps: int, *, seed: int = 0,
                        points: int = 101) -> tuple[np.ndarray, dict[str, np.ndarray], dict[str, np.ndarray]]:
    """rliable's score-distribution performance profile of ``scores`` (variant -> ``[runs, games]``).

    Returns ``(taus [points], profiles {v: [points]}, cis {v: [2, points]})``; τ runs from 0 to the
    larger of 1.25 and the best score, so the expert (τ = 1) and every run are on the axis.
    """
    from rliable import library

    top = max([1.25, *[float(m.max()) for m in scores.values() if m.size]])
    taus = np.linspace(0.0, top, points)
    with seeded_global_rng(seed):
        profiles, cis = library.create_performance_profile(scores, taus, reps=reps)
    return taus, profiles, cis


def per_game_intervals(scores: dict[str, np.ndarray], reps: int, *,
                       seed: int = 0) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per variant: the mean over runs of each game ``[games]`` and its 95 % CI ``[2, games]``, from
    rliable's stratified bootstrap (runs resampled within each game, so each game's CI is over seeds)."""
    from rliable import library

    with seeded_global_rng(seed):
        means, cis = library.get_interval_estimates(scores, lambda x: np.mean(x, axis=0), reps=reps)
    return {v: (np.asarray(means[v], dtype=float), np.asarray(cis[v], dtype=float)) for v in scores}


def write_variant_outputs(out: Path, finals: list[dict[str, Any]], aggregates: list[dict[str, Any]],
                          variants: list[str], seeds: Seeds, losses: dict[str, tuple[str, dict[str, Any]]],
                          experts: dict[str, list[float]], reference: str, reps: int,
                          colours: dict[str, Any]) -> tuple[list[str], list[Path]]:
    """Write ``variants.csv``, ``profile.png``, ``game_bars.png`` and ``sharpness.png`` under ``out``;
    return summary.md's section (Markdown lines) and the figures written (none without a usable game)."""
    from amn import study_plots
    from amn.study_report import write_csv

    games = list(experts)
    rows = variant_rows(finals, aggregates, variants, seeds, losses, experts, reference)
    write_csv(out / "variants.csv", rows, variant_columns(games))
    usable, _ = normalisers(experts)
    shown = [g for g in games if g in usable]
    figures: list[Path] = []
    if shown:
        scores = score_matrices(finals, variants, seeds, shown)
        figures.append(study_plots.plot_profile(*performance_profile(scores, reps), colours, out / "profile.png"))
        figures.append(study_plots.plot_game_bars(shown, per_game_intervals(scores, reps), colours,
                                                  out / "game_bars.png"))
    sharpness = study_plots.plot_sharpness(rows, colours, reference, out / "sharpness.png")
    figures += [sharpness] if sharpness is not None else []
    return variants_markdown(rows, games, reference), figures
