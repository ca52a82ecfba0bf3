"""``amn plot``: per-game learning curves of several runs from their TensorBoard events.

One tiny real run (configs/smoke.yaml, a few hundred agent steps, with an evaluation and the
mimicry numbers) and one run written by hand with ``SummaryWriter`` (another game, no mimicry
tags, an ``expert_scores.json`` cache) are overlaid.
"""

from __future__ import annotations

import json

import pytest
import yaml

from amn.cli import main
from amn.config import load_config

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    from pathlib import Path

    from torch.utils.tensorboard import SummaryWriter

    from amn.trainer import train

    base = tmp_path_factory.mktemp("plot")
    smoke = Path(__file__).resolve().parents[1] / "configs" / "smoke.yaml"
    real = base / "real"
    # max_frames=1000: a capped training game ends at 250 agent steps, so episode_return is logged.
    cfg = load_config(smoke, ["total_agent_steps=400", "learning_starts_per_game=100", "replay_capacity_per_game=1000",
                              "log_every_agent_steps=100", "eval_every_agent_steps=400", "eval_episodes=1",
                              "eval_max_frames=400", "max_frames=1000", "heldout_states_per_game=16",
                              "mimicry_every_agent_steps=200", "checkpoint_minutes=10"])
    train(cfg, real, progress=False, evaluate=False)

    hand = base / "hand"
    (hand / "tb").mkdir(parents=True)
    (hand / "config.yaml").write_text(yaml.safe_dump(
        {"games": [{"game": "Pong", "expert": "pong"}, {"game": "Breakout", "expert": "breakout"}]}))
    protocol = {"episodes": 3, "epsilon": 0.05, "expert": "pong", "fire_after_life_loss": False,
                "game": "Pong", "max_frames": 108_000, "seed": 0, "sticky": False}
    capped = dict(protocol, episodes=5, max_frames=4000)  # more games, but capped: the full-game entry wins
    (hand / "expert_scores.json").write_text(json.dumps({json.dumps(protocol, sort_keys=True): [19.0, 20.0, 21.0],
                                                         json.dumps(capped, sort_keys=True): [1.0] * 5}))
    writer = SummaryWriter(str(hand / "tb"))
    for step in range(0, 1000, 100):
        writer.add_scalar("Pong/episode_return", -21 + step / 50, step)
        writer.add_scalar("Pong/policy_regression_loss", 1.7 - step / 1000, step)
        writer.add_scalar("Breakout/episode_return", step / 100, step)
    writer.add_scalar("Pong/eval_return", -5.0, 1000)
    writer.close()
    return real, hand


def test_runs_are_overlaid_per_game_with_the_expert_level(runs, tmp_path):
    from amn.plot import plot_runs
    from experts.shipped import SHIPPED_DIR

    real, hand = runs
    out = tmp_path / "curves.png"
    report = plot_runs([real, hand], out)
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 30_000
    assert not list(tmp_path.glob("*.tmp"))  # written via a temporary file, then renamed
    assert report["games"] == ["Pong", "Breakout"]
    assert report["panels"] == ["episode return", "evaluation return", "policy-regression loss",
                                "agreement with expert"]
    drawn = {(s["run"], s["tag"]) for s in report["series"]}
    for tag in ["Pong/episode_return", "Pong/eval_return", "Pong/policy_regression_loss",
                "Pong/mimic/agreement_train", "Pong/mimic/agreement_heldout"]:
        assert ("real", tag) in drawn, tag
    assert {("hand", "Pong/episode_return"), ("hand", "Pong/eval_return"), ("hand", "Breakout/episode_return")} <= drawn
    assert ("hand", "Pong/mimic/agreement_train") not in drawn
    assert {"run": "hand", "game": "Pong", "tag": "Pong/mimic/agreement_train"} in report["missing"]
    assert all(s["points"] > 0 for s in report["series"])

    levels = {(e["run"], e["game"]): e for e in report["expert_levels"]}
    assert levels[("hand", "Pong")]["value"] == 20.0 and "3 games" in levels[("hand", "Pong")]["source"]
    shipped = json.loads((SHIPPED_DIR / "breakout.json").read_text())["score"]["mean"]
    assert levels[("hand", "Breakout")]["value"] == pytest.approx(shipped)
    assert "shipped metadata" in levels[("real", "Pong")]["source"]  # the real run has no cache


def test_cli_prints_what_it_drew_and_fails_in_one_line(runs, tmp_path, capsys):
    real, hand = runs
    out = tmp_path / "c.png"
    assert main(["plot", str(real), str(hand), "-o", str(out), "--label", "tiny", "--label", "by-hand"]) == 0
    printed = capsys.readouterr().out
    assert "tiny: Pong/mimic/agreement_train" in printed and "by-hand: no Pong/mimic/agreement_train" in printed
    assert "Pong: expert level 20.0" in printed and f"wrote {out}" in printed and out.stat().st_size > 30_000

    (tmp_path / "empty").mkdir()
    assert main(["plot", str(tmp_path / "empty"), "-o", str(tmp_path / "x.png")]) == 2
    assert "no TensorBoard events" in capsys.readouterr().err
    assert main(["plot", str(real), "-o", str(tmp_path / "x.pdf")]) == 2
    assert "writes a PNG" in capsys.readouterr().err
    assert not (tmp_path / "x.png").exists()
