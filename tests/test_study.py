"""``amn study``: config validation, the rliable aggregates on hand-made scores, and a tiny study
end to end (real ALE, the shipped Pong expert)."""

from __future__ import annotations

import csv
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from amn.cli import main
from amn.errors import UsageError
from amn.study_config import load_study
from amn.study_report import aggregate, aggregate_rows, curve_rows, final_rows, fmt_pct, normalisers

REPO = Path(__file__).resolve().parents[1]
# Small enough for a loaded 2-core machine; learning starts early so updates (and naive CC's failure) happen.
TINY = {"games": [{"game": "Pong", "expert": "pong"}], "total_agent_steps": 800, "eval_every_agent_steps": 400,
        "eval_episodes": 1, "normaliser_diagnostics": True, "learning_starts_per_game": 200,
        "replay_capacity_per_game": 2000, "eval_max_frames": 1500, "log_every_agent_steps": 200}


def write_study(tmp_path: Path, **changes) -> Path:
    """A study file in ``tmp_path`` (no project root there, so paths are absolute); ``changes``
    replace top-level keys, a value None drops the key."""
    data = {"name": "tiny", "base": str(REPO / "configs" / "default.yaml"), "set": dict(TINY), "seeds": [0],
            "expert_episodes": 1, "bootstrap_reps": 200, "out": str(tmp_path / "out"),
            "runs_dir": str(tmp_path / "runs"),
            "variants": {"ce": {"loss": "ce"}, "cc/naive": {"loss": "cc", "normaliser": "naive"}}}
    data.update(changes)
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump({k: v for k, v in data.items() if v is not None}, sort_keys=False))
    return path


# -- configs ---------------------------------------------------------------------------


def test_pong_study_config_reproduces_the_former_script_protocol():
    study = load_study(REPO / "configs" / "studies" / "pong.yaml")
    assert list(study.variants) == ["ce", "cc/naive", "cc/authors", "cc/guarded"]
    assert study.seeds == [0, 1, 2] and study.tuning_seeds == [] and study.reference == "ce"
    assert study.expert_episodes == 10
    assert study.out == REPO / "docs" / "results" / "pong" and study.runs_dir == REPO / "runs" / "studies" / "pong"
    cfg = study.run_config("cc/naive", 1)
    assert [g.game for g in cfg.games] == ["Pong"] and (cfg.loss, cfg.normaliser, cfg.seed) == ("cc", "naive", 1)
    assert (cfg.total_agent_steps, cfg.eval_every_agent_steps, cfg.eval_episodes) == (100_000, 20_000, 3)
    assert cfg.normaliser_diagnostics and cfg.envs_per_game == 4 and cfg.log_every_agent_steps == 2_000


def test_cc_amn_study_config_runs_four_games_five_variants_three_seeds():
    # no tuning seed of its own: logit_scale auto was chosen on Pong's (configs/studies/pong_cc_diagnosis.yaml)
    study = load_study(REPO / "configs" / "studies" / "cc_amn.yaml")
    assert list(study.variants) == ["ce", "cc/naive", "cc/authors", "cc/guarded", "cc/guarded+scale"]
    assert study.seeds == [0, 1, 2] and study.tuning_seeds == []
    cfg = study.run_config("cc/guarded+scale", 2)
    assert [g.game for g in cfg.games] == ["Pong", "Breakout", "SpaceInvaders", "Atlantis"]
    assert cfg.total_agent_steps == 240_000 and cfg.loss_options == {"logit_scale": "auto"}


@pytest.mark.parametrize("changes, says", [
    ({"sed": [0]}, "unknown key 'sed'"),
    ({"variants": {"ce": {"loss": "ce"}, "cc/x": {"loss": "cc", "lossy": 1}}},
     "variant 'cc/x': config: unknown key 'lossy'"),
    ({"variants": {"ce": {"loss": "ce"}, "cc/x": {"loss": "cc", "loss_options": {"scale": 2}}}},
     "unknown option(s) scale"),
    ({"variants": {"ce": {"loss": "ce"}, "cc/x": {"loss": "cc", "normaliser": "nope"}}}, "variant 'cc/x'"),
    ({"variants": {"cc/guarded": {"loss": "cc"}}}, "the reference variant 'ce' is not among the variants"),
    ({"reference": "cc/other"}, "the reference variant 'cc/other'"),
    ({"variants": {"ce": {"loss": "ce", "games": [{"game": "Pong", "expert": "pong"}]}}}, "put it under set"),
    ({"variants": {"ce": {"loss": "ce"}, "cc/naive": {"loss": "cc"}, "cc-naive": {"loss": "cc"}}},
     "share the run directory name"),
    ({"variants": {"ce": None}}, "variant 'ce' must be a mapping"),
    ({"tuning_seeds": [0]}, "seed 0 is in both seeds and tuning_seeds"),
    ({"seeds": []}, "seeds is empty"),
    ({"set": {**TINY, "eval_every_agent_steps": 0}}, "eval_every_agent_steps is 0"),
    ({"set": {**TINY, "lrr": 1}}, "with set: config: unknown key 'lrr'"),
    ({"set": {**TINY, "seed": 3}}, "set may not hold seed"),
    ({"base": None}, "missing key 'base'"),
    ({"bootstrap_reps": 10}, "bootstrap_reps must be an int >= 100"),
])
def test_study_config_errors_are_one_line_usage_errors(tmp_path, changes, says):
    with pytest.raises(UsageError) as err:
        load_study(write_study(tmp_path, **changes))
    assert says in str(err.value) and "\n" not in str(err.value)


def test_cli_prints_a_bad_study_as_one_line_and_exit_code_2(tmp_path, capsys):
    assert main(["study", str(write_study(tmp_path, variants={"cc/guarded": {"loss": "cc"}}))]) == 2
    err = capsys.readouterr().err
    assert err.startswith("amn: error: study ") and err.count("\n") == 1


def test_only_keeps_the_reference_and_refuses_unknown_variants(tmp_path):
    study = load_study(write_study(tmp_path))
    assert study.select(["cc/naive"]) == ["ce", "cc/naive"] and study.select(None) == ["ce", "cc/naive"]
    with pytest.raises(UsageError, match="'cc/nope' is not a variant"):
        study.select(["cc/nope"])
    assert study.with_seeds([3, 4]).seeds == [3, 4]


# -- tables and aggregates ---------------------------------------------------------------


def test_identical_variant_has_probability_of_improvement_one_half_and_the_same_iqm():
    ref = np.array([[0.2, 0.9, 0.5], [0.4, 1.1, 0.3], [0.3, 0.7, 0.6]])  # [seeds, games]
    out = aggregate({"ce": ref, "same": ref.copy()}, "ce", reps=300)
    assert out["same"]["poi"] == 0.5 and out["ce"]["poi"] is None
    assert out["same"]["iqm"] == out["ce"]["iqm"] == pytest.approx(np.sort(ref.ravel())[2:7].mean())
    lo, hi = out["same"]["poi_ci"]
    assert lo < 0.5 < hi


def test_dominating_variant_has_probability_of_improvement_one_and_the_rng_is_left_alone():
    ref = np.zeros((3, 2))
    state = np.random.get_state()[1].copy()
    first = aggregate({"ce": ref, "better": ref + 1.0}, "ce", reps=200, seed=7)
    assert np.array_equal(np.random.get_state()[1], state)
    assert first["better"]["poi"] == 1.0 and first["better"]["poi_ci"] == (1.0, 1.0)
    assert first["better"]["iqm"] == 1.0
    assert first == aggregate({"ce": ref, "better": ref + 1.0}, "ce", reps=200, seed=7)  # seeded: reproducible
    with pytest.raises(ValueError, match="NaN"):
        aggregate({"ce": ref, "bad": np.full((3, 2), np.nan)}, "ce", reps=200)


def record(variant: str, seed: int, *, returns: dict[str, float], failure: dict | None = None) -> dict:
    """A hand-made run record: one evaluation at 400 agent steps per game, unless it failed before."""
    evaluations = [] if failure else [{"agent_steps": 400, "game": g, "return_mean": r, "return_std": 0.0,
                                       "episodes": 1, "returns": [r]} for g, r in returns.items()]
    series = {g: {"loss_diag/rows": [[200, 16.0], [400, 16.0], [600, 8.0]],
                  "mimic/kl_heldout": [[300, 0.5], [500, 0.25]]} for g in returns}
    return {"variant": variant, "seed": seed, "tuning": False, "games": list(returns),
            "status": "nonfinite" if failure else "ok", "agent_steps": failure["step"] if failure else 600,
            "failure": failure, "config": {}, "evaluations": evaluations, "series": series}


@pytest.mark.parametrize("pct, text", [(95.4, "95 %"), (-0.4, "0 %"), (-0.6, "-1 %"), (0.0, "0 %"),
                                       (float("nan"), "—")])
def test_percent_of_expert_is_rounded_without_a_negative_zero(pct, text):
    # A mean just below random (noel-m's Pong: -20.8 against random's -20.7) read "-0 %".
    assert fmt_pct(pct) == text


def test_curves_sum_diagnostics_per_interval_and_record_the_failing_batch():
    ok = curve_rows(record("ce", 0, returns={"Pong": 1.0}))
    # rows: 16 + 16 up to the point, and the 8 logged after the last point; kl: the nearest log (300, a tie -> earlier)
    assert [(r["agent_steps"], r["rows"], r["kl_heldout"]) for r in ok] == [(400, 40, 0.5)]
    assert math.isnan(ok[0]["agreement_heldout"])  # not logged: NaN, not an error
    failed = curve_rows(record("cc/naive", 0, returns={"Pong": 0.0}, failure={
        "step": 204, "game": "Pong", "rows": 8, "nonfinite_rows": 5, "message": "x"}))
    assert len(failed) == 1 and failed[0]["agent_steps"] == 204 and failed[0]["status"] == "nonfinite"
    assert math.isnan(failed[0]["return_mean"]) and (failed[0]["rows"], failed[0]["nonfinite_rows"]) == (48, 5)


def test_aggregate_counts_a_nonfinite_run_as_random_and_names_games_left_out():
    experts = {"Pong": [19.3], "NoSuchGame": [5.0]}  # Pong: random -20.7, so the expert is 40 above it
    usable, left_out = normalisers(experts)
    assert list(usable) == ["Pong"] and "no random score" in left_out["NoSuchGame"]
    records = [record("ce", s, returns={"Pong": -0.7, "NoSuchGame": 1.0}) for s in (0, 1)]
    records += [record("cc/naive", s, returns={"Pong": 0.0, "NoSuchGame": 0.0},
                       failure={"step": 204, "game": "Pong", "rows": 8, "nonfinite_rows": 5, "message": "x"})
                for s in (0, 1)]
    finals = final_rows(records, experts)
    ce = [r for r in finals if r["variant"] == "ce" and r["game"] == "Pong"]
    assert [r["aggregate_score"] for r in ce] == [0.5, 0.5]
    naive = [r for r in finals if r["variant"] == "cc/naive"]
    assert all(math.isnan(r["expert_normalised"]) for r in naive)
    assert [r["aggregate_score"] for r in naive if r["game"] == "Pong"] == [0.0, 0.0]
    rows = {a["variant"]: a for a in aggregate_rows(finals, ["ce", "cc/naive"], [0, 1], experts, "ce", 200)}
    assert rows["ce"]["games"] == "Pong" and rows["ce"]["iqm"] == 0.5 and math.isnan(rows["ce"]["poi"])
    assert rows["cc/naive"]["iqm"] == 0.0 and rows["cc/naive"]["poi"] == 0.0 and rows["cc/naive"]["nonfinite_runs"] == 2


# -- end to end ------------------------------------------------------------------------------


def run_study(config: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "amn", "study", str(config), "--no-progress", *extra],
                          capture_output=True, text=True, timeout=600, cwd=REPO)


@pytest.mark.slow
def test_tiny_study_end_to_end_records_naive_failure_writes_report_and_resumes(tmp_path):
    config = write_study(tmp_path)
    first = run_study(config)
    assert first.returncode == 0, first.stderr[-3000:]
    out = tmp_path / "out"
    with (out / "curves.csv").open() as f:
        curves = list(csv.DictReader(f))
    assert {"variant", "game", "seed", "agent_steps", "return_mean", "rows", "ill_conditioned_rows", "fallback_rows",
            "nonfinite_rows", "agreement_heldout", "kl_heldout", "grad_norm", "status"} <= set(curves[0])
    ce = [r for r in curves if r["variant"] == "ce"]
    assert [int(r["agent_steps"]) for r in ce] == [400, 800] and all(r["status"] == "ok" for r in ce)
    assert sum(int(r["rows"]) for r in ce) > 0  # diagnostics were read back from TensorBoard

    # A freshly initialised student has near-tied logits: the naive closed form fails at its first
    # update, and the study records where instead of stopping.
    naive = [r for r in curves if r["variant"] == "cc/naive"]
    assert naive[-1]["status"] == "nonfinite" and naive[-1]["return_mean"] == "nan"
    assert 200 <= int(naive[-1]["agent_steps"]) <= 800
    assert 0 < int(naive[-1]["nonfinite_rows"]) <= int(naive[-1]["rows"])  # the failing batch's share

    with (out / "final.csv").open() as f:
        final = {r["variant"]: r for r in csv.DictReader(f)}
    assert {"variant", "game", "seed", "agent_steps", "return_mean", "expert_mean", "random_mean", "nonfinite_rows",
            "fallback_rows", "status", "agreement_heldout", "kl_heldout"} <= set(final["ce"])
    assert final["ce"]["return_mean"] == ce[-1]["return_mean"] and final["cc/naive"]["status"] == "nonfinite"
    assert float(final["ce"]["expert_mean"]) > float(final["ce"]["random_mean"])  # the expert played, same protocol
    assert (out / "tuning.csv").read_text().count("\n") == 1  # the header: no tuning seeds here
    with (out / "aggregate.csv").open() as f:
        agg = {r["variant"]: r for r in csv.DictReader(f)}
    assert float(agg["cc/naive"]["iqm"]) == 0.0 and agg["cc/naive"]["nonfinite_runs"] == "1"
    for png in ("returns.png", "normaliser.png"):
        assert (out / png).stat().st_size > 10_000
    mimic_logged = any(not math.isnan(float(r[k])) for r in curves for k in ("agreement_heldout", "kl_heldout",
                                                                            "agreement_train"))
    assert (out / "mimicry.png").exists() == mimic_logged
    summary = (out / "summary.md").read_text()
    assert "| `cc/naive` | Pong | 0/1 |" in summary and "P(improvement over `ce`)" in summary
    assert summary in first.stdout

    refused = run_study(config)  # without --resume, finished runs are never overwritten
    assert refused.returncode == 2 and "pass --resume" in refused.stderr

    again = run_study(config, "--resume")
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stderr.count("reused") == 2, again.stderr
    with (out / "curves.csv").open() as f:
        assert list(csv.DictReader(f)) == curves

    # A study cut short: --finished trains nothing, reports each variant over the seeds it has
    # finished and names the runs still to do; a variant with no finished run is left out.
    grown = write_study(tmp_path, seeds=[0, 1], variants={"ce": {"loss": "ce"},
                                                         "cc/naive": {"loss": "cc", "normaliser": "naive"},
                                                         "squentropy": {"loss": "squentropy"}})
    partial = run_study(grown, "--finished")
    assert partial.returncode == 0, partial.stderr[-3000:]
    assert "not finished: squentropy-seed0, ce-seed1, cc-naive-seed1, squentropy-seed1" in partial.stderr  # plan order
    assert not (tmp_path / "runs" / "ce-seed1").exists() and not (tmp_path / "runs" / "squentropy-seed0").exists()
    summary = (out / "summary.md").read_text()
    assert "**Partial report**" in summary and "4 runs not finished yet" in summary
    with (out / "aggregate.csv").open() as f:
        assert [r["variant"] for r in csv.DictReader(f)] == ["ce", "cc/naive"]
    with (out / "final.csv").open() as f:
        assert {r["variant"] for r in csv.DictReader(f)} == {"ce", "cc/naive"}
