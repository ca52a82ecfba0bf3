"""The Pong study: cross-entropy vs CC-AMN with the naive, the authors' and the guarded normaliser.

    python scripts/pong_study.py [--budget-minutes M] [--seeds 3] [--games pong|all]
                                 [--agent-steps N] [--eval-every N] [--eval-episodes E] [--resume]

Trains one student per (variant, seed) on the same games, step budget and seeds,
each with periodic evaluation (``eval_every_agent_steps``). Every run gets the same
``--agent-steps``, so the variants are compared at equal data, not at equal wall
time; ``--budget-minutes`` is split evenly into a per-run time cap that only
guards against a slow machine (a run that hits it is marked ``time cap`` in the
CSV). Writes under ``--out`` (default ``docs/results/``):

- ``pong_study.csv``: one row per (loss, normaliser, game, seed, evaluation point)
  with the evaluation return and the normaliser diagnostics summed since the
  previous point (rows, rows the naive form gets wrong, fallback and non-finite
  rows), and the run's status (``ok``, ``time cap at agent step N`` or where
  it went non-finite);
- ``pong_study_returns.png``: evaluation return vs frames, mean and min–max over
  seeds, one panel per game;
- ``pong_study_normaliser.png``: per variant, the share of rows the naive form
  gets wrong, of rows sent to cross-entropy, and of non-finite rows, over training;
- ``pong_study_final.csv`` (also printed as a Markdown table): per variant and game,
  the last evaluation of every seed (mean ± std over the seeds that finished) and
  % of the expert, whose score is measured here under the same protocol
  (``--expert-episodes`` games, the config's evaluation ε and frame cap).

A run whose loss turns non-finite (naive CC on tied logits) stops with
``NonFiniteLoss``; the study records the step and goes on with the next run.
Run directories go to ``--runs-dir`` (default ``runs/pong_study``, not committed);
each finished run leaves its rows in ``study_rows.json`` there, and ``--resume``
reuses them, so a study cut short (a session ends) loses only the run in progress.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = [("ce", None), ("cc", "naive"), ("cc", "authors"), ("cc", "guarded")]
SHIPPED_GAMES = {"pong": "Pong", "breakout": "Breakout", "space_invaders": "SpaceInvaders", "atlantis": "Atlantis"}
COLUMNS = ["loss", "normaliser", "game", "seed", "agent_steps", "frames", "return_mean", "return_std", "episodes",
           "rows", "ill_conditioned_rows", "fallback_rows", "dropped_rows", "nonfinite_rows", "status"]


def label(loss: str, normaliser: str | None) -> str:
    return loss if normaliser is None else f"{loss}/{normaliser}"


def diagnostics_by_step(run_dir: Path, games: list[str]) -> dict[str, list[tuple[int, dict[str, float]]]]:
    """``{game: [(agent_steps, {key: count}), ...]}`` from the run's TensorBoard events."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir / "tb"), size_guidance={"scalars": 0})
    acc.Reload()
    out: dict[str, list] = {}
    for game in games:
        per_step: dict[int, dict[str, float]] = defaultdict(dict)
        prefix = f"{game}/loss_diag/"
        for tag in acc.Tags()["scalars"]:
            if tag.startswith(prefix):
                for event in acc.Scalars(tag):
                    per_step[event.step][tag[len(prefix):]] = event.value
        out[game] = sorted(per_step.items())
    return out


def run_one(loss: str, normaliser: str | None, games: list[tuple[str, str]], seed: int, args) -> list[dict]:
    from amn.config import load_config
    from amn.trainer import NonFiniteLoss, train

    name = f"{label(loss, normaliser).replace('/', '-')}-seed{seed}"
    run_dir = args.runs_dir / name
    done = run_dir / "study_rows.json"
    if args.resume and done.exists():
        rows = json.loads(done.read_text())
        print(f"{name}: reused ({rows[-1]['status'] if rows else 'no rows'})", flush=True)
        return rows
    if run_dir.exists():
        import shutil

        shutil.rmtree(run_dir)  # a study run always starts fresh
    overrides = [
        f"name={name}", f"loss={loss}", f"normaliser={'null' if normaliser is None else normaliser}",
        "games=" + json.dumps([{"game": g, "expert": e} for g, e in games]),
        f"seed={seed}", f"total_agent_steps={args.agent_steps}",
        f"eval_every_agent_steps={args.eval_every}", f"eval_episodes={args.eval_episodes}",
        f"log_every_agent_steps={args.log_every}", f"max_minutes={args.minutes_per_run}",
        "normaliser_diagnostics=true",
        *args.set,
    ]
    cfg = load_config(ROOT / "configs" / "default.yaml", overrides)
    status, failure = "ok", None
    start = time.monotonic()
    try:
        summary = train(cfg, run_dir, progress=not args.quiet, evaluate=False)
        if summary["status"] != "finished":
            raise KeyboardInterrupt  # Ctrl-C inside a run ends the study; --resume picks it up again
        if summary["agent_steps"] < cfg.total_agent_steps:
            status = f"time cap at agent step {summary['agent_steps']}"
    except NonFiniteLoss as err:
        status = f"nonfinite: {err}"
        failure = err
    print(f"{name}: {status} ({(time.monotonic() - start) / 60:.1f} min)", flush=True)

    evaluations = [json.loads(line) for line in (run_dir / "evaluations.jsonl").read_text().splitlines()] \
        if (run_dir / "evaluations.jsonl").exists() else []
    diag = diagnostics_by_step(run_dir, [g for g, _ in games])
    rows = []
    for game, _ in games:
        previous = 0
        points = [e for e in evaluations if e["game"] == game]
        last_step = max([e["agent_steps"] for e in points], default=0)
        failed_batch = {}
        if failure is not None:  # a row marking where the run stopped, with the failing batch
            points.append({"agent_steps": failure.step if failure.step is not None else last_step,
                           "return_mean": math.nan, "return_std": math.nan, "episodes": 0, "game": game})
            if failure.game == game:
                failed_batch = {"nonfinite_rows": failure.nonfinite_rows, "rows": failure.rows}
        for point in points:
            step = point["agent_steps"]
            counts = defaultdict(float)
            for s, values in diag[game]:
                if previous < s <= step or (point is points[-1] and s > step):
                    for key, value in values.items():
                        counts[key] += value
            previous = step
            if point is points[-1]:
                for key, value in failed_batch.items():
                    counts[key] += value
            rows.append({
                "loss": loss, "normaliser": normaliser or "", "game": game, "seed": seed,
                "agent_steps": step, "frames": 4 * step,
                "return_mean": point["return_mean"], "return_std": point["return_std"], "episodes": point["episodes"],
                **{k: int(counts.get(k, 0)) for k in COLUMNS[9:14]},
                "status": status if point is points[-1] else "ok",
            })
    done.write_text(json.dumps(rows))
    return rows


FINAL_COLUMNS = ["loss", "normaliser", "game", "seeds", "finished", "agent_steps", "return_mean", "return_std",
                 "expert_mean", "expert_std", "random", "percent_expert", "failures"]


def expert_scores(games: list[tuple[str, str]], args) -> dict[str, list[float]]:
    """Each game's expert under the students' evaluation protocol, cached in the runs directory."""
    from amn.config import load_config
    from amn.evaluation import play_games
    from amn.report import cached_expert_scores
    from experts import load_expert

    cfg = load_config(ROOT / "configs" / "default.yaml", list(args.set))
    args.runs_dir.mkdir(parents=True, exist_ok=True)
    out = {}
    for game, spec in games:
        key = json.dumps({"game": game, "expert": spec, "episodes": args.expert_episodes, "epsilon": cfg.eval_epsilon,
                          "sticky": cfg.eval_sticky, "max_frames": cfg.eval_max_frames}, sort_keys=True)
        out[game], _ = cached_expert_scores(args.runs_dir / "expert_scores.json", key, lambda: play_games(
            load_expert(spec).act, game, args.expert_episodes, epsilon=cfg.eval_epsilon, sticky=cfg.eval_sticky,
            max_frames=cfg.eval_max_frames, seed=10_000, progress=not args.quiet))
    return out


def final_table(rows: list[dict], experts: dict[str, list[float]]) -> list[dict]:
    """Per (variant, game): the last evaluation of each seed; a seed that went non-finite counts as failed."""
    import numpy as np

    from amn.evaluation import HUMAN_RANDOM

    table = []
    for loss, normaliser in VARIANTS:
        for game, expert in experts.items():
            sel = [r for r in rows if r["loss"] == loss and (r["normaliser"] or None) == normaliser and r["game"] == game]
            if not sel:
                continue
            last = {}
            for r in sel:  # rows are in step order within a seed
                last[r["seed"]] = r
            finals = [r["return_mean"] for r in last.values() if not r["status"].startswith("nonfinite")]
            failures = [f"seed {r['seed']} at agent step {r['agent_steps']}" for r in last.values()
                        if r["status"].startswith("nonfinite")]
            random_score = HUMAN_RANDOM[game][0]
            mean = float(np.mean(finals)) if finals else math.nan
            table.append({
                "loss": loss, "normaliser": normaliser or "", "game": game, "seeds": len(last),
                "finished": len(finals), "agent_steps": max(r["agent_steps"] for r in last.values()),
                "return_mean": mean, "return_std": float(np.std(finals)) if finals else math.nan,
                "expert_mean": float(np.mean(expert)), "expert_std": float(np.std(expert)), "random": random_score,
                "percent_expert": 100 * (mean - random_score) / (float(np.mean(expert)) - random_score),
                "failures": "; ".join(failures),
            })
    return table


def markdown(table: list[dict]) -> str:
    lines = ["| variant | game | seeds finished | final return (mean ± std over seeds) | % of expert | non-finite |",
             "|---|---|---|---|---|---|"]
    for t in table:
        ret = "—" if math.isnan(t["return_mean"]) else f"{t['return_mean']:.1f} ± {t['return_std']:.1f}"
        pct = "—" if math.isnan(t["percent_expert"]) else f"{t['percent_expert']:.0f} %"
        lines.append(f"| {label(t['loss'], t['normaliser'] or None)} | {t['game']} | {t['finished']}/{t['seeds']} "
                     f"| {ret} | {pct} | {t['failures'] or '—'} |")
    expert = "; ".join(f"{t['game']} {t['expert_mean']:.1f} ± {t['expert_std']:.1f}"
                       for t in {t["game"]: t for t in table}.values())
    return "\n".join(lines) + f"\n\nexpert under the same protocol: {expert}"


def plot(rows: list[dict], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    games = sorted({r["game"] for r in rows})
    variants = [label(l, n) for l, n in VARIANTS if any(r["loss"] == l and (r["normaliser"] or None) == n for r in rows)]

    fig, axes = plt.subplots(1, len(games), figsize=(6 * len(games), 4), squeeze=False)
    for ax, game in zip(axes[0], games):
        for v in variants:
            sel = [r for r in rows if r["game"] == game and label(r["loss"], r["normaliser"] or None) == v]
            frames = sorted({r["frames"] for r in sel})
            by_frame = [[r["return_mean"] for r in sel if r["frames"] == f] for f in frames]
            mean = [np.nanmean(x) if not all(math.isnan(y) for y in x) else np.nan for x in by_frame]
            lo = [np.nanmin(x) if not all(math.isnan(y) for y in x) else np.nan for x in by_frame]
            hi = [np.nanmax(x) if not all(math.isnan(y) for y in x) else np.nan for x in by_frame]
            line, = ax.plot(frames, mean, marker="o", label=v)
            ax.fill_between(frames, lo, hi, alpha=0.2, color=line.get_color())
            for r in sel:
                if r["status"].startswith("nonfinite"):
                    ax.axvline(r["frames"], color=line.get_color(), ls=":", lw=1)
        ax.set(title=f"{game}: evaluation return (mean, min-max over seeds)", xlabel="frames", ylabel="return")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "pong_study_returns.png", dpi=110)
    plt.close(fig)

    keys = [("ill_conditioned_rows", "naive form wrong"), ("fallback_rows", "fell back to CE"),
            ("nonfinite_rows", "non-finite")]
    fig, axes = plt.subplots(1, len(keys), figsize=(6 * len(keys), 4), squeeze=False)
    for ax, (key, title) in zip(axes[0], keys):
        for v in variants:
            sel = [r for r in rows if label(r["loss"], r["normaliser"] or None) == v and r["rows"] > 0]
            frames = sorted({r["frames"] for r in sel})
            share = [sum(r[key] for r in sel if r["frames"] == f) / max(1, sum(r["rows"] for r in sel if r["frames"] == f))
                     for f in frames]
            if frames:
                ax.plot(frames, share, marker="o", label=v)
        # symlog: the fallback and non-finite shares are ~1e-3 beside naive CC's ~0.5
        ax.set_yscale("symlog", linthresh=1e-4)
        ax.set(title=f"share of rows: {title}", xlabel="frames", ylabel="share of loss rows (symlog)", ylim=(0, 1.05))
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "pong_study_normaliser.png", dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget-minutes", type=float, default=120.0,
                        help="wall-time cap for the whole study, split evenly into per-run caps")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--games", default="pong", help="'pong', 'all' (the shipped games) or a comma list")
    parser.add_argument("--expert", action="append", default=[], metavar="GAME=SPEC",
                        help="expert for a game (default: the shipped one), e.g. Pong=../shared/experts/x.zip")
    parser.add_argument("--agent-steps", type=int, default=100_000, help="budget per run, summed over games")
    parser.add_argument("--eval-every", type=int, default=20_000)
    parser.add_argument("--eval-episodes", type=int, default=3)
    parser.add_argument("--expert-episodes", type=int, default=10,
                        help="games the expert plays under the same protocol, for %% of expert")
    parser.add_argument("--log-every", type=int, default=2_000)
    parser.add_argument("--variants", nargs="+", default=[label(l, n) for l, n in VARIANTS])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "results")
    parser.add_argument("--runs-dir", type=Path, default=ROOT / "runs" / "pong_study")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="extra config overrides for every run (as amn train-student --set)")
    parser.add_argument("--resume", action="store_true", help="reuse the runs a previous call finished")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args()

    names = list(SHIPPED_GAMES) if args.games == "all" else [g.strip().lower() for g in args.games.split(",")]
    experts = dict(spec.split("=", 1) for spec in args.expert)
    games = [(SHIPPED_GAMES.get(n, n), experts.get(SHIPPED_GAMES.get(n, n), n)) for n in names]
    variants = [(l, n) for l, n in VARIANTS if label(l, n) in args.variants]
    args.minutes_per_run = args.budget_minutes / (len(variants) * args.seeds)
    print(f"{len(variants)} variants x {args.seeds} seeds on {', '.join(g for g, _ in games)}: "
          f"{args.agent_steps:,} agent steps per run, capped at {args.minutes_per_run:.1f} min", flush=True)

    args.out.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    rows: list[dict] = []
    for seed in range(args.seeds):
        for loss, normaliser in variants:
            try:
                rows += run_one(loss, normaliser, games, seed, args)
            except KeyboardInterrupt:
                raise SystemExit(f"study interrupted in {label(loss, normaliser)} seed {seed}; "
                                 "run the same command with --resume to go on from there")
            with (args.out / "pong_study.csv").open("w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=COLUMNS)
                writer.writeheader()
                writer.writerows(rows)
    plot(rows, args.out)
    table = final_table(rows, expert_scores(games, args))
    with (args.out / "pong_study_final.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=FINAL_COLUMNS)
        writer.writeheader()
        writer.writerows(table)
    print(markdown(table))
    print(f"study done in {(time.monotonic() - start) / 60:.1f} min: {args.out / 'pong_study.csv'}")


if __name__ == "__main__":
    main()
