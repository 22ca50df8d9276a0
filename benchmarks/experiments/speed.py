"""Where a step goes: `python -m djepa.benchmarks.experiments.speed [shape=64|16|video] [mar_repo=PATH]
[steps=20] [out=DIR] [...]`.

Times, one after another in this process, at the MAR-comparison shape (`shape=64`: `model=small`, 8x8 tokens of
dim 4, batch 64, bf16), the image default (`shape=16`: 4x4 tokens of dim 16, MAR's patch size 2, the default
precision) or the video default (`shape=video`: 8x2x2 tokens of dim 128 and the flow head; MAR's code, which takes
square grids only, at 6x6 tokens of dim 128, its nearest); any train/model/loss override passes through:

- a D-JEPA training step and a MAR-mode one (`loss.jepa_weight=0`) through the real `Trainer.train_step`,
  with the D-JEPA extra split into the teacher's target pass, the EMA updates and the rest (projector,
  JEPA loss and their backward);
- with `mar_repo=PATH` (a local checkout of LTH14/mar, plus `pip install timm`), MAR's own model on the same
  shape: its forward, backward, clip at 3.0, AdamW and its per-tensor EMA loop, dropout 0, same autocast;
- sampling at MAR's settings (the shape's reveal steps, 50 diffusion steps at 64 tokens and 100 at 16, guidance
  3 at 64 tokens and the default 4 at 16, linear, batch 16; sampling precision by `sample.precision`): ours, ours
  with `sampler=dpm_solver` at `dpm_steps` steps, ours at `fast_reveal_steps` reveal steps (a comma list,
  default 8,4) with that sampler (the fast settings; their quality is measured separately), and
  MAR's code. A flow head (the video default) has no DDPM to set: only the `timed=REVEAL:SAMPLER:STEPS` rows are
  timed for it, SAMPLER heun or euler.

Prints the step and sampling ratios of D-JEPA to MAR and writes them to OUT/speed.json. Data are random tokens:
speed does not depend on them. Run it alone on the machine: anything beside it changes every figure.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import json
import math
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from djepa.benchmarks.experiments.run import machine
from djepa.cli.config import cli_errors, compose_config
from djepa.cli.train import train_config
from djepa.engine.data import TokenData
from djepa.engine.model_config import build_model
from djepa.engine.runtime import autocast, resolve_precision
from djepa.engine.trainer import Trainer
from djepa.errors import UsageError
from djepa.nn.heads import DiffusionHead
from djepa.nn.model import DJEPA


@dataclass(frozen=True)
class Sampling:
    """MAR's sampling settings, timed for both codes: reveal steps x diffusion steps, guidance, batch."""

    num_steps: int = 16
    diffusion_steps: int = 50
    guidance: float = 3.0
    batch: int = 16
    temperature: float = 1.0


@dataclass(frozen=True)
class Shape:
    """A timed shape: our config overrides and the latent grid MAR's code is built on (patchified by `patch`)."""

    overrides: tuple[str, ...]
    latent: tuple[int, int]
    channels: int
    patch: int
    sampling: Sampling
    our_grid: tuple[int, ...] | None = None  # ours, where it is not MAR's square grid (video: time x rows x columns)

    @property
    def grid(self) -> tuple[int, ...]:
        return self.our_grid or (self.latent[0] // self.patch, self.latent[1] // self.patch)

    @property
    def token_dim(self) -> int:
        return self.channels * self.patch**2


SHAPES = {
    "64": Shape(
        ("modality=image", "model=small", "modality.adapter.patch_size=[1,1]", "train.precision=bf16"),
        (8, 8), 4, 1, Sampling(),
    ),
    "16": Shape(("modality=image",), (8, 8), 4, 2, Sampling(diffusion_steps=100, guidance=4.0)),
    "video": Shape(
        ("modality=video",), (24, 24), 8, 4, Sampling(num_steps=32, diffusion_steps=100, guidance=4.0), (8, 2, 2)
    ),
}  # fmt: skip
CLASSES = 10
TIMED_SAMPLERS = ("ddpm", "dpm_solver", "heun", "euler")  # the diffusion head's, then the flow head's
OWN_KEYS = ("shape", "mar_repo", "steps", "warmup", "out", "dpm_steps", "fast_reveal_steps", "timed")


def median_ms(fn: Callable[[], Any], repeats: int, warmup: int) -> float:
    times = []
    for i in range(warmup + repeats):
        start = time.perf_counter()
        fn()
        if i >= warmup:
            times.append(1000 * (time.perf_counter() - start))
    return statistics.median(times)


def random_tokens(shape: Shape, items: int, seed: int = 0) -> TokenData:
    gen = torch.Generator().manual_seed(seed)
    tokens = torch.randn(items, math.prod(shape.grid), shape.token_dim, generator=gen)
    return TokenData(tokens, None, torch.randint(0, CLASSES, (items,), generator=gen))


def trainer_for(shape: Shape, overrides: Sequence[str], run_dir: Path) -> Trainer:
    cfg = compose_config([*shape.overrides, "train.grad_probe_every=0", *overrides])
    model = build_model(cfg, shape.token_dim, shape.grid, CLASSES)
    time_axis = 0 if len(shape.grid) == 3 else None  # video grids lead with time (prefix masks need it)
    data = random_tokens(shape, 1024)
    return Trainer(
        model, data, train_config(cfg), run_dir, torch.device("cpu"), token_grid=shape.grid, time_axis=time_axis
    )


def time_training(trainer: Trainer, steps: int, warmup: int) -> float:
    def step() -> None:
        trainer.train_step()
        trainer.step += 1

    return median_ms(step, steps, warmup)


def djepa_breakdown(trainer: Trainer, repeats: int) -> dict[str, float]:
    """The parts of a D-JEPA step that MAR mode does not have, timed alone."""
    tokens, labels, _ = trainer.batch(0)
    teacher = trainer.teacher if trainer.teacher is not None else trainer.ema

    @torch.no_grad()
    def target_pass() -> None:
        with autocast(trainer.device, trainer.dtype):
            teacher(tokens, labels)

    return {
        "teacher_pass_ms": median_ms(target_pass, repeats, 2),
        "ema_updates_ms": median_ms(trainer.update_ema, repeats, 2),
    }


def time_our_sampling(
    model: DJEPA, dtype: torch.dtype, sampler: str, steps: int, repeats: int, settings: Sampling, reveal_steps: int
) -> float:
    model.head.set_sampler(sampler)  # the head's own: run() checks `timed=` names one it has
    model.head.set_sampling_steps(steps)
    labels = torch.arange(settings.batch) % CLASSES

    @torch.no_grad()
    def draw() -> None:
        with autocast(torch.device("cpu"), dtype):
            model.sample(labels, num_steps=reveal_steps, guidance=settings.guidance, temperature=settings.temperature)

    return median_ms(draw, repeats, 1) / settings.batch


def check_mar_repo(repo: Path) -> None:
    if not (repo / "models" / "mar.py").is_file():
        raise UsageError(f"mar_repo={repo}: no models/mar.py there (a checkout of github.com/LTH14/mar)")
    if importlib.util.find_spec("timm") is None:  # MAR's transformer blocks; only its code imports it
        raise UsageError("mar_repo needs timm for MAR's transformer blocks: pip install timm")


@contextlib.contextmanager
def mar_code(repo: Path) -> Iterator[Any]:
    """LTH14/mar's `models.mar` module, its `.cuda()` calls made no-ops so it runs on the CPU."""
    check_mar_repo(repo)
    cuda = torch.Tensor.cuda
    torch.Tensor.cuda = lambda self, *args, **kwargs: self  # type: ignore[method-assign]
    sys.path.insert(0, str(repo))
    try:
        yield importlib.import_module("models.mar")  # MAR's own package, from the checkout, not a dependency
    finally:
        sys.path.remove(str(repo))
        torch.Tensor.cuda = cuda  # type: ignore[method-assign]


def build_mar(mar_module: Any, ours: DJEPA, shape: Shape) -> Any:
    """MAR's own model at our shape and widths (its code is untyped: Any)."""
    c = ours.config
    return mar_module.MAR(
        img_size=shape.latent[0] * 16,
        vae_stride=16,
        patch_size=shape.patch,
        encoder_embed_dim=c["encoder_width"],
        encoder_depth=c["encoder_depth"],
        encoder_num_heads=c["num_heads"],
        decoder_embed_dim=c["predictor_width"],
        decoder_depth=c["predictor_depth"],
        decoder_num_heads=c["num_heads"],
        mlp_ratio=c["mlp_ratio"],
        vae_embed_dim=shape.channels,
        class_num=CLASSES,
        attn_dropout=0.0,
        proj_dropout=0.0,
        buffer_size=c["buffer_size"],
        diffloss_d=c["denoiser_depth"],
        diffloss_w=c["denoiser_width"],
        num_sampling_steps=str(shape.sampling.diffusion_steps),
        diffusion_batch_mul=c["diffusion_batch_mul"],
    )


def time_mar_code(
    repo: Path, ours: DJEPA, shape: Shape, dtypes: tuple[torch.dtype, torch.dtype], batch: int, steps: int, warmup: int
) -> dict[str, Any]:
    """MAR's code: a training step in the training dtype, sampling at its settings in the sampling dtype."""
    dtype, sample_dtype = dtypes
    settings = shape.sampling
    with mar_code(repo) as mar_module:
        torch.manual_seed(0)
        model = build_mar(mar_module, ours, shape)
        ema = [p.detach().clone() for p in model.parameters()]
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95), weight_decay=0.02)
        latents = torch.randn(batch, shape.channels, *shape.latent)
        labels = torch.randint(0, CLASSES, (batch,))
        device = torch.device("cpu")

        def train_step() -> None:  # engine_mar.train_one_epoch's step, less the data loading
            model.train()
            with autocast(device, dtype):
                loss = model(latents, labels)
            loss.item()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 3.0)
            optimizer.step()
            optimizer.zero_grad()
            with torch.no_grad():
                for target, source in zip(ema, model.parameters()):
                    target.mul_(0.9999).add_(source, alpha=1 - 0.9999)

        step_ms = median_ms(train_step, steps, warmup)
        model.eval()
        sample_labels = torch.arange(settings.batch) % CLASSES

        @torch.no_grad()
        def draw() -> None:
            with autocast(device, sample_dtype):
                model.sample_tokens(
                    settings.batch,
                    num_iter=settings.num_steps,
                    cfg=settings.guidance,
                    labels=sample_labels,
                    temperature=settings.temperature,
                )

        sample_ms = median_ms(draw, 2, 1) / settings.batch
        params = sum(p.numel() for p in model.parameters())
    return {"mar_code_step_ms": step_ms, "mar_code_sample_ms_per_item": sample_ms, "mar_code_params": params}


def parse(argv: Sequence[str]) -> tuple[dict[str, str], list[str]]:
    own, passthrough = {}, []
    for arg in argv:
        key = arg.split("=", 1)[0]
        if key in OWN_KEYS and "=" in arg:
            own[key] = arg.split("=", 1)[1]
        else:
            passthrough.append(arg)
    return own, passthrough


def timed_settings(text: str) -> list[tuple[str, str, int, int]]:
    """`timed=REVEAL:SAMPLER:STEPS,...` as (name, sampler, steps, reveal steps) rows."""
    rows = []
    for item in filter(None, text.split(",")):
        parts = item.split(":")
        if len(parts) != 3 or parts[1] not in TIMED_SAMPLERS or not (parts[0] + parts[2]).isdigit():
            raise UsageError(
                f"timed={text}: each item is REVEAL:SAMPLER:STEPS, SAMPLER one of {', '.join(TIMED_SAMPLERS)}"
            )
        rows.append((f"reveal_{parts[0]}_{parts[1]}_{parts[2]}", parts[1], int(parts[2]), int(parts[0])))
    return rows


def run(argv: Sequence[str]) -> dict[str, Any]:
    own, overrides = parse(argv)
    if own.get("shape", "64") not in SHAPES:
        raise UsageError(f"shape={own['shape']}: must be one of {', '.join(SHAPES)}")
    shape = SHAPES[own.get("shape", "64")]
    settings = shape.sampling
    steps, warmup = int(own.get("steps", 20)), int(own.get("warmup", 5))
    dpm_steps = int(own.get("dpm_steps", 20))
    fast_reveal_steps = [int(r) for r in own.get("fast_reveal_steps", "8,4").split(",")]
    extra_timed = timed_settings(own.get("timed", ""))
    if "mar_repo" in own:
        check_mar_repo(Path(own["mar_repo"]))  # before minutes of timing, not after
    torch.manual_seed(0)
    sample_precision = str(compose_config([*shape.overrides, *overrides]).sample.precision)
    sample_dtype = resolve_precision(torch.device("cpu"), sample_precision, training=False)
    results: dict[str, Any] = {
        "machine": machine(),
        "shape": own.get("shape", "64"),
        "overrides": list(overrides),
        "sampling": asdict(settings),
        "sample_precision": str(sample_dtype),
    }
    with tempfile.TemporaryDirectory() as tmp:
        djepa = trainer_for(shape, overrides, Path(tmp) / "djepa")
        dtype = djepa.dtype
        results["precision"] = str(dtype)
        results["djepa_step_ms"] = time_training(djepa, steps, warmup)
        results |= djepa_breakdown(djepa, steps)
        print(f"D-JEPA step {results['djepa_step_ms']:.0f} ms", flush=True)
        mar = trainer_for(shape, [*overrides, "loss.jepa_weight=0"], Path(tmp) / "mar")
        results["mar_mode_step_ms"] = time_training(mar, steps, warmup)
        print(f"MAR-mode step {results['mar_mode_step_ms']:.0f} ms", flush=True)
    extra = results["djepa_step_ms"] - results["mar_mode_step_ms"]
    results["djepa_extra_ms"] = extra
    results["djepa_extra_rest_ms"] = extra - results["teacher_pass_ms"] - results["ema_updates_ms"]
    results["djepa_over_mar_mode"] = results["djepa_step_ms"] / results["mar_mode_step_ms"]
    sampler_model = mar.ema
    # MAR's settings are a diffusion head's; another head (loss=flow) has no DDPM to compare.
    if isinstance(sampler_model.head, DiffusionHead):
        reveal = settings.num_steps
        timed = [
            ("ddpm", "ddpm", settings.diffusion_steps, reveal),
            (f"dpm_solver_{dpm_steps}", "dpm_solver", dpm_steps, reveal),
        ] + [(f"reveal_{r}_dpm_solver_{dpm_steps}", "dpm_solver", dpm_steps, r) for r in fast_reveal_steps]
    else:
        timed = []
    for name, sampler, sampler_steps, reveal_steps in [*timed, *extra_timed]:
        ms = time_our_sampling(sampler_model, sample_dtype, sampler, sampler_steps, 2, settings, reveal_steps)
        results[f"sample_ms_per_item_{name}"] = ms
        print(f"sampling ({reveal_steps} reveal steps, {sampler} {sampler_steps}) {ms:.0f} ms/item", flush=True)
    if "mar_repo" in own:
        dtypes = (dtype, sample_dtype)
        results |= time_mar_code(Path(own["mar_repo"]), mar.model, shape, dtypes, mar.config.batch_size, steps, warmup)
        results["mar_code_over_mar_mode"] = results["mar_code_step_ms"] / results["mar_mode_step_ms"]
        for key in [k for k in results if k.startswith("sample_ms_per_item_")]:
            results[f"mar_code_sampling_over_{key.removeprefix('sample_ms_per_item_')}"] = (
                results["mar_code_sample_ms_per_item"] / results[key]
            )
    if "out" in own:
        out = Path(own["out"])
        out.mkdir(parents=True, exist_ok=True)
        (out / "speed.json").write_text(json.dumps(results, indent=2) + "\n")
    return results


def main(argv: Sequence[str] | None = None) -> None:
    with cli_errors():
        results = run(sys.argv[1:] if argv is None else argv)
        print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in results.items()}, indent=2))


if __name__ == "__main__":
    main()
