"""Expert loading's error paths, each one line naming the file and what to do, and
``amn experts train``'s resume with a changed budget."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from expert_models import one_line
from experts import export_expert, load_expert

ROOT = Path(__file__).resolve().parent.parent
ZOO_PONG = ROOT.parent / "shared" / "experts" / "ppo-PongNoFrameskip-v4.zip"


# --- error paths: one line, naming the file and what to do -----------------------------------------


def test_truncated_and_random_files(ppo_zip, tmp_path):
    blob = ppo_zip[0].read_bytes()
    truncated = tmp_path / "ppo-PongNoFrameskip-v4.zip"
    truncated.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(ValueError) as err:
        load_expert(truncated)
    assert str(truncated) in one_line(err) and "corrupt or truncated" in str(err.value)
    noise = tmp_path / "noise.zip"
    noise.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(ValueError, match=r"noise\.zip: corrupt or truncated.*re-download") as err:
        load_expert(noise)
    one_line(err)
    with pytest.raises(FileNotFoundError, match="no such file"):
        load_expert(tmp_path / "missing.zip")


def test_non_atari_checkpoint(tmp_path):
    from stable_baselines3 import PPO

    path = tmp_path / "ppo-CartPole-v1.zip"
    PPO("MlpPolicy", "CartPole-v1", n_steps=16, batch_size=16, device="cpu").save(path)
    with pytest.raises(ValueError, match=r"ppo-CartPole-v1\.zip: not an Atari image checkpoint") as err:
        load_expert(path)
    one_line(err)


def test_action_space_mismatch(ppo_zip, tmp_path):
    wrong = tmp_path / "ppo-BreakoutNoFrameskip-v4.zip"
    wrong.write_bytes(ppo_zip[0].read_bytes())
    with pytest.raises(ValueError, match=r"6 actions but Breakout's minimal action set has 4") as err:
        load_expert(wrong)
    assert str(wrong) in one_line(err)


def test_own_format_errors(ppo_zip, tmp_path):
    json_path = export_expert(ppo_zip[0], "pong_bad", out_dir=tmp_path)
    pt = json_path.with_suffix(".pt")
    meta = json.loads(json_path.read_text())

    del meta["game"]
    json_path.write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=r"pong_bad\.json: missing metadata key 'game'") as err:
        load_expert(json_path)
    one_line(err)

    meta = json.loads(export_expert(ppo_zip[0], "pong_bad", out_dir=tmp_path).read_text())
    json_path.write_text(json.dumps(dict(meta, observation_pipeline="ale_py.AtariVectorEnv default preprocessing")))
    with pytest.raises(ValueError, match=r"pong_bad\.json: observation_pipeline .* re-export") as err:
        load_expert(json_path)
    one_line(err)

    export_expert(ppo_zip[0], "pong_bad", out_dir=tmp_path)
    blob = bytearray(pt.read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    pt.write_bytes(bytes(blob))
    with pytest.raises(ValueError, match=r"pong_bad\.pt: sha256 mismatch") as err:
        load_expert(json_path)
    one_line(err)

    pt.unlink()
    with pytest.raises(FileNotFoundError, match=r"pong_bad\.pt: weights file"):
        load_expert(json_path)
    with pytest.raises(ValueError, match="lower-case"):
        export_expert(ppo_zip[0], "Bad Name", out_dir=tmp_path)


def test_wrong_observations(ppo_zip, pong_obs):
    expert = load_expert(ppo_zip[0])
    bad = [pong_obs.transpose(0, 2, 3, 1), pong_obs[0], pong_obs.astype(np.float32), pong_obs[:, :3]]
    for obs in bad:
        with pytest.raises(ValueError, match=r"expected observations uint8 \[B, 4, 84, 84\].*got") as err:
            expert.values(obs)
        one_line(err)
    with pytest.raises(ValueError, match="got list"):
        expert.features(pong_obs.tolist())


def test_train_resume_and_a_changed_budget(tmp_path):
    """`amn experts train` on real Pong: one PPO rollout (8 envs x 128 steps), then `--resume` to two.

    A resume that changes ``--steps`` rescales the linear schedule from that step on; run.json
    records when and from what, so an exported expert's budget is never misread.
    """
    from experts.train import train_expert

    out = tmp_path / "pong-ppo"
    assert train_expert("Pong", steps=1024, out=out).exists()
    assert json.loads((out / "progress.json").read_text())["num_timesteps"] == 1024
    with pytest.raises(FileExistsError, match="pass --resume"):
        train_expert("Pong", steps=1024, out=out)
    final = train_expert("Pong", steps=2048, out=out, resume=True)
    assert final.exists() and load_expert(final, game="Pong").num_actions == 6
    meta = json.loads((out / "run.json").read_text())
    assert meta["steps"] == 2048 and meta["steps_changes"] == [dict(at=1024, before=1024, after=2048)]
    assert json.loads((out / "progress.json").read_text())["num_timesteps"] == 2048
