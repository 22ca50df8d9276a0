"""Device and number-format choices, made once per process."""

from __future__ import annotations

import contextlib
import functools

import torch

from djepa.schema import PRECISIONS


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def cpu_flags() -> set[str]:
    """The CPU's feature flags from /proc/cpuinfo (empty where there is none)."""
    try:
        with open("/proc/cpuinfo") as info:
            return set(next((line.split(":", 1)[1].split() for line in info if line.startswith("flags")), []))
    except OSError:
        return set()


@functools.cache
def cpu_bf16_is_fast() -> bool:
    """True on CPUs with AMX (`amx_bf16`), where bf16 matmul runs several times faster than fp32.

    Elsewhere fp32: with AVX512-BF16 alone bf16 is not clearly faster at djepa's CPU sizes (a timing at 256 x 256
    fell either side of the line with the machine's load), and without either torch emulates it, ~100x slower.
    Read from the flags, never timed, so the choice, and with it same-seed samples, never depends on the load.
    """
    return "amx_bf16" in cpu_flags()


def resolve_precision(device: torch.device, requested: str = "auto") -> torch.dtype:
    """bf16 on CUDA and on CPUs that do it fast, fp32 elsewhere. Never fp16 (loss spikes to NaN)."""
    if requested not in PRECISIONS:
        raise ValueError(f"train.precision must be one of {', '.join(PRECISIONS)}, got {requested!r}")
    if requested == "fp32":
        return torch.float32
    if requested == "bf16":
        return torch.bfloat16
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32
    return torch.bfloat16 if cpu_bf16_is_fast() else torch.float32


def autocast(device: torch.device, dtype: torch.dtype) -> contextlib.AbstractContextManager:
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)
