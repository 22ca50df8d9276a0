"""Time on a video or audio model's token grid: which token rows cover which frames or seconds, and the known-token
mask of a time range (`mask_frames=4:8`, `mask_seconds=0.3:0.6`: that range of a prime is regenerated, the rest
kept).

A range is rounded to the nearest token-row boundaries (a row spans `patch_size` latent frames of video, or one
token column of audio) and the rounding is said in one line.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from djepa.errors import UsageError

# Per modality: the unit of time, the keys a user gives it with (range, length, prime length).
UNITS = {
    "video": ("frames", "mask_frames", "frames", "prime_frames"),
    "audio": ("seconds", "mask_seconds", "seconds", "prime_seconds"),
}


@dataclass(frozen=True)
class TimeAxis:
    """A model's time: its token grid's time axis and where each token row sits in the media."""

    modality: str
    unit: str  # frames (video) or seconds (audio)
    bounds: tuple[float, ...]  # media time where each token row starts, then where the last ends (rows + 1 values)
    length: float  # the clip the model makes, in `unit`
    grid: tuple[int, ...]
    axis: int  # the token grid's time axis, non-negative
    samples_per_unit: float  # media steps along the decoded time axis per unit (1 per frame, sample_rate per second)

    @property
    def rows(self) -> int:
        return self.grid[self.axis]

    @property
    def range_key(self) -> str:
        return UNITS[self.modality][1]

    @property
    def length_key(self) -> str:
        return UNITS[self.modality][2]

    @property
    def prime_key(self) -> str:
        return UNITS[self.modality][3]

    def media_steps(self, t: float) -> int:
        """Decoded media steps (frames, audio samples) in `t` units."""
        return round(t * self.samples_per_unit)

    def nearest_row(self, t: float) -> int:
        """The token-row boundary nearest to media time `t` (0..rows)."""
        return min(range(len(self.bounds)), key=lambda r: (abs(self.bounds[r] - t), r))

    def show(self, t: float) -> str:
        return f"{round(t)}" if self.unit == "frames" else f"{t:.3f}"

    @property
    def row_word(self) -> str:
        """What a step along the token grid's time axis is called: a row of video tokens, a column of audio's."""
        return "token rows" if self.unit == "frames" else "token columns"

    @property
    def step(self) -> str:
        """The token grid's time resolution, for messages."""
        return f"{self.show(self.bounds[1] - self.bounds[0])} {self.unit}"


def time_axis(adapter: Any, key: str) -> TimeAxis:
    """The time axis of `adapter`'s model; a UsageError naming `key` for a modality without one (images)."""
    name = str(adapter.name)
    if name not in UNITS or adapter.time_axis is None:
        raise UsageError(f"{key}: {name} models have no time axis; it is for video (frames) and audio (seconds)")
    unit = UNITS[name][0]
    if key not in UNITS[name][1:]:
        wanted = next(m for m, keys in UNITS.items() if key in keys[1:])
        other = UNITS[name][1:][UNITS[wanted][1:].index(key)]
        raise UsageError(f"{key} is for {wanted} models; this one is {name}: use {other}")
    grid = tuple(int(g) for g in adapter.token_grid)
    axis = int(adapter.time_axis) % len(grid)
    rows = grid[axis]
    if name == "video":
        p, d = int(adapter.patch_size[0]), int(adapter.tokenizer.downsample[0])
        # A causal video VAE (d > 1) keeps the first frame on its own latent frame, then d frames per latent frame.
        bounds = tuple(float(r * p if d == 1 else (0 if r == 0 else 1 + (r * p - 1) * d)) for r in range(rows + 1))
        return TimeAxis(name, unit, bounds, float(adapter.frames), grid, axis, 1.0)
    column = float(adapter.seconds_per_token_column)
    bounds = tuple(r * column for r in range(rows + 1))
    return TimeAxis(name, unit, bounds, float(adapter.seconds), grid, axis, float(adapter.sample_rate))


def parse_range(value: Any, key: str, whole: bool) -> tuple[float, float]:
    """`start:end` (a string, or a pair) as two numbers; `whole`: frame numbers."""
    parts = value.split(":") if isinstance(value, str) else list(value) if isinstance(value, (tuple, list)) else None
    example = "4:8" if whole else "0.3:0.6"
    if parts is None or len(parts) != 2:
        raise UsageError(f"{key}={value!r} is not a range: give start:end, e.g. {key}={example}")
    try:
        start, end = (float(p) for p in parts)
    except (TypeError, ValueError):
        raise UsageError(f"{key}={value!r} is not a range of numbers: e.g. {key}={example}") from None
    if not (math.isfinite(start) and math.isfinite(end)) or (whole and not (start.is_integer() and end.is_integer())):
        raise UsageError(f"{key}={value!r}: start and end must be {'whole frame numbers' if whole else 'finite'}")
    if start < 0 or end <= start:
        raise UsageError(f"{key}={value!r} is empty or inverted: it needs 0 <= start < end, e.g. {key}={example}")
    return start, end


def rows_mask(grid: tuple[int, ...], axis: int, start: int, end: int, inside: bool = False) -> torch.Tensor:
    """A flat token mask [N]: True on the time rows outside [start, end) (`inside`: on those rows)."""
    rows = torch.zeros(grid[axis], dtype=torch.bool)
    rows[start:end] = True
    shape = [grid[axis] if a == axis else 1 for a in range(len(grid))]
    mask = rows.view(shape).expand(grid)
    return (mask if inside else ~mask).flatten()


def range_rows(ax: TimeAxis, value: Any, key: str) -> tuple[int, int, str]:
    """The token rows [start, end) a time range of `key` regenerates, rounded to row boundaries, and the line that
    says so."""
    start, end = parse_range(value, key, ax.unit == "frames")
    if end > ax.length + 1e-9:
        raise UsageError(f"{key}={value}: the range ends past the clip, which is {ax.show(ax.length)} {ax.unit} long")
    r0, r1 = ax.nearest_row(start), ax.nearest_row(end)
    if r1 <= r0:
        raise UsageError(
            f"{key}={value} covers no whole token row: the token grid's time step is {ax.step}; widen the range"
        )
    end_shown = min(ax.bounds[r1], ax.length) - (1 if ax.unit == "frames" else 0)  # frames: the last one, inclusive
    shown = f"{ax.show(ax.bounds[r0])}..{ax.show(end_shown)}"
    note = (
        f"{key}={value}: regenerating {ax.unit} {shown} ({ax.row_word} {r0}..{r1 - 1}; the token grid's time step is "
        f"{ax.step}), the rest of the prime kept"
    )
    return r0, r1, note


def check_time_keys(
    adapter: Any,
    prime: Any,
    mask_frames: Any,
    mask_seconds: Any,
    prime_frames: int | None,
    prime_seconds: float | None,
) -> tuple[torch.Tensor, str] | None:
    """The known-token mask [N] of a time-range request and the line saying what it regenerates (None: no range
    given), after checking its keys."""
    given = [(k, v) for k, v in (("mask_frames", mask_frames), ("mask_seconds", mask_seconds)) if v is not None]
    if not given:
        return None
    if len(given) > 1:
        raise UsageError("mask_frames and mask_seconds: give one (frames for video, seconds for audio)")
    key, value = given[0]
    ax = time_axis(adapter, key)
    if not prime:
        raise UsageError(f"{key}={value} needs prime=CLIP: the clip whose other {ax.unit} stay as they are")
    prime_value = prime_frames if ax.unit == "frames" else prime_seconds
    if prime_value is not None:
        raise UsageError(
            f"{ax.prime_key} and {key}: give one ({ax.prime_key} keeps the start and generates the rest, "
            f"{key} regenerates a range and keeps the rest)"
        )
    r0, r1, note = range_rows(ax, value, key)
    return rows_mask(ax.grid, ax.axis, r0, r1), note
