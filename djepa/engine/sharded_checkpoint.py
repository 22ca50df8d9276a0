"""Training state saved sharded with torch.distributed.checkpoint (DCP), for FSDP runs at scale.

Each rank writes only its own shards of the model, its EMA copies (the sampling EMA, the JEPA teacher) and
the AdamW state: no rank ever gathers the full optimizer (22.8 GB per rank for djepa_h with the gathered
format). DCP reshards on load, so a run resumes on the same or on a different number of ranks, or in one
process. The EMA weights, the only thing sampling needs, are consolidated once into a plain safetensors file.

Layout of a checkpoint folder:
  dcp/            DCP shards (one or more files per rank) and .metadata ("model", "optimizer", "ema", ...)
  ema.safetensors the whole EMA (consolidate_ema), for sampling on one device
  state.json      step, configs and other small state; written last by rank 0: the checkpoint is complete

The trainer writes these through CheckpointManager (a staging folder renamed into place, every file's
sha256 in state.json); save_sharded/load_sharded are the same steps for one folder on its own.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, cast

import torch
import torch.distributed.checkpoint as dcp
from safetensors.torch import save_file
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_state_dict,
    set_model_state_dict,
    set_state_dict,
)

from djepa.engine import distributed
from djepa.io import sha256

STATE_FILE = "state.json"
SHARDS = "dcp"
EMA_FILE = "ema.safetensors"


def is_sharded(directory: Path) -> bool:
    """Whether a checkpoint folder holds DCP shards (else it is the gathered safetensors format)."""
    return (Path(directory) / SHARDS).is_dir()


def is_complete(directory: Path) -> bool:
    return (Path(directory) / STATE_FILE).is_file() and (Path(directory) / SHARDS / ".metadata").is_file()


def _state(model: nn.Module, optimizer: torch.optim.Optimizer, copies: dict[str, nn.Module]) -> dict[str, Any]:
    model_sd, optim_sd = get_state_dict(model, optimizer)
    return {"model": model_sd, "optimizer": optim_sd, **{name: get_model_state_dict(m) for name, m in copies.items()}}


def write_shards(
    directory: Path, model: nn.Module, optimizer: torch.optim.Optimizer, copies: dict[str, nn.Module]
) -> dict[str, str]:
    """Collective: every rank writes its shards into `directory`/dcp (the folder must exist).

    Returns the sha256 of every file written, by name relative to `directory`, on every rank: each rank
    hashes its own shard files, so no rank reads the whole state back."""
    shards = Path(directory) / SHARDS
    dcp.save(_state(model, optimizer, copies), checkpoint_id=str(shards))
    distributed.barrier()
    # DCP's file writer names each rank's files __<rank>_<n>.distcp; rank 0 also wrote .metadata.
    mine = sorted(shards.glob(f"__{distributed.rank()}_*.distcp"))
    if distributed.is_main():
        mine.append(shards / ".metadata")
    local = {p.relative_to(directory).as_posix(): sha256(p) for p in mine}
    checksums: dict[str, str] = {}
    for part in distributed.all_gather_objects(local):
        checksums |= part
    return checksums


def saved_groups(directory: Path) -> set[str]:
    """The top-level names ("model", "optimizer", "ema", "teacher", ...) a sharded checkpoint holds."""
    metadata = dcp.FileSystemReader(str(Path(directory) / SHARDS)).read_metadata()
    return {key.split(".", 1)[0] for key in metadata.state_dict_metadata}


def read_shards(
    directory: Path, model: nn.Module, optimizer: torch.optim.Optimizer, copies: dict[str, nn.Module]
) -> None:
    """Collective: fill the (sharded or plain) model, optimizer and copies from shards saved on any number of
    ranks. Every name in `copies` must be in the checkpoint (see saved_groups)."""
    # The templates say how this run is laid out; DCP reads into them whatever layout was saved.
    loaded = _state(model, optimizer, copies)
    dcp.load(loaded, checkpoint_id=str(Path(directory) / SHARDS))
    set_state_dict(model, optimizer, model_state_dict=loaded["model"], optim_state_dict=loaded["optimizer"])
    for name, module in copies.items():
        set_model_state_dict(module, loaded[name])


def save_sharded(
    directory: Path, model: nn.Module, ema: nn.Module, optimizer: torch.optim.Optimizer, state: dict[str, Any]
) -> Path:
    """Collective: every rank writes its shards into `directory`/dcp, then rank 0 writes state.json.

    A folder left without state.json by an interrupted save is not a checkpoint (is_complete) and is
    replaced by the next save of the same step."""
    directory = Path(directory)
    if distributed.is_main():
        if directory.exists() and not is_complete(directory):
            shutil.rmtree(directory)
        directory.mkdir(parents=True, exist_ok=True)
    distributed.barrier()
    write_shards(directory, model, optimizer, {"ema": ema})
    if distributed.is_main():
        tmp = directory / f"{STATE_FILE}.tmp"
        tmp.write_text(json.dumps(state, indent=2, default=str))
        tmp.replace(directory / STATE_FILE)
    distributed.barrier()
    return directory


def load_sharded(directory: Path, model: nn.Module, ema: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """Collective: fill the (sharded or plain) model, EMA and optimizer from a checkpoint saved on any
    number of ranks; returns its state.json."""
    directory = Path(directory)
    if not is_complete(directory):
        raise FileNotFoundError(f"{directory} is not a complete sharded checkpoint (no {STATE_FILE} or DCP metadata)")
    read_shards(directory, model, optimizer, {"ema": ema})
    return json.loads((directory / STATE_FILE).read_text())


def full_state(model: nn.Module, optimizer: torch.optim.Optimizer | None = None) -> dict[str, Any]:
    """The whole model (and optimizer) state on every rank: a collective gather, for tests and small models."""
    options = StateDictOptions(full_state_dict=True)
    if optimizer is None:
        return {"model": get_model_state_dict(model, options=options)}
    model_sd, optim_sd = get_state_dict(model, optimizer, options=options)
    return {"model": model_sd, "optimizer": optim_sd}


def consolidate_ema(directory: Path, ema: nn.Module) -> Path:
    """Collective: gather the EMA once and have rank 0 write it whole to `directory`/ema.safetensors."""
    options = StateDictOptions(full_state_dict=True, cpu_offload=True)  # rank 0 alone holds the gathered copy
    weights = get_model_state_dict(ema, options=options)
    path = Path(directory) / EMA_FILE
    if distributed.is_main():
        # A module's state dict holds tensors only (torch types the values as any state value).
        save_file({k: cast(torch.Tensor, v).detach().contiguous().cpu() for k, v in weights.items()}, str(path))
    distributed.barrier()
    return path
