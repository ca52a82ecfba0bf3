"""Evaluate a trained student against its experts: the table, the JSON, the plot.

Protocol: full games, raw scores, ``amn.evaluation.play_games`` (ε-greedy, noop
starts, no sticky actions unless asked). The expert of each game is played
**now, under the same protocol** (same episodes, ε, sticky, seed), never taken
from its metadata; its scores are cached in the run directory
(``expert_scores.json``) keyed by the protocol, so re-evaluating is cheap.

Scores per game: mean ± std of raw returns; ``% expert`` =
``(student − random) / (expert − random)`` (random play from ``HUMAN_RANDOM``;
a raw ratio is meaningless for games with negative scores such as Pong);
human-normalised = ``(student − random) / (human − random)``. Aggregate: the
interquartile mean (IQM, 25 % trimmed mean over games) of the expert-normalised
scores with a 95 % stratified-bootstrap CI (episodes resampled within each game,
2000 resamples).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from amn.errors import UsageError


def iqm(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """Interquartile mean: mean of the values left after cutting ``floor(n/4)`` from each end."""
    x = np.sort(np.asarray(x, dtype=np.float64), axis=axis)
    n = x.shape[axis]
    cut = n // 4
    return np.take(x, np.arange(cut, n - cut), axis=axis).mean(axis=axis)


def bootstrap_iqm_ci(per_game_episodes: list[np.ndarray], normalise, *, resamples: int = 2000,
                     seed: int = 0) -> tuple[float, float]:
    """95 % CI of the IQM of per-game normalised means, resampling episodes within each game.

    ``normalise(g, means)`` maps resampled mean scores ``[resamples]`` of game ``g`` to normalised ones.
    """
    rng = np.random.default_rng(seed)
    cols = []
    for g, eps in enumerate(per_game_episodes):
        idx = rng.integers(0, len(eps), size=(resamples, len(eps)))
        cols.append(normalise(g, eps[idx].mean(axis=1)))
    stats = iqm(np.stack(cols, axis=1), axis=1)  # [resamples]
    lo, hi = np.percentile(stats, [2.5, 97.5])
    return float(lo), float(hi)


def cached_expert_scores(cache_path: Path | None, key: str, play) -> tuple[list[float], str]:
    """``play()``'s returns, cached in the JSON file ``cache_path`` under ``key`` (the protocol);
    also says whether they were played now or read back."""
    cache = {}
    if cache_path is not None and cache_path.is_file():
        try:
            cache = json.loads(cache_path.read_text())
        except json.JSONDecodeError:
            cache = {}
    if key in cache:
        return cache[key], "cached, same protocol"
    returns = play()
    if cache_path is not None:
        cache[key] = returns
        cache_path.write_text(json.dumps(cache, indent=1))
    return returns, "played now, same protocol"


def student_actor(student, game_index: int, action_set: list[int]):
    """Greedy student policy for ``play_games``: obs -> minimal-action-set indices.

    The forward runs on the student's device (a GPU during training); the actions come back to the CPU."""
    from amn.collect import action_mask
    from amn.student import masked_logits

    device = next(student.parameters()).device
    mask = action_mask(action_set).to(device)
    to_env = torch.full((18,), -1, dtype=torch.long)
    to_env[action_set] = torch.arange(len(action_set))

    def act(obs: np.ndarray) -> np.ndarray:
        ids = torch.full((len(obs),), game_index, dtype=torch.long, device=device)
        with torch.inference_mode():
            z = masked_logits(student(torch.from_numpy(obs).to(device), ids), mask.expand(len(obs), -1))
        return to_env[z.argmax(1).cpu()].numpy()

    return act


def evaluate_run(path: str | Path, *, games: list[str] | None = None, episodes: int = 8,
                 epsilon: float = 0.05, sticky: bool = False, seed: int = 0, max_frames: int | None = None,
                 json_path: str | Path | None = None, plot_path: str | Path | None = None,
                 progress: bool = True) -> dict[str, Any]:
    """Play the student of a run directory/checkpoint and its experts; return the report dict."""
    from amn.checkpoint import load_checkpoint, resolve_checkpoint
    from amn.collect import load_experts
    from amn.config import from_dict
    from amn.evaluation import HUMAN_RANDOM, play_games, play_games_side_by_side, summarize
    from amn.student import Student
    from experts.atari import canonical_game, life_loss_presses_fire

    ckpt_file = resolve_checkpoint(path)
    ckpt = load_checkpoint(ckpt_file)
    cfg = from_dict(ckpt["config"])
    if cfg.torch_threads > 0:
        torch.set_num_threads(cfg.torch_threads)
    student = Student(cfg.num_games, per_game_heads=cfg.per_game_heads)
    student.load_state_dict(ckpt["student"])
    student.eval()
    trained = [g.game for g in cfg.games]
    wanted = trained if not games else [canonical_game(g) for g in games]
    for g in wanted:
        if g not in trained:
            raise UsageError(f"{g} is not one of this student's games ({', '.join(trained)})")
    experts = dict(zip(trained, load_experts(cfg)))
    max_frames = max_frames or cfg.eval_max_frames
    cache_path = ckpt_file.parent / "expert_scores.json"

    rows = []
    for game in wanted:
        expert = experts[game]
        # A zoo expert's pipeline pressed FIRE after a life loss; the student, trained on its states, gets the same.
        protocol = dict(epsilon=epsilon, sticky=sticky, seed=seed, max_frames=max_frames,
                        fire_after_life_loss=life_loss_presses_fire(expert.observation_pipeline))
        act = student_actor(student, trained.index(game), expert.action_set)
        key = json.dumps({"game": game, "expert": cfg.games[trained.index(game)].expert,
                          "episodes": episodes, **protocol}, sort_keys=True)
        both: list[list[float]] = []

        def play_both() -> list[float]:  # an uncached expert plays beside the student: same games, less wall time
            both.extend(play_games_side_by_side([act, expert.act], game, episodes, progress=progress, **protocol))
            return both[1]

        expert_returns, source = cached_expert_scores(cache_path, key, play_both)
        student_returns = both[0] if both else play_games(act, game, episodes, progress=progress, **protocol)
        random_score, human_score = HUMAN_RANDOM.get(game, (float("nan"), float("nan")))
        s, e = summarize(student_returns), summarize(expert_returns)
        rows.append({
            "game": game, "student": s, "expert": e, "expert_source": source,
            "random": random_score, "human": human_score,
            "expert_normalised": (s["mean"] - random_score) / (e["mean"] - random_score),
            "human_normalised": (s["mean"] - random_score) / (human_score - random_score),
        })

    def normalise(g: int, means: np.ndarray) -> np.ndarray:
        r = rows[g]
        return (means - r["random"]) / (r["expert"]["mean"] - r["random"])

    scores = np.array([r["expert_normalised"] for r in rows])
    lo, hi = bootstrap_iqm_ci([np.asarray(r["student"]["returns"]) for r in rows], normalise, seed=seed)
    report = {
        "checkpoint": str(ckpt_file), "agent_steps": ckpt["counters"]["agent_steps"],
        "protocol": {"episodes": episodes, "epsilon": epsilon, "sticky": sticky, "seed": seed,
                     "max_frames": max_frames, "full_games": max_frames >= 108_000, "raw_scores": True},
        "games": rows,
        "aggregate": {"iqm_expert_normalised": float(iqm(scores)), "ci95": [lo, hi], "bootstrap_resamples": 2000},
    }
    if json_path is not None:
        Path(json_path).write_text(json.dumps(report, indent=2))
    if plot_path is not None:
        plot(report, Path(plot_path))
    return report


def format_table(report: dict[str, Any]) -> str:
    """The per-game table and the aggregate line, plain text."""
    p = report["protocol"]
    cap = "" if p["max_frames"] >= 108_000 else f" (capped at {p['max_frames']:,} frames)"
    lines = [f"evaluation: {p['episodes']} full games per game{cap}, eps={p['epsilon']}, "
             f"sticky={'on' if p['sticky'] else 'off'}, seed={p['seed']}, raw scores "
             f"(student at {report['agent_steps']:,} agent steps)",
             f"{'game':<14}{'student':>18}{'expert':>18}{'% expert':>10}{'human-norm':>12}  expert score"]
    for r in report["games"]:
        s, e = r["student"], r["expert"]
        lines.append(f"{r['game']:<14}{s['mean']:>10.1f} ± {s['std']:<5.1f}{e['mean']:>10.1f} ± {e['std']:<5.1f}"
                     f"{100 * r['expert_normalised']:>9.0f}%{r['human_normalised']:>12.2f}  {r['expert_source']}")
    a = report["aggregate"]
    lines.append(f"IQM expert-normalised: {a['iqm_expert_normalised']:.2f} "
                 f"(95% bootstrap CI {a['ci95'][0]:.2f} .. {a['ci95'][1]:.2f}); "
                 f"% expert = (student - random) / (expert - random)")
    return "\n".join(lines)


def plot(report: dict[str, Any], path: Path) -> None:
    """Bar chart: expert- and human-normalised score per game."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    games = [r["game"] for r in report["games"]]
    x = np.arange(len(games))
    fig, ax = plt.subplots(figsize=(max(4, 1.2 * len(games) + 2), 3.5))
    ax.bar(x - 0.2, [r["expert_normalised"] for r in report["games"]], 0.4, label="expert-normalised")
    ax.bar(x + 0.2, [r["human_normalised"] for r in report["games"]], 0.4, label="human-normalised")
    ax.axhline(1.0, color="k", lw=0.8, ls="--")
    ax.set_xticks(x, games)
    ax.set_ylabel("normalised score")
    a = report["aggregate"]
    ax.set_title(f"student vs expert: IQM {a['iqm_expert_normalised']:.2f} "
                 f"[{a['ci95'][0]:.2f}, {a['ci95'][1]:.2f}]")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
