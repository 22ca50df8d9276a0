import json
import math
import pickle
import shutil

import pytest
import torch
from safetensors import SafetensorError

from djepa.engine.checkpoint import CheckpointManager
from djepa.engine.data import TokenData
from djepa.engine.trainer import NonFiniteLoss, TrainConfig, Trainer, batch_indices, lr_at


def token_data(n=64, grid_tokens=16):
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(n) % 3
    mean = torch.randn(3, grid_tokens, 4, generator=g)[labels] + 0.1 * torch.randn(n, grid_tokens, 4, generator=g)
    return TokenData(mean, torch.full_like(mean, 0.05), labels)


def config(**overrides):
    settings = dict(
        steps=30,
        batch_size=8,
        lr=1e-3,
        warmup_steps=5,
        lr_schedule="cosine",
        ema_decay=0.99,
        checkpoint_every=10,
        log_every=5,
        precision="fp32",
        preview_every=0,
    )
    settings.update(overrides)
    return TrainConfig(**settings)


class Stop(Exception):
    pass


def assert_bit_identical(straight: Trainer, resumed: Trainer) -> None:
    """A resumed run ends with the very bits of the uninterrupted one: model, sampling EMA, JEPA teacher and
    the optimizer's moments (torch.equal, no tolerance)."""
    for kind in ("model", "ema", "teacher"):
        a, b = getattr(straight, kind), getattr(resumed, kind)
        assert (a is None) == (b is None), kind
        if a is None:
            continue
        a, b = a.state_dict(), b.state_dict()
        assert list(a) == list(b), kind
        different = [name for name in a if not torch.equal(a[name], b[name])]
        assert not different, f"{kind}: {len(different)} tensors differ, first {different[:3]}"
    compared = 0
    for group_a, group_b in zip(straight.optimizer.param_groups, resumed.optimizer.param_groups, strict=True):
        for p, q in zip(group_a["params"], group_b["params"], strict=True):
            a, b = straight.optimizer.state.get(p, {}), resumed.optimizer.state.get(q, {})
            assert a.keys() == b.keys()
            for key in a:
                assert torch.equal(torch.as_tensor(a[key]), torch.as_tensor(b[key])), key
                compared += 1
    assert compared > 0


@pytest.mark.slow
def test_loss_falls_and_metrics_are_written(make_tiny_model, tmp_path):
    trainer = Trainer(make_tiny_model((4, 4)), token_data(), config(steps=60), tmp_path, torch.device("cpu"))
    trainer.fit()
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["step"] == 60
    assert {"loss", "denoise", "jepa", "lr", "step_ms", "tokens_per_s"} <= set(rows[0])
    assert sum(r["denoise"] for r in rows[-3:]) < sum(r["denoise"] for r in rows[:3])
    assert len(CheckpointManager(tmp_path).directories()) == 3


@pytest.mark.slow
def test_interrupted_run_resumes_to_identical_weights(make_tiny_model, tmp_path, capsys):
    straight = Trainer(make_tiny_model((4, 4)), token_data(), config(), tmp_path / "a", torch.device("cpu"))
    straight.fit()

    def hard_stop(ema, step):
        raise Stop

    torch.manual_seed(0)
    first = Trainer(
        make_tiny_model((4, 4)),
        token_data(),
        config(preview_every=15, checkpoint_every=15),
        tmp_path / "b",
        torch.device("cpu"),
        preview=hard_stop,
    )
    with pytest.raises(Stop):
        first.fit()
    assert first.step == 15
    torch.manual_seed(123)  # a fresh process: different init, different global RNG
    second = Trainer(
        make_tiny_model((4, 4)),
        token_data(),
        config(checkpoint_every=15),
        tmp_path / "b",
        torch.device("cpu"),
    )
    second.fit()
    captured = capsys.readouterr()
    assert "resumed from step 15" in captured.out + captured.err
    assert_bit_identical(straight, second)


@pytest.mark.slow
def test_corrupt_latest_checkpoint_falls_back_to_previous(make_tiny_model, tmp_path):
    trainer = Trainer(make_tiny_model((4, 4)), token_data(), config(steps=20), tmp_path, torch.device("cpu"))
    trainer.fit()
    latest = CheckpointManager(tmp_path).directories()[-1]
    path = latest / "model.safetensors"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.warns(UserWarning, match="corrupt"):
        directory, state = CheckpointManager(tmp_path).latest_valid()
    assert state["step"] == 10 and directory != latest


@pytest.mark.slow
def test_sharded_checkpoints_resume_exactly_and_are_verified(make_tiny_model, tmp_path):
    # torch.distributed.checkpoint in one process (the 2-rank cases are in test_distributed): the same
    # step directories, every file checksummed, the EMA consolidated for sampling, resumed exactly.
    straight = Trainer(make_tiny_model((4, 4)), token_data(), config(), tmp_path / "a", torch.device("cpu"))
    straight.fit()
    torch.manual_seed(0)
    run = tmp_path / "b"
    sharded = config(checkpoint_format="sharded", preview_every=20)

    def hard_stop(ema, step):
        raise Stop

    with pytest.raises(Stop):  # stopped after the step-20 checkpoint, as a killed run would be
        Trainer(make_tiny_model((4, 4)), token_data(), sharded, run, torch.device("cpu"), preview=hard_stop).fit()
    latest = CheckpointManager(run).directories()[-1]
    state = CheckpointManager.verify(latest)
    assert state["checkpoint_format"] == "sharded" and state["model_config"] == straight.model.config
    assert {"dcp/.metadata", "dcp/__0_0.distcp", "ema.safetensors"} <= set(state["checksums"])
    assert not (latest / "model.safetensors").exists() and not (latest / "optimizer.safetensors").exists()
    ema = CheckpointManager.load_tensors(latest, "ema")
    assert set(ema) == set(straight.ema.state_dict())
    torch.manual_seed(123)  # a fresh process: different init
    resumed = Trainer(make_tiny_model((4, 4)), token_data(), config(), run, torch.device("cpu"))
    resumed.fit()  # auto: a one-process run writes full checkpoints from here, and reads either
    assert resumed.step == 30 and not (CheckpointManager(run).directories()[-1] / "dcp").exists()
    assert_bit_identical(straight, resumed)
    shard = latest / "dcp" / "__0_0.distcp"
    shard.write_bytes(shard.read_bytes()[:-16] + bytes(16))
    with pytest.raises(ValueError, match="checksum mismatch"):
        CheckpointManager.verify(latest)
    shutil.rmtree(CheckpointManager(run).directories()[-1])  # step 30: step 20 is the newest, and corrupt
    with pytest.warns(UserWarning, match="corrupt"):
        assert CheckpointManager(run).latest_valid()[1]["step"] == 10


@pytest.mark.slow
def test_pickle_in_a_checkpoint_is_never_executed(make_tiny_model, tmp_path):
    trainer = Trainer(make_tiny_model((4, 4)), token_data(), config(steps=10), tmp_path, torch.device("cpu"))
    trainer.fit()
    directory = CheckpointManager(tmp_path).directories()[-1]
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    payload = directory / "model.safetensors"
    payload.write_bytes(pickle.dumps({"w": Exploit()}))
    # even with a forged checksum the loader reads safetensors only, which refuses the payload
    state = json.loads((directory / "state.json").read_text())
    state["checksums"]["model.safetensors"] = __import__("djepa.io").io.sha256(payload)
    (directory / "state.json").write_text(json.dumps(state))
    with pytest.raises(SafetensorError):
        CheckpointManager.load_tensors(directory, "model")
    assert not marker.exists()


@pytest.mark.slow
def test_non_finite_losses_stop_the_run_with_a_message(make_tiny_model, tmp_path):
    data = token_data()
    data.mean[:] = float("nan")
    trainer = Trainer(make_tiny_model((4, 4)), data, config(max_bad_steps=3), tmp_path, torch.device("cpu"))
    with pytest.raises(NonFiniteLoss, match="3 non-finite losses in a row ending at step"):
        trainer.fit()
    assert trainer.skipped == 3


def test_data_order_is_a_permutation_per_epoch():
    seen = torch.cat([batch_indices(20, 5, seed=0, step=s) for s in range(4)])
    assert sorted(seen.tolist()) == list(range(20))
    assert torch.equal(batch_indices(20, 5, 0, 2), batch_indices(20, 5, 0, 2))


def test_lr_warms_up_then_follows_cosine():
    train_config = config(steps=100, warmup_steps=10, lr=1e-3, min_lr=0.0)
    assert lr_at(0, train_config) == pytest.approx(1e-4)
    assert lr_at(10, train_config) == pytest.approx(1e-3)
    assert lr_at(55, train_config) == pytest.approx(0.5e-3, rel=1e-6)
    assert math.isclose(lr_at(100, train_config), 0.0, abs_tol=1e-12)


def test_bad_train_settings_name_the_key():
    with pytest.raises(ValueError, match="train.batch_size"):
        TrainConfig(batch_size=0)
    with pytest.raises(ValueError, match="train.parallel"):
        TrainConfig(parallel="zero3")
    with pytest.raises(ValueError, match="train.compile"):
        TrainConfig(compile="yes")
    with pytest.raises(ValueError, match="train.checkpoint_format"):
        TrainConfig(checkpoint_format="zarr")


@pytest.mark.slow
def test_compile_switch_compiles_each_block_and_trains_the_same(make_tiny_model, tmp_path):
    # aot_eager traces the blocks through dynamo + AOTAutograd without a C++ build; inductor is the default.
    runs = {}
    for compiled in (False, True):
        torch.manual_seed(0)
        trainer = Trainer(
            make_tiny_model((4, 4)),
            token_data(),
            config(steps=6, compile=compiled, compile_backend="aot_eager"),
            tmp_path / str(compiled),
            torch.device("cpu"),
        )
        trainer.fit()
        runs[compiled] = trainer
    blocks = [m for m in runs[True].model.modules() if type(m).__name__ in ("Block", "ResBlock")]
    assert blocks and all(m._compiled_call_impl is not None for m in blocks)
    for a, b in zip(runs[False].model.parameters(), runs[True].model.parameters()):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


def test_a_step_reads_nothing_back_from_the_device_until_the_log_line(make_tiny_model, tmp_path, monkeypatch):
    """On a GPU every tensor-to-Python read waits for the device. A step makes one, of the host mask's visible
    count (a CPU tensor, free); the loss terms, the gradient norm and the non-finite decision stay on the device
    until `settle` reads a whole logging interval back. Counted here on the Python entry points of a read."""
    trainer = Trainer(make_tiny_model((4, 4)), token_data(), config(steps=4, grad_probe_every=0), tmp_path, "cpu")
    trainer.train_step()  # first-call set-up (optimizer state) is not the steady state
    trainer.step += 1
    reads = []
    for name in ("item", "tolist", "__bool__", "__float__", "__int__", "__index__"):
        original = getattr(torch.Tensor, name)

        def counted(self, *args, _name=name, _original=original):
            reads.append(_name)
            return _original(self, *args)

        monkeypatch.setattr(torch.Tensor, name, counted)
    batches = [trainer.batch(step) for step in (1, 2)]  # the masks are drawn on the host, before counting
    monkeypatch.setattr(trainer, "batch", lambda step: batches[step - 1])
    reads.clear()
    records = [trainer.train_step(), trainer.train_step()]
    assert reads == ["__int__", "__int__"], reads  # each step: the host mask's visible count, nothing else
    assert isinstance(records[0]["loss"], torch.Tensor) and isinstance(records[0]["grad_norm"], torch.Tensor)
    reads.clear()
    settled = trainer.settle([r | {"step": i} for i, r in enumerate(records)])
    assert reads == ["tolist"]  # the interval's one read
    assert all(isinstance(r["loss"], float) and math.isfinite(r["loss"]) for r in settled)


def test_a_non_finite_step_leaves_the_weights_and_optimizer_untouched(make_tiny_model, tmp_path):
    data = token_data()
    trainer = Trainer(make_tiny_model((4, 4)), data, config(steps=4), tmp_path, "cpu")
    trainer.train_step()
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    moments = [s["exp_avg"].clone() for s in trainer.optimizer.state.values()]
    data.mean[:] = float("nan")
    record = trainer.train_step()
    assert bool(record["bad"])
    assert all(torch.equal(before[k], v) for k, v in trainer.model.state_dict().items())
    assert all(torch.equal(m, s["exp_avg"]) for m, s in zip(moments, trainer.optimizer.state.values()))
    assert trainer.settle([record | {"step": 2}]) == [] and trainer.skipped == 1


@pytest.mark.slow
def test_compiled_blocks_take_the_gradient_probe(make_tiny_model, tmp_path):
    # The probe differentiates each loss with retain_graph; AOTAutograd's donated buffers forbid that unless off.
    trainer = Trainer(
        make_tiny_model((4, 4)),
        token_data(),
        config(steps=3, compile=True, compile_backend="aot_eager", grad_probe_every=1),
        tmp_path,
        torch.device("cpu"),
    )
    trainer.fit()
    probes = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert trainer.step == 3 and any("grad_cos" in record for record in probes)
