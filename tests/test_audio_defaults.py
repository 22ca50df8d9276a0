"""Audio settings that follow the user's folder: its sample rate, a clip length from its clips on the latent grid,
short clips padded (never stretched), long ones cropped with one warning that counts them."""

import logging
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf

from djepa.cli.config import compose_config
from djepa.engine.adapter import build_adapter, dataset_tokenizer_path
from djepa.modalities.audio import AudioAdapter, folder_audio_defaults, grid_frames

RATE = 22050


def tone(seconds: float, rate: int = RATE, freq: float = 440.0) -> np.ndarray:
    """A sine with a rising envelope, so that a stretched copy would not match the original sample for sample."""
    t = np.arange(round(seconds * rate)) / rate
    return (0.5 * np.sin(2 * np.pi * freq * t) * np.linspace(0.2, 1.0, len(t))).astype(np.float32)


def write_clips(root: Path) -> Path:
    """Two words, 20 clips: 18 at 22,050 Hz of 0.2-0.5 s, one of 1.5 s, and one at 16 kHz (the rare rate)."""
    import soundfile as sf

    lengths = np.linspace(0.2, 0.5, 18)
    for i, seconds in enumerate(lengths):
        folder = root / ("low" if i % 2 else "high")
        folder.mkdir(parents=True, exist_ok=True)
        sf.write(folder / f"{i:02d}.wav", tone(float(seconds), freq=300.0 if i % 2 else 900.0), RATE)
    sf.write(root / "high" / "long.wav", tone(1.5, freq=900.0), RATE)
    sf.write(root / "low" / "other_rate.wav", tone(0.3, 16000, 300.0), 16000)
    return root


@pytest.fixture
def clips(tmp_path):
    return write_clips(tmp_path / "words")


def adapter_of(cfg) -> AudioAdapter:
    adapter = build_adapter(cfg)
    assert isinstance(adapter, AudioAdapter)
    return adapter


def test_the_folder_sets_rate_and_length_on_the_latent_grid_and_one_warning_counts_the_crops(clips, tmp_path, caplog):
    home = tmp_path / "home"
    with caplog.at_level(logging.WARNING, logger="djepa.modalities.audio"):
        cfg = compose_config(["modality=audio", f"home={home}", f"modality.adapter.data_dir={clips}"])
    crops = [r for r in caplog.records if "cropped" in r.getMessage()]
    assert len(crops) == 1 and "1 of 20 clips" in crops[0].getMessage()  # the 1.5 s clip, and only it
    adapter = cfg.modality.adapter
    num_samples = round(adapter.seconds * adapter.sample_rate)
    # the most common rate; the 95th-percentile clip (0.5 s + 5 % of the way to 1.5 s) rounded up so that its STFT
    # frames fill the mel frames, a multiple of the tokenizer's 8x downsampling times the patch (16)
    assert adapter.sample_rate == RATE
    assert 0.55 <= adapter.seconds < 0.55 + 16 * 128 / RATE
    assert adapter.mel.frames % 16 == 0 and 1 + num_samples // 128 == adapter.mel.frames == 96
    built = adapter_of(cfg)
    assert (built.num_samples, built.mel_settings.frames, built.media_grid) == (num_samples, 96, (64, 96))

    # The embedded digits keep their 16 kHz, 1 s, 128 frames; a length given is kept and its frames derived from it.
    embedded = compose_config(["modality=audio", f"home={home}"]).modality.adapter
    assert (embedded.sample_rate, embedded.seconds, embedded.mel.frames) == (16000, 1.0, 128)
    caplog.clear()
    mine = OmegaConf.to_container(cfg.modality.adapter)
    given = mine | {"seconds": 0.25, "mel": mine["mel"] | {"frames": None}}
    with caplog.at_level(logging.WARNING, logger="djepa.modalities.audio"):
        found = folder_audio_defaults(given, 16)
    assert (found["seconds"], found["frames"]) == (0.25, grid_frames(5512, 128))
    crops = [r.getMessage() for r in caplog.records if "cropped" in r.getMessage()]
    assert len(crops) == 1 and "17 of 20 clips" in crops[0]  # 0.25 s keeps 3 of the 0.2-0.5 s clips whole
    # the clip length is part of the folder's tokenizer key: another length, another tokenizer
    other = dataset_tokenizer_path(home, "audio", given | {"mel": mine["mel"] | {"frames": found["frames"]}})
    assert other != Path(adapter.tokenizer.path) == dataset_tokenizer_path(home, "audio", mine)


def test_short_clips_are_padded_around_the_centre_and_long_ones_cropped_never_stretched(clips, tmp_path):
    import soundfile as sf

    # built directly (no command line): the adapter derives the same settings itself
    adapter = AudioAdapter({"path": "unused"}, [2, 2], str(tmp_path / "cache"), data_dir=str(clips))
    n = adapter.num_samples
    assert (adapter.sample_rate, n, adapter.mel_settings.frames) == (RATE, 95 * 128, 96)
    scan = adapter.scan()
    dataset = adapter.folder_dataset(scan)
    for name in ("00.wav", "long.wav"):
        index = next(i for i, p in enumerate(scan.files) if p.name == name)
        _, clip, _ = dataset[index]
        original = sf.read(scan.files[index], dtype="float32")[0]
        assert clip is not None and clip.shape == (1, n)
        wave = clip[0].numpy()
        if len(original) < n:  # padded: the clip unchanged (up to peak normalisation) between silences
            left = (n - len(original)) // 2
            expected = np.zeros(n, np.float32)
            expected[left : left + len(original)] = original
        else:  # cropped: the centre of the clip, same samples
            start = (len(original) - n) // 2
            expected = original[start : start + n]
        scale = np.abs(wave).max() / np.abs(expected).max()
        np.testing.assert_allclose(wave, expected * scale, atol=1e-4)
