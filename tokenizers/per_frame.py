"""A 2-D `AutoencoderKL` applied frame by frame: video [B, T, C, H, W] <-> latent grids [B, c, T, h, w]."""

from __future__ import annotations

from pathlib import Path

import torch

from djepa.chunks import map_chunks
from djepa.tokenizers.autoencoder_kl import AutoencoderKLTokenizer
from djepa.tokenizers.base import LatentTokenizer


def fit_channels(x: torch.Tensor, channels: int, dim: int) -> torch.Tensor:
    """Grey <-> RGB along `dim`: repeat one channel, or average to one."""
    have = x.shape[dim]
    if have == channels:
        return x
    if have == 1:
        return x.expand(*[channels if i == dim % x.dim() else -1 for i in range(x.dim())])
    if channels == 1:
        return x.mean(dim, keepdim=True)
    raise ValueError(f"cannot map {have} media channels to a tokenizer with {channels} channels")


class PerFrameTokenizer(LatentTokenizer):
    """Folds time into the batch and runs an image `AutoencoderKLTokenizer` on each frame.

    The time axis is kept as is (`downsample` (1, f, f)), so each latent frame belongs to one video frame.
    Loaded from the same local `save_pretrained` directory as an image tokenizer (SD-VAE, our trained one, ...).
    """

    def __init__(
        self,
        path: str | Path,
        shift: float | None = None,
        scale: float | None = None,
        channels: int | None = None,
        device: str | torch.device = "cpu",
        how_to_make: str = "",
        batch_frames: int = 512,
    ):
        self.frame = AutoencoderKLTokenizer(path, shift, scale, device=device, how_to_make=how_to_make)
        self.path = self.frame.path
        self.shift, self.scale = self.frame.shift, self.frame.scale
        self.latent_channels = self.frame.latent_channels
        self.downsample = (1, *self.frame.downsample)
        self.media_channels = channels or self.frame.in_channels
        self.batch_frames = batch_frames

    @property
    def device(self) -> torch.device:
        return self.frame.device

    @torch.no_grad()
    def encode_moments(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """[B, T, C, H, W] -> mean and std [B, c, T, h, w]."""
        b, t = x.shape[:2]
        frames = fit_channels(x.reshape(b * t, *x.shape[2:]), self.frame.in_channels, 1)
        mean, std = map_chunks(self.frame.encode_moments, frames, self.batch_frames)

        def unfold(z: torch.Tensor) -> torch.Tensor:
            return z.reshape(b, t, *z.shape[1:]).transpose(1, 2)

        return unfold(mean), unfold(std)

    @torch.no_grad()
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """[B, c, T, h, w] -> video [B, T, C, H, W]."""
        b, _, t = z.shape[:3]
        flat = z.transpose(1, 2).reshape(b * t, z.shape[1], *z.shape[3:])
        frames = map_chunks(self.frame.decode, flat, self.batch_frames)
        frames = fit_channels(frames, self.media_channels, 1)
        return frames.reshape(b, t, *frames.shape[1:])
