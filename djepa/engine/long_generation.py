"""Video and audio longer than the model's window (`frames=48` on a 16-frame model, `seconds=4` on a 1 s one).

Generated window by window, as audiocraft's `generate_continuation`: each window after the first is primed with
the previous window's last token rows (the overlap, `prime_frames` / `prime_seconds` long, rounded to whole
token rows, at least one row and at most all but one), which the sampler keeps unchanged; the rest of the window
is generated. Each window is decoded on its own and the pieces are joined where the overlap starts: every
window but the last gives its media up to that boundary, the last gives all of its own. A video is cut there
(the overlap's frames decode from the same tokens in both windows); audio is crossfaded linearly over
`AUDIO_CROSSFADE_SECONDS` from that boundary, since each window's Griffin-Lim (or other) decoder draws its own
phase. The result is cut to the length asked for.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from tqdm import tqdm

from djepa.engine.sampling import SamplingSettings, generate
from djepa.engine.time_masks import TimeAxis, rows_mask, time_axis
from djepa.errors import UsageError
from djepa.nn.model import DJEPA

AUDIO_CROSSFADE_SECONDS = 0.02  # at each audio seam: long enough to hide a phase jump, short beside a token column


@dataclass(frozen=True)
class LongPlan:
    """How a long item is made: `windows` windows, each after the first primed with `overlap` token rows."""

    axis: TimeAxis
    target: float  # the length asked for, in the axis' unit
    windows: int
    overlap: int  # token rows each window shares with the one before

    @property
    def step(self) -> float:
        """Media time each window but the last contributes (up to where its overlap with the next starts)."""
        return self.axis.bounds[self.axis.rows - self.overlap]

    @property
    def note(self) -> str | None:
        """One line: the windows and the overlap that make the length (None: one window, nothing to say)."""
        if self.windows < 2:
            return None
        ax = self.axis
        overlap = ax.bounds[ax.rows] - ax.bounds[ax.rows - self.overlap]
        return (
            f"{ax.length_key}={ax.show(self.target)}: {self.windows} windows of {ax.show(ax.length)} {ax.unit}, each "
            f"after the first primed with the previous one's last {ax.show(overlap)} {ax.unit} ({self.overlap} "
            f"{ax.row_word}, {ax.prime_key}), joined where that overlap starts"
        )


def plan_long(adapter: Any, key: str, length: Any, overlap: float) -> LongPlan:
    """The windows that make `length` (frames or seconds, as `key` says) with an overlap of about `overlap` of
    the same unit (`LongPlan.note` says it in one line)."""
    ax = time_axis(adapter, key)
    given = length
    try:
        length = float(length)
    except (TypeError, ValueError):
        raise UsageError(f"{key}={length!r} is not a number") from None
    if not length > 0 or not math.isfinite(length) or (ax.unit == "frames" and not float(length).is_integer()):
        raise UsageError(f"{key}={given} must be a positive {'whole number' if ax.unit == 'frames' else 'number'}")
    if ax.rows < 2:
        raise UsageError(f"{key}={length}: the token grid {ax.grid} has one row in time, so windows cannot overlap")
    rows = min(max(ax.nearest_row(overlap), 1), ax.rows - 1)
    plan = LongPlan(ax, float(length), 1, rows)
    windows = 1 + max(0, math.ceil((plan.target - ax.length) / plan.step - 1e-9))
    return LongPlan(ax, float(length), windows, rows)


def plan_length(
    adapter: Any,
    frames: int | None,
    seconds: float | None,
    prime_frames: int | None,
    prime_seconds: float | None,
    masked: bool = False,
) -> LongPlan | None:
    """The plan of a `frames=` / `seconds=` request (None: neither given, one window as trained); the overlap is
    the prime length, 4 frames or 0.25 s unless given. `masked`: a mask range was given too (refused)."""
    if frames is None and seconds is None:
        return None
    if frames is not None and seconds is not None:
        raise UsageError("frames and seconds: give one (frames for video, seconds for audio)")
    key, length = ("frames", frames) if frames is not None else ("seconds", seconds)
    if masked:
        raise UsageError(f"{key}={length} and a mask range: regenerate a range of one window, or make a longer one")
    overlap = (4 if prime_frames is None else prime_frames) if key == "frames" else prime_seconds
    return plan_long(adapter, key, length, float(0.25 if overlap is None else overlap))


def tail_prime(tokens: torch.Tensor, ax: TimeAxis, rows: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Known tokens and mask [B, N(, D)] for the next window: `tokens`' last `rows` time rows as its first rows."""
    b, _, d = tokens.shape
    grid = tokens.view(b, *ax.grid, d)
    known = torch.zeros_like(grid)
    known.narrow(ax.axis + 1, 0, rows).copy_(grid.narrow(ax.axis + 1, ax.rows - rows, rows))
    mask = rows_mask(ax.grid, ax.axis, 0, rows, inside=True)
    return known.view(b, -1, d), mask.expand(b, -1).clone()


@torch.no_grad()
def generate_windows(
    model: DJEPA,
    labels: torch.Tensor,
    settings: SamplingSettings,
    plan: LongPlan,
    batch_size: int = 50,
    known_tokens: torch.Tensor | None = None,
    known_mask: torch.Tensor | None = None,
    progress: bool = False,
) -> list[torch.Tensor]:
    """Tokens [B, N, D] of each window; the first may be primed (`known_tokens`), each later one by its
    predecessor's tail."""
    windows: list[torch.Tensor] = []
    for w in tqdm(range(plan.windows), desc="windows", leave=False, disable=not progress or plan.windows < 2):
        if w > 0:
            known_tokens, known_mask = tail_prime(windows[-1], plan.axis, plan.overlap)
        windows.append(generate(model, labels, settings, batch_size, known_tokens, known_mask, progress=False))
    return windows


def stitch(pieces: Sequence[torch.Tensor], plan: LongPlan, dim: int) -> torch.Tensor:
    """Decoded windows [B, ...] joined along `dim` where each overlap starts (audio: crossfaded), cut to length."""
    ax = plan.axis
    cut = ax.media_steps(plan.step)
    fade = ax.media_steps(AUDIO_CROSSFADE_SECONDS) if ax.unit == "seconds" else 0
    out = pieces[0]
    for before, piece in zip(pieces[:-1], pieces[1:]):
        seam = out.shape[dim] - before.shape[dim] + cut  # where the overlap starts in `out`
        n = max(0, min(fade, out.shape[dim] - seam, piece.shape[dim]))
        ramp = torch.linspace(0.0, 1.0, n + 2)[1:-1].view([n if a == dim % out.dim() else 1 for a in range(out.dim())])
        mixed = out.narrow(dim, seam, n) * (1 - ramp) + piece.narrow(dim, 0, n) * ramp
        out = torch.cat(
            [out.narrow(dim, 0, seam), mixed.to(out.dtype), piece.narrow(dim, n, piece.shape[dim] - n)], dim
        )
    return out.narrow(dim, 0, min(out.shape[dim], ax.media_steps(plan.target)))


def decode_long(adapter: Any, windows: Sequence[torch.Tensor], plan: LongPlan) -> torch.Tensor:
    """The windows' tokens decoded and stitched: video [B, T, C, H, W], audio [B, C, samples]."""
    pieces = [adapter.decode_tokens(tokens) for tokens in windows]
    return stitch(pieces, plan, 1 if plan.axis.unit == "frames" else -1)
