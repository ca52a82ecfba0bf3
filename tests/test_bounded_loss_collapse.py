"""scripts/bounded_loss_collapse.py: the docs' claim that circle collapses where cross-entropy does not.

The losses study found parabolic, circle and cos students on one action per game; the script shows
the same on a small synthetic problem. This runs its first seed at the trainer's Adam settings.
"""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_circle_ends_on_one_action_where_cross_entropy_follows_the_teacher(tmp_path):
    out = tmp_path / "collapse.csv"
    done = subprocess.run([sys.executable, str(ROOT / "scripts/bounded_loss_collapse.py"), "--seeds", "1",
                           "--losses", "ce", "circle", "--optimisers", "trainer", "--csv", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    teacher_top = float(done.stdout.split("most common argmax on ")[1].split()[0])  # ~0.21: no action dominates
    rows = {r["loss"]: {k: float(v) for k, v in r.items() if k not in ("loss", "optimiser")}
            for r in csv.DictReader(out.open())}
    assert set(rows) == {"ce", "circle"}
    assert rows["ce"]["agreement"] > 0.9 and rows["ce"]["top_action_share"] < teacher_top + 0.05
    # Collapsed: circle's student picks its favourite action on most states, whatever the teacher says.
    assert rows["circle"]["top_action_share"] > 2 * teacher_top
    assert rows["circle"]["agreement"] < rows["ce"]["agreement"] - 0.3
