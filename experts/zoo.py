"""Read Stable-Baselines3 ``model.save`` zips (the RL-zoo's published format).

The zip is read by hand, never unpickled: the ``data`` member is JSON (spaces,
hyperparameters) and ``policy.pth`` a plain state dict loaded with
``weights_only=True``. SB3's NatureCNN keys are mapped onto
:class:`experts.network.ExpertNetwork`:

=========  =================================  =========================================
algo       torso prefix                       head
=========  =================================  =========================================
PPO, A2C   ``features_extractor.``            ``action_net`` (policy logits)
DQN        ``q_net.features_extractor.``      ``q_net.q_net.0`` (Q-values)
QR-DQN     ``quantile_net.features_extractor.``  ``quantile_net.quantile_net.0``, averaged
                                                 over quantiles (exact: the head is linear)
=========  =================================  =========================================
"""

from __future__ import annotations

import io
import json
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import torch

from experts.atari import GAMES, OBS_SHAPE, PIPELINE_SB3, PIPELINES, canonical_game, minimal_action_set

# SB3's own file name for the env id (rl-zoo: "<algo>-<EnvId>.zip", e.g. ppo-PongNoFrameskip-v4.zip).
_ENV_ID = re.compile(r"([A-Za-z]+?)(?:NoFrameskip-v4|Deterministic-v4|-v5|-v4)")
_TORSO_KEYS = ("cnn.0.weight", "cnn.0.bias", "cnn.2.weight", "cnn.2.bias",
               "cnn.4.weight", "cnn.4.bias", "linear.0.weight", "linear.0.bias")


@dataclass
class Checkpoint:
    """Weights already mapped onto ``ExpertNetwork`` (float32) and what the zip says about them."""

    state_dict: dict[str, torch.Tensor]
    game: str
    algo: str
    meta: dict = field(default_factory=dict)


def _fail(path: Path, problem: str, fix: str) -> ValueError:
    return ValueError(f"{path}: {problem}; {fix}")


def infer_game(path: Path, data: dict) -> str | None:
    """The game named by the zip's metadata, its file name, or a ``run.json`` beside it (None if none)."""
    for key in ("env_name", "env_id", "game"):
        if isinstance(data.get(key), str):
            return data[key]
    match = _ENV_ID.search(path.name)
    if match:
        return match.group(1)
    run = path.parent / "run.json"  # written by `amn experts train` next to latest.zip/model.zip
    if run.is_file():
        try:
            game = json.loads(run.read_text()).get("game")
        except (OSError, ValueError):
            game = None
        if isinstance(game, str):
            return game
    for game in GAMES:  # e.g. "pong_expert.zip"
        if GAMES[game] in path.stem.lower() or game.lower() in path.stem.lower():
            return game
    return None


def _space_shape(space: dict) -> tuple[int, ...]:
    # A JSON list in current SB3; older versions wrote a repr string such as "(4, 84, 84)".
    shape = space.get("_shape", space.get("shape", []))
    return tuple(int(x) for x in re.findall(r"\d+", str(shape)))


def _detect_algo(data: dict, keys: set[str]) -> str:
    if any(k.startswith("quantile_net.") for k in keys):
        return "qrdqn"
    if any(k.startswith("q_net.") for k in keys):
        return "dqn"
    if "action_net.weight" in keys:
        # PPO is the actor-critic with a clip range; A2C has none.
        return "ppo" if "clip_range" in data else "a2c"
    return "unknown"


def _torso_prefix(algo: str, keys: set[str]) -> str:
    if algo == "qrdqn":
        return "quantile_net.features_extractor."
    if algo == "dqn":
        return "q_net.features_extractor."
    # share_features_extractor=False saves only pi_/vf_ extractors.
    return "features_extractor." if "features_extractor.cnn.0.weight" in keys else "pi_features_extractor."


def _training_pipeline(path: Path, data: dict) -> str:
    """The pipeline the agent was trained through: ``amn experts train`` records it in the zip
    (and in ``run.json`` beside it); anything else is taken to be an RL-zoo agent."""
    recorded = data.get("amn_observation_pipeline")
    run_json = path.parent / "run.json"
    if recorded is None and run_json.is_file():
        try:
            recorded = json.loads(run_json.read_text()).get("pipeline")
        except (ValueError, OSError, AttributeError):
            recorded = None
    if recorded is None:
        return PIPELINE_SB3
    if recorded not in PIPELINES:
        raise _fail(path, f"unknown observation pipeline {recorded!r}", f"expected one of {', '.join(PIPELINES)}")
    return recorded


def read_sb3_zip(path: str | Path, game: str | None = None) -> Checkpoint:
    """Read an SB3 ``model.save`` zip of a PPO/A2C/DQN/QR-DQN ``CnnPolicy`` Atari agent.

    ``game`` is needed only when neither the zip nor its file name names the game;
    if both are known they must agree. Raises a one-line ``ValueError`` for any
    problem with the file and ``FileNotFoundError`` if it does not exist.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file; check the path, or place the zip there by hand")
    redo = "re-download it or re-save it with SB3's model.save"
    try:
        with zipfile.ZipFile(path) as zf:
            names = set(zf.namelist())
            for member in ("data", "policy.pth"):
                if member not in names:
                    raise _fail(path, f"not an SB3 model zip (no '{member}' member)", redo)
            data = json.loads(zf.read("data"))
            state = torch.load(io.BytesIO(zf.read("policy.pth")), map_location="cpu", weights_only=True)
            sb3_version = zf.read("_stable_baselines3_version").decode().strip() \
                if "_stable_baselines3_version" in names else None
    except ValueError:
        raise
    except (zipfile.BadZipFile, EOFError, OSError, RuntimeError, KeyError, UnicodeDecodeError) as err:
        # zlib/CRC errors of a truncated member surface as several exception types.
        raise _fail(path, f"corrupt or truncated SB3 zip ({type(err).__name__}: {err})", redo) from None
    except Exception as err:  # unpickling errors from weights_only=True and the like
        raise _fail(path, f"unreadable SB3 zip ({type(err).__name__}: {err})", redo) from None
    if not isinstance(data, dict) or not isinstance(state, dict):
        raise _fail(path, "unexpected content in 'data' or 'policy.pth'", redo)

    obs_space, act_space = data.get("observation_space"), data.get("action_space")
    if not isinstance(obs_space, dict) or not isinstance(act_space, dict):
        raise _fail(path, "the zip's data has no observation_space/action_space", redo)
    shape = _space_shape(obs_space)
    channels_last = (*OBS_SHAPE[1:], OBS_SHAPE[0])
    if "Box" not in obs_space.get(":type:", "") or shape not in (OBS_SHAPE, channels_last) \
            or obs_space.get("dtype") != "uint8":
        raise _fail(path, f"not an Atari image checkpoint: observation space {obs_space.get(':type:', '?')} "
                    f"shape {shape} dtype {obs_space.get('dtype')}, expected uint8 {OBS_SHAPE} or {channels_last}",
                    "only 84x84 grayscale 4-frame-stack Atari agents are supported")
    if "Discrete" not in act_space.get(":type:", "") or "n" not in act_space:
        raise _fail(path, f"action space {act_space.get(':type:', '?')} is not Discrete",
                    "only discrete-action Atari agents are supported")
    n_actions = int(act_space["n"])
    policy_kwargs = data.get("policy_kwargs") or {}
    if isinstance(policy_kwargs, dict) and policy_kwargs.get("normalize_images") is False:
        raise _fail(path, "policy was trained with normalize_images=False", "only [0, 1]-scaled CNN policies are supported")

    keys = set(state)
    algo = _detect_algo(data, keys)
    if algo == "unknown":
        raise _fail(path, f"unrecognised policy weights (keys {sorted(keys)[:4]}...)",
                    "supported: SB3 PPO/A2C/DQN and sb3-contrib QR-DQN CnnPolicy")
    prefix = _torso_prefix(algo, keys)
    missing = [prefix + k for k in _TORSO_KEYS if prefix + k not in keys]
    if missing:
        raise _fail(path, f"not a NatureCNN policy (missing {missing[0]})", "only SB3's default CnnPolicy is supported")
    sd = {k: state[prefix + k].float() for k in _TORSO_KEYS}
    if tuple(sd["cnn.0.weight"].shape[1:]) != (OBS_SHAPE[0], 8, 8):
        raise _fail(path, f"first conv expects {sd['cnn.0.weight'].shape[1]} input channels", "expected a 4-frame stack")

    meta: dict = {"format": "sb3-zip", "source": str(path), "sb3_version": sb3_version,
                  "training_steps": data.get("num_timesteps"), "seed": data.get("seed"),
                  "observation_layout": "channels_first" if shape == OBS_SHAPE else "channels_last",
                  "observation_pipeline": _training_pipeline(path, data)}
    if algo in ("ppo", "a2c"):
        if any(k.startswith("mlp_extractor.policy_net.") for k in keys):
            raise _fail(path, "policy has hidden layers between the CNN and action_net (custom net_arch)",
                        "only the default CnnPolicy (net_arch=[]) is supported")
        head_w, head_b = state["action_net.weight"], state["action_net.bias"]
    elif algo == "dqn":
        if "q_net.q_net.2.weight" in keys or "q_net.q_net.0.weight" not in keys:
            raise _fail(path, "Q-network head is not a single linear layer (custom net_arch)",
                        "only the default CnnPolicy is supported")
        head_w, head_b = state["q_net.q_net.0.weight"], state["q_net.q_net.0.bias"]
    else:
        if "quantile_net.quantile_net.2.weight" in keys or "quantile_net.quantile_net.0.weight" not in keys:
            raise _fail(path, "quantile head is not a single linear layer (custom net_arch)",
                        "only the default CnnPolicy is supported")
        w, b = state["quantile_net.quantile_net.0.weight"], state["quantile_net.quantile_net.0.bias"]
        if w.shape[0] % n_actions:
            raise _fail(path, f"quantile head has {w.shape[0]} outputs, not a multiple of {n_actions} actions", redo)
        n_quantiles = w.shape[0] // n_actions
        # Outputs are laid out [quantile, action] (SB3-contrib: view(-1, n_quantiles, n_actions)).
        head_w = w.double().view(n_quantiles, n_actions, -1).mean(0).float()
        head_b = b.double().view(n_quantiles, n_actions).mean(0).float()
        meta["n_quantiles"] = n_quantiles
    if head_w.shape[0] != n_actions:
        raise _fail(path, f"head has {head_w.shape[0]} outputs but the action space has {n_actions}", redo)
    sd["head.weight"], sd["head.bias"] = head_w.float(), head_b.float()

    named = infer_game(path, data)
    try:
        inferred = canonical_game(named) if named else None
        chosen = canonical_game(game) if game else inferred
    except ValueError as err:
        raise _fail(path, str(err), "pass game=<one of the known games> (CLI: --game)") from None
    if chosen is None:
        raise _fail(path, "cannot tell which game this checkpoint plays (no env name in the zip or its file name)",
                    "pass game=GAME (CLI: --game GAME) or rename it like ppo-PongNoFrameskip-v4.zip")
    if inferred and game and inferred != chosen:
        raise _fail(path, f"the file says {inferred} but game={game!r} was given", "drop the game argument or fix it")
    expected = len(minimal_action_set(chosen))
    if n_actions != expected:
        raise _fail(path, f"action space has {n_actions} actions but {chosen}'s minimal action set has {expected}",
                    "use a checkpoint trained on this game's minimal action set (full_action_space=False)")
    return Checkpoint(state_dict=sd, game=chosen, algo=algo, meta=meta)
