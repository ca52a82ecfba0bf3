"""The label-smoothing study's grid of runs: resumable, one result JSON per run, with a
progress line and an ETA after each run.

Results: ``<runs_dir>/<run_id>.json`` (:meth:`amn.classify.RunConfig.run_id`), written
atomically when the run ends, failed runs included (a naive-CC failure is deterministic, so
rerunning it would only fail again). A rerun skips every run whose JSON exists, after checking
that its recorded config is the one asked for.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, Iterable

from amn.classify import RunConfig, train_run, write_json_atomic
from amn.classify_data import Split

__all__ = ["run_study", "study_configs"]


def study_configs(dataset: str, variants: Iterable[str], batchnorms: Iterable[bool],
                  weight_decays: Iterable[float], seeds: Iterable[int], **common: Any) -> list[RunConfig]:
    """The full grid, seed-major: after the first third of a 3-seed study, every cell has a seed."""
    variants, batchnorms, weight_decays = list(variants), list(batchnorms), list(weight_decays)
    grid = [RunConfig(dataset, v, batchnorm=bn, seed=s, weight_decay=wd, **common)
            for s in seeds for bn in batchnorms for wd in weight_decays for v in variants]
    for cfg in grid:
        cfg.check()
    return grid


def _load_done(path: Path, cfg: RunConfig) -> dict[str, Any]:
    record = json.loads(path.read_text())
    if record.get("config") != asdict(cfg):
        old = record.get("config") or {}
        diff = ", ".join(f"{k} {old.get(k)!r} -> {v!r}" for k, v in asdict(cfg).items() if old.get(k) != v)
        raise ValueError(f"{path} was made with another config ({diff}); pass another --out-dir or delete it")
    return record


def _clock(seconds: float) -> str:
    m, s = divmod(int(round(seconds)), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def _eta(pending: list[RunConfig], times: dict[str, list[float]]) -> float | None:
    """Seconds left: each pending run costs its variant's mean so far, else the mean of all runs."""
    every = [t for ts in times.values() for t in ts]
    if not every:
        return None
    overall = sum(every) / len(every)
    return sum(sum(times[c.variant]) / len(times[c.variant]) if times.get(c.variant) else overall
               for c in pending)


def _summary(record: dict[str, Any]) -> str:
    if record["status"] != "ok":
        f = record["failure"]
        return f"FAILED at epoch {f['epoch']} step {f['step']}: {f['reason']}"
    m = record["metrics"]
    return f"acc {m['accuracy']:.3f}  nll {m['nll']:.3f}  ece {m['ece']:.3f}"


def run_study(configs: list[RunConfig], split: Split, runs_dir: Path,
              log: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """Run (or reuse) every config; returns their records in grid order."""
    runs_dir.mkdir(parents=True, exist_ok=True)
    records: list[dict[str, Any]] = []
    times: dict[str, list[float]] = {}
    start = time.perf_counter()
    n = len(configs)
    for i, cfg in enumerate(configs, 1):
        path = runs_dir / f"{cfg.run_id()}.json"
        if path.exists():
            records.append(_load_done(path, cfg))
            log(f"[{i}/{n}] {cfg.run_id()}: done before, skipped ({_summary(records[-1])})")
            continue
        record = train_run(cfg, split)
        write_json_atomic(path, record)
        records.append(record)
        times.setdefault(cfg.variant, []).append(record["wall_s"])
        pending = [c for c in configs[i:] if not (runs_dir / f"{c.run_id()}.json").exists()]
        eta = _eta(pending, times)
        log(f"[{i}/{n}] {cfg.run_id()}: {_summary(record)} ({record['wall_s']:.1f} s) | "
            f"elapsed {_clock(time.perf_counter() - start)}, ETA {'?' if eta is None else _clock(eta)}")
    return records
