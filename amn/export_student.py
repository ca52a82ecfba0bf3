"""``amn export-student RUN --game Pong OUT.zip``: one game's student as an SB3 DQN zip.

The zip is an ordinary ``stable_baselines3.DQN`` ``CnnPolicy`` save: ``DQN.load(OUT.zip)`` opens
it with no amn code installed, and its Q-network returns the student's logits over the game's
minimal action set, so the greedy action is the student's (the logits are not Q-values: use them
to act, not to bootstrap).

Weight mapping (SB3 ``QNetwork`` = ``NatureCNN`` + ``q_net``; both divide uint8 pixels by 255):

============================  ========================================================
student                       SB3 ``policy.q_net`` (and ``q_net_target``, identical)
============================  ========================================================
``trunk.0`` conv 32x8x8/4     ``features_extractor.cnn.0``
``trunk.2`` conv 64x4x4/2     ``features_extractor.cnn.2``
``trunk.4`` conv 64x3x3/1     ``features_extractor.cnn.4``
``trunk.7`` FC 3136 -> 512    ``features_extractor.linear.0`` (both flatten C, H, W)
``heads[h]`` rows of the      ``q_net.0`` ``[A, 512]``: ``h`` is the game's head (0 when shared),
minimal action set            the rows are ``experts.atari.minimal_action_set(game)``
============================  ========================================================

The observation pipeline the student expects is declared in the zip (``model.amn_pipeline``, see
``amn/sb3_pipeline.py``), in ``OUT.amn.json`` beside it and, with ``--zoo-dir``, in the RL zoo's
``config.yml`` (``env_wrapper``, ``frame_stack``), so ``python -m rl_zoo3.enjoy`` and
``rl_zoo3.push_to_hub`` (huggingface_sb3) play it through that pipeline.
"""

from __future__ import annotations

import argparse
import io
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from amn.errors import UsageError
from amn.sb3_pipeline import ATARI_WRAPPER, OBS_SHAPE

SIDE_SUFFIX = ".amn.json"
_TRUNK = {"trunk.0": "cnn.0", "trunk.2": "cnn.2", "trunk.4": "cnn.4", "trunk.7": "linear.0"}


def student_weights(ckpt: dict[str, Any], game: str) -> tuple[dict[str, torch.Tensor], list[int]]:
    """The student's weights for ``game`` as an SB3 ``QNetwork`` state dict (float32) and the
    game's minimal action set (indices into the 18 outputs, in ALE order)."""
    from experts.atari import canonical_game, minimal_action_set

    games = [canonical_game(g["game"]) for g in ckpt["config"]["games"]]
    game = canonical_game(game)
    if game not in games:
        raise UsageError(f"{game} is not one of this student's games ({', '.join(games)}); pass --game one of them")
    state = ckpt["student"]
    head = games.index(game) if ckpt["config"].get("per_game_heads") else 0
    action_set = minimal_action_set(game)
    out = {f"features_extractor.{sb3}.{p}": state[f"{ours}.{p}"].float().clone()
           for ours, sb3 in _TRUNK.items() for p in ("weight", "bias")}
    out["q_net.0.weight"] = state[f"heads.{head}.weight"].float()[action_set].clone()
    out["q_net.0.bias"] = state[f"heads.{head}.bias"].float()[action_set].clone()
    return out, action_set


def declared_pipeline(cfg: dict[str, Any], game: str, *, epsilon: float) -> dict[str, Any]:
    """What the student of ``game`` saw while it learned (``cfg``: the run's config dict), and
    the SB3 pipeline closest to it.

    Frames: always ``AtariVectorEnv``'s (the collector's). After a life loss FIRE was pressed for
    the student, and (unless the config's ``life_loss_boundary`` said otherwise) its training view
    started a new frame stack, where the game's expert was trained through SB3's ``AtariWrapper``
    (``amn/collect.py``). SB3's ``terminal_on_life_loss=True`` does both, so it is declared where
    FIRE was pressed, as ``amn evaluate`` plays the student."""
    from experts import load_expert
    from experts.atari import PIPELINE_ALE, action_meanings, canonical_game, life_loss_presses_fire

    entry = next(g for g in cfg["games"] if canonical_game(g["game"]) == game)
    try:
        expert_pipeline = load_expert(entry["expert"], game=game).observation_pipeline
    except (ValueError, FileNotFoundError) as err:
        raise UsageError(f"cannot load the expert {entry['expert']!r} of {game} to learn which pipeline the student "
                         f"saw ({err}); make it available as when the student trained") from None
    fire = life_loss_presses_fire(expert_pipeline)
    boundary = cfg.get("life_loss_boundary")
    new_stack = fire if boundary is None else bool(boundary)  # experts.atari.life_loss_restarts_stack == fire
    return {
        "game": game,
        "action_meanings": action_meanings(game),
        "trained_on": PIPELINE_ALE,
        "expert_pipeline": expert_pipeline,
        "life_loss": {"new_stack": new_stack, "fire": fire},
        "epsilon": epsilon,
        "sb3": {
            "env_id": f"{game}NoFrameskip-v4",  # v4: no sticky actions, minimal action set, 108k-frame cap
            "frame_stack": OBS_SHAPE[0],
            # clip_reward only changes what a learner is paid, not what it sees; off so totals are scores.
            "env_wrapper": {ATARI_WRAPPER: {"terminal_on_life_loss": fire, "clip_reward": False}},
        },
    }


def build_dqn(state: dict[str, torch.Tensor], pipeline: dict[str, Any]):
    """An SB3 ``DQN`` (CnnPolicy, CPU) holding ``state`` in ``q_net`` and ``q_net_target``, with
    ``amn_pipeline`` and ``amn_observation_pipeline`` set (both are saved in the zip's data)."""
    import gymnasium as gym
    from gymnasium import spaces
    from stable_baselines3 import DQN

    n = int(state["q_net.0.weight"].shape[0])

    class _Spaces(gym.Env):  # only gives DQN its spaces; model.save does not keep the env
        observation_space = spaces.Box(0, 255, OBS_SHAPE, np.uint8)
        action_space = spaces.Discrete(n)

    # buffer_size=1: the export never learns; SB3 would otherwise reserve 1M frames.
    model = DQN("CnnPolicy", _Spaces(), buffer_size=1, learning_starts=0, device="cpu", seed=0,
                exploration_initial_eps=pipeline["epsilon"], exploration_final_eps=pipeline["epsilon"])
    model.policy.q_net.load_state_dict(state)
    model.policy.q_net_target.load_state_dict(state)
    model.env = None  # nothing of the helper env may reach the zip
    # ε for DQN.predict(deterministic=False), which the zoo's enjoy.py uses for Atari.
    model.exploration_rate = pipeline["epsilon"]
    model.amn_pipeline = pipeline
    # Read by experts.zoo when the export is loaded back as an expert: life-loss handling.
    model.amn_observation_pipeline = pipeline["expert_pipeline"]
    return model


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _model_bytes(model) -> bytes:
    buf = io.BytesIO()
    model.save(buf)
    return buf.getvalue()


def write_zoo_layout(zoo_dir: Path, model_zip: bytes, pipeline: dict[str, Any]) -> Path:
    """``zoo_dir/dqn/<EnvId>_1/<EnvId>.zip`` and ``<EnvId>/config.yml``, ``args.yml``: the layout
    ``rl_zoo3.enjoy`` and ``rl_zoo3.push_to_hub`` read (``--algo dqn --env <EnvId> -f zoo_dir
    --exp-id 1``). Returns the run folder."""
    import yaml

    env_id = pipeline["sb3"]["env_id"]
    run = zoo_dir / "dqn" / f"{env_id}_1"
    (run / env_id).mkdir(parents=True, exist_ok=True)
    sb3 = pipeline["sb3"]
    config = {"env_wrapper": [{ATARI_WRAPPER: dict(sb3["env_wrapper"][ATARI_WRAPPER])}],
              "frame_stack": sb3["frame_stack"], "policy": "CnnPolicy", "normalize": False}
    _write_atomic(run / env_id / "config.yml", yaml.safe_dump(config, sort_keys=True).encode())
    _write_atomic(run / env_id / "args.yml", yaml.safe_dump(
        {"algo": "dqn", "env": env_id, "env_kwargs": None, "exp_id": 1}, sort_keys=True).encode())
    _write_atomic(run / env_id / f"amn_pipeline{SIDE_SUFFIX}", (json.dumps(pipeline, indent=2) + "\n").encode())
    _write_atomic(run / f"{env_id}.zip", model_zip)
    return run


def pipeline_note(pipeline: dict[str, Any], out: Path, zoo_run: Path | None = None) -> str:
    """The README-style note the command prints: what the zip is and how to play it honestly."""
    sb3, env_id, meanings = pipeline["sb3"], pipeline["sb3"]["env_id"], pipeline["action_meanings"]
    kwargs = sb3["env_wrapper"][ATARI_WRAPPER]
    args = ", ".join(f"{k}={v}" for k, v in kwargs.items())
    lines = [
        f"{out}: the amn student of {pipeline['game']} as an SB3 DQN (CnnPolicy); its Q-network returns the",
        f"  student's logits over {len(meanings)} actions ({', '.join(meanings)}):",
        "  act greedily on them; they are not Q-values, so do not train DQN from it.",
        f"Observation pipeline it expects (also model.amn_pipeline and {out.name.removesuffix('.zip')}{SIDE_SUFFIX}):",
        f"  trained on {pipeline['trained_on']} frames; play it through SB3's AtariWrapper pipeline",
        f"  make_atari_env('{env_id}', wrapper_kwargs=dict({args})) + VecFrameStack(venv, 4)",
        "  (SB3 adds VecTransposeImage: uint8 [4, 84, 84]); after a life loss the student saw "
        + ("a new frame stack" if pipeline["life_loss"]["new_stack"] else "the same frame stack")
        + (" and had FIRE pressed for it." if pipeline["life_loss"]["fire"] else " and pressed FIRE itself."),
        "  It is the closest SB3 pipeline, not the same one (its resets differ: 1-30 no-op frames, FIRE",
        "  then action 2), so scores may differ: measure with python -m amn.export_check RUN GAME OUT.zip.",
        "  Another pipeline warns or is refused by amn.sb3_pipeline.check_pipeline(model, venv)",
        "  (copy amn/sb3_pipeline.py beside the zip: it needs only SB3).",
        f"  Load: DQN.load('{out.name}', buffer_size=1); model.exploration_rate = {pipeline['epsilon']} "
        "(DQN.predict(deterministic=False)).",
    ]
    if zoo_run is not None:
        folder = zoo_run.parent.parent
        lines += [f"RL zoo layout in {zoo_run} (config.yml declares the pipeline):",
                  f"  python -m rl_zoo3.enjoy --algo dqn --env {env_id} -f {folder} --exp-id 1",
                  f"  python -m rl_zoo3.push_to_hub --algo dqn --env {env_id} -f {folder} --exp-id 1 "
                  "--repo-name NAME -orga USER   (needs internet and a Hugging Face token)"]
    return "\n".join(lines)


def export_student(run: str | Path, game: str, out: str | Path, *, epsilon: float = 0.05,
                   zoo_dir: str | Path | None = None) -> dict[str, Any]:
    """Write ``out`` (an SB3 DQN zip) and ``<out stem>.amn.json``; optionally the zoo layout.

    ``epsilon`` is the zip's ``exploration_rate``, the ε of ``DQN.predict(deterministic=False)``
    (default: ``amn evaluate``'s 0.05). Returns ``{"zip", "side", "zoo_run", "pipeline", "note"}``."""
    from amn.checkpoint import load_checkpoint
    from experts.atari import canonical_game

    out = Path(out)
    if out.suffix != ".zip":
        raise UsageError(f"{out}: the export is an SB3 zip; name it OUT.zip")
    if not 0.0 <= epsilon <= 1.0:
        raise UsageError(f"--epsilon must be in [0, 1], got {epsilon}")
    if not out.parent.is_dir():
        raise UsageError(f"{out.parent} does not exist; create it or write the zip elsewhere")
    try:
        game = canonical_game(game)
    except ValueError as err:
        raise UsageError(str(err)) from None
    ckpt = load_checkpoint(run)
    state, _ = student_weights(ckpt, game)
    pipeline = declared_pipeline(ckpt["config"], game, epsilon=epsilon)
    pipeline["source"] = {"run": str(run), "agent_steps": int(ckpt["counters"]["agent_steps"]),
                          "loss": ckpt["config"].get("loss"), "games": [g["game"] for g in ckpt["config"]["games"]]}
    data = _model_bytes(build_dqn(state, pipeline))
    _write_atomic(out, data)
    side = out.with_name(out.name.removesuffix(".zip") + SIDE_SUFFIX)
    _write_atomic(side, (json.dumps(pipeline, indent=2) + "\n").encode())
    zoo_run = write_zoo_layout(Path(zoo_dir), data, pipeline) if zoo_dir is not None else None
    return {"zip": out, "side": side, "zoo_run": zoo_run, "pipeline": pipeline,
            "note": pipeline_note(pipeline, out, zoo_run)}


def _export(args: argparse.Namespace) -> int:
    result = export_student(args.run, args.game, args.out, epsilon=args.epsilon, zoo_dir=args.zoo_dir)
    print(result["note"])
    return 0


def add_parsers(sub) -> None:
    p = sub.add_parser("export-student", help="write one game's student as a Stable-Baselines3 DQN zip")
    p.add_argument("run", type=Path, help="a student run directory or its checkpoint.pt")
    p.add_argument("out", type=Path, help="OUT.zip (also writes OUT.amn.json beside it)")
    p.add_argument("--game", required=True, help="which of the student's games (e.g. Pong)")
    p.add_argument("--epsilon", type=float, default=0.05, help="exploration_rate saved in the zip (default 0.05)")
    p.add_argument("--zoo-dir", type=Path, default=None,
                   help="also write the RL zoo layout here (dqn/<EnvId>_1/...) for rl_zoo3.enjoy / push_to_hub")
    p.set_defaults(func=_export)
