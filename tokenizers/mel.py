"""Waveform <-> normalised log-mel spectrogram <-> a 2-D `AutoencoderKL` latent grid (freq, time).

The mel VAE is a plain diffusers `AutoencoderKL` (1 input channel) written by `save_pretrained`, loaded through
the same code path as any pretrained one (AudioLDM-style mel VAEs included). The mel front end's settings and its
normalisation constants live in `mel.json` beside the VAE files. Decoding inverts the mel scale and runs
Griffin-Lim: the built-in vocoder, no weights needed.

The defaults use 32 ms windows at hop 128 (a 64x128 mel, 8x16x4 latents): the plosives and short vowels that
tell spoken digits apart last a few tens of milliseconds, and longer windows smear them. The mel is inverted by
non-negative least squares rather than torchaudio's `InverseMelScale` (an unconstrained solve clipped at zero),
which leaves no noise floor in the bins no filter pins down.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from djepa.tokenizers.autoencoder_kl import AutoencoderKLTokenizer
from djepa.tokenizers.base import LatentTokenizer, TokenizerNotFound

MEL_JSON = "mel.json"


@dataclass
class MelSettings:
    """Mel front end: power mel spectrogram in dB, mapped from [db_max - db_range, db_max] to [-1, 1]."""

    sample_rate: int = 16000
    num_samples: int = 16000
    n_fft: int = 512  # 32 ms windows: short enough to keep plosives
    hop_length: int = 128
    n_mels: int = 64
    f_min: float = 0.0
    f_max: float | None = None
    frames: int = 128  # STFT frames, padded with silence (-1) up to this many
    db_max: float = 45.0  # from the training data when a tokenizer is trained (stored in mel.json)
    db_range: float = 80.0
    griffin_lim_iters: int = 32
    griffin_lim_momentum: float = 0.99  # torchaudio's fast Griffin-Lim
    mel_inverse_iters: int = 100  # non-negative least-squares iterations, mel -> linear power spectrogram

    @classmethod
    def from_dict(cls, values: dict[str, Any] | None) -> MelSettings:
        known = {f.name for f in fields(cls)}
        values = dict(values or {})
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown mel settings {unknown}; known: {sorted(known)}")
        return cls(**values)

    @property
    def stft_frames(self) -> int:
        return 1 + self.num_samples // self.hop_length


class MelFrontEnd(torch.nn.Module):
    """[B, 1, samples] in [-1, 1] -> [B, 1, n_mels, frames] in [-1, 1], and back through Griffin-Lim."""

    def __init__(self, settings: MelSettings):
        super().__init__()
        import torchaudio

        self.settings = s = settings
        if s.stft_frames > s.frames:
            raise ValueError(
                f"{s.num_samples} samples at hop {s.hop_length} give {s.stft_frames} frames > frames={s.frames}"
            )
        self.mel = torchaudio.transforms.MelSpectrogram(
            sample_rate=s.sample_rate,
            n_fft=s.n_fft,
            hop_length=s.hop_length,
            n_mels=s.n_mels,
            f_min=s.f_min,
            f_max=s.f_max,
            power=2.0,
        )
        self.griffin_lim = torchaudio.transforms.GriffinLim(
            n_fft=s.n_fft,
            hop_length=s.hop_length,
            n_iter=s.griffin_lim_iters,
            momentum=s.griffin_lim_momentum,
            power=2.0,
            length=s.num_samples,
        )

    @property
    def grid(self) -> tuple[int, int]:
        return (self.settings.n_mels, self.settings.frames)

    def db(self, audio: torch.Tensor) -> torch.Tensor:
        """Unnormalised power mel in dB, [B, 1, n_mels, stft_frames]."""
        x = audio.float()
        if x.dim() == 2:
            x = x[:, None]
        x = x.mean(1, keepdim=True)  # mono
        x = fit_length(x, self.settings.num_samples, mode="start")
        return 10.0 * torch.log10(self.mel(x).clamp_min(1e-10))

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        s = self.settings
        x = (self.db(audio) - (s.db_max - s.db_range)) / s.db_range * 2.0 - 1.0
        x = x.clamp(-1.0, 1.0)
        return F.pad(x, (0, s.frames - x.shape[-1]), value=-1.0)

    def to_power(self, mel: torch.Tensor) -> torch.Tensor:
        """Normalised log-mel [B, 1, n_mels, frames] -> power mel [B, n_mels, stft_frames]."""
        s = self.settings
        db = (mel.float().clamp(-1.0, 1.0)[:, 0, :, : s.stft_frames] + 1.0) / 2.0 * s.db_range + s.db_max - s.db_range
        return torch.pow(10.0, db / 10.0)

    def inverse(self, mel: torch.Tensor) -> torch.Tensor:
        """Griffin-Lim vocoder: normalised log-mel -> waveform [B, 1, num_samples] in [-1, 1]."""
        with torch.autocast(mel.device.type, enabled=False):
            fb = self.mel.mel_scale.fb
            spec = invert_mel_nonnegative(fb, self.to_power(mel).to(fb.device), self.settings.mel_inverse_iters)
            wave = self.griffin_lim(spec)
        return wave[:, None].clamp(-1.0, 1.0)


def invert_mel_nonnegative(fb: torch.Tensor, mel: torch.Tensor, iters: int = 100) -> torch.Tensor:
    """Power mel [B, n_mels, T] -> the non-negative linear power spectrogram S [B, n_stft, T] that best explains it,
    min |fb^T S - mel|^2 with S >= 0 (fb: [n_stft, n_mels], torchaudio's filterbank), as librosa's `mel_to_stft`.

    Lee-Seung multiplicative updates from the transposed-filterbank estimate: they keep S non-negative without a
    clip, so bins no filter constrains stay at the estimate instead of the noise an unconstrained solve leaves.
    """
    weights = fb.T  # [n_mels, n_stft]
    gram = weights.T @ weights  # [n_stft, n_stft]
    target = weights.T @ mel  # [B, n_stft, T]
    spec = target / (weights.T @ weights.sum(1, keepdim=True)).clamp_min(1e-8)
    for _ in range(iters):
        spec = spec * target / (gram @ spec).clamp_min(1e-12)
    return spec


def fit_length(audio: torch.Tensor, length: int, mode: str = "center") -> torch.Tensor:
    """Crop or zero-pad the last axis to `length`: around the centre, or keeping the start."""
    n = audio.shape[-1]
    if n == length:
        return audio
    if n > length:
        start = (n - length) // 2 if mode == "center" else 0
        return audio[..., start : start + length]
    left = (length - n) // 2 if mode == "center" else 0
    return F.pad(audio, (left, length - n - left))


def read_mel_settings(path: str | Path, how_to_make: str = "") -> MelSettings:
    file = Path(path) / MEL_JSON
    if not file.is_file():
        hint = f" Make it with `{how_to_make}`." if how_to_make else ""
        raise TokenizerNotFound(
            f"mel tokenizer {path} has no {MEL_JSON} (mel front-end settings and normalisation).{hint}"
        )
    return MelSettings.from_dict(json.loads(file.read_text()))


def write_mel_settings(path: str | Path, settings: MelSettings) -> None:
    (Path(path) / MEL_JSON).write_text(json.dumps(asdict(settings), indent=2))


def fit_mel_normalisation(db: torch.Tensor, settings: MelSettings, quantile: float = 0.99) -> MelSettings:
    """`db_max` from training mels [M, ...]: a high quantile of the clips' loudest bins, rounded up to 1 dB."""
    loudest = db.flatten(1).amax(1).float()
    top = math.ceil(torch.quantile(loudest, quantile).item())
    return MelSettings(**{**asdict(settings), "db_max": float(top)})


class MelTokenizer(LatentTokenizer):
    """Waveforms [B, 1, samples] -> normalised log-mel -> AutoencoderKL latents [B, C, n_mels/f, frames/f]."""

    def __init__(
        self,
        path: str | Path,
        shift: float | None = None,
        scale: float | None = None,
        device: str | torch.device = "cpu",
        how_to_make: str = "",
        griffin_lim_iters: int | None = None,
    ):
        self.path = Path(path)
        self.vae = AutoencoderKLTokenizer(self.path, shift, scale, device, how_to_make)
        settings = read_mel_settings(self.path, how_to_make)
        if griffin_lim_iters is not None:
            settings.griffin_lim_iters = int(griffin_lim_iters)
        self.settings = settings
        self.front_end = MelFrontEnd(settings)
        if self.vae.in_channels != 1:
            raise ValueError(f"mel tokenizer {path}: the VAE takes {self.vae.in_channels} channels, a mel has 1")
        self.shift, self.scale = self.vae.shift, self.vae.scale
        self.latent_channels = self.vae.latent_channels
        self.downsample = self.vae.downsample

    @property
    def media_grid(self) -> tuple[int, int]:
        return self.front_end.grid

    def to_mel(self, audio: torch.Tensor) -> torch.Tensor:
        return self.front_end(audio.cpu())

    @torch.no_grad()
    def encode_moments(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.vae.encode_moments(self.to_mel(x))

    @torch.no_grad()
    def decode_mel(self, z: torch.Tensor) -> torch.Tensor:
        return self.vae.decode(z).clamp(-1.0, 1.0)

    @torch.no_grad()
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.front_end.inverse(self.decode_mel(z).cpu())
