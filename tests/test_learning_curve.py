"""scripts/expert_learning_curve.py on real TensorBoard event files of a paused, resumed run."""

from __future__ import annotations

import csv
import importlib.util
import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def load_script():
    spec = importlib.util.spec_from_file_location("expert_learning_curve", REPO / "scripts" / "expert_learning_curve.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_process(run_dir: Path, points: list[tuple[int, float, float]]) -> None:
    """One training process: its own events file, as SB3 writes one per (re)start."""
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(str(run_dir / "tb" / "run_0"), filename_suffix=f".{points[0][1]:.0f}")
    for step, wall, value in points:
        writer.add_scalar("rollout/ep_rew_mean", value, step, walltime=wall)
    writer.close()


def test_resume_replaces_repeated_steps_and_pauses_are_not_training_time(tmp_path):
    t0 = 1_000_000.0
    # first process: steps 0..400 every 10 s, with a 30-minute pause (SIGSTOP) before step 200
    write_process(tmp_path, [(0, t0, 1.0), (100, t0 + 10, 2.0), (200, t0 + 1810, 3.0),
                             (300, t0 + 1820, 4.0), (400, t0 + 1830, 5.0)])
    # interrupted; resumed an hour later from the checkpoint at step 250
    write_process(tmp_path, [(250, t0 + 5400, 6.0), (350, t0 + 5410, 7.0), (450, t0 + 5420, 8.0)])
    (tmp_path / "run.json").write_text(json.dumps({"game": "Pong", "algo": "ppo", "seed": 0}))

    script = load_script()
    curve = script.read_curve(tmp_path)
    assert [s for s, _, _ in curve] == [0, 100, 200, 250, 350, 450]
    assert [v for _, _, v in curve] == [1.0, 2.0, 3.0, 6.0, 7.0, 8.0]
    assert [m * 60 for _, m, _ in curve] == pytest.approx([0, 10, 10, 10, 20, 30])

    assert script.main([str(tmp_path), "--out", str(tmp_path / "out" / "curve")]) == 0
    with open(tmp_path / "out" / "curve.csv") as f:
        rows = list(csv.DictReader(f))
    assert rows[-1] == {"agent_steps": "450", "training_minutes": "0.50", "ep_rew_mean": "8.00"}
    assert (tmp_path / "out" / "curve.png").stat().st_size > 0


def test_run_without_scores_says_so(tmp_path):
    (tmp_path / "tb" / "run_0").mkdir(parents=True)
    with pytest.raises(SystemExit, match="no rollout/ep_rew_mean"):
        load_script().read_curve(tmp_path)
