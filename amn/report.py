"""Evaluate a trained student against its experts: the table, the JSON, the plot.

Protocol: full games, raw scores, ``amn.evaluation.play_games`` (ε-greedy, noop
starts, no sticky actions unless asked). The expert of each game is played
**now, under the same protocol** (same episodes, ε, sticky, seed), never taken
from its metadata; its scores are cached in the run directory
(``expert_scores.json``) keyed by the protocol, so re-evaluating is cheap.

Scores per game: mean ± std of raw returns; ``% expert`` =
``(student − random) / (expert − random)`` (random play from ``HUMAN_RANDOM``;
a raw ratio is meaningless for games with negative scores such as Pong);
human-normalised = ``(student − random) / (human − random)``, "—" where there is no
reference score. Aggregates (``aggregate_report``) over the games with a random score whose
expert beats it (the others are named as left out): IQM, mean, worst game and optimality gap
of the expert-normalised scores, each with a 95 % stratified-bootstrap CI (rliable).
Student and expert play the same game starts (``by_slot``), so the CI resamples the
(student, expert) episode pairs within each game: it covers the evaluation noise of this
one trained student, not the spread over training seeds. An expert cache entry written before
the pairs were kept has them no more: there the student's episodes alone are resampled, the
expert's mean counts as exact, and the output says so.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from amn.errors import UsageError

#: Added to the protocol key of a cache entry listed by slot (paired with the student's games);
#: entries written before it list the expert's games in the order they finished: no pairs.
PAIRED_KEY = {"order": "by_slot"}


def _read_cache(cache_path: Path | None) -> dict[str, Any]:
    if cache_path is None or not cache_path.is_file():
        return {}
    try:
        return json.loads(cache_path.read_text())
    except json.JSONDecodeError:
        return {}


def _write_cache(cache_path: Path | None, key: str, returns: list[float]) -> None:
    if cache_path is not None:
        cache = _read_cache(cache_path)  # re-read: another game's entry may have landed since
        cache[key] = returns
        cache_path.write_text(json.dumps(cache, indent=1))


def cached_expert_scores(cache_path: Path | None, key: str, play) -> tuple[list[float], str]:
    """``play()``'s returns, cached in the JSON file ``cache_path`` under ``key`` (the protocol);
    also says whether they were played now or read back."""
    cache = _read_cache(cache_path)
    if key in cache:
        return cache[key], "cached, same protocol"
    returns = play()
    _write_cache(cache_path, key, returns)
    return returns, "played now, same protocol"


def paired_episodes(cache_path: Path | None, key: dict[str, Any],
                    play_both: Callable[[], list[list[float]]],
                    play_student: Callable[[bool], list[float]]) -> tuple[list[float], list[float], str, bool]:
    """``(student returns, expert returns, expert source, paired)`` for one game.

    :param key: the protocol of the expert's games (JSON-able); the cache entry is under it
    :param play_both: plays student and expert side by side, by slot: ``[student, expert]``
    :param play_student: ``play_student(by_slot)`` plays the student alone
    :returns: ``paired`` says whether ``student[i]`` and ``expert[i]`` are the same game start;
        False only for a cache entry written before pairs were kept (its CI resamples the student alone)
    """
    cache = _read_cache(cache_path)
    paired_key = json.dumps({**key, **PAIRED_KEY}, sort_keys=True)
    if paired_key in cache:
        return play_student(True), cache[paired_key], "cached, same protocol", True
    old_key = json.dumps(key, sort_keys=True)
    if old_key in cache:
        return play_student(False), cache[old_key], "cached, same protocol, no per-episode pairs", False
    student, expert = play_both()
    _write_cache(cache_path, paired_key, expert)
    return student, expert, "played now, same protocol", True


def game_row(game: str, student_returns: list[float], expert_returns: list[float], source: str,
             paired: bool) -> dict[str, Any]:
    """One game of the report: summaries, reference scores (None where there are none), normalised scores."""
    from amn.evaluation import HUMAN_RANDOM, summarize

    s, e = summarize(student_returns), summarize(expert_returns)
    random_score, human_score = HUMAN_RANDOM.get(game, (None, None))
    beats = random_score is not None and e["mean"] > random_score
    return {"game": game, "student": s, "expert": e, "expert_source": source, "paired": paired,
            "random": random_score, "human": human_score,
            "expert_normalised": (s["mean"] - random_score) / (e["mean"] - random_score) if beats else None,
            "human_normalised": (s["mean"] - random_score) / (human_score - random_score)
            if human_score is not None else None}


#: The aggregates of the expert-normalised scores, in the order ``aggregates_of`` returns them.
AGGREGATES = ("iqm", "mean", "worst", "optimality_gap")
BOOTSTRAP_RESAMPLES = 2000
CI_COVERS = ("the evaluation noise of this one trained student (which games it happened to play), "
             "not the spread over training seeds")


def pair_array(student: np.ndarray, expert: np.ndarray) -> np.ndarray:
    """Structured ``[episodes, games]`` array of ``(student, expert)`` returns, one element per pair.

    rliable's stratified bootstrap draws one episode index per element within each game (column),
    so a pair held in one element is resampled as a whole; two arrays would be resampled apart.
    """
    if student.shape != expert.shape or student.ndim != 2:
        raise ValueError(f"student and expert returns must both be [episodes, games], got {student.shape} "
                         f"and {expert.shape}")
    pairs = np.empty(student.shape, dtype=[("student", np.float64), ("expert", np.float64)])
    pairs["student"], pairs["expert"] = student, expert
    return pairs


def normalised_means(pairs: np.ndarray, random: np.ndarray) -> np.ndarray:
    """``float [games]``: ``(mean student - random) / (mean expert - random)`` of ``pairs`` ``[episodes, games]``."""
    with np.errstate(divide="ignore", invalid="ignore"):  # a resample's expert at random: caught by the caller
        return (pairs["student"].mean(axis=0) - random) / (pairs["expert"].mean(axis=0) - random)


def aggregates_of(normalised: np.ndarray) -> np.ndarray:
    """``float [4]``: IQM, mean, minimum (the worst game) and optimality gap (γ = 1: the experts'
    level) of per-game scores ``float [games]``. With 4 games the IQM is the mean of the middle two."""
    from rliable import metrics

    return np.array([metrics.aggregate_iqm(normalised), np.mean(normalised), np.min(normalised),
                     metrics.aggregate_optimality_gap(normalised, gamma=1)])


def bootstrap_aggregates(student: np.ndarray, expert: np.ndarray, random: np.ndarray, *,
                         reps: int = BOOTSTRAP_RESAMPLES, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Point estimates ``float [4]`` and 95 % percentile CIs ``float [2, 4]`` (rows: low, high) of
    ``aggregates_of`` the expert-normalised scores, by rliable's stratified bootstrap of the
    (student, expert) episode pairs within each game.

    :param student: raw returns ``float [episodes, games]``
    :param expert: the paired expert returns, same shape; a column filled with the expert's mean
        resamples to itself, i.e. the expert's mean counts as exact for that game
    :param random: random-play scores ``float [games]``
    """
    from rliable import library

    random = np.asarray(random, dtype=np.float64)
    state = np.random.get_state()
    np.random.seed(seed)  # rliable's bootstrap draws from numpy's global RNG: seed it, then put it back
    try:
        point, ci = library.get_interval_estimates(
            {"student": pair_array(student, expert)}, lambda p: aggregates_of(normalised_means(p, random)), reps=reps)
    finally:
        np.random.set_state(state)
    return point["student"], ci["student"]


def left_out_games(rows: list[dict[str, Any]]) -> dict[str, str]:
    """``{game: why}`` for the games the aggregates cannot use."""
    out = {}
    for r in rows:
        if r["random"] is None:
            out[r["game"]] = "no random score in amn.evaluation.HUMAN_RANDOM"
        elif r["expert_normalised"] is None:
            out[r["game"]] = f"its expert ({r['expert']['mean']:.1f}) does not beat random ({r['random']:.1f})"
    return out


def _finite(x: float) -> float | None:
    return float(x) if np.isfinite(x) else None


def aggregate_report(rows: list[dict[str, Any]], *, seed: int = 0, reps: int = BOOTSTRAP_RESAMPLES,
                     cache_path: Path | None = None) -> dict[str, Any]:
    """The report's ``aggregate``: each of ``AGGREGATES`` with its CI, over the usable games; the
    games left out and the unpaired ones are named. A value is None, never NaN, where undefined."""
    left_out = left_out_games(rows)
    used = [r for r in rows if r["game"] not in left_out]
    unpaired = [r["game"] for r in used if not r["paired"]]
    out: dict[str, Any] = {"games_aggregated": [r["game"] for r in used], "left_out": left_out,
                           "bootstrap_resamples": reps, "ci_covers": CI_COVERS, "unpaired_games": unpaired}
    point, ci = np.full(len(AGGREGATES), np.nan), np.full((2, len(AGGREGATES)), np.nan)
    if used:
        student = np.stack([r["student"]["returns"] for r in used], axis=1)  # [episodes, games]
        expert = np.stack([r["expert"]["returns"] if r["paired"] else np.full(len(r["student"]["returns"]),
                                                                           r["expert"]["mean"]) for r in used], axis=1)
        point, ci = bootstrap_aggregates(student, expert, np.array([r["random"] for r in used]), reps=reps, seed=seed)
    names = {"iqm": "iqm_expert_normalised", "mean": "mean_expert_normalised", "worst": "worst_expert_normalised",
             "optimality_gap": "optimality_gap"}
    for i, name in enumerate(AGGREGATES):
        out[names[name]] = _finite(point[i])
        out["ci95" if name == "iqm" else f"{name}_ci95"] = [_finite(ci[0, i]), _finite(ci[1, i])]
    out["worst_game"] = min(used, key=lambda r: r["expert_normalised"])["game"] if used else None
    out["ci_resampling"] = _resampling_note(used, unpaired, cache_path)
    if used and not np.isfinite(ci).all():
        out["ci_resampling"] += "; some CIs undefined: in a resample an expert's mean fell to random"
    return out


def _resampling_note(used: list[dict[str, Any]], unpaired: list[str], cache_path: Path | None) -> str:
    """What the bootstrap resampled, in words; names the games whose expert means count as exact."""
    if not used:
        return "no game to aggregate"
    paired = "(student, expert) episode pairs, drawn jointly within each game"
    if not unpaired:
        return paired
    where = f"delete {cache_path}" if cache_path is not None else "delete the expert score cache"
    fallback = (f"the expert scores of {', '.join(unpaired)} are cached without per-episode pairs, so there the "
                f"student's episodes alone are resampled and the expert's mean counts as exact ({where} to replay "
                f"the experts in pairs)")
    if len(unpaired) == len(used):
        return f"student's episodes only, within each game: {fallback}"
    return f"{paired}, except where {fallback}"


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


def load_run_student(path: str | Path, games: list[str] | None = None):
    """A run directory or checkpoint -> ``(checkpoint file, checkpoint, config, student in eval
    mode, the student's games, the wanted ones)``; one line if a wanted game is not the student's."""
    from amn.checkpoint import load_checkpoint, resolve_checkpoint
    from amn.config import from_dict
    from amn.student import Student
    from experts.atari import canonical_game

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
    return ckpt_file, ckpt, cfg, student, trained, wanted


def evaluate_run(path: str | Path, *, games: list[str] | None = None, episodes: int = 8,
                 epsilon: float = 0.05, sticky: bool = False, seed: int = 0, max_frames: int | None = None,
                 json_path: str | Path | None = None, plot_path: str | Path | None = None,
                 progress: bool = True) -> dict[str, Any]:
    """Play the student of a run directory/checkpoint and its experts; return the report dict."""
    from amn.collect import load_experts
    from amn.evaluation import play_games, play_games_side_by_side
    from experts.atari import life_loss_presses_fire

    ckpt_file, ckpt, cfg, student, trained, wanted = load_run_student(path, games)
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
        key = {"game": game, "expert": cfg.games[trained.index(game)].expert, "episodes": episodes, **protocol}
        # An uncached expert plays beside the student: the same game starts, and less wall time.
        student_returns, expert_returns, source, paired = paired_episodes(
            cache_path, key,
            lambda: play_games_side_by_side([act, expert.act], game, episodes, progress=progress, by_slot=True,
                                            **protocol),
            lambda by_slot: play_games(act, game, episodes, progress=progress, by_slot=by_slot, **protocol))
        rows.append(game_row(game, student_returns, expert_returns, source, paired))

    report = {
        "checkpoint": str(ckpt_file), "agent_steps": ckpt["counters"]["agent_steps"],
        "protocol": {"episodes": episodes, "epsilon": epsilon, "sticky": sticky, "seed": seed,
                     "max_frames": max_frames, "full_games": max_frames >= 108_000, "raw_scores": True},
        "games": rows,
        "aggregate": aggregate_report(rows, seed=seed, cache_path=cache_path),
    }
    if json_path is not None:
        Path(json_path).write_text(json.dumps(report, indent=2))
    if plot_path is not None:
        plot(report, Path(plot_path))
    return report


def _num(x: float | None, fmt: str) -> str:
    return "—" if x is None else format(x, fmt)


def _with_ci(value: float | None, ci: list[float | None]) -> str:
    return f"{_num(value, '.2f')} [{_num(ci[0], '.2f')}, {_num(ci[1], '.2f')}]"


def aggregate_lines(a: dict[str, Any]) -> list[str]:
    """The aggregate lines under the table: values with 95 % CIs, the games used, what the CI covers."""
    used, left_out = a["games_aggregated"], a["left_out"]
    lines = [f"IQM expert-normalised: {_with_ci(a['iqm_expert_normalised'], a['ci95'])}, "
             f"mean {_with_ci(a['mean_expert_normalised'], a['mean_ci95'])}, "
             f"worst game {a['worst_game'] or '—'} {_with_ci(a['worst_expert_normalised'], a['worst_ci95'])}, "
             f"optimality gap {_with_ci(a['optimality_gap'], a['optimality_gap_ci95'])}"]
    lines.append(f"aggregated over {len(used)} of {len(used) + len(left_out)} games"
                 + "".join(f"; left out {g}: {why}" for g, why in left_out.items()))
    lines.append(f"95% CIs: rliable stratified bootstrap, {a['bootstrap_resamples']} resamples of the "
                 f"{a['ci_resampling']}; they cover {a['ci_covers']}")
    lines.append("% expert = (student - random) / (expert - random); worst game's CI: the minimum over games "
                 "of each resample")
    return lines


def format_table(report: dict[str, Any]) -> str:
    """The per-game table and the aggregate lines, plain text; "—" where a score is undefined."""
    p = report["protocol"]
    cap = "" if p["max_frames"] >= 108_000 else f" (capped at {p['max_frames']:,} frames)"
    lines = [f"evaluation: {p['episodes']} full games per game{cap}, eps={p['epsilon']}, "
             f"sticky={'on' if p['sticky'] else 'off'}, seed={p['seed']}, raw scores "
             f"(student at {report['agent_steps']:,} agent steps)",
             f"{'game':<14}{'student':>18}{'expert':>18}{'% expert':>10}{'human-norm':>12}  expert score"]
    for r in report["games"]:
        s, e = r["student"], r["expert"]
        expert_pct = "—" if r["expert_normalised"] is None else f"{100 * r['expert_normalised']:.0f}%"
        lines.append(f"{r['game']:<14}{s['mean']:>10.1f} ± {s['std']:<5.1f}{e['mean']:>10.1f} ± {e['std']:<5.1f}"
                     f"{expert_pct:>10}{_num(r['human_normalised'], '.2f'):>12}  {r['expert_source']}")
    return "\n".join(lines + aggregate_lines(report["aggregate"]))


def plot(report: dict[str, Any], path: Path) -> None:
    """Bar chart: expert- and human-normalised score per game (no bar where undefined)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def values(key: str) -> list[float]:
        return [np.nan if r[key] is None else r[key] for r in report["games"]]

    games = [r["game"] for r in report["games"]]
    x = np.arange(len(games))
    fig, ax = plt.subplots(figsize=(max(4, 1.2 * len(games) + 2), 3.5))
    ax.bar(x - 0.2, values("expert_normalised"), 0.4, label="expert-normalised")
    ax.bar(x + 0.2, values("human_normalised"), 0.4, label="human-normalised")
    ax.axhline(1.0, color="k", lw=0.8, ls="--")
    ax.set_xticks(x, games)
    ax.set_ylabel("normalised score")
    a = report["aggregate"]
    ax.set_title(f"student vs expert: IQM {_with_ci(a['iqm_expert_normalised'], a['ci95'])} "
                 f"over {len(a['games_aggregated'])} games")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
