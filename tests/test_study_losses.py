"""Issue #20's study of every student loss: per-variant seeds, the per-variant table (proper, ms per
update, % of expert, P(improvement) with unequal runs), the rliable figures and their colours, the
losses.yaml config. Hand-made records, no training."""

from __future__ import annotations

import inspect
import math
import re

import numpy as np
import pytest
import yaml

from amn import study_losses
from amn.errors import UsageError
from amn.study import plan, read_perf, read_series, seeds_text
from amn.study_config import load_study, run_slug
from amn.study_report import aggregate_rows, final_rows, score_matrices
from study_records import EXPERTS, REPO, SEEDS, record, unequal_records, write_study


# -- per-variant seeds -----------------------------------------------------------------------


def test_a_variant_s_own_seeds_replace_the_study_s_and_the_plan_stays_seed_by_seed(tmp_path):
    study = load_study(write_study(tmp_path, tuning_seeds=[100]))
    assert study.seeds_of("ce") == [0, 1, 2] and study.seeds_of("noel-m") == [0, 1] and study.seeds_of("cos") == [1, 5]
    assert "seeds" not in study.variants["ce"]  # the study's key, not passed to TrainConfig
    assert study.all_seeds() == [0, 1, 2, 5] and study.all_seeds(["noel-m"]) == [0, 1]
    runs = plan(study, list(study.variants), resume=False)
    assert [(r.variant, r.seed) for r in runs] == [
        ("ce", 100), ("noel-m", 100), ("cos", 100),  # tuning seeds first, every variant
        ("ce", 0), ("noel-m", 0), ("ce", 1), ("noel-m", 1), ("cos", 1), ("ce", 2), ("cos", 5)]
    assert [r.tuning for r in runs] == [True] * 3 + [False] * 7
    assert seeds_text(study, list(study.variants)) == "seeds [0, 1] (`ce`: 3 seeds [0, 1, 2]; `cos`: 2 seeds [1, 5])"
    # --seeds replaces every reported seed, the variants' own included
    again = study.with_seeds([7])
    assert all(again.seeds_of(v) == [7] for v in again.variants) and again.all_seeds() == [7]
    assert seeds_text(again, list(again.variants)) == "seeds [7]"


@pytest.mark.parametrize("seeds, says", [
    ([0, 0], "variant 'noel-m': seeds must be a list of distinct ints"),
    ("0", "variant 'noel-m': seeds must be a list of distinct ints"),
    ([True, 1], "seeds must be a list of distinct ints"),
    ([1.5], "seeds must be a list of distinct ints"),
    ([], "variant 'noel-m': seeds is empty; list at least one reported seed, or drop the key"),
    ([3, 100], "variant 'noel-m': seed 100 is in both its seeds and tuning_seeds"),
])
def test_bad_variant_seeds_are_one_line_usage_errors(tmp_path, seeds, says):
    variants = {"ce": {"loss": "ce"}, "noel-m": {"loss": "noel-m", "seeds": seeds}}
    with pytest.raises(UsageError) as err:
        load_study(write_study(tmp_path, variants=variants, tuning_seeds=[100]))
    assert says in str(err.value) and "\n" not in str(err.value)


def test_variant_names_with_options_make_safe_run_directory_names(tmp_path):
    names = ["noel-param-m(alpha=1)", "rescaled-square(k=1,M=1)", "cc(normaliser=guarded,logit_scale=auto)"]
    slugs = [run_slug(n) for n in names]
    assert slugs == ["noel-param-m_alpha-1", "rescaled-square_k-1_M-1", "cc_normaliser-guarded_logit_scale-auto"]
    assert all(re.fullmatch(r"[A-Za-z0-9_.+-]+", s) for s in slugs) and run_slug("cc/naive") == "cc-naive"
    variants = {"ce": {"loss": "ce"}, "noel-param-m(alpha=1)": {"loss": "noel-param-m", "loss_options": {"alpha": 1.0}}}
    study = load_study(write_study(tmp_path, variants=variants))
    runs = plan(study, list(study.variants), resume=False)
    assert runs[1].dir == tmp_path / "runs" / "noel-param-m_alpha-1-seed0"
    assert study.run_config("noel-param-m(alpha=1)", 0).name == "tiny-noel-param-m_alpha-1-seed0"
    with pytest.raises(UsageError, match="share the run directory name 'a_b-1'"):
        load_study(write_study(tmp_path, variants={"ce": {"loss": "ce"}, "a(b=1)": {"loss": "ce"},
                                                   "a_b-1": {"loss": "ce"}}))
    with pytest.raises(UsageError, match="variant name 'a b'"):
        load_study(write_study(tmp_path, variants={"ce": {"loss": "ce"}, "a b": {"loss": "ce"}}))



def test_aggregates_with_unequal_runs_equal_rliable_called_directly():
    from rliable import library, metrics

    finals = final_rows(unequal_records(), EXPERTS)
    rows = {a["variant"]: a for a in aggregate_rows(finals, list(SEEDS), SEEDS, EXPERTS, "ce", 300)}
    scores = score_matrices(finals, list(SEEDS), SEEDS, list(EXPERTS))
    assert {v: m.shape for v, m in scores.items()} == {"ce": (3, 2), "noel-m": (2, 2), "cos": (2, 2)}
    assert [rows[v]["runs"] for v in SEEDS] == [3, 2, 2]
    np.random.seed(0)  # the sequence aggregate() runs under its seeded RNG
    iqm, iqm_ci = library.get_interval_estimates(scores, lambda x: np.array([metrics.aggregate_iqm(x)]), reps=300)
    pairs = {v: [scores[v], scores["ce"]] for v in ("noel-m", "cos")}
    poi, poi_ci = library.get_interval_estimates(
        pairs, lambda x, y: np.array([metrics.probability_of_improvement(x, y)]), reps=300)
    for v in SEEDS:
        assert rows[v]["iqm"] == pytest.approx(metrics.aggregate_iqm(scores[v]))
        assert (rows[v]["iqm"], rows[v]["iqm_lo"], rows[v]["iqm_hi"]) == pytest.approx(
            (iqm[v][0], iqm_ci[v][0, 0], iqm_ci[v][1, 0]))
    for v in ("noel-m", "cos"):  # each variant's own 2 runs against the reference's 3
        assert rows[v]["poi"] == pytest.approx(metrics.probability_of_improvement(scores[v], scores["ce"]))
        assert (rows[v]["poi_lo"], rows[v]["poi_hi"]) == pytest.approx((poi_ci[v][0, 0], poi_ci[v][1, 0]))
    assert math.isnan(rows["ce"]["poi"])


def test_update_ms_flows_from_a_tensorboard_scalar_into_the_tables(tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    logged = {}
    for seed, values in ((0, [8.0, 10.0]), (1, [20.0, 22.0]), (2, [30.0, 36.0])):
        run = tmp_path / f"ce-seed{seed}"
        writer = SummaryWriter(str(run / "tb"))
        for i, ms in enumerate(values):
            writer.add_scalar("perf/update_ms", ms, 2000 * (i + 1))
            writer.add_scalar("Pong/mimic/kl_heldout", 0.5, 2000 * (i + 1))
        writer.close()
        perf = read_perf(run)
        assert perf == {"update_ms": [[2000, values[0]], [4000, values[1]]]}
        assert list(read_series(run, ["Pong"])["Pong"]) == ["mimic/kl_heldout"]
        logged[seed] = record("ce", seed, {"Pong": 0.0}) | {"perf": perf}
    finals = final_rows(list(logged.values()), {"Pong": [19.3]})
    assert [r["update_ms"] for r in finals] == [9.0, 21.0, 33.0]  # each run's mean over its log intervals
    agg = aggregate_rows(finals, ["ce"], [0, 1, 2], {"Pong": [19.3]}, "ce", 200)
    assert agg[0]["update_ms"] == 21.0  # the median over the runs
    table = study_losses.variant_rows(finals, agg, ["ce"], [0, 1, 2], {"ce": ("ce", {})}, {"Pong": [19.3]}, "ce")
    assert table[0]["update_ms"] == 21.0 and math.isfinite(table[0]["update_ms"]) and table[0]["update_ms"] > 0
    # a run trained before perf/update_ms was logged: NaN, shown as —
    old = final_rows([{k: v for k, v in record("ce", 0, {"Pong": 0.0}).items() if k != "perf"}], {"Pong": [19.3]})
    assert math.isnan(old[0]["update_ms"])
    (tmp_path / "bare" / "tb").mkdir(parents=True)
    assert read_perf(tmp_path / "bare") == {}


def test_entropy_ratio_is_the_student_s_entropy_over_its_target_s_per_game_and_seed_then_the_mean():
    def with_entropies(rec: dict, student: float, target: float) -> dict:
        for series in rec["series"].values():  # logged at 200 and 400; the final evaluation is at 400
            series |= {"student_entropy": [[200, 9.0], [400, student]], "target_entropy": [[200, 9.0], [400, target]]}
        return rec

    records = [with_entropies(record("ce", 0, {"Pong": 0.0, "Breakout": 5.0}), 0.5, 1.0),
               with_entropies(record("ce", 1, {"Pong": 0.0, "Breakout": 5.0}), 0.9, 0.6),
               record("cos", 0, {"Pong": 0.0, "Breakout": 5.0}, entropies=False)]  # an older run: none logged
    finals = final_rows(records, EXPERTS)
    assert [(r["student_entropy"], r["target_entropy"]) for r in finals[:4]] == [(0.5, 1.0)] * 2 + [(0.9, 0.6)] * 2
    table = {r["variant"]: r for r in study_losses.variant_rows(
        finals, [], ["ce", "cos"], {"ce": [0, 1], "cos": [0]}, {"ce": ("ce", {}), "cos": ("cos", {})}, EXPERTS, "ce")}
    assert table["ce"]["entropy_ratio"] == pytest.approx((0.5 / 1.0 + 0.9 / 0.6) / 2)  # not 1.4 / 1.6
    assert math.isnan(table["cos"]["entropy_ratio"])
    assert "entropy ÷ expert's" in "\n".join(study_losses.variants_markdown(list(table.values()), list(EXPERTS), "ce"))


def test_a_reused_record_of_an_older_amn_gets_the_series_added_since_from_its_tensorboard(tmp_path):
    import json

    from torch.utils.tensorboard import SummaryWriter

    from amn.config import TrainConfig
    from amn.study import RECORD_NAME, SERIES_KEYS, Run, finished_record

    run = Run("ce", 0, False, TrainConfig(), tmp_path / "ce-seed0", state="done")
    writer = SummaryWriter(str(run.dir / "tb"))
    for step, h in ((2000, 1.25), (4000, 0.75)):  # float32-exact: TensorBoard keeps float32
        writer.add_scalar("Pong/student_entropy", h, step)
        writer.add_scalar("Pong/mimic/kl_heldout", 0.125, step)
    writer.close()
    old = record("ce", 0, {"Pong": 3.0})  # written before student_entropy was kept: no series_keys
    (run.dir / RECORD_NAME).write_text(json.dumps(old))
    got = finished_record(run)
    assert got["series"]["Pong"] == {"mimic/kl_heldout": [[2000, 0.125], [4000, 0.125]],
                                     "student_entropy": [[2000, 1.25], [4000, 0.75]]}
    assert got["evaluations"] == old["evaluations"] and got["series_keys"] == SERIES_KEYS
    assert json.loads((run.dir / RECORD_NAME).read_text())["series_keys"] == SERIES_KEYS  # rewritten once
    (run.dir / "tb" / next(iter(p.name for p in (run.dir / "tb").iterdir()))).unlink()
    assert finished_record(run)["series"] == got["series"]  # read from the record now, not the TensorBoard
    bare = Run("ce", 1, False, TrainConfig(), tmp_path / "ce-seed1", state="done")
    bare.dir.mkdir()
    (bare.dir / RECORD_NAME).write_text(json.dumps(record("ce", 1, {"Pong": 3.0})))
    assert finished_record(bare)["series"] == record("ce", 1, {"Pong": 3.0})["series"]  # no TensorBoard: as it is


def test_share_of_the_reference_s_distance_above_random_per_game():
    # Pong: random −20.7; ce seeds 10.0 and 0.0 (mean 5.0), cos 18.0 and −20.7 (mean −1.35)
    recs = [record("ce", 0, {"Pong": 10.0}), record("ce", 1, {"Pong": 0.0}),
            record("cos", 0, {"Pong": 18.0}), record("cos", 1, {"Pong": -20.7})]
    finals = final_rows(recs, {"Pong": [19.3]})
    rows = {r["variant"]: r for r in study_losses.variant_rows(finals, [], ["ce", "cos"], [0, 1],
                                                               {"ce": ("ce", {}), "cos": ("cos", {})},
                                                               {"Pong": [19.3]}, "ce")}
    assert rows["ce"]["vs_reference_Pong"] == pytest.approx(1.0)
    assert rows["cos"]["vs_reference_Pong"] == pytest.approx((-1.35 + 20.7) / (5.0 + 20.7))
    lines = study_losses.variants_markdown(list(rows.values()), ["Pong"], "ce")
    assert "| `cos` | 0.75 |" in lines
    # a reference at or below random has no distance to share: NaN, shown as —
    low = final_rows([record("ce", 0, {"Pong": -21.0}), record("cos", 0, {"Pong": 5.0})], {"Pong": [19.3]})
    rows = study_losses.variant_rows(low, [], ["ce", "cos"], [0], {"ce": ("ce", {}), "cos": ("cos", {})},
                                     {"Pong": [19.3]}, "ce")
    assert all(math.isnan(r["vs_reference_Pong"]) for r in rows)
    assert "| `cos` | — |" in study_losses.variants_markdown(rows, ["Pong"], "ce")


def test_variant_table_has_proper_from_the_registry_for_every_loss():
    from amn.losses import LOSSES

    names = sorted(LOSSES)
    records = [record(n, s, {"Pong": 5.0 * s, "Breakout": 10.0}) for n in names for s in (0, 1)]
    finals = final_rows(records, EXPERTS)
    seeds = {n: [0, 1] for n in names}
    agg = aggregate_rows(finals, names, seeds, EXPERTS, "ce", 200)
    rows = study_losses.variant_rows(finals, agg, names, seeds, {n: (n, {}) for n in names}, EXPERTS, "ce")
    assert {r["variant"]: r["proper"] for r in rows} == {n: LOSSES[n].proper for n in names}
    assert {r["variant"] for r in rows if not r["proper"]} >= {"cc", "noel-m", "squentropy", "cos"}
    assert {r["variant"] for r in rows if r["proper"]} == {"ce", "ce-brier", "mse-logits"}
    ce = next(r for r in rows if r["variant"] == "ce")
    # Pong returns 0 and 5 over the seeds, random -20.7, expert 19.3: % of expert is the mean of the two
    assert ce["pct_expert_Pong"] == pytest.approx(100 * np.mean([(0 + 20.7) / 40.0, (5 + 20.7) / 40.0]))
    assert ce["agreement_heldout"] == pytest.approx(0.55) and ce["kl_heldout"] == pytest.approx(1.5)
    per_seed = [np.mean([(5.0 * s + 20.7) / 40.0, (10.0 - 1.7) / 58.0]) for s in (0, 1)]
    assert ce["seed_spread"] == pytest.approx(np.std(per_seed, ddof=1))
    assert ce["seeds"] == "0 1" and ce["runs"] == 2 and math.isnan(ce["poi"])
    assert set(study_losses.variant_columns(list(EXPERTS))) == set(rows[0])
    lines = study_losses.variants_markdown(rows, list(EXPERTS), "ce")
    assert any(line.startswith("| `cc` | no | 2 (0 1) |") for line in lines)
    assert any(line.startswith("| `ce` | yes | 2 (0 1) |") and "(reference)" in line for line in lines)


def test_losses_yaml_lists_every_registered_loss_once_with_its_default_or_stated_options():
    from amn.losses import LOSSES

    study = load_study(REPO / "configs" / "studies" / "losses.yaml")
    cfgs = {v: study.run_config(v, 0) for v in study.variants}
    assert sorted(c.loss for c in cfgs.values()) == sorted(LOSSES) and len(LOSSES) == 15
    assert study.reference == "ce" and study.tuning_seeds == [] and study.seeds == [0, 1]
    assert study.seeds_of("ce") == [0, 1, 2] and study.expert_episodes == 10
    # the issue's seeds: >= 2 for every loss, 3 for ce and the three best (round two, chosen in the yaml)
    three = [v for v in study.variants if study.seeds_of(v) == [0, 1, 2]]
    assert sorted(three) == sorted(["ce", "cc(normaliser=guarded,logit_scale=auto)", "ce-brier(lam=1)",
                                    "squentropy-soft"])
    assert all(study.seeds_of(v) == [0, 1] for v in study.variants if v not in three)
    assert study.runs_dir == (REPO / "runs" / "studies" / "losses").resolve()  # Study resolves it (a link too)
    assert [g.game for g in cfgs["ce"].games] == ["Pong", "Breakout", "SpaceInvaders", "Atlantis"]
    assert (cfgs["ce"].total_agent_steps, cfgs["ce"].eval_every_agent_steps, cfgs["ce"].eval_episodes) == \
        (240_000, 60_000, 4)
    # no extra CC normaliser pass in a non-CC loss's update (it would inflate its ms per update)
    assert not any(cfg.normaliser_diagnostics for cfg in cfgs.values())
    for v, cfg in cfgs.items():
        # the name is the loss, with its options when it states any: loss(key=value,...)
        m = re.fullmatch(r"([a-z-]+)(?:\((.*)\))?", v)
        assert m and m.group(1) == cfg.loss, v
        stated = dict(kv.split("=") for kv in m.group(2).split(",")) if m.group(2) else {}
        assert set(stated) == set(cfg.loss_kwargs), v
        defaults = {k: p.default for k, p in inspect.signature(LOSSES[cfg.loss].__init__).parameters.items()
                    if k != "self"}
        for key, value in cfg.loss_kwargs.items():
            assert str(value) == stated[key] or float(value) == float(stated[key]), (v, key)
            # the paper's defaults are the class defaults, but for cc's logit_scale, the fix found on Pong
            assert value == defaults[key] or (cfg.loss, key, value) == ("cc", "logit_scale", "auto"), (v, key)
    assert cfgs["cc(normaliser=guarded,logit_scale=auto)"].loss_kwargs == {"normaliser": "guarded",
                                                                          "logit_scale": "auto"}


def test_per_game_intervals_are_rliable_s_stratified_bootstrap_of_the_mean_over_seeds():
    from rliable import library

    scores = {"a": np.array([[0.2, 1.0], [0.4, 0.8]]), "b": np.array([[0.5, 0.5], [0.5, 0.5], [0.5, 0.5]])}
    out = study_losses.per_game_intervals(scores, 200, seed=4)
    np.random.seed(4)
    means, cis = library.get_interval_estimates(scores, lambda x: np.mean(x, axis=0), reps=200)
    for v in scores:
        assert np.allclose(out[v][0], scores[v].mean(0)) and np.allclose(out[v][1], cis[v])
    assert np.allclose(out["b"][1], 0.5)  # identical seeds: a zero-width CI
    taus, profiles, pcis = study_losses.performance_profile(scores, 200)
    assert taus[0] == 0.0 and taus[-1] == 1.25 and profiles["b"][0] == 1.0 and pcis["a"].shape == (2, len(taus))


def test_probability_of_improvement_with_unequal_runs_by_hand():
    # one game; 2 runs of x against 3 of the reference: of the 6 pairs, 0.6 beats all three, 0.4 beats 0.3 only
    from amn.study_report import aggregate

    out = aggregate({"ref": np.array([[0.5], [0.5], [0.3]]), "x": np.array([[0.6], [0.4]])}, "ref", reps=200)
    assert out["x"]["poi"] == pytest.approx(4 / 6)
    # with 2 or 3 runs a quarter of them rounds down to none: the IQM is the plain mean
    assert out["ref"]["iqm"] == pytest.approx(1.3 / 3) and out["x"]["iqm"] == pytest.approx(0.5)
