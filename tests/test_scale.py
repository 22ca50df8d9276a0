"""Correct at scale: per-rank randomness, fp32 guidance, MAR's last-step guidance, DDP without label drop, the
process-group backend for cuda:N, and gradient accumulation (the update of a K-times larger batch)."""

import json
import math
import os
import subprocess
import sys
import threading
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


# ---------------------------------------------------------------------------- number formats


def note(seen: dict, key: str, value) -> None:
    """Record a hook's first sighting of `key` (returning None, so the hook changes nothing)."""
    seen.setdefault(key, value)


def test_the_residual_streams_stay_fp32_under_bf16_autocast(make_tiny_model):
    model = make_tiny_model((4, 4), jepa=False)
    seen = {}
    for name in ("encoder", "predictor"):
        block = getattr(model, name).blocks[0]
        block.register_forward_pre_hook(lambda m, args, _name=name: note(seen, _name, args[0].dtype))
    linear_out = []
    model.predictor.blocks[0].attn.qkv.register_forward_hook(lambda m, a, out: linear_out.append(out.dtype))
    mask = torch.zeros(2, 16, dtype=torch.bool)
    mask[:, 5:] = True
    with torch.autocast("cpu", dtype=torch.bfloat16):
        model.loss(torch.randn(2, 16, 4), torch.tensor([0, 1]), mask)
    assert linear_out == [torch.bfloat16]  # the matmuls do run in bf16
    assert seen == {"encoder": torch.float32, "predictor": torch.float32}  # as MAR's decoder, whose fp32 positions
    # are added to its bf16 tokens


def single_rank_group(tmp_path):
    """A one-process gloo group, enough to build DDP and FSDP2 wrappers on the CPU."""
    dist.init_process_group("gloo", store=dist.FileStore(str(tmp_path / "store"), 1), rank=0, world_size=1)


def test_fsdp_gathers_block_weights_in_bf16_on_cuda_and_ddp_sends_no_buffers(make_tiny_model, tmp_path, monkeypatch):
    policy = distributed.block_precision(torch.bfloat16, "cuda")
    # all-gathered in bf16 (half the bytes), gradients reduced in fp32, the fp32 residual stream not cast
    assert (policy.param_dtype, policy.reduce_dtype, policy.cast_forward_inputs) == (
        torch.bfloat16,
        torch.float32,
        False,
    )
    assert distributed.block_precision(torch.float32, "cuda").param_dtype is None
    single_rank_group(tmp_path)
    try:
        # On the CPU the blocks stay fp32 (CPU autocast would refuse a bf16 LayerNorm weight): a bf16 step runs.
        model = make_tiny_model((4, 4), jepa=False)
        distributed.shard_model(model, torch.bfloat16)
        seen = {}
        block = model.predictor.blocks[0]
        block.attn.qkv.register_forward_pre_hook(lambda m, a: note(seen, "block weight", m.weight.dtype))
        block.register_forward_pre_hook(lambda m, args: note(seen, "block input", args[0].dtype))
        mask = torch.zeros(2, 16, dtype=torch.bool)
        mask[:, 5:] = True
        with torch.autocast("cpu", dtype=torch.bfloat16):
            losses = model(torch.randn(2, 16, 4), torch.tensor([0, 1]), mask)
        losses["denoise"].backward()
        assert seen == {"block weight": torch.float32, "block input": torch.float32}
        monkeypatch.setattr(distributed, "world_size", lambda: 2)  # as under torchrun: wrap in DDP
        wrapped = distributed.wrap_for_training(make_tiny_model((4, 4)), "ddp")
        assert isinstance(wrapped, torch.nn.parallel.DistributedDataParallel) and not wrapped.broadcast_buffers
    finally:
        dist.destroy_process_group()


# ---------------------------------------------------------------------------- the denoising head's condition


def count_rows(module: torch.nn.Module) -> list[int]:
    rows: list[int] = []
    module.register_forward_hook(lambda m, a, out: rows.append(a[0].shape[0]))
    return rows


def test_the_head_embeds_each_condition_once(make_tiny_model, monkeypatch):
    model = make_tiny_model((4, 4), jepa=False, diffusion_batch_mul=4)
    rows = count_rows(model.head.net.cond_embed)
    mask = torch.zeros(2, 16, dtype=torch.bool)
    mask[:, 6:] = True
    tokens, labels = torch.randn(2, 16, 4), torch.tensor([0, 1])
    model.eval()  # no label drop: both passes see the same conditions
    losses = []
    for untiled in (True, False):  # False: the conditions tiled over the 4 copies before the embedding, as MAR
        monkeypatch.setattr(model.head, "takes_untiled_cond", untiled)
        torch.manual_seed(0)
        losses.append(model.loss(tokens, labels, mask)["denoise"])
    assert rows == [2 * 10, 4 * 2 * 10]  # the 10 hidden tokens' conditions once, not once per copy
    torch.testing.assert_close(losses[0], losses[1], rtol=1e-6, atol=0)

    cond, uncond = torch.randn(6, 32), torch.randn(6, 32)
    for head in (model.head, make_tiny_model((4, 4), head={"_target_": "djepa.nn.heads.FlowHead"}).head):
        for sampler in head.SAMPLERS:
            head.set_sampler(sampler)
            rows = count_rows(head.net.cond_embed)
            head.sample(cond, uncond, guidance=3.0)
            assert rows == [12], (type(head).__name__, sampler)  # once per call (per reveal step), both conditions


def test_dpm_solver_reads_nothing_back_per_reveal_step(make_tiny_model, monkeypatch):
    head = make_tiny_model((4, 4), head={"_target_": "djepa.nn.heads.DiffusionHead", "sampler": "dpm_solver"}).head
    reads = []
    for name in ("cpu", "tolist", "item"):
        original = getattr(torch.Tensor, name)
        monkeypatch.setattr(torch.Tensor, name, lambda self, *a, _n=name, _o=original: reads.append(_n) or _o(self, *a))
    head.sample(torch.randn(3, 32), None)
    assert reads == []


# ---------------------------------------------------------------------------- previews and the process group


class RecordingTokenizer:
    def __init__(self):
        self.devices = []

    def to(self, device):
        self.devices.append(torch.device(device))
        return self


class RecordingAdapter:
    """What write_class_grid uses of an adapter, recording what it is asked to decode and lay out."""

    def __init__(self, num_classes):
        self.num_classes, self.class_names = num_classes, [str(i) for i in range(num_classes)]
        self.tokenizer = RecordingTokenizer()
        self.rows = None

    def decode_tokens(self, tokens):
        assert self.tokenizer.devices, "decoded before the tokenizer was moved to the model's device"
        return torch.zeros(len(tokens), 1, 4, 4)

    def save_grid(self, media, rows, path):
        self.media, self.rows = media, rows
        return path


def test_previews_show_a_bounded_number_of_classes_decoded_on_the_models_device(make_tiny_model, tmp_path):
    from djepa.cli import train
    from djepa.cli.config import compose_config

    model = make_tiny_model((2, 2), num_classes=1000, head={"_target_": "djepa.nn.heads.FlowHead", "sampling_steps": 1})
    adapter = RecordingAdapter(1000)
    cfg = compose_config(["sample.num_steps=1", "sample.preview_classes=4"])
    train.write_class_grid(adapter, model, cfg, tmp_path / "grid", per_class=2)
    assert adapter.rows == 4 and len(adapter.media) == 8  # 4 classes x 2, not 1000 x 2
    assert adapter.tokenizer.devices == [torch.device("cpu")]
    assert train.preview_classes(1000, 4).tolist() == [0, 333, 666, 999]
    assert train.preview_classes(10, 10).tolist() == list(range(10)) == train.preview_classes(10, 40).tolist()
    assert compose_config([]).sample.preview_classes == 10


def test_the_process_group_waits_as_long_as_configured(torchrun_env, monkeypatch):
    from datetime import timedelta

    monkeypatch.setattr(dist, "init_process_group", lambda backend, **kw: torchrun_env.update(kw, backend=backend))
    distributed.init_from_env("cpu", 90.0)
    assert torchrun_env["timeout"] == timedelta(minutes=90)


def test_the_train_command_joins_with_its_configured_timeout(monkeypatch):
    from djepa.cli import train
    from djepa.cli.config import compose_config

    class Joined(Exception):
        pass

    seen = []

    def joined(device, timeout_minutes):
        seen.append(timeout_minutes)
        raise Joined

    monkeypatch.setattr(distributed, "init_from_env", joined)
    with pytest.raises(Joined):
        train.run(compose_config(["train.distributed_timeout_minutes=7"]))
    assert seen == [7]
    assert compose_config([]).train.distributed_timeout_minutes >= 30  # rank 0 training a tokenizer fits


# ---------------------------------------------------------------------------- the data path


class RecordingRows:
    """A tensor standing in for TokenData.mean / std that records how many rows each read asks for."""

    def __init__(self, tensor):
        self.tensor, self.shape, self.reads = tensor, tensor.shape, []

    def __len__(self):
        return len(self.tensor)

    def __getitem__(self, index):
        self.reads.append(len(index))
        return self.tensor[index]


def test_each_rank_reads_and_noises_only_its_rows_from_one_permutation_per_epoch(
    make_tiny_model, tmp_path, monkeypatch
):
    from djepa.engine import trainer as trainer_module
    from djepa.engine.data import TokenData
    from djepa.engine.trainer import batch_indices, noise_seed, order_seed
    from djepa.nn.masking import training_mask

    plain = token_data(n=40)
    mean, std = RecordingRows(plain.mean), RecordingRows(plain.std)
    trainer = Trainer(
        make_tiny_model((4, 4)), TokenData(mean, std, plain.labels), config(batch_size=8), tmp_path, torch.device("cpu")
    )
    permutations = []
    randperm = torch.randperm
    monkeypatch.setattr(
        trainer_module.torch, "randperm", lambda *a, **k: permutations.append(a[0]) or randperm(*a, **k)
    )
    whole = [trainer.batch(step) for step in range(10)]  # 80 rows: 2 epochs of 40
    assert permutations == [40, 40]  # one permutation per epoch, not one per step
    monkeypatch.setattr(distributed, "rank", lambda: 1)
    monkeypatch.setattr(distributed, "world_size", lambda: 2)
    mean.reads.clear()
    std.reads.clear()
    tokens, labels, mask = trainer.batch(3)
    assert mean.reads == [4] and std.reads == [4]  # rank 1's half of the global batch of 8
    idx = batch_indices(40, 8, 0, 3)[1::2]
    noise = torch.randn(tokens.shape, generator=torch.Generator().manual_seed(noise_seed(0, 3, 1)))
    assert torch.equal(tokens, plain.mean[idx] + plain.std[idx] * noise) and torch.equal(labels, plain.labels[idx])
    # the batch's ratio drawn as on rank 0 (the same visible count on every rank), rank 1's own orders
    assert (~mask).sum(1).tolist() == [int((~whole[3][2][0]).sum())] * 4
    orders = torch.Generator().manual_seed(order_seed(0, 3, 1))
    gen = torch.Generator().manual_seed(trainer_module.step_seed(0, 3))
    assert torch.equal(mask, training_mask(4, 16, 0.7, gen, order_generator=orders))
    streams = (noise_seed, order_seed, trainer_module.rank_seed)
    assert len({f(0, s, r) for f in streams for s in range(50) for r in range(8)}) == 3 * 400  # no shared seed


def test_the_trainer_prefetches_the_next_batch_in_its_loader_thread(make_tiny_model, tmp_path):
    trainer = Trainer(make_tiny_model((4, 4)), token_data(), config(steps=3, batch_size=4), tmp_path, "cpu")
    threads = {}
    batch = trainer.batch
    trainer.batch = lambda step: threads.setdefault(step, threading.current_thread().name) and batch(step)
    trainer.fit()
    assert threads[0] == threading.current_thread().name  # nothing to prefetch before the first step
    assert threads[1].startswith("djepa-batches") and threads[2].startswith("djepa-batches")
    assert trainer._loader is None  # the loader stops with fit


def test_cached_rows_are_read_run_by_run(tmp_path, monkeypatch):
    import numpy as np

    from djepa.modalities import latent_cache

    values = np.arange(10 * 6, dtype=np.float32).reshape(10, 3, 2)
    np.save(tmp_path / "mean.npy", values)
    cached = latent_cache.CachedTokens(tmp_path / "mean.npy", np.arange(10), lambda z: z.flatten(1)[:, None])
    offsets = []
    preadv = os.preadv
    monkeypatch.setattr(os, "preadv", lambda fd, buffers, offset: offsets.append(offset) or preadv(fd, buffers, offset))
    picked = np.array([7, 2, 5, 6, 2, 9])
    assert torch.equal(cached[torch.tensor(picked)], torch.from_numpy(values[picked]).flatten(1)[:, None])
    assert len(offsets) == 3  # rows 2, 5..7 and 9: one read per run of adjacent rows, in file order
    assert offsets == sorted(offsets)


def test_the_data_path_benchmark_reads_one_ranks_share(tmp_path):
    from djepa.benchmarks.experiments import data_path

    result = data_path.measure(tmp_path / "cache", items=1000, world=4, steps=2, batch=64)
    assert result["rows_per_step"] == 16 and result["ms_per_step"] > 0
    assert distributed.world_size() == 1  # the simulated rank is undone
