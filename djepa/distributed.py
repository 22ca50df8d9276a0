"""torchrun support: process group set-up and the few collectives the trainer needs."""

from __future__ import annotations

import os

import torch
import torch.distributed as dist


def init_from_env(device_name: str = "auto") -> torch.device:
    """Join the process group torchrun describes (gloo on CPU, NCCL on GPU); the device to use."""
    cuda = torch.cuda.is_available() and device_name in ("auto", "cuda")
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if cuda else "gloo")
    if cuda:
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        return torch.device("cuda", local)
    return torch.device("cpu") if device_name == "auto" else torch.device(device_name)


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def is_main() -> bool:
    return rank() == 0


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def average_gradients(parameters) -> None:
    """Mean of the gradients over ranks: with equal shards, the gradient of the global batch."""
    if world_size() == 1:
        return
    grads = [p.grad for p in parameters if p.grad is not None]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= world_size()
    offset = 0
    for g in grads:
        g.copy_(flat[offset : offset + g.numel()].view_as(g))
        offset += g.numel()


def mean_over_ranks(values: dict[str, float]) -> dict[str, float]:
    if world_size() == 1 or not values:
        return values
    keys = sorted(values)
    t = torch.tensor([values[k] for k in keys], dtype=torch.float64)
    dist.all_reduce(t)
    return {k: float(v) / world_size() for k, v in zip(keys, t.tolist())}


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
