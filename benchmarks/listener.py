"""An independent listener for the audio benchmark: spoken-digit clips from voices the default data never uses,
heard through a front end of its own.

The generator's data (djepa.modalities.audio) draws eSpeak NG voices from `ESPEAK_VARIANTS` with rates 120-230
and pitches 15-85. A classifier trained on those clips and reading the tokenizer's own log-mel would share the
voices and the tokenizer's blind spots, so it could not hear what a round trip loses. The listener is trained on
other voice variants, a wider rate range and its own 25 ms / 10 ms, 40-band log-mel (the front end of speech
recognisers, not the tokenizer's).

It also hears through noise, as a person does, so that a vocoder's faint noise floor does not read as a lost
word: its training set adds copies of every clip in white or pink noise at 5-35 dB SNR.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

# Voice variants in espeakng-loader's voices/!v that stay intelligible and that the default data does not use
# (disjoint from modalities.audio.ESPEAK_VARIANTS; tested).
LISTENER_VARIANTS = [
    "m8",
    "Michael",
    "Mike",
    "mike2",
    "edward2",
    "iven2",
    "iven3",
    "steph2",
    "steph3",
    "klatt2",
    "klatt3",
    "victor",
    "ian",
    "gustave",
    "Lee",
    "Hugo",
    "Andrea",
    "Alicia",
    "Denis",
    "announcer",
]
LISTENER_ACCENTS = ["en-us", "en", "en-gb-x-rp", "en-029", "en-gb-scotland", "en-us-nyc"]
LISTENER_RATES = (100, 260)  # words per minute; the default data uses 120-230
LISTENER_PITCHES = (10, 90)  # the default data uses 15-85
LISTENER_SEED = 7919  # its own clips, never the generator's
LISTENER_CLIPS = 2000


def listener_voices() -> list[str]:
    from djepa.modalities.espeak import _Espeak

    folder = _Espeak.get().data_path / "voices" / "!v"
    return [f"{a}+{v}" for a in LISTENER_ACCENTS for v in LISTENER_VARIANTS if (folder / v).is_file()]


def listener_schedule(count: int, seed: int = LISTENER_SEED) -> list[tuple[int, str, int, int, int, int]]:
    """(label, voice, rate, pitch, pitch range, noise seed) per clip, balanced over the ten digits."""
    voices = listener_voices()
    rng = np.random.default_rng(seed)
    schedule = []
    for i in range(count):
        voice = voices[int(rng.integers(len(voices)))]
        rate = int(rng.integers(LISTENER_RATES[0], LISTENER_RATES[1] + 1))
        pitch = int(rng.integers(LISTENER_PITCHES[0], LISTENER_PITCHES[1] + 1))
        schedule.append((i % 10, voice, rate, pitch, int(rng.integers(10, 91)), int(rng.integers(2**31 - 1))))
    return schedule


def listener_clips(
    cache_dir: Path, count: int = 2000, sample_rate: int = 16000, num_samples: int = 16000
) -> tuple[torch.Tensor, torch.Tensor]:
    """The listener's training clips [count, 1, num_samples], synthesised once and cached as int16."""
    from djepa.modalities.audio import cached_clips, speak_schedule

    path = Path(cache_dir) / f"audio-listener-{LISTENER_SEED}-{count}-{sample_rate}hz-{num_samples}.safetensors"

    def synthesize() -> tuple[torch.Tensor, torch.Tensor]:
        return speak_schedule(listener_schedule(count), sample_rate, num_samples)

    return cached_clips(path, "listener clips", synthesize)


def add_noise(
    audio: torch.Tensor, generator: torch.Generator, snr_db: tuple[float, float] = (5.0, 35.0)
) -> torch.Tensor:
    """Each clip [B, 1, samples] plus white or pink (1/f power) noise at an SNR drawn uniformly in `snr_db`."""
    b, _, n = audio.shape
    white = torch.randn(b, 1, n, generator=generator)
    spectrum = torch.fft.rfft(white)
    tilt = torch.arange(spectrum.shape[-1]).clamp_min(1).float().rsqrt()  # 1/f power: amplitude 1/sqrt(f)
    pink = torch.fft.irfft(spectrum * tilt, n=n)
    noise = torch.where(torch.rand(b, 1, 1, generator=generator) < 0.5, white, pink)
    snr = snr_db[0] + (snr_db[1] - snr_db[0]) * torch.rand(b, 1, 1, generator=generator)
    speech_rms = audio.pow(2).mean(-1, keepdim=True).sqrt()
    noise_rms = noise.pow(2).mean(-1, keepdim=True).sqrt().clamp_min(1e-8)
    return audio + noise * speech_rms / noise_rms * 10 ** (-snr / 20)


def with_noisy_copies(
    audio: torch.Tensor, labels: torch.Tensor, copies: int = 2, seed: int = LISTENER_SEED
) -> tuple[torch.Tensor, torch.Tensor]:
    """The clean clips followed by `copies` noisy versions of each (seeded): the listener's training set."""
    generator = torch.Generator().manual_seed(seed)
    noisy = [add_noise(audio, generator) for _ in range(copies)]
    return torch.cat([audio, *noisy]), labels.repeat(1 + copies)


class ListenerFrontEnd(torch.nn.Module):
    """Waveforms [B, 1 or C, samples] -> [B, 1, 40, frames] log-mel (25 ms windows, 10 ms hop), each clip scaled to
    its own loudest band (0 dB -> 1, -80 dB and below -> -1): loudness does not carry the word."""

    def __init__(self, sample_rate: int = 16000, n_mels: int = 40):
        super().__init__()
        import torchaudio

        window = round(0.025 * sample_rate)
        self.mel = torchaudio.transforms.MelSpectrogram(
            sample_rate=sample_rate,
            n_fft=max(512, 1 << (window - 1).bit_length()),  # 512 at 16 kHz; the window fits at any rate
            win_length=window,
            hop_length=round(0.010 * sample_rate),
            n_mels=n_mels,
            f_min=20.0,
            power=2.0,
        )

    @torch.no_grad()
    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        x = audio.float()
        if x.dim() == 2:
            x = x[:, None]
        db = 10.0 * torch.log10(self.mel(x.mean(1, keepdim=True)).clamp_min(1e-10))
        db = db - db.amax(dim=(-2, -1), keepdim=True)
        return (db.clamp_min(-80.0) / 40.0 + 1.0).clamp(-1.0, 1.0)
