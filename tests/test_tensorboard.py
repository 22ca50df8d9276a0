"""train.tensorboard=true: the metrics.jsonl records as scalars at their steps, the previews as images, audio and
animated images, read back with TensorBoard's own EventAccumulator; appended to (not overwritten) on resume."""

import json
import shutil
import sys

import pytest
from conftest import IMAGE_RUN

from djepa.errors import UsageError

pytest.importorskip("tensorboard")
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402

# The image_run's settings, shorter, with a log, a checkpoint and a preview every 2 steps.
CHANGED = ("train.steps", "train.checkpoint_every", "train.preview_every")
TB_RUN = [o for o in IMAGE_RUN if o.split("=")[0] not in CHANGED] + [
    "train.steps=4",
    "train.log_every=2",
    "train.checkpoint_every=2",
    "train.preview_every=2",
    "train.tensorboard=true",
]


def events(run_dir):
    acc = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0, "images": 0, "audio": 0})
    acc.Reload()
    return acc


def steps(acc, tag, kind="Scalars"):
    return [e.step for e in getattr(acc, kind)(tag)]


def train(common, run_dir, *extra):
    from djepa.cli import train

    return train.run(train.compose_config(common + [f"run_dir={run_dir}", *TB_RUN, *extra]))


def test_a_tiny_run_logs_its_metrics_and_previews_and_a_resume_appends(image_run, tmp_path):
    common, _ = image_run
    run_dir = tmp_path / "run"
    train(common, run_dir)
    acc = events(run_dir)
    scalars = set(acc.Tags()["scalars"])
    assert {"loss/loss", "loss/denoise", "loss/jepa", "optim/lr", "optim/grad_norm", "optim/clip_fraction"} <= scalars
    assert {"perf/step_ms", "perf/tokens_per_s", "train/jepa_active", "train/skipped_steps"} <= scalars
    # Every metrics.jsonl value, at its step: the same records (float32 in the event file).
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [2, 4] == steps(acc, "loss/denoise") == steps(acc, "optim/lr")
    for key in ("loss", "denoise", "jepa", "lr", "grad_norm"):
        tag = "optim/" + key if key in ("lr", "grad_norm") else "loss/" + key
        assert [e.value for e in acc.Scalars(tag)] == pytest.approx([r[key] for r in records], rel=1e-6)
    # The previews as images (the grid PNGs the run wrote, byte for byte), and the final samples.
    assert steps(acc, "preview/grid", "Images") == [2, 4] and steps(acc, "samples/grid", "Images") == [4]
    image = acc.Images("preview/grid")[0]
    png = (run_dir / "previews" / "step_0000002.png").read_bytes()
    assert image.encoded_image_string == png and image.width > 0 and image.height > 0

    # Resume from step 2, as after an interruption past it: steps 3-4 again, then 5-6. TensorBoard drops the
    # interrupted run's events past step 2 (purge_step), so each step holds one value, as in metrics.jsonl.
    shutil.rmtree(run_dir / "checkpoints" / "step_0000004")
    train(common, run_dir, "train.steps=6")
    assert len(list((run_dir / "tensorboard").glob("events.out.tfevents.*"))) == 2
    acc = events(run_dir)
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [2, 4, 6] == steps(acc, "loss/denoise")
    assert [e.value for e in acc.Scalars("loss/denoise")] == pytest.approx([r["denoise"] for r in records])
    assert steps(acc, "preview/grid", "Images") == [2, 4, 6]


def test_without_the_key_no_event_file_is_written(image_run):
    _, run_dir = image_run  # trained with the default train.tensorboard=false
    assert (run_dir / "metrics.jsonl").is_file()
    assert not (run_dir / "tensorboard").exists()
    assert not list(run_dir.rglob("events.out.tfevents.*"))


def test_audio_and_video_previews(audio_pipe, video_pipe, tmp_path):
    from djepa.engine.tensorboard import TensorBoardLog

    audio = audio_pipe(class_labels=["one", "two"], num_samples=2, num_steps=2, seed=0)
    audio.save(tmp_path / "audio")
    video = video_pipe(class_labels=[3], num_samples=1, num_steps=2, seed=0)
    video.save(tmp_path / "video")
    with TensorBoardLog(tmp_path) as log:
        log.preview("preview", audio, 5)
        log.preview("samples", video, 7)
    acc = events(tmp_path)
    # Audio: one clip per class at the model's sample rate, beside the spectrogram grid.
    assert set(acc.Tags()["audio"]) == {"preview/audio/one", "preview/audio/two"}
    clip = acc.Audio("preview/audio/two")[0]
    assert clip.step == 5 and clip.sample_rate == 8000 and clip.length_frames == 4000
    assert clip.encoded_audio_string[:4] == b"RIFF" and clip.content_type == "audio/wav"
    # Video: the frame strip PNG and the animated GIF beside it.
    assert {"preview/grid", "samples/grid", "samples/video"} <= set(acc.Tags()["images"])
    gif = acc.Images("samples/video")[0]
    assert gif.step == 7 and gif.encoded_image_string == (tmp_path / "video" / "grid.gif").read_bytes()
    assert gif.encoded_image_string[:4] == b"GIF8"


def test_asking_for_it_without_the_package_is_one_line_naming_the_key(monkeypatch, tmp_path):
    import djepa.engine.tensorboard as tb
    from djepa.cli.config import compose_config

    assert compose_config(["train.tensorboard=true"]).train.tensorboard is True
    monkeypatch.setattr(tb, "tensorboard_missing", lambda: True)
    with pytest.raises(UsageError) as err:
        compose_config(["train.tensorboard=true"])
    message = str(err.value)
    assert message.startswith("train.tensorboard=true ") and "pip install" in message and "\n" not in message
    compose_config(["train.tensorboard=false"])  # off needs nothing
    with pytest.raises(UsageError, match=r"train.tensorboard: Value 'maybe'"):
        compose_config(["train.tensorboard=maybe"])
    # Opening the writer itself (the Python API) says the same.
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    with pytest.raises(UsageError, match=r"^train.tensorboard=true .*pip install"):
        tb.TensorBoardLog(tmp_path)
