"""The project's observation pipeline, frame by frame, with RGB screens: :class:`RGBAtariEnv`.

``ale_py``'s ``AtariVectorEnv`` has no RGB frames, so videos (``amn/video.py``) play through one
``gymnasium`` ALE env (``ALE/<Game>-v5``, ``frameskip=1``, minimal action set,
``render_mode="rgb_array"``) driven the way ``AtariVectorEnv``'s C++ ``PreprocessedEnv`` drives
its ALE: the ALE seeded with the seed, FIRE on reset (games that have it), the same
``std::mt19937`` no-op draw, frameskip 4 with a max over the last two grayscale frames,
``cv2.INTER_AREA`` 84x84 resize, a zero-padded stack of 4. Its observations equal
``experts.atari.make_atari_vec``'s for the same seed and actions (``tests/test_video.py``).
"""

from __future__ import annotations

import numpy as np

SCREEN_SHAPE = (210, 160, 3)


def _rom_path(game: str) -> str:
    from ale_py import roms

    from experts.atari import GAMES

    return str(roms.get_rom_path(GAMES[game]))


def _mt19937_uniform(seed: int, high: int) -> int:
    """``std::uniform_int_distribution<int>(0, high)(std::mt19937(seed))``, as libstdc++ draws it.

    ``RandomState(seed)`` is seeded like ``std::mt19937(seed)`` (``init_genrand``) and yields its
    32-bit outputs; libstdc++ maps them to ``[0, high]`` by Lemire's multiply-shift with rejection
    (GCC >= 11; the older divide-and-reject gives the same value unless a draw is rejected).
    """
    rs = np.random.RandomState(seed & 0xFFFFFFFF)
    n = high + 1
    threshold = (2**32 - n) % n
    while True:
        product = int(rs.randint(0, 2**32, dtype=np.uint64)) * n
        if (product & 0xFFFFFFFF) >= threshold:
            return product >> 32


class RGBAtariEnv:
    """One game through the project's observation pipeline, with every emulator frame in RGB.

    ``reset(seed)`` and ``step(action)`` return what one env of ``experts.atari.make_atari_vec``
    returns (``uint8 [4, 84, 84]`` observations, raw rewards, full games, ``lives``; no
    autoreset: a finished game is over until the next ``reset``); ``step`` also returns the
    RGB screens ``uint8 [k, 210, 160, 3]`` of the ``k <= 4`` frames it emulated and the reward of
    each. ``action`` indexes the game's minimal action set.
    """

    def __init__(self, game: str, *, sticky: bool = False, noop_max: int = 30, max_frames: int = 108_000):
        import ale_py
        import gymnasium as gym

        from experts.atari import EnvSettings, canonical_game

        self.game = canonical_game(game)
        settings = EnvSettings(sticky=sticky, noop_max=noop_max, max_frames=max_frames)
        gym.register_envs(ale_py)
        ale_py.ALEInterface.setLoggerMode(ale_py.LoggerMode.Error)
        # frameskip 1 and no frame cap in the ALE: the pipeline below skips frames and caps the game.
        self.env = gym.make(f"ALE/{self.game}-v5", frameskip=1,
                            repeat_action_probability=settings.repeat_action_probability,
                            full_action_space=False, render_mode="rgb_array", max_num_frames_per_episode=0)
        self._atari = self.env.unwrapped  # ale_py's AtariEnv: render() is its ALE's getScreenRGB()
        self.ale = self._atari.ale
        self.action_set = list(self.ale.getMinimalActionSet())
        self.has_fire = ale_py.Action.FIRE in self.action_set
        self.noop_max, self.max_frames = noop_max, max_frames
        self.rom = _rom_path(self.game)
        h, w = self.ale.getScreenDims()
        self._raw = [np.zeros((h, w), np.uint8), np.zeros((h, w), np.uint8)]  # the two frames to max-pool
        self._stack = np.zeros((4, 84, 84), np.uint8)
        self.elapsed = 0
        self.lives = 0
        self.over = True

    def close(self) -> None:
        self.env.close()

    def render(self) -> np.ndarray:
        """The screen now, ``uint8 [210, 160, 3]``."""
        return self._atari.render()

    def _push(self) -> np.ndarray:
        import cv2

        np.maximum(self._raw[0], self._raw[1], out=self._raw[0])
        frame = cv2.resize(self._raw[0], (84, 84), interpolation=cv2.INTER_AREA)
        self._stack = np.concatenate([self._stack[1:], frame[None]])
        return self._stack.copy()

    def reset(self, seed: int) -> tuple[np.ndarray, dict]:
        import ale_py

        # As PreprocessedEnv::reset with a pending seed: reseed and reload the ROM, reset, FIRE, no-ops.
        self.ale.setInt("random_seed", int(seed))
        self.ale.loadROM(self.rom)
        self.ale.reset_game()
        if self.has_fire:
            self.ale.act(ale_py.Action.FIRE)
        noops = (_mt19937_uniform(seed, max(self.noop_max - 1, 0)) if self.noop_max > 0 else 0) - self.has_fire
        for _ in range(noops):
            self.ale.act(ale_py.Action.NOOP)
            if self.ale.game_over():
                self.ale.reset_game()
        self._stack[:] = 0
        self.ale.getScreenGrayscale(self._raw[0])
        self._raw[1][:] = 0
        self.elapsed, self.lives, self.over = 0, self.ale.lives(), False
        return self._push(), {"lives": self.lives}

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict, np.ndarray, np.ndarray]:
        """``obs, reward, terminated, truncated, info, screens [k, 210, 160, 3], rewards [k]``."""
        if self.over:
            raise RuntimeError("step() after the game ended; reset() first")
        ale_action = self.action_set[int(action)]
        screens, rewards = [], []
        game_over = False
        for skip in range(4, 0, -1):  # PreprocessedEnv::step
            rewards.append(float(self.ale.act(ale_action)))
            screens.append(self.render())
            game_over = self.ale.game_over()
            self.elapsed += 1
            if game_over or self.elapsed >= self.max_frames:
                break
            if skip <= 2:
                self.ale.getScreenGrayscale(self._raw[skip - 1])
        obs = self._push()
        self.lives = self.ale.lives()
        truncated = self.elapsed >= self.max_frames and not game_over
        self.over = game_over or truncated
        return (obs, float(sum(rewards)), game_over, truncated, {"lives": self.lives},
                np.stack(screens), np.asarray(rewards))
