"""Fault injection (issue 15): every bad input a one-line error with exit status 2, and nothing lost.

Run-dir locking, config-checked resume, typed values of the keys users get wrong, checkpoints that
cannot be verified, SIGTERM. The end-to-end cases share one tiny run on the embedded digits.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap

import pytest
import torch
from omegaconf import OmegaConf

from djepa.cli import sample, train, train_tokenizer
from djepa.cli.checks import resolve_prompt_class
from djepa.cli.config import cli_errors
from djepa.engine.checkpoint import CheckpointManager
from djepa.engine.resume_check import check_model_config, config_changes, trim_metrics
from djepa.engine.run_lock import RunLock
from djepa.errors import Terminated, UsageError


def one_line_error(capsys, run, argv, code=2) -> str:
    with pytest.raises(SystemExit) as exit_info:
        run(argv)
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == code, err
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    return err


# ----------------------------------------------------------------------------- the run lock


def test_a_second_train_on_a_locked_run_dir_refuses_naming_the_holder(tmp_path, capsys):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    with RunLock(run_dir):
        err = one_line_error(capsys, train.main, [f"home={tmp_path}", f"run_dir={run_dir}", "model=tiny"])
    assert f"pid {os.getpid()} on host {socket.gethostname()}" in err and "in use" in err
    assert not (run_dir / "config.yaml").exists()


HOLD = textwrap.dedent(
    """
    import os, sys
    from djepa.engine.run_lock import RunLock
    lock = RunLock(sys.argv[1]).acquire()
    print("held", flush=True)
    if sys.argv[2] == "die":
        os._exit(0)  # dies holding it: no release, the file still names this pid
    sys.stdin.read()
    lock.release()
    """
)


def test_a_lock_held_by_another_process_is_refused_and_free_when_it_ends(tmp_path):
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(tmp_path), "wait"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(UsageError, match=f"in use by pid {holder.pid} on host"):
            RunLock(tmp_path).acquire()
    finally:
        holder.communicate("")
    with RunLock(tmp_path) as lock:
        assert lock.previous is None  # released cleanly: nothing stale to report


def test_a_stale_lock_of_a_dead_process_is_taken_over(tmp_path):
    dead = subprocess.run([sys.executable, "-c", HOLD, str(tmp_path), "die"], capture_output=True, text=True)
    assert dead.stdout.strip() == "held"
    assert '"pid"' in (tmp_path / ".lock").read_text()
    with RunLock(tmp_path) as lock:
        assert lock.previous is not None and "pid" in lock.previous
        assert json.loads((tmp_path / ".lock").read_text())["pid"] == os.getpid()


def test_a_run_dir_under_a_file_is_one_line(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    err = one_line_error(capsys, train.main, [f"home={tmp_path}", f"run_dir={tmp_path}/file/run"])
    assert "is a file" in err and str(tmp_path / "file") in err


# ----------------------------------------------------------------------------- keys users get wrong

TRAIN_CASES = [
    (["train.lr=-1"], "train.lr=-1 must be a number > 0"),
    (["train.lr=0"], "train.lr=0 must be a number > 0"),
    (["train.precision=fp16"], "train.precision='fp16' must be one of auto, bf16, fp32"),
    (["train.warmup_steps=-5"], "train.warmup_steps=-5 must be a whole number >= 0"),
    (["train.checkpoint_format=zarr"], "train.checkpoint_format='zarr' must be one of auto, full, sharded"),
    (["attention_backend=flash"], "attention_backend='flash' must be one of auto, xformers, sdpa, math"),
    (["loss=flow", "loss.head.sampler=rk45"], "loss.head.sampler='rk45' must be one of euler, heun"),
    (["loss.head._target_=gan.Head"], "loss.head._target_='gan.Head' is outside djepa"),
    (["loss.head._target_=djepa.nn.heads.Nowhere"], "loss.head._target_='djepa.nn.heads.Nowhere' cannot be imported"),
    (["loss.head._target_=djepa.nn.model.DJEPA"], "loss.head._target_='djepa.nn.model.DJEPA' is not a TokenHead"),
    (["hydra.run.dir=/tmp/elsewhere"], "hydra settings are not used by djepa"),
    (["+new_key=1"], "+new_key: unknown key, nothing reads it"),
    (["+sample.foo=1"], "+sample.foo: unknown key"),
    (["model.heads=8"], "model.heads: unknown key"),  # the attention heads are model.num_heads
    (["device=gpu"], "device='gpu' must be auto, cpu, cuda or cuda:N"),
]


@pytest.mark.parametrize("args,message", TRAIN_CASES)
def test_bad_train_values_are_one_line_and_write_nothing(tmp_path, capsys, args, message):
    run_dir = tmp_path / "run"
    err = one_line_error(capsys, train.main, [f"home={tmp_path}", f"run_dir={run_dir}", *args])
    assert message in err
    assert not run_dir.exists()  # refused before the run_dir, let alone config.yaml, was made


SAMPLE_CASES = [
    (["sample.guidance_scale=-3"], "sample.guidance_scale=-3 must be a number >= 1"),
    (["sample.temperature=0"], "sample.temperature=0 must be a number > 0"),
    (["prompt_class=2.7"], "prompt_class=2.7 must be a class index"),
    (["prompt_class=true"], "prompt_class=true must be a class index"),
    (["num_samples=abc"], "num_samples: Value 'abc' of type 'str' could not be converted to Integer"),
    (["num_samples=1000000000000"], "num_samples=1000000000000 must be a whole number >= 1 and <= 100000"),
    (["sample.num_steps=0"], "sample.num_steps=0 must be a whole number >= 1"),
    (["checkpoint=/dev/null"], "checkpoint='/dev/null' is not a checkpoint: expected a folder"),
]


@pytest.mark.parametrize("args,message", SAMPLE_CASES)
def test_bad_sample_values_are_one_line(tmp_path, capsys, args, message):
    err = one_line_error(capsys, sample.main, [f"home={tmp_path}", f"run_dir={tmp_path}/run", *args])
    assert message in err


def test_sample_out_an_existing_file_and_checkpoint_a_plain_folder(tmp_path, capsys):
    (tmp_path / "taken.png").write_text("x")
    err = one_line_error(capsys, sample.main, [f"home={tmp_path}", f"out={tmp_path}/taken.png"])
    assert "out=" in err and "is an existing file" in err
    err = one_line_error(capsys, sample.main, [f"home={tmp_path}", f"checkpoint={tmp_path}"])
    assert "has no state.json" in err and "corrupt" not in err


def test_prompt_class_by_index_or_name():
    names = ["zero", "one", "two"]
    assert resolve_prompt_class(None, names) is None
    assert resolve_prompt_class(2, names) == 2
    assert resolve_prompt_class("one", names) == 1
    assert resolve_prompt_class("2", names) == 2
    with pytest.raises(UsageError, match=r"prompt_class='seven' is not a class .* \(zero, one, two\)"):
        resolve_prompt_class("seven", names)
    with pytest.raises(UsageError, match="use 0..2"):
        resolve_prompt_class(3, names)


# ----------------------------------------------------------------------------- checkpoints


def _save(manager, step):
    return manager.save(step, {"ema": {"w": torch.full((2,), float(step))}}, {"note": step})


def test_a_checkpoint_without_checksums_is_invalid_and_skipped(tmp_path):
    manager = CheckpointManager(tmp_path, keep=5)
    _save(manager, 1)
    newest = _save(manager, 2)
    state = json.loads((newest / "state.json").read_text())
    del state["checksums"]
    (newest / "state.json").write_text(json.dumps(state))
    with pytest.raises(ValueError, match="no checksums"):
        CheckpointManager.verify(newest)
    with pytest.warns(UserWarning, match="skipping corrupt checkpoint"):
        directory, state = manager.latest_valid()
    assert state["step"] == 1


def test_a_pickle_renamed_safetensors_with_a_forged_checksum_falls_back(tmp_path):
    from djepa.io import sha256

    manager = CheckpointManager(tmp_path, keep=5)
    _save(manager, 1)
    newest = _save(manager, 2)
    (newest / "ema.safetensors").write_bytes(b"\x80\x04K\x01.")  # a pickle of 1, never unpickled
    state = json.loads((newest / "state.json").read_text())
    state["checksums"]["ema.safetensors"] = sha256(newest / "ema.safetensors")
    (newest / "state.json").write_text(json.dumps(state))
    with pytest.warns(UserWarning, match="not a safetensors file"):
        directory, state = manager.latest_valid()
    assert state["step"] == 1


# ----------------------------------------------------------------------------- resume rules (units)


def test_config_changes_split_frozen_from_free():
    saved = OmegaConf.create(
        {"seed": 0, "model": {"num_heads": 4}, "train": {"steps": 10, "precision": "bf16"}, "loss": {"head": {}}}
    )
    new = OmegaConf.create(
        {"seed": 0, "model": {"num_heads": 8}, "train": {"steps": 20, "precision": "auto"}, "extra": 1}
    )
    frozen, free = config_changes(saved, new)
    assert frozen == ["model.num_heads 4 -> 8"]
    assert free == ["train.steps 10 -> 20"]  # precision auto keeps bf16; keys new to the config are no change


def test_the_built_model_must_match_the_checkpoint(tmp_path):
    state = {"model_config": {"grid": [4, 4], "token_dim": 16}}
    check_model_config(tmp_path, 3, state, {"grid": (4, 4), "token_dim": 16})
    with pytest.raises(UsageError, match="token_dim 16 -> 8"):
        check_model_config(tmp_path, 3, state, {"grid": (4, 4), "token_dim": 8})
    # a head setting added since the checkpoint was written (the diffusion head's sampler) is no change
    head = {"_target_": "djepa.nn.heads.DiffusionHead", "num_timesteps": 1000, "sampling_steps": 100}
    state = {"model_config": {"grid": [4, 4], "head_config": head}}
    check_model_config(tmp_path, 3, state, {"grid": (4, 4), "head_config": {**head, "sampler": "ddpm"}})
    # sampling-only settings leave the weights alone: a resume may change them
    sampled = {**head, "sampler": "dpm_solver", "sampling_steps": 20}
    check_model_config(tmp_path, 3, state, {"grid": (4, 4), "head_config": sampled})
    with pytest.raises(UsageError, match="head_config"):
        check_model_config(tmp_path, 3, state, {"grid": (4, 4), "head_config": {**head, "num_timesteps": 500}})


def test_trim_metrics_drops_records_past_the_checkpoint_and_torn_lines(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(json.dumps({"step": s}) + "\n" for s in (10, 20, 30)) + '{"step": 4')
    assert trim_metrics(path, 20) == 2
    assert [json.loads(line)["step"] for line in path.read_text().splitlines()] == [10, 20]


# ----------------------------------------------------------------------------- SIGTERM


class FakeTrainer:
    """What the signal handling sees of a Trainer: its step-boundary hook, step and save."""

    def __init__(self):
        self.step, self.saved, self.before_step = 7, [], None

    def train_step(self):
        if self.before_step is not None:
            self.before_step()  # Trainer.fit calls it at every step boundary
        return {"loss": 1.0}

    def save(self):
        self.saved.append(self.step)
        return f"step_{self.step}"


def test_sigterm_saves_at_the_next_step_boundary_and_exits_143(capsys):
    trainer = FakeTrainer()
    previous = signal.getsignal(signal.SIGTERM)
    with pytest.raises(SystemExit) as exit_info, cli_errors():
        with train.stop_between_steps(trainer):
            assert trainer.train_step() == {"loss": 1.0}
            os.kill(os.getpid(), signal.SIGTERM)  # the handler only notes it
            trainer.train_step()  # the next step saves first, then stops
    assert exit_info.value.code == 143 and trainer.saved == [7]
    assert "saved checkpoint step_7 at step 7" in capsys.readouterr().out
    signal.signal(signal.SIGTERM, previous)
    assert trainer.before_step is None  # the hook is removed with the handlers
    assert isinstance(Terminated(), KeyboardInterrupt)


# ----------------------------------------------------------------------------- resume, end to end


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    home = tmp_path_factory.mktemp("home")
    common = [f"home={home}"]
    tok = ["tokenizer.block_out_channels=[8,8,8]", "tokenizer.norm_num_groups=4", "tokenizer.steps=3"]
    train_tokenizer.run(train_tokenizer.compose_config(common + tok))
    run_dir = tmp_path_factory.mktemp("run")
    args = common + [
        f"run_dir={run_dir}",
        "model=tiny",
        "train.batch_size=8",
        "train.checkpoint_every=2",
        "train.log_every=1",
        "sample.preview_per_class=0",
        "loss.head.sampling_steps=2",
    ]
    train.main(args + ["train.steps=4"])
    return args, run_dir


@pytest.mark.parametrize(
    "change,message",
    [
        (["model.encoder_depth=2"], "model.encoder_depth 1 -> 2"),
        (["model.num_heads=4"], "model.num_heads 2 -> 4"),
        (["loss=flow"], "loss.head._target_ djepa.nn.heads.DiffusionHead -> djepa.nn.heads.FlowHead"),
        (["seed=1"], "seed 0 -> 1"),
        (["modality=audio"], "holds a modality=image run at step 4, not audio"),
    ],
)
@pytest.mark.slow
def test_resume_with_another_model_or_modality_refuses_and_changes_nothing(tiny_run, capsys, change, message):
    args, run_dir = tiny_run
    before = {p: p.read_bytes() for p in sorted(run_dir.rglob("*")) if p.is_file() and p.name != ".lock"}
    err = one_line_error(capsys, train.main, args + ["train.steps=6", *change])
    assert message in err and "new run_dir" in err
    after = {p: p.read_bytes() for p in sorted(run_dir.rglob("*")) if p.is_file() and p.name != ".lock"}
    assert after == before  # config.yaml, checkpoints and metrics untouched


@pytest.mark.slow
def test_resume_with_allowed_changes_logs_them_trims_metrics_and_cleans_staging(tiny_run, capsys):
    args, run_dir = tiny_run
    saved = OmegaConf.load(run_dir / "config.yaml")
    assert saved.train.precision in ("bf16", "fp32")  # auto decided once and stored
    # A crash after step 4's checkpoint: a record of step 5, a torn line and a half-written checkpoint.
    with open(run_dir / "metrics.jsonl", "a") as f:
        f.write(json.dumps({"step": 5, "loss": 1.0}) + "\n" + '{"step": 6, "lo')
    (run_dir / "checkpoints" / ".staging_0000006").mkdir()
    capsys.readouterr()
    train.main(args + ["train.steps=6", "train.keep_checkpoints=5"])
    out = capsys.readouterr().out
    assert "changed setting: train.steps 4 -> 6" in out and "keep_checkpoints 3 -> 5" in out
    steps = [json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5, 6]
    assert not (run_dir / "checkpoints" / ".staging_0000006").exists()
    assert OmegaConf.load(run_dir / "config.yaml").train.steps == 6
    assert OmegaConf.load(run_dir / "config.yaml").train.precision == saved.train.precision


def _flip_a_byte(path):
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def test_rotation_never_deletes_the_newest_valid_checkpoint_nor_counts_a_corrupt_one(tmp_path):
    manager = CheckpointManager(tmp_path, keep=1)
    _save(manager, 2)
    _flip_a_byte(_save(CheckpointManager(tmp_path, keep=2), 4) / "ema.safetensors")
    # a resumed run (from step 2, the newest valid) writes step 3: the corrupt step 4 counts for nothing
    assert [p.name for p in manager.directories()] == ["step_0000002", "step_0000004"]
    _save(manager, 3)
    assert [p.name for p in manager.directories()] == ["step_0000003", "step_0000004"]
    with pytest.warns(UserWarning, match="skipping corrupt checkpoint"):
        directory, state = manager.latest_valid()
    assert state["step"] == 3
    # a corrupt one older than the newest `keep` valid ones goes with the next rotation
    manager = CheckpointManager(tmp_path, keep=2)
    _flip_a_byte(_save(manager, 1) / "ema.safetensors")
    assert "step_0000001" in [p.name for p in manager.directories()]
    _save(manager, 5)
    assert [p.name for p in manager.directories()] == ["step_0000003", "step_0000004", "step_0000005"]


def test_a_corrupt_checkpoint_past_the_resume_point_is_set_aside_not_deleted(tmp_path):
    manager = CheckpointManager(tmp_path, keep=1)
    _save(manager, 2)
    corrupt = _save(CheckpointManager(tmp_path, keep=2), 4)
    _flip_a_byte(corrupt / "ema.safetensors")
    kept_bytes = (corrupt / "ema.safetensors").read_bytes()
    assert CheckpointManager(tmp_path).set_aside_invalid(4) == []  # none past step 4
    (moved,) = CheckpointManager(tmp_path).set_aside_invalid(2)
    assert moved.name == "step_0000004.invalid" and (moved / "ema.safetensors").read_bytes() == kept_bytes
    assert [p.name for p in manager.directories()] == ["step_0000002"]
    _save(manager, 3)
    assert [p.name for p in manager.directories()] == ["step_0000003"] and moved.is_dir()
    assert manager.latest_valid()[1]["step"] == 3


def test_an_interrupt_says_what_each_command_can_resume(capsys, monkeypatch, tmp_path):
    """train resumes from its checkpoints; the tokenizer trainer keeps none, so it says it starts again."""
    from djepa.cli import train, train_tokenizer

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    for command, expected in ((train, "last checkpoint is intact"), (train_tokenizer, "starts it again")):
        monkeypatch.setattr(command, "run", interrupted)
        monkeypatch.setattr(command, "check_inputs", lambda *a, **k: None, raising=False)
        with pytest.raises(SystemExit) as stop:
            command.main([f"home={tmp_path}"])
        err = capsys.readouterr().err
        assert stop.value.code == 130 and expected in err and len(err.strip().splitlines()) == 1
