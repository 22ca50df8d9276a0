"""Pipeline outputs for video and audio (tiny tokenizers, untrained tiny models): ready-to-use arrays, and
seeded outputs that repeat byte for byte (WAVs, Griffin-Lim included; MP4s and video previews)."""

import numpy as np
import pytest

pytestmark = pytest.mark.slow  # tiny video and audio tokenizers train first


def file_bytes(directory):
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir()) if p.is_file()}


def decoded(path):
    import av

    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


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
