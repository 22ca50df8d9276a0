"""Inpainting held-out digits: does the model complete the left half of a digit into the same digit?

    python -m djepa.benchmarks.experiments.inpainting out=DIR [count=50] [num_steps=N] [any train override]

The embedded MNIST digits (5,000, none of them a test split) are split per class: `count` of each class are held
out, the rest are written as an image folder (DIR/data/train/<digit>/, 32x32 PNGs padded as the embedded default
pads them). `train modality=image modality.adapter.data_dir=DIR/data/train run_dir=DIR/run home=DIR/home` trains
the default image model on that folder (its own tokenizer first) unless DIR/run holds a checkpoint already. Each
held-out digit then has its right half masked (`mask=right`: 8 of the 16 tokens) and is inpainted twice: without
a class (the left half decides) and with its class. The benchmark's classifier (trained on the training folder)
reads every result. Reported: the share read as the original class; for scale, the classifier's accuracy on the
originals (its ceiling) and on the left halves alone, the right half filled with the ground (what the known half
tells it without any inpainting); and the known half's difference from the tokenizer's round trip of the original
(mean absolute difference in [-1, 1] pixel units and PSNR, over the whole known half and over its outer token
column, away from the seam). Writes DIR/results.json, DIR/summary.md and DIR/inpainting.png (one digit per class:
original, mask, result without a class, result with it).
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from djepa.errors import UsageError

DEFAULTS: dict[str, Any] = {"out": None, "count": 50, "num_steps": None}
SIZE = 32  # the default image canvas: the 28x28 digits padded by 2 on every side


def parse(argv: Sequence[str]) -> tuple[dict[str, Any], list[str]]:
    """The experiment's own keys (out, count, num_steps) and the overrides passed on to train."""
    args = dict(DEFAULTS)
    rest = []
    for item in argv:
        key, sep, value = item.partition("=")
        if not sep or key not in DEFAULTS:
            rest.append(item)
        elif key == "out":
            args["out"] = value
        elif value.isdigit() and int(value) > 0:
            args[key] = int(value)
        else:
            raise UsageError(f"{key}={value} must be a whole number above 0")
    if not args["out"]:
        raise UsageError("out=DIR is required")
    return args, rest


def split_digits(count: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The embedded digits padded to 32x32 uint8, split into (train, train labels, held-out, held-out labels) with
    `count` of each class held out (a seeded choice)."""
    from djepa.modalities.image import load_mnist_digits

    digits, labels = (t.numpy() for t in load_mnist_digits())
    pad = (SIZE - digits.shape[-1]) // 2
    digits = np.pad(digits, ((0, 0), (pad, pad), (pad, pad)))
    rng = np.random.default_rng(seed)
    held = np.sort(np.concatenate([rng.choice(np.flatnonzero(labels == c), count, replace=False) for c in range(10)]))
    train = np.setdiff1d(np.arange(len(digits)), held)
    return digits[train], labels[train], digits[held], labels[held]


def write_folder(root: Path, images: np.ndarray, labels: np.ndarray) -> None:
    """root/<digit>/<index>.png, unless a complete folder is there already."""
    if root.is_dir() and sum(1 for _ in root.rglob("*.png")) == len(images):
        return
    for i, (image, label) in enumerate(zip(images, labels)):
        path = root / str(int(label)) / f"{i:05d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(path)


def train_overrides(out: Path, rest: Sequence[str]) -> list[str]:
    return [
        "modality=image",
        f"modality.adapter.data_dir={out / 'data' / 'train'}",
        f"run_dir={out / 'run'}",
        f"home={out / 'home'}",
        *rest,
    ]


def ensure_run(out: Path, rest: Sequence[str]) -> None:
    """Train the default image model on the training folder, unless the run has a checkpoint."""
    if any((out / "run" / "checkpoints").glob("step_*")):
        return
    command = [sys.executable, "-m", "djepa.cli.train", *train_overrides(out, rest)]
    print("training:", " ".join(command[2:]), flush=True)
    subprocess.run(command, check=True)


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = float((a - b).pow(2).mean())
    return math.inf if mse == 0 else 10 * math.log10(4.0 / mse)  # the [-1, 1] range spans 2


def known_half_difference(result: torch.Tensor, reference: torch.Tensor, columns: slice) -> dict[str, float]:
    a, b = result[..., columns], reference[..., columns]
    return {"mean_abs": float((a - b).abs().mean()), "psnr_db": psnr(a, b)}


def picture(rows: list[list[torch.Tensor]], path: Path, scale: int = 3) -> Path:
    from djepa.modalities.pixels import grid_canvas, to_uint8

    cells = torch.stack([cell for row in rows for cell in row])
    canvas = grid_canvas(to_uint8(cells), len(rows))
    img = Image.fromarray(canvas[..., 0] if canvas.shape[-1] == 1 else canvas)
    img = img.resize((img.width * scale, img.height * scale), Image.Resampling.NEAREST)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
    return path


def evaluate(out: Path, rest: Sequence[str], held: np.ndarray, labels: np.ndarray, num_steps: int | None) -> dict:
    from djepa import Pipeline
    from djepa.benchmarks.views import classify_media, config_view, load_classifier
    from djepa.cli.config import compose_config
    from djepa.engine.adapter import build_adapter
    from djepa.engine.sampling import generate

    pipe = Pipeline.from_pretrained(out / "run", device="cpu")
    cfg = compose_config(train_overrides(out, rest))
    view = config_view(cfg, build_adapter(cfg))
    classifier, classifier_heldout = load_classifier(cfg, view, 400)
    settings = pipe.settings(num_steps=num_steps)
    primes = [pipe.adapter.prime_image(Image.fromarray(d), "right") for d in held]  # type: ignore[attr-defined]
    known_tokens = torch.stack([p.tokens for p in primes])
    known_mask = torch.stack([p.known for p in primes])
    y = torch.from_numpy(labels).long()
    originals = torch.from_numpy(held).float().div(127.5).sub(1)[:, None]
    with torch.no_grad():
        mean, _ = pipe.adapter.encode_media(originals)  # type: ignore[attr-defined]
        roundtrip = pipe.adapter.decode_tokens(pipe.adapter.to_tokens(mean.float()))  # type: ignore[attr-defined]
    results: dict[str, torch.Tensor] = {}
    for name, conditional in (("without_class", False), ("with_class", True)):
        torch.manual_seed(0)
        tokens = generate(pipe.model, y, settings, 50, known_tokens, known_mask, False, conditional=conditional)
        assert torch.equal(tokens[known_mask], known_tokens[known_mask])  # the known tokens came back as given
        results[name] = pipe.adapter.decode_tokens(tokens)
    left_only = originals.clone()
    left_only[..., SIZE // 2 :] = -1.0  # the ground of the digits

    def accuracy(media: torch.Tensor) -> float:
        return float((classify_media(classifier, view, media)[0].argmax(1) == y).float().mean())

    tile = SIZE // pipe.adapter.token_grid[1]
    known, outer = slice(0, SIZE // 2), slice(0, SIZE // 2 - tile)
    report: dict[str, Any] = {
        "heldout_digits": len(held),
        "token_grid": list(pipe.adapter.token_grid),
        "num_steps": settings.num_steps,
        "note": primes[0].note,
        "classifier_heldout_accuracy_on_training_folder": classifier_heldout,
        "accuracy_originals": accuracy(originals),
        "accuracy_roundtrip": accuracy(roundtrip),
        "accuracy_left_half_only": accuracy(left_only),
    }
    for name, media in results.items():
        report[f"accuracy_inpainted_{name}"] = accuracy(media)
        report[f"known_half_vs_roundtrip_{name}"] = known_half_difference(media, roundtrip, known)
        report[f"known_half_outer_vs_roundtrip_{name}"] = known_half_difference(media, roundtrip, outer)
    report["roundtrip_vs_original_known_half"] = known_half_difference(roundtrip, originals, known)
    first = [int(np.flatnonzero(labels == c)[0]) for c in range(10)]
    mask = primes[0].regenerate.float().mul(2).sub(1)[None]
    rows = [[originals[i], mask, results["without_class"][i], results["with_class"][i]] for i in first]
    report["picture"] = str(picture(rows, out / "inpainting.png"))
    return report


def summary(report: dict[str, Any]) -> str:
    def pct(key: str) -> str:
        return f"{100 * report[key]:.1f} %"

    lines = [
        f"Held-out digits: {report['heldout_digits']}, right half masked ({report['note']}).",
        "",
        "| | read as the original class |",
        "| --- | --- |",
        f"| inpainted without a class | {pct('accuracy_inpainted_without_class')} |",
        f"| inpainted with its class | {pct('accuracy_inpainted_with_class')} |",
        f"| originals | {pct('accuracy_originals')} |",
        f"| tokenizer round trip | {pct('accuracy_roundtrip')} |",
        f"| left half only (right half blank) | {pct('accuracy_left_half_only')} |",
        "",
        "| known half vs round trip | mean abs | PSNR dB |",
        "| --- | --- | --- |",
    ]
    for name in ("without_class", "with_class"):
        for part, label in (("known_half", "whole known half"), ("known_half_outer", "outer token column")):
            d = report[f"{part}_vs_roundtrip_{name}"]
            lines.append(f"| {label}, {name.replace('_', ' ')} | {d['mean_abs']:.4f} | {d['psnr_db']:.1f} |")
    d = report["roundtrip_vs_original_known_half"]
    lines.append(f"| (round trip vs original, known half) | {d['mean_abs']:.4f} | {d['psnr_db']:.1f} |")
    return "\n".join(lines) + "\n"


def run(argv: Sequence[str]) -> dict[str, Any]:
    args, rest = parse(argv)
    out = Path(args["out"])
    train, train_labels, held, held_labels = split_digits(int(args["count"]))
    write_folder(out / "data" / "train", train, train_labels)
    ensure_run(out, rest)
    report = evaluate(out, rest, held, held_labels, args["num_steps"])
    (out / "results.json").write_text(json.dumps(report, indent=2))
    (out / "summary.md").write_text(summary(report))
    print(summary(report))
    return report


def main(argv: Sequence[str] | None = None) -> None:
    from djepa.cli.config import cli_errors

    with cli_errors():
        run(sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    main()
