"""``experts.atari``: every single-player game ale-py ships, its spellings, its minimal action set,
its env; ``amn.evaluation.HUMAN_RANDOM``: the Atari-57 reference scores."""

from __future__ import annotations

import importlib

import numpy as np
import pytest

from amn.config import load_config
from amn.evaluation import HUMAN_RANDOM
from experts.atari import (GAMES, NUM_FULL_ACTIONS, EnvSettings, action_meanings, canonical_game, make_atari_vec,
                           minimal_action_set)

PROJECT_GAMES = ["Alien", "Amidar", "Assault", "Asterix", "Atlantis", "BeamRider", "Boxing", "Breakout", "CrazyClimber",
                 "Enduro", "Freeway", "MsPacman", "Pong", "Qbert", "Seaquest", "SpaceInvaders"]
#: Reset and stepped; the other games are created only (a ROM load costs ~0.05 s of CPU, a reset as much again).
STEPPED = ["Pong", "MsPacman", "Qbert", "MontezumaRevenge", "Tetris", "VideoCube", "TicTacToe3D", "Pitfall2", "Et",
           "KungFuMaster"]


def test_games_are_ale_pys_single_player_games():
    roms = importlib.import_module("ale_py.roms").get_all_rom_ids()
    assert set(GAMES.values()) == set(roms) - {"combat", "joust", "maze_craze", "warlords"}  # multi-player only
    assert list(GAMES)[:16] == PROJECT_GAMES  # the names the project has always used, unchanged and first
    assert {"MontezumaRevenge", "KungFuMaster", "UpNDown", "Jamesbond", "Hero", "TicTacToe3D"} <= set(GAMES)


def test_every_game_canonicalises_in_every_spelling():
    for game, rom in GAMES.items():
        for spelling in (game, game.lower(), game.upper(), rom, f"{game}NoFrameskip-v4", f"ALE/{game}-v5",
                         f"{game}Deterministic-v4", f" {rom} "):
            assert canonical_game(spelling) == game, spelling
    assert canonical_game("montezuma_revenge") == "MontezumaRevenge" and canonical_game("james_bond") == "Jamesbond"


def test_misspelt_game_gets_one_line_with_the_closest_names():
    with pytest.raises(ValueError, match=r"unknown game 'MontezumasRevenge'; did you mean MontezumaRevenge") as err:
        canonical_game("MontezumasRevenge")
    assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match=r"unknown game 'xyzzy'; no game has a close name"):
        canonical_game("xyzzy")
    with pytest.raises(ValueError, match=r"'Combat' is a multi-player-only ROM"):
        canonical_game("Combat")  # loading it would end the process (ALE's C++ exit)


def test_every_game_has_a_minimal_action_set_and_an_env():
    """The whole list: each game's minimal action set, an env over it (created; a handful stepped)."""
    bad = []
    for game in GAMES:
        actions = minimal_action_set(game)
        # Not always NOOP first: Backgammon's and VideoCheckers' sets start at FIRE.
        if not actions or sorted(set(actions)) != actions or not 0 <= actions[0] <= actions[-1] < NUM_FULL_ACTIONS:
            bad.append(f"{game}: minimal action set {actions}")
        env = make_atari_vec(game, 1, settings=EnvSettings(noop_max=0, max_frames=400))
        try:
            if env.single_action_space.n != len(actions):
                bad.append(f"{game}: env has {env.single_action_space.n} actions, minimal set {len(actions)}")
            if game in STEPPED:
                env.reset(seed=0)
                for _ in range(3):
                    obs, reward, *_ = env.step(np.full(1, len(actions) - 1, dtype=np.int64))
                if obs.shape != (1, 4, 84, 84) or obs.dtype != np.uint8 or not np.isfinite(reward).all():
                    bad.append(f"{game}: step gave obs {obs.shape} {obs.dtype}, reward {reward}")
        finally:
            env.close()
    assert not bad, bad
    assert action_meanings("MsPacman")[0] == "NOOP" and len(minimal_action_set("ms_pacman")) == 9


def test_new_games_as_config_games():
    cfg = load_config("configs/smoke.yaml", ["games=[{game: ms_pacman, expert: mspacman}, {game: QbertNoFrameskip-v4, "
                                             "expert: qbert}, {game: ALE/MontezumaRevenge-v5, expert: montezuma}]"])
    assert [g.game for g in cfg.games] == ["MsPacman", "Qbert", "MontezumaRevenge"]


def test_human_random_is_the_atari_57_table():
    assert len(HUMAN_RANDOM) == 57 and all(canonical_game(g) == g for g in HUMAN_RANDOM)
    assert all(random < human for random, human in HUMAN_RANDOM.values())
    known = {"Pong": (-20.7, 14.6), "Breakout": (1.7, 30.5), "SpaceInvaders": (148.0, 1_668.7),
             "Atlantis": (12_850.0, 29_028.1), "MsPacman": (307.3, 6_951.6), "Qbert": (163.9, 13_455.0),
             "MontezumaRevenge": (0.0, 4_753.3), "Alien": (227.8, 7_127.7),
             # the 8 games the project had before the table grew: unchanged
             "Boxing": (0.1, 12.1), "CrazyClimber": (10_780.5, 35_829.4), "Enduro": (0.0, 860.5),
             "Seaquest": (68.4, 42_054.7)}
    assert {g: HUMAN_RANDOM[g] for g in known} == known
