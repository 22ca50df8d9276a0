"""Generation: the sampling settings (guidance, temperature, steps, schedule) and drawing tokens in batches."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from omegaconf import DictConfig
from tqdm import tqdm

from djepa import schema
from djepa.engine.runtime import autocast, resolve_precision
from djepa.errors import UsageError
from djepa.nn.model import DJEPA


@dataclass(frozen=True)
class SamplingSettings:
    """How tokens are drawn: guidance scale and schedule, temperature, reveal steps, number format; the config's
    `sample.*` keys and the Pipeline's keywords of the same names."""

    guidance_scale: float = 1.0
    temperature: float = 1.0
    num_steps: int = 16
    guidance_schedule: str = "linear"
    # auto: the transformer and denoiser under bf16 autocast where bf16 is fast (CUDA, CPUs with
    # AMX or AVX512-BF16), as MAR samples; the diffusion arithmetic stays fp32 either way. fp32: no autocast.
    precision: str = "auto"

    def __post_init__(self) -> None:
        for name, value in dataclasses.asdict(self).items():
            problem = schema.problem(schema.SampleSettings, name, value)
            if problem:
                raise UsageError(f"sample.{name}={value!r} {problem}")

    @classmethod
    def from_config(cls, cfg: DictConfig) -> SamplingSettings:
        s = cfg.sample
        return cls(
            float(s.guidance_scale), float(s.temperature), int(s.num_steps), str(s.guidance_schedule), s.precision
        )


@torch.no_grad()
def generate(
    model: DJEPA,
    labels: torch.Tensor,
    settings: SamplingSettings,
    batch_size: int = 50,
    known_tokens: torch.Tensor | None = None,
    known_mask: torch.Tensor | None = None,
    progress: bool = True,
    conditional: bool = True,
) -> torch.Tensor:
    """Tokens for each label, in batches; `conditional` False: as many items without a class (the model's
    class-free embedding, no guidance), `labels` only counting them."""
    device = next(model.parameters()).device
    dtype = resolve_precision(device, settings.precision, training=False)
    out = []
    batches = range(0, len(labels), batch_size)
    for i in tqdm(batches, desc="sampling", leave=False, disable=not progress or len(batches) < 2):
        sl = slice(i, i + batch_size)
        with autocast(device, dtype):
            tokens = model.sample(
                labels[sl].to(device) if conditional else None,
                batch=len(labels[sl]),
                num_steps=settings.num_steps,
                guidance=settings.guidance_scale,
                temperature=settings.temperature,
                guidance_schedule=settings.guidance_schedule,
                known_tokens=None if known_tokens is None else known_tokens[sl],
                known_mask=None if known_mask is None else known_mask[sl],
            )
        out.append(tokens.cpu())  # fp32 under autocast too: DJEPA.sample writes into an fp32 tensor
    return torch.cat(out)


def class_grid_labels(num_classes: int, per_class: int) -> torch.Tensor:
    return torch.arange(num_classes).repeat_interleave(per_class)
