"""Training state saved sharded with torch.distributed.checkpoint (DCP), for FSDP runs at scale.

Each rank writes only its own shards of the model, EMA and AdamW state: no rank ever gathers the full
optimizer (22.8 GB per rank for djepa_h with the gathered format). DCP reshards on load, so a run
resumes on the same or on a different number of ranks, or in one process. The EMA weights, the
only thing sampling needs, are consolidated once into a plain safetensors file.

Layout of a checkpoint folder:
  dcp/            DCP shards and .metadata ("model", "ema", "optimizer")
  state.json      step, configs and other small state; written last by rank 0: the checkpoint is complete
  ema.safetensors the whole EMA (consolidate_ema), for sampling on one device
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

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

STATE_FILE = "state.json"


def is_complete(directory: Path) -> bool:
    return (Path(directory) / STATE_FILE).is_file() and (Path(directory) / "dcp" / ".metadata").is_file()


def _state(model: nn.Module, ema: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    model_sd, optim_sd = get_state_dict(model, optimizer)
    return {"model": model_sd, "ema": get_model_state_dict(ema), "optimizer": optim_sd}


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
    dcp.save(_state(model, ema, optimizer), checkpoint_id=str(directory / "dcp"))
    distributed.barrier()
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
    # The templates say how this run is laid out; DCP reads into them whatever layout was saved.
    loaded = _state(model, ema, optimizer)
    dcp.load(loaded, checkpoint_id=str(directory / "dcp"))
    set_state_dict(model, optimizer, model_state_dict=loaded["model"], optim_state_dict=loaded["optimizer"])
    set_model_state_dict(ema, loaded["ema"])
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
    path = Path(directory) / "ema.safetensors"
    if distributed.is_main():
        save_file({k: v.detach().contiguous().cpu() for k, v in weights.items()}, str(path))
    distributed.barrier()
    return path
