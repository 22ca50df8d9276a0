"""diffusers `AutoencoderKL` as a latent tokenizer, loaded from a local `save_pretrained` directory."""

from __future__ import annotations

from pathlib import Path

import torch

from djepa.tokenizers.base import LatentTokenizer, load_local_model


def load_autoencoder_kl(path: str | Path, how_to_make: str = ""):
    """Load an AutoencoderKL from a local directory (or a single-file checkpoint), never from the hub."""
    from diffusers import AutoencoderKL

    hint = f" Make it with `{how_to_make}`, or" if how_to_make else ""
    missing = (
        f"tokenizer path {path} does not exist.{hint} point tokenizer.path at a local AutoencoderKL "
        "directory written by save_pretrained (nothing is downloaded)"
    )
    return load_local_model(AutoencoderKL, path, missing)


class AutoencoderKLTokenizer(LatentTokenizer):
    """Latents of a 2-D KL autoencoder, shifted and scaled to unit variance.

    `shift`/`scale` default to the values stored in the autoencoder's own config
    (`shift_factor`, `scaling_factor`), e.g. 0.18215 for SD-VAE; MAR's KL-16 uses 0.2325.
    """

    def __init__(
        self,
        path: str | Path,
        shift: float | None = None,
        scale: float | None = None,
        device: str | torch.device = "cpu",
        how_to_make: str = "",
    ):
        self.path = Path(path)
        self.vae = load_autoencoder_kl(self.path, how_to_make).to(device).eval().requires_grad_(False)
        config = self.vae.config
        self.shift = float(shift if shift is not None else (config.shift_factor or 0.0))
        self.scale = float(scale if scale is not None else config.scaling_factor)
        self.latent_channels = int(config.latent_channels)
        factor = 2 ** (len(config.block_out_channels) - 1)
        self.downsample = (factor, factor)
        self.in_channels = int(config.in_channels)

    @property
    def device(self) -> torch.device:
        return next(self.vae.parameters()).device

    @torch.no_grad()
    def encode_moments(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        posterior = self.vae.encode(x.to(self.device)).latent_dist
        return (posterior.mean - self.shift) * self.scale, posterior.std * self.scale

    @torch.no_grad()
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.vae.decode(z.to(self.device) / self.scale + self.shift).sample
