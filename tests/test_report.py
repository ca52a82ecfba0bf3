"""``amn.report`` aggregates: rliable's IQM and stratified bootstrap over (student, expert) pairs,
games left out by name, never a silent NaN, the cache fallback said out loud."""

from __future__ import annotations

import json

import numpy as np
import pytest
from rliable import library, metrics
from scipy import stats

from amn.report import (BOOTSTRAP_RESAMPLES, aggregate_report, bootstrap_aggregates, format_table, game_row,
                        paired_episodes, plot)

RANDOM = {"Pong": -20.7, "Breakout": 1.7, "SpaceInvaders": 148.0, "Qbert": 163.9}


def _episodes(seed: int = 0, episodes: int = 6) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Student and expert returns ``[episodes, 4]`` correlated within a pair (the same game start)."""
    rng = np.random.default_rng(seed)
    random = np.array(list(RANDOM.values()))
    start = rng.normal(0.0, 1.0, (episodes, 4))  # how kind the game start was, shared by the pair
    scale = np.array([10.0, 20.0, 400.0, 3000.0])
    expert = random + scale * (2.0 + 0.5 * start + 0.1 * rng.normal(size=(episodes, 4)))
    student = random + scale * (np.array([1.5, 0.4, 1.9, 1.0]) + 0.5 * start + 0.1 * rng.normal(size=(episodes, 4)))
    return student, expert, random


def _rliable_direct(student: np.ndarray, expert: np.ndarray, random: np.ndarray, seed: int, reps: int):
    """The same estimate straight from rliable: pairs as complex numbers (student + i expert), one
    element per pair so its stratified bootstrap moves them together; aggregates by hand."""
    def func(z: np.ndarray) -> np.ndarray:
        n = (z.real.mean(axis=0) - random) / (z.imag.mean(axis=0) - random)
        return np.array([metrics.aggregate_iqm(n), n.mean(), n.min(), metrics.aggregate_optimality_gap(n)])

    state = np.random.get_state()
    np.random.seed(seed)
    try:
        point, ci = library.get_interval_estimates({"x": student + 1j * expert}, func, reps=reps)
    finally:
        np.random.set_state(state)
    return point["x"], ci["x"]


def test_bootstrap_matches_rliable_called_directly():
    student, expert, random = _episodes()
    point, ci = bootstrap_aggregates(student, expert, random, reps=500, seed=3)
    ref_point, ref_ci = _rliable_direct(student, expert, random, seed=3, reps=500)
    np.testing.assert_allclose(point, ref_point, rtol=1e-12)
    np.testing.assert_allclose(ci, ref_ci, rtol=1e-12)
    n = np.sort((student.mean(0) - random) / (expert.mean(0) - random))
    assert point[0] == pytest.approx(n[1:3].mean())  # 4 games: IQM = mean of the middle two
    assert point[0] == pytest.approx(stats.trim_mean(n, 0.25))
    assert point[1:] == pytest.approx([n.mean(), n[0], 1 - np.minimum(n, 1).mean()])
    assert (ci[0] <= point).all() and (point <= ci[1]).all()


def test_global_rng_is_restored():
    np.random.seed(123)
    expected = np.random.get_state()[1].copy()
    bootstrap_aggregates(*_episodes(), reps=50, seed=0)
    assert np.array_equal(np.random.get_state()[1], expected)


def test_pairs_are_resampled_together():
    """A student that scores exactly what its expert scored, game by game: every paired resample
    is exactly 1; resampling the student alone against an exact expert mean would not be."""
    _, expert, random = _episodes()
    point, ci = bootstrap_aggregates(expert.copy(), expert, random, reps=200, seed=0)
    np.testing.assert_allclose(ci, [[1, 1, 1, 0], [1, 1, 1, 0]])  # IQM, mean, worst 1; gap to the experts 0
    exact_expert = np.broadcast_to(expert.mean(0), expert.shape)
    _, ci_alone = bootstrap_aggregates(expert.copy(), exact_expert, random, reps=200, seed=0)
    assert ci_alone[1, 0] - ci_alone[0, 0] > 0.05


def _rows(paired: bool = True, extra: tuple[str, ...] = ()) -> list[dict]:
    student, expert, _ = _episodes()
    rows = [game_row(g, list(student[:, j]), list(expert[:, j]), "played now, same protocol", paired)
            for j, g in enumerate(RANDOM)]
    for game in extra:
        rows.append(game_row(game, [5.0, 7.0], [9.0, 11.0], "played now, same protocol", True))
    return rows


def _report(rows: list[dict], **kwargs) -> dict:
    return {"protocol": {"episodes": 6, "epsilon": 0.05, "sticky": False, "seed": 0, "max_frames": 108_000},
            "agent_steps": 1000, "games": rows, "aggregate": aggregate_report(rows, **kwargs)}


def test_aggregate_report_values_and_text():
    rows = _rows()
    a = aggregate_report(rows, seed=0)
    student, expert, random = _episodes()
    point, ci = _rliable_direct(student, expert, random, seed=0, reps=BOOTSTRAP_RESAMPLES)
    assert a["iqm_expert_normalised"] == pytest.approx(point[0]) and a["ci95"] == pytest.approx(list(ci[:, 0]))
    assert a["mean_ci95"] == pytest.approx(list(ci[:, 1])) and a["optimality_gap"] == pytest.approx(point[3])
    assert a["worst_game"] == "Breakout" and a["worst_expert_normalised"] == pytest.approx(point[2])
    assert a["left_out"] == {} and a["unpaired_games"] == [] and "not the spread over training seeds" in a["ci_covers"]
    text = format_table(_report(rows))
    assert "IQM expert-normalised:" in text and "worst game Breakout" in text and "pairs, drawn jointly" in text
    assert len(text.splitlines()) == 2 + 4 + 4


def test_games_without_numbers_are_left_out_by_name(tmp_path):
    rows = _rows(extra=("Tetris",))
    report = _report(rows)
    a = report["aggregate"]
    assert a["games_aggregated"] == list(RANDOM) and "Tetris" in a["left_out"]
    assert a["iqm_expert_normalised"] == pytest.approx(aggregate_report(_rows())["iqm_expert_normalised"])
    tetris = rows[-1]
    assert tetris["random"] is None and tetris["expert_normalised"] is None and tetris["human_normalised"] is None
    text = format_table(report)
    assert "left out Tetris: no random score" in text
    tetris_line = text.splitlines()[-5]
    assert tetris_line.startswith("Tetris") and tetris_line.count("—") == 2  # % expert and human-norm
    json.dumps(report, allow_nan=False)  # no NaN anywhere in the JSON
    plot(report, tmp_path / "plot.png")


def test_no_usable_game_gives_none_not_nan():
    rows = [game_row("Tetris", [1.0], [2.0], "played now, same protocol", True),
            game_row("Pong", [-21.0], [-21.0], "played now, same protocol", True)]  # expert below random
    report = _report(rows)
    a = report["aggregate"]
    assert a["games_aggregated"] == [] and set(a["left_out"]) == {"Tetris", "Pong"}
    assert "does not beat random" in a["left_out"]["Pong"]
    assert a["iqm_expert_normalised"] is None and a["ci95"] == [None, None] and a["worst_game"] is None
    json.dumps(report, allow_nan=False)
    assert "IQM expert-normalised: — [—, —]" in format_table(report)


def test_unpaired_cache_falls_back_to_student_only_and_says_so(tmp_path):
    rows = _rows(paired=False)
    a = aggregate_report(rows, seed=0, cache_path=tmp_path / "expert_scores.json")
    student, expert, random = _episodes()
    _, ci = _rliable_direct(student, np.broadcast_to(expert.mean(0), expert.shape), random, seed=0,
                            reps=BOOTSTRAP_RESAMPLES)
    assert a["ci95"] == pytest.approx(list(ci[:, 0]))
    assert a["unpaired_games"] == list(RANDOM)
    assert "without per-episode pairs" in a["ci_resampling"] and "student's episodes alone" in a["ci_resampling"]
    assert f"delete {tmp_path / 'x.json'} to replay" in format_table(_report(rows, cache_path=tmp_path / "x.json"))


def test_paired_episodes_cache(tmp_path):
    cache = tmp_path / "expert_scores.json"
    key = {"game": "Pong", "episodes": 2, "seed": 0}
    calls = []

    def both():
        calls.append("both")
        return [[1.0, 2.0], [3.0, 4.0]]

    def alone(by_slot: bool):
        calls.append(f"alone by_slot={by_slot}")
        return [1.0, 2.0]

    assert paired_episodes(cache, key, both, alone) == ([1.0, 2.0], [3.0, 4.0], "played now, same protocol", True)
    assert paired_episodes(cache, key, both, alone) == ([1.0, 2.0], [3.0, 4.0], "cached, same protocol", True)
    old = tmp_path / "old.json"  # written before pairs were kept: the plain protocol key, finish order
    old.write_text(json.dumps({json.dumps(key, sort_keys=True): [4.0, 3.0]}))
    student, expert, source, paired = paired_episodes(old, key, both, alone)
    assert (expert, paired) == ([4.0, 3.0], False) and "no per-episode pairs" in source
    assert calls == ["both", "alone by_slot=True", "alone by_slot=False"]
