"""The number format `auto` picks on a CPU: from its flags alone, so a busy machine never changes it."""

import builtins
import io

import pytest
import torch

from djepa.engine import runtime


@pytest.mark.parametrize(
    "flags, training, sampling",
    [
        ("avx512f amx_tile amx_bf16", torch.bfloat16, torch.bfloat16),
        ("avx512f avx512_bf16", torch.float32, torch.bfloat16),
        ("avx2", torch.float32, torch.float32),
    ],
)
def test_auto_reads_the_cpu_flags_and_explicit_choices_win(monkeypatch, flags, training, sampling):
    real_open = builtins.open

    def fake_open(path, *args, **kwargs):
        if str(path) == "/proc/cpuinfo":
            return io.StringIO(f"processor\t: 0\nflags\t\t: fpu sse2 {flags}\n")
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", fake_open)
    runtime.cpu_bf16_is_fast.cache_clear()
    cpu = torch.device("cpu")
    try:
        assert runtime.resolve_precision(cpu, "auto") == training
        assert runtime.resolve_precision(cpu, "auto", training=False) == sampling
        assert runtime.resolve_precision(cpu, "bf16") == torch.bfloat16
        assert runtime.resolve_precision(cpu, "fp32", training=False) == torch.float32
    finally:
        runtime.cpu_bf16_is_fast.cache_clear()
