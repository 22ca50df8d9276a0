"""Coloured digits: the embedded MNIST digits in a random ink colour on a random ground colour, as ImageFolders.

    python -m djepa.benchmarks.experiments.rgb_digits out=DIR [per_class=400] [heldout_per_class=100] [seed=0]

writes DIR/train/<digit>/<n>.png and DIR/heldout/<digit>/<n>.png (32x32 RGB) from disjoint digits, plus
`rgb_digits.json` (the recipe) in each split, which tells the benchmark to score with the grey-digit classifier.
Colour never tells the class: every image draws its own ink and ground from the same distribution, whatever
its digit, so a model must get the shape right to be recognised by the colour-blind classifier.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from djepa.benchmarks.colour_blind import LUMA
from djepa.benchmarks.views import RGB_DIGITS_MARKER
from djepa.cli.config import cli_errors
from djepa.errors import UsageError
from djepa.modalities.image import load_mnist_digits

SIZE = 32  # the 28x28 digits padded with ground, as the grey default pads them
# Ink and ground are drawn uniformly from the RGB cube, independently of each other and of the class; a pair
# is redrawn until their luminances differ by at least MIN_LUMA_GAP of the full range, so the digit stays
# visible in grey (either may be the brighter: dark ink on light ground happens as often as the reverse).
MIN_LUMA_GAP = 0.3
NUMBERS = {"per_class": 400, "heldout_per_class": 100, "seed": 0}  # the arguments besides out=DIR


def draw_colours(rng: np.random.Generator, count: int) -> tuple[np.ndarray, np.ndarray]:
    """Ink and ground colours [count, 3] in [0, 1] whose luminances differ by >= MIN_LUMA_GAP."""
    luma = np.asarray(LUMA)
    ink, ground = np.empty((count, 3)), np.empty((count, 3))
    for i in range(count):
        while True:
            a, b = rng.random(3), rng.random(3)
            if abs(float(a @ luma - b @ luma)) >= MIN_LUMA_GAP:
                ink[i], ground[i] = a, b
                break
    return ink, ground


def colour_digits(digits: np.ndarray, ink: np.ndarray, ground: np.ndarray) -> np.ndarray:
    """uint8 [M, 28, 28] grey digits -> uint8 [M, SIZE, SIZE, 3]: the grey level blends ground (0) into ink (255)."""
    pad = (SIZE - 28) // 2
    alpha = np.pad(digits.astype(np.float64) / 255.0, ((0, 0), (pad, pad), (pad, pad)))[..., None]
    rgb = ground[:, None, None, :] * (1 - alpha) + ink[:, None, None, :] * alpha
    return np.round(rgb * 255).astype(np.uint8)


def split_indices(labels: np.ndarray, per_class: int, heldout: int, rng: np.random.Generator) -> tuple[list, list]:
    """Per class, a random `per_class` digits for training and the next `heldout` for the held-out split."""
    train, hold = [], []
    for c in range(10):
        idx = rng.permutation(np.flatnonzero(labels == c))
        if per_class + heldout > len(idx):
            raise UsageError(f"per_class + heldout_per_class must be <= {len(idx)} (digits of class {c})")
        train.extend(idx[:per_class].tolist())
        hold.extend(idx[per_class : per_class + heldout].tolist())
    return train, hold


def write_rgb_digits(out: Path, per_class: int = 400, heldout_per_class: int = 100, seed: int = 0) -> dict[str, int]:
    """Write the two splits under `out`; the same seed writes the same files. Returns images per split."""
    digits, labels = (t.numpy() for t in load_mnist_digits())
    rng = np.random.default_rng(seed)
    train, hold = split_indices(labels, per_class, heldout_per_class, rng)
    recipe: dict[str, float] = {
        "seed": seed,
        "per_class": per_class,
        "heldout_per_class": heldout_per_class,
        "size": SIZE,
    }
    recipe["min_luma_gap"] = MIN_LUMA_GAP
    counts = {}
    for split, idx in (("train", train), ("heldout", hold)):
        ink, ground = draw_colours(rng, len(idx))
        images = colour_digits(digits[idx], ink, ground)
        root = Path(out) / split
        root.mkdir(parents=True, exist_ok=True)
        for n, (image, label) in enumerate(zip(images, labels[idx])):
            path = root / str(int(label)) / f"{n:05d}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image).save(path)
        (root / RGB_DIGITS_MARKER).write_text(json.dumps(recipe | {"split": split}, indent=2))
        counts[split] = len(idx)
    return counts


def parse(argv: Sequence[str]) -> tuple[Path, dict[str, int]]:
    """`key=value` arguments as the other commands take them: out=DIR (required) and whole numbers (NUMBERS)."""
    out, numbers = "", dict(NUMBERS)
    for item in argv:
        key, sep, value = item.partition("=")
        if not sep or (key != "out" and key not in NUMBERS):
            raise UsageError(f"{item}: expected one of {', '.join(k + '=' for k in ('out', *NUMBERS))}")
        if key == "out":
            out = value
        elif value.isdigit():
            numbers[key] = int(value)
        else:
            raise UsageError(f"{key}={value} must be a whole number >= 0")
    if not out:
        raise UsageError("out=DIR is required")
    return Path(out), numbers


def main(argv: Sequence[str] | None = None) -> None:
    with cli_errors():
        out, numbers = parse(sys.argv[1:] if argv is None else argv)
        counts = write_rgb_digits(out, **numbers)
        print(json.dumps(counts))


if __name__ == "__main__":
    main()
