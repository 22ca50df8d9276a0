"""Image inpainting and outpainting: which tokens of a prime image stay known and which are generated.

A mask says what to regenerate (white = regenerate): a PNG the size of the prime, a shorthand (`right`,
`center:0.4`: a side or the centre, with the fraction of the image it takes), or a box `x0,y0,x1,y1` in the
prime's pixels. Outpainting (`right:0.25`, `all:0.25`) moves the prime inside the model's fixed canvas and
regenerates what it leaves: a side pans the view past that edge (the far edge leaves the frame), `all` shrinks the
prime to the centre and regenerates the border. Masks become whole tokens: a token is regenerated when at least
half of its pixels are. What lies under the regenerated region never reaches the model: it is filled with the known
pixels' median before the prime is encoded.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from djepa.errors import UsageError
from djepa.modalities.pixels import IMAGE_ERRORS, fit_image, save_canvas

SIDES = ("left", "right", "top", "bottom")
MASK_SHORTHANDS = (*SIDES, "center")
OUTPAINT_SIDES = (*SIDES, "all")
MASK_FRACTION = 0.5  # a shorthand mask without a fraction: half the image (the centre: half its width and height)
OUTPAINT_FRACTION = 0.25  # outpainting without a fraction: a quarter of the image
MASK_FORMS = "left|right|top|bottom|center[:fraction], a box x0,y0,x1,y1 in pixels, or a mask PNG (white = regenerate)"
OUTPAINT_FORMS = "left|right|top|bottom|all[:fraction], e.g. right:0.25"
BOX = re.compile(r"\s*\[?\s*(-?\d+)\s*,\s*(-?\d+)\s*,\s*(-?\d+)\s*,\s*(-?\d+)\s*\]?\s*")


class ImageCanvas(Protocol):
    """What inpainting needs of an image adapter (djepa.modalities.image.ImageAdapter)."""

    image_size: int
    channels: int

    @property
    def token_grid(self) -> tuple[int, ...]: ...

    def encode_media(self, media: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]: ...

    def to_tokens(self, latents: torch.Tensor) -> torch.Tensor: ...


@dataclass
class ImagePrime:
    """A prime image ready for sampling: its tokens, which of them stay, and what to show beside the results."""

    tokens: torch.Tensor  # [N, D]: the canvas encoded, its regenerated region filled first
    known: torch.Tensor  # [N] bool, True where the token stays as given
    shown: torch.Tensor  # [C, S, S] in [-1, 1]: the prime as the model sees it (outpainting: moved, the rest filled)
    regenerate: torch.Tensor  # [S, S] bool: the pixels of the regenerated tokens
    note: str  # one line: what is regenerated, and how the mask was rounded to whole tokens

    def save_strip(self, media: torch.Tensor, rows: int, path: Path, scale: int = 2) -> Path:
        """A PNG with `rows` rows of: the prime, the mask (white = regenerated), then the results of that row."""
        cols = -(-len(media) // rows)
        mask = self.regenerate.float().mul(2).sub(1).expand_as(self.shown)
        blank = torch.full_like(self.shown, -1.0)
        cells = []
        for r in range(rows):
            row = list(media[r * cols : (r + 1) * cols].float())
            cells += [self.shown, mask, *row, *[blank] * (cols - len(row))]
        return save_canvas(torch.stack(cells), rows, path, scale)


def parse_fraction(key: str, spec: str, text: str) -> float:
    try:
        fraction = float(text)
    except ValueError:
        fraction = math.nan
    if not 0.0 < fraction < 1.0:
        raise UsageError(f"{key}={spec}: the fraction must be a number between 0 and 1 (exclusive), got {text!r}")
    return fraction


def parse_side(key: str, spec: str, sides: Sequence[str], default: float) -> tuple[str, float] | None:
    """`side` or `side:fraction` (one of `sides`), or None when `spec` is not of that form."""
    name, sep, fraction = spec.strip().partition(":")
    if name.strip().lower() not in sides:
        return None
    return name.strip().lower(), parse_fraction(key, spec, fraction) if sep else default


def side_mask(side: str, fraction: float, height: int, width: int) -> torch.Tensor:
    """[H, W] bool, True on the `fraction` of the image at `side` (`center`: a centred box of that fraction of
    the height and of the width)."""
    mask = torch.zeros(height, width, dtype=torch.bool)
    dy, dx = round(fraction * height), round(fraction * width)
    if side == "left":
        mask[:, :dx] = True
    elif side == "right":
        mask[:, width - dx :] = True
    elif side == "top":
        mask[:dy] = True
    elif side == "bottom":
        mask[height - dy :] = True
    else:
        y0, x0 = (height - dy) // 2, (width - dx) // 2
        mask[y0 : y0 + dy, x0 : x0 + dx] = True
    return mask


def box_mask(key: str, spec: Any, box: Sequence[int], height: int, width: int) -> torch.Tensor:
    """[H, W] bool, True inside the pixel box x0,y0,x1,y1 (x1, y1 exclusive) of an image of that size."""
    x0, y0, x1, y1 = (int(v) for v in box)
    if not (0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height):
        raise UsageError(
            f"{key}={spec}: the box x0,y0,x1,y1 must lie in the {width}x{height} prime with x0 < x1 and y0 < y1"
        )
    mask = torch.zeros(height, width, dtype=torch.bool)
    mask[y0:y1, x0:x1] = True
    return mask


def open_image(value: Any, key: str) -> Image.Image:
    """A path or a PIL image (or a uint8 array [H, W(, C)]) as a loaded PIL image; one-line errors."""
    if isinstance(value, Image.Image):
        return value
    if isinstance(value, np.ndarray):
        return Image.fromarray(value)
    if not isinstance(value, (str, Path)):
        raise UsageError(f"{key}: expected an image file or a PIL image, got {type(value).__name__}")
    path = Path(value)
    if not path.is_file():
        raise UsageError(f"{key}={value} does not exist")
    try:
        with Image.open(path) as img:
            return img.copy()  # loaded now: an unreadable file fails here
    except IMAGE_ERRORS as err:
        first_line = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise UsageError(f"{key}={value}: cannot read it as an image ({first_line})") from err


def mask_coverage(spec: Any, prime_size: tuple[int, int], size: int) -> torch.Tensor:
    """The mask `spec` as the share of each pixel to regenerate, [size, size] in [0, 1], on the model's canvas
    (a PNG or a box is fitted as the prime is: short side resized to `size`, centre-cropped)."""
    width, height = prime_size
    if isinstance(spec, str) and not Path(spec).is_file():
        side = parse_side("mask", spec, MASK_SHORTHANDS, MASK_FRACTION)
        if side is not None:
            return side_mask(*side, size, size).float()
        found = BOX.fullmatch(spec)
        if found is None:
            raise UsageError(f"mask={spec} is not a mask (nor an existing file): give {MASK_FORMS}")
        pixels = box_mask("mask", spec, [int(v) for v in found.groups()], height, width)
    elif isinstance(spec, (list, tuple)) and len(spec) == 4 and all(isinstance(v, (int, np.integer)) for v in spec):
        pixels = box_mask("mask", ",".join(map(str, spec)), spec, height, width)
    elif isinstance(spec, (str, Path, Image.Image, np.ndarray)):
        img = open_image(spec, "mask")
        if img.size != (width, height):
            raise UsageError(
                f"mask{'=' + str(spec) if isinstance(spec, (str, Path)) else ''} is {img.width}x{img.height}, "
                f"the prime is {width}x{height}: give a mask of the prime's size (white = regenerate)"
            )
        return (fit_image(img, size, 1)[0] + 1).div(2).clamp(0, 1)
    else:
        raise UsageError(f"mask={spec!r} is not a mask: give {MASK_FORMS}")
    img = Image.fromarray(pixels.numpy().astype(np.uint8) * 255)
    return (fit_image(img, size, 1)[0] + 1).div(2).clamp(0, 1)


def token_mask(coverage: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """[gh, gw] bool: the tokens at least half of whose pixels are to be regenerated."""
    return F.adaptive_avg_pool2d(coverage[None, None].float(), grid)[0, 0] >= 0.5


def describe(regen: torch.Tensor, tile: tuple[int, int], coverage: torch.Tensor | None, what: str) -> str:
    """One line: how many tokens are regenerated, and how many pixels rounding the mask to whole tokens changed."""
    gh, gw = regen.shape
    line = f"{what}: regenerating {int(regen.sum())} of {gh * gw} tokens ({gh}x{gw} grid, {tile[0]}x{tile[1]} px each)"
    if coverage is None:
        return line
    changed = int(((coverage >= 0.5) != upsample(regen, tile)).sum())
    if not changed:
        return line + "; the mask fits the token grid as given"
    return line + f"; rounding the mask to whole tokens changed {changed} of {coverage.numel()} pixels"


def rounded_mask(spec: Any, prime_size: tuple[int, int], size: int, grid: tuple[int, int]) -> tuple[torch.Tensor, str]:
    """The tokens [gh, gw] that mask `spec` regenerates on a prime of `prime_size` (width, height) seen at
    `size` x `size`, and the line saying how it was rounded; an empty or full result is a UsageError."""
    coverage = mask_coverage(spec, prime_size, size)
    regen = token_mask(coverage, grid)
    tile = (size // grid[0], size // grid[1])
    shown = str(spec) if isinstance(spec, (str, Path)) else None
    if isinstance(spec, (list, tuple)):
        shown = ",".join(map(str, spec))
    what = f"mask={shown}" if shown is not None else "mask"
    if not regen.any():
        raise UsageError(
            f"{what} covers no whole token once rounded to the {grid[0]}x{grid[1]} token grid ({tile[0]}x{tile[1]} "
            "px each): nothing to regenerate; make the white region larger"
        )
    if regen.all():
        raise UsageError(f"{what} covers every token: nothing of the prime would stay; sample without prime and mask")
    return regen, describe(regen, tile, coverage, what)


def upsample(regen: torch.Tensor, tile: tuple[int, int]) -> torch.Tensor:
    return regen.repeat_interleave(tile[0], 0).repeat_interleave(tile[1], 1)


def outpaint_canvas(
    spec: str, image: torch.Tensor, grid: tuple[int, int], tile: tuple[int, int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """The prime moved for outpainting and the token mask [gh, gw] of what it leaves to regenerate; the canvas
    pixels it leaves are NaN (filled later)."""
    parsed = parse_side("outpaint", str(spec), OUTPAINT_SIDES, OUTPAINT_FRACTION)
    if parsed is None:
        raise UsageError(f"outpaint={spec} is not an outpainting side: give {OUTPAINT_FORMS}")
    side, fraction = parsed
    gh, gw = grid
    axis_tokens = gw if side in ("left", "right") else gh
    k = round(fraction * axis_tokens)
    most = (axis_tokens - 1) // 2 if side == "all" else axis_tokens - 1
    if not 1 <= k <= most:
        raise UsageError(
            f"outpaint={spec}: {fraction:g} of {axis_tokens} tokens is {fraction * axis_tokens:g}, rounded to {k}; "
            f"it must be 1 to {most} whole tokens{' per side' if side == 'all' else ''}"
        )
    canvas = torch.full_like(image, math.nan)
    regen = torch.zeros(grid, dtype=torch.bool)
    c, height, width = image.shape
    if side == "all":
        ky = round(fraction * gh)
        py, px = ky * tile[0], k * tile[1]
        inner = F.interpolate(image[None], size=(height - 2 * py, width - 2 * px), mode="bilinear", antialias=True)
        canvas[:, py : height - py, px : width - px] = inner[0]
        regen[:] = True
        regen[ky : gh - ky, k : gw - k] = False
    elif side in ("left", "right"):
        px = k * tile[1]
        if side == "right":
            canvas[..., : width - px], regen[:, gw - k :] = image[..., px:], True
        else:
            canvas[..., px:], regen[:, :k] = image[..., : width - px], True
    else:
        py = k * tile[0]
        if side == "bottom":
            canvas[:, : height - py], regen[gh - k :] = image[:, py:], True
        else:
            canvas[:, py:], regen[:k] = image[:, : height - py], True
    return canvas, regen


def image_prime(
    adapter: ImageCanvas, image: Any, mask: Any = None, outpaint: str | None = None, key: str = "prime"
) -> ImagePrime:
    """The prime `image` (a path or a PIL image) with `mask` (inpainting) or `outpaint` (outpainting) applied, at
    `adapter`'s canvas and token grid; `key` names the image in errors."""
    if mask is not None and outpaint is not None:
        raise UsageError("mask and outpaint together: give one of them")
    if mask is None and outpaint is None:
        named = f"{key}={image}" if isinstance(image, (str, Path)) else key
        raise UsageError(f"{named}: say what to regenerate: mask={MASK_FORMS}, or outpaint={OUTPAINT_FORMS}")
    img = open_image(image, key)
    size, channels = int(adapter.image_size), int(adapter.channels)
    try:
        picture = fit_image(img, size, channels)
    except IMAGE_ERRORS as err:  # a truncated file loads lazily and fails only here
        raise UsageError(f"{key}: cannot read it as an image ({err})") from err
    gh, gw = adapter.token_grid
    tile = (size // gh, size // gw)
    if outpaint is not None:
        canvas, regen = outpaint_canvas(outpaint, picture, (gh, gw), tile)
        note = describe(regen, tile, None, f"outpaint={outpaint}")
    else:
        regen, note = rounded_mask(mask, img.size, size, (gh, gw))
        canvas = picture.clone()
    pixels = upsample(regen, tile)
    known_pixels = canvas[:, ~pixels]
    fill = known_pixels.nan_to_num(-1.0).median(dim=1).values  # [C]
    filled = torch.where(pixels | canvas.isnan(), fill[:, None, None], canvas)
    with torch.no_grad():
        mean, _ = adapter.encode_media(filled[None])
    tokens = adapter.to_tokens(mean.float().cpu())[0]
    shown_canvas = torch.where(canvas.isnan(), fill[:, None, None], canvas)
    return ImagePrime(tokens, ~regen.flatten(), shown_canvas, pixels, note)
