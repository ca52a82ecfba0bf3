"""``amn study CONFIG``: a grid of variants × seeds, trained on the same games and budget, then reported.

    amn study configs/studies/pong.yaml [--resume | --finished] [--only VARIANT ...] [--seeds N ...] [--no-progress]

Each (variant, seed) is one student run in ``<runs_dir>/<variant>-seed<N>`` (``/`` in the
variant's name becomes ``-``, see ``run_slug``; :mod:`amn.study_config` describes the config). A
variant may have its own reported seeds (``seeds:`` in its entry); ``--seeds`` replaces them all.
One progress bar covers the whole study's agent steps, with an ETA from the study's average rate
(evaluations included).

A run that stops with :class:`~amn.trainer.NonFiniteLoss` (naive CC does at its first update)
is recorded with where and how it failed, and the study goes on. A run that ends writes what
the study needs into ``<run>/study_rows.json`` (atomically; the record of
:mod:`amn.study_report`), beside ``study_config.json``, the config the study asked for.
``--resume`` reuses those runs, continues an unfinished run from its checkpoint, and starts
over a run that died before its first checkpoint; without it, an existing run directory is an
error, so finished runs are never overwritten by accident. A reused or continued run must have
been trained with the config the study gives it now.

Then each game's expert plays under the students' evaluation protocol (cached in
``<runs_dir>/expert_scores.json``), and the report goes to ``<out>``: ``curves.csv``,
``final.csv``, ``tuning.csv``, ``aggregate.csv``, ``variants.csv`` (per variant: loss, proper,
seeds, % of expert per game, IQM, P(improvement), held-out agreement and KL, spread over seeds,
ms per update; :mod:`amn.study_losses`), ``returns.png``, ``normaliser.png``, ``mimicry.png`` (when
logged), ``profile.png`` (rliable performance profile), ``game_bars.png`` (% of expert per game) and
``summary.md``, which is also printed.
"""

from __future__ import annotations

import argparse
import copy
import json
import shutil
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from amn.config import TrainConfig
from amn.errors import UsageError
from amn.study_config import Study, load_study, run_slug
from amn.study_report import BATCH_KEYS, DIAG_KEYS, MIMIC_KEYS, PERF_KEYS, atomic_write_text

RECORD_NAME = "study_rows.json"
#: The per-game TensorBoard tags a record keeps (``<Game>/<key>``); a record read for fewer (an older
#: amn's) is read again from the run's TensorBoard when it is reused (:func:`finished_record`).
SERIES_KEYS = [*(f"loss_diag/{k}" for k in DIAG_KEYS), *(f"mimic/{k}" for k in MIMIC_KEYS), *BATCH_KEYS]
#: The run's config as the study asked for it, written before training: train() resolves some
#: values in place (precision auto -> what the machine runs), so config.yaml is not what to compare.
REQUESTED_NAME = "study_config.json"
#: Config keys a reused or continued run may differ in: they change neither what is trained nor
#: its numbers (overlap_update gives the same numbers, amn/trainer.py) or only cap its wall time.
#: ``name`` is set by the study.
REUSE_IGNORES = {"name", "device", "torch_threads", "overlap_update", "pin_threads", "checkpoint_minutes",
                 "max_minutes"}
#: Seed of the experts' evaluation games, apart from every student seed (as scripts/pong_study.py had it).
EXPERT_SEED = 10_000


@dataclass
class Run:
    """One (variant, seed) of the study; ``state`` is new | partial | done, ``done_steps`` its agent steps so far."""

    variant: str
    seed: int
    tuning: bool
    cfg: TrainConfig
    dir: Path
    state: str = "new"
    done_steps: int = 0

    @property
    def name(self) -> str:
        return self.dir.name


def plan(study: Study, variants: list[str], resume: bool) -> list[Run]:
    """The runs, seed by seed (so a cut-short study has every variant of its first seeds), tuning seeds
    first (settings are chosen on them before the reported seeds run), each with its state on disk;
    refuses what a fresh start would overwrite or a config a run does not fit. A variant runs only its
    own reported seeds (``Study.seeds_of``): a seed only some variants have comes in its turn
    (``Study.all_seeds``) for those."""
    runs = [Run(v, seed, seed in study.tuning_seeds, study.run_config(v, seed),
                study.runs_dir / f"{run_slug(v)}-seed{seed}")
            for seed in [*study.tuning_seeds, *study.all_seeds(variants)] for v in variants
            if seed in study.tuning_seeds or seed in study.seeds_of(v)]
    for run in runs:
        if not run.dir.exists():
            continue
        if not resume:
            raise UsageError(f"{run.dir} already exists; pass --resume to reuse finished runs and continue "
                             f"unfinished ones, or delete it to start that run over")
        record_path, ckpt_path = run.dir / RECORD_NAME, run.dir / "checkpoint.pt"
        if record_path.is_file():
            record = json.loads(record_path.read_text())
            _check_same_config(run, record["config"], record_path)
            run.state, run.done_steps = "done", int(record["agent_steps"])
        elif ckpt_path.is_file():
            from amn.checkpoint import load_checkpoint

            requested = run.dir / REQUESTED_NAME
            if not requested.is_file():
                raise UsageError(f"{run.dir} holds a checkpoint but no {REQUESTED_NAME}: amn study did not start "
                                 f"it; delete it to start that run over")
            _check_same_config(run, json.loads(requested.read_text()), requested)
            run.state, run.done_steps = "partial", int(load_checkpoint(ckpt_path)["counters"]["agent_steps"])
    return runs


def _check_same_config(run: Run, saved: dict[str, Any], where: Path) -> None:
    """One line naming the first key the run was trained with otherwise than the study now says.
    Keys only one side has are skipped: a config field added since keeps its default meaning."""
    now = run.cfg.to_dict()
    for key in now:
        if key in saved and key not in REUSE_IGNORES and saved[key] != now[key]:
            raise UsageError(f"{where}: {run.name} was trained with {key}={json.dumps(saved[key])}, the study "
                             f"now says {json.dumps(now[key])}; delete {run.dir} to retrain it, or restore the "
                             f"study config")


def _scalars(run_dir: Path):
    """``<run>/tb``'s scalars, every point kept (a tensorboard ``EventAccumulator``, loaded)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    if not (run_dir / "tb").is_dir():
        raise UsageError(f"{run_dir / 'tb'} is missing: not a student run directory (delete {run_dir} to retrain)")
    acc = EventAccumulator(str(run_dir / "tb"), size_guidance={"scalars": 0})  # 0: keep every point
    acc.Reload()
    return acc


def _points(acc, tag: str) -> list[list[float]]:
    """``[[agent_step, value], ...]`` of one tag in step order; a step logged twice keeps the later value."""
    by_step = {e.step: e.value for e in acc.Scalars(tag)}
    return [[int(s), float(v)] for s, v in sorted(by_step.items())]


def read_series(run_dir: Path, games: list[str], acc=None) -> dict[str, dict[str, list[list[float]]]]:
    """``{game: {key: [[agent_step, value], ...]}}`` from ``<run>/tb`` for the keys of SERIES_KEYS
    (``loss_diag/<key>``, ``mimic/<key>``, the BATCH_KEYS); a tag the run did not log is absent.
    ``acc``: the run's loaded scalars, when the caller has them already."""
    acc = _scalars(run_dir) if acc is None else acc
    tags = set(acc.Tags()["scalars"])
    return {game: {key: _points(acc, f"{game}/{key}") for key in SERIES_KEYS if f"{game}/{key}" in tags}
            for game in games}


def read_perf(run_dir: Path, acc=None) -> dict[str, list[list[float]]]:
    """``{"<key>": [[agent_step, value], ...]}`` of the run-wide ``perf/<key>`` tags in PERF_KEYS
    (``update_ms``: the learner's wall time per update in ms, averaged per log interval); a tag the
    run did not log (one trained before it was logged) is absent."""
    acc = _scalars(run_dir) if acc is None else acc
    tags = set(acc.Tags()["scalars"])
    return {key: _points(acc, f"perf/{key}") for key in PERF_KEYS if f"perf/{key}" in tags}


def read_evaluations(run_dir: Path) -> list[dict[str, Any]]:
    """The lines of ``<run>/evaluations.jsonl`` (none before the first evaluation point)."""
    path = run_dir / "evaluations.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []


def train_run(run: Run, on_progress) -> dict[str, Any] | None:
    """Train (or continue) one run and return its record, written to ``<run>/study_rows.json``;
    None when Ctrl-C/SIGTERM stopped it (its checkpoint is saved)."""
    from amn.trainer import NonFiniteLoss, train

    if run.state == "new" and run.dir.exists():  # died before its first checkpoint: nothing to continue
        shutil.rmtree(run.dir)
    requested = run.cfg.to_dict()
    if run.state == "new":
        atomic_write_text(run.dir / REQUESTED_NAME, json.dumps(requested, indent=1))
    status, failure = "ok", None
    try:
        # A copy: train() resolves some of its config in place, and the record keeps what was asked for.
        summary = train(copy.deepcopy(run.cfg), run.dir, resume=run.state == "partial", progress=False, evaluate=False,
                        on_progress=on_progress)
        if summary["status"] != "finished":
            return None
        steps = int(summary["agent_steps"])
        if steps < run.cfg.total_agent_steps:
            status = "time cap"  # max_minutes ended it; its last evaluation is where it stopped
    except NonFiniteLoss as err:
        status, steps = "nonfinite", err.step
        failure = {"step": err.step, "game": err.game, "rows": int(err.rows), "nonfinite_rows": int(err.nonfinite_rows),
                   "message": str(err)}
    games = [g.game for g in run.cfg.games]
    acc = _scalars(run.dir)
    evaluations, series, perf = read_evaluations(run.dir), read_series(run.dir, games, acc), read_perf(run.dir, acc)
    if steps is None:  # NonFiniteLoss names its step; were it ever not to, the last step anything was logged at
        steps = max([e["agent_steps"] for e in evaluations] + [p[0] for s in series.values() for v in s.values()
                                                               for p in v] + [run.done_steps])
    record = {"variant": run.variant, "seed": run.seed, "tuning": run.tuning, "games": games, "status": status,
              "agent_steps": int(steps), "failure": failure, "config": requested,
              "evaluations": evaluations, "series": series, "series_keys": SERIES_KEYS, "perf": perf}
    atomic_write_text(run.dir / RECORD_NAME, json.dumps(record))
    return record


def finished_record(run: Run) -> dict[str, Any]:
    """A finished run's record; whether its seed is a tuning one is this study's say (another study may
    share the run). A record written for other SERIES_KEYS (by an older amn) has its series read again
    from the run's TensorBoard and is rewritten, so a diagnostic added since reaches the tables without
    retraining; without the TensorBoard files it is used as it is (the new columns are NaN)."""
    path = run.dir / RECORD_NAME
    record = json.loads(path.read_text())
    if record.get("series_keys") != SERIES_KEYS and (run.dir / "tb").is_dir():
        record |= {"series": read_series(run.dir, record["games"]), "series_keys": SERIES_KEYS}
        atomic_write_text(path, json.dumps(record))
    return record | {"tuning": run.tuning}


def train_all(runs: list[Run], progress: bool) -> list[dict[str, Any]] | None:
    """Every run's record, training those not done; None if a run was interrupted."""
    from tqdm import tqdm

    # The bar counts the agent steps the study will have run: after each run its total becomes the
    # steps done plus those of the runs still to do, so a run that stopped early (non-finite, time
    # cap) takes its remaining steps off and the ETA stays that of the work left.
    total = sum(r.done_steps if r.state == "done" else r.cfg.total_agent_steps for r in runs)
    # smoothing=0: the ETA uses the study's average rate, which includes evaluations and run setup.
    bar = tqdm(total=total, initial=sum(r.done_steps for r in runs), unit="step", unit_scale=True, smoothing=0,
               dynamic_ncols=True, disable=not progress, desc="study", mininterval=1.0)
    records = []
    try:
        for i, run in enumerate(runs):
            if run.state == "done":
                records.append(finished_record(run))
                tqdm.write(f"{run.name}: reused ({records[-1]['status']})", file=sys.stderr)
                continue
            bar.set_postfix_str(run.name, refresh=True)
            start, begun = time.monotonic(), run.done_steps
            record = train_run(run, bar.update)
            if record is None:
                tqdm.write(f"study interrupted in {run.name} (checkpoint saved); run the same command with "
                           f"--resume to go on from there", file=sys.stderr)
                return None
            bar.total = bar.n + sum(r.cfg.total_agent_steps - r.done_steps for r in runs[i + 1:] if r.state != "done")
            bar.refresh()
            done = f"{record['agent_steps'] - begun:,} agent steps in {(time.monotonic() - start) / 60:.1f} min"
            detail = f": {record['failure']['message']}" if record["failure"] else ""
            tqdm.write(f"{run.name}: {record['status']} ({done}){detail}", file=sys.stderr)
            records.append(record)
    finally:
        bar.close()
    return records


def expert_scores(study: Study, cfg: TrainConfig, progress: bool) -> dict[str, list[float]]:
    """Each game's expert returns under the students' evaluation protocol (``evaluate_now`` in
    amn/trainer.py: ``eval_epsilon``, ``eval_sticky``, ``eval_max_frames``), ``expert_episodes``
    games, cached in ``<runs_dir>/expert_scores.json`` keyed by that protocol."""
    from amn.evaluation import play_games
    from amn.report import cached_expert_scores
    from experts import load_expert

    study.runs_dir.mkdir(parents=True, exist_ok=True)
    out = {}
    for g in cfg.games:
        key = json.dumps({"game": g.game, "expert": g.expert, "episodes": study.expert_episodes,
                          "epsilon": cfg.eval_epsilon, "sticky": cfg.eval_sticky, "max_frames": cfg.eval_max_frames,
                          "seed": EXPERT_SEED}, sort_keys=True)
        out[g.game], _ = cached_expert_scores(study.runs_dir / "expert_scores.json", key, lambda g=g: play_games(
            load_expert(g.expert).act, g.game, study.expert_episodes, epsilon=cfg.eval_epsilon,
            sticky=cfg.eval_sticky, max_frames=cfg.eval_max_frames, seed=EXPERT_SEED, progress=progress))
    return out


def _games(n: int) -> str:
    return f"{n} full game{'s' if n != 1 else ''}"


def seeds_text(study: Study, variants: list[str]) -> str:
    """The reported seeds in words: ``seeds [0, 1]``, and each variant whose seeds differ, with how many,
    e.g. ``seeds [0, 1] (`ce`: 3 seeds [0, 1, 2])``."""
    own = [f"`{v}`: {len(study.seeds_of(v))} seed{'s' if len(study.seeds_of(v)) != 1 else ''} {study.seeds_of(v)}"
           for v in variants if study.seeds_of(v) != study.seeds]
    common = f"seeds {study.seeds}" if len(own) < len(variants) else "each its own seeds"
    return common + (f" ({'; '.join(own)})" if own else "")


def protocol_lines(study: Study, variants: list[str], cfg: TrainConfig) -> list[str]:
    """summary.md's opening: what was run, as a reader needs it to reproduce or compare."""
    per_game = cfg.total_agent_steps // cfg.num_games
    overrides = "; ".join(f"`{v}`: {json.dumps(study.variants[v]) if study.variants[v] else 'the base as is'}"
                          for v in variants)
    tuning = f"; tuning seeds {study.tuning_seeds} reported apart" if study.tuning_seeds else ""
    return [f"`amn study {study.path.name}`: {len(variants)} variants × {seeds_text(study, variants)}{tuning}, on "
            f"{', '.join(g.game for g in cfg.games)}; {cfg.total_agent_steps:,} agent steps per run "
            f"({per_game:,} per game), the same for every variant.",
            f"Base config `{study.base.name}` with {json.dumps(study.set)}. Variants: {overrides}.",
            f"Evaluation every {cfg.eval_every_agent_steps:,} agent steps: {_games(cfg.eval_episodes)} per game, "
            f"ε = {cfg.eval_epsilon}, sticky actions {'on' if cfg.eval_sticky else 'off'}, "
            f"frame cap {cfg.eval_max_frames:,}."]


def write_report(study: Study, variants: list[str], records: list[dict[str, Any]],
                 experts: dict[str, list[float]], cfg: TrainConfig, missing: list[str] | None = None) -> str:
    """Write every output under ``study.out``; return summary.md's text. ``missing``: the runs not
    finished yet, for a partial report (``--finished``), which says so at its top."""
    from amn import study_losses, study_plots, study_report as rep

    study.out.mkdir(parents=True, exist_ok=True)
    curves = [row for r in records for row in rep.curve_rows(r)]
    finals = rep.final_rows(records, experts)
    reported = [r for r in finals if not r["tuning"]]
    tuning = [r for r in finals if r["tuning"]]
    rep.write_csv(study.out / "curves.csv", curves, rep.CURVE_COLUMNS)
    rep.write_csv(study.out / "final.csv", reported, rep.FINAL_COLUMNS)
    rep.write_csv(study.out / "tuning.csv", tuning, rep.FINAL_COLUMNS)
    seeds = {v: study.seeds_of(v) for v in variants}
    aggregates = rep.aggregate_rows(reported, variants, seeds, experts, study.reference, study.bootstrap_reps)
    rep.write_csv(study.out / "aggregate.csv", aggregates, rep.AGGREGATE_COLUMNS)
    shown = [r for r in curves if not r["tuning"]]
    colours = study_plots.variant_colours(list(study.variants))  # the config's order: --only keeps the colours
    figures = [study_plots.plot_returns(shown, variants, experts, study.out / "returns.png", colours),
               study_plots.plot_normaliser(shown, variants, study.out / "normaliser.png", colours),
               study_plots.plot_mimicry([r for r in records if not r["tuning"]], variants, list(experts),
                                        study.out / "mimicry.png", colours)]
    losses = {v: (c.loss, c.loss_kwargs) for v in variants for c in [study.run_config(v, seeds[v][0])]}
    section, more = study_losses.write_variant_outputs(study.out, reported, aggregates, variants, seeds, losses,
                                                       experts, study.reference, study.bootstrap_reps, colours)
    protocol = protocol_lines(study, variants, cfg)
    if missing:
        protocol.insert(0, f"**Partial report** (`amn study {study.path.name} --finished`): {len(missing)} runs not "
                           f"finished yet ({', '.join(missing)}); each variant is reported over the seeds it has "
                           f"finished (a run stopped by a non-finite loss has finished and scores as random). "
                           f"`--resume` trains the rest and rewrites this report.")
    if figures[1] is None:
        protocol.append("No normaliser diagnostics were logged (normaliser_diagnostics off, no cc variant).")
    if figures[2] is None:
        protocol.append("No mimicry diagnostics (<Game>/mimic/*) were logged by these runs.")
    text = rep.summary_markdown(title=f"Study `{study.name}`", protocol=protocol, finals=reported, tuning=tuning,
                                aggregates=aggregates, variants=variants, experts=experts,
                                reference=study.reference, reps=study.bootstrap_reps,
                                figures=[f.name for f in [*figures, *more] if f is not None], extra=section)
    atomic_write_text(study.out / "summary.md", text)
    return text


def narrow_to_finished(study: Study, variants: list[str], runs: list[Run]) -> tuple[Study, list[str], list[str]]:
    """``amn study --finished``: the study cut to the runs that have finished, each variant reported over
    the seeds it has finished (its own ``seeds``), a variant with none left out. Returns the narrowed
    study, its variants and the names of the runs not finished. Raises UsageError if the reference has
    no finished run (nothing to compare with)."""
    done = {(r.variant, r.seed) for r in runs if r.state == "done"}
    own = {v: [s for s in study.seeds_of(v) if (v, s) in done] for v in variants}
    if not own[study.reference]:
        raise UsageError(f"study {study.name}: the reference {study.reference!r} has no finished run yet, so there "
                         f"is nothing to report; run it with --resume first")
    kept = [v for v in variants if own[v]]
    narrowed = replace(study, variant_seeds={v: own[v] for v in kept})
    return narrowed, kept, [r.name for r in runs if r.state != "done"]


def _study(args: argparse.Namespace) -> int:
    study = load_study(args.config)
    if args.seeds:
        study = study.with_seeds(args.seeds)
    variants = study.select(args.only)
    runs = plan(study, variants, args.resume or args.finished)
    if args.finished:
        study, variants, missing = narrow_to_finished(study, variants, runs)
        runs = [r for r in runs if r.state == "done" and r.variant in variants]
        print(f"study {study.name}: report of the {len(runs)} finished runs; not finished: "
              f"{', '.join(missing) or 'none'}", file=sys.stderr)
        records = [finished_record(r) for r in runs]
        experts = expert_scores(study, runs[0].cfg, progress=not args.no_progress)
        print(write_report(study, variants, records, experts, runs[0].cfg, missing=missing))
        print(f"study {study.name}: report in {study.out}", file=sys.stderr)
        return 0
    cfg = runs[0].cfg  # the evaluation protocol and the games: the same in every run (amn/study_config.py)
    todo = sum(r.cfg.total_agent_steps - r.done_steps for r in runs if r.state != "done")
    print(f"study {study.name}: {len(variants)} variants ({', '.join(variants)}) x {seeds_text(study, variants)}"
          + (f" + tuning seeds {study.tuning_seeds}" if study.tuning_seeds else "")
          + f" on {', '.join(g.game for g in cfg.games)}: {len(runs)} runs of {cfg.total_agent_steps:,} agent steps, "
          f"{sum(r.state == 'done' for r in runs)} done, {todo:,} agent steps to go; runs in {study.runs_dir}",
          file=sys.stderr, flush=True)
    records = train_all(runs, progress=not args.no_progress)
    if records is None:
        return 130
    experts = expert_scores(study, cfg, progress=not args.no_progress)
    print(write_report(study, variants, records, experts, cfg))
    print(f"study {study.name}: report in {study.out}", file=sys.stderr)
    return 0


def add_parsers(sub) -> None:
    p = sub.add_parser("study", help="train a grid of variants x seeds and report them (rliable aggregates)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config", type=Path, help="a study config, e.g. configs/studies/pong.yaml")
    p.add_argument("--resume", action="store_true",
                   help="reuse finished runs and continue unfinished ones from their checkpoints")
    p.add_argument("--only", nargs="+", metavar="VARIANT", default=None,
                   help="run and report only these variants (the reference variant is always included)")
    p.add_argument("--seeds", nargs="+", type=int, metavar="N", default=None,
                   help="the reported seeds of every variant, in place of the config's (and of a variant's "
                        "own seeds:); tuning seeds stay")
    p.add_argument("--finished", action="store_true",
                   help="train nothing: report the runs that have finished (a run stopped by a non-finite loss "
                        "has finished: it scores as random), each variant over its finished seeds, and name the "
                        "rest; --resume later trains them and rewrites the report")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=_study)
