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
def cpu_bf16_is_fast(training: bool = True) -> bool:
    """Whether `auto` means bf16 on this CPU, from its flags alone (never timed, so a busy machine cannot change it,
    nor same-seed samples with it).

    Training: only with AMX (`amx_bf16`), where bf16 runs several times faster; with AVX512-BF16 alone it is not
    clearly faster at the CPU sizes and trained the image default worse (Results: ablations). Sampling: with AMX or
    AVX512-BF16 (2.4x faster per item at equal quality at 64 tokens, Results: speed). Without either, torch emulates
    bf16, ~100x slower.
    """
    flags = cpu_flags()
    return "amx_bf16" in flags or (not training and "avx512_bf16" in flags)


def resolve_precision(device: torch.device, requested: str = "auto", training: bool = True) -> torch.dtype:
    """bf16 on CUDA and on CPUs that do it fast (for `training` or for sampling), fp32 elsewhere. Never fp16 (loss
    spikes to NaN)."""
    if requested not in PRECISIONS:
        raise ValueError(f"train.precision must be one of {', '.join(PRECISIONS)}, got {requested!r}")
    if requested == "fp32":
        return torch.float32
    if requested == "bf16":
        return torch.bfloat16
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32
    return torch.bfloat16 if cpu_bf16_is_fast(training) else torch.float32


def autocast(device: torch.device, dtype: torch.dtype) -> contextlib.AbstractContextManager:
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)
