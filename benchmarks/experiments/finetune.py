"""Fine-tuning against training from scratch on a new 10-class image folder, by classifier FD per step.

    python -m djepa.benchmarks.experiments.finetune out=DIR source=RUN [steps=400] [eval_every=100] [seeds=1]
        [per_class=200] [eval_per_class=20] [any train override: train.batch_size=..., model=..., ...]

The new data are the letters A-J, grey 32x32 PNGs rendered from the fonts found on the machine (and Pillow's own)
at random sizes, places and slants: classes the source (a model of the digits) has never seen, at the digits'
image size and channels, so its tokenizer fits. Per seed, two runs train `steps` steps on them from one config:
`init_from=RUN` (the source's EMA weights, the class table re-initialised) and from scratch; every `eval_every`
steps a checkpoint is scored with a classifier trained on the letters (accuracy and Fréchet distance on its
features, `eval_per_class` samples per class). Both runs use the source's tokenizer. "Steps to FD x" reads where
each mean curve first reaches the scratch run's final mean FD. Writes DIR/results.json and DIR/summary.md.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from djepa.benchmarks.aggregate import mean_se, steps_to_reach
from djepa.benchmarks.evaluate import RealMedia, modality_classifier, score
from djepa.benchmarks.experiments.run import git_commit, machine, train_variant
from djepa.benchmarks.views import config_view
from djepa.cli.config import cli_errors, compose_config
from djepa.cli.init_from import read_source
from djepa.engine.adapter import build_adapter
from djepa.engine.checkpoint import CheckpointManager
from djepa.engine.loading import load_ema_model
from djepa.engine.runtime import resolve_device
from djepa.engine.sampling import SamplingSettings
from djepa.errors import UsageError
from djepa.io import atomic_write_json

LETTERS = "ABCDEFGHIJ"
SIZE = 32
NUMBERS = {"steps": 400, "eval_every": 100, "seeds": 1, "per_class": 200, "eval_per_class": 20}
ARMS = ("finetune", "scratch")
RECIPE_FILE = "letters.json"


def fonts() -> list[Path]:
    """The TrueType fonts on this machine (sorted, so a seed draws the same ones), for the letters."""
    found: list[Path] = []
    for root in (Path("/usr/share/fonts"), Path("/usr/local/share/fonts"), Path.home() / ".fonts"):
        if root.is_dir():
            found.extend(p for p in root.rglob("*") if p.suffix.lower() in (".ttf", ".otf"))
    return sorted(found)


def render_letter(letter: str, font: Any, rng: np.random.Generator) -> np.ndarray:
    """uint8 [SIZE, SIZE]: a white letter on black, at a random place and slant, like the padded digits."""
    from PIL import Image, ImageDraw

    canvas = Image.new("L", (SIZE * 2, SIZE * 2))
    ImageDraw.Draw(canvas).text((SIZE, SIZE), letter, fill=int(rng.integers(180, 256)), font=font, anchor="mm")
    canvas = canvas.rotate(float(rng.uniform(-12, 12)), resample=Image.Resampling.BILINEAR)
    box = canvas.getbbox() or (0, 0, SIZE * 2, SIZE * 2)
    glyph = canvas.crop(box)
    scale = 24 / max(glyph.size)  # the digits fill a 20x20 box inside 28x28: letters about as large
    glyph = glyph.resize((max(1, round(glyph.width * scale)), max(1, round(glyph.height * scale))))
    out = Image.new("L", (SIZE, SIZE))
    x = int(rng.integers(0, SIZE - glyph.width + 1))
    y = int(rng.integers(0, SIZE - glyph.height + 1))
    out.paste(glyph, (x, y))
    return np.asarray(out)


def write_letters(root: Path, per_class: int, seed: int) -> dict[str, Any]:
    """DIR/<letter>/<n>.png, `per_class` per letter, unless the same recipe is already there; the recipe."""
    from PIL import Image, ImageFont

    paths = fonts()
    recipe = {"letters": LETTERS, "per_class": per_class, "seed": seed, "size": SIZE, "fonts": [str(p) for p in paths]}
    marker = root / RECIPE_FILE
    if marker.is_file() and json.loads(marker.read_text()) == recipe:
        return recipe
    rng = np.random.default_rng(seed)
    loaded: list[Any] = [ImageFont.truetype(str(p), 48) for p in paths] or [ImageFont.load_default(48)]
    for letter in LETTERS:
        (root / letter).mkdir(parents=True, exist_ok=True)
        for n in range(per_class):
            pixels = render_letter(letter, loaded[int(rng.integers(len(loaded)))], rng)
            Image.fromarray(pixels).save(root / letter / f"{n:05d}.png")
    atomic_write_json(marker, recipe)  # a file beside the class folders: no class of its own
    return recipe


def parse(argv: Sequence[str]) -> tuple[Path, Path, dict[str, int], list[str]]:
    """out=DIR and source=RUN (required), the whole numbers of NUMBERS, and the overrides passed on to train."""
    out = source = ""
    numbers, rest = dict(NUMBERS), []
    for item in argv:
        key, sep, value = item.partition("=")
        if key == "out" and sep:
            out = value
        elif key == "source" and sep:
            source = value
        elif key in NUMBERS and sep:
            if not value.isdigit() or int(value) < 1:
                raise UsageError(f"{key}={value} must be a whole number >= 1")
            numbers[key] = int(value)
        else:
            rest.append(item)
    if not out or not source:
        raise UsageError("out=DIR and source=RUN (a trained image run or export) are required")
    if numbers["eval_every"] > numbers["steps"]:
        raise UsageError(f"eval_every={numbers['eval_every']} is more than steps={numbers['steps']}")
    return Path(out), Path(source), numbers, rest


def arm_overrides(base: list[str], arm: str, run_dir: Path, seed: int, source: Path, n: dict[str, int]) -> list[str]:
    steps, every = n["steps"], n["eval_every"]
    return [
        *base,
        *([f"init_from={source}"] if arm == "finetune" else []),
        f"run_dir={run_dir}",
        f"seed={seed}",
        f"train.steps={steps}",
        f"train.checkpoint_every={every}",
        f"train.keep_checkpoints={steps // every + 1}",
        "train.preview_every=0",
        "sample.preview_per_class=0",
    ]


def curve(cfg: DictConfig, run_dir: Path, scorer: Any, per_class: int) -> list[dict[str, Any]]:
    """Accuracy and FD of every checkpoint of a run, sampled with the same seed."""
    points = []
    for directory in CheckpointManager(run_dir).directories():
        state = CheckpointManager.verify(directory)
        model = load_ema_model(directory, state, resolve_device(cfg.device), cfg.loss.head)
        torch.manual_seed(cfg.seed)
        point = scorer(model, per_class)
        points.append({"step": state["step"], "fd": point["fd"], "accuracy": point["accuracy"]})
        tqdm.write(f"  {run_dir.name} step {state['step']}: accuracy {point['accuracy']:.3f}, fd {point['fd']:.3f}")
    return points


def mean_curve(curves: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    out = []
    for points in zip(*curves):
        fd, fd_se = mean_se([p["fd"] for p in points])
        acc, acc_se = mean_se([p["accuracy"] for p in points])
        out.append({"step": points[0]["step"], "fd": fd, "fd_se": fd_se, "accuracy": acc, "accuracy_se": acc_se})
    return out


def summary(results: dict[str, Any]) -> str:
    box = results["machine"]
    arms = results["arms"]
    lines = [
        f"# Fine-tuning vs scratch on letters A-J ({box.get('cpu')}, {box.get('cores')} cores)",
        "",
        f"Source: `{results['source']}`; {results['seeds']} seed(s); FD of the letters classifier "
        f"(held-out accuracy {results['classifier_heldout_accuracy']:.3f}), {results['eval_per_class']} samples "
        "per class; mean (standard error over seeds).",
        "",
        "| step | fine-tune FD | scratch FD | fine-tune accuracy | scratch accuracy |",
        "|---:|---:|---:|---:|---:|",
    ]
    for a, b in zip(arms["finetune"]["curve"], arms["scratch"]["curve"]):
        lines.append(
            f"| {a['step']} | {a['fd']:.2f} ({a['fd_se']:.2f}) | {b['fd']:.2f} ({b['fd_se']:.2f}) "
            f"| {a['accuracy']:.3f} | {b['accuracy']:.3f} |"
        )
    reach = results["steps_to_scratch_final_fd"]

    def steps(value: float | None) -> str:
        return "not reached" if value is None else f"{value:.0f}"

    lines += ["", f"Steps to the scratch run's final FD {reach['fd']:.2f}: fine-tune {steps(reach['finetune'])}, "
              f"scratch {steps(reach['scratch'])}."]  # fmt: skip
    return "\n".join(lines) + "\n"


def run(out: Path, source: Path, n: dict[str, int], passthrough: list[str]) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    data = out / "data"
    recipe = write_letters(data, n["per_class"], 0)
    # Both runs encode the letters with the source's tokenizer (a folder's default would be a new one of its own).
    tokenizer = read_source(source).tokenizer_path
    base = ["modality=image", f"modality.adapter.data_dir={data}", *passthrough]
    base[2:2] = [f"modality.adapter.tokenizer.path={tokenizer}"] if tokenizer else []
    cfg = compose_config(base)
    view = config_view(cfg, build_adapter(cfg))
    classifier, heldout, real = modality_classifier(cfg, view, RealMedia(view.adapter))
    settings = SamplingSettings.from_config(cfg)

    def scorer(model: Any, per_class: int) -> dict[str, Any]:
        return score(model, view, classifier, real, per_class, settings)

    per_arm: dict[str, list[list[dict[str, Any]]]] = {arm: [] for arm in ARMS}
    for seed in range(n["seeds"]):
        for arm in ARMS:
            run_dir = out / f"{arm}-s{seed}"
            tqdm.write(f"[seed {seed}] {arm}")
            train_variant(arm_overrides(base, arm, run_dir, seed, source, n))  # a finished run returns at once
            per_arm[arm].append(curve(cfg, run_dir, scorer, n["eval_per_class"]))
    arms: dict[str, dict[str, Any]] = {arm: {"curve": mean_curve(c), "per_seed": c} for arm, c in per_arm.items()}
    target = arms["scratch"]["curve"][-1]["fd"]
    results = {
        "source": str(source),
        "git_commit": git_commit(),
        "machine": machine(),
        "data": recipe,
        "seeds": n["seeds"],
        "numbers": n,
        "config": OmegaConf.to_container(cfg, resolve=True),
        "eval_per_class": n["eval_per_class"],
        "classifier_heldout_accuracy": heldout,
        "arms": arms,
        "steps_to_scratch_final_fd": {"fd": target} | {a: steps_to_reach(arms[a]["curve"], target) for a in ARMS},
        "note": "fd and accuracy come from a small classifier trained on the letters; not comparable with FID",
    }
    atomic_write_json(out / "results.json", results)
    (out / "summary.md").write_text(summary(results))
    return results


def main(argv: Sequence[str] | None = None) -> None:
    with cli_errors():
        out, source, numbers, rest = parse(sys.argv[1:] if argv is None else argv)
        results = run(out, source, numbers, rest)
        print(summary(results))


if __name__ == "__main__":
    main()
