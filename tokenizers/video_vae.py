"""Pretrained spatio-temporal video VAEs from diffusers, loaded from local files (nothing is downloaded).

`AutoencoderKLCogVideoX`, `AutoencoderKLWan` and `AutoencoderKLLTXVideo` compress time as well as space, causally:
the first frame gets a latent frame of its own and every `tc` further frames one more, so T = 1 + tc * k frames
give 1 + k latent frames (CogVideoX: 49 -> 13, Wan: 81 -> 21 with tc = 4; LTX: 121 -> 16 with tc = 8).
"""

from __future__ import annotations

from pathlib import Path

import torch

from djepa.errors import UsageError
from djepa.tokenizers.base import LatentTokenizer, load_local_model
from djepa.tokenizers.per_frame import fit_channels

VIDEO_VAE_CLASSES = {
    "cogvideox": "AutoencoderKLCogVideoX",
    "wan": "AutoencoderKLWan",
    "ltx": "AutoencoderKLLTXVideo",
}


def video_vae_class(family: str):
    import diffusers

    if family not in VIDEO_VAE_CLASSES:
        raise UsageError(f"modality.adapter.tokenizer.family={family!r}: choose one of {', '.join(VIDEO_VAE_CLASSES)}")
    return getattr(diffusers, VIDEO_VAE_CLASSES[family])


def load_video_vae(family: str, path: str | Path):
    """A diffusers video VAE from a local `save_pretrained` directory (or a single-file checkpoint)."""
    cls = video_vae_class(family)
    missing = (
        f"tokenizer path {path} does not exist: point modality.adapter.tokenizer.path at a local "
        f"{cls.__name__} directory written by save_pretrained (nothing is downloaded)"
    )
    return load_local_model(cls, path, missing)


def compression(family: str, vae) -> tuple[int, int]:
    """(temporal, spatial) compression of a loaded video VAE, read from its config."""
    config = vae.config
    if family == "cogvideox":
        return int(config.temporal_compression_ratio), 2 ** (len(config.block_out_channels) - 1)
    if family == "wan":
        spatial = 2 ** (len(config.dim_mult) - 1) * int(config.patch_size or 1)
        return 2 ** sum(bool(d) for d in config.temperal_downsample), spatial
    return int(vae.temporal_compression_ratio), int(vae.spatial_compression_ratio)


def latent_normalisation(family: str, vae) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel (shift, scale) with z = (latent - shift) * scale, as each model family defines it."""
    config = vae.config
    channels = int(config.z_dim if family == "wan" else config.latent_channels)
    if family == "wan":
        mean = torch.tensor(config.latents_mean, dtype=torch.float32)
        return mean, 1.0 / torch.tensor(config.latents_std, dtype=torch.float32)
    if family == "ltx":
        mean, std = vae.latents_mean.float().cpu(), vae.latents_std.float().cpu()
        return mean, float(config.scaling_factor) / std
    shift = float(config.shift_factor or 0.0)
    return torch.full((channels,), shift), torch.full((channels,), float(config.scaling_factor))


class VideoVAETokenizer(LatentTokenizer):
    """Video [B, T, C, H, W] <-> scaled latents [B, c, t, h, w] through a diffusers spatio-temporal VAE.

    `shift`/`scale` (floats) override the model family's own normalisation (CogVideoX `scaling_factor`,
    Wan and LTX per-channel `latents_mean`/`latents_std`).
    """

    def __init__(
        self,
        family: str,
        path: str | Path,
        shift: float | None = None,
        scale: float | None = None,
        channels: int | None = None,
        device: str | torch.device = "cpu",
    ):
        self.family = family
        self.path = Path(path)
        self.vae = load_video_vae(family, self.path).to(device).eval().requires_grad_(False)
        self.temporal, spatial = compression(family, self.vae)
        self.downsample = (self.temporal, spatial, spatial)
        default_shift, default_scale = latent_normalisation(family, self.vae)
        self.latent_channels = len(default_shift)
        shift_c = default_shift if shift is None else torch.full_like(default_shift, float(shift))
        scale_c = default_scale if scale is None else torch.full_like(default_scale, float(scale))
        self._shift = shift_c.view(1, -1, 1, 1, 1)
        self._scale = scale_c.view(1, -1, 1, 1, 1)
        # scalars where the normalisation is one number per model, as LatentTokenizer documents
        self.shift = float(shift_c[0]) if bool((shift_c == shift_c[0]).all()) else 0.0
        self.scale = float(scale_c[0]) if bool((scale_c == scale_c[0]).all()) else 1.0
        self.in_channels = int(self.vae.config.in_channels)
        self.media_channels = channels or self.in_channels

    @property
    def device(self) -> torch.device:
        return next(self.vae.parameters()).device

    def latent_frames(self, frames: int) -> int:
        if frames < 1 or (frames - 1) % self.temporal:
            raise ValueError(
                f"{VIDEO_VAE_CLASSES[self.family]} compresses time causally by {self.temporal}: clips need "
                f"1 + {self.temporal} * k frames (e.g. {1 + self.temporal * max(1, (frames - 1) // self.temporal)}), "
                f"not {frames}"
            )
        return 1 + (frames - 1) // self.temporal

    def latent_grid(self, media_grid: tuple[int, ...]) -> tuple[int, ...]:
        t, h, w = media_grid
        return (self.latent_frames(t), h // self.downsample[1], w // self.downsample[2])

    @torch.no_grad()
    def encode_moments(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """[B, T, C, H, W] in [-1, 1] -> scaled posterior mean and std [B, c, t, h, w]."""
        self.latent_frames(x.shape[1])
        video = fit_channels(x, self.in_channels, 2).transpose(1, 2).to(self.device, torch.float32)
        posterior = self.vae.encode(video).latent_dist
        shift, scale = self._shift.to(self.device), self._scale.to(self.device)
        return (posterior.mean - shift) * scale, posterior.std * scale

    @torch.no_grad()
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Scaled latents [B, c, t, h, w] -> video [B, 1 + tc * (t - 1), C, H, W]."""
        shift, scale = self._shift.to(self.device), self._scale.to(self.device)
        video = self.vae.decode(z.to(self.device, torch.float32) / scale + shift).sample
        return fit_channels(video.transpose(1, 2), self.media_channels, 2)
