"""One game's replay memory: each frame stored once, stacks rebuilt at sampling.

The environment hands out stacks ``uint8 [4, 84, 84]`` whose last frame is new at
every step; storing whole stacks would keep every frame four times. Here each
transition keeps only its newest frame plus a flag saying whether that state
starts an episode (a reset, or a life loss when life losses are training
boundaries), and the expert's soft target labelled at insertion.

Stacks are rebuilt as frames ``i-3 .. i`` of the same env's stream. Frames from
before an episode start are **zeros**: that is what ``ale_py``'s
``AtariVectorEnv`` returns at reset (``[0, 0, 0, f0]``, then ``[0, 0, f0, f1]``,
...), so a rebuilt stack is bit-identical to the observation the expert labelled.

With several envs per game each env has its own ring (``capacity // num_envs``
slots) so streams never interleave. When a ring is full, the three slots after
its write position are not sampled: their earlier frames were overwritten.
"""

from __future__ import annotations

import numpy as np
import torch

FRAME_SHAPE = (84, 84)
STACK = 4


class GameReplay:
    """Replay memory of one game.

    Args:
        capacity: transitions kept, over all of the game's envs.
        num_envs: parallel envs of this game; each gets ``capacity // num_envs`` slots.
        num_outputs: width of the stored soft targets (the student's 18 outputs).
        store_values: also keep the expert's raw values (for losses on logits).
        feature_dim: width of stored expert features (0 = none).
    """

    def __init__(self, capacity: int, num_envs: int = 1, *, num_outputs: int = 18,
                 store_values: bool = False, feature_dim: int = 0):
        self.num_envs = num_envs
        self.slots = capacity // num_envs
        if self.slots < STACK + 1:
            raise ValueError(f"replay capacity {capacity} too small for {num_envs} envs")
        shape = (num_envs, self.slots)
        self.frames = np.zeros(shape + FRAME_SHAPE, dtype=np.uint8)
        self.starts = np.zeros(shape, dtype=bool)
        # float16 halves the label memory; soft targets are probabilities, so the
        # ~1e-3 relative rounding is far below the student's error.
        self.targets = np.zeros(shape + (num_outputs,), dtype=np.float16)
        self.values = np.zeros(shape + (num_outputs,), dtype=np.float16) if store_values else None
        self.features = np.zeros(shape + (feature_dim,), dtype=np.float16) if feature_dim else None
        self.pos = 0  # next slot to write, same for every env (they are added together)
        self.full = False

    def __len__(self) -> int:
        return self.num_envs * (self.slots if self.full else self.pos)

    @property
    def nbytes(self) -> int:
        arrays = [self.frames, self.starts, self.targets, self.values, self.features]
        return sum(a.nbytes for a in arrays if a is not None)

    @property
    def bytes_per_transition(self) -> float:
        return self.nbytes / (self.num_envs * self.slots)

    def add(self, obs: np.ndarray, episode_start: np.ndarray, target: np.ndarray,
            values: np.ndarray | None = None, features: np.ndarray | None = None) -> None:
        """Store one state per env.

        Args:
            obs: ``uint8 [num_envs, 4, 84, 84]``; only the newest frame ``obs[:, -1]`` is kept.
            episode_start: ``bool [num_envs]``, True when ``obs`` is the first state of an
                episode (its three older frames are zeros).
            target: soft targets ``[num_envs, num_outputs]``, probabilities.
            values: expert values ``[num_envs, num_outputs]`` (if ``store_values``).
            features: expert features ``[num_envs, feature_dim]`` (if ``feature_dim``).
        """
        p = self.pos
        self.frames[:, p] = obs[:, -1]
        self.starts[:, p] = episode_start
        self.targets[:, p] = target
        if self.values is not None:
            self.values[:, p] = values
        if self.features is not None:
            self.features[:, p] = features
        self.pos = (p + 1) % self.slots
        self.full = self.full or self.pos == 0

    def _valid_indices(self, rng: np.random.Generator, n: int) -> np.ndarray:
        if not self.full:
            return rng.integers(0, self.pos, size=n)
        # Skip the 3 slots after the write position: their history was overwritten.
        offset = rng.integers(STACK - 1, self.slots, size=n)
        return (self.pos + offset) % self.slots

    def stacks(self, env: np.ndarray, idx: np.ndarray) -> np.ndarray:
        """Rebuild ``uint8 [n, 4, 84, 84]`` stacks ending at slots ``idx`` of envs ``env``."""
        out = np.zeros((len(idx), STACK) + FRAME_SHAPE, dtype=np.uint8)
        out[:, -1] = self.frames[env, idx]
        # Walk back one frame at a time; once a start has been passed, the rest stay zero.
        alive = ~self.starts[env, idx]
        for k in range(1, STACK):
            j = idx - k
            if not self.full:
                alive &= j >= 0  # cannot happen when slot 0 is a start; kept as a guard
            j %= self.slots
            rows = np.flatnonzero(alive)
            out[rows, STACK - 1 - k] = self.frames[env[rows], j[rows]]
            alive &= ~self.starts[env, j]
        return out

    @staticmethod
    def _renormalised(target: np.ndarray) -> np.ndarray:
        # float16 rounding leaves sums ~1e-3 off 1; losses expect a distribution.
        t = target.astype(np.float32)
        return t / t.sum(axis=1, keepdims=True)

    def sample(self, batch_size: int, rng: np.random.Generator) -> dict[str, torch.Tensor]:
        """A uniform minibatch: ``obs`` uint8 [B,4,84,84], ``target`` float32 [B,18],
        and ``values`` / ``features`` float32 when stored."""
        if len(self) == 0:
            raise ValueError("cannot sample from an empty replay")
        env = rng.integers(0, self.num_envs, size=batch_size)
        idx = self._valid_indices(rng, batch_size)
        batch = {
            "obs": torch.from_numpy(self.stacks(env, idx)),
            "target": torch.from_numpy(self._renormalised(self.targets[env, idx])),
        }
        if self.values is not None:
            batch["values"] = torch.from_numpy(self.values[env, idx].astype(np.float32))
        if self.features is not None:
            batch["features"] = torch.from_numpy(self.features[env, idx].astype(np.float32))
        return batch
