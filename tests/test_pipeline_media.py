"""Pipeline outputs for video and audio (tiny tokenizers, untrained tiny models): ready-to-use arrays, and
seeded outputs that repeat byte for byte (WAVs, Griffin-Lim included; MP4s and video previews)."""

import numpy as np
import pytest
import soundfile as sf
from conftest import tiny_model
from omegaconf import OmegaConf

from djepa.engine.sampling import SamplingSettings
from djepa.modalities.audio import AudioAdapter, speak
from djepa.modalities.video import VideoAdapter
from djepa.pipeline import Pipeline


def file_bytes(directory):
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir()) if p.is_file()}


def decoded(path):
    import av

    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


def pipeline_for(adapter, tmp_path, class_names):
    model = tiny_model(adapter.token_grid, token_dim=adapter.token_dim, num_classes=len(class_names))
    config = OmegaConf.create({"modality": {"name": adapter.name}})
    return Pipeline(model, adapter, class_names, SamplingSettings(2.0, 1.0, 3, "constant"), config, tmp_path)


@pytest.fixture(scope="module")
def video_pipe(tmp_path_factory):
    root = tmp_path_factory.mktemp("video")
    adapter = VideoAdapter(
        {"path": str(root / "tok")}, [2, 2, 2], str(root / "cache"), frames=8, image_size=16, digit_size=12,
        num_clips=20, fps=6,
    )  # fmt: skip
    adapter.train_tokenizer(dict(block_out_channels=[8, 16], norm_num_groups=4, steps=2, batch_size=16, holdout=0.1))
    return pipeline_for(adapter, root, [str(d) for d in range(10)])


@pytest.fixture(scope="module")
def audio_pipe(tmp_path_factory):
    root = tmp_path_factory.mktemp("audio")
    for word in ("one", "two"):
        (root / "data" / word).mkdir(parents=True)
        for i, voice in enumerate(["en-us", "en+m3"]):
            sf.write(root / "data" / word / f"{i}.wav", speak(word, voice, sample_rate=8000, num_samples=4000)[0], 8000)
    mel = {"n_fft": 256, "hop_length": 128, "n_mels": 16, "frames": 32, "griffin_lim_iters": 4}
    adapter = AudioAdapter(
        {"path": str(root / "tok")}, [2, 2], str(root / "cache"), sample_rate=8000, seconds=0.5,
        data_dir=str(root / "data"), mel=mel,
    )  # fmt: skip
    adapter.train_tokenizer(dict(block_out_channels=[8, 8], norm_num_groups=4, steps=2, batch_size=4, holdout=0.25))
    return pipeline_for(adapter, root, ["one", "two"])


def test_video_pipeline_gives_uint8_clips_with_fps_and_seeded_frames(video_pipe, tmp_path):
    out = video_pipe(class_labels=[3], num_samples=2, seed=1)
    assert out.fps == 6 and len(out.videos) == 2
    clip = out.videos[0]
    assert clip.dtype == np.uint8 and clip.shape == (8, 16, 16, 1)
    again = video_pipe(class_labels=[3], num_samples=2, seed=1).videos
    assert all(np.array_equal(x, y) for x, y in zip(out.videos, again))
    out.save(tmp_path / "a")
    video_pipe(class_labels=[3], num_samples=2, seed=1).save(tmp_path / "b")
    video_pipe(class_labels=[3], num_samples=2, seed=2).save(tmp_path / "c")
    assert sorted(file_bytes(tmp_path / "a")) == ["3_000.mp4", "3_001.mp4", "grid.gif", "grid.png"]
    a, b, c = (file_bytes(tmp_path / k) for k in "abc")
    assert a == b  # MP4s included: encoded with x264's mbtree off (modalities/video.py write_mp4)
    assert a["grid.png"] != c["grid.png"] and a["3_000.mp4"] != c["3_000.mp4"]
    assert decoded(tmp_path / "a" / "3_000.mp4").shape == (8, 64, 64, 3)


def test_video_pipeline_continues_a_prime_clip(video_pipe, tmp_path):
    first = video_pipe(class_labels=[5], num_samples=1, seed=0)
    first.save(tmp_path / "prime")
    out = video_pipe(class_labels=[5], num_samples=2, seed=4, prime=tmp_path / "prime" / "5_000.mp4", prime_frames=4)
    assert len(out.videos) == 2 and out.videos[0].shape == (8, 16, 16, 1)


def test_audio_pipeline_gives_waveforms_with_sample_rate_and_seeded_wavs(audio_pipe, tmp_path):
    out = audio_pipe(class_labels=["two"], num_samples=2, seed=1)
    assert out.sample_rate == 8000 and out.names == ["two", "two"]
    wave = out.waveforms[0]
    assert wave.dtype == np.float32 and wave.shape == (1, 4000) and np.abs(wave).max() <= 1
    out.save(tmp_path / "a")
    audio_pipe(class_labels=["two"], num_samples=2, seed=1).save(tmp_path / "b")
    audio_pipe(class_labels=["two"], num_samples=2, seed=2).save(tmp_path / "c")
    assert "two_000.wav" in file_bytes(tmp_path / "a")
    assert file_bytes(tmp_path / "a") == file_bytes(tmp_path / "b") != file_bytes(tmp_path / "c")


def test_the_web_demo_builds_for_video_and_audio_and_writes_playable_files(video_pipe, audio_pipe, tmp_path):
    pytest.importorskip("gradio")
    from djepa.cli.serve import build_app, generate_files

    for pipe, label, suffix in ((video_pipe, "3", ".mp4"), (audio_pipe, "one", ".wav")):
        build_app(pipe)
        grid, first = generate_files(pipe, label, 2, 2.0, 1.0, 2, 0, None, tmp_path / pipe.modality)
        assert grid.suffix == ".png" and first.suffix == suffix and first.stat().st_size > 0
