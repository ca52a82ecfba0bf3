"""``amn export-student``: the student as an SB3 DQN zip that plays without amn.

One tiny real student (configs/smoke.yaml, a few hundred agent steps) is exported once; the tests
check the weights map exactly, that a fresh Python that cannot import amn loads it with
``DQN.load`` and plays Pong through the SB3 pipeline the zip declares, that its greedy actions
are the student's on those observations, that its scores match amn's own play of the same student
within noise (Welch, 1 %), and that another pipeline warns or is refused.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from amn.cli import main
from amn.config import load_config

REPO = Path(__file__).resolve().parents[1]
SMOKE = REPO / "configs" / "smoke.yaml"
pytestmark = pytest.mark.slow

# The fresh process: amn and experts are installed editable in the venv, so -I alone still finds
# them; this finder makes any import of them fail, as on a machine without amn.
BLOCK_AND_PLAY = """
import importlib.abc, importlib.util, json, sys
from pathlib import Path

class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("amn", "experts"):
            raise ImportError("blocked: " + name)
        return None

sys.meta_path.insert(0, Block())
try:
    importlib.util.find_spec("amn")
    sys.exit("amn is importable in the fresh process")
except ImportError:
    pass
sys.path.insert(0, str(Path(__file__).parent))  # sb3_pipeline.py, copied beside the zip
import sb3_pipeline
assert not any(m.split(".")[0] in ("amn", "experts") for m in sys.modules), "amn leaked in"
sys.exit(sb3_pipeline.main(sys.argv[1:]))
"""


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """``(run dir, OUT.zip, zoo dir, printed note)`` of a tiny trained Pong student."""
    from amn.trainer import train

    base = tmp_path_factory.mktemp("export")
    run = base / "run"
    cfg = load_config(SMOKE, ["total_agent_steps=400", "learning_starts_per_game=100",
                              "replay_capacity_per_game=1000", "log_every_agent_steps=100",
                              "heldout_states_per_game=0", "checkpoint_minutes=10"])
    train(cfg, run, progress=False, evaluate=False)
    out, zoo = base / "pong_student.zip", base / "zoo"
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert main(["export-student", str(run), "--game", "pong", str(out), "--zoo-dir", str(zoo)]) == 0
    return run, out, zoo, buf.getvalue()


def load_zip(path: Path):
    from stable_baselines3 import DQN

    return DQN.load(str(path), device="cpu", buffer_size=1)


def test_weights_map_exactly_and_the_zip_declares_its_pipeline(exported):
    from amn.export_check import ale_observations, greedy_agreement, load_student
    from experts.atari import PIPELINE_ALE, minimal_action_set

    run, out, zoo, note = exported
    model = load_zip(out)
    student, _, _ = load_student(run)
    action_set = minimal_action_set("Pong")
    obs = ale_observations("Pong", 64)
    with torch.inference_mode():
        theirs = model.policy.q_net(torch.from_numpy(obs).float())  # SB3 divides by 255 itself
        ours = student(torch.from_numpy(obs), torch.zeros(len(obs), dtype=torch.long))[:, action_set]
    assert theirs.shape == (64, 6)
    torch.testing.assert_close(theirs, ours, atol=1e-5, rtol=1e-5)
    assert torch.equal(model.policy.q_net_target(torch.from_numpy(obs).float()), theirs)
    assert greedy_agreement(student, 0, action_set, model, obs)["unexplained"] == 0

    pipeline = model.amn_pipeline
    assert pipeline["trained_on"] == PIPELINE_ALE and pipeline["sb3"]["env_id"] == "PongNoFrameskip-v4"
    assert pipeline["life_loss"] == {"new_stack": False, "fire": False}  # the shipped Pong expert is ALE-trained
    assert model.amn_observation_pipeline == PIPELINE_ALE and model.exploration_rate == 0.05
    assert json.loads(out.with_name("pong_student.amn.json").read_text()) == pipeline
    assert "AtariWrapper" in note and "terminal_on_life_loss=False" in note and "rl_zoo3.enjoy" in note

    import yaml

    env_dir = zoo / "dqn" / "PongNoFrameskip-v4_1"
    config = yaml.safe_load((env_dir / "PongNoFrameskip-v4" / "config.yml").read_text())
    assert config["frame_stack"] == 4
    assert config["env_wrapper"] == [{"stable_baselines3.common.atari_wrappers.AtariWrapper":
                                      {"terminal_on_life_loss": False, "clip_reward": False}}]
    assert (env_dir / "PongNoFrameskip-v4.zip").read_bytes() == out.read_bytes()
    assert yaml.safe_load((env_dir / "PongNoFrameskip-v4" / "args.yml").read_text())["env_kwargs"] is None


def test_a_fresh_python_without_amn_plays_it_like_the_student(exported, tmp_path):
    from amn import sb3_pipeline
    from amn.evaluation import play_games
    from amn.export_check import greedy_agreement, load_student, welch
    from amn.report import student_actor
    from experts.atari import minimal_action_set

    run, out, _, _ = exported
    isolated = tmp_path / "isolated"
    isolated.mkdir()
    shutil.copy(out, isolated / "student.zip")
    shutil.copy(sb3_pipeline.__file__, isolated / "sb3_pipeline.py")
    (isolated / "play.py").write_text(BLOCK_AND_PLAY)
    # Short capped games keep this quick; both sides play the same protocol.
    episodes, cap, epsilon = 6, 2000, 0.05
    proc = subprocess.run([sys.executable, "-I", "play.py", "student.zip", "--episodes", str(episodes),
                           "--envs", "3", "--max-frames", str(cap), "--epsilon", str(epsilon),
                           "--record", "96", "--record-to", "frames.npy"],
                          cwd=isolated, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["amn_loaded"] is False and result["problems"] == [] and result["warnings"] == []
    assert len(result["returns"]) == episodes

    # Exact: on the observations SB3's pipeline gave, the zip's greedy action is the student's.
    student, _, _ = load_student(run)
    frames = np.load(isolated / "frames.npy")
    assert frames.shape[1:] == (4, 84, 84) and len(frames) > 30
    agreement = greedy_agreement(student, 0, minimal_action_set("Pong"), load_zip(out), frames)
    assert agreement["unexplained"] == 0, agreement

    # Within noise: amn's own play of the same student, the same number of games and protocol.
    ours = play_games(student_actor(student, 0, minimal_action_set("Pong")), "Pong", episodes, epsilon=epsilon,
                      max_frames=cap, num_envs=3, progress=False)
    test = welch(result["returns"], ours)
    assert test["within_noise"], (result["returns"], ours, test)


def test_another_pipeline_warns_or_is_refused(exported):
    from stable_baselines3.common.env_util import make_atari_env
    from stable_baselines3.common.vec_env import VecTransposeImage

    from amn.sb3_pipeline import PipelineMismatch, PipelineWarning, check_pipeline, make_declared_env
    from experts.sb3_vec_env import AleVecEnv

    model = load_zip(exported[1])
    envs = {"declared": make_declared_env(model), "ale": AleVecEnv("Pong", 1, life_loss_done=False),
            "life_loss": make_declared_env(model, overrides={"terminal_on_life_loss": True}),
            "ale_life_loss": AleVecEnv("Pong", 1), "no_stack": VecTransposeImage(make_atari_env("PongNoFrameskip-v4"))}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", PipelineWarning)
            assert check_pipeline(model, envs["declared"]) == []
            assert check_pipeline(model, envs["ale"]) == []  # the student's own training frames
        for name in ("life_loss", "ale_life_loss"):
            with pytest.warns(PipelineWarning, match="terminal_on_life_loss=True"):
                check_pipeline(model, envs[name])
            with pytest.raises(PipelineMismatch, match="terminal_on_life_loss"):
                check_pipeline(model, envs[name], strict=True)
        with pytest.raises(PipelineMismatch, match="VecFrameStack"):
            check_pipeline(model, envs["no_stack"])
        with pytest.raises(PipelineMismatch, match="amn export-student"):
            check_pipeline(object(), envs["declared"])
    finally:
        for env in envs.values():
            env.close()


def test_it_loads_back_as_an_amn_expert(exported):
    from experts import load_expert
    from experts.atari import PIPELINE_ALE

    from amn.export_check import ale_observations, student_actions, load_student

    run, out, _, _ = exported
    expert = load_expert(str(out), game="Pong")
    assert expert.algo == "dqn" and expert.observation_pipeline == PIPELINE_ALE
    obs = ale_observations("Pong", 32, seed=1)
    student, _, _ = load_student(run)
    ours, margin = student_actions(student, 0, expert.action_set, obs)
    differ = expert.act(obs) != ours
    assert not (differ & (margin > 1e-4)).any()


def test_cli_errors_are_one_line(exported, tmp_path, capsys):
    run = exported[0]
    assert main(["export-student", str(run), "--game", "Breakout", str(tmp_path / "x.zip")]) == 2
    assert "not one of this student's games (Pong)" in capsys.readouterr().err
    assert main(["export-student", str(run), "--game", "Pong", str(tmp_path / "x.pt")]) == 2
    assert "name it OUT.zip" in capsys.readouterr().err
    assert main(["export-student", str(tmp_path / "nowhere"), "--game", "Pong", str(tmp_path / "x.zip")]) == 2
    assert "no checkpoint" in capsys.readouterr().err
    assert not (tmp_path / "x.zip").exists()
