"""torchrun support: process group set-up and the few collectives the trainer needs."""

from __future__ import annotations

import inspect
import os
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
from torch.distributed.tensor import DTensor, distribute_tensor
from torch.nn.parallel import DistributedDataParallel

from djepa.errors import UsageError

if TYPE_CHECKING:
    from djepa.nn.model import DJEPA


class WrongCollectiveDevice(RuntimeError):
    """A tensor handed to a collective lives on a device its backend cannot reduce (NCCL: CUDA only)."""


# How long a rank waits in a collective before the run fails: long enough for what rank 0 does alone while the
# others wait (training a default tokenizer, checksumming checkpoints on resume, previews), unlike NCCL's 10 minutes.
DEFAULT_TIMEOUT_MINUTES = 60.0


def init_from_env(device_name: str = "auto", timeout_minutes: float = DEFAULT_TIMEOUT_MINUTES) -> torch.device:
    """Join the process group torchrun describes (gloo on CPU, NCCL on GPU); the device to use.

    `cuda` (and `auto` where CUDA is available) takes the LOCAL_RANK-th GPU; `cuda:N` takes GPU N, which
    several processes on one machine cannot share. `timeout_minutes` bounds every collective's wait.
    """
    cuda = device_name.startswith("cuda") or (device_name == "auto" and torch.cuda.is_available())
    if cuda:
        if not torch.cuda.is_available():
            raise UsageError(f"device={device_name}: no CUDA device is available (use device=auto or cpu)")
        index = torch.device(device_name).index if device_name.startswith("cuda:") else None
        local_procs = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
        if index is not None and local_procs > 1:
            raise UsageError(
                f"device={device_name}: torchrun runs {local_procs} processes on this machine, which cannot all "
                "use one GPU; use device=cuda (each process takes the GPU of its LOCAL_RANK)"
            )
        local = index if index is not None else int(os.environ.get("LOCAL_RANK", "0"))
        # Set the rank's GPU before the group forms, so NCCL's communicator is bound to it from the start.
        torch.cuda.set_device(local)
        device = torch.device("cuda", local)
    else:
        device = torch.device("cpu") if device_name == "auto" else torch.device(device_name)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        timeout = timedelta(minutes=timeout_minutes)
        if cuda:
            # device_id tells NCCL the rank's GPU up front (eager init, no guessing in barrier).
            dist.init_process_group(backend="nccl", device_id=device, timeout=timeout)
        else:
            dist.init_process_group(backend="gloo", timeout=timeout)
    return device


def backend_device(backend: str | None = None) -> torch.device:
    """Where a collective's tensors must live for `backend` (the group's when None): NCCL reduces CUDA
    tensors of the rank's current GPU only; gloo (and a single process) reduces CPU tensors."""
    backend = backend if backend is not None else (str(dist.get_backend()) if dist.is_initialized() else "gloo")
    if backend.lower() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def check_collective_tensor(tensor: torch.Tensor) -> None:
    """Raise WrongCollectiveDevice when `tensor` cannot go through the group's backend as it is."""
    want = backend_device()
    if tensor.device.type != want.type:
        backend = dist.get_backend() if dist.is_initialized() else "none"
        raise WrongCollectiveDevice(
            f"a {tensor.device.type} tensor was handed to a {backend} collective, which needs {want.type} tensors"
        )


def all_reduce(tensor: torch.Tensor) -> torch.Tensor:
    """Sum `tensor` over ranks in place, after checking its device suits the backend; returns it."""
    check_collective_tensor(tensor)
    dist.all_reduce(tensor)
    return tensor


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def is_main() -> bool:
    return rank() == 0


def barrier() -> None:
    if dist.is_initialized():
        if str(dist.get_backend()).lower() == "nccl":
            # NCCL's barrier is an all-reduce on a GPU: name the rank's own, not a guessed one.
            dist.barrier(device_ids=[torch.cuda.current_device()])
        else:
            dist.barrier()


def all_gather_objects(value: Any) -> list[Any]:
    """Every rank's `value` (small, picklable), in rank order, on every rank; [value] alone."""
    if not dist.is_initialized():
        return [value]
    # Pickled through tensors on the backend's device; NCCL's is the rank's GPU, set by init_from_env.
    gathered: list[Any] = [None] * world_size()
    dist.all_gather_object(gathered, value)
    return gathered


def wrap_for_training(model: DJEPA, parallel: str, dtype: torch.dtype = torch.float32) -> nn.Module:
    """The module the training step calls: DDP or FSDP2 under torchrun, the model itself alone.

    FSDP shards every transformer and denoiser block, then the rest at the root, in place: `model`
    then holds DTensor parameters, so build its optimizer afterwards. `dtype` is the step's autocast format.
    """
    if world_size() == 1 or parallel == "none":
        return model
    if parallel == "ddp":
        device = next(model.parameters()).device
        # Without label drop the fake class takes no part in the loss: DDP must then look for unused parameters,
        # or its reducer waits for that gradient and the next step fails.
        return DistributedDataParallel(
            model,
            device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=model.label_drop == 0,
            **no_buffer_sync(),
        )
    if parallel == "fsdp":
        shard_model(model, dtype)
        return model
    raise ValueError(f"train.parallel must be ddp, fsdp or none, got {parallel!r}")


def block_precision(dtype: torch.dtype, device_type: str) -> MixedPrecisionPolicy:
    """FSDP2's policy for the blocks under `dtype` autocast on `device_type`: on CUDA, weights all-gathered in
    that format (autocast casts them to it anyway; its LayerNorm runs in fp32), gradients reduced in fp32, inputs
    left as given so the residual stream stays fp32. On the CPU fp32 throughout: CPU autocast runs a LayerNorm
    in its input's format and refuses a bf16 weight on the fp32 residual stream."""
    if dtype == torch.float32 or device_type != "cuda":
        return MixedPrecisionPolicy()
    return MixedPrecisionPolicy(param_dtype=dtype, reduce_dtype=torch.float32, cast_forward_inputs=False)


def no_buffer_sync() -> dict[str, Any]:
    """DDP's switch against broadcasting buffers every step: the model's are constants (diffusion schedules,
    positional tables). `forward_sync_buffers` where this torch has it, else the older `broadcast_buffers`."""
    if "forward_sync_buffers" in inspect.signature(DistributedDataParallel.__init__).parameters:
        return {"forward_sync_buffers": False}
    return {"broadcast_buffers": False}


def shard_model(model: DJEPA, dtype: torch.dtype = torch.float32) -> None:
    """FSDP2: each repeated block (in `dtype` on CUDA, block_precision), then the root (a DJEPA model) in fp32:
    its embeddings, positional tables and norms are small and add into the fp32 residual stream."""
    device_type = next(model.parameters()).device.type
    mesh = init_device_mesh(device_type, (world_size(),))
    for block in model.repeated_blocks():
        fully_shard(block, mesh=mesh, mp_policy=block_precision(dtype, device_type))
    fully_shard(model, mesh=mesh)


def full_tensor(tensor: torch.Tensor) -> torch.Tensor:
    """A sharded (DTensor) value gathered whole; a collective under FSDP, so every rank must call it."""
    return tensor.full_tensor() if isinstance(tensor, DTensor) else tensor


def full_tensors(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: full_tensor(v) for k, v in tensors.items()}


def shard_like(full: torch.Tensor, template: torch.Tensor) -> torch.Tensor:
    """`full` laid out like `template`: scattered over the mesh when the template is a sharded DTensor."""
    if isinstance(template, DTensor) and tuple(full.shape) == tuple(template.shape):
        return distribute_tensor(full.to(template.device), template.device_mesh, template.placements)
    return full


def mean_over_ranks(values: dict[str, float]) -> dict[str, float]:
    if world_size() == 1 or not values:
        return values
    keys = sorted(values)
    # float32 on the backend's device: NCCL takes no CPU tensors (a CPU tensor would fail at step 1).
    t = torch.tensor([values[k] for k in keys], dtype=torch.float32, device=backend_device())
    all_reduce(t)
    return {k: float(v) / world_size() for k, v in zip(keys, t.cpu().tolist())}


def shutdown() -> None:
    if dist.is_initialized():
        # Every rank reaches the end before any tears the group down: a rank destroying the group while
        # another still has collective work in flight was seen to abort ("terminate called ...") under load.
        barrier()
        dist.destroy_process_group()
