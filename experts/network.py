"""The expert network: SB3's NatureCNN feature extractor plus one linear head.

Every backend (SB3 PPO/A2C logits, DQN Q-values, QR-DQN mean quantiles, the
project's own ``.pt`` files) is mapped onto this one module, so inference code
never depends on SB3 classes or pickles.
"""

from __future__ import annotations

import torch
from torch import nn

from experts.atari import OBS_SHAPE

FEATURES_DIM = 512


class ExpertNetwork(nn.Module):
    """Nature-DQN torso (conv 32x8x8/4, 64x4x4/2, 64x3x3/1, FC 512) and a linear head.

    Parameter names follow SB3's NatureCNN (``cnn.0``, ``cnn.2``, ``cnn.4``,
    ``linear.0``) so a zoo state dict maps by prefix only; the head is ``head``.
    """

    def __init__(self, num_actions: int, in_channels: int = OBS_SHAPE[0]):
        super().__init__()
        self.cnn = nn.Sequential(
            nn.Conv2d(in_channels, 32, kernel_size=8, stride=4), nn.ReLU(),
            nn.Conv2d(32, 64, kernel_size=4, stride=2), nn.ReLU(),
            nn.Conv2d(64, 64, kernel_size=3, stride=1), nn.ReLU(),
            nn.Flatten(),
        )
        self.linear = nn.Sequential(nn.Linear(64 * 7 * 7, FEATURES_DIM), nn.ReLU())
        self.head = nn.Linear(FEATURES_DIM, num_actions)

    @property
    def num_actions(self) -> int:
        return self.head.out_features

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: float ``[B, 4, 84, 84]`` in [0, 1] -> ``[B, 512]`` (post-ReLU penultimate layer)."""
        return self.linear(self.cnn(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: float ``[B, 4, 84, 84]`` in [0, 1] -> raw action values ``[B, num_actions]``."""
        return self.head(self.features(x))
