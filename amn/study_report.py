"""``amn study``'s tables: per-run records -> curves, finals, rliable aggregates, summary.md.

A run's *record* (``<run>/study_rows.json``, written by :mod:`amn.study`) holds what the study
read back from the run: ``variant``, ``seed``, ``tuning``, ``games``, ``status`` (``ok``,
``time cap`` or ``nonfinite``), ``agent_steps`` (where it stopped), ``failure`` (the
:class:`~amn.trainer.NonFiniteLoss`'s ``step``, ``game``, ``rows``, ``nonfinite_rows``,
``message``; None otherwise), ``config`` (the resolved TrainConfig), ``evaluations`` (the
lines of ``<run>/evaluations.jsonl``) and ``series`` (``{game: {"loss_diag/<key>" |
"mimic/<key>": [[agent_step, value], ...]}}`` from TensorBoard) and ``perf`` (``{"update_ms":
[[agent_step, ms], ...]}``, the run-wide ``perf/update_ms`` tag; absent in records of runs trained
before it was logged). Everything here is computed from records, so a report can be rebuilt without
the run directories' checkpoints.

Scores: ``expert-normalised = (student − random) / (expert − random)`` with the final
evaluation of each run, random play from ``amn.evaluation.HUMAN_RANDOM`` and the expert
played under the students' protocol. Aggregates (rliable, Agarwal et al. 2021) use the
reported seeds only: the IQM over runs × games and the probability of improvement over the
reference, each with a 95 % stratified-bootstrap CI (runs resampled within each game). A variant
may have its own reported seeds, so variants may have different numbers of runs: each variant's
score matrix is its own runs, and P(improvement) compares each variant's runs with the reference's.
"""

from __future__ import annotations

import contextlib
import csv
import io
import math
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

#: Normaliser diagnostics, ``<Game>/loss_diag/<key>``: counts of loss rows summed per log interval.
DIAG_KEYS = ("rows", "ill_conditioned_rows", "fallback_rows", "dropped_rows", "nonfinite_rows")
#: Mimicry diagnostics, ``<Game>/mimic/<key>``: values at log points (NaN where a run did not log them).
MIMIC_KEYS = ("agreement_train", "agreement_heldout", "kl_heldout", "kl_cc_mean_heldout", "logit_spread",
              "dead_relu_share", "grad_norm")
#: The training minibatches' policies, ``<Game>/<key>``: the learner's per-game means over each log interval
#: (nats; the target is the expert's soft target as the replay stores it). Their ratio says whether the
#: student is as soft as its expert (1), sharper (< 1) or flatter (> 1) on the states it visits.
BATCH_KEYS = ("student_entropy", "target_entropy")
#: Run-wide timings, ``perf/<key>``: ``update_ms`` is the learner's wall time per update (ms), averaged
#: per log interval (amn/learner.py).
PERF_KEYS = ("update_ms",)
CURVE_COLUMNS = ["variant", "game", "seed", "tuning", "agent_steps", "frames", "return_mean", "return_std",
                 "episodes", *DIAG_KEYS, *MIMIC_KEYS, *BATCH_KEYS, "status"]
FINAL_COLUMNS = ["variant", "game", "seed", "agent_steps", "return_mean", "expert_mean", "random_mean",
                 "nonfinite_rows", "fallback_rows", "status", "agreement_heldout", "kl_heldout", "return_std",
                 "episodes", "expert_std", "expert_normalised", "aggregate_score", "rows", "ill_conditioned_rows",
                 "dropped_rows", *[k for k in MIMIC_KEYS if k not in ("agreement_heldout", "kl_heldout")],
                 "update_ms", *BATCH_KEYS]
AGGREGATE_COLUMNS = ["variant", "runs", "games", "nonfinite_runs", "iqm", "iqm_lo", "iqm_hi", "reference",
                     "poi", "poi_lo", "poi_hi", "update_ms"]
#: Reported seeds: one list for every variant, or each variant's own (``Study.seeds_of``).
Seeds = list[int] | dict[str, list[int]]
NAN = float("nan")


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file, so a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_csv(path: Path, rows: list[dict[str, Any]], columns: list[str]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows({c: r[c] for c in columns} for r in rows)
    atomic_write_text(path, buf.getvalue())


def seeds_of(seeds: Seeds, variant: str) -> list[int]:
    """The reported seeds of ``variant`` in ``seeds`` (a list common to all variants, or per variant)."""
    return list(seeds[variant] if isinstance(seeds, dict) else seeds)


@contextlib.contextmanager
def seeded_global_rng(seed: int) -> Iterator[None]:
    """rliable's bootstraps draw from numpy's global RNG: seed it for the block, then put it back."""
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(state)


def run_update_ms(record: dict[str, Any]) -> float:
    """The run's mean wall time per update in ms: the mean of its per-log-interval means (intervals hold
    about as many updates each); NaN for a run that did not log ``perf/update_ms``."""
    values = [v for _, v in record.get("perf", {}).get("update_ms", []) if math.isfinite(v)]
    return float(np.mean(values)) if values else NAN


def nearest(series: list[list[float]], step: int) -> float:
    """The value of ``[[step, value], ...]`` logged nearest to ``step`` (the earlier one on a tie); NaN if empty."""
    if not series:
        return NAN
    return float(min(series, key=lambda p: (abs(p[0] - step), p[0]))[1])


def curve_rows(record: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per game and evaluation point of a run (CURVE_COLUMNS), in step order.

    Diagnostics are summed over the log intervals since the previous point (the last point
    also takes those logged after it). A run that went non-finite gets one more row at the
    failing step, with NaN returns and the failing batch's rows added to its game's counts.
    """
    failure = record["failure"]
    rows = []
    for game in record["games"]:
        points = sorted((e for e in record["evaluations"] if e["game"] == game), key=lambda e: e["agent_steps"])
        series = record["series"].get(game, {})
        if failure is not None:
            points.append({"agent_steps": record["agent_steps"], "return_mean": NAN, "return_std": NAN, "episodes": 0})
        previous = -1
        for i, point in enumerate(points):
            last, step = i == len(points) - 1, int(point["agent_steps"])
            diag = {k: int(sum(v for s, v in series.get(f"loss_diag/{k}", []) if previous < s <= step or
                               (last and s > step))) for k in DIAG_KEYS}
            if last and failure is not None and failure["game"] == game:
                diag["rows"] += failure["rows"]
                diag["nonfinite_rows"] += failure["nonfinite_rows"]
            rows.append({"variant": record["variant"], "game": game, "seed": record["seed"],
                         "tuning": record["tuning"], "agent_steps": step, "frames": 4 * step,
                         "return_mean": float(point["return_mean"]), "return_std": float(point["return_std"]),
                         "episodes": int(point["episodes"]), **diag,
                         **{k: nearest(series.get(f"mimic/{k}", []), step) for k in MIMIC_KEYS},
                         **{k: nearest(series.get(k, []), step) for k in BATCH_KEYS},
                         "status": record["status"] if last else "ok"})
            previous = step
    return rows


def normalisers(experts: dict[str, list[float]]) -> tuple[dict[str, tuple[float, float]], dict[str, str]]:
    """``({game: (random, expert mean)}, {game: why it is left out of the aggregates})``."""
    from amn.evaluation import HUMAN_RANDOM

    usable, left_out = {}, {}
    for game, returns in experts.items():
        expert = float(np.mean(returns))
        if game not in HUMAN_RANDOM:
            left_out[game] = "no random score in amn.evaluation.HUMAN_RANDOM"
        elif expert <= HUMAN_RANDOM[game][0]:
            left_out[game] = f"its expert ({expert:.1f}) does not beat random ({HUMAN_RANDOM[game][0]:.1f})"
        else:
            usable[game] = (HUMAN_RANDOM[game][0], expert)
    return usable, left_out


def final_rows(records: list[dict[str, Any]], experts: dict[str, list[float]]) -> list[dict[str, Any]]:
    """One row per (variant, game, seed): the last curve row, the expert and random scores, and
    ``aggregate_score``: the expert-normalised score the aggregates use (0 = random for a run that
    went non-finite; NaN for a game left out). Diagnostics are the run's totals."""
    from amn.evaluation import HUMAN_RANDOM

    usable, _ = normalisers(experts)
    out = []
    for record in records:
        curves = curve_rows(record)
        for game in record["games"]:
            sel = [r for r in curves if r["game"] == game]
            if not sel:
                raise ValueError(f"{record['variant']} seed {record['seed']} has no evaluation of {game}")
            last = sel[-1]
            random_mean = HUMAN_RANDOM.get(game, (NAN, NAN))[0]
            normalised = NAN
            if game in usable:
                normalised = (last["return_mean"] - random_mean) / (usable[game][1] - random_mean)
            nonfinite = record["status"] == "nonfinite"
            out.append({**{k: last[k] for k in ("variant", "game", "seed", "agent_steps", "return_mean", "return_std",
                                                "episodes", "status", *MIMIC_KEYS, *BATCH_KEYS)},
                        **{k: sum(r[k] for r in sel) for k in DIAG_KEYS},
                        "tuning": record["tuning"], "expert_mean": float(np.mean(experts[game])),
                        "expert_std": float(np.std(experts[game])), "random_mean": random_mean,
                        "expert_normalised": normalised, "update_ms": run_update_ms(record),
                        "aggregate_score": (0.0 if nonfinite else normalised) if game in usable else NAN})
    return out


def score_matrices(finals: list[dict[str, Any]], variants: list[str], seeds: Seeds,
                   games: list[str]) -> dict[str, np.ndarray]:
    """``{variant: float [len(its seeds), len(games)]}`` of ``aggregate_score`` (rows in its seeds' order);
    raises if a run is missing."""
    by_key = {(r["variant"], r["seed"], r["game"]): r["aggregate_score"] for r in finals}
    out = {}
    for v in variants:
        mine = seeds_of(seeds, v)
        m = np.full((len(mine), len(games)), NAN)
        for i, seed in enumerate(mine):
            for j, game in enumerate(games):
                if (v, seed, game) not in by_key:
                    raise ValueError(f"no final score for {v} seed {seed} on {game}")
                m[i, j] = by_key[(v, seed, game)]
        out[v] = m
    return out


def aggregate(scores: dict[str, np.ndarray], reference: str, *, reps: int = 2000,
              seed: int = 0) -> dict[str, dict[str, Any]]:
    """IQM and probability of improvement over ``reference``, each with a 95 % stratified-bootstrap CI.

    :param scores: variant -> expert-normalised scores ``float [runs, games]`` (the same games,
        in the same order, for every variant; runs may differ between variants; finite)
    :returns: variant -> ``{"iqm", "iqm_ci": (lo, hi), "poi", "poi_ci": (lo, hi)}``; ``poi`` and
        ``poi_ci`` are None for the reference itself.
    """
    from rliable import library, metrics

    if reference not in scores:
        raise ValueError(f"the reference {reference!r} has no scores")
    for v, m in scores.items():
        if m.ndim != 2 or m.shape[1] != scores[reference].shape[1] or m.size == 0:
            raise ValueError(f"{v}: scores must be [runs, games] with the reference's "
                             f"{scores[reference].shape[1]} games, got shape {m.shape}")
        if not np.isfinite(m).all():
            raise ValueError(f"{v}: scores hold NaN/inf; a run that went non-finite must count as 0")
    with seeded_global_rng(seed):
        iqm, iqm_ci = library.get_interval_estimates(
            scores, lambda x: np.array([metrics.aggregate_iqm(x)]), reps=reps)
        # Each variant's runs against the reference's: independent resamples of each (rliable).
        pairs = {v: [scores[v], scores[reference]] for v in scores if v != reference}
        poi, poi_ci = library.get_interval_estimates(
            pairs, lambda x, y: np.array([metrics.probability_of_improvement(x, y)]), reps=reps) if pairs else ({}, {})
    return {v: {"iqm": float(iqm[v][0]), "iqm_ci": (float(iqm_ci[v][0, 0]), float(iqm_ci[v][1, 0])),
                "poi": float(poi[v][0]) if v in poi else None,
                "poi_ci": (float(poi_ci[v][0, 0]), float(poi_ci[v][1, 0])) if v in poi else None}
            for v in scores}


def _ret(values: list[float]) -> str:
    if not values:
        return "—"
    each = f" ({', '.join(f'{v:.1f}' for v in values)})" if len(values) > 1 else ""
    return f"{np.mean(values):.1f} ± {np.std(values):.1f}{each}"


def fmt_pct(pct: float) -> str:
    """A % of expert for a table: ``95 %``, ``0 %`` for a mean just below random (not ``-0 %``), or ``—``."""
    return "—" if math.isnan(pct) else f"{round(pct)} %"


def fmt_ms(ms: float) -> str:
    """Milliseconds per update for a table: ``12.3``, or ``—`` when not logged."""
    return "—" if math.isnan(ms) else f"{ms:.1f}"


def _share(part: int, whole: int) -> str:
    return "—" if whole == 0 else f"{part:,} of {whole:,}"


def per_game_table(finals: list[dict[str, Any]], variants: list[str], games: list[str]) -> list[str]:
    """Markdown lines: per variant and game, the final return over the seeds that finished."""
    lines = ["| variant | game | seeds finished | final return (mean ± std over seeds) | % of expert "
             "| stopped early | rows non-finite | rows sent to CE |", "|---|---|---|---|---|---|---|---|"]
    for v in variants:
        for game in games:
            sel = [r for r in finals if r["variant"] == v and r["game"] == game]
            ok = [r for r in sel if r["status"] != "nonfinite"]
            bad = [f"seed {r['seed']} at agent step {r['agent_steps']:,}" for r in sel if r["status"] == "nonfinite"]
            capped = [f"seed {r['seed']} time cap at {r['agent_steps']:,}" for r in sel if r["status"] == "time cap"]
            mean = float(np.mean([r["return_mean"] for r in ok])) if ok else NAN
            expert, random_mean = sel[0]["expert_mean"], sel[0]["random_mean"]
            pct = 100 * (mean - random_mean) / (expert - random_mean)
            rows = sum(r["rows"] for r in sel)
            lines.append(f"| `{v}` | {game} | {len(ok)}/{len(sel)} | {_ret([r['return_mean'] for r in ok])} "
                         f"| {fmt_pct(pct)} | {'; '.join(bad + capped) or '—'} "
                         f"| {_share(sum(r['nonfinite_rows'] for r in sel), rows)} "
                         f"| {_share(sum(r['fallback_rows'] for r in sel), rows)} |")
    return lines


def median_update_ms(finals: list[dict[str, Any]], variant: str, seeds: list[int]) -> float:
    """The median over ``variant``'s runs on ``seeds`` of each run's mean ms per update; NaN if none logged it."""
    per_run = {r["seed"]: r["update_ms"] for r in finals if r["variant"] == variant and r["seed"] in seeds}
    values = [v for v in per_run.values() if math.isfinite(v)]
    return float(np.median(values)) if values else NAN


def aggregate_rows(finals: list[dict[str, Any]], variants: list[str], seeds: Seeds,
                   experts: dict[str, list[float]], reference: str, reps: int) -> list[dict[str, Any]]:
    """AGGREGATE_COLUMNS per variant over its reported seeds and the games with a usable normaliser."""
    usable, _ = normalisers(experts)
    games = [g for g in experts if g in usable]
    if not games:
        return []
    stats = aggregate(score_matrices(finals, variants, seeds, games), reference, reps=reps)
    out = []
    for v in variants:
        s, mine = stats[v], seeds_of(seeds, v)
        out.append({"variant": v, "runs": len(mine), "games": " ".join(games), "reference": reference,
                    "nonfinite_runs": len({r["seed"] for r in finals if r["variant"] == v and r["seed"] in mine
                                           and r["status"] == "nonfinite"}),
                    "update_ms": median_update_ms(finals, v, mine),
                    "iqm": s["iqm"], "iqm_lo": s["iqm_ci"][0], "iqm_hi": s["iqm_ci"][1],
                    "poi": NAN if s["poi"] is None else s["poi"],
                    "poi_lo": NAN if s["poi"] is None else s["poi_ci"][0],
                    "poi_hi": NAN if s["poi"] is None else s["poi_ci"][1]})
    return out


def summary_markdown(*, title: str, protocol: list[str], finals: list[dict[str, Any]], tuning: list[dict[str, Any]],
                     aggregates: list[dict[str, Any]], variants: list[str], experts: dict[str, list[float]],
                     reference: str, reps: int, figures: list[str], extra: list[str] = ()) -> str:
    """summary.md: the protocol, the per-game table, the aggregates, the tuning seeds, ``extra`` (Markdown
    lines, e.g. :func:`amn.study_losses.variants_markdown`'s), the figures."""
    games = list(experts)
    _, left_out = normalisers(experts)
    played = "; ".join(f"{g} {np.mean(r):.1f} ± {np.std(r):.1f} ({len(r)} game{'s' if len(r) != 1 else ''})"
                       for g, r in experts.items())
    lines = [f"# {title}", "", *protocol, "", f"Expert under the same protocol: {played}.", "",
        "## Final return per game", "", *per_game_table(finals, variants, games), "",
        "% of expert = (student − random) / (expert − random), from the mean over the seeds that finished.", "",
        "## Aggregate over games (expert-normalised, reported seeds)", ""]
    if aggregates:
        lines += [f"| variant | runs | IQM [95 % CI] | P(improvement over `{reference}`) [95 % CI] | non-finite runs "
                  "| ms / update |", "|---|---|---|---|---|---|"]
        for a in aggregates:
            poi = "(reference)" if a["variant"] == reference else \
                f"{a['poi']:.2f} [{a['poi_lo']:.2f}, {a['poi_hi']:.2f}]"
            lines.append(f"| `{a['variant']}` | {a['runs']} | {a['iqm']:.2f} [{a['iqm_lo']:.2f}, {a['iqm_hi']:.2f}] "
                         f"| {poi} | {a['nonfinite_runs'] or '—'} | {fmt_ms(a['update_ms'])} |")
        lines += ["", f"Games in the aggregate: {aggregates[0]['games'].replace(' ', ', ')}. Each run's score is its "
                  "final evaluation, expert-normalised; a run that went non-finite counts as random (0). "
                  f"95 % stratified-bootstrap CIs over runs within each game ({reps:,} resamples, rliable). "
                  "ms / update: the median over the variant's runs of each run's mean wall time per update "
                  "(perf/update_ms; runs on the same machine compare, other machines do not)."]
    else:
        lines.append("No aggregate: no game has a usable normaliser.")
    if left_out:
        lines += ["", "Left out of the aggregate: " + "; ".join(f"{g} ({why})" for g, why in left_out.items()) + "."]
    if tuning:
        lines += ["", "## Tuning seeds (reported apart, not in the aggregates)", "",
                  "| variant | game | seed | final return | % of expert | status |", "|---|---|---|---|---|---|"]
        for r in tuning:
            pct = 100 * (r["return_mean"] - r["random_mean"]) / (r["expert_mean"] - r["random_mean"])
            ret = "—" if math.isnan(r["return_mean"]) else f"{r['return_mean']:.1f}"
            lines.append(f"| `{r['variant']}` | {r['game']} | {r['seed']} | {ret} "
                         f"| {fmt_pct(pct)} | {r['status']} at {r['agent_steps']:,} |")
    lines += [*([""] if extra else []), *extra]
    if figures:
        lines += ["", *[f"![{Path(f).stem}]({f})" for f in figures]]
    return "\n".join(lines) + "\n"
