"""Play an exported student (``amn export-student``) with Stable-Baselines3 alone.

This file imports only SB3, gymnasium, ale_py, numpy and torch, never ``amn`` or ``experts``:
copy it beside an exported zip and it runs where amn is not installed (``python sb3_pipeline.py
OUT.zip --episodes 8`` prints the scores as JSON).

An export declares the observation pipeline its student expects in ``model.amn_pipeline`` (a
plain dict that ``DQN.load`` restores, also written to ``<OUT>.amn.json`` and, for the RL zoo, as
``env_wrapper``/``frame_stack`` in ``config.yml``)::

    {"trained_on": "ale_py.AtariVectorEnv", "life_loss": {"new_stack": False, "fire": False},
     "sb3": {"env_id": "PongNoFrameskip-v4", "frame_stack": 4, "env_wrapper":
             {"stable_baselines3.common.atari_wrappers.AtariWrapper": {"terminal_on_life_loss": False, ...}}}}

:func:`make_declared_env` builds that SB3 pipeline (``make_atari_env`` + ``VecFrameStack(4)`` +
``VecTransposeImage``: ``uint8 [N, 4, 84, 84]``); :func:`check_pipeline` compares any VecEnv with
the declaration, raises :class:`PipelineMismatch` where the student cannot see the right input at
all (no 4-frame stack, another image size) and warns (:class:`PipelineWarning`, or raises with
``strict=True``) where it sees another game than it learned (life-loss handling, unknown frames).
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from typing import Any

import numpy as np

ATARI_WRAPPER = "stable_baselines3.common.atari_wrappers.AtariWrapper"
PIPELINE_ALE = "ale_py.AtariVectorEnv"  # same string as experts.atari.PIPELINE_ALE
PIPELINE_SB3 = "sb3.AtariWrapper"  # same string as experts.atari.PIPELINE_SB3
OBS_SHAPE = (4, 84, 84)


class PipelineMismatch(ValueError):
    """The env cannot give the exported student the observations it was trained on."""


class PipelineWarning(UserWarning):
    """The env differs from the declared pipeline in a way that may change the student's score."""


def declared(model_or_pipeline: Any) -> dict[str, Any]:
    """The pipeline dict of a loaded export (``model.amn_pipeline``) or the dict itself."""
    pipeline = getattr(model_or_pipeline, "amn_pipeline", model_or_pipeline)
    if not isinstance(pipeline, dict) or "sb3" not in pipeline:
        raise PipelineMismatch("this model declares no amn observation pipeline (no model.amn_pipeline): "
                               "export the student with `amn export-student`")
    return pipeline


def wrapper_kwargs(pipeline: dict[str, Any]) -> dict[str, Any]:
    """The declared ``AtariWrapper`` keyword arguments."""
    return dict(declared(pipeline)["sb3"]["env_wrapper"][ATARI_WRAPPER])


def make_declared_env(pipeline: Any, n_envs: int = 1, *, seed: int = 0, env_kwargs: dict | None = None,
                      overrides: dict[str, Any] | None = None):
    """The SB3 pipeline the export declares: ``uint8 [n_envs, 4, 84, 84]`` observations, a
    ``Monitor`` under the wrapper (``info["episode"]["r"]`` is the raw full-game score).

    ``overrides`` changes ``AtariWrapper`` arguments (to play through another pipeline on purpose);
    ``env_kwargs`` goes to the ALE env (e.g. ``max_num_frames_per_episode``)."""
    import ale_py
    import gymnasium as gym
    from stable_baselines3.common.env_util import make_atari_env
    from stable_baselines3.common.vec_env import VecFrameStack, VecTransposeImage

    gym.register_envs(ale_py)
    sb3 = declared(pipeline)["sb3"]
    kwargs = {**wrapper_kwargs(pipeline), **(overrides or {})}
    venv = make_atari_env(sb3["env_id"], n_envs=n_envs, seed=seed, wrapper_kwargs=kwargs,
                          env_kwargs={**sb3.get("env_kwargs", {}), **(env_kwargs or {})})
    return VecTransposeImage(VecFrameStack(venv, n_stack=int(sb3["frame_stack"])))


def describe_env(venv) -> dict[str, Any]:
    """What a VecEnv feeds an agent: ``frames`` (``PIPELINE_SB3``, ``PIPELINE_ALE`` or
    ``"unknown"``), ``frame_stack`` (frames per observation) and ``terminal_on_life_loss`` (both
    None where the frames are unknown), ``observation`` (shape, dtype of one env's observation)."""
    from stable_baselines3.common.atari_wrappers import AtariWrapper, EpisodicLifeEnv
    from stable_baselines3.common.vec_env import VecEnvWrapper, VecFrameStack

    stack = 1
    base = venv
    while isinstance(base, VecEnvWrapper):
        if isinstance(base, VecFrameStack):
            stack *= base.stacked_obs.n_stack
        base = base.venv
    space = venv.observation_space
    out: dict[str, Any] = {"observation": (tuple(space.shape), str(space.dtype)),
                           "frames": "unknown", "terminal_on_life_loss": None, "frame_stack": None}
    inner = getattr(base, "env", None)  # experts.sb3_vec_env.AleVecEnv wraps an AtariVectorEnv here
    if type(inner).__name__ == "AtariVectorEnv" or type(base).__name__ == "AtariVectorEnv":
        # AtariVectorEnv stacks 4 frames itself; a life loss is at most a `done` flag.
        out.update(frames=PIPELINE_ALE, frame_stack=stack * OBS_SHAPE[0],
                   terminal_on_life_loss=bool(getattr(base, "life_loss_done", False)))
    elif hasattr(base, "env_is_wrapped") and all(base.env_is_wrapped(AtariWrapper)):
        # AtariWrapper gives one grayscale frame per step: the stack is VecFrameStack's.
        out.update(frames=PIPELINE_SB3, frame_stack=stack,
                   terminal_on_life_loss=all(base.env_is_wrapped(EpisodicLifeEnv)))
    return out


def check_pipeline(model_or_pipeline: Any, venv, *, strict: bool = False) -> list[str]:
    """Compare ``venv`` with the declared pipeline; return the differences found (``[]``: none).

    Raises :class:`PipelineMismatch` for an input the student cannot read (not ``uint8`` 4x84x84
    in either channel order, or not 4 stacked frames); warns once per other difference, or raises
    for it too if ``strict``. The student's own training frames (``AtariVectorEnv``) count as
    matching, like the declared ``AtariWrapper``; a different life-loss handling does not."""
    pipeline = declared(model_or_pipeline)
    seen = describe_env(venv)
    if seen["frame_stack"] not in (None, OBS_SHAPE[0]):
        raise PipelineMismatch(f"the env stacks {seen['frame_stack']} frames, the student reads "
                               f"{OBS_SHAPE[0]}: wrap it in VecFrameStack(venv, 4) (the zoo's frame_stack: 4)")
    shape, dtype = seen["observation"]
    if dtype != "uint8" or shape not in (OBS_SHAPE, (*OBS_SHAPE[1:], OBS_SHAPE[0])):
        raise PipelineMismatch(f"the env gives {dtype} {shape} observations; the exported student reads "
                               f"uint8 {OBS_SHAPE}: use amn.sb3_pipeline.make_declared_env")
    problems = []
    if seen["frames"] == "unknown":
        problems.append(f"frames from an unrecognised pipeline; the student was trained on "
                        f"{pipeline['trained_on']} frames and declares {ATARI_WRAPPER}")
    wanted = bool(wrapper_kwargs(pipeline).get("terminal_on_life_loss", True))
    if seen["terminal_on_life_loss"] is not None and seen["terminal_on_life_loss"] != wanted:
        learned = ("a new frame stack and FIRE pressed for it" if wanted
                   else "the same frame stack, and to press FIRE itself")
        problems.append(f"terminal_on_life_loss={seen['terminal_on_life_loss']} but the student expects "
                        f"{wanted} (after a life loss it learned {learned})")
    for problem in problems:
        if strict:
            raise PipelineMismatch(f"observation pipeline differs from the export's: {problem}")
        warnings.warn(f"observation pipeline differs from the export's: {problem}", PipelineWarning, stacklevel=2)
    return problems


def play(model, venv, episodes: int, *, epsilon: float = 0.05, seed: int = 0,
         record: int = 0) -> tuple[list[float], np.ndarray]:
    """Raw full-game scores of ``episodes`` games, greedy via ``model.predict(deterministic=True)``
    with ε-greedy noise drawn here (per env, seeded), as ``amn.evaluation.play_games`` does.

    Each env plays a fixed share of the games (``episodes`` split evenly), so short games are not
    favoured. Also returns up to ``record`` observations seen, ``uint8 [record, 4, 84, 84]``
    (channel first, as the Q-network reads them), for checking the greedy actions elsewhere."""
    n = venv.num_envs
    quota = np.array([episodes // n + (i < episodes % n) for i in range(n)])
    played = np.zeros(n, dtype=np.int64)
    rng = np.random.default_rng(seed)
    num_actions = int(model.action_space.n)
    returns: list[float] = []
    kept: list[np.ndarray] = []
    obs = venv.reset()
    step = 0
    while (played < quota).any():
        actions, _ = model.predict(obs, deterministic=True)
        explore = rng.random(n) < epsilon
        actions = np.where(explore, rng.integers(0, num_actions, n), actions)
        if len(kept) < record and step % 7 == 0:  # spread over the game, not the first frames only
            kept.append(np.asarray(obs[0]))
        obs, _, _, infos = venv.step(actions)
        step += 1
        for i, info in enumerate(infos):
            if "episode" in info and played[i] < quota[i]:  # Monitor: a real game over, raw score
                returns.append(float(info["episode"]["r"]))
                played[i] += 1
    frames = np.stack(kept) if kept else np.zeros((0, *OBS_SHAPE), np.uint8)
    return returns, frames


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="play an amn-exported student through its declared SB3 pipeline")
    parser.add_argument("zip")
    parser.add_argument("--episodes", type=int, default=8)
    parser.add_argument("--epsilon", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--envs", type=int, default=4)
    parser.add_argument("--max-frames", type=int, default=None, help="per-game frame cap")
    parser.add_argument("--record", type=int, default=0, help="also save this many observations")
    parser.add_argument("--record-to", default=None, help=".npy file for --record")
    parser.add_argument("--override", default="{}", help="JSON AtariWrapper kwargs to play another pipeline")
    args = parser.parse_args(argv)
    from stable_baselines3 import DQN

    model = DQN.load(args.zip, device="cpu", buffer_size=1)
    env_kwargs = {} if args.max_frames is None else {"max_num_frames_per_episode": args.max_frames}
    venv = make_declared_env(model, args.envs, seed=args.seed, env_kwargs=env_kwargs,
                             overrides=json.loads(args.override))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", PipelineWarning)
        problems = check_pipeline(model, venv)
    try:
        returns, frames = play(model, venv, args.episodes, epsilon=args.epsilon, seed=args.seed, record=args.record)
    finally:
        venv.close()
    if args.record_to:
        np.save(args.record_to, frames)
    print(json.dumps({"returns": returns, "mean": float(np.mean(returns)), "problems": problems,
                      "warnings": [str(w.message) for w in caught],
                      "amn_loaded": any(m == "amn" or m.startswith(("amn.", "experts")) for m in sys.modules)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
