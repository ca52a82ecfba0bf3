"""Issue #20's study of every student loss, its figures: each variant in one colour in every figure,
the report step's figures with per-variant seeds, and the sharpness plot. Hand-made records, no training."""

from __future__ import annotations

import pytest

from amn import study_losses, study_plots
from amn.study_config import load_study
from amn.study_report import aggregate_rows, final_rows
from study_records import EXPERTS, SEEDS, record, unequal_records, write_study


# -- figures ---------------------------------------------------------------------------------


def _variant_colours_drawn(fig, variants: list[str]) -> dict[str, set[tuple]]:
    """Per variant, the colours of the lines and bars labelled with its name in ``fig``."""
    from matplotlib.colors import to_rgba

    out: dict[str, set[tuple]] = {}
    for ax in fig.axes:
        for line in ax.get_lines():
            if line.get_label() in variants:
                out.setdefault(line.get_label(), set()).add(to_rgba(line.get_color()))
        for container in ax.containers:
            if container.get_label() in variants:
                out.setdefault(container.get_label(), set()).update(
                    to_rgba(p.get_facecolor()) for p in container.patches)
    return out


def test_every_figure_draws_a_variant_in_the_same_colour_and_the_pngs_decode(tmp_path, monkeypatch):
    import matplotlib.image as mpimg

    from amn.study_report import curve_rows

    variants = ["ce", "noel-m", "cos"]
    colours = study_plots.variant_colours(["extra", *variants])  # the config's order, one not reported
    assert len(set(study_plots.variant_colours([f"v{i}" for i in range(20)]).values())) == 20
    # noel-m logs no normaliser rows: cos must keep its own colour there (it took noel-m's before)
    records = [r | {"series": {g: {k: x for k, x in s.items() if k != "loss_diag/rows"}
                               for g, s in r["series"].items()}} if r["variant"] == "noel-m" else r
               for r in unequal_records()]
    figures, real_save = [], study_plots._save
    monkeypatch.setattr(study_plots, "_save", lambda fig, path: (figures.append(fig), real_save(fig, path))[1])
    curves = [row for r in records for row in curve_rows(r)]
    study_plots.plot_returns(curves, variants, EXPERTS, tmp_path / "returns.png", colours)
    study_plots.plot_normaliser(curves, variants, tmp_path / "normaliser.png", colours)
    study_plots.plot_mimicry(records, variants, list(EXPERTS), tmp_path / "mimicry.png", colours)
    finals = final_rows(records, EXPERTS)
    agg = aggregate_rows(finals, variants, SEEDS, EXPERTS, "ce", 200)
    section, written = study_losses.write_variant_outputs(
        tmp_path, finals, agg, variants, SEEDS, {v: (v, {}) for v in variants}, EXPERTS, "ce", 200, colours)
    assert [p.name for p in written] == ["profile.png", "game_bars.png", "sharpness.png"]
    assert section[0] == "## Per variant (loss)" and len(figures) == 6
    for fig in figures:
        drawn = _variant_colours_drawn(fig, variants)
        assert drawn, fig
        for v, seen in drawn.items():
            assert seen == {colours[v]}, (v, seen)
    assert set(_variant_colours_drawn(figures[1], variants)) == {"ce", "cos"}  # noel-m has nothing to draw there
    for name in ("returns", "normaliser", "mimicry", "profile", "game_bars", "sharpness"):
        image = mpimg.imread(tmp_path / f"{name}.png")
        assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100
    assert (tmp_path / "variants.csv").read_text().splitlines()[0].split(",") == \
        study_losses.variant_columns(list(EXPERTS))


def test_the_report_step_writes_the_variant_table_and_figures_with_per_variant_seeds(tmp_path):
    import csv

    import matplotlib.image as mpimg

    from amn.study import write_report
    from amn.study_report import AGGREGATE_COLUMNS, FINAL_COLUMNS

    study = load_study(write_study(tmp_path))
    variants = list(study.variants)
    records = [record(v, s, {"Pong": float(s - v.count("o"))}, update_ms=[5.0 + s])
               for v in variants for s in study.seeds_of(v)]
    text = write_report(study, variants, records, {"Pong": [19.3]}, study.run_config("ce", 0))
    out = tmp_path / "out"
    with (out / "variants.csv").open() as f:
        table = {r["variant"]: r for r in csv.DictReader(f)}
    assert [table[v]["seeds"] for v in variants] == ["0 1 2", "0 1", "1 5"]
    assert [table[v]["proper"] for v in variants] == ["True", "False", "False"]
    assert table["noel-m"]["update_ms"] == "5.5" and table["cos"]["update_ms"] == "8.0"
    with (out / "aggregate.csv").open() as f:
        agg = list(csv.DictReader(f))
    assert list(agg[0]) == AGGREGATE_COLUMNS and [a["runs"] for a in agg] == ["3", "2", "2"]
    with (out / "final.csv").open() as f:
        assert next(csv.reader(f)) == FINAL_COLUMNS
    for name in ("profile.png", "game_bars.png", "sharpness.png", "returns.png"):
        assert mpimg.imread(out / name).size > 0 and f"]({name})" in text
    assert "seeds [0, 1] (`ce`: 3 seeds [0, 1, 2]; `cos`: 2 seeds [1, 5])" in text
    assert "## Per variant (loss)" in text and "| ms / update |" in text
    assert text == (out / "summary.md").read_text()


def test_sharpness_plot_puts_each_loss_at_its_entropy_ratio_and_iqm_and_shares_a_label_at_one_point(tmp_path):
    import matplotlib.image as mpimg

    def row(v: str, ratio: float, iqm: float, proper: bool) -> dict:
        return {"variant": v, "entropy_ratio": ratio, "iqm": iqm, "iqm_lo": iqm - 0.1, "iqm_hi": iqm + 0.1,
                "proper": proper}

    rows = [row("ce", 1.02, 0.8, True), row("squentropy", 0.6, 0.5, False), row("circle", 0.0, -0.01, False),
            row("cos", 0.0, -0.01, False), row("noel-m", float("nan"), 0.2, False)]  # no entropy logged: left out
    colours = study_plots.variant_colours([r["variant"] for r in rows])
    figures, real_save = [], study_plots._save
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(study_plots, "_save", lambda fig, path: (figures.append(fig), real_save(fig, path))[1])
        assert study_plots.plot_sharpness(rows, colours, "ce", tmp_path / "sharpness.png") == tmp_path / "sharpness.png"
    ax = figures[0].axes[0]
    points = {line.get_label(): (line.get_xdata()[0], line.get_ydata()[0], line.get_marker())
              for line in ax.get_lines() if line.get_label() in colours}
    assert points == {"ce": (1.02, 0.8, "o"), "squentropy": (0.6, 0.5, "^"), "circle": (0.0, -0.01, "^"),
                      "cos": (0.0, -0.01, "^")}
    assert sorted(t.get_text() for t in ax.texts) == ["ce", "circle, cos", "squentropy"]
    assert mpimg.imread(tmp_path / "sharpness.png").shape[0] > 100
    assert study_plots.plot_sharpness(rows[-1:], colours, "ce", tmp_path / "none.png") is None
    assert not (tmp_path / "none.png").exists()


def test_sharpness_labels_of_nearby_points_do_not_overlap(tmp_path):
    """ce and mse-logits sat 0.01 apart in the losses study: their names are moved apart, not printed over each other."""
    rows = [{"variant": v, "entropy_ratio": x, "iqm": y, "iqm_lo": y - 0.08, "iqm_hi": y + 0.08, "proper": True}
            for v, x, y in [("ce", 1.03, 0.743), ("mse-logits", 1.04, 0.739), ("squentropy-soft", 1.05, 0.745),
                            ("cc", 0.96, 0.84), ("circle", 0.0, -0.01)]]
    figures, real_save = [], study_plots._save
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(study_plots, "_save", lambda fig, path: (figures.append(fig), real_save(fig, path))[1])
        study_plots.plot_sharpness(rows, study_plots.variant_colours([r["variant"] for r in rows]), "ce",
                                   tmp_path / "sharpness.png")
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    fig = figures[0]
    renderer = FigureCanvasAgg(fig).get_renderer()  # _save closed the figure, which took its canvas
    boxes = {t.get_text(): t.get_window_extent(renderer) for t in fig.axes[0].texts}
    assert set(boxes) == {r["variant"] for r in rows}
    names = sorted(boxes)
    overlapping = [(a, b) for i, a in enumerate(names) for b in names[i + 1:] if boxes[a].overlaps(boxes[b])]
    assert not overlapping
