"""The Atari games and the one observation pipeline the whole project uses.

Every observation an expert or a student sees comes from ``ale_py``'s C++
``AtariVectorEnv`` with its default preprocessing: 84x84 grayscale, frameskip 4
with a max over the last two frames, a stack of 4 frames, up to 30 no-op starts,
FIRE on reset (not after a life loss). Observations are ``uint8 [N, 4, 84, 84]``
(channel first). An expert trained through SB3's ``AtariWrapper`` instead had FIRE
pressed after each life loss too: ``LifeLossFire`` replays that for it.

Reward clipping and life-loss terminals are training conveniences, so they are
done here in Python rather than in C++: the environment always reports raw
rewards and full games, which is what evaluation needs.
"""

from __future__ import annotations

import difflib
import functools
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import numpy as np

#: The project's first 16 games, in the order it has always listed them. ``GAMES`` lists them
#: first because ``experts.zoo`` names a checkpoint by the first game whose ROM id is in its
#: file name: these keep matching as before, and a new, short id (``et``) cannot shadow them.
_PROJECT_GAMES = ("alien", "amidar", "assault", "asterix", "atlantis", "beam_rider", "boxing", "breakout",
                  "crazy_climber", "enduro", "freeway", "ms_pacman", "pong", "qbert", "seaquest", "space_invaders")


_V5_ID = re.compile(r"ALE/(\w+)-v5")


@functools.lru_cache(maxsize=1)
def _ale_games() -> dict[str, str]:
    """Canonical name -> ROM id for every game ale-py registers (104 in ale-py 0.12).

    Read from the ``ALE/<Name>-v5`` ids ale-py registers with gymnasium on import: its names
    (``ms_pacman`` -> ``MsPacman``) and ROM ids (``kwargs["game"]``). Its ROM list
    (``ale_py.roms.get_all_rom_ids()``) has 4 more, multi-player only (Combat, Joust, MazeCraze,
    Warlords): ale-py registers no single-player game for them, and loading one in the
    single-player ALE ends the process (C++ ``exit``), so they are not games here.
    """
    import importlib

    import gymnasium

    importlib.import_module("ale_py")  # registers the ALE envs; here, not at import: it pulls in gymnasium (~0.4 s)

    registered = {}
    for env_id, spec in gymnasium.envs.registry.items():
        match = _V5_ID.fullmatch(env_id)
        if match and isinstance(spec.kwargs.get("game"), str):
            registered[spec.kwargs["game"]] = match.group(1)
    # After the project's games, longer ids first, so experts.zoo's substring match prefers the specific one.
    rest = sorted((r for r in registered if r not in _PROJECT_GAMES), key=lambda r: (-len(r), r))
    return {registered[r]: r for r in (*[r for r in _PROJECT_GAMES if r in registered], *rest)}


class _Games(Mapping[str, str]):
    """Canonical game names (as ale-py's gymnasium ids write them) -> ALE ROM ids, read on first use."""

    def __getitem__(self, name: str) -> str:
        return _ale_games()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(_ale_games())

    def __len__(self) -> int:
        return len(_ale_games())

    def __repr__(self) -> str:
        return f"GAMES({len(self)} games from ale-py)"


#: Canonical game name -> ALE ROM id, for every single-player game ale-py ships; ``for g in GAMES`` lists them.
GAMES: Mapping[str, str] = _Games()

#: The 18 actions of the full ALE action set, in ALE's order.
FULL_ACTION_MEANINGS: tuple[str, ...] = (
    "NOOP", "FIRE", "UP", "RIGHT", "LEFT", "DOWN", "UPRIGHT", "UPLEFT", "DOWNRIGHT",
    "DOWNLEFT", "UPFIRE", "RIGHTFIRE", "LEFTFIRE", "DOWNFIRE", "UPRIGHTFIRE",
    "UPLEFTFIRE", "DOWNRIGHTFIRE", "DOWNLEFTFIRE",
)
NUM_FULL_ACTIONS = len(FULL_ACTION_MEANINGS)

OBS_SHAPE = (4, 84, 84)

#: The pipelines an expert can have been trained through (its ``observation_pipeline``).
#: They differ after a life loss, in two ways that matter to the labels: SB3's
#: ``EpisodicLifeEnv`` + ``VecFrameStack`` start a new, zero-padded frame stack and its
#: ``FireResetEnv`` presses FIRE, while ``AtariVectorEnv`` (``amn experts train``: life loss
#: is only a ``done`` flag for SB3) keeps stacking the game's frames and leaves FIRE to the agent.
PIPELINE_ALE = "ale_py.AtariVectorEnv"
PIPELINE_SB3 = "sb3.AtariWrapper"  # the RL-zoo's checkpoints
PIPELINES = (PIPELINE_ALE, PIPELINE_SB3)


def _check_pipeline(pipeline: str) -> str:
    if pipeline not in PIPELINES:
        raise ValueError(f"unknown observation pipeline {pipeline!r}; expected one of {', '.join(PIPELINES)}")
    return pipeline


def life_loss_restarts_stack(pipeline: str) -> bool:
    """Whether an expert trained through ``pipeline`` saw a fresh frame stack after each life loss."""
    return _check_pipeline(pipeline) == PIPELINE_SB3


def life_loss_presses_fire(pipeline: str) -> bool:
    """Whether ``pipeline`` pressed FIRE for the agent after each life loss.

    SB3's ``AtariWrapper`` ends the agent's episode at a life loss (``EpisodicLifeEnv``) and its
    ``FireResetEnv`` presses FIRE at every reset, so a zoo expert never had to serve the ball
    after losing a life; ``AtariVectorEnv`` presses FIRE only when a new game starts, so an
    expert of ``amn experts train`` learned to press it itself.
    """
    return _check_pipeline(pipeline) == PIPELINE_SB3


class LifeLossFire:
    """Presses FIRE, in place of the agent's action, on the agent step after a life loss.

    What SB3's ``AtariWrapper`` did for a zoo expert, done on a vector of ``AtariVectorEnv``
    envs: ``override`` the actions about to be sent, then ``observe`` the step's life losses.
    The FIRE step counts as an agent step (see ``override``). Where SB3 hid three env steps
    in its reset (NOOP, FIRE, then action 2), this presses FIRE alone: FIRE is what serves the
    ball; the other two only shift the game by 8 frames.

    :param num_envs: envs in the vector
    :param fire: FIRE's index in the actions the caller sends (full or minimal action set)
    """

    def __init__(self, num_envs: int, fire: int):
        self.fire = fire
        self.pending = np.zeros(num_envs, dtype=bool)  # bool [n]: the env lost a life last step

    @classmethod
    def for_game(cls, game: str, num_envs: int, *, full_actions: bool) -> LifeLossFire | None:
        """The presser for ``num_envs`` envs of ``game``, or None if its action set has no FIRE
        (SB3 adds ``FireResetEnv`` only where it has). ``full_actions``: the caller sends indices
        into the 18 full actions (the collector) rather than into the minimal set (evaluation).
        Use it where ``life_loss_presses_fire`` holds for the expert's pipeline."""
        meanings = action_meanings(game)
        if "FIRE" not in meanings:
            return None
        return cls(num_envs, FULL_ACTION_MEANINGS.index("FIRE") if full_actions else meanings.index("FIRE"))

    def reset(self) -> None:
        """A real reset: ``AtariVectorEnv`` presses FIRE itself when a game starts."""
        self.pending[:] = False

    def override(self, actions: np.ndarray) -> np.ndarray:
        """``actions`` ``int [n]`` with FIRE at the envs that lost a life on the last step.

        That step is an agent step, counted, labelled and stored like any other: the vector
        steps all its envs at once, so one env cannot take a step the others do not, and the
        replay stores one state per env per step. It costs one agent step (4 frames) per life
        lost; SB3's hidden steps were 12 frames that counted towards the frame cap too.
        """
        return np.where(self.pending, self.fire, actions)

    def observe(self, life_lost: np.ndarray) -> None:
        """``life_lost`` ``bool [n]``: the envs that lost a life (the game going on) on the step just received."""
        self.pending = np.asarray(life_lost, dtype=bool).copy()


_VERSION_SUFFIX = re.compile(r"(NoFrameskip|Deterministic)?-v\d+$")  # PongNoFrameskip-v4, Pong-v5


def _spelling_key(name: str) -> str:
    """The spelling-free form of a game name: ``"ALE/MsPacman-v5"``, ``"ms_pacman"`` -> ``"mspacman"``."""
    key = _VERSION_SUFFIX.sub("", name.strip().removeprefix("ALE/"))
    return re.sub(r"[\s_-]", "", key).lower()


@functools.lru_cache(maxsize=1)
def _by_key() -> dict[str, str]:
    return {_spelling_key(g): g for g in GAMES}


@functools.lru_cache(maxsize=1)
def _multiplayer_only() -> set[str]:
    """Spelling keys of the ROMs ale-py ships without a single-player game (see ``_ale_games``)."""
    from ale_py import roms

    return {_spelling_key(r) for r in roms.get_all_rom_ids()} - set(_by_key())


def canonical_game(name: str) -> str:
    """Return the canonical name of a game given any common spelling.

    Accepts ``"Pong"``, ``"pong"``, ``"space_invaders"``, ``"SpaceInvaders"``,
    ``"PongNoFrameskip-v4"``, ``"ALE/Pong-v5"``, for every game ale-py ships (``GAMES``).
    Raises ``ValueError`` (one line, with the closest names) otherwise.
    """
    key = _spelling_key(name)
    games = _by_key()
    if key in games:
        return games[key]
    if key in _multiplayer_only():
        raise ValueError(f"{name!r} is a multi-player-only ROM of ale-py (no single-player game to play); "
                         f"pick one of experts.atari.GAMES")
    close = [games[k] for k in difflib.get_close_matches(key, list(games), n=3, cutoff=0.6)]
    hint = f"did you mean {', '.join(close)}?" if close else "no game has a close name;"
    raise ValueError(f"unknown game {name!r}; {hint} ale-py ships {len(games)} games, "
                     f"listed by `python -c 'import experts.atari as a; print(*a.GAMES)'`")


def minimal_action_set(game: str) -> list[int]:
    """Indices (into the 18 full actions) of the game's minimal action set, in ALE order."""
    return list(_minimal_action_set(canonical_game(game)))


@functools.lru_cache(maxsize=None)
def _minimal_action_set(game: str) -> tuple[int, ...]:
    # Read from the ROM itself (~10 ms a game), once per game and process.
    import ale_py
    from ale_py import roms

    ale_py.ALEInterface.setLoggerMode(ale_py.LoggerMode.Error)  # before construction, or it prints a banner
    ale = ale_py.ALEInterface()
    ale.loadROM(roms.get_rom_path(GAMES[game]))
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


def life_losses(before: np.ndarray, after: np.ndarray, done: np.ndarray) -> np.ndarray:
    """``bool [n]``: the envs whose lives went down from ``before`` to ``after`` (``int [n]``) on a
    step that did not end the game (``done``): at a game over the next game's lives are reported."""
    return (after < before) & ~done


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
        life_lost = life_losses(self.lives, lives, done)
        finished = [(i, float(self.returns[i]), int(self.lengths[i])) for i in np.flatnonzero(done)]
        self.returns[done] = 0
        self.lengths[done] = 0
        self.lives[:] = lives
        return finished, life_lost
