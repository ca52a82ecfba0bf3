"""scripts/bench_losses.py on a two-loss study of Pong (real ALE states, the shipped expert): a row per loss."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def test_bench_losses_times_every_variant_against_the_reference(tmp_path):
    study = tmp_path / "two.yaml"
    study.write_text(f"name: two\nbase: {ROOT / 'configs/default.yaml'}\n"
                     "set: {games: [{game: Pong, expert: pong}], eval_every_agent_steps: 1000}\n"
                     "seeds: [0]\nreference: ce\nvariants:\n  ce: {loss: ce}\n  mse-logits: {loss: mse-logits}\n"
                     f"runs_dir: {tmp_path / 'runs'}\nout: {tmp_path / 'out'}\n")
    out = tmp_path / "update_ms.csv"
    done = subprocess.run([sys.executable, str(ROOT / "scripts/bench_losses.py"), "--config", str(study), "--rounds", "2",
                           "--updates", "2", "--csv", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    rows = list(csv.DictReader(out.open()))
    assert [r["variant"] for r in rows] == ["ce", "mse-logits"]
    assert float(rows[0]["vs_ce"]) == 1.0
    for r in rows:
        assert 0 < float(r["round_min_ms"]) <= float(r["update_ms"]) <= float(r["round_max_ms"])
    assert "1 games x 8 rows per update" in done.stdout and "mse-logits" in done.stdout
    assert not out.with_suffix(".tmp").exists()
