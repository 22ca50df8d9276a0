"""Hostile and damaged inputs: user folders, run state, disks, exports, the web demo. Each is one line naming
the path or key (exit status 2 from the commands), nothing written, nothing lost; or, where the input can be
used after all (a file name that is not UTF-8), the run goes on. A list that grows with every case found.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import pickle
import socket
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from djepa import builders
from djepa.errors import UsageError
from djepa.modalities.folder import DataError
from djepa.modalities.image import ImageAdapter

POOL = {"_target_": "test_plugins.PoolTokenizer", "path": "none", "factor": 4}


@pytest.fixture
def pool_tokenizer():
    """The weightless test tokenizer of test_plugins, allow-listed as a plugin: latent caching in milliseconds."""
    with builders.allowed_plugins(["test_plugins"]):
        yield dict(POOL)


def write_class(root: Path, name: str | bytes, count: int = 2, good: bool = True) -> Path:
    folder = Path(os.fsdecode(os.path.join(os.fsencode(root), os.fsencode(name))))
    folder.mkdir(parents=True)
    for i in range(count):
        path = folder / f"{i}.png"
        if good:
            Image.new("L", (16, 16), 40 * i).save(path)
        else:
            path.write_bytes(b"\x89PNG truncated" if i else b"")
    return folder


def folder_adapter(tmp_path: Path, tokenizer: dict, data: Path) -> ImageAdapter:
    return ImageAdapter(tokenizer, [2, 2], str(tmp_path / "cache"), image_size=16, data_dir=str(data))


# ----------------------------------------------------------------------------- user folders


def test_names_that_are_not_utf8_are_read_and_the_run_goes_on(tmp_path, pool_tokenizer):
    data = tmp_path / "data"
    latin1 = write_class(data, b"caf\xe9")  # a Latin-1 folder name
    Image.new("L", (16, 16), 200).save(os.fsdecode(os.path.join(os.fsencode(latin1), b"\xe9t\xe9.png")))
    write_class(data, "tea")
    adapter = folder_adapter(tmp_path, pool_tokenizer, data)
    scan = adapter.scan()
    assert len(scan.fingerprint) == 32 and len(scan.files) == 5
    assert adapter.class_names == ["café", "tea"]
    json.dumps(adapter.class_names).encode()  # prints, goes into state.json
    tokens = adapter.token_data(device="cpu", workers=0)
    assert len(tokens) == 5 and adapter.skipped_files == 0
    # renaming the file to another non-UTF-8 name is a change of the folder
    before = scan.fingerprint
    os.rename(os.fsencode(latin1) + b"/\xe9t\xe9.png", os.fsencode(latin1) + b"/\xe8t\xe8.png")
    assert folder_adapter(tmp_path, pool_tokenizer, data).scan().fingerprint != before


def test_a_class_with_no_usable_file_is_refused_naming_it_on_every_run(tmp_path, pool_tokenizer):
    data = tmp_path / "data"
    write_class(data, "good")
    write_class(data, "broken", good=False)
    for _ in range(2):  # the run that builds the cache, and a re-run that finds it complete
        adapter = folder_adapter(tmp_path, pool_tokenizer, data)
        with pytest.raises(DataError, match=r"^class folder \S+/broken holds no readable images \(2 files skipped\)"):
            adapter.token_data(device="cpu", workers=0)
    assert len(list((tmp_path / "cache").iterdir())) == 1  # one cache, built once


def test_a_damaged_latent_cache_is_encoded_again_and_said_so(tmp_path, pool_tokenizer, caplog):
    data = tmp_path / "data"
    write_class(data, "a")
    write_class(data, "b")
    adapter = folder_adapter(tmp_path, pool_tokenizer, data)
    expected = adapter.token_data(device="cpu", workers=0)
    (cache,) = (tmp_path / "cache").iterdir()
    # a pickled object array in place of the labels: never unpickled
    np.save(cache / "labels.npy", np.array([{"x": 1}, None, 3, 4], dtype=object), allow_pickle=True)
    with caplog.at_level(logging.WARNING):
        again = folder_adapter(tmp_path, pool_tokenizer, data).token_data(device="cpu", workers=0)
    assert "labels.npy unreadable" in caplog.text and "encoding it again" in caplog.text
    assert again.labels.tolist() == expected.labels.tolist() and len(again) == 4
    assert np.load(cache / "labels.npy").dtype == np.int64


# ----------------------------------------------------------------------------- a run to sample, in milliseconds


def samplable_run(tmp_path: Path) -> Path:
    """A run directory of an untrained tiny model whose config decodes with the weightless test tokenizer."""
    from conftest import tiny_model
    from omegaconf import OmegaConf

    from djepa.cli.config import compose_config
    from djepa.engine.checkpoint import CheckpointManager

    run = tmp_path / "run"
    tok = tmp_path / "pool"
    tok.mkdir()
    (tok / "weights.txt").write_text("none")  # the tokenizer's identity for the export's hash
    head = {"_target_": "djepa.nn.heads.DiffusionHead", "sampling_steps": 2}
    model = tiny_model((4, 4), token_dim=4, num_classes=2, head=head)
    state = {"model_config": model.config, "modality": "image", "class_names": ["a", "b"]}
    CheckpointManager(run).save(1, {"ema": model.state_dict()}, state)
    config = compose_config([f"home={tmp_path / 'home'}", "model=tiny"])
    config.modality.adapter.tokenizer = {**POOL, "path": str(tok)}
    OmegaConf.save(config, run / "config.yaml")
    return run


def raise_on_save(code: int):
    def save(self, fp, *args, **kwargs):
        raise OSError(code, os.strerror(code), str(fp))

    return save


# ----------------------------------------------------------------------------- read-only and full disks


@pytest.mark.parametrize("code,why", [(errno.EROFS, "read-only"), (errno.ENOSPC, "the disk is full")])
def test_sample_to_an_unwritable_out_is_one_line_naming_it(tmp_path, capsys, monkeypatch, pool_tokenizer, code, why):
    from test_faults import one_line_error

    from djepa.cli import sample

    run = samplable_run(tmp_path)
    out = tmp_path / "out"
    monkeypatch.setattr(Image.Image, "save", raise_on_save(code))
    err = one_line_error(
        capsys, sample.main, [f"run_dir={run}", f"out={out}", "num_samples=1", "prompt_class=0", "sample.num_steps=2"]
    )
    assert err.startswith(f"error: cannot write {out}/a_000") and f"(out={out})" in err and why in err


def test_export_to_a_read_only_or_full_disk_is_one_line_and_leaves_nothing(
    tmp_path, capsys, monkeypatch, pool_tokenizer
):
    from test_faults import one_line_error

    from djepa.cli import export

    run = samplable_run(tmp_path)
    out = tmp_path / "exported"
    real_mkdir = Path.mkdir

    def read_only_mkdir(self, *args, **kwargs):
        if self == out:
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(self))
        return real_mkdir(self, *args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(Path, "mkdir", read_only_mkdir)
        err = one_line_error(capsys, export.main, [f"run_dir={run}", f"out={out}"])
    assert err == f"error: cannot write out={out}: the file system is read-only"
    assert not out.exists()

    def full(path, tensors):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr("djepa.io.atomic_write_safetensors", full)  # the weights, after the tokenizer's copy
    err = one_line_error(capsys, export.main, [f"run_dir={run}", f"out={out}"])
    assert f"cannot write {out}/model/model.safetensors (out={out}): the disk is full" in err
    assert not out.exists()  # the tokenizer copy and config.yaml written before it are gone too


def pool_train_args(tmp_path: Path, steps: int = 4) -> list[str]:
    """A train command over a 2-class folder of 8 small images with the weightless test tokenizer: seconds."""
    tok = tmp_path / "pool"
    if not tok.exists():
        tok.mkdir()
        (tok / "weights.txt").write_text("none")
        for name in ("a", "b"):
            write_class(tmp_path / "data", name, count=4)
    return [
        f"home={tmp_path / 'home'}",
        f"run_dir={tmp_path / 'run'}",
        f"modality.adapter.data_dir={tmp_path / 'data'}",
        "modality.adapter.image_size=16",
        "model=tiny",
        f"train.steps={steps}",
        "train.checkpoint_every=2",
        "train.preview_every=100",
        "train.batch_size=4",
        "sample.preview_per_class=0",
        "modality.adapter.tokenizer._target_=test_plugins.PoolTokenizer",
        "+modality.adapter.tokenizer.factor=4",
        f"modality.adapter.tokenizer.path={tok}",
    ]


def test_train_on_a_full_disk_keeps_its_last_checkpoint_and_says_how_to_resume(tmp_path, capsys, monkeypatch):
    from djepa.cli import train
    from djepa.engine import checkpoint

    run = tmp_path / "run"
    args = pool_train_args(tmp_path)
    real = checkpoint.atomic_write_safetensors

    def full_at_step_4(path, tensors):
        if ".staging_0000004" in str(path):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        real(path, tensors)

    monkeypatch.setattr(checkpoint, "atomic_write_safetensors", full_at_step_4)
    with builders.allowed_plugins(["test_plugins"]), pytest.raises(SystemExit) as exit_info:
        train.main(args)
    err = capsys.readouterr().err
    last = "error: " + err.rsplit("error: ", 1)[-1].strip()  # after the progress bars
    assert exit_info.value.code == 2 and "Traceback" not in err and len(last.splitlines()) == 1, err
    kept = run / "checkpoints" / "step_0000002"
    assert last.startswith(f"error: cannot write {run}/checkpoints/.staging_0000004/") and "the disk is full" in last
    assert f"the last valid checkpoint {kept} (step 2) is intact" in last and "run the same command to resume" in last
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step_0000002"]  # no half-written folder
    checkpoint.CheckpointManager.verify(kept)


# ----------------------------------------------------------------------------- damaged exports and tokenizers


@pytest.fixture
def exported(tmp_path, pool_tokenizer):
    from djepa.pipeline import Pipeline

    return Pipeline.from_pretrained(samplable_run(tmp_path), device="cpu").save_pretrained(tmp_path / "export")


PICKLE = pickle.dumps({"weights": [1, 2, 3]})


@pytest.mark.parametrize(
    "name,content",
    [
        ("model/model.safetensors", PICKLE),
        ("model_index.json", b"\x00garbage{"),
        ("model_index.json", b"[1, 2]"),
        ("model/config.json", b"not json"),
        ("config.yaml", b"{unclosed: [\n"),
    ],
)
def test_a_damaged_export_file_is_one_line_naming_it(exported, capsys, name, content):
    from test_faults import one_line_error

    from djepa.cli import sample
    from djepa.pipeline import Pipeline

    (exported / name).write_bytes(content)
    with pytest.raises(UsageError, match=rf"^{exported / name} is damaged or not what `export` writes: [^\n]*$"):
        Pipeline.from_pretrained(exported, device="cpu")
    err = one_line_error(capsys, sample.main, [f"run_dir={exported}", f"out={exported.parent / 'out'}"])
    assert str(exported / name) in err
    assert not (exported.parent / "out").exists()


@pytest.mark.parametrize("suffix", [".bin", ".ckpt", ".pt"])
def test_a_pickled_single_file_tokenizer_is_refused_without_reading_it(tmp_path, suffix, monkeypatch):
    path = tmp_path / f"vae{suffix}"
    path.write_bytes(PICKLE)
    monkeypatch.setattr(pickle, "loads", lambda *a, **k: pytest.fail("unpickled"))
    adapter = ImageAdapter({"path": str(path)}, [2, 2], str(tmp_path / "cache"))
    with pytest.raises(UsageError, match=rf"^modality.adapter.tokenizer.path={path}: a single-file tokenizer must be"):
        _ = adapter.tokenizer


def test_a_damaged_tokenizer_folder_is_one_line(tmp_path):
    folder = tmp_path / "vae"
    folder.mkdir()
    (folder / "config.json").write_text("{broken")
    adapter = ImageAdapter({"path": str(folder)}, [2, 2], str(tmp_path / "cache"))
    with pytest.raises(UsageError, match=rf"^modality.adapter.tokenizer.path={folder} cannot be loaded: [^\n]*$"):
        _ = adapter.tokenizer


# ----------------------------------------------------------------------------- serve


def test_serve_ports_out_of_range_zero_or_in_use_are_one_line():
    from djepa.cli.serve import check_port

    with pytest.raises(UsageError, match="^port=99999 is out of range: choose one from 1 to 65535"):
        check_port("99999")
    with pytest.raises(UsageError, match="^port=0 is out of range"):
        check_port(0)
    with pytest.raises(UsageError, match="^port must be a number, got 'http'"):
        check_port("http")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(UsageError, match=f"^port={port} is in use on 127.0.0.1: stop what listens there"):
            check_port(str(port))
    assert check_port(str(port)) == port  # free again


def test_serve_main_refuses_a_bad_port_before_loading_anything(tmp_path, capsys):
    from test_faults import one_line_error

    from djepa.cli import serve

    err = one_line_error(capsys, serve.main, [f"run_dir={tmp_path / 'missing'}", "port=99999"])
    assert err == "error: port=99999 must be a whole number >= 1 and <= 65535"


def test_serve_request_files_are_bounded_and_removed_at_close(monkeypatch, tmp_path):
    from djepa.cli.serve import RequestOutputs

    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr("tempfile.tempdir", None)
    outputs = RequestOutputs(keep=3)
    assert outputs.root.parent == tmp_path and outputs.root.name.startswith("djepa-serve-")
    for _ in range(10):
        out = outputs.next()
        out.mkdir()
        (out / "grid.png").write_bytes(b"x")
    assert sorted(int(p.name) for p in outputs.root.iterdir()) == [8, 9, 10]
    outputs.close()
    assert not outputs.root.exists()


# ----------------------------------------------------------------------------- run state


def test_a_resume_past_a_corrupt_newest_checkpoint_keeps_the_valid_ones(tmp_path, capsys, pool_tokenizer):
    """One flipped byte in step 4's weights, then `train train.steps=3 train.keep_checkpoints=1`: the resumed run
    starts from step 2, sets step 4 aside, writes step 3 and keeps it; sampling finds it."""
    from djepa.cli import sample, train

    train.main(pool_train_args(tmp_path))
    checkpoints = tmp_path / "run" / "checkpoints"
    weights = checkpoints / "step_0000004" / "ema.safetensors"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF
    weights.write_bytes(bytes(data))
    capsys.readouterr()
    with pytest.warns(UserWarning, match="skipping corrupt checkpoint"):
        train.main(pool_train_args(tmp_path, steps=3) + ["train.keep_checkpoints=1"])
    assert "step_0000004 is corrupt: moved aside to" in capsys.readouterr().out
    assert sorted(p.name for p in checkpoints.iterdir()) == ["step_0000003", "step_0000004.invalid"]
    assert (checkpoints / "step_0000004.invalid" / "ema.safetensors").read_bytes() == bytes(data)  # kept as found
    out = tmp_path / "samples"
    sample.main([f"run_dir={tmp_path / 'run'}", f"out={out}", "num_samples=1", "prompt_class=a", "sample.num_steps=2"])
    assert (out / "a_000.png").is_file()


def test_a_safetensors_write_error_on_a_full_disk_is_recognised():
    from safetensors import SafetensorError

    from djepa.errors import disk_problem, writing

    err = SafetensorError('Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: "No space" })')
    assert disk_problem(err) == ("the disk is full", None)
    assert disk_problem(SafetensorError("Error while deserializing header: HeaderTooLarge")) is None
    assert disk_problem(OSError(errno.EIO, "I/O error")) is None  # not one the user can fix by a folder or space
    with pytest.raises(UsageError, match="^cannot write out=x: the disk is full$"), writing("out", "x"):
        raise err
