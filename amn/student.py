"""The Actor-Mimic student: one Nature-DQN network shared by every game.

The trunk (conv 32x8x8/4, 64x4x4/2, 64x3x3/1, FC 512) is shared; the output layer
has 18 units, one per action of the full ALE action set, and each game masks the
units outside its minimal action set. ``per_game_heads`` gives every game its own
18-unit output layer instead (the trunk stays shared).
"""

from __future__ import annotations

import torch
from torch import nn

NUM_OUTPUTS = 18
FEATURE_DIM = 512


class Student(nn.Module):
    """Multi-task policy network.

    ``forward(obs, game_ids)`` maps ``uint8 [B, 4, 84, 84]`` observations and
    ``long [B]`` game indices to logits ``float [B, 18]`` (invalid actions are not
    masked here; see :func:`masked_logits`).
    """

    def __init__(self, num_games: int, *, per_game_heads: bool = False):
        super().__init__()
        self.trunk = nn.Sequential(
            nn.Conv2d(4, 32, 8, stride=4), nn.ReLU(),
            nn.Conv2d(32, 64, 4, stride=2), nn.ReLU(),
            nn.Conv2d(64, 64, 3, stride=1), nn.ReLU(),
            nn.Flatten(),
            nn.Linear(64 * 7 * 7, FEATURE_DIM), nn.ReLU(),
        )
        num_heads = num_games if per_game_heads else 1
        self.heads = nn.ModuleList(nn.Linear(FEATURE_DIM, NUM_OUTPUTS) for _ in range(num_heads))
        # channels_last measured ~1.5x faster for these convs on this CPU (atari-stack.md).
        self.to(memory_format=torch.channels_last)

    def features(self, obs: torch.Tensor) -> torch.Tensor:
        """Penultimate activations ``[B, 512]`` (the h of feature regression)."""
        # float32 (float64 for float64 weights: the tests' exact comparisons). Also for bfloat16 weights
        # (the trainer's actor, under autocast): autocast then rounds the float32 pixels as it does for
        # float32 weights, so both give the same logits.
        dtype = torch.float64 if self.heads[0].weight.dtype == torch.float64 else torch.float32
        x = obs.to(dtype).div_(255.0).contiguous(memory_format=torch.channels_last)
        return self.trunk(x)

    def head(self, h: torch.Tensor, game_ids: torch.Tensor) -> torch.Tensor:
        if len(self.heads) == 1:
            return self.heads[0](h)
        # A few 512x18 heads are cheap: run all, keep each row's own.
        out = torch.stack([head(h) for head in self.heads], dim=1)
        return out[torch.arange(len(h), device=h.device), game_ids]

    def forward(self, obs: torch.Tensor, game_ids: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(obs), game_ids)


def masked_logits(logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Logits with invalid actions at -inf, so argmax/softmax see valid actions only."""
    return logits.masked_fill(~mask, float("-inf"))


def entropy(probs: torch.Tensor) -> torch.Tensor:
    """Entropy (nats) per row of ``probs [B, K]``, with 0 log 0 = 0."""
    return -(probs * probs.clamp_min(1e-30).log()).sum(-1)
