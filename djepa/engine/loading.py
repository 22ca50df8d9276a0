"""A trained model back from disk: the checkpoint to use (named, or the newest valid one) and its EMA weights."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from djepa.engine.checkpoint import CheckpointManager
from djepa.errors import UsageError
from djepa.legacy import upgrade_head, upgrade_model_config
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


def load_ema_model(
    directory: Path, state: dict[str, Any], device: torch.device, head: DictConfig | None = None
) -> DJEPA:
    """The checkpoint's EMA model; `head` (the `loss.head` config) may change its sampling steps and sampler."""
    model = DJEPA(**upgrade_model_config(state["model_config"]))
    model.load_state_dict(CheckpointManager.load_tensors(directory, "ema"))
    if head is not None and upgrade_head(head).get("_target_") == model.config["head_config"]["_target_"]:
        if "sampling_steps" in head:
            model.head.set_sampling_steps(int(head.sampling_steps))
        if "sampler" in head:
            model.head.set_sampler(str(head.sampler))
    return model.to(device).eval()
