"""The small CNN of the label-smoothing study, for 1-D signals and 2-D images.

After the CNN of Gordon-Rodriguez et al.'s CC-LS experiment (their ``cifar10_model.py``):
blocks of two 3-wide convolutions, each followed by ELU and then, optionally, BatchNorm
(their order: after the activation), a 2× max-pool and optional dropout, then one linear
layer to the K logits.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

__all__ = ["SmallCNN"]


class SmallCNN(nn.Module):
    """Input ``[B, C, L]`` (``dims=1``) or ``[B, C, H, W]`` (``dims=2``) → logits ``[B, K]``.

    Args:
        in_channels: C. in_size: L (or H = W). num_classes: K.
        widths: channels of each block; each block halves the spatial size, so
            ``in_size`` must be divisible by ``2 ** len(widths)``.
        batchnorm: BatchNorm after every activation.
        dropout: dropout probability after each block (0 disables it).
    """

    def __init__(self, in_channels: int, in_size: int, num_classes: int, widths: Sequence[int],
                 *, dims: int, batchnorm: bool, dropout: float = 0.0) -> None:
        super().__init__()
        if dims not in (1, 2):
            raise ValueError(f"dims={dims}: the CNN handles 1-D signals or 2-D images")
        if in_size % 2 ** len(widths):
            raise ValueError(f"input size {in_size} is not divisible by 2**{len(widths)}: use fewer blocks")
        conv, norm, pool = ((nn.Conv1d, nn.BatchNorm1d, nn.MaxPool1d) if dims == 1
                            else (nn.Conv2d, nn.BatchNorm2d, nn.MaxPool2d))
        layers: list[nn.Module] = []
        c = in_channels
        for w in widths:
            for _ in range(2):
                layers += [conv(c, w, 3, padding=1), nn.ELU()]
                if batchnorm:
                    layers.append(norm(w))
                c = w
            layers.append(pool(2))
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
        self.features = nn.Sequential(*layers)
        side = in_size // 2 ** len(widths)
        self.head = nn.Linear(c * side**dims, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).flatten(1))
