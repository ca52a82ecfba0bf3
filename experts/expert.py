"""``Expert``: a frozen Atari expert for inference, and ``load_expert`` to get one.

An expert maps observations ``uint8 [B, 4, 84, 84]`` (exactly what
``AtariVectorEnv`` returns, channel first) to raw action values over its
game's minimal action set: Q-values for DQN (mean over quantiles for QR-DQN),
policy logits for PPO/A2C.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from experts.atari import (OBS_SHAPE, PIPELINE_ALE, PIPELINES, action_meanings, canonical_game,
                           life_loss_restarts_stack, minimal_action_set)
from experts.network import ExpertNetwork
from experts.shipped import SHIPPED_DIR, read_metadata, sha256_file, shipped_names


class Expert:
    """A loaded expert: CPU, eval mode, channels-last, no gradients.

    :param net: the network, weights loaded
    :param game: canonical game name (``"Pong"``)
    :param algo: ``"ppo"``, ``"a2c"``, ``"dqn"`` or ``"qrdqn"``
    :param meta: provenance (format, source file, training steps, seed, score if known,
        ``observation_pipeline``: one of ``experts.atari.PIPELINES``)
    :param name: the name it was loaded by (shipped/registered name or file name)
    """

    def __init__(self, net: ExpertNetwork, game: str, algo: str, meta: dict | None = None, name: str | None = None):
        self.net = net.float().eval().to(memory_format=torch.channels_last)
        for p in self.net.parameters():
            p.requires_grad_(False)
        self.game = game
        self.algo = algo
        self.meta = dict(meta or {})
        self.name = name or game.lower()
        self.action_set: list[int] = minimal_action_set(game)
        self.action_meanings: list[str] = action_meanings(game)
        # How it was trained to see the game (experts.atari.PIPELINES); a network built by hand is ours.
        self.observation_pipeline: str = self.meta.get("observation_pipeline", PIPELINE_ALE)
        self.life_loss_restarts_stack: bool = life_loss_restarts_stack(self.observation_pipeline)
        if net.num_actions != len(self.action_set):
            raise ValueError(f"{self.name}: network has {net.num_actions} outputs but {game}'s minimal action set "
                             f"has {len(self.action_set)}; the weights belong to another game")

    @property
    def num_actions(self) -> int:
        return len(self.action_set)

    def __repr__(self) -> str:
        return f"Expert(name={self.name!r}, game={self.game!r}, algo={self.algo!r}, num_actions={self.num_actions})"

    def _input(self, obs) -> torch.Tensor:
        """Validate ``uint8 [B, 4, 84, 84]`` and return it as float in [0, 1], channels-last."""
        if isinstance(obs, np.ndarray):
            shape, dtype = tuple(obs.shape), obs.dtype
            ok_dtype = dtype == np.uint8
        elif isinstance(obs, torch.Tensor):
            shape, dtype = tuple(obs.shape), obs.dtype
            ok_dtype = dtype == torch.uint8
        else:
            raise ValueError(f"{self.name}: observations must be a uint8 numpy array or tensor of shape "
                             f"[B, {', '.join(map(str, OBS_SHAPE))}], got {type(obs).__name__}")
        if len(shape) != 4 or shape[1:] != OBS_SHAPE or not ok_dtype:
            raise ValueError(f"{self.name}: expected observations uint8 [B, {', '.join(map(str, OBS_SHAPE))}] "
                             f"(AtariVectorEnv, channel first), got {dtype} {list(shape)}")
        x = torch.as_tensor(obs, device="cpu")
        return x.to(torch.float32).div_(255.0).contiguous(memory_format=torch.channels_last)

    def values(self, obs) -> torch.Tensor:
        """Raw action values ``float32 [B, num_actions]`` (Q-values or policy logits)."""
        x = self._input(obs)
        with torch.inference_mode():
            out = self.net(x)
        # An inference tensor cannot be saved for backward: a loss using it as a target would raise.
        return out.clone()

    def features(self, obs) -> torch.Tensor:
        """Penultimate-layer activations ``float32 [B, 512]`` (post-ReLU), for feature regression."""
        x = self._input(obs)
        with torch.inference_mode():
            out = self.net.features(x)
        return out.clone()

    def soft_policy(self, obs, temperature: float = 1.0) -> torch.Tensor:
        """``softmax(values / temperature)``: probabilities ``float32 [B, num_actions]``, rows sum to 1."""
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        return torch.softmax(self.values(obs) / temperature, dim=-1)

    def act(self, obs) -> np.ndarray:
        """Greedy actions ``int64 [B]`` in minimal-action-set indices (for ``amn.evaluation.play_games``)."""
        return self.values(obs).argmax(dim=-1).numpy()

    def sampler(self, seed: int = 0) -> Callable[[np.ndarray], np.ndarray]:
        """An actor drawing actions ``int64 [B]`` from ``softmax(logits)``, reproducible for a seed.

        This is how the rl-zoo plays Atari with its policy-gradient agents (``enjoy.py`` is
        stochastic for Atari); Q-values have no policy to sample, so DQN experts refuse.
        """
        if self.algo not in ("ppo", "a2c"):
            raise ValueError(f"{self.name}: a {self.algo} expert has Q-values, not a policy to sample; "
                             "evaluate it greedily (--policy greedy, with --epsilon)")
        generator = torch.Generator().manual_seed(seed)

        def act(obs) -> np.ndarray:
            return torch.multinomial(self.soft_policy(obs), 1, generator=generator).squeeze(1).numpy()

        return act


def load_expert(name_or_path: str | Path, *, game: str | None = None) -> Expert:
    """Load a shipped expert (``pong``, ...), a registered one, or a file.

    Files: an SB3 ``model.save`` zip (PPO/A2C/DQN/QR-DQN ``CnnPolicy``; ``game``
    needed only if neither the zip nor its name tells) or the project's own
    ``<name>.json`` + ``<name>.pt`` (either path). If ``game`` is given, the
    expert must play it. Errors are one-line ``ValueError``/``FileNotFoundError``
    naming the file and what to do.
    """
    expert = _load(name_or_path, game)
    if game is not None and canonical_game(game) != expert.game:
        raise ValueError(f"{expert.meta.get('source', name_or_path)}: expert {expert.name!r} plays {expert.game}, "
                         f"not {canonical_game(game)}; pick an expert for {canonical_game(game)}")
    return expert


def _load(name_or_path: str | Path, game: str | None) -> Expert:
    from experts import registry
    from experts.zoo import read_sb3_zip

    path = Path(name_or_path)
    if path.is_file() or path.suffix.lower() in (".zip", ".pt", ".json") or len(path.parts) > 1:
        if path.suffix.lower() in (".pt", ".json"):
            return load_own(path)
        ckpt = read_sb3_zip(path, game=game)
        net = ExpertNetwork(len(ckpt.state_dict["head.bias"]))
        net.load_state_dict(ckpt.state_dict)
        return Expert(net, ckpt.game, ckpt.algo, ckpt.meta, name=path.stem)

    name = str(name_or_path).lower()
    own = SHIPPED_DIR / f"{name}.json"
    if own.is_file():
        return load_own(own, name=name)
    entries = registry.load_registry()
    if name in entries:
        entry = entries[name]
        target = Path(entry.get("path", ""))
        if not target.is_file():
            raise FileNotFoundError(f"{registry.registry_path()}: expert {name!r} points to {target}, which is missing; "
                                    f"re-run `amn experts import PATH --name {name}`")
        expert = _load(target, entry.get("game"))
        expert.name = name
        return expert
    known = sorted(set(shipped_names()) | set(entries))
    raise FileNotFoundError(f"unknown expert {name_or_path!r}: not a file, not shipped, not in "
                            f"{registry.registry_path()} (known: {', '.join(known) or 'none'}); "
                            f"give a path or run `amn experts import PATH --name NAME`")


def load_own(path: str | Path, name: str | None = None):
    """Load ``<name>.json`` + its ``.pt`` (either path may be given) as an :class:`experts.Expert`."""
    json_path = Path(path).with_suffix(".json")
    meta = read_metadata(json_path)
    pt = json_path.parent / meta["weights"]
    if not pt.is_file():
        raise FileNotFoundError(f"{pt}: weights file named by {json_path} is missing; copy it beside the .json or re-export")
    digest = sha256_file(pt)
    if digest != meta["sha256"]:
        raise ValueError(f"{pt}: sha256 mismatch (file {digest[:12]}…, {json_path.name} says {str(meta['sha256'])[:12]}…): "
                         f"the weights were modified or truncated; restore or re-export them")
    try:
        game = canonical_game(str(meta["game"]))
    except ValueError as err:
        raise ValueError(f"{json_path}: {err}; fix the 'game' key") from None
    if meta["observation_pipeline"] not in PIPELINES:
        raise ValueError(f"{json_path}: observation_pipeline {meta['observation_pipeline']!r} is not one of "
                         f"{', '.join(PIPELINES)}; re-export it with `amn experts export`")
    action_set = minimal_action_set(game)
    if list(meta["action_set"]) != action_set or int(meta["num_actions"]) != len(action_set):
        raise ValueError(f"{json_path}: action_set {meta['action_set']} (num_actions {meta['num_actions']}) is not "
                         f"{game}'s minimal action set {action_set}; re-export it")
    try:
        state = torch.load(pt, map_location="cpu", weights_only=True)
        net = ExpertNetwork(len(action_set))
        net.load_state_dict({k: v.float() for k, v in state.items()})
    except Exception as err:  # any unreadable or mismatched weights file
        raise ValueError(f"{pt}: cannot load weights ({type(err).__name__}: {str(err).splitlines()[0]}); "
                         f"re-export it with `amn experts export`") from None
    info = dict(meta, format="own", source=str(json_path))
    return Expert(net, game, str(meta["algo"]), info, name=name or json_path.stem)
