"""Waveform clean-up shared by the audio sources: silence trimmed, peaks normalised."""

from __future__ import annotations

import torch

PEAK = 0.95


def trim_silence(audio: torch.Tensor, threshold: float = 0.01) -> torch.Tensor:
    """Drop leading and trailing samples quieter than `threshold` x peak (last axis)."""
    level = audio.abs().amax(dim=tuple(range(audio.dim() - 1))) if audio.dim() > 1 else audio.abs()
    loud = torch.nonzero(level > threshold * level.max().clamp_min(1e-12)).flatten()
    if len(loud) == 0:
        return audio[..., :0]
    return audio[..., int(loud[0]) : int(loud[-1]) + 1]


def peak_normalize(audio: torch.Tensor, peak: float = PEAK) -> torch.Tensor:
    return audio * (peak / audio.abs().max().clamp_min(1e-8))
