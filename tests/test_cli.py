"""End to end through the console entry points, on the embedded digits with tiny sizes."""

import json
import subprocess
import sys

import pytest
from PIL import Image

from djepa.cli import sample, train

pytestmark = pytest.mark.slow  # the commands end to end on a tiny trained run


@pytest.fixture(scope="module")
def trained_run(image_run):
    return image_run


def test_train_writes_config_metrics_checkpoints_and_previews(trained_run):
    _, run_dir = trained_run
    assert (run_dir / "config.yaml").is_file()
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["step"] == 12 and all(r["loss"] > 0 for r in rows)
    steps = sorted(p.name for p in (run_dir / "checkpoints").iterdir())
    assert steps == ["step_0000006", "step_0000012"]
    assert (run_dir / "previews" / "step_0000006.png").is_file()
    grid = Image.open(run_dir / "samples.png")
    assert grid.size[1] == 10 * 34 * 2  # one row per digit, 32 px + border, shown at 2x


def test_sample_one_class_writes_n_pngs_and_a_grid(trained_run, tmp_path):
    common, run_dir = trained_run
    written = sample.run(
        sample.compose_config(
            common
            + [
                f"run_dir={run_dir}",
                "prompt_class=3",
                "num_samples=3",
                f"out={tmp_path}",
                "sample.num_steps=2",
                "sample.guidance_scale=2.0",
            ]
        )
    )
    assert [p.name for p in written] == ["3_000.png", "3_001.png", "3_002.png"]
    assert Image.open(written[0]).size == (32, 32)
    assert (tmp_path / "grid.png").is_file()


def test_sample_without_class_covers_every_class(trained_run, tmp_path):
    common, run_dir = trained_run
    written = sample.run(
        sample.compose_config(common + [f"run_dir={run_dir}", "num_samples=1", f"out={tmp_path}", "sample.num_steps=2"])
    )
    assert sorted(p.name.split("_")[0] for p in written) == [str(d) for d in range(10)]


@pytest.mark.parametrize(
    "args,message",
    [
        (["modality=smell"], "unknown modality 'smell'"),
        (["prompt_class=10"], "prompt_class=10 is out of range"),
        (["run_dir=/nonexistent/run"], "run_dir /nonexistent/run does not exist"),
        (["checkpoint=/nonexistent/ckpt"], "checkpoint /nonexistent/ckpt does not exist"),
        (["model=huge"], "Could not find 'model/huge'"),
        (["sample.guidance_schedule=cosine"], "sample.guidance_schedule='cosine' must be one of linear, constant"),
    ],
)
def test_usage_errors_are_one_line_and_exit_nonzero(trained_run, args, message, capsys):
    common, run_dir = trained_run
    with pytest.raises(SystemExit) as exit_info:
        sample.main(common + [f"run_dir={run_dir}"] + args)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "Traceback" not in err and len(err.splitlines()) == 1


def test_console_script_reports_a_missing_tokenizer_the_user_named(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "djepa.cli.train",
            f"home={tmp_path}",
            f"run_dir={tmp_path}/r",
            f"modality.adapter.tokenizer.path={tmp_path}/my-vae",
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    assert "my-vae" in proc.stderr and "train_tokenizer modality=image" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_train_makes_the_missing_default_tokenizer_first(tmp_path, capsys):
    train.run(
        train.compose_config(
            [
                f"home={tmp_path}",
                f"run_dir={tmp_path}/r",
                "tokenizer.block_out_channels=[8,8,8]",
                "tokenizer.norm_num_groups=4",
                "tokenizer.steps=3",
                "model=tiny",
                "train.steps=2",
                "train.batch_size=8",
                "sample.preview_per_class=0",
            ]
        )
    )
    assert (tmp_path / "tokenizers" / "image" / "config.json").exists()
    assert (tmp_path / "r" / "checkpoints" / "step_0000002").is_dir()
    assert "training the default one first" in capsys.readouterr().out
