"""Folders without class subfolders: scanned as the one class `unconditional` (image, video, audio), a tiny image
run trained on one, sampled without a class and with guidance 1, served without a class selector, scored by FD."""

import functools
import math

import numpy as np
import pytest
import torch
from conftest import IMAGE_RUN
from PIL import Image
from test_faults import one_line_error

from djepa.cli import sample, serve, train
from djepa.engine.adapter import UNCONDITIONAL
from djepa.errors import UsageError
from djepa.modalities.audio import AudioAdapter, scan_audio_folder
from djepa.modalities.base import DataError
from djepa.modalities.image import ImageAdapter, mnist_images, scan_image_folder, to_uint8
from djepa.modalities.video import scan_video_folder, video_folder_dataset, write_mp4
from djepa.pipeline import Pipeline

TINY_TOKENIZER = ["tokenizer.block_out_channels=[8,8,8]", "tokenizer.norm_num_groups=4", "tokenizer.steps=30"]


@functools.cache
def digits_32() -> tuple[torch.Tensor, torch.Tensor]:
    """The embedded MNIST digits at 32x32 and their labels, loaded once for the whole file."""
    return mnist_images(32)


def write_digits(root, count=40):
    """`count` embedded MNIST digits as 32x32 grey PNGs straight in `root`."""
    root.mkdir(parents=True, exist_ok=True)
    for i, pixels in enumerate(to_uint8(digits_32()[0][:count])[..., 0]):
        Image.fromarray(pixels).save(root / f"{i:02d}.png")
    return root


@pytest.fixture(scope="module")
def unconditional_run(tmp_path_factory):
    """A tiny image run on 40 loose digit PNGs: (common overrides, run_dir)."""
    folder = write_digits(tmp_path_factory.mktemp("digits") / "loose")
    common = [f"home={tmp_path_factory.mktemp('home')}", f"modality.adapter.data_dir={folder}"]
    run_dir = tmp_path_factory.mktemp("run")
    train.run(train.compose_config(common + [f"run_dir={run_dir}", *IMAGE_RUN, *TINY_TOKENIZER]))
    return common, run_dir


# ----------------------------------------------------------------------------- scanning


def test_loose_images_are_one_unconditional_class_other_files_left_out(tmp_path):
    write_digits(tmp_path, 5)
    (tmp_path / "README.txt").write_text("not an image")
    (tmp_path / ".hidden.png").write_bytes(b"junk")
    scan = scan_image_folder(tmp_path)
    assert scan.class_names == [UNCONDITIONAL]
    assert [p.name for p in scan.files] == [f"{i:02d}.png" for i in range(5)] and scan.labels == [0] * 5
    adapter = ImageAdapter({"path": str(tmp_path / "tok")}, [1, 1], str(tmp_path / "cache"), data_dir=str(tmp_path))
    images, labels = adapter.load_dataset()
    assert images.shape == (5, 1, 32, 32) and labels.tolist() == [0] * 5 and adapter.num_classes == 1


@pytest.mark.parametrize(
    "scan, name", [(scan_image_folder, "a.png"), (scan_video_folder, "a.mp4"), (scan_audio_folder, "a.wav")]
)
def test_a_folder_mixing_loose_files_and_class_folders_is_refused_naming_both(tmp_path, scan, name):
    (tmp_path / "cats").mkdir()
    (tmp_path / "cats" / "b.bin").write_bytes(b"x")
    (tmp_path / name).write_bytes(b"x")
    with pytest.raises(DataError) as err:
        scan(tmp_path)
    message = str(err.value)
    assert len(message.splitlines()) == 1 and name in message and "cats" in message and "mixes" in message


def test_a_readme_beside_class_folders_is_no_mix(tmp_path):
    (tmp_path / "cats").mkdir()
    write_digits(tmp_path / "cats", 2)
    (tmp_path / "README.md").write_text("about the data")
    assert scan_image_folder(tmp_path).class_names == ["cats"]


def test_a_folder_without_media_or_class_folders_is_refused(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(DataError, match="no class subfolders and no media files"):
        scan_image_folder(tmp_path)


def test_loose_wavs_scan_and_read_as_unconditional(tmp_path):
    import soundfile as sf

    t = np.arange(4000) / 8000
    for i, hz in enumerate([220, 330, 440]):
        sf.write(tmp_path / f"tone{i}.wav", 0.5 * np.sin(2 * math.pi * hz * t).astype(np.float32), 8000)
    assert scan_audio_folder(tmp_path).class_names == [UNCONDITIONAL]
    adapter = AudioAdapter(
        {"path": str(tmp_path / "tok")}, [2, 2], str(tmp_path / "cache"), sample_rate=8000, seconds=0.5,
        data_dir=str(tmp_path),
    )  # fmt: skip
    clips, labels = adapter.load_dataset()
    assert clips.shape == (3, 1, 4000) and labels.tolist() == [0, 0, 0] and adapter.class_names == [UNCONDITIONAL]


def test_loose_mp4s_scan_and_read_as_unconditional(tmp_path):
    g = np.random.default_rng(0)
    for i in range(2):
        write_mp4(g.integers(0, 255, (8, 16, 16, 3), dtype=np.uint8), tmp_path / f"clip{i}.mp4")
    scan = scan_video_folder(tmp_path)
    assert scan.class_names == [UNCONDITIONAL] and len(scan.files) == 2
    _, clip, label = video_folder_dataset(scan, frames=8, stride=1, size=16, channels=1)[1]
    assert clip is not None and clip.shape == (8, 1, 16, 16) and label == 0


def test_moving_the_files_into_class_folders_changes_the_cache_key(tmp_path):
    def source(root):
        return ImageAdapter({"path": str(tmp_path / "tok")}, [1, 1], str(tmp_path / "cache"), data_dir=str(root))

    root = write_digits(tmp_path / "data", 4)
    loose = source(root).source_id()["files"]
    (root / "all").mkdir()
    for path in sorted(root.glob("*.png")):
        path.rename(root / "all" / path.name)  # the same files, mtimes kept, now one class folder
    labelled = source(root)
    assert labelled.class_names == ["all"] and labelled.source_id()["files"] != loose


# ----------------------------------------------------------------------------- a trained unconditional run


def test_sample_writes_n_items_without_a_class_and_a_square_grid(unconditional_run, tmp_path):
    common, run_dir = unconditional_run
    out = tmp_path / "out"
    sample.main(common + [f"run_dir={run_dir}", "num_samples=5", "sample.num_steps=2", f"out={out}"])
    files = sorted(p.name for p in out.glob("unconditional_*.png"))
    assert files == [f"unconditional_{i:03d}.png" for i in range(5)]
    # 5 items about square: 2 rows of 3 cells of 32 + 2 px, drawn at twice the size
    assert Image.open(out / "grid.png").size == (3 * 34 * 2, 2 * 34 * 2)


def test_sample_refuses_a_class_or_guidance_in_one_line(unconditional_run, tmp_path, capsys):
    common, run_dir = unconditional_run
    out = tmp_path / "out"
    base = common + [f"run_dir={run_dir}", "num_samples=2", f"out={out}"]
    err = one_line_error(capsys, sample.main, base + ["prompt_class=3"])
    assert "prompt_class" in err and "unconditional" in err
    err = one_line_error(capsys, sample.main, base + ["sample.guidance_scale=4"])
    assert "guidance_scale" in err and "unconditional" in err
    assert not out.exists()


def test_pipeline_generates_without_a_class_at_guidance_one(unconditional_run, monkeypatch):
    _, run_dir = unconditional_run
    pipe = Pipeline.from_pretrained(run_dir, device="cpu")
    assert pipe.unconditional and pipe.class_names == [UNCONDITIONAL] and pipe.defaults.guidance_scale == 1.0
    seen = []
    model_sample = pipe.model.sample
    monkeypatch.setattr(pipe.model, "sample", lambda *a, **k: seen.append(k["guidance"]) or model_sample(*a, **k))
    out = pipe(num_samples=3, seed=0, num_steps=2)
    assert len(out.images) == 3 and out.labels == [0, 0, 0] and seen == [1.0]
    assert len(pipe(UNCONDITIONAL, 1, seed=0, num_steps=2).images) == 1  # the one class may be named
    with pytest.raises(UsageError, match="unconditional"):
        pipe(class_labels=[3], num_samples=1)
    with pytest.raises(UsageError, match="guidance_scale"):
        pipe(num_samples=1, guidance_scale=3.0)


def test_the_export_card_says_unconditional_and_shows_no_class(unconditional_run, tmp_path):
    from djepa.export import export_pipeline

    _, run_dir = unconditional_run
    card = (export_pipeline(Pipeline.from_pretrained(run_dir, device="cpu"), tmp_path / "x") / "README.md").read_text()
    assert "Unconditional D-JEPA" in card and "out = pipe(num_samples=4, seed=0)" in card
    assert "prompt_class" not in card and "Class-conditional" not in card


def test_the_demo_hides_the_class_selector_and_generates(unconditional_run, tmp_path):
    pytest.importorskip("gradio")
    _, run_dir = unconditional_run
    pipe = Pipeline.from_pretrained(run_dir, device="cpu")
    app = serve.build_app(pipe, serve.RequestOutputs())
    try:
        shown = {block.elem_id: block.visible for block in app.blocks.values() if getattr(block, "elem_id", None)}
        assert shown["class"] is False and shown["cfg"] is False and shown["generate"] is True
        grid, first = serve.generate_files(pipe, "", 2, 1.0, 1.0, 2, 0, None, tmp_path / "out")
        assert grid.is_file() and first.name == "unconditional_000.png"
        # Inpainting without a class to pick: the known part alone decides.
        from djepa.cli.serve_requests import Settings, inpaint

        layer = np.zeros((32, 32, 4), np.uint8)
        layer[:, 16:] = 255
        digit = Image.new("RGB", (32, 32))
        value = {"background": digit, "layers": [Image.fromarray(layer)], "composite": digit}
        made = inpaint(pipe, Settings("", 2, 1.0, 1.0, 2, 0), tmp_path / "inpaint", value)
        assert made.first.name == "unconditional_000.png" and made.notes[0].startswith("mask: regenerating 8 of 16")
    finally:
        app.djepa_outputs.close()


def test_the_fd_benchmark_scores_an_unconditional_run(unconditional_run, monkeypatch):
    from djepa.benchmarks import evaluate, views
    from djepa.benchmarks.views import config_view
    from djepa.cli.config import compose_config
    from djepa.engine.adapter import build_adapter
    from djepa.engine.sampling import SamplingSettings

    common, run_dir = unconditional_run
    cfg = compose_config(common + [f"run_dir={run_dir}", "sample.num_steps=2"])
    view = config_view(cfg, build_adapter(cfg))
    assert view.unconditional and view.source == "digits"
    # The classifier learns the embedded digits (a share of them here, for speed), whatever the folder holds.
    monkeypatch.setattr(views, "mnist_images", lambda size: tuple(t[::8] for t in digits_32()))
    classifier, _, real = evaluate.modality_classifier(cfg, view, evaluate.RealMedia(view.adapter), steps=5)
    assert classifier.config["num_classes"] == 10  # the digits' classes, not the run's one
    pipe = Pipeline.from_pretrained(run_dir, device="cpu")
    result = evaluate.score(pipe.model, view, classifier, real, 4, SamplingSettings(4.0, 1.0, 2))
    assert math.isfinite(result["fd"]) and result["samples"] == 4 and "accuracy" not in result
    with pytest.raises(UsageError, match="benchmark.classifier=data"):
        _ = config_view(compose_config(common + ["benchmark.classifier=data"]), build_adapter(cfg)).source
