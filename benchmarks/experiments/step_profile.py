"""Where the time goes, part by part: `python -m djepa.benchmarks.experiments.step_profile [shape=16|64]
[variants=djepa,mar,...] [steps=10] [warmup=3] [samples=16] [out=DIR] [any config override]`.

For each variant (`djepa`: the default; `mar`: `loss.jepa_weight=0`; `mar_arch`: MAR's own architecture, as in
`MAR_ARCHITECTURE`; `rowsP`: `loss.jepa_rows=P/100`; `everyK`: `loss.jepa_every=K`) it times
training steps through the real `Trainer.train_step` (median of `steps` after `warmup`, no profiler; for `everyK`
the mean over a K-step cycle of the medians of the steps with and without the JEPA term), then
profiles as many more and splits a step by the labelled ranges of the code (`djepa::batch`, `teacher`, `encoder`,
`predictor`, `head`, `jepa_projector`, `backward`, `clip`, `optimizer`, `ema`; the rest is the loss arithmetic
and Python). Sampling is split the same way into the trunk (encoder and predictor per reveal step, conditional and
unconditional rows together) and the head, at the config's sampling settings, for a batch of `samples`.

Shapes as the speed driver's: `16` is the image default (4x4 tokens of dim 16), `64` the MAR-comparison shape
(`model=small`, 8x8 tokens of dim 4, bf16). Data are random tokens: speed does not depend on them. Writes
DIR/profile.json and DIR/profile.md. Run it alone on the machine (or pinned to a core of its own): anything
beside it changes every figure.
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch.profiler import ProfilerActivity, profile

from djepa.benchmarks.experiments import key_values
from djepa.benchmarks.experiments.run import machine
from djepa.benchmarks.experiments.speed import CLASSES, SHAPES, random_tokens
from djepa.cli.config import cli_errors, compose_config
from djepa.cli.train import train_config
from djepa.engine.model_config import build_model
from djepa.engine.runtime import autocast, resolve_precision
from djepa.engine.trainer import Trainer
from djepa.errors import UsageError
from djepa.nn.model import DJEPA

STEP_PARTS = (
    *("batch", "teacher", "encoder", "predictor", "head", "jepa_projector"),
    *("backward", "clip", "optimizer", "ema"),
)
SAMPLE_PARTS = ("sample_trunk", "sample_head")
DEFAULTS = {"shape": "16", "variants": "djepa,mar", "steps": "10", "warmup": "3", "samples": "16", "out": ""}


# MAR's own architecture on djepa's model: no JEPA term, one learned position table per sequence, a learned table
# before the head and MAR's weight-decay set (the `mar_arch` benchmark variant of docs/results/djepa-vs-mar.md).
MAR_ARCHITECTURE = [
    "loss.jepa_weight=0",
    "model.pos_embed=learned",
    "model.diffusion_pos_embed=true",
    "train.no_decay=mar",
]


def variant_overrides(name: str) -> list[str]:
    """A variant's config overrides: djepa, mar (MAR mode), mar_arch (MAR's architecture) or rowsP (the JEPA
    term on P % of each batch)."""
    if name == "djepa":
        return []
    if name == "mar":
        return ["loss.jepa_weight=0"]
    if name == "mar_arch":
        return list(MAR_ARCHITECTURE)
    if name.startswith("rows") and name[4:].isdigit() and 0 < int(name[4:]) <= 100:
        return [f"loss.jepa_rows={int(name[4:]) / 100}"]
    if name.startswith("every") and name[5:].isdigit() and int(name[5:]) >= 1:
        return [f"loss.jepa_every={int(name[5:])}"]
    raise UsageError(
        f"variants: unknown variant {name!r} (djepa, mar, mar_arch, rowsP with P a percentage, e.g. rows25, or everyK)"
    )


def labelled_ms(prof: Any, names: Sequence[str], per: int) -> dict[str, float]:
    """Each labelled range's total time in ms divided by `per` (steps or samples)."""
    totals = {e.key: e.cpu_time_total / 1000 for e in prof.key_averages() if e.key.startswith("djepa::")}
    return {name: totals.get(f"djepa::{name}", 0.0) / per for name in names}


def cycle_step_ms(trainer: Trainer, steps: int, warmup: int) -> float:
    """The median ms of a step; with the JEPA term on every k-th step only (loss.jepa_every), the mean over a
    k-step cycle of the medians of the two kinds of step, which a median of them all would not give."""
    every = trainer.config.jepa_every
    with_term: list[float] = []
    without: list[float] = []
    for i in range(warmup + steps):
        step = trainer.step
        start = time.perf_counter()
        trainer.train_step()
        trainer.step += 1
        if i >= warmup:
            (with_term if step % every == 0 else without).append(1000 * (time.perf_counter() - start))
    if every == 1:
        return statistics.median(with_term)
    if not with_term or not without:
        raise UsageError(f"steps={steps} times no step of one kind at loss.jepa_every={every}: give steps >= {every}")
    return (statistics.median(with_term) + (every - 1) * statistics.median(without)) / every


def profile_training(trainer: Trainer, steps: int, warmup: int) -> dict[str, Any]:
    """Median step ms without the profiler, then the labelled parts of as many steps under it."""

    step_ms = cycle_step_ms(trainer, steps, warmup)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        start = time.perf_counter()
        for _ in range(steps):
            trainer.train_step()
            trainer.step += 1
        profiled = 1000 * (time.perf_counter() - start) / steps
    parts = labelled_ms(prof, STEP_PARTS, steps)
    parts["other"] = max(0.0, profiled - sum(parts.values()))
    return {"step_ms": step_ms, "profiled_step_ms": profiled, "parts_ms": parts}


def profile_sampling(model: DJEPA, cfg: Any, dtype: torch.dtype, samples: int) -> dict[str, Any]:
    """ms per item of one batch of `samples` at the config's sampling settings, split into trunk and head."""
    labels = torch.arange(samples) % CLASSES
    steps, guidance = int(cfg.sample.num_steps), float(cfg.sample.guidance_scale)
    temperature, schedule = float(cfg.sample.temperature), str(cfg.sample.guidance_schedule)
    settings = {"num_steps": steps, "guidance": guidance, "temperature": temperature, "guidance_schedule": schedule}

    def draw() -> None:
        model.sample(labels, num_steps=steps, guidance=guidance, temperature=temperature, guidance_schedule=schedule)

    model.eval()
    with torch.no_grad(), autocast(torch.device("cpu"), dtype):
        draw()  # warm-up
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            start = time.perf_counter()
            draw()
            total = 1000 * (time.perf_counter() - start) / samples
    parts = labelled_ms(prof, SAMPLE_PARTS, samples)
    parts["other"] = max(0.0, total - sum(parts.values()))
    return {"ms_per_item": total, "parts_ms": parts, "settings": settings}


def table(results: dict[str, Any]) -> str:
    """The step and sampling splits as markdown, one column per variant."""
    runs = results["variants"]

    def row(label: str, values: Sequence[float], bold: bool = False, digits: int = 1) -> str:
        cells = [f"{x:.{digits}f}" for x in values]
        return f"| {label} | " + " | ".join(f"**{c}**" if bold else c for c in cells) + " |"

    lines = [f"| ms | {' | '.join(runs)} |", "| --- |" + " ---: |" * len(runs)]
    lines.append(row("**step** (median, no profiler)", [r["step_ms"] for r in runs.values()], True, 0))
    lines += [row(part, [r["parts_ms"][part] for r in runs.values()]) for part in (*STEP_PARTS, "other")]
    lines.append(row("**sampling, per item**", [r["sampling"]["ms_per_item"] for r in runs.values()], True))
    lines += [row(part, [r["sampling"]["parts_ms"][part] for r in runs.values()]) for part in (*SAMPLE_PARTS, "other")]
    return "\n".join(lines) + "\n"


def run(argv: Sequence[str]) -> dict[str, Any]:
    own_keys = [a for a in argv if a.split("=", 1)[0] in DEFAULTS]
    overrides = [a for a in argv if a not in own_keys]
    args = key_values(own_keys, DEFAULTS)
    if args["shape"] not in SHAPES:
        raise UsageError(f"shape={args['shape']}: must be one of {', '.join(SHAPES)}")
    shape = SHAPES[args["shape"]]
    variants = {name: variant_overrides(name) for name in args["variants"].split(",")}
    steps, warmup, samples = int(args["steps"]), int(args["warmup"]), int(args["samples"])
    results: dict[str, Any] = {
        "machine": machine(),
        "threads": torch.get_num_threads(),
        "shape": args["shape"],
        "overrides": overrides,
        "variants": {},
    }
    for name, extra in variants.items():
        torch.manual_seed(0)
        cfg = compose_config([*shape.overrides, "train.grad_probe_every=0", *overrides, *extra])
        model = build_model(cfg, shape.token_dim, shape.grid, CLASSES)
        with tempfile.TemporaryDirectory() as tmp:
            trainer = Trainer(model, random_tokens(shape, 1024), train_config(cfg), Path(tmp), torch.device("cpu"))
            record = profile_training(trainer, steps, warmup)
            sample_dtype = resolve_precision(torch.device("cpu"), str(cfg.sample.precision), training=False)
            record["sampling"] = profile_sampling(trainer.ema, cfg, sample_dtype, samples)
        record["precision"], record["sample_precision"] = str(trainer.dtype), str(sample_dtype)
        results["variants"][name] = record
        print(f"{name}: step {record['step_ms']:.0f} ms, sampling {record['sampling']['ms_per_item']:.1f} ms/item")
    if args["out"]:
        out = Path(args["out"])
        out.mkdir(parents=True, exist_ok=True)
        (out / "profile.json").write_text(json.dumps(results, indent=2) + "\n")
        (out / "profile.md").write_text(table(results))
    return results


def main(argv: Sequence[str] | None = None) -> None:
    with cli_errors():
        print(table(run(sys.argv[1:] if argv is None else argv)), end="")


if __name__ == "__main__":
    main()
