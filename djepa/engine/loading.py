"""A trained model back from disk: the checkpoint to use (named, or the newest valid one) and its EMA weights."""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from djepa import builders
from djepa.engine.checkpoint import CheckpointManager
from djepa.errors import UsageError
from djepa.nn.heads import FREE_HEAD_KEYS
from djepa.nn.model import DJEPA


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


def sampling_head_config(trained: dict[str, Any], head: Mapping[str, Any] | None) -> dict[str, Any]:
    """The trained head's config with the sample-time settings (FREE_HEAD_KEYS: sampler, steps, ...) that a
    `loss.head` config gives; a `loss.head` of another head class changes nothing. The one place the sample
    command, evaluate and the Pipeline apply them."""
    if head is None:
        return trained
    head = dict(OmegaConf.to_container(head, resolve=True) if OmegaConf.is_config(head) else head)  # type: ignore[arg-type]
    if head.get("_target_") != trained["_target_"]:
        return trained
    # A setting the head takes counts even where the run was trained before its config named it (`sampler`).
    takes = inspect.signature(builders.resolve(trained, "loss.head", builders.HEAD)).parameters
    free = {k: v for k, v in head.items() if k in FREE_HEAD_KEYS and (k in trained or k in takes)}
    return {**trained, **free}


def load_ema_model(
    directory: Path, state: dict[str, Any], device: torch.device, head: DictConfig | None = None
) -> DJEPA:
    """The checkpoint's EMA model; `head` (the `loss.head` config) may change how it samples (sampling_head_config)."""
    model_config = dict(state["model_config"])
    model_config["head_config"] = sampling_head_config(model_config["head_config"], head)
    model = DJEPA(**model_config)
    model.load_state_dict(CheckpointManager.load_tensors(directory, "ema"))
    return model.to(device).eval()
