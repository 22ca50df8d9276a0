"""Collectives put their tensors where the backend can reduce them (NCCL: CUDA, gloo: CPU); no GPU needed."""

import pytest
import torch
import torch.distributed as dist

from djepa.engine import distributed


@pytest.fixture
def fake_group(monkeypatch):
    """A pretend two-rank group of the given backend; all_reduce records what it is handed."""
    handed: list[torch.Tensor] = []

    def use(backend: str) -> list[torch.Tensor]:
        monkeypatch.setattr(dist, "is_initialized", lambda: True)
        monkeypatch.setattr(dist, "get_backend", lambda group=None: backend)
        monkeypatch.setattr(dist, "get_world_size", lambda group=None: 2)
        monkeypatch.setattr(dist, "get_rank", lambda group=None: 0)
        monkeypatch.setattr(dist, "all_reduce", lambda t, *a, **k: handed.append(t.clone()))
        monkeypatch.setattr(torch.cuda, "current_device", lambda: 3)
        return handed

    return use


def test_backend_device_is_cuda_for_nccl_and_cpu_for_gloo(fake_group):
    fake_group("nccl")
    assert distributed.backend_device() == torch.device("cuda", 3)  # the rank's current GPU
    assert distributed.backend_device("gloo") == torch.device("cpu")
    assert distributed.backend_device("NCCL") == torch.device("cuda", 3)


def test_gloo_reduction_gets_a_cpu_float32_tensor(fake_group):
    handed = fake_group("gloo")
    out = distributed.mean_over_ranks({"loss": 2.0, "jepa": 1.0})
    assert len(handed) == 1
    assert handed[0].device.type == "cpu" and handed[0].dtype == torch.float32
    assert out == {"jepa": 0.5, "loss": 1.0}  # the fake reduce leaves the sum as is: divided by 2 ranks


def test_a_cpu_tensor_never_reaches_nccl(fake_group):
    handed = fake_group("nccl")
    with pytest.raises(distributed.WrongCollectiveDevice, match="cpu tensor .* nccl"):
        distributed.all_reduce(torch.zeros(2))
    assert not handed


@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU-only form of the check")
def test_mean_over_ranks_under_nccl_builds_its_tensor_on_cuda(fake_group):
    # Without a GPU the only way to satisfy NCCL is to fail making the CUDA tensor; the old code
    # handed the (fake) NCCL reduce a CPU float64 tensor instead.
    handed = fake_group("nccl")
    with pytest.raises((RuntimeError, AssertionError)):
        distributed.mean_over_ranks({"loss": 1.0})
    assert not handed


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_mean_over_ranks_under_nccl_hands_a_cuda_float32_tensor(fake_group, monkeypatch):
    handed = fake_group("nccl")
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    distributed.mean_over_ranks({"loss": 1.0})
    assert handed[0].device.type == "cuda" and handed[0].dtype == torch.float32
