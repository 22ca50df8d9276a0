"""A run directory or an export someone sent runs no code of its choosing: every `_target_` it names resolves
through djepa.builders only to a class of the expected base from djepa or from a module the user allow-lists,
and anything else is a one-line refusal naming the key, before any module is imported.

Each payload would leave a marker file if it ran; the tests assert the refusal and that no marker exists.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from conftest import tiny_model
from omegaconf import OmegaConf
from test_faults import one_line_error

from djepa import builders
from djepa.cli import export, sample, serve, train
from djepa.cli.config import compose_config
from djepa.engine.checkpoint import CheckpointManager
from djepa.errors import UsageError
from djepa.pipeline import Pipeline

HEAD = {"_target_": "djepa.nn.heads.DiffusionHead", "sampling_steps": 2}


def popen(marker: Path) -> dict:
    """A command run by instantiating subprocess.Popen."""
    return {"_target_": "subprocess.Popen", "args": f"touch {marker}", "shell": True}


def writer(marker: Path) -> dict:
    """A function inside djepa that writes a file when called: djepa's own packages, but not a class."""
    return {"_target_": "djepa.io.atomic_write_json", "path": str(marker), "data": {}}


def importer(tmp_path: Path, marker: Path, monkeypatch) -> dict:
    """A module beside the run (on sys.path, as the working directory is) that writes the marker when imported."""
    (tmp_path / "evil_plugin.py").write_text(f"open({str(marker)!r}, 'w').close()\nclass Adapter:\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    return {"_target_": "evil_plugin.Adapter"}


def assert_no_marker(marker: Path) -> None:
    time.sleep(0.2)  # a Popen payload would run in the background
    assert not marker.exists(), "the payload ran"


def base_config(tmp_path: Path):
    return compose_config([f"home={tmp_path / 'home'}", "model=tiny"])


def fake_run(tmp_path: Path, adapter: dict | None = None, head: dict | None = None) -> Path:
    """A run directory with a tiny model's checkpoint and a config.yaml whose adapter (or the checkpoint's head)
    is replaced by a payload; nothing else in it is needed before the refusal."""
    run = tmp_path / "run"
    model = tiny_model((2, 2), token_dim=4, num_classes=3, head=HEAD)
    model_config = dict(model.config)
    if head is not None:
        model_config["head_config"] = head
    state = {"model_config": model_config, "modality": "image", "class_names": ["a", "b", "c"]}
    CheckpointManager(run).save(2, {"ema": model.state_dict()}, state)
    config = base_config(tmp_path)
    if adapter is not None:
        config.modality.adapter = adapter
    OmegaConf.save(config, run / "config.yaml")
    return run


def fake_export(tmp_path: Path, adapter: dict) -> Path:
    """An export folder (the layout `export` writes) whose config.yaml's adapter is a payload."""
    out = tmp_path / "export"
    model = tiny_model((2, 2), token_dim=4, num_classes=3, head=HEAD)
    model.save_pretrained(out / "model")
    config = base_config(tmp_path)
    config.modality.adapter = adapter
    OmegaConf.save(config, out / "config.yaml")
    index = {"modality": "image", "class_names": ["a", "b", "c"], "tokenizer": {"path": "tokenizer", "sha256": "0"}}
    (out / "model_index.json").write_text(json.dumps(index))
    return out


PAYLOADS = {"popen": popen, "djepa_function": writer}


@pytest.mark.parametrize("payload", sorted(PAYLOADS))
def test_sample_refuses_a_run_whose_adapter_target_is_not_an_adapter(tmp_path, capsys, payload):
    marker = tmp_path / "MARKER"
    run = fake_run(tmp_path, adapter=PAYLOADS[payload](marker))
    out = tmp_path / "out"
    err = one_line_error(capsys, sample.main, [f"run_dir={run}", f"out={out}", f"home={tmp_path / 'home'}"])
    assert "modality.adapter._target_=" in err and ("outside djepa" in err or "is not a ModalityAdapter" in err)
    assert_no_marker(marker)
    assert not out.exists()


def test_a_module_beside_the_run_is_never_imported(tmp_path, capsys, monkeypatch):
    marker = tmp_path / "MARKER"
    run = fake_run(tmp_path, adapter=importer(tmp_path, marker, monkeypatch))
    err = one_line_error(capsys, sample.main, [f"run_dir={run}", f"out={tmp_path / 'out'}"])
    assert "modality.adapter._target_='evil_plugin.Adapter' is outside djepa" in err and "plugins=[evil_plugin]" in err
    assert_no_marker(marker)


def test_a_checkpoint_whose_head_target_is_a_payload_is_refused(tmp_path):
    marker = tmp_path / "MARKER"
    run = fake_run(tmp_path, head=popen(marker))
    with pytest.raises(UsageError, match=r"^loss.head._target_='subprocess.Popen' is outside djepa[^\n]*$"):
        Pipeline.from_pretrained(run, device="cpu")
    assert_no_marker(marker)


def test_serve_loading_refuses_the_payload(tmp_path):
    marker = tmp_path / "MARKER"
    run = fake_run(tmp_path, adapter=popen(marker))
    with pytest.raises(UsageError, match=r"^modality.adapter._target_='subprocess.Popen' is outside djepa[^\n]*$"):
        serve.load_pipeline(OmegaConf.create({"run_dir": str(run), "device": "cpu", "checkpoint": None, "plugins": []}))
    assert_no_marker(marker)


def test_export_refuses_the_payload_and_writes_nothing(tmp_path, capsys):
    marker = tmp_path / "MARKER"
    run = fake_run(tmp_path, adapter=popen(marker))
    out = tmp_path / "exported"
    err = one_line_error(capsys, export.main, [f"run_dir={run}", f"out={out}"])
    assert "modality.adapter._target_='subprocess.Popen' is outside djepa" in err
    assert_no_marker(marker)
    assert not out.exists()


@pytest.mark.parametrize("payload", sorted(PAYLOADS))
def test_an_export_folder_with_a_payload_is_refused_by_the_pipeline_and_sample(tmp_path, capsys, payload):
    marker = tmp_path / "MARKER"
    folder = fake_export(tmp_path, PAYLOADS[payload](marker))
    with pytest.raises(UsageError, match=r"^modality.adapter._target_="):
        Pipeline.from_pretrained(folder, device="cpu")
    err = one_line_error(capsys, sample.main, [f"run_dir={folder}", f"out={tmp_path / 'out'}"])
    assert "modality.adapter._target_=" in err
    assert_no_marker(marker)


def test_train_resume_refuses_a_run_whose_config_names_a_payload(tmp_path, capsys):
    marker = tmp_path / "MARKER"
    run = fake_run(tmp_path, adapter=popen(marker))
    before = (run / "config.yaml").read_text()
    err = one_line_error(capsys, train.main, [f"run_dir={run}", f"home={tmp_path / 'home'}", "model=tiny"])
    assert "modality.adapter._target_ subprocess.Popen" in err
    assert_no_marker(marker)
    assert (run / "config.yaml").read_text() == before  # nothing rewritten
    assert not (tmp_path / "home").exists()  # no tokenizer trained, no cache written


def test_an_allow_listed_plugin_module_is_accepted_and_checked_for_its_base(tmp_path, monkeypatch):
    package = tmp_path / "mypkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "parts.py").write_text(
        "from djepa.nn.heads import FlowHead\nclass MyHead(FlowHead):\n    pass\nclass NotAHead:\n    pass\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    config = {"_target_": "mypkg.parts.MyHead"}
    with pytest.raises(UsageError, match="outside djepa and the allow-listed plugin modules \\(none\\)"):
        builders.resolve(config, "loss.head", builders.HEAD)
    with builders.allowed_plugins(["mypkg.parts"]):
        assert builders.resolve(config, "loss.head", builders.HEAD).__name__ == "MyHead"
        with pytest.raises(UsageError, match="'mypkg.parts.NotAHead' is not a TokenHead"):
            builders.resolve({"_target_": "mypkg.parts.NotAHead"}, "loss.head", builders.HEAD)
    assert builders.plugin_modules() == ()  # the block's allow-list ends with it
    builders.set_plugins("mypkg")  # the command line's, as `plugins=[mypkg]` sets it
    try:
        assert builders.resolve(config, "loss.head", builders.HEAD).__name__ == "MyHead"
    finally:
        builders.set_plugins([])
    # a look-alike prefix is not the listed module
    with builders.allowed_plugins(["mypkg.part"]), pytest.raises(UsageError, match="outside djepa"):
        builders.resolve(config, "loss.head", builders.HEAD)


def test_malformed_targets_and_plugin_lists_are_one_line_errors():
    for bad in ("os", "a..b", "djepa.__builtins__.eval", 3):
        with pytest.raises(UsageError, match="is not a dotted class name"):
            builders.resolve({"_target_": bad}, "modality.adapter", builders.ADAPTER)
    with pytest.raises(UsageError, match="plugins: 'my-pkg' is not a module name"):
        builders.plugin_list("my-pkg")
    assert builders.plugin_list("a.b, c") == ["a.b", "c"] and builders.plugin_list(None) == []


def test_the_adapter_kind_asks_for_what_the_core_calls():
    """builders.ADAPTER's members (what a plugin adapter that does not subclass ModalityAdapter must define) are
    methods of the Adapter protocol, and the built-in adapters pass the check."""
    import inspect

    from djepa.engine.adapter import Adapter
    from djepa.modalities.audio import AudioAdapter

    methods = {name for name, value in vars(Adapter).items() if inspect.isfunction(value)}
    assert set(builders.ADAPTER.members) <= methods
    target = {"_target_": "djepa.modalities.audio.AudioAdapter"}
    assert builders.resolve(target, "modality.adapter", builders.ADAPTER) is AudioAdapter


def test_train_resume_refuses_a_checkpoint_whose_head_names_a_payload(tmp_path, capsys):
    """The checkpoint's own model config (state.json, which its checksums do not cover) names the head: a resumed
    run compares it with the model it builds and never builds from it."""
    from test_bad_inputs import pool_train_args

    marker = tmp_path / "MARKER"
    with builders.allowed_plugins(["test_plugins"]):
        train.main(pool_train_args(tmp_path, steps=2))
        state_path = tmp_path / "run" / "checkpoints" / "step_0000002" / "state.json"
        state = json.loads(state_path.read_text())
        state["model_config"]["head_config"] = popen(marker)
        state_path.write_text(json.dumps(state))
        capsys.readouterr()
        err = one_line_error(capsys, train.main, pool_train_args(tmp_path, steps=4))
    assert "holds a different model at step 2" in err and "subprocess.Popen" in err
    assert_no_marker(marker)
    with pytest.raises(UsageError, match="^loss.head._target_='subprocess.Popen' is outside djepa"):
        Pipeline.from_pretrained(tmp_path / "run", device="cpu")
    assert_no_marker(marker)
