"""Atomic, checksummed checkpoints: tensors in safetensors, state in JSON, never pickle."""

from __future__ import annotations

import json
import os
import re
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


STEP_DIR = re.compile(r"step_(\d+)")


class CheckpointManager:
    """`run_dir/checkpoints/step_XXXXXXX/` directories, each verified on load; rotation keeps the newest `keep`
    valid ones (a corrupt one is never counted as kept, and the newest valid one is never deleted)."""

    def __init__(self, run_dir: str | Path, keep: int = 3):
        self.root = Path(run_dir) / "checkpoints"
        self.keep = keep
        self._valid: dict[str, bool] = {}  # verification results by directory name, one hashing per process

    def directories(self) -> list[Path]:
        """The `step_N` directories, oldest first (not the ones set aside as `.invalid`)."""
        if not self.root.is_dir():
            return []
        found = [p for p in self.root.iterdir() if p.is_dir() and STEP_DIR.fullmatch(p.name)]
        return sorted(found, key=lambda p: int(p.name.split("_")[1]))

    def is_valid(self, directory: Path) -> bool:
        if directory.name not in self._valid:
            try:
                self.verify(directory)
                self._valid[directory.name] = True
            except ValueError:
                self._valid[directory.name] = False
        return self._valid[directory.name]

    def rotate(self) -> list[Path]:
        """Delete the checkpoints older than the newest `keep` valid ones; a corrupt one among those is left for
        a later rotation (it counts for nothing). Returns what was deleted."""
        kept, deleted = 0, []
        for directory in reversed(self.directories()):
            if kept < max(1, self.keep):
                kept += self.is_valid(directory)
                continue
            shutil.rmtree(directory, ignore_errors=True)
            self._valid.pop(directory.name, None)
            deleted.append(directory)
        return deleted

    def set_aside_invalid(self, after_step: int) -> list[Path]:
        """Rename every corrupt checkpoint newer than `after_step` (the step a run resumes from) to
        `step_N.invalid`, so it is never taken for the latest one nor counted as kept; the new paths.
        Only the run's writer calls this (under the run lock)."""
        moved = []
        for directory in self.directories():
            if int(directory.name.split("_")[1]) <= after_step or self.is_valid(directory):
                continue
            target = directory.with_name(f"{directory.name}.invalid")
            suffix = 1
            while target.exists():
                suffix += 1
                target = directory.with_name(f"{directory.name}.invalid{suffix}")
            os.replace(directory, target)
            self._valid.pop(directory.name, None)
            moved.append(target)
        return moved

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
        self._valid[final.name] = True  # its checksums were just computed from the files written
        self.rotate()
        return final

    def save(self, step: int, tensors: dict[str, dict[str, torch.Tensor]], state: dict[str, Any]) -> Path:
        """Write each tensor group to `<group>.safetensors` and `state.json` with their checksums last."""
        staging = self.staging(step)
        checksums = {}
        try:
            for group, group_tensors in tensors.items():
                path = staging / f"{group}.safetensors"
                atomic_write_safetensors(path, group_tensors)
                checksums[path.name] = sha256(path)
            return self.commit(step, staging, state, checksums)
        except BaseException:  # a full disk, an interrupt: the half-written folder only takes space
            shutil.rmtree(staging, ignore_errors=True)
            raise

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
