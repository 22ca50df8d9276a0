"""Device and number-format choices, made once per process."""

from __future__ import annotations

import contextlib
import functools
import time

import torch

from djepa.schema import PRECISIONS


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def cpu_bf16_flags() -> bool:
    """True where the CPU reports native bf16 instructions (AMX-BF16 or AVX512-BF16) in /proc/cpuinfo."""
    try:
        with open("/proc/cpuinfo") as info:
            flags = next((line.split(":", 1)[1].split() for line in info if line.startswith("flags")), [])
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


@functools.cache
def cpu_bf16_is_fast() -> bool:
    """True where bf16 matmul beats fp32 on this CPU.

    CPUs with AVX512-BF16 or AMX run bf16 several times faster than fp32: their flags decide, so the choice (and
    with it same-seed samples) never depends on how busy the machine is. Elsewhere torch may emulate bf16 (~100x
    slower on AVX2-only CPUs), so it is measured.
    """
    if cpu_bf16_flags():
        return True
    a, b = torch.randn(256, 256), torch.randn(256, 256)

    def timed(x: torch.Tensor, y: torch.Tensor) -> float:
        # The first bf16 calls JIT-compile oneDNN/AMX kernels: warm up, then take the best of several
        # timings, so one slow first call or a busy neighbour core does not decide the number format.
        for _ in range(3):
            x @ y
        best = float("inf")
        for _ in range(5):
            start = time.perf_counter()
            x @ y
            best = min(best, time.perf_counter() - start)
        return best

    fp32 = timed(a, b)
    a16, b16 = a.bfloat16(), b.bfloat16()
    return timed(a16, b16) < 0.8 * fp32


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
