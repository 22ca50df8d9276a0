"""Correct at scale: per-rank randomness, fp32 guidance, MAR's last-step guidance, DDP without label drop, the
process-group backend for cuda:N, and gradient accumulation (the update of a K-times larger batch)."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from conftest import free_port
from test_trainer import assert_bit_identical, config, token_data

from djepa.engine import distributed
from djepa.engine.trainer import Trainer, rank_seed, step_seed
from djepa.errors import UsageError
from djepa.nn.heads import DiffusionHead

WORKER = Path(__file__).with_name("scale_worker.py")


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory) -> list[dict]:
    """scale_worker.py's scenarios on 2 gloo ranks, launched once for the module."""
    out = tmp_path_factory.mktemp("scale") / "r.json"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={free_port()}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([*cmd, str(WORKER), str(out)], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return [json.loads(Path(f"{out}.rank{r}").read_text()) for r in range(2)]


# ---------------------------------------------------------------------------- randomness per rank


def test_rank_zero_keeps_the_one_process_seed_and_other_ranks_differ():
    seeds = {rank_seed(0, step, rank) for step in range(50) for rank in range(8)}
    assert len(seeds) == 400  # no two (step, rank) pairs share a seed
    assert all(rank_seed(3, step, 0) == step_seed(3, step) for step in range(10))


@pytest.mark.slow
def test_ranks_draw_their_own_noise_and_repeat_it_across_a_resume(two_ranks):
    rank0, rank1 = (r["draws"] for r in two_ranks)
    assert len(rank0["straight"]) == 3 and len(rank0["resumed"]) == 1
    assert all(a != b for a, b in zip(rank0["straight"], rank1["straight"]))  # each step, the ranks differ
    for draws in (rank0, rank1):
        assert draws["resumed"] == draws["straight"][2:]  # step 2 after a resume draws what it drew straight


# ---------------------------------------------------------------------------- guidance


def test_guidance_is_mixed_in_fp32_under_bf16_autocast():
    torch.manual_seed(0)
    head = DiffusionHead(4, 8, 32, 1)
    with torch.no_grad():  # zero-initialised output layers would make both conditions agree
        for p in head.parameters():
            p.add_(0.3 * torch.randn_like(p))
    x, t, cond, uncond = torch.randn(16, 4), torch.full((16,), 900.0), torch.randn(16, 8), torch.randn(16, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = head._guided(x, t, cond, uncond, 4.0)
        out = head.net(torch.cat([x, x]), torch.cat([t, t]), torch.cat([cond, uncond]))
    assert out.dtype == torch.bfloat16  # the network itself runs in bf16
    c, u = out.float().chunk(2)
    assert mixed.dtype == torch.float32
    assert torch.equal(mixed[:, :4], u[:, :4] + 4.0 * (c[:, :4] - u[:, :4]))
    assert torch.equal(mixed[:, 4:], c[:, 4:])


def guidance_per_step(model, num_steps, guidance=3.0):
    seen = []
    sample = model.head.sample

    def spy(cond, uncond, temperature, step_guidance):
        seen.append(step_guidance)
        return sample(cond, uncond, temperature, step_guidance)

    model.head.sample = spy
    model.sample(torch.tensor([0, 1]), num_steps=num_steps, guidance=guidance)
    return seen


@pytest.mark.parametrize("num_steps", [4, 16])
def test_linear_guidance_follows_mars_sample_tokens_to_the_last_step(make_tiny_model, num_steps):
    model = make_tiny_model((4, 4), head={"_target_": "djepa.nn.heads.FlowHead", "sampling_steps": 1}).eval()
    n, g = 16, 3.0
    expected, remaining = [], n
    for step in range(num_steps):  # LTH14/mar models/mar.py sample_tokens, its mask_len clamped to at least 1
        mask_len = max(1, min(remaining - 1, math.floor(n * math.cos(math.pi / 2 * (step + 1) / num_steps))))
        expected.append(1 + (g - 1) * (n - mask_len) / n)
        remaining = 0 if step == num_steps - 1 or remaining == 1 else mask_len
        if remaining == 0:
            break
    seen = guidance_per_step(model, num_steps, g)
    assert seen == pytest.approx(expected)
    assert seen[-1] == pytest.approx(1 + (g - 1) * (n - 1) / n)  # never the full scale


# ---------------------------------------------------------------------------- DDP and the backend


@pytest.mark.slow
@pytest.mark.parametrize("parallel", ["ddp", "fsdp"])
def test_two_ranks_train_without_label_drop(two_ranks, parallel):
    for rank in two_ranks:  # the fake class then gets no gradient
        assert rank.get(f"no_label_drop_{parallel}") == 3, rank.get(f"no_label_drop_{parallel}_error")


@pytest.fixture
def torchrun_env(monkeypatch):
    """A pretend torchrun rank 1 of 2 on a CUDA machine: records the GPU set and the group's backend."""
    seen: dict = {}
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "set_device", lambda index: seen.setdefault("gpu", index))
    monkeypatch.setattr(dist, "is_initialized", lambda: False)
    monkeypatch.setattr(dist, "init_process_group", lambda backend, **kw: seen.setdefault("backend", backend))
    return seen


@pytest.mark.parametrize("name", ["auto", "cuda"])
def test_cuda_ranks_join_with_nccl_on_their_local_gpu(torchrun_env, name):
    assert distributed.init_from_env(name) == torch.device("cuda", 1)
    assert torchrun_env == {"gpu": 1, "backend": "nccl"}


def test_cuda_n_joins_with_nccl(torchrun_env, monkeypatch):
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "1")  # one process per machine: GPU N is its own
    assert distributed.init_from_env("cuda:3") == torch.device("cuda", 3)
    assert torchrun_env == {"gpu": 3, "backend": "nccl"}


def test_cuda_n_shared_by_local_processes_is_refused(torchrun_env):
    with pytest.raises(UsageError, match="device=cuda:0: torchrun runs 2 processes on this machine"):
        distributed.init_from_env("cuda:0")
    assert torchrun_env == {}


def test_cpu_ranks_join_with_gloo(torchrun_env):
    assert distributed.init_from_env("cpu") == torch.device("cpu")
    assert torchrun_env == {"backend": "gloo"}


# ---------------------------------------------------------------------------- gradient accumulation


def train(make_tiny_model, run_dir, **overrides) -> Trainer:
    torch.manual_seed(0)
    trainer = Trainer(make_tiny_model((4, 4)), token_data(), config(**overrides), run_dir, torch.device("cpu"))
    trainer.fit()
    return trainer


def assert_close_params(a: Trainer, b: Trainer) -> None:
    for kind in ("model", "ema", "teacher"):
        sa, sb = getattr(a, kind).state_dict(), getattr(b, kind).state_dict()
        for name in sa:
            x, y = sa[name], sb[name]
            if name.endswith("attn.qkv.bias"):
                # The key bias has no true gradient (softmax ignores a shift shared by a query's scores): its
                # gradient is rounding noise, which AdamW's normalisation turns into steps of up to lr. Left out.
                x, y = (torch.cat([t.chunk(3)[0], t.chunk(3)[2]]) for t in (x, y))
            # AdamW divides each gradient by its own running size, so the summation order's rounding in small
            # gradients reaches the weights as up to ~1e-3 of a step (lr 1e-3): fp32 agreement is atol 1e-5 here.
            torch.testing.assert_close(x, y, rtol=1e-4, atol=1e-5, msg=f"{kind} {name}")


@pytest.mark.parametrize("head", ["diffusion", "flow"])
def test_four_micro_batches_make_the_update_of_one_four_times_larger(make_tiny_model, tmp_path, head):
    def make(grid):  # label drop and the JEPA term on: every random draw the loss makes is exercised
        return make_tiny_model(
            grid, head={"_target_": f"djepa.nn.heads.{head.title()}Head", "sampling_steps": 2}, label_drop=0.5
        )

    large = train(make, tmp_path / "a", steps=4, batch_size=16, warmup_steps=2, checkpoint_every=100)
    accumulated = train(
        make, tmp_path / "b", steps=4, batch_size=4, grad_accum_steps=4, warmup_steps=2, checkpoint_every=100
    )
    assert_close_params(large, accumulated)
    torch.manual_seed(0)
    initial = make((4, 4))
    assert any(not torch.equal(p, q) for p, q in zip(large.model.parameters(), initial.parameters()))  # it trained
    # the same rows and loss: the logs agree too
    logs = [json.loads((tmp_path / d / "metrics.jsonl").read_text().splitlines()[-1]) for d in "ab"]
    assert logs[0]["loss"] == pytest.approx(logs[1]["loss"], rel=1e-5)


def test_accumulated_run_resumes_exactly(make_tiny_model, tmp_path):
    # steps=3 then 6: the lr and the teacher's ramp must not depend on train.steps
    settings = dict(batch_size=4, grad_accum_steps=2, steps=6, checkpoint_every=3, lr_schedule="constant")
    settings |= dict(teacher_ramp_steps=6)
    straight = train(make_tiny_model, tmp_path / "a", **settings)
    train(make_tiny_model, tmp_path / "b", **(settings | {"steps": 3}))
    resumed = train(make_tiny_model, tmp_path / "b", **settings)
    assert_bit_identical(straight, resumed)


@pytest.mark.slow
@pytest.mark.parametrize("parallel", ["ddp", "fsdp"])
def test_accumulation_reduces_gradients_once_per_step_on_two_ranks(two_ranks, parallel):
    for rank in two_ranks:
        runs = rank.get(f"accumulation_{parallel}")
        assert runs is not None, rank.get(f"accumulation_{parallel}_error")
        large, accumulated = runs["large"], runs["accumulated"]
        # no reduction on the first three micro-batches of a step: as many as the large batch's steps made
        assert accumulated["reductions"] == large["reductions"] > 0
        for a, b in zip(large["params"], accumulated["params"], strict=True):
            torch.testing.assert_close(torch.tensor(a), torch.tensor(b), rtol=1e-4, atol=1e-5)
    assert two_ranks[0][f"accumulation_{parallel}"] == two_ranks[1][f"accumulation_{parallel}"]


def test_grad_accum_steps_must_be_positive():
    with pytest.raises(ValueError, match="train.grad_accum_steps=0 must be a whole number >= 1"):
        config(grad_accum_steps=0)
