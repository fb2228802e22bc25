"""Convolutional towers that pool a whole input into one unit vector (the best-of-N scorer's two towers;
the Image Transformer can condition on a frozen copy of the audio one)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class AudioTower(nn.Module):
    """(B, S, F) standardised FFT sections -> three 1-D convolutions over time (two of stride 2) ->
    mean and max over time -> linear -> (B, E) unit vectors. Works for any number of sections."""

    def __init__(self, bins: int, channels: int, embed_dim: int) -> None:
        super().__init__()

        def conv(cin: int, cout: int, stride: int) -> list[nn.Module]:
            return [nn.Conv1d(cin, cout, 5, stride=stride, padding=2), nn.BatchNorm1d(cout), nn.GELU()]

        self.net = nn.Sequential(
            *conv(bins, channels, 1), *conv(channels, channels, 2), *conv(channels, channels, 2)
        )
        self.out = nn.Linear(2 * channels, embed_dim)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        h = self.net(features.transpose(1, 2))  # (B, C, S/4)
        pooled = torch.cat([h.mean(dim=-1), h.amax(dim=-1)], dim=1)  # (B, 2C)
        return F.normalize(self.out(pooled), dim=-1)


class ImageTower(nn.Module):
    """(B, 1, H, W) in [0, 1] -> three conv/batch-norm/max-pool stages -> global mean -> (B, E) unit."""

    def __init__(self, width: int, embed_dim: int) -> None:
        super().__init__()

        def stage(cin: int, cout: int) -> list[nn.Module]:
            return [nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.GELU(), nn.MaxPool2d(2)]

        self.net = nn.Sequential(*stage(1, width), *stage(width, 2 * width), *stage(2 * width, 4 * width))
        self.out = nn.Linear(4 * width, embed_dim)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.out(self.net(images).mean(dim=(2, 3))), dim=-1)
