"""Config validation: one clear line for every user mistake."""

from __future__ import annotations

from pathlib import Path

import pytest

from amn.cli import main
from amn.errors import UsageError
from amn.config import TrainConfig, apply_overrides, from_dict, load_config

REPO = Path(__file__).resolve().parents[1]
CONFIGS = sorted((REPO / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_shipped_configs_load(path):
    cfg = load_config(path)
    assert cfg.name == path.stem and cfg.games


def test_expert_path_resolved_against_project_root(tmp_path):
    (tmp_path / "pyproject.toml").write_text("")
    (tmp_path / "configs").mkdir()
    path = tmp_path / "configs" / "mine.yaml"
    path.write_text("games:\n  - {game: Pong, expert: ../shared/experts/x.zip}\n  - {game: Breakout, expert: breakout}\n")
    cfg = load_config(path)
    assert cfg.games[0].expert == str((tmp_path / "../shared/experts/x.zip").resolve())
    assert cfg.games[1].expert == "breakout"  # a name, not a path


def test_typo_lists_valid_keys():
    with pytest.raises(UsageError, match=r"unknown key 'learnig_rate'; valid keys: name, games, .*lr"):
        from_dict({"learnig_rate": 1e-3})


def test_typo_inside_a_game_entry():
    with pytest.raises(UsageError, match=r"unknown key 'expret'; valid keys: game, expert"):
        from_dict({"games": [{"game": "Pong", "expret": "pong"}]})


@pytest.mark.parametrize("key,value,expected", [
    ("lr", "fast", "expects float"),
    ("total_agent_steps", 1.5, "expects int"),
    ("sticky", "yes", "expects bool"),
    ("games", "Pong", "must be a list"),
])
def test_wrong_type_names_the_expected_type(key, value, expected):
    with pytest.raises(UsageError, match=expected):
        from_dict({key: value})


def test_unknown_game():
    with pytest.raises(UsageError, match="unknown game 'Pongg'"):
        from_dict({"games": [{"game": "Pongg", "expert": "pong"}]})


def test_overrides_parse_yaml_values_and_dotted_keys():
    data = apply_overrides({}, ["total_agent_steps=1e6", "sticky=true", "loss_options.scale=2", "loss=cc"])
    cfg = from_dict(data)
    assert cfg.total_agent_steps == 1_000_000 and cfg.sticky and cfg.loss_options == {"scale": 2}


def test_epsilon_schedule():
    cfg = TrainConfig(epsilon=0.1, epsilon_start=1.0, epsilon_decay_agent_steps_per_game=100)
    assert cfg.epsilon_at(0) == 1.0 and cfg.epsilon_at(50) == pytest.approx(0.55) and cfg.epsilon_at(10**6) == 0.1
    assert TrainConfig().epsilon_at(0) == 0.1  # fixed by default, as in the Actor-Mimic code


def _cli_error(capsys, argv) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def test_cli_one_line_errors(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("games: [{game: Pong, expert: pong}]\nlr: [1]\n")
    assert "expects float" in _cli_error(capsys, ["train-student", "--config", str(cfg), "--run-dir", str(tmp_path / "r")])
    assert "unknown key 'bogus'" in _cli_error(
        capsys, ["train-student", "--config", str(REPO / "configs/smoke.yaml"), "--set", "bogus=1",
                 "--run-dir", str(tmp_path / "r")])
    assert "config file not found" in _cli_error(capsys, ["train-student", "--config", str(tmp_path / "none.yaml")])


def test_cli_missing_expert_is_one_line(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("games: [{game: Pong, expert: ./no/such/expert.zip}]\n")
    err = _cli_error(capsys, ["train-student", "--config", str(cfg), "--run-dir", str(tmp_path / "r"), "--no-progress"])
    assert "expert for Pong" in err


def test_cli_unknown_loss_is_one_line(tmp_path, capsys):
    err = _cli_error(capsys, ["train-student", "--config", str(REPO / "configs/smoke.yaml"), "--set", "loss=nope",
                              "--run-dir", str(tmp_path / "r"), "--no-progress"])
    assert "unknown loss 'nope'" in err


def test_cli_corrupt_checkpoint_is_one_line(tmp_path, capsys):
    (tmp_path / "checkpoint.pt").write_bytes(b"not a checkpoint")
    err = _cli_error(capsys, ["evaluate", str(tmp_path)])
    assert "corrupt or truncated" in err


@pytest.mark.parametrize("device", ["cpu", "cuda", "cuda:1", "auto"])
def test_device_spellings(device):
    # Only the spelling is checked here: a GPU run's config must still load on a CPU machine.
    assert from_dict({"device": device}).device == device
    assert TrainConfig().device == "cpu"


@pytest.mark.parametrize("device", ["gpu", "CUDA", "cuda:", "cuda:x", "cuda0", "mps"])
def test_device_typo(device):
    with pytest.raises(UsageError, match=rf"device must be cpu, cuda, cuda:N or auto, got '{device}'"):
        from_dict({"device": device})


def test_cli_cuda_without_cuda_is_one_line(tmp_path, capsys, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # as on this CPU-only machine
    err = _cli_error(capsys, ["train-student", "--config", str(REPO / "configs/smoke.yaml"), "--set", "device=cuda",
                              "--run-dir", str(tmp_path / "r"), "--no-progress"])
    assert "device=cuda but torch.cuda.is_available() is False" in err and "use device: cpu or auto" in err
    assert not (tmp_path / "r").exists()  # refused before anything is written


def test_auto_device_is_cpu_without_cuda(monkeypatch):
    import torch

    from amn.distributed import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device(load_config(REPO / "configs/smoke.yaml", ["device=auto"]).device) == torch.device("cpu")
