"""An SB3 ``VecEnv`` backed by ``ale_py``'s C++ ``AtariVectorEnv``.

It gives SB3 the observations the student will see (``uint8 [4, 84, 84]``,
channel first, so SB3 adds no ``VecTransposeImage``) and the training
conventions of SB3's ``AtariWrapper``: rewards clipped to their sign and a
life loss reported as ``done`` (the game itself continues, as in
``EpisodicLifeEnv``). ``info["episode"]`` carries raw full-game returns, so
``rollout/ep_rew_mean`` is the real game score.
"""

from __future__ import annotations

import numpy as np
from gymnasium import spaces
from stable_baselines3.common.vec_env import VecEnv

from experts.atari import EnvSettings, GameTracker, make_atari_vec


class AleVecEnv(VecEnv):
    def __init__(
        self,
        game: str,
        num_envs: int,
        *,
        settings: EnvSettings = EnvSettings(),
        clip_rewards: bool = True,
        life_loss_done: bool = True,
        seed: int = 0,
        num_threads: int = 0,
    ):
        self.env = make_atari_vec(game, num_envs, settings=settings, num_threads=num_threads)
        self.render_mode = None
        super().__init__(
            num_envs,
            spaces.Box(0, 255, self.env.single_observation_space.shape, np.uint8),
            spaces.Discrete(int(self.env.single_action_space.n)),
        )
        self.clip_rewards = clip_rewards
        self.life_loss_done = life_loss_done
        self.tracker = GameTracker(num_envs)
        self._seed = seed
        self._actions: np.ndarray | None = None

    def reset(self) -> np.ndarray:
        obs, info = self.env.reset(seed=self._seed)
        # AtariVectorEnv seeds env i with seed + i, so a step of 1 would hand env i the games env
        # i+1 just had; a step of num_envs gives every reset() num_envs seeds no earlier one used.
        self._seed += self.num_envs
        self.tracker.reset(info["lives"])
        return obs

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = np.asarray(actions, dtype=np.int64).reshape(self.num_envs)

    def step_wait(self):
        obs, reward, terminated, truncated, info = self.env.step(self._actions)
        finished, life_lost = self.tracker.update(reward, terminated, truncated, info["lives"])
        done = terminated | truncated
        infos: list[dict] = [{} for _ in range(self.num_envs)]
        for i, ret, length in finished:
            infos[i]["episode"] = {"r": ret, "l": length}
        for i in np.flatnonzero(done):
            infos[i]["terminal_observation"] = info["final_obs"][i]
            infos[i]["TimeLimit.truncated"] = bool(truncated[i] and not terminated[i])
        if self.life_loss_done:
            for i in np.flatnonzero(life_lost):
                infos[i]["terminal_observation"] = obs[i]
            done = done | life_lost
        reward = np.sign(reward) if self.clip_rewards else reward
        return obs, reward.astype(np.float32), done, infos

    def close(self) -> None:
        self.env.close()

    # SB3 queries these on wrapped gym envs; there are none here.
    def get_attr(self, attr_name, indices=None):
        return [getattr(self, attr_name)] * len(self._indices(indices))

    def set_attr(self, attr_name, value, indices=None):
        setattr(self, attr_name, value)

    def env_method(self, method_name, *args, indices=None, **kwargs):
        raise NotImplementedError("AleVecEnv has no per-env gym objects to call methods on")

    def env_is_wrapped(self, wrapper_class, indices=None):
        return [False] * len(self._indices(indices))

    def _indices(self, indices):
        if indices is None:
            return range(self.num_envs)
        return [indices] if isinstance(indices, int) else indices
