"""diffusers `AutoencoderOobleck` (Stable Audio's waveform VAE) as a 1-D latent tokenizer, from local files only."""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
import torch.nn.functional as F

from djepa.tokenizers.base import LatentTokenizer, load_local_model

LATENT_STATS_JSON = "latent_stats.json"


def load_autoencoder_oobleck(path: str | Path):
    """Load an AutoencoderOobleck from a local `save_pretrained` directory, never from the hub."""
    from diffusers import AutoencoderOobleck

    missing = (
        f"tokenizer path {path} does not exist: point modality.adapter.tokenizer.path at a local "
        "AutoencoderOobleck directory written by save_pretrained (e.g. Stable Audio's `vae` folder; "
        "nothing is downloaded)"
    )
    return load_local_model(AutoencoderOobleck, path, missing)


class OobleckTokenizer(LatentTokenizer):
    """Waveforms [B, channels, samples] at `sample_rate` -> latents [B, C, frames], frames = samples / hop.

    Input is resampled to the VAE's own rate and padded to a multiple of its hop (the product of its
    downsampling ratios); mono input is repeated to the VAE's channel count and decoded audio mixed back
    to `out_channels`. `shift`/`scale` default to `latent_stats.json` in the directory, else 0 and 1.
    """

    def __init__(
        self,
        path: str | Path,
        shift: float | None = None,
        scale: float | None = None,
        sample_rate: int | None = None,
        out_channels: int = 1,
        device: str | torch.device = "cpu",
    ):
        self.path = Path(path)
        self.vae = load_autoencoder_oobleck(self.path).to(device).eval().requires_grad_(False)
        config = self.vae.config
        stats_file = self.path / LATENT_STATS_JSON
        stats = json.loads(stats_file.read_text()) if stats_file.is_file() else {}
        self.shift = float(shift if shift is not None else stats.get("shift", 0.0))
        self.scale = float(scale if scale is not None else stats.get("scale", 1.0))
        self.latent_channels = int(config.decoder_input_channels)
        self.audio_channels = int(config.audio_channels)
        self.vae_rate = int(config.sampling_rate)
        self.sample_rate = int(sample_rate or self.vae_rate)
        self.out_channels = out_channels
        self.hop = int(math.prod(config.downsampling_ratios))
        self.downsample = (self.hop,)

    @property
    def device(self) -> torch.device:
        return next(self.vae.parameters()).device

    def latent_grid(self, media_grid: tuple[int, ...]) -> tuple[int, ...]:
        samples = math.ceil(media_grid[-1] * self.vae_rate / self.sample_rate)
        return (math.ceil(samples / self.hop),)

    def _to_vae(self, x: torch.Tensor) -> torch.Tensor:
        import torchaudio.functional as AF

        x = x.float()
        if x.dim() == 2:
            x = x[:, None]
        if self.sample_rate != self.vae_rate:
            x = AF.resample(x, self.sample_rate, self.vae_rate)
        if x.shape[1] != self.audio_channels:
            x = x.mean(1, keepdim=True).expand(-1, self.audio_channels, -1)
        pad = -x.shape[-1] % self.hop
        return F.pad(x, (0, pad)).contiguous().to(self.device)

    @torch.no_grad()
    def encode_moments(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        posterior = self.vae.encode(self._to_vae(x)).latent_dist
        return (posterior.mean - self.shift) * self.scale, posterior.std * self.scale

    @torch.no_grad()
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        import torchaudio.functional as AF

        audio = self.vae.decode(z.to(self.device) / self.scale + self.shift).sample.float()
        if self.sample_rate != self.vae_rate:
            audio = AF.resample(audio, self.vae_rate, self.sample_rate)
        if audio.shape[1] != self.out_channels:
            audio = audio.mean(1, keepdim=True).expand(-1, self.out_channels, -1)
        return audio.clamp(-1.0, 1.0)
