"""Atomic, checksummed checkpoints: tensors in safetensors, state in JSON, never pickle."""

from __future__ import annotations

import json
import os
import shutil
import warnings
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file

from djepa.io import atomic_write_json, atomic_write_safetensors, fsync_dir, sha256


def flatten_optimizer(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Optimizer state as named tensors plus a JSON-able remainder (param groups, scalars)."""
    state = optimizer.state_dict()
    tensors, scalars = {}, {}
    for pid, entries in state["state"].items():
        for key, value in entries.items():
            if torch.is_tensor(value):
                tensors[f"{pid}.{key}"] = value
            else:
                scalars[f"{pid}.{key}"] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for name, value in list(tensors.items()) + list(meta["scalars"].items()):
        pid, key = name.split(".", 1)
        state.setdefault(int(pid), {})[key] = value
    return {"state": state, "param_groups": meta["param_groups"]}


class CheckpointManager:
    """`run_dir/checkpoints/step_XXXXXXX/` directories, the last `keep` kept, each verified on load."""

    def __init__(self, run_dir: str | Path, keep: int = 3):
        self.root = Path(run_dir) / "checkpoints"
        self.keep = keep

    def directories(self) -> list[Path]:
        if not self.root.is_dir():
            return []
        found = [p for p in self.root.iterdir() if p.is_dir() and p.name.startswith("step_")]
        return sorted(found, key=lambda p: int(p.name.split("_")[1]))

    def staging_path(self, step: int) -> Path:
        return self.root / f".staging_{step:07d}"

    def staging(self, step: int) -> Path:
        """A fresh, empty folder to write step `step`'s files into before commit renames it into place.

        Only the writer (rank 0) calls this; a sharded save then has every rank write into it."""
        staging = self.staging_path(step)
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        return staging

    def commit(self, step: int, staging: Path, state: dict[str, Any], checksums: dict[str, str]) -> Path:
        """Write state.json with the files' checksums last, rename `staging` into place, drop old checkpoints."""
        final = self.root / f"step_{step:07d}"
        atomic_write_json(staging / "state.json", {**state, "step": step, "checksums": checksums})
        shutil.rmtree(final, ignore_errors=True)
        os.replace(staging, final)
        fsync_dir(self.root)
        for old in self.directories()[: -self.keep]:
            shutil.rmtree(old, ignore_errors=True)
        return final

    def save(self, step: int, tensors: dict[str, dict[str, torch.Tensor]], state: dict[str, Any]) -> Path:
        """Write each tensor group to `<group>.safetensors` and `state.json` with their checksums last."""
        staging = self.staging(step)
        checksums = {}
        for group, group_tensors in tensors.items():
            path = staging / f"{group}.safetensors"
            atomic_write_safetensors(path, group_tensors)
            checksums[path.name] = sha256(path)
        return self.commit(step, staging, state, checksums)

    @staticmethod
    def verify(directory: Path) -> dict[str, Any]:
        """The checkpoint's state; raises ValueError when a file is missing or its checksum differs."""
        state_path = Path(directory) / "state.json"
        try:
            state = json.loads(state_path.read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise ValueError(f"{state_path}: unreadable ({err})") from err
        checksums = state.get("checksums") if isinstance(state, dict) else None
        # A checkpoint always lists its files' checksums last; without them nothing vouches for the files.
        if not checksums or not isinstance(checksums, dict):
            raise ValueError(f"{state_path}: no checksums, so the checkpoint cannot be verified")
        for name, expected in checksums.items():
            path = Path(directory) / name
            if not path.is_file() or sha256(path) != expected:
                raise ValueError(f"{path}: missing or checksum mismatch")
            if name.endswith(".safetensors"):
                try:  # the header only: a file of another format fails here rather than at load time
                    with safe_open(str(path), framework="pt"):
                        pass
                except Exception as err:  # safetensors raises its own SafetensorError, not an OSError
                    raise ValueError(f"{path}: not a safetensors file ({err})") from err
        return state

    def latest_valid(self) -> tuple[Path, dict[str, Any]] | None:
        """Newest checkpoint that verifies; a corrupt newer one is skipped with a warning."""
        for directory in reversed(self.directories()):
            try:
                return directory, self.verify(directory)
            except ValueError as err:
                warnings.warn(f"skipping corrupt checkpoint: {err}", stacklevel=2)
        return None

    @staticmethod
    def load_tensors(directory: Path, group: str, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
        return load_file(str(Path(directory) / f"{group}.safetensors"), device=str(device))
