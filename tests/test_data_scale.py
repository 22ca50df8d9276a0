"""User folders at scale: tokenizer training and the benchmark classifier read a bounded subset; the benchmark
that measures memory against folder size."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

import djepa.modalities.image as image_module
import djepa.modalities.video as video_module
from djepa.benchmarks.views import ImageView, VideoView
from djepa.modalities.image import ImageAdapter
from djepa.modalities.video import VideoAdapter, write_mp4


def write_images(root, per_class=6):
    for c, name in enumerate(("cat", "dog")):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            Image.new("RGB", (8, 8), (i * 40, c * 100, 50)).save(root / name / f"{i}.png")


def counting(monkeypatch, module, name):
    """Count the files a module's reader opens."""
    reads = []
    original = getattr(module, name)

    def read(path, *args, **kwargs):
        reads.append(path)
        return original(path, *args, **kwargs)

    monkeypatch.setattr(module, name, read)
    return reads


def image_adapter(tmp_path, data, **settings):
    settings = {"image_size": 8, "channels": 3} | settings
    return ImageAdapter(
        {"path": str(tmp_path / "tok")}, [2, 2], str(tmp_path / "cache"), data_dir=str(data), **settings
    )


def test_tokenizer_and_classifier_data_read_only_the_bound(tmp_path, monkeypatch):
    write_images(tmp_path / "data")
    reads = counting(monkeypatch, image_module, "read_image")
    adapter = image_adapter(tmp_path, tmp_path / "data", memory_items=5)
    images = adapter.tokenizer_training_data()
    assert images.shape == (5, 3, 8, 8) and len(reads) == 5 and len(set(reads)) == 5
    again = image_adapter(tmp_path, tmp_path / "data", memory_items=5).tokenizer_training_data()
    assert torch.equal(images, again)  # seeded: the same subset every time
    reads.clear()
    x, labels = ImageView(adapter, "data").training_data()
    assert len(x) == len(labels) == 5 and len(reads) == 5
    assert adapter.class_names == ["cat", "dog"]


def test_a_folder_within_the_bound_is_read_whole_as_before(tmp_path):
    write_images(tmp_path / "data", per_class=3)
    adapter = image_adapter(tmp_path, tmp_path / "data", memory_items=100, flip=True)
    images, labels = adapter.load_dataset()
    assert torch.equal(adapter.tokenizer_training_data(), images) and len(images) == 12  # with the mirrored copies
    assert torch.equal(adapter.in_memory_data()[1], labels)


def test_video_tokenizer_frames_come_from_at_most_the_bound_of_clips(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    for c in ("a", "b"):
        (tmp_path / "data" / c).mkdir(parents=True)
        for i in range(2):
            write_mp4(rng.integers(0, 255, (8, 16, 16, 3), dtype=np.uint8), tmp_path / "data" / c / f"{i}.mp4")
    reads = counting(monkeypatch, video_module, "read_video_file")
    adapter = VideoAdapter(
        {"path": str(tmp_path / "tok")}, [2, 2, 2], str(tmp_path / "cache"), frames=8, image_size=16,
        data_dir=str(tmp_path / "data"), memory_items=3,
    )  # fmt: skip
    frames = adapter.tokenizer_training_data(max_frames=12)  # 3 clips of 8 frames, every 2nd frame kept
    assert frames.shape == (12, 1, 16, 16) and len(reads) == 3
    x, labels = VideoView(adapter).training_data()
    assert len(x) == len(labels) == 24 and len(reads) == 6  # 3 clips, all 8 frames (under 16,000)


@pytest.mark.slow
def test_the_data_scale_benchmark_measures_each_size(tmp_path):
    from djepa.benchmarks.experiments import data_scale
    from djepa.cli import train_tokenizer

    # One tiny tokenizer for both sizes, given by path, so no tokenizer phase runs (data_scale skips it).
    home = tmp_path / "home"
    tokenizer = ["tokenizer.steps=2", "tokenizer.block_out_channels=[8,8,8]", "tokenizer.norm_num_groups=4"]
    train_tokenizer.run(train_tokenizer.compose_config([f"home={home}", *tokenizer]))
    out = tmp_path / "out"
    data_scale.main(
        [f"out={out}", "sizes=[20,60]", "steps=3", f"home={home}", "model=tiny", "train.batch_size=8"]
        + [f"modality.adapter.tokenizer.path={home / 'tokenizers' / 'image'}"]
    )
    results = json.loads((out / "results.json").read_text())
    assert [s["items"] for s in results["sizes"]] == [20, 60]
    for size in results["sizes"]:
        assert "skipped" in size["tokenizer"]
        assert len(list((out / "data" / f"image-{size['items']}").rglob("*.png"))) == size["items"]
        assert size["caching"]["cached_items"] == size["items"] and size["caching"]["items_per_s"] > 0
        assert size["training"]["steps"] == 3 and size["training"]["items_per_s"] > 0
        for phase in ("caching", "training"):
            assert 50 < size[phase]["peak_rss_mb"] < 100_000
    comparison = results["comparison"]
    assert comparison["larger"] == 60 and 0.5 < comparison["caching"]["rss_ratio"] < 2
    assert isinstance(comparison["within_bound"], bool)
    assert "| 60 | training |" in (out / "summary.md").read_text()
