"""`train init_from=PATH`: a new run from another run's weights (EMA by default), the class table re-initialised
for other classes, positional tables interpolated for another grid, and one-line refusals of another tokenizer,
modality, architecture or a file that needs pickle. An interrupted fine-tune resumes; it never re-initialises."""

import copy
import shutil

import pytest
import torch
from conftest import IMAGE_RUN
from omegaconf import OmegaConf
from test_faults import one_line_error
from test_unlabelled import write_digits

from djepa.cli import train
from djepa.cli.init_from import initialise, open_source, read_source
from djepa.engine.checkpoint import CheckpointManager
from djepa.errors import UsageError
from djepa.nn.model import DJEPA
from djepa.pipeline import Pipeline

pytestmark = pytest.mark.slow  # every test reads the tiny trained image run

# Two steps at a negligible learning rate: the fine-tune's weights stay its start, so they can be compared.
QUICK = ["train.steps=2", "train.checkpoint_every=1", "train.lr=1e-12", "sample.preview_per_class=0"]
FINE_TUNE = [o for o in IMAGE_RUN if o.split("=")[0] not in {k.split("=")[0] for k in QUICK}] + QUICK


def newest(run_dir, group="ema"):
    directory, state = CheckpointManager(run_dir).latest_valid()
    return CheckpointManager.load_tensors(directory, group), state


def assert_weights_equal(got, want, skip=()):
    for key, value in want.items():
        if key not in skip:
            torch.testing.assert_close(got[key], value, atol=1e-6, rtol=0, msg=key)


def test_a_fine_tune_starts_from_the_source_ema_and_resumes_after_a_kill(image_run, tmp_path, capsys):
    common, source_run = image_run
    source = shutil.copytree(source_run, tmp_path / "source")  # a copy, removed below
    source_ema, source_state = newest(source)
    source_online, _ = newest(source, "model")
    assert not torch.equal(source_online["token_proj.weight"], source_ema["token_proj.weight"])
    run_dir = tmp_path / "fine_tune"
    command = train.compose_config(common + [f"run_dir={run_dir}", f"init_from={source}", *FINE_TUNE])
    capsys.readouterr()
    train.run(copy.deepcopy(command))
    out = capsys.readouterr().out
    assert f"init_from: a new run from {source}'s EMA weights at step {source_state['step']}" in out
    assert "re-initialised" not in out  # the same classes: everything loaded
    ema, state = newest(run_dir)
    online, _ = newest(run_dir, "model")
    assert state["step"] == 2 and sorted(p.name for p in (run_dir / "checkpoints").iterdir())[0] == "step_0000001"
    assert_weights_equal(ema, source_ema)
    assert_weights_equal(online, source_ema)  # the online weights start from the EMA too
    # Killed after step 1's checkpoint: the same command resumes the fine-tune, never reads the source again.
    shutil.rmtree(run_dir / "checkpoints" / "step_0000002")
    shutil.rmtree(source)
    train.run(copy.deepcopy(command))
    out = capsys.readouterr().out
    assert "holds a checkpoint at step 1: resuming it" in out and "resumed from step 1" in out
    assert "init_from: a new run" not in out
    assert newest(run_dir)[1]["step"] == 2


def test_new_classes_reinitialise_the_class_table_and_keep_the_rest(image_run, tmp_path, capsys):
    common, source_run = image_run
    data = tmp_path / "data"
    for name in ("apples", "pears"):
        write_digits(data / name, 6)
    run_dir = tmp_path / "fine_tune"
    # A folder's default tokenizer is its own (another path): the source's is named, as a refusal would ask.
    tokenizer = f"{common[0].split('=', 1)[1]}/tokenizers/image"
    new_data = [f"init_from={source_run}", f"modality.adapter.data_dir={data}"]
    new_data.append(f"modality.adapter.tokenizer.path={tokenizer}")
    capsys.readouterr()
    train.run(train.compose_config(common + [f"run_dir={run_dir}", *new_data, *FINE_TUNE, "train.steps=1"]))
    lines = [line for line in capsys.readouterr().out.splitlines() if "re-initialised" in line]
    assert len(lines) == 1 and "2 classes (apples, pears)" in lines[0] and "10 classes (0, 1, 2, 3, …)" in lines[0]
    ema, state = newest(run_dir)
    source_ema, _ = newest(source_run)
    assert ema["class_emb.weight"].shape == (2, source_ema["class_emb.weight"].shape[1])
    assert state["class_names"] == ["apples", "pears"]
    assert_weights_equal(ema, source_ema, skip={"class_emb.weight"})  # the fake (no-class) embedding included


def test_an_unlabelled_fine_tune_gets_a_one_row_table_and_sources_read_alike(image_run, tmp_path):
    _, source_run = image_run
    from_run = read_source(source_run)
    directory, _ = CheckpointManager(source_run).latest_valid()
    export = Pipeline.from_pretrained(source_run, device="cpu").save_pretrained(tmp_path / "export")
    for path in (directory, directory / "ema.safetensors", export, export / "model" / "model.safetensors"):
        other = read_source(path)
        assert other.tokenizer_sha256 == from_run.tokenizer_sha256 and other.class_names == from_run.class_names
        assert_weights_equal(other.weights, from_run.weights)
    assert read_source(source_run, "online").weights.keys() == from_run.weights.keys()
    with pytest.raises(UsageError, match="holds only the EMA weights"):
        read_source(export, "online")
    model = DJEPA(**{**from_run.model_config, "num_classes": 1})
    (note,) = initialise(model, from_run, ["unconditional"])
    assert "1 classes (unconditional)" in note and model.class_emb.weight.shape[0] == 1
    assert_weights_equal(model.state_dict(), from_run.weights, skip={"class_emb.weight"})


def test_another_grid_interpolates_positional_tables_another_rank_or_width_is_refused(image_run):
    source = read_source(image_run[1])
    model = DJEPA(**{**source.model_config, "grid": [6, 3]})
    (note,) = initialise(model, source, source.class_names)
    assert "token grid (4, 4) is (6, 3) here" in note and "interpolated" in note
    table, old = model.encoder_pos.tables[0].detach(), source.weights["encoder_pos.tables.0"]
    assert table.shape[0] == 6 and torch.allclose(table[[0, -1]], old[[0, -1]])  # the ends stay where they were
    with pytest.raises(UsageError, match="another rank"):
        initialise(DJEPA(**{**source.model_config, "grid": [2, 2, 2]}), source, source.class_names)
    with pytest.raises(UsageError, match=r"model\.encoder_depth is 1 in the source and 2 in this run"):
        initialise(DJEPA(**{**source.model_config, "encoder_depth": 2}), source, source.class_names)


class NotATensor:
    pass


def test_weights_files_load_without_pickle_or_are_refused(image_run, tmp_path):
    source = read_source(image_run[1])
    plain = tmp_path / "weights.pt"
    torch.save({"model": source.weights}, plain)
    loaded = read_source(plain)
    assert loaded.tokenizer_sha256 is None and loaded.which == "file"
    model = DJEPA(**source.model_config)
    assert initialise(model, loaded, source.class_names) == []  # shapes agree: the class table too
    assert_weights_equal(model.state_dict(), source.weights)
    pickled = tmp_path / "pickled.pth"
    torch.save({"model": source.weights, "extra": NotATensor()}, pickled)
    with pytest.raises(UsageError, match="does not load as plain tensors without pickle") as err:
        read_source(pickled)
    assert len(str(err.value).splitlines()) == 1
    with pytest.raises(UsageError, match="lacks encoder.blocks"):
        initialise(DJEPA(**{**source.model_config, "encoder_depth": 2}), loaded, source.class_names)


def test_another_tokenizer_or_modality_is_refused_in_one_line_and_writes_nothing(image_run, tmp_path, capsys):
    common, source_run = image_run
    home = common[0].split("=", 1)[1]
    tokenizer = shutil.copytree(f"{home}/tokenizers/image", tmp_path / "tokenizer")
    (tokenizer / "config.json").write_text((tokenizer / "config.json").read_text() + "\n")
    base = common + [f"init_from={source_run}", *FINE_TUNE]
    err = one_line_error(
        capsys, train.main, base + [f"run_dir={tmp_path / 'a'}", f"modality.adapter.tokenizer.path={tokenizer}"]
    )
    assert f"{home}/tokenizers/image (sha256" in err and f"this run's is {tokenizer} (sha256" in err
    err = one_line_error(capsys, train.main, base + [f"run_dir={tmp_path / 'c'}", "modality=audio"])
    assert "modality=image model, not audio" in err
    missing = OmegaConf.create(
        {"init_from": str(source_run), "modality": {"name": "image", "adapter": {"tokenizer": {"path": "/no/tok"}}}}
    )
    with pytest.raises(UsageError, match=rf"/no/tok does not exist: .*\(modality.adapter.tokenizer.path={home}/tok"):
        open_source(missing)
    for name in "ac":
        assert not (tmp_path / name / "config.yaml").exists() and not (tmp_path / name / "checkpoints").exists()
