"""``--resume`` against a real two-game run (ALE, the shipped Pong and Breakout experts, tiny budgets):
structural config keys are checked, the config's optimiser settings win, evaluations.jsonl is cut back."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
import torch

from amn.config import load_config
from amn.errors import UsageError
from amn.resume import cut_evaluations, load_run_config
from amn.trainer import train

REPO = Path(__file__).resolve().parents[1]
SMOKE = REPO / "configs" / "smoke.yaml"
TWO_GAMES = "games=[{game: Pong, expert: pong}, {game: Breakout, expert: breakout}]"
BASE_STEPS = 400  # 200 per game: updates start at 100 per game


@pytest.fixture(scope="module")
def base_run(tmp_path_factory) -> Path:
    """A finished two-game run with a checkpoint at BASE_STEPS; tests resume copies of it."""
    run = tmp_path_factory.mktemp("base") / "run"
    cfg = load_config(SMOKE, [TWO_GAMES, "learning_starts_per_game=100", "replay_capacity_per_game=1000",
                              "log_every_agent_steps=100", f"total_agent_steps={BASE_STEPS}"])
    train(cfg, run, progress=False, evaluate=False)
    return run


@pytest.fixture
def run(base_run, tmp_path) -> Path:
    shutil.copytree(base_run, tmp_path / "run")
    return tmp_path / "run"


def ckpt(run: Path) -> dict:
    return torch.load(run / "checkpoint.pt", weights_only=True)


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.slow
def test_the_base_run_checkpoint_loads_weights_only(base_run):
    assert ckpt(base_run)["counters"]["agent_steps"] == BASE_STEPS and ckpt(base_run)["counters"]["updates"] > 0


@pytest.mark.slow
@pytest.mark.parametrize("override, key, old, new", [
    ("games=[{game: Breakout, expert: breakout}, {game: Pong, expert: pong}]", "games",
     "[Pong:pong, Breakout:breakout]", "[Breakout:breakout, Pong:pong]"),
    ("games=[{game: Pong, expert: pong}, {game: Breakout, expert: space_invaders}]", "games",
     "Breakout:breakout]", "Breakout:space_invaders]"),
    ("per_game_heads=true", "per_game_heads", "false", "true"),
    ("feature_regression=true", "feature_regression", "false", "true"),
], ids=["games-reordered", "expert-swapped", "per_game_heads", "feature_regression"])
def test_resume_refuses_a_structural_config_change_and_leaves_the_run_as_it_was(run, override, key, old, new):
    before = {name: digest(run / name) for name in ("checkpoint.pt", "config.yaml")}
    cfg = load_run_config(run, [override, f"total_agent_steps={BASE_STEPS + 20}"])
    with pytest.raises(UsageError) as err:
        train(cfg, run, resume=True, progress=False, evaluate=False)
    message = str(err.value)
    assert "\n" not in message
    assert f"{key} changed from" in message and old in message.split(" to ")[0] and new in message
    assert "--run-dir" in message  # what to do
    assert {name: digest(run / name) for name in before} == before


@pytest.mark.slow
def test_resume_applies_the_configs_lr_betas_and_eps_to_the_optimiser(run, capsys):
    saved = ckpt(run)["optimizer"]["param_groups"][0]
    assert (saved["lr"], tuple(saved["betas"]), saved["eps"]) == (2.5e-4, (0.9, 0.999), 3e-4)
    cfg = load_run_config(run, ["lr=1e-3", "adam_betas=[0.5, 0.9]", "adam_eps=1e-5",
                                f"total_agent_steps={BASE_STEPS + 4}"])
    capsys.readouterr()
    train(cfg, run, resume=True, progress=False, evaluate=False)
    err = capsys.readouterr().err
    groups = ckpt(run)["optimizer"]["param_groups"]
    assert all((g["lr"], tuple(g["betas"]), g["eps"]) == (1e-3, (0.5, 0.9), 1e-5) for g in groups)
    line = [x for x in err.splitlines() if "overrides the checkpoint's optimiser" in x]
    assert line == ["resume: the config overrides the checkpoint's optimiser: "
                    "lr 0.00025 -> 0.001, betas [0.9, 0.999] -> [0.5, 0.9], eps 0.0003 -> 1e-05"], err

    # The same config again: nothing to override, nothing printed.
    train(load_run_config(run, [f"total_agent_steps={BASE_STEPS + 8}"]), run, resume=True, progress=False,
          evaluate=False)
    assert "overrides the checkpoint's optimiser" not in capsys.readouterr().err
    assert ckpt(run)["optimizer"]["param_groups"][0]["lr"] == 1e-3


@pytest.mark.slow
def test_resume_cuts_evaluations_jsonl_back_to_the_checkpoint(run, capsys):
    """The run evaluated after its last checkpoint, then died: those rows are evaluated again after the resume."""
    def row(step: int, game: str) -> str:
        return json.dumps({"agent_steps": step, "frames": 4 * step, "game": game, "return_mean": 1.0,
                           "return_std": 0.0, "episodes": 1, "returns": [1.0]})

    rows = [row(s, g) for s in (200, BASE_STEPS, BASE_STEPS + 200) for g in ("Pong", "Breakout")]
    jsonl = run / "evaluations.jsonl"
    jsonl.write_text("\n".join(rows) + "\n" + '{"agent_steps": 8')  # the last append torn by kill -9
    train(load_run_config(run, [f"total_agent_steps={BASE_STEPS + 4}"]), run, resume=True, progress=False,
          evaluate=False)
    assert jsonl.read_text().splitlines() == rows[:4]
    assert "dropped 3 row(s)" in capsys.readouterr().err
    assert not (run / "evaluations.jsonl.tmp").exists()


def test_cut_evaluations_refuses_a_broken_line_in_the_middle(tmp_path):
    jsonl = tmp_path / "evaluations.jsonl"
    text = '{"agent_steps": 10}\nnot json\n{"agent_steps": 30}\n'
    jsonl.write_text(text)
    with pytest.raises(UsageError, match=r"evaluations.jsonl:2 is not an evaluation row"):
        cut_evaluations(jsonl, 20)
    assert jsonl.read_text() == text
    assert cut_evaluations(tmp_path / "missing.jsonl", 20) == 0
