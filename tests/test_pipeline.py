"""The Python API, seeded sampling, the override check, exports and --help, on a tiny image run."""

import json
import re
import runpy
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import IMAGE_RUN
from omegaconf import OmegaConf
from PIL import Image

from djepa import Pipeline
from djepa.cli import sample, scripts, train
from djepa.cli.config import compose_config
from djepa.cli.scripts import dispatch, export
from djepa.errors import UsageError
from djepa.pipeline import apply_overrides

README = Path(__file__).resolve().parents[1] / "README.md"


def file_bytes(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir()) if p.is_file()}


@pytest.fixture(scope="module")
def pipe(image_run):
    return Pipeline.from_pretrained(image_run[1], device="cpu")


@pytest.mark.slow
def test_pipeline_gives_pil_images_for_ids_and_names(pipe):
    out = pipe(class_labels=[3, "7"], num_samples=2, seed=0)
    assert out.labels == [3, 3, 7, 7] and out.names == ["3", "3", "7", "7"]
    assert len(out.images) == 4
    assert all(isinstance(im, Image.Image) and im.size == (32, 32) and im.mode == "L" for im in out.images)
    with pytest.raises(AttributeError, match="use .images"):
        _ = out.videos
    with pytest.raises(UsageError, match="class_labels=12 is out of range"):
        pipe(class_labels=[12])
    with pytest.raises(UsageError, match="not a class"):
        pipe(class_labels=["twelve"])


@pytest.mark.slow
def test_pipeline_reads_sampling_defaults_from_the_run(pipe):
    # The run was trained with num_steps=2 and loss.head.sampling_steps=3: both come back without being asked.
    assert pipe.defaults.num_steps == 2
    assert pipe.model.head.sampling_steps == 3
    assert pipe.settings(guidance_scale=1.5).guidance_scale == 1.5
    assert pipe.settings().guidance_scale == pipe.defaults.guidance_scale


@pytest.mark.slow
def test_same_seed_same_bytes_and_the_global_rng_is_left_alone(pipe, tmp_path):
    before = torch.get_rng_state()
    a, b, c = (pipe(class_labels=[1, 2], num_samples=2, seed=s) for s in (5, 5, 6))
    assert torch.equal(torch.get_rng_state(), before)
    a.save(tmp_path / "a")
    b.save(tmp_path / "b")
    c.save(tmp_path / "c")
    assert file_bytes(tmp_path / "a") == file_bytes(tmp_path / "b")
    assert file_bytes(tmp_path / "a") != file_bytes(tmp_path / "c")
    assert sorted(file_bytes(tmp_path / "a")) == ["1_000.png", "1_001.png", "2_002.png", "2_003.png", "grid.png"]


@pytest.mark.slow
def test_sample_command_with_a_seed_repeats_itself_and_matches_the_api(pipe, image_run, tmp_path):
    common, run_dir = image_run
    for name in ("x", "y"):
        sample.main(
            common + [f"run_dir={run_dir}", "prompt_class=4", "num_samples=3", "seed=11", f"out={tmp_path / name}"]
        )
    assert file_bytes(tmp_path / "x") == file_bytes(tmp_path / "y")
    pipe(class_labels=[4], num_samples=3, seed=11).save(tmp_path / "api")
    assert file_bytes(tmp_path / "x") == file_bytes(tmp_path / "api")


@pytest.mark.parametrize(
    "override,key",
    [
        ("modality.adapter.patch_size=[1,1]", "modality.adapter.patch_size=[1,1]"),
        ("modality.adapter.channels=3", "modality.adapter.channels=3"),
        ("modality.adapter.image_size=64", "modality.adapter.image_size=64"),
        ("model.encoder_depth=7", "model.encoder_depth=7"),
        ("modality=audio", "modality.name=audio"),
        ("loss=flow", "loss.head._target_=djepa.nn.heads.FlowHead"),
    ],
)
@pytest.mark.slow
def test_overrides_that_contradict_training_are_one_line_errors(image_run, override, key, capsys):
    common, run_dir = image_run
    with pytest.raises(SystemExit) as exit_info:
        sample.main(common + [f"run_dir={run_dir}", override])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert key in err and "contradicts how the model was trained" in err


@pytest.mark.slow
def test_sampling_only_overrides_are_allowed(image_run, tmp_path):
    common, run_dir = image_run
    written = sample.run(
        sample.compose_config(
            common + [f"run_dir={run_dir}", "prompt_class=0", "num_samples=1", f"out={tmp_path}", "model=tiny"]
        ),
        ["model=tiny", "loss.head.sampling_steps=2", "modality.adapter.patch_size=[2,2]"],
    )
    assert [p.name for p in written] == ["0_000.png"]


@pytest.mark.slow
def test_a_modality_group_choice_is_compared_by_name_only(image_run, tmp_path):
    # A run trained with a non-default image size: `modality=image` (whose preset says 32) is no contradiction.
    _, run_dir = image_run
    config = OmegaConf.load(run_dir / "config.yaml")
    config.modality.adapter.image_size = 48
    with pytest.raises(UsageError, match="image_size=32 contradicts"):
        apply_overrides(config, {"modality.adapter.image_size": 32}, run_dir)
    cli = compose_config(["modality=image"])
    assert apply_overrides(config, {"modality": cli.modality}, run_dir).modality.adapter.image_size == 48
    with pytest.raises(UsageError, match="modality.name=video contradicts"):
        apply_overrides(config, {"modality": compose_config(["modality=video"]).modality}, run_dir)


@pytest.mark.slow
def test_export_is_self_describing_and_samples_like_the_run(pipe, image_run, tmp_path):
    common, run_dir = image_run
    out = tmp_path / "export"
    export([f"run_dir={run_dir}", f"out={out}"])
    index = json.loads((out / "model_index.json").read_text())
    assert index["modality"] == "image" and index["class_names"] == [str(d) for d in range(10)]
    assert index["sampling"]["num_steps"] == 2 and index["token_grid"] == [4, 4] and index["step"] == 12
    assert (out / "model" / "config.json").is_file() and (out / "model" / "model.safetensors").is_file()
    assert (out / "tokenizer" / "config.json").is_file() and len(index["tokenizer"]["sha256"]) == 64
    card = (out / "README.md").read_text()
    assert "training steps | 12" in card and "Pipeline.from_pretrained" in card

    # The export samples exactly as the run, through the API and through `sample`.
    pipe(class_labels=[2], num_samples=2, seed=3).save(tmp_path / "run")
    Pipeline.from_pretrained(out, device="cpu")(class_labels=[2], num_samples=2, seed=3).save(tmp_path / "exp")
    sample.main(
        [f"run_dir={out}", "prompt_class=2", "num_samples=2", "seed=3", "device=cpu", f"out={tmp_path / 'cli'}"]
    )
    assert file_bytes(tmp_path / "run") == file_bytes(tmp_path / "exp") == file_bytes(tmp_path / "cli")

    # A tokenizer that is not the one exported with is refused.
    weights = next((out / "tokenizer").glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes()[:-8] + b"\0" * 8)
    with pytest.raises(UsageError, match="is not the one this model was exported with"):
        Pipeline.from_pretrained(out, device="cpu")


@pytest.mark.slow
def test_export_refuses_a_non_empty_folder_and_unknown_keys(image_run, tmp_path, capsys):
    _, run_dir = image_run
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    for args, message in (
        ([f"run_dir={run_dir}", f"out={tmp_path / 'full'}"], "exists and is not empty"),
        ([f"run_dir={run_dir}", f"out={tmp_path / 'o'}", "colour=red"], "colour: unknown key"),
        ([f"run_dir={run_dir}"], "out= is required"),
    ):
        with pytest.raises(SystemExit) as exit_info:
            export(args)
        assert exit_info.value.code == 2 and message in capsys.readouterr().err


@pytest.mark.slow
def test_readme_image_notebook_example_runs(image_run, tmp_path, monkeypatch):
    text = README.read_text()
    block = re.search(r"<!-- notebook: image -->\s*```python\n(.*?)```", text, re.S)
    assert block, "README lacks the image notebook example"
    code = block.group(1)
    assert len(code.strip().splitlines()) <= 6
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(code.replace('"runs/image"', repr(str(image_run[1]))), namespace)
    assert isinstance(namespace["out"].images[0], Image.Image)
    assert (tmp_path / "samples" / "grid.png").is_file()


@pytest.mark.parametrize("command", ["train", "sample", "train_tokenizer", "benchmark"])
def test_help_prints_usage_groups_and_keys_and_exits_zero(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        dispatch(command, ["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert text.startswith(f"usage: {command}") and "model=" in text and "modality=" in text
    assert "--cfg job" in text


def test_cfg_job_prints_the_composed_config(capsys):
    with pytest.raises(SystemExit) as exit_info:
        dispatch("sample", ["--cfg", "job", "modality=audio", "num_samples=3"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert "num_samples: 3" in text and "name: audio" in text


@pytest.mark.slow
def test_console_scripts_answer_help():
    scripts = Path(sys.executable).parent
    for name in ("train", "sample", "export"):
        if not (scripts / name).exists():
            pytest.skip(f"console script {name} not installed (pip install -e .)")
        proc = subprocess.run([str(scripts / name), "--help"], capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.startswith(f"usage: {name}")


def help_text(function, capsys) -> str:
    with pytest.raises(SystemExit) as exit_info:
        function()
    assert exit_info.value.code == 0
    return capsys.readouterr().out


@pytest.mark.slow
def test_a_run_with_sharded_checkpoints_samples_and_exports_as_the_same_run_in_full(pipe, image_run, tmp_path):
    # The same training with train.checkpoint_format=sharded (what FSDP runs write): sample, the pipeline and
    # export read its consolidated EMA and give the very files the gathered-checkpoint run gives.
    common, run_dir = image_run
    precision = OmegaConf.load(run_dir / "config.yaml").train.precision  # auto may decide otherwise under load
    sharded = tmp_path / "sharded"
    overrides = [f"run_dir={sharded}", *IMAGE_RUN, f"train.precision={precision}", "train.checkpoint_format=sharded"]
    train.run(train.compose_config(common + overrides))
    assert (sharded / "checkpoints" / "step_0000012" / "dcp" / ".metadata").is_file()
    export([f"run_dir={sharded}", f"out={tmp_path / 'export'}"])

    pipe(class_labels=[2], num_samples=2, seed=3).save(tmp_path / "full")
    Pipeline.from_pretrained(sharded, device="cpu")(class_labels=[2], num_samples=2, seed=3).save(tmp_path / "api")
    for name, source in (("cli", sharded), ("exported", tmp_path / "export")):
        args = [f"run_dir={source}", "prompt_class=2", "num_samples=2", "seed=3", "device=cpu"]
        sample.main([*args, f"out={tmp_path / name}"])
    outputs = [file_bytes(tmp_path / name) for name in ("full", "api", "cli", "exported")]
    assert all(out == outputs[0] for out in outputs)


@pytest.mark.parametrize(
    "module, command",
    [
        ("djepa.cli.train", "train"),
        ("djepa.cli.sample", "sample"),
        ("djepa.cli.train_tokenizer", "train_tokenizer"),
        ("djepa.cli.export", "export"),
        ("djepa.cli.convert_tokenizer", "convert_tokenizer"),
        ("djepa.cli.convert_checkpoint", "convert_checkpoint"),
        ("djepa.benchmarks.experiments.run", "benchmark"),
    ],
)
@pytest.mark.filterwarnings("ignore:.*found in sys.modules:RuntimeWarning")  # runpy, when already imported
def test_python_m_prints_the_console_scripts_help(module, command, monkeypatch, capsys):
    expected = help_text(lambda: getattr(scripts, command)(["--help"]), capsys)
    monkeypatch.setattr(sys, "argv", [module, "--help"])  # what `python -m module --help` runs
    assert help_text(lambda: runpy.run_module(module, run_name="__main__", alter_sys=True), capsys) == expected


@pytest.mark.slow
def test_python_m_train_help_in_a_fresh_interpreter():
    proc = subprocess.run([sys.executable, "-m", "djepa.cli.train", "--help"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == scripts.usage("train") + "\n"


@pytest.mark.slow
def test_an_older_checkpoint_loads_with_its_runs_config(image_run):
    _, run_dir = image_run
    pipe = Pipeline.from_pretrained(run_dir, device="cpu", checkpoint=run_dir / "checkpoints" / "step_0000006")
    assert pipe.step == 6 and pipe.defaults.num_steps == 2
    assert len(pipe(class_labels=[0], seed=0).images) == 1


@pytest.mark.slow
def test_a_tokenizer_that_cannot_load_is_one_line_before_any_sampling(image_run, tmp_path):
    import shutil

    from djepa.errors import UsageError
    from djepa.pipeline import Pipeline

    common, run_dir = image_run
    home = Path(common[0].split("=", 1)[1])
    bad = tmp_path / "bad_tokenizer"
    shutil.copytree(home / "tokenizers" / "image", bad)
    for weights in bad.glob("*.safetensors"):
        weights.write_bytes(b"not a safetensors file")  # e.g. a pickle renamed .safetensors
    # The run recorded its tokenizer's sha256, so the swap is caught by the hash, before loading or sampling.
    with pytest.raises(UsageError, match="is not the one this model was|cannot be loaded") as info:
        Pipeline.from_pretrained(run_dir, device="cpu", overrides={"modality.adapter.tokenizer.path": str(bad)})
    assert "\n" not in str(info.value)


@pytest.mark.slow
def test_the_pipelines_docstring_examples_run(image_run, tmp_path, monkeypatch):
    """The Examples blocks of `Pipeline.from_pretrained` and `Pipeline.__call__` run as written (on the tiny run
    in place of runs/image)."""
    import doctest

    from djepa.pipeline import Pipeline

    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "image").symlink_to(image_run[1])
    globs: dict = {}
    finder, runner = doctest.DocTestFinder(), doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    for function in (Pipeline.from_pretrained, Pipeline.__call__):
        (test,) = finder.find(function, globs=globs)
        assert test.examples, f"{function.__qualname__} has no Examples"
        runner.run(test, clear_globs=False)
        globs.update(test.globs)
    assert runner.summarize(verbose=False).failed == 0
