"""Hand-made study run records for the losses-study tests (tests/test_study_losses*.py): no training."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]
SET = {"games": [{"game": "Pong", "expert": "pong"}], "total_agent_steps": 800, "eval_every_agent_steps": 400,
       "eval_episodes": 1}


def write_study(tmp_path: Path, **changes) -> Path:
    """A study file in ``tmp_path`` (absolute paths, nothing trained); ``changes`` replace top-level keys."""
    data = {"name": "tiny", "base": str(REPO / "configs" / "default.yaml"), "set": dict(SET), "seeds": [0, 1],
            "bootstrap_reps": 200, "out": str(tmp_path / "out"), "runs_dir": str(tmp_path / "runs"),
            "variants": {"ce": {"loss": "ce", "seeds": [0, 1, 2]}, "noel-m": {"loss": "noel-m"},
                         "cos": {"loss": "cos", "seeds": [1, 5]}}}
    data.update(changes)
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump({k: v for k, v in data.items() if v is not None}, sort_keys=False))
    return path


EXPERTS = {"Pong": [19.3], "Breakout": [59.7]}  # random: Pong -20.7, Breakout 1.7 (amn.evaluation.HUMAN_RANDOM)


def record(variant: str, seed: int, returns: dict[str, float], *, update_ms: list[float] = (),
           diag_rows: bool = True, failure: dict | None = None, entropies: bool = True) -> dict:
    """A hand-made run record: one evaluation at 400 agent steps per game, held-out numbers at 400."""
    evaluations = [] if failure else [{"agent_steps": 400, "game": g, "return_mean": r, "return_std": 0.0,
                                       "episodes": 1, "returns": [r]} for g, r in returns.items()]
    series = {g: {**({"loss_diag/rows": [[200, 16.0], [400, 16.0]]} if diag_rows else {}),
                  "mimic/agreement_heldout": [[400, 0.5 + 0.1 * seed]], "mimic/kl_heldout": [[400, 1.0 + seed]],
                  **({"student_entropy": [[400, 0.8 + 0.1 * seed]], "target_entropy": [[400, 1.0]]} if entropies else {})}
              for g in returns}
    perf = {"update_ms": [[200 * (i + 1), ms] for i, ms in enumerate(update_ms)]} if update_ms else {}
    return {"variant": variant, "seed": seed, "tuning": False, "games": list(returns),
            "status": "nonfinite" if failure else "ok", "agent_steps": failure["step"] if failure else 400,
            "failure": failure, "config": {}, "evaluations": evaluations, "series": series, "perf": perf}


SEEDS = {"ce": [0, 1, 2], "noel-m": [0, 1], "cos": [0, 1]}


def unequal_records() -> list[dict]:
    rng = np.random.default_rng(3)
    return [record(v, s, {"Pong": float(rng.uniform(-20, 19)), "Breakout": float(rng.uniform(2, 60))},
                   update_ms=[10.0 + s, 12.0 + s]) for v, seeds in SEEDS.items() for s in seeds]
