"""Wiring from a composed config: adapters by `hydra.utils.instantiate`, the model, generation.

The core never imports a modality: adapters arrive as objects named by `_target_` in the config.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from djepa.engine.checkpoint import CheckpointManager
from djepa.errors import UsageError
from djepa.nn.model import CFG_SCHEDULES, DJEPA


def build_adapter(cfg: DictConfig) -> Any:
    from hydra.utils import instantiate

    return instantiate(cfg.modality.adapter, _convert_="all")


def model_kwargs(cfg: DictConfig) -> dict[str, Any]:
    kwargs = OmegaConf.to_container(cfg.model, resolve=True)
    kwargs["jepa"] = bool(kwargs.get("jepa", True)) and float(cfg.loss.jepa_weight) > 0
    kwargs["head"] = OmegaConf.to_container(cfg.loss.head, resolve=True)
    return kwargs


POSITIVE_MODEL_KEYS = (
    "encoder_depth",
    "encoder_width",
    "predictor_depth",
    "predictor_width",
    "heads",
    "buffer_size",
    "denoiser_depth",
    "denoiser_width",
    "diffusion_batch_mul",
    "mlp_ratio",
)


def validate_model_config(kwargs: dict[str, Any]) -> None:
    """Reject wrong types and non-positive sizes up front, naming the key."""
    for key in POSITIVE_MODEL_KEYS:
        value = kwargs.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
            raise UsageError(f"model.{key} must be a positive number, got {value!r}")
    for key in ("label_drop", "attn_drop", "proj_drop"):
        value = kwargs.get(key, 0.0)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
            raise UsageError(f"model.{key} must be in [0, 1), got {value!r}")


def build_model(cfg: DictConfig, token_dim: int, grid: tuple[int, ...], num_classes: int) -> DJEPA:
    kwargs = model_kwargs(cfg)
    validate_model_config(kwargs)
    try:
        return DJEPA(token_dim=token_dim, grid=grid, num_classes=num_classes, **kwargs)
    except TypeError as err:
        raise UsageError(f"bad model/loss config: {err}") from err


def find_checkpoint(run_dir: str | Path, checkpoint: str | None) -> tuple[Path, dict[str, Any]]:
    """The checkpoint to sample from: `checkpoint` if given, else the newest valid one in run_dir."""
    if checkpoint:
        path = Path(checkpoint)
        if not path.is_dir():
            raise UsageError(f"checkpoint {path} does not exist")
        try:
            return path, CheckpointManager.verify(path)
        except ValueError as err:
            raise UsageError(f"checkpoint {path} is corrupt: {err}") from err
    if not Path(run_dir).is_dir():
        raise UsageError(f"run_dir {run_dir} does not exist: train first (`train run_dir={run_dir}`)")
    found = CheckpointManager(run_dir).latest_valid()
    if found is None:
        raise UsageError(f"run_dir {run_dir} holds no valid checkpoint under checkpoints/")
    return found


def load_ema_model(
    directory: Path, state: dict[str, Any], device: torch.device, head: DictConfig | None = None
) -> DJEPA:
    """The checkpoint's EMA model; `head` (the `loss.head` config) may change its sampling steps."""
    model = DJEPA(**state["model_config"])
    model.load_state_dict(CheckpointManager.load_tensors(directory, "ema"))
    if head is not None and head.get("type") == model.config["head"].get("type") and "sampling_steps" in head:
        model.head.set_sampling_steps(int(head.sampling_steps))
    return model.to(device).eval()


@dataclass(frozen=True)
class SamplingSettings:
    """How tokens are drawn: guidance scale and schedule, temperature, reveal steps (CLI keys of the same names)."""

    cfg: float = 1.0
    temperature: float = 1.0
    num_steps: int = 16
    cfg_schedule: str = "linear"

    @classmethod
    def from_config(cls, cfg: DictConfig) -> SamplingSettings:
        settings = cls(float(cfg.cfg), float(cfg.temperature), int(cfg.num_steps), str(cfg.cfg_schedule))
        if settings.cfg_schedule not in CFG_SCHEDULES:
            raise UsageError(f"cfg_schedule must be linear or constant, got {settings.cfg_schedule!r}")
        if settings.num_steps < 1:
            raise UsageError(f"num_steps must be positive, got {settings.num_steps}")
        return settings


@torch.no_grad()
def generate(
    model: DJEPA,
    labels: torch.Tensor,
    settings: SamplingSettings,
    batch_size: int = 50,
    known_tokens: torch.Tensor | None = None,
    known_mask: torch.Tensor | None = None,
    progress: bool = True,
) -> torch.Tensor:
    """Tokens for each label, in batches."""
    device = next(model.parameters()).device
    out = []
    batches = range(0, len(labels), batch_size)
    for i in tqdm(batches, desc="sampling", leave=False, disable=not progress or len(batches) < 2):
        sl = slice(i, i + batch_size)
        out.append(
            model.sample(
                labels[sl].to(device),
                num_steps=settings.num_steps,
                cfg=settings.cfg,
                temperature=settings.temperature,
                cfg_schedule=settings.cfg_schedule,
                known_tokens=None if known_tokens is None else known_tokens[sl],
                known_mask=None if known_mask is None else known_mask[sl],
            ).cpu()
        )
    return torch.cat(out)


def class_grid_labels(num_classes: int, per_class: int) -> torch.Tensor:
    return torch.arange(num_classes).repeat_interleave(per_class)


def ensure_tokenizer(cfg: DictConfig, adapter: Any) -> None:
    """Train the small default tokenizer on first use, so `train modality=M` works on a fresh machine.

    Only at the default location (`home/tokenizers/<modality>`): a missing path the user named stays an error.
    """
    path = Path(cfg.modality.adapter.tokenizer.path)
    if path.exists() or path.resolve() != (Path(cfg.home) / "tokenizers" / cfg.modality.name).resolve():
        return
    tqdm.write(f"no tokenizer at {path}: training the default one first (`{adapter.train_tokenizer_command}`)")
    metrics = adapter.train_tokenizer(OmegaConf.to_container(cfg.tokenizer, resolve=True))
    summary = ", ".join(f"{k} {v:.4g}" for k, v in metrics.items() if isinstance(v, float))
    tqdm.write(f"tokenizer saved to {path}: {summary}")
