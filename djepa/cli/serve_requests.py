"""What the web demo's buttons do, without the page: check the controls' values, call `Pipeline`, write the files.

Generate samples (video and audio: optionally continuing, or regenerating a time range of, an uploaded prime, and
longer than the model's window); Inpaint / outpaint redraws the painted region of the editor's image, or extends
it past an edge. Every mistake is a one-line UsageError for the page to show.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from djepa.engine.time_masks import UNITS, time_axis
from djepa.errors import UsageError
from djepa.pipeline import Pipeline

MAX_SAMPLES = 16
NO_OUTPAINT = "none"
# The page's outpaint choices and default fraction: the image adapter's (djepa.modalities.inpainting, which the
# commands' layer does not import; tests/test_serve_requests.py keeps them equal).
SIDES = ("left", "right", "top", "bottom")
OUTPAINT_FRACTION = 0.25
OUTPAINT_CHOICES = (NO_OUTPAINT, *SIDES, "all")
DEFAULT_OVERLAP = {"video": 4, "audio": 0.25}  # prime_frames / prime_seconds when not given (Pipeline's defaults)


@dataclass
class Settings:
    """The sampling controls every button shares."""

    label: str | None
    num_samples: int
    guidance: float
    temperature: float
    num_steps: int
    seed: int

    def checked(self, pipe: Pipeline) -> dict[str, Any]:
        """Keyword arguments for `pipe(...)` (the class first, as `class_labels`)."""
        if (self.label is None or self.label == "") and not pipe.unconditional:
            raise UsageError("pick a class first")
        if self.num_samples is None or not 1 <= int(self.num_samples) <= MAX_SAMPLES:
            raise UsageError(f"samples must be between 1 and {MAX_SAMPLES}")
        if self.seed is None or int(self.seed) < 0:
            raise UsageError(f"seed must be a whole number >= 0, got {self.seed}")
        return {
            "class_labels": None if pipe.unconditional else [self.label],
            "num_samples": int(self.num_samples),
            "guidance_scale": float(self.guidance),
            "temperature": float(self.temperature),
            "num_steps": int(self.num_steps),
            "seed": int(self.seed),
        }


@dataclass
class Made:
    """What a request wrote: the preview (image grid, frame strips, spectrograms), the first item's file, the
    inpainting strip (prime | mask | results) when there is one, and the lines on what the call decided."""

    grid: Path
    first: Path
    strip: Path | None = None
    notes: list[str] = field(default_factory=list)


def window_length(pipe: Pipeline) -> float:
    """The length of one model window in the modality's unit: frames (video) or seconds (audio)."""
    return time_axis(pipe.adapter, UNITS[pipe.modality][2]).length


def time_options(pipe: Pipeline, prime: str | None, region: str | None, length: Any, overlap: Any) -> dict[str, Any]:
    """The Pipeline keys of the time controls: `region` (`a:b`, regenerated in the prime), `length` (made window by
    window beyond the model's window) and `overlap` (frames / seconds of the prime kept, and shared by windows)."""
    if pipe.modality not in UNITS:
        return {}
    unit, range_key, length_key, prime_key = UNITS[pipe.modality]
    options: dict[str, Any] = {}
    region = (region or "").strip()
    if region:
        if not prime:
            raise UsageError(f"{unit} {region}: a range regenerates part of a clip; upload a prime clip first")
        options[range_key] = region
    if length is not None and length != "":
        value = float(length)
        if value != window_length(pipe):  # one window: sampled as trained
            options[length_key] = int(value) if unit == "frames" and value.is_integer() else value
    if overlap is not None and overlap != "" and not region:  # a range keeps all of the prime but the range
        value = float(overlap)
        if not value > 0:
            raise UsageError(f"overlap ({prime_key}) must be positive, got {overlap}")
        options[prime_key] = int(value) if unit == "frames" and value.is_integer() else value
    return options


def generate(
    pipe: Pipeline,
    settings: Settings,
    out: Path,
    prime: str | None = None,
    region: str | None = None,
    length: Any = None,
    overlap: Any = None,
) -> Made:
    """Samples of the chosen class (video and audio: with the time controls); their files under `out`."""
    kwargs = settings.checked(pipe)
    times = time_options(pipe, prime, region, length, overlap)
    result = pipe(**kwargs, prime=prime or None, **times)
    written = result.save(out)
    assert result.grid_path is not None  # save() sets it
    return Made(Path(result.grid_path), written[0], notes=list(result.notes))


def editor_image_and_mask(value: Any) -> tuple[Image.Image, Image.Image | None]:
    """The image and the painted mask (white where any layer is painted, None when nothing is) of a
    `gr.ImageEditor` value (`type="pil"`: background, layers, composite)."""
    background = value.get("background") if isinstance(value, dict) else None
    if background is None:
        raise UsageError("image: upload an image to the editor (or load the first sample into it) first")
    painted = np.zeros((background.height, background.width), dtype=bool)
    for layer in value.get("layers") or []:
        if layer is None:
            continue
        alpha = np.asarray(layer.convert("RGBA"))[..., 3] > 0
        if alpha.shape != painted.shape:  # a layer on a canvas of another size: onto the image's pixels
            shape = Image.fromarray(alpha.astype(np.uint8) * 255).resize(background.size, Image.Resampling.NEAREST)
            alpha = np.asarray(shape) > 127
        painted |= alpha
    mask = Image.fromarray(painted.astype(np.uint8) * 255) if painted.any() else None
    return background.convert("RGB"), mask


def inpaint(
    pipe: Pipeline,
    settings: Settings,
    out: Path,
    editor: Any,
    outpaint_side: str | None = NO_OUTPAINT,
    outpaint_fraction: float = OUTPAINT_FRACTION,
) -> Made:
    """Regenerate the painted region of the editor's image (or extend it past `outpaint_side`) with the chosen
    class (an unconditional model: the known part alone); the files under `out`, the strip included."""
    if pipe.modality != "image":
        raise UsageError(f"inpainting is for image models; this one is {pipe.modality}: use the time range")
    kwargs = settings.checked(pipe)
    image, mask = editor_image_and_mask(editor)
    side = outpaint_side or NO_OUTPAINT
    if side not in OUTPAINT_CHOICES:
        raise UsageError(f"outpaint side {side!r}: choose one of {', '.join(OUTPAINT_CHOICES)}")
    if side != NO_OUTPAINT and mask is not None:
        raise UsageError(f"a painted mask and outpaint={side}: clear the painting or set outpaint to {NO_OUTPAINT}")
    if side == NO_OUTPAINT and mask is None:
        raise UsageError(
            "mask: nothing is painted; paint the region to regenerate on the image, or choose an outpaint side"
        )
    outpaint = None if side == NO_OUTPAINT else f"{side}:{float(outpaint_fraction):g}"
    result = pipe(**kwargs, image=image, mask=mask if outpaint is None else None, outpaint=outpaint)
    written = result.save(out)
    assert result.grid_path is not None and result.strip_path is not None  # save() sets them, with a prime
    return Made(Path(result.grid_path), written[0], Path(result.strip_path), list(result.notes))


def token_note(pipe: Pipeline) -> str:
    """The page's line on how a painted mask becomes tokens (image models)."""
    size = int(getattr(pipe.adapter, "image_size", 0))
    gh, gw = (int(g) for g in pipe.adapter.token_grid)
    return (
        f"The mask is rounded to whole tokens: the model sees the image at {size}x{size} px as a {gh}x{gw} grid of "
        f"tokens ({size // gh}x{size // gw} px each), and a token is regenerated when at least half of its pixels are "
        "painted. White (painted) = regenerate; the rest stays as it is."
    )


def time_note(pipe: Pipeline) -> str:
    """The page's line on the time controls (video and audio models)."""
    unit, range_key, length_key, prime_key = UNITS[pipe.modality]
    ax = time_axis(pipe.adapter, range_key)
    return (
        f"One window is {ax.show(ax.length)} {unit} ({ax.rows} {ax.row_word} of {ax.step}). "
        f"A range `a:b` ({range_key}) regenerates those {unit} of the prime and keeps the rest, rounded to whole "
        f"{ax.row_word}. A length ({length_key}) beyond the window is made window by window, each primed with the "
        f"previous one's last `overlap` {unit} ({prime_key}; also how much of a prime is kept)."
    )
