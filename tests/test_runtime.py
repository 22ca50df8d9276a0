"""The number format `auto` picks: from the CPU's flags where it has native bf16, so load never decides it."""

import builtins
import io

import torch

from djepa.engine import runtime


def _cpuinfo(monkeypatch, flags: str) -> None:
    real_open = builtins.open

    def fake_open(path, *args, **kwargs):
        if str(path) == "/proc/cpuinfo":
            return io.StringIO(f"processor\t: 0\nflags\t\t: fpu sse2 {flags}\n")
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", fake_open)


def test_native_bf16_flags_choose_bf16_without_timing(monkeypatch):
    runtime.cpu_bf16_is_fast.cache_clear()
    _cpuinfo(monkeypatch, "avx512f avx512_bf16")
    monkeypatch.setattr(runtime.time, "perf_counter", lambda: (_ for _ in ()).throw(AssertionError("timed")))
    try:
        assert runtime.resolve_precision(torch.device("cpu"), "auto") == torch.bfloat16
    finally:
        runtime.cpu_bf16_is_fast.cache_clear()


def test_without_the_flags_auto_measures_and_explicit_choices_win(monkeypatch):
    runtime.cpu_bf16_is_fast.cache_clear()
    _cpuinfo(monkeypatch, "avx2")
    assert not runtime.cpu_bf16_flags()
    clock = iter(range(10_000))
    # fp32 matmuls take 1 tick, bf16 ones 10: emulated bf16 loses
    monkeypatch.setattr(runtime.time, "perf_counter", lambda: next(clock) * (10 if timing_bf16[0] else 1))
    timing_bf16 = [False]
    real_bfloat16 = torch.Tensor.bfloat16

    def to_bf16(self):
        timing_bf16[0] = True
        return real_bfloat16(self)

    monkeypatch.setattr(torch.Tensor, "bfloat16", to_bf16)
    try:
        assert runtime.resolve_precision(torch.device("cpu"), "auto") == torch.float32
        assert runtime.resolve_precision(torch.device("cpu"), "bf16") == torch.bfloat16
    finally:
        runtime.cpu_bf16_is_fast.cache_clear()
