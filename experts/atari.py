"""The Atari games and the one observation pipeline the whole project uses.

Every observation an expert or a student sees comes from ``ale_py``'s C++
``AtariVectorEnv`` with its default preprocessing: 84x84 grayscale, frameskip 4
with a max over the last two frames, a stack of 4 frames, up to 30 no-op starts,
FIRE on reset. Observations are ``uint8 [N, 4, 84, 84]`` (channel first).

Reward clipping and life-loss terminals are training conveniences, so they are
done here in Python rather than in C++: the environment always reports raw
rewards and full games, which is what evaluation needs.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

#: Canonical game names (as the papers write them) -> ALE ROM ids.
GAMES: dict[str, str] = {
    "Alien": "alien",
    "Amidar": "amidar",
    "Assault": "assault",
    "Asterix": "asterix",
    "Atlantis": "atlantis",
    "BeamRider": "beam_rider",
    "Boxing": "boxing",
    "Breakout": "breakout",
    "CrazyClimber": "crazy_climber",
    "Enduro": "enduro",
    "Freeway": "freeway",
    "MsPacman": "ms_pacman",
    "Pong": "pong",
    "Qbert": "qbert",
    "Seaquest": "seaquest",
    "SpaceInvaders": "space_invaders",
}

#: The 18 actions of the full ALE action set, in ALE's order.
FULL_ACTION_MEANINGS: tuple[str, ...] = (
    "NOOP", "FIRE", "UP", "RIGHT", "LEFT", "DOWN", "UPRIGHT", "UPLEFT", "DOWNRIGHT",
    "DOWNLEFT", "UPFIRE", "RIGHTFIRE", "LEFTFIRE", "DOWNFIRE", "UPRIGHTFIRE",
    "UPLEFTFIRE", "DOWNRIGHTFIRE", "DOWNLEFTFIRE",
)
NUM_FULL_ACTIONS = len(FULL_ACTION_MEANINGS)

OBS_SHAPE = (4, 84, 84)

#: The pipelines an expert can have been trained through (its ``observation_pipeline``).
#: They differ in one way that matters to the labels: after a life loss SB3's
#: ``EpisodicLifeEnv`` + ``VecFrameStack`` start a new, zero-padded frame stack, while
#: ``AtariVectorEnv`` (``amn experts train``: life loss is only a ``done`` flag for SB3)
#: keeps stacking the game's frames.
PIPELINE_ALE = "ale_py.AtariVectorEnv"
PIPELINE_SB3 = "sb3.AtariWrapper"  # the RL-zoo's checkpoints
PIPELINES = (PIPELINE_ALE, PIPELINE_SB3)


def life_loss_restarts_stack(pipeline: str) -> bool:
    """Whether an expert trained through ``pipeline`` saw a fresh frame stack after each life loss."""
    if pipeline not in PIPELINES:
        raise ValueError(f"unknown observation pipeline {pipeline!r}; expected one of {', '.join(PIPELINES)}")
    return pipeline == PIPELINE_SB3


def canonical_game(name: str) -> str:
    """Return the canonical name of a game given any common spelling.

    Accepts ``"Pong"``, ``"pong"``, ``"space_invaders"``, ``"SpaceInvaders"``,
    ``"PongNoFrameskip-v4"``, ``"ALE/Pong-v5"``. Raises ``ValueError`` otherwise.
    """
    key = name.strip()
    for prefix in ("ALE/",):
        key = key.removeprefix(prefix)
    for suffix in ("NoFrameskip-v4", "Deterministic-v4", "-v5", "-v4"):
        key = key.removesuffix(suffix)
    key = key.replace("_", "").replace("-", "").lower()
    for game in GAMES:
        if game.lower() == key:
            return game
    raise ValueError(
        f"unknown game {name!r}; known games: {', '.join(GAMES)}"
    )


def minimal_action_set(game: str) -> list[int]:
    """Indices (into the 18 full actions) of the game's minimal action set, in ALE order."""
    return list(_minimal_action_set(canonical_game(game)))


@functools.lru_cache(maxsize=None)
def _minimal_action_set(game: str) -> tuple[int, ...]:
    import ale_py
    from ale_py import roms

    ale_py.ALEInterface.setLoggerMode(ale_py.LoggerMode.Error)  # before construction, or it prints a banner
    ale = ale_py.ALEInterface()
    ale.loadROM(roms.get_rom_path(GAMES[canonical_game(game)]))
    return tuple(int(a.value) for a in ale.getMinimalActionSet())


def action_meanings(game: str) -> list[str]:
    return [FULL_ACTION_MEANINGS[a] for a in minimal_action_set(game)]


@dataclass(frozen=True)
class EnvSettings:
    """How the ALE is driven. Defaults are the project's protocol (no sticky actions)."""

    sticky: bool = False
    noop_max: int = 30
    max_frames: int = 108_000

    @property
    def repeat_action_probability(self) -> float:
        return 0.25 if self.sticky else 0.0


def make_atari_vec(
    game: str,
    num_envs: int,
    *,
    settings: EnvSettings = EnvSettings(),
    num_threads: int = 0,
):
    """An ``AtariVectorEnv`` over the game's minimal action set, raw rewards, full games.

    Autoreset is SAME_STEP: the observation returned at a terminal step is the
    first one of the next game, the last one is in ``info["final_obs"]``.
    """
    from ale_py.vector_env import AtariVectorEnv

    return AtariVectorEnv(
        GAMES[canonical_game(game)],
        num_envs,
        num_threads=num_threads,
        repeat_action_probability=settings.repeat_action_probability,
        noop_max=settings.noop_max,
        max_num_frames_per_episode=settings.max_frames,
        autoreset_mode="SameStep",
        episodic_life=False,
        reward_clipping=False,
    )


class GameTracker:
    """Tracks raw full-game returns and life losses for a vector of envs.

    ``update`` takes one step's rewards/terminals/truncations/lives and returns
    the returns (and lengths in agent steps) of the games that just ended, and a
    mask of envs that lost a life this step without the game ending.
    """

    def __init__(self, num_envs: int):
        self.returns = np.zeros(num_envs, dtype=np.float64)
        self.lengths = np.zeros(num_envs, dtype=np.int64)
        self.lives = np.full(num_envs, -1, dtype=np.int64)

    def reset(self, lives: np.ndarray) -> None:
        self.returns[:] = 0
        self.lengths[:] = 0
        self.lives[:] = lives

    def update(self, rewards, terminated, truncated, lives):
        self.returns += rewards
        self.lengths += 1
        done = np.logical_or(terminated, truncated)
        life_lost = (lives < self.lives) & ~done
        finished = [(i, float(self.returns[i]), int(self.lengths[i])) for i in np.flatnonzero(done)]
        self.returns[done] = 0
        self.lengths[done] = 0
        self.lives[:] = lives
        return finished, life_lost
