"""Loading experts: every SB3 backend, the own format, the registry, the CLI and each error path.

Tiny SB3 models are built (not trained) in the tests, their weights perturbed so
every layer matters, saved with ``model.save`` and compared with SB3's own
outputs on real ALE observations.
"""

from __future__ import annotations

import json
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from fp_bounds import assert_within_rounding, forward_error_bound, gamma

from experts import Expert, export_expert, load_expert
from expert_models import build, one_line
from experts.atari import PIPELINE_ALE, PIPELINE_SB3, minimal_action_set

ROOT = Path(__file__).resolve().parent.parent
ZOO_PONG = ROOT.parent / "shared" / "experts" / "ppo-PongNoFrameskip-v4.zip"


def _rounding_bound(expert, model, algo: str, obs: np.ndarray, features: bool = False) -> torch.Tensor:
    """Bound on either side's float32 rounding error (``tests/fp_bounds.py``): ours and SB3's
    modules hold the same weights and differ only in the order of their sums."""
    x = torch.as_tensor(obs).double() / 255.0
    net = expert.net
    trunk = [*net.cnn, *net.linear]
    if features:
        return forward_error_bound(trunk, x)
    if algo != "qrdqn":
        return forward_error_bound(trunk + [net.head], x)
    # QR-DQN: SB3 averages its quantiles' outputs, ours averages their weights first (exact in
    # real arithmetic). Bound SB3's side through its own quantile layer, then the mean of n
    # quantiles; ours, with |mean w| ≤ mean |w|, is within the same bound.
    quantiles = model.quantile_net.quantile_net[0]
    n = quantiles.out_features // net.num_actions
    e = forward_error_bound(trunk + [quantiles], x).view(len(obs), n, -1)
    with torch.no_grad():
        q = quantiles(net.features(x.float())).double().view(len(obs), n, -1)
    return e.mean(1) + gamma(n) * q.abs().mean(1)


def _sb3_values(model, algo: str, obs: np.ndarray) -> torch.Tensor:
    """Raw action values straight from SB3's modules (logits before Categorical normalises them)."""
    from stable_baselines3.common.policies import BaseModel

    obs_t = model.policy.obs_to_tensor(obs)[0]
    with torch.no_grad():
        if algo in ("ppo", "a2c"):
            policy = model.policy
            # BaseModel's version: ActorCriticPolicy's returns a (pi, vf) pair when extractors are not shared.
            features = BaseModel.extract_features(policy, obs_t, policy.pi_features_extractor)
            return policy.action_net(policy.mlp_extractor.forward_actor(features))
        if algo == "dqn":
            return model.q_net(obs_t)
        return model.quantile_net(obs_t).mean(dim=1)


@pytest.mark.parametrize("algo,kwargs", [("ppo", {}), ("ppo", {"share_features_extractor": False}),
                                         ("a2c", {}), ("dqn", {}), ("qrdqn", {})],
                         ids=["ppo", "ppo-unshared", "a2c", "dqn", "qrdqn"])
def test_sb3_round_trip(request, tmp_path, pong_obs, algo, kwargs):
    if algo == "ppo" and not kwargs:
        path, model = request.getfixturevalue("ppo_zip")  # built once for the other tests too
    else:
        model = build(algo, **kwargs)
        path = tmp_path / f"{algo}-PongNoFrameskip-v4.zip"
        model.save(path)
    expert = load_expert(path)
    assert (expert.game, expert.algo, expert.num_actions) == ("Pong", algo, 6)
    assert expert.action_set == minimal_action_set("Pong")
    assert expert.action_meanings == ["NOOP", "FIRE", "RIGHT", "LEFT", "RIGHTFIRE", "LEFTFIRE"]
    values = expert.values(pong_obs)
    assert values.dtype == torch.float32 and values.shape == (4, 6)
    assert_within_rounding(values, _sb3_values(model, algo, pong_obs),
                           _rounding_bound(expert, model, algo, pong_obs), f"{algo} values vs SB3's")
    assert values.std() > 1e-3  # the comparison is not between two near-zero outputs
    # Tensors are accepted as well as arrays.
    torch.testing.assert_close(expert.values(torch.from_numpy(pong_obs)), values)


def test_features_are_penultimate_layer(ppo_zip, pong_obs):
    path, model = ppo_zip
    expert = load_expert(path)
    feats = expert.features(pong_obs)
    assert feats.shape == (4, 512) and feats.dtype == torch.float32 and (feats >= 0).all()
    with torch.no_grad():
        ref = model.policy.extract_features(model.policy.obs_to_tensor(pong_obs)[0], model.policy.pi_features_extractor)
    assert_within_rounding(feats, ref, _rounding_bound(expert, model, "ppo", pong_obs, features=True),
                           "features vs SB3's")


def test_channel_last_checkpoint_is_adapted(ppo_zip, pong_obs, tmp_path):
    """An older zoo zip records the observation space as (84, 84, 4); SB3 transposes for it."""
    path, _ = ppo_zip
    copy = tmp_path / "ppo-PongNoFrameskip-v4.zip"
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(copy, "w") as dst:
        for item in src.infolist():
            blob = src.read(item.filename)
            if item.filename == "data":
                data = json.loads(blob)
                data["observation_space"]["_shape"] = [84, 84, 4]
                blob = json.dumps(data).encode()
            dst.writestr(item, blob)
    expert = load_expert(copy)
    assert expert.meta["observation_layout"] == "channels_last"
    torch.testing.assert_close(expert.values(pong_obs), load_expert(path).values(pong_obs))


def test_game_argument_when_file_name_says_nothing(ppo_zip, tmp_path):
    path, _ = ppo_zip
    anonymous = tmp_path / "model.zip"
    anonymous.write_bytes(path.read_bytes())
    with pytest.raises(ValueError, match=r"model\.zip: cannot tell which game.*--game"):
        load_expert(anonymous)
    assert load_expert(anonymous, game="pong").game == "Pong"
    with pytest.raises(ValueError, match=r"model\.zip: unknown game 'Tetrix'"):
        load_expert(anonymous, game="Tetrix")
    with pytest.raises(ValueError, match=r"the file says Pong but game='Breakout'"):
        load_expert(path, game="Breakout")


def test_soft_policy(ppo_zip, pong_obs):
    expert = load_expert(ppo_zip[0])
    greedy = expert.values(pong_obs).argmax(-1)
    previous = None
    for tau in (10.0, 1.0, 0.1, 1e-4):
        probs = expert.soft_policy(pong_obs, temperature=tau)
        torch.testing.assert_close(probs.sum(-1), torch.ones(4))
        top = probs.gather(1, greedy[:, None]).squeeze(1)
        if previous is not None:
            assert (top >= previous - 1e-6).all()  # sharpens as tau falls
        previous = top
    assert (previous > 0.999).all()
    np.testing.assert_array_equal(expert.act(pong_obs), greedy.numpy())
    # Targets must be usable in a student's loss (an inference-mode tensor could not be saved for backward).
    student = torch.zeros(4, 6, requires_grad=True)
    (-(expert.soft_policy(pong_obs) * torch.log_softmax(student, -1)).sum()).backward()
    assert student.grad is not None
    for bad in (0.0, -1.0):
        with pytest.raises(ValueError, match="temperature must be > 0"):
            expert.soft_policy(pong_obs, temperature=bad)


def test_sampled_policy(ppo_zip, pong_obs, tmp_path, capsys):
    """`--policy sample` draws from softmax(logits), reproducibly for a seed; DQN experts refuse."""
    from amn.cli import main

    expert = load_expert(ppo_zip[0])
    obs = np.repeat(pong_obs, 25, axis=0)  # each of the 4 states 25 times in one batch
    first = expert.sampler(seed=3)(obs)
    act = expert.sampler(seed=3)
    draws = np.concatenate([act(obs).reshape(4, 25) for _ in range(24)], axis=1).T  # [600 draws, 4 states]
    assert (draws[:25] == first.reshape(4, 25).T).all()  # the same seed gives the same actions
    probs = expert.soft_policy(pong_obs).numpy()
    freq = np.stack([(draws == a).mean(axis=0) for a in range(6)], axis=1)
    bound = 5 * np.sqrt(probs * (1 - probs) / 600) + 1e-3  # 5 sigma of a binomial frequency
    assert (np.abs(freq - probs) < bound).all(), (freq, probs)
    assert probs.max() < 0.9  # peaked enough for argmax to fail the bound above, not so peaked that it passes
    out = tmp_path / "sampled.json"
    assert main(["experts", "evaluate", str(ppo_zip[0]), "--policy", "sample", "--episodes", "1",
                 "--max-frames", "400", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert (result["policy"], result["epsilon"], result["episodes"]) == ("sample", 0.0, 1)
    dqn = tmp_path / "dqn-PongNoFrameskip-v4.zip"
    build("dqn").save(dqn)
    with pytest.raises(ValueError, match="has Q-values, not a policy to sample"):
        load_expert(dqn).sampler()
    capsys.readouterr()


def test_own_format_round_trip(ppo_zip, pong_obs, tmp_path):
    path, _ = ppo_zip
    score = {"mean": 1.5, "std": 0.5, "episodes": 2, "returns": [1.0, 2.0]}
    json_path = export_expert(path, "pong_test", out_dir=tmp_path, score=score, command="pytest")
    pt = json_path.with_suffix(".pt")
    assert pt.stat().st_size <= 4 * 1024 * 1024
    meta = json.loads(json_path.read_text())
    assert meta["game"] == "Pong" and meta["algo"] == "ppo" and meta["action_set"] == minimal_action_set("Pong")
    assert meta["observation_pipeline"] == PIPELINE_SB3  # a plain SB3 zip counts as an RL-zoo agent
    assert meta["score"]["mean"] == 1.5 and "protocol" in meta["score"] and meta["command"] == "pytest"
    assert all(v.dtype == torch.float16 for v in torch.load(pt, weights_only=True).values())
    original, reloaded = load_expert(path), load_expert(json_path)
    assert isinstance(reloaded, Expert) and reloaded.game == "Pong" and reloaded.meta["score"]["episodes"] == 2
    torch.testing.assert_close(reloaded.values(pong_obs), original.values(pong_obs), atol=2e-2, rtol=2e-2)
    assert load_expert(pt).name == "pong_test"  # either half of the pair may be named


def test_cli_export_measures_the_exported_weights(ppo_zip, tmp_path, monkeypatch, capsys):
    """The shipped score is of the float16 file that ships, not of the float32 source it came from."""
    import amn.evaluation
    from amn.cli import main

    played, real_play = [], amn.evaluation.play_games

    def spy(act, game, episodes, **kwargs):
        played.append(act.__self__.meta)
        return real_play(act, game, episodes, **kwargs)

    monkeypatch.setattr(amn.evaluation, "play_games", spy)
    out = tmp_path / "shipped"
    assert main(["experts", "export", str(ppo_zip[0]), "--name", "pong_cli", "--episodes", "1",
                 "--out-dir", str(out)]) == 0
    meta = json.loads((out / "pong_cli.json").read_text())
    assert len(played) == 1 and played[0]["format"] == "own" and played[0]["source"] == str(out / "pong_cli.json")
    assert meta["score"]["episodes"] == 1 and "epsilon 0.01" in meta["score"]["protocol"]
    assert meta["sha256"] == load_expert(out / "pong_cli.json").meta["sha256"]  # still loads: json and weights agree
    assert "measured the exported weights" in capsys.readouterr().out


def test_training_pipeline_is_recorded(ppo_zip, tmp_path):
    """Experts from `amn experts train` keep stacking frames over a life loss; zoo agents restart the stack."""
    path, model = ppo_zip
    zoo = load_expert(path)
    assert zoo.observation_pipeline == PIPELINE_SB3 and zoo.life_loss_restarts_stack
    model.amn_observation_pipeline = PIPELINE_ALE  # what experts.train sets before saving
    own = tmp_path / "ppo-PongNoFrameskip-v4.zip"
    model.save(own)
    del model.amn_observation_pipeline
    ours = load_expert(own)
    assert ours.observation_pipeline == PIPELINE_ALE and not ours.life_loss_restarts_stack
    exported = load_expert(export_expert(own, "ours", out_dir=tmp_path / "shipped"))
    assert exported.observation_pipeline == PIPELINE_ALE  # kept through the own format
    # A zip written before the pipeline was recorded: run.json of its training directory tells.
    legacy = tmp_path / "legacy" / "model.zip"
    legacy.parent.mkdir()
    legacy.write_bytes(path.read_bytes())
    (legacy.parent / "run.json").write_text(json.dumps({"pipeline": PIPELINE_ALE}))
    assert load_expert(legacy, game="Pong").observation_pipeline == PIPELINE_ALE
    (legacy.parent / "run.json").write_text(json.dumps({"pipeline": "my-wrapper"}))
    with pytest.raises(ValueError, match="unknown observation pipeline 'my-wrapper'") as err:
        load_expert(legacy, game="Pong")
    assert str(legacy) in one_line(err)


def test_registry_and_cli(ppo_zip, tmp_path, monkeypatch, capsys):
    from amn.cli import main

    monkeypatch.setenv("AMN_HOME", str(tmp_path / "home"))
    assert main(["experts", "import", str(ppo_zip[0]), "--name", "Tiny_Pong"]) == 0
    assert "registered 'tiny_pong'" in capsys.readouterr().out
    expert = load_expert("TINY_PONG")  # names are case-insensitive
    assert expert.game == "Pong" and expert.name == "tiny_pong"
    assert main(["experts", "list"]) == 0
    assert "tiny_pong" in capsys.readouterr().out
    out_json = tmp_path / "eval.json"
    assert main(["experts", "evaluate", "tiny_pong", "--episodes", "1", "--max-frames", "400",
                 "--json", str(out_json)]) == 0
    result = json.loads(out_json.read_text())
    assert result["episodes"] == 1 and len(result["returns"]) == 1 and result["game"] == "Pong"
    capsys.readouterr()
    assert main(["experts", "list"]) == 0  # the measured score is remembered
    assert f"{result['mean']:.1f} ± 0.0 (1 games)" in capsys.readouterr().out
    own = export_expert(ppo_zip[0], "exported", out_dir=tmp_path / "own")
    assert main(["experts", "import", str(own), "--name", "own_pong"]) == 0
    assert load_expert("own_pong", game="Pong").meta["format"] == "own"
    with pytest.raises(ValueError, match="expert 'own_pong' plays Pong, not Breakout"):
        load_expert("own_pong", game="breakout")
    capsys.readouterr()
    assert main(["experts", "evaluate", "no_such_expert"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "unknown expert 'no_such_expert'" in err


def test_fetch_offline_fails_fast(monkeypatch, capsys):
    from amn.cli import main
    from experts import cli

    monkeypatch.setattr(cli, "_hub_reachable", lambda timeout=3.0: False)
    start = time.monotonic()
    assert main(["experts", "fetch", "pong", "--algo", "dqn"]) == 2
    err = capsys.readouterr().err.strip()
    assert time.monotonic() - start < 5
    assert err.count("\n") == 0 and "amn experts import dqn-PongNoFrameskip-v4.zip" in err


@pytest.mark.skipif(not ZOO_PONG.is_file(), reason=f"shared zoo checkpoint not found at {ZOO_PONG}")
def test_shared_zoo_checkpoint(pong_obs):
    from stable_baselines3 import PPO

    start = time.monotonic()
    expert = load_expert(ZOO_PONG)
    assert time.monotonic() - start < 2.0
    assert (expert.game, expert.algo, expert.meta["training_steps"]) == ("Pong", "ppo", 1_600_000)
    actions = expert.act(pong_obs)
    assert actions.shape == (4,) and ((0 <= actions) & (actions < 6)).all()
    model = PPO.load(ZOO_PONG, device="cpu")
    assert_within_rounding(expert.values(pong_obs), _sb3_values(model, "ppo", pong_obs),
                           _rounding_bound(expert, model, "ppo", pong_obs), "zoo values vs SB3's")
