"""Reports of the label-smoothing study: one table per data set (Markdown + CSV, one row per
variant × BatchNorm × weight decay, spread over seeds), a per-run CSV, and PNG plots
(accuracy per seed, reliability diagrams pooled over seeds, test accuracy per epoch).
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from statistics import mean, stdev
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only: no display here
import matplotlib.pyplot as plt  # noqa: E402

from amn.classify import VARIANTS  # noqa: E402

__all__ = ["load_records", "summarise", "write_report"]

Key = tuple[str, bool, float]


def load_records(runs_dir: Path) -> list[dict[str, Any]]:
    """Every result JSON in ``runs_dir``; errors (one line) when there is none."""
    paths = sorted(runs_dir.glob("*.json"))
    if not paths:
        raise FileNotFoundError(f"no run results in {runs_dir}: run the study first (without --report-only)")
    return [json.loads(p.read_text()) for p in paths]


def _key(r: dict[str, Any]) -> Key:
    c = r["config"]
    return c["variant"], c["batchnorm"], c["weight_decay"]


def _groups(records: list[dict[str, Any]]) -> dict[Key, list[dict[str, Any]]]:
    order = {v: i for i, v in enumerate(VARIANTS)}
    groups: dict[Key, list[dict[str, Any]]] = {}
    for r in sorted(records, key=lambda r: (r["config"]["batchnorm"], r["config"]["weight_decay"],
                                            order.get(r["config"]["variant"], 99), r["config"]["seed"])):
        groups.setdefault(_key(r), []).append(r)
    return groups


def _spread(values: list[float]) -> tuple[float, float]:
    """(mean, sample std); std NaN for one value, both NaN for none."""
    if not values:
        return math.nan, math.nan
    return mean(values), (stdev(values) if len(values) > 1 else math.nan)


def _count(records: list[dict[str, Any]], part: str, key: str) -> int:
    return sum((r.get(part) or {}).get(key, 0) for r in records)


def summarise(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (variant, batchnorm, weight_decay): metrics' mean and std over the seeds that
    finished, and the normaliser's row counts summed over all seeds' training steps."""
    rows = []
    for (variant, bn, wd), group in _groups(records).items():
        ok = [r for r in group if r["status"] == "ok"]
        row: dict[str, Any] = {"variant": variant, "batchnorm": bn, "weight_decay": wd,
                               "seeds": len(group), "seeds_ok": len(ok)}
        for metric in ("accuracy", "best_epoch_accuracy", "nll", "ece", "cc_mean_nll", "cc_mean_ece",
                       "mean_confidence", "logit_gap", "offclass_logit_std"):
            row[f"{metric}_mean"], row[f"{metric}_std"] = _spread([r["metrics"][metric] for r in ok])
        row["accuracy_per_seed"] = " ".join(f"{r['metrics']['accuracy']:.4f}" for r in ok)
        for key in ("rows", "naive_wrong_rows", "naive_nonfinite_rows"):
            row[f"train_{key}"] = _count(group, "train_naive_check", key)
            row[f"test_{key}"] = _count(ok, "test_naive_check", key)
        for key in ("fallback_rows", "dropped_rows", "nonfinite_rows", "series_rows", "closed_form_rows",
                    "table_rows"):
            row[f"loss_{key}"] = _count(group, "train_diagnostics", key)
        fails = [r["failure"] for r in group if r["status"] != "ok"]
        row["failures"] = "; ".join(f"epoch {f['epoch']} step {f['step']}: {f['reason']}" for f in fails)
        row["wall_s"] = sum(r["wall_s"] for r in group)
        rows.append(row)
    return rows


def _pm(row: dict[str, Any], metric: str, digits: int = 3, scale: float = 1.0) -> str:
    m, s = row[f"{metric}_mean"] * scale, row[f"{metric}_std"] * scale
    if math.isnan(m):
        return "—"
    return f"{m:.{digits}f}" if math.isnan(s) else f"{m:.{digits}f} ± {s:.{digits}f}"


def _share(n: int, total: int) -> str:
    return "—" if not total else f"{100 * n / total:.1f}"


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """The README-sized table: accuracy and ECE in %, NLL in nats; row shares over all training steps.

    The CC mean's ECE is shown for the CC variants only (for the others it is not their prediction).
    """
    head = ("| variant | BN | wd | seeds ok | test acc % (mean ± std) | best-epoch acc % | test NLL | ECE % "
            "| CC-mean ECE % | logit gap | off-class logit std | naive CC on own train rows: wrong % / non-finite % "
            "| normaliser non-finite rows | rows sent to CE % | failures |")
    lines = [head, "|" + "---|" * (head.count(" | ") + 1)]
    for r in rows:
        is_cc = r["variant"].startswith("cc")
        naive = (f"{_share(r['train_naive_wrong_rows'], r['train_rows'])} / "
                 f"{_share(r['train_naive_nonfinite_rows'], r['train_rows'])}")
        fallback = _share(r["loss_fallback_rows"], r["train_rows"]) if r["variant"] == "cc-ls/authors" else "—"
        nonfinite = f"{r['loss_nonfinite_rows']:,}" if is_cc else "—"
        lines.append(
            f"| `{r['variant']}` | {'on' if r['batchnorm'] else 'off'} | {r['weight_decay']:g} "
            f"| {r['seeds_ok']}/{r['seeds']} | {_pm(r, 'accuracy', 2, 100)} | {_pm(r, 'best_epoch_accuracy', 2, 100)} "
            f"| {_pm(r, 'nll')} | {_pm(r, 'ece', 2, 100)} | {_pm(r, 'cc_mean_ece', 2, 100) if is_cc else '—'} "
            f"| {_pm(r, 'logit_gap', 1)} | {_pm(r, 'offclass_logit_std', 2)} | {naive} "
            f"| {nonfinite} | {fallback} | {r['failures'] or '—'} |")
    return "\n".join(lines) + "\n"


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def _run_rows(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for r in records:
        m = r["metrics"] or {}
        f = r["failure"] or {}
        out.append({**{k: r["config"][k] for k in ("variant", "batchnorm", "weight_decay", "seed", "epochs")},
                    "status": r["status"], "fail_epoch": f.get("epoch"), "fail_step": f.get("step"),
                    "fail_reason": f.get("reason"), **m, "steps": r["steps"], "wall_s": round(r["wall_s"], 2),
                    **{f"train_{k}": v for k, v in r["train_naive_check"].items()},
                    **{f"loss_{k}": v for k, v in r["train_diagnostics"].items() if k != "rows"}})
    keys = list(dict.fromkeys(k for row in out for k in row))
    return [{k: row.get(k) for k in keys} for row in out]


# --------------------------------------------------------------------------- plots


def _cells(groups: dict[Key, list[dict[str, Any]]]) -> tuple[list[tuple[bool, float]], list[str]]:
    panels = sorted({(bn, wd) for _, bn, wd in groups})
    variants = list(dict.fromkeys(v for v, _, _ in groups))
    return panels, variants


def _title(bn: bool, wd: float) -> str:
    return f"BatchNorm {'on' if bn else 'off'}, weight decay {wd:g}"


def plot_accuracy(groups, path: Path, dataset: str) -> None:
    panels, variants = _cells(groups)
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.6), sharey=True, squeeze=False)
    for ax, (bn, wd) in zip(axes[0], panels):
        for x, v in enumerate(variants):
            ok = [r for r in groups.get((v, bn, wd), []) if r["status"] == "ok"]
            accs = [100 * r["metrics"]["accuracy"] for r in ok]
            if accs:
                ax.scatter([x] * len(accs), accs, s=14, color="tab:blue", zorder=3)
                m, s = _spread(accs)
                ax.errorbar([x + 0.2], [m], yerr=[0 if math.isnan(s) else s], fmt="_", color="k", capsize=3)
            else:
                ax.annotate("failed" if groups.get((v, bn, wd)) else "not run", (x, 0.5),
                            xycoords=("data", "axes fraction"), ha="center", rotation=90,
                            color="tab:red" if groups.get((v, bn, wd)) else "0.5", fontsize=8)
        ax.set_xticks(range(len(variants)), variants, rotation=40, ha="right", fontsize=8)
        ax.set_title(_title(bn, wd), fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    axes[0][0].set_ylabel("test accuracy %")
    fig.suptitle(f"{dataset}: final test accuracy (dots: seeds; bar: mean ± std over seeds)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _pooled(ok: list[dict[str, Any]], kind: str) -> tuple[list[float], list[float], list[float], list[int]]:
    """Reliability bins summed over seeds: (bin centres, accuracy, confidence, count)."""
    edges = ok[0]["reliability"][kind]["edges"]
    nb = len(edges) - 1
    count, acc, conf = [0] * nb, [0.0] * nb, [0.0] * nb
    for r in ok:
        rel = r["reliability"][kind]
        for b in range(nb):
            if rel["count"][b]:
                count[b] += rel["count"][b]
                acc[b] += rel["accuracy"][b] * rel["count"][b]
                conf[b] += rel["confidence"][b] * rel["count"][b]
    centres = [(edges[b] + edges[b + 1]) / 2 for b in range(nb)]
    return (centres, [a / c if c else math.nan for a, c in zip(acc, count)],
            [a / c if c else math.nan for a, c in zip(conf, count)], count)


def plot_reliability(groups, path: Path, dataset: str) -> None:
    """Bars: accuracy per softmax-confidence bin, pooled over seeds; dots: the CC mean's."""
    panels, variants = _cells(groups)
    live = [v for v in variants if any(r["status"] == "ok" for (vv, _, _), rs in groups.items() if vv == v for r in rs)]
    fig, axes = plt.subplots(len(panels), len(live), figsize=(2.3 * len(live), 2.4 * len(panels)),
                             sharex=True, sharey=True, squeeze=False)
    for row, (bn, wd) in zip(axes, panels):
        for ax, v in zip(row, live):
            ok = [r for r in groups.get((v, bn, wd), []) if r["status"] == "ok"]
            ax.plot([0, 1], [0, 1], color="0.6", lw=0.8)
            if ok:
                centres, acc, _, _ = _pooled(ok, "softmax")
                ax.bar(centres, acc, width=1 / len(centres), edgecolor="k", lw=0.4, color="tab:blue", alpha=0.7)
                cc_c, cc_acc, cc_conf, _ = _pooled(ok, "cc_mean")
                ax.plot(cc_conf, cc_acc, "o", ms=2.5, color="tab:orange")
                ece = mean(r["metrics"]["ece"] for r in ok)
                ax.text(0.04, 0.9, f"ECE {100 * ece:.1f} %", fontsize=7, transform=ax.transAxes)
            else:
                ax.text(0.5, 0.5, "not run", fontsize=7, color="0.5", ha="center", transform=ax.transAxes)
            ax.set_title(f"{v}\nBN {'on' if bn else 'off'}, wd {wd:g}", fontsize=7)
            ax.set_xlim(0, 1)
            ax.set_ylim(0, 1)
    for ax in axes[-1]:
        ax.set_xlabel("confidence", fontsize=7)
    for ax in axes[:, 0]:
        ax.set_ylabel("accuracy", fontsize=7)
    fig.suptitle(f"{dataset}: reliability (bars: softmax, 15 bins, pooled over seeds; dots: CC mean)", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_curves(groups, path: Path, dataset: str) -> None:
    panels, variants = _cells(groups)
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.4), sharey=True, squeeze=False)
    for ax, (bn, wd) in zip(axes[0], panels):
        for v in variants:
            ok = [r for r in groups.get((v, bn, wd), []) if r["status"] == "ok"]
            if ok:
                curves = [r["curve"]["test_accuracy"] for r in ok]
                n = min(len(c) for c in curves)
                ax.plot(range(1, n + 1), [100 * mean(c[e] for c in curves) for e in range(n)], label=v, lw=1.2)
        ax.set_title(_title(bn, wd), fontsize=9)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("test accuracy % (mean over seeds)")
    fig.suptitle(f"{dataset}: test accuracy per epoch", fontsize=9)
    axes[0][-1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(records: list[dict[str, Any]], out_dir: Path, dataset: str) -> list[Path]:
    """Write ``<dataset>_table.md``, ``<dataset>_table.csv``, ``<dataset>_runs.csv`` and the three
    PNGs into ``out_dir``; returns their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = summarise(records)
    groups = _groups(records)
    paths = {name: out_dir / f"{dataset}_{name}" for name in
             ("table.md", "table.csv", "runs.csv", "accuracy.png", "reliability.png", "curves.png")}
    paths["table.md"].write_text(markdown_table(rows))
    _write_csv(paths["table.csv"], rows)
    _write_csv(paths["runs.csv"], _run_rows(records))
    plot_accuracy(groups, paths["accuracy.png"], dataset)
    plot_reliability(groups, paths["reliability.png"], dataset)
    plot_curves(groups, paths["curves.png"], dataset)
    return list(paths.values())
