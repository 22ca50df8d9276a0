"""The latent tokenizer interface: media tensors <-> unit-variance latent grids."""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch


class TokenizerNotFound(FileNotFoundError):
    """A configured tokenizer path is missing; the message says how to make it."""


class LatentTokenizer(ABC):
    """`encode(x) -> z`, `decode(z) -> x`, with z = (latent - shift) * scale of unit variance."""

    latent_channels: int
    downsample: tuple[int, ...]
    shift: float = 0.0
    scale: float = 1.0

    @abstractmethod
    def encode_moments(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Scaled posterior mean and std, each [B, latent_channels, *grid]."""

    @abstractmethod
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Media tensor from scaled latents."""

    def encode(self, x: torch.Tensor, sample: bool = False) -> torch.Tensor:
        mean, std = self.encode_moments(x)
        return mean + std * torch.randn_like(std) if sample else mean

    def latent_grid(self, media_grid: tuple[int, ...]) -> tuple[int, ...]:
        """Latent grid for a media grid (image H, W; frames T, H, W; ...)."""
        return tuple(size // factor for size, factor in zip(media_grid, self.downsample))
