"""`benchmark modality=M out=DIR`: D-JEPA against MAR mode and the flow head at equal steps, seeds and data.

Each variant trains in its own process (clean peak-memory figures), once per seed (`benchmark.seeds=N`),
checkpoints at every curve point, and is scored with the modality's classifier (and, given
`standard_weights=PATH`, the final checkpoint with the standard FID or feature-network FD). Curves are the
mean over seeds with the standard error; "steps to FD x" reads where each mean curve first reaches MAR
mode's final FD. Writes results.json, summary.md and PNG plots.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from djepa.benchmarks.aggregate import aggregate_seeds, steps_to_reach
from djepa.benchmarks.classifiers import ConvClassifier
from djepa.benchmarks.evaluate import RealMedia, modality_classifier, score, standard_metric
from djepa.benchmarks.experiments.probes import context_use
from djepa.benchmarks.report import write_plots, write_summary
from djepa.benchmarks.standard import SKIPPED, StandardMetric
from djepa.benchmarks.views import ClassifierView, config_view
from djepa.cli.config import cli_errors, compose_config
from djepa.engine.adapter import build_adapter, ensure_tokenizer
from djepa.engine.checkpoint import CheckpointManager
from djepa.engine.loading import load_ema_model
from djepa.engine.runtime import resolve_device
from djepa.engine.sampling import SamplingSettings
from djepa.errors import UsageError
from djepa.nn.masking import training_mask
from djepa.nn.model import DJEPA


def passthrough_overrides(argv: Sequence[str]) -> list[str]:
    """Command-line overrides that shape the compared models (not the benchmark's own keys)."""
    own = ("benchmark.", "out", "standard_weights")
    return [a for a in argv if not a.split("=", 1)[0].lstrip("+~").startswith(own)]


def variant_overrides(
    cfg: DictConfig, argv: Sequence[str], name: str, run_dir: Path, seed: int | None = None
) -> list[str]:
    bench = cfg.benchmark
    steps = bench.quick_steps if bench.quick else bench.steps
    every = max(1, steps // 2) if bench.quick else bench.eval_every
    quick = ["model=tiny", "loss.head.sampling_steps=5", "sample.num_steps=4"] if bench.quick else []
    return [
        *passthrough_overrides(argv),
        *quick,
        *bench.variants[name],
        f"run_dir={run_dir}",
        *([] if seed is None else [f"seed={seed}"]),
        f"train.steps={steps}",
        f"train.checkpoint_every={every}",
        f"train.keep_checkpoints={steps // every + 1}",
        "train.preview_every=0",
        "sample.preview_per_class=0",
    ]


def train_variant(overrides: list[str]) -> None:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run([sys.executable, "-m", "djepa.cli.train", *overrides], env=env)
    if proc.returncode == 2:
        # train refused with its own one-line reason (printed above): a user error, not a crash.
        raise UsageError(f"training refused: djepa.cli.train {' '.join(overrides)} (the reason is on the line above)")
    if proc.returncode:
        raise RuntimeError(f"training failed ({proc.returncode}): djepa.cli.train {' '.join(overrides)}")


def flops_per_step(model: DJEPA, cfg: DictConfig, token_dim: int) -> float:
    """Training FLOPs of one step (forward, backward, EMA target pass) by torch's flop counter."""
    from torch.utils.flop_counter import FlopCounterMode

    b, n = int(cfg.train.batch_size), model.num_tokens
    tokens, labels = torch.randn(b, n, token_dim), torch.randint(0, model.num_classes, (b,))
    mask = training_mask(b, n)
    model = model.cpu().train()
    with FlopCounterMode(display=False) as counter:
        targets = model.target_features(tokens, labels) if model.jepa else None
        losses = model.loss(tokens, labels, mask, targets)
        torch.stack(list(losses.values())).sum().backward()
    model.zero_grad(set_to_none=True)
    return float(counter.get_total_flops())


def machine() -> dict[str, Any]:
    cpu = platform.processor()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    info = {"cpu": cpu, "cores": os.cpu_count(), "torch": torch.__version__, "python": platform.python_version()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=Path(__file__).parent)
        return out.stdout.strip() or None
    except OSError:
        return None


def evaluate_variant(
    cfg: DictConfig,
    run_dir: Path,
    view: ClassifierView,
    classifier: ConvClassifier,
    real: torch.Tensor,
    standard: StandardMetric | None = None,
    probe_tokens: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> dict:
    device = resolve_device(cfg.device)
    per_class = 2 if cfg.benchmark.quick else cfg.benchmark.eval_per_class
    curve = []
    directories = CheckpointManager(run_dir).directories()
    settings = SamplingSettings.from_config(cfg)
    for directory in directories:
        state = CheckpointManager.verify(directory)
        model = load_ema_model(directory, state, device, cfg.loss.head)
        torch.manual_seed(cfg.seed)
        last = standard if directory == directories[-1] else None  # the standard network is slow: final point only
        point = score(model, view, classifier, real, per_class, settings, last)
        curve.append({"step": state["step"], **point})
        tqdm.write(f"  step {state['step']}: accuracy {point['accuracy']:.3f}, fd {point['fd']:.3f}")
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    rows = [r for r in rows if "step_ms" in r]  # the step records (train.eval_every adds eval_* records)
    steady = rows[len(rows) // 5 :] or rows  # skip warm-up steps
    final = curve[-1]
    probe = context_use(model, *probe_tokens) if probe_tokens is not None else {}
    return {
        **probe,
        "fd": final["fd"],
        "accuracy": final["accuracy"],
        "inception_score": final["inception_score"],
        **(SKIPPED if standard is None else {standard.name: final[standard.name]}),
        "sample_ms_per_item": final["sample_ms_per_item"],
        "train_step_ms": sum(r["step_ms"] for r in steady) / len(steady),
        "tokens_per_s": sum(r["tokens_per_s"] for r in steady) / len(steady),
        "peak_mem_mb": max(r.get("peak_mem_mb", 0.0) for r in rows),
        "params": model.num_params(),
        "flops_per_step": flops_per_step(model, cfg, view.adapter.token_dim),
        "steps": final["step"],
        "curve": curve,
    }


def context_probe_tokens(adapter: Any, seed: int, count: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """A fixed subset of the cached token grids (posterior means) for the context-use probe."""
    data = adapter.token_data()
    rows = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))[:count]
    return data.mean[rows], data.labels[rows]


def add_steps_to_reach(results: dict[str, Any], reference: str = "mar") -> None:
    """Per variant, the steps its mean FD curve takes to reach the reference variant's final mean FD."""
    variants = results["variants"]
    if reference not in variants:
        return
    target = variants[reference]["fd"]
    results["steps_to_reach"] = {"reference": reference, "fd": target}
    for v in variants.values():
        v["steps_to_reference_fd"] = steps_to_reach(v["curve"], target)


def run(cfg: DictConfig, argv: Sequence[str]) -> dict[str, Any]:
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    view = config_view(cfg, build_adapter(cfg))
    adapter = view.adapter
    real_media = RealMedia(adapter)
    standard = standard_metric(cfg, real_media)  # a bad weights file fails here, before any training
    ensure_tokenizer(cfg, adapter)
    classifier, heldout, real = modality_classifier(cfg, view, real_media, 60 if cfg.benchmark.quick else 400)
    results: dict[str, Any] = {
        "modality": cfg.modality.name,
        "git_commit": git_commit(),
        "machine": machine(),
        "config": OmegaConf.to_container(cfg, resolve=True),
        "classifier_heldout_accuracy": heldout,
        "note": "fd, accuracy and inception_score come from our own small classifier trained on the embedded "
        "data; they are not comparable with published FID/FVD/FAD",
        **(SKIPPED if standard is None else {"standard_metric": standard.name, "standard_weights": str(standard.path)}),
        "variants": {},
    }
    seeds = int(cfg.benchmark.get("seeds", 1))
    if seeds < 1:
        raise UsageError(f"benchmark.seeds must be at least 1, got {seeds}")
    probe_tokens = context_probe_tokens(adapter, cfg.seed)
    results["seeds"] = [int(cfg.seed) + k for k in range(seeds)]
    for name in cfg.benchmark.variants:
        per_seed = []
        for seed in results["seeds"]:
            # One seed keeps the single-run layout (out/NAME); several get out/NAME/seedS.
            run_dir = out / name if seeds == 1 else out / name / f"seed{seed}"
            overrides = variant_overrides(cfg, argv, name, run_dir, None if seeds == 1 else seed)
            tqdm.write(f"[{name} seed {seed}] train {' '.join(overrides)}")
            train_variant(overrides)
            variant_cfg = compose_config(overrides)
            per_seed.append(evaluate_variant(variant_cfg, run_dir, view, classifier, real, standard, probe_tokens))
        results["variants"][name] = aggregate_seeds(per_seed)
        (out / "results.json").write_text(json.dumps(results, indent=2))
    add_steps_to_reach(results)
    (out / "results.json").write_text(json.dumps(results, indent=2))
    write_plots(results, out)
    write_summary(results, out / "summary.md")
    tqdm.write(f"wrote {out / 'results.json'}, {out / 'summary.md'} and plots")
    return results


def main(argv: Sequence[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    with cli_errors():
        run(compose_config(argv), argv)


if __name__ == "__main__":  # `python -m ...` answers --help / --cfg job as the console script does
    from djepa.cli import scripts

    scripts.benchmark()
