"""amn/checkpoint.py: plain-tensor checkpoints, loaded with weights_only=True (no ALE here)."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from amn.checkpoint import (FORMAT_VERSION, load_checkpoint, restore_rng, rng_state, save_checkpoint,
                            upgrade_checkpoint)
from amn.config import TrainConfig
from amn.errors import UsageError
from amn.learner import build_student

REPO = Path(__file__).resolve().parents[1]


class RunsAShellCommand:
    """What a hostile checkpoint could hold: unpickling it calls os.system."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


class SomeObject:
    """A harmless custom class: still not a plain tensor or Python value."""


def payload() -> dict:
    """What the trainer saves, for a tiny config."""
    cfg = TrainConfig()
    student, projections, params, optimizer = build_student(cfg)
    params[0].grad = torch.ones_like(params[0])
    optimizer.step()  # some optimiser state: step, exp_avg, exp_avg_sq
    return {"config": cfg.to_dict(), "student": student.state_dict(), "projections": projections.state_dict(),
            "optimizer": optimizer.state_dict(), "counters": {"agent_steps": 7, "updates": 1},
            "rng": rng_state(np.random.default_rng(3))}


def test_the_trainers_payload_loads_weights_only_and_the_rng_streams_continue(tmp_path):
    path = tmp_path / "checkpoint.pt"
    rng = np.random.default_rng(5)
    random.seed(11)
    torch.manual_seed(13)
    save_checkpoint(path, {**payload(), "rng": rng_state(rng)})
    expected = (rng.random(3).tolist(), torch.rand(3).tolist(), [random.random() for _ in range(3)])

    torch.load(path, weights_only=True)  # the whole payload, nothing but plain values
    ckpt = load_checkpoint(path)
    assert ckpt["format_version"] == FORMAT_VERSION and ckpt["counters"]["agent_steps"] == 7
    assert isinstance(ckpt["rng"]["python"], list)
    fresh = np.random.default_rng(0)
    restore_rng(fresh, ckpt["rng"])
    assert (fresh.random(3).tolist(), torch.rand(3).tolist(), [random.random() for _ in range(3)]) == expected


@pytest.mark.parametrize("hostile", [True, False], ids=["os.system", "custom-class"])
def test_a_checkpoint_holding_a_python_object_is_refused_without_running_it(tmp_path, hostile):
    path, marker = tmp_path / "checkpoint.pt", tmp_path / "code-ran"
    obj = RunsAShellCommand(marker) if hostile else SomeObject()
    # format_version 1 or 2: either way the object must not be unpickled.
    for version in (1, FORMAT_VERSION):
        torch.save({**payload(), "format_version": version, "extra": obj}, path)
        with pytest.raises(UsageError) as err:
            load_checkpoint(path)
        message = str(err.value)
        assert "\n" not in message and str(path) in message and "not a plain-tensor amn checkpoint" in message
        assert ("posix.system" if hostile else "SomeObject") in message
        with pytest.raises(UsageError, match="not a plain-tensor amn checkpoint"):
            upgrade_checkpoint(path)  # converting loads it the same way
        assert not marker.exists(), "loading the checkpoint ran code stored in it"


def test_save_refuses_what_weights_only_loading_would_refuse(tmp_path):
    path = tmp_path / "checkpoint.pt"
    with pytest.raises(TypeError, match=r"\['config'\]\['x'\] is a SomeObject"):
        save_checkpoint(path, {"student": {}, "config": {"x": SomeObject()}})
    assert not path.exists() and not path.with_name("checkpoint.pt.tmp").exists()


def convert(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "amn.checkpoint", str(path)], cwd=REPO, capture_output=True,
                          text=True)


def test_format_1_checkpoint_says_how_to_convert_and_the_conversion_loads(tmp_path):
    path = tmp_path / "checkpoint.pt"
    old = payload()
    random.seed(21)
    old["rng"]["python"] = random.getstate()  # format 1: Python's RNG state as its (version, ints, gauss) tuple
    old["rng_per_rank"] = [old["rng"], dict(old["rng"])]
    torch.save({"format_version": 1, **old}, path)

    with pytest.raises(UsageError) as err:
        load_checkpoint(tmp_path)
    message = str(err.value)
    assert "\n" not in message and str(path) in message and "format 1" in message
    assert f"python -m amn.checkpoint {path}" in message

    done = convert(path)
    assert done.returncode == 0, done.stderr
    ckpt = load_checkpoint(path)
    assert ckpt["format_version"] == FORMAT_VERSION and ckpt["counters"] == old["counters"]
    restore_rng(np.random.default_rng(0), ckpt["rng_per_rank"][1])
    expected = random.random()
    restore_rng(np.random.default_rng(0), ckpt["rng"])
    assert random.random() == expected

    again = convert(path)  # already converted: nothing to do, and it says so
    assert again.returncode == 1 and "not an amn checkpoint of format 1" in again.stderr


def test_corrupt_and_newer_checkpoints_say_so(tmp_path):
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, payload())
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(UsageError, match="corrupt or truncated"):
        load_checkpoint(path)
    torch.save({**payload(), "format_version": FORMAT_VERSION + 1}, path)
    with pytest.raises(UsageError, match="newer than this amn"):
        load_checkpoint(path)
