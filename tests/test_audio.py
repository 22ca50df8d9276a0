import numpy as np
import pytest
import soundfile as sf
import torch
from omegaconf import OmegaConf

from djepa.benchmarks.views import AudioView
from djepa.modalities.audio import AudioAdapter, digit_schedule, load_audio_folder, load_spoken_digits
from djepa.modalities.base import DataError
from djepa.modalities.espeak import speak
from djepa.tokenizers.mel import MelFrontEnd, MelSettings, MelTokenizer

TINY_MEL = {"n_fft": 256, "hop_length": 128, "n_mels": 16, "frames": 32, "griffin_lim_iters": 4}


def tiny_adapter(tmp_path, **kwargs) -> AudioAdapter:
    settings = dict(
        tokenizer={"path": str(tmp_path / "tok")},
        patch_size=[2, 2],
        cache_dir=str(tmp_path / "cache"),
        sample_rate=8000,
        seconds=0.5,
        mel=TINY_MEL,
    )
    settings.update(kwargs)
    return AudioAdapter(**settings)


def test_espeak_says_a_word_in_one_second_at_16k():
    seven = speak("seven")
    two = speak("two", voice="en-gb-x-rp+f3", rate=150, pitch=70)
    assert seven.shape == two.shape == (1, 16000)
    assert 0.9 < seven.abs().max() <= 1.0
    assert (seven.abs() > 0.05).float().mean() > 0.05  # speech, not a click
    assert not torch.allclose(seven, two)
    mel = MelFrontEnd(MelSettings())
    assert (mel(seven) - mel(two)).abs().mean() > 0.05


def test_digits_are_balanced_and_deterministic(tmp_path):
    assert digit_schedule(30, seed=3) == digit_schedule(30, seed=3) != digit_schedule(30, seed=4)
    assert len({voice for _, voice, *_ in digit_schedule(30, seed=3)}) > 10
    audio, labels = load_spoken_digits(tmp_path, 20, seed=3, sample_rate=8000, num_samples=8000)
    assert audio.shape == (20, 1, 8000) and torch.bincount(labels).tolist() == [2] * 10
    assert (audio.abs().amax(-1) > 0.9).all()
    cached, _ = load_spoken_digits(tmp_path, 20, seed=3, sample_rate=8000, num_samples=8000)
    assert len(list(tmp_path.glob("audio-digits-3-20*.safetensors"))) == 1 and torch.equal(audio, cached)


def write_folder(root):
    t = np.arange(22050 * 2) / 22050
    for name in ("hum", "tone"):
        (root / name).mkdir(parents=True)
        for i in range(2):
            left, right = np.sin(2 * np.pi * (220 + 50 * i) * t), 0.5 * np.sin(2 * np.pi * 330 * t)
            sf.write(root / name / f"{i}.wav", 0.5 * np.stack([left, right], 1), 22050)
    sf.write(root / "tone" / "x.flac", 0.3 * np.sin(2 * np.pi * 440 * t[:4000]), 22050)
    (root / "hum" / "broken.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    (root / "hum" / "empty.wav").write_bytes(b"")
    (root / "tone" / "notes.txt").write_text("not audio")
    sf.write(root / "tone" / "silent.wav", np.zeros(4000), 22050)


def test_folder_loading_skips_bad_files_and_resamples_stereo(tmp_path):
    write_folder(tmp_path)
    audio, labels, names, skipped = load_audio_folder(tmp_path, 16000, 16000)
    assert audio.shape == (5, 1, 16000) and names == ["hum", "tone"]
    assert labels.tolist() == [0, 0, 1, 1, 1]
    assert skipped == 4
    assert audio.abs().max() <= 1.0
    # 220 Hz survives the 22,050 -> 16,000 Hz resampling: its period is 16000/220 samples
    spectrum = torch.fft.rfft(audio[0, 0]).abs()
    assert abs(int(spectrum.argmax()) - 220) <= 2
    # the short flac is zero-padded around its centre
    assert audio[4, 0, :2000].abs().max() == 0 and audio[4, 0, 8000].abs() > 0
    adapter = AudioAdapter({"path": "none"}, [2, 2], str(tmp_path / "cache"), data_dir=str(tmp_path))
    adapter.load_dataset()
    assert adapter.skipped_files == 4 and adapter.class_names == ["hum", "tone"]


def test_folder_errors_name_the_path(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_audio_folder(tmp_path / "missing", 16000, 16000)
    with pytest.raises(DataError, match="no class subfolders"):
        load_audio_folder(tmp_path, 16000, 16000)
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.wav").write_bytes(b"junk")
    with pytest.raises(DataError, match="no readable audio"):
        load_audio_folder(tmp_path, 16000, 16000)


def test_wav_round_trip_and_spectrogram_grid(tmp_path):
    adapter = tiny_adapter(tmp_path)
    clips = torch.rand(6, 1, 4000) * 1.6 - 0.8
    path = adapter.save(clips[0], tmp_path / "one")
    data, rate = sf.read(path, dtype="float32")
    assert path.suffix == ".wav" and rate == 8000 and data.shape == (4000,)
    assert np.abs(data - clips[0, 0].numpy()).max() < 1e-3
    grid = adapter.save_grid(clips, 2, tmp_path / "grid", scale=1)
    from PIL import Image

    assert grid.suffix == ".png" and Image.open(grid).size == (3 * (32 + 2), 2 * (16 + 2))


def test_griffin_lim_decodes_the_right_length():
    settings = MelSettings(sample_rate=8000, num_samples=4000, **TINY_MEL)
    front = MelFrontEnd(settings)
    mel = front(speak("four", sample_rate=8000, num_samples=4000)[None])
    assert mel.shape == (1, 1, 16, 32) and mel.min() >= -1 and mel.max() <= 1
    wave = front.inverse(mel)
    assert wave.shape == (1, 1, 4000) and wave.abs().max() > 0.01


@pytest.fixture(scope="module")
def trained_adapter(tmp_path_factory):
    root = tmp_path_factory.mktemp("audio")
    for word in ("one", "two"):
        (root / "data" / word).mkdir(parents=True)
        for i, voice in enumerate(["en-us", "en+m3", "en-029+f2"]):
            clip = speak(word, voice=voice, sample_rate=8000, num_samples=4000)
            sf.write(root / "data" / word / f"{i}.wav", clip[0].numpy(), 8000)
    adapter = tiny_adapter(root, data_dir=str(root / "data"))
    settings = dict(block_out_channels=[8, 8], norm_num_groups=4, steps=3, batch_size=4, holdout=0.2)
    metrics = adapter.train_tokenizer(settings)
    return adapter, metrics, root


@pytest.mark.slow
def test_mel_tokenizer_trains_and_loads_through_the_pretrained_path(trained_adapter):
    adapter, metrics, root = trained_adapter
    assert (root / "tok" / "config.json").is_file() and (root / "tok" / "mel.json").is_file()
    assert "psnr_db" in metrics and metrics["mel_db_max"] > 0
    tok = adapter.tokenizer
    assert isinstance(tok, MelTokenizer) and tok.downsample == (2, 2)
    assert adapter.media_grid == (16, 32) and adapter.latent_grid == (8, 16) and adapter.token_grid == (4, 8)
    media, labels = adapter.load_dataset()
    mean, std = tok.encode_moments(media)
    assert mean.shape == (6, 4, 8, 16) and (std > 0).all()
    tokens = adapter.to_tokens(mean)
    assert tokens.shape == (6, 32, adapter.token_dim) and adapter.token_dim == 16
    audio = adapter.decode_tokens(tokens)
    assert audio.shape == (6, 1, 4000) and audio.abs().max() <= 1.0
    view = AudioView(adapter)
    x, group = view.rows(audio)
    assert x.shape == (6, 1, 40, 51) and group == 1  # the listener's own 40-band, 10 ms front end at 8 kHz
    data, labels = view.training_data()
    assert data.shape == (18, 1, 40, 51) and len(labels) == 18  # the folder's 6 clips plus 2 noisy copies of each


@pytest.mark.slow
def test_prime_tokens_keep_the_first_columns(trained_adapter):
    adapter, _, root = trained_adapter
    options = OmegaConf.create({"prime_seconds": 0.1})
    tokens, mask = adapter.prime_tokens(str(root / "data" / "one" / "0.wav"), options, 3)
    grid = adapter.token_grid  # (4, 8): one column = 4 frames of 128 samples at 8 kHz = 64 ms
    assert tokens.shape == (3, 32, 16) and mask.shape == (3, 32) and mask.dtype == torch.bool
    cols = mask[0].view(grid)
    assert cols[:, :2].all() and not cols[:, 2:].any()
    assert torch.equal(tokens[0], tokens[2])
    with pytest.raises(FileNotFoundError):
        adapter.prime_tokens(str(root / "nope.wav"), options, 1)


def test_oobleck_loads_from_a_local_directory(tmp_path):
    from diffusers import AutoencoderOobleck

    from djepa.tokenizers.oobleck import OobleckTokenizer

    vae = AutoencoderOobleck(
        encoder_hidden_size=8,
        downsampling_ratios=[2, 4],
        channel_multiples=[1, 2],
        decoder_channels=8,
        decoder_input_channels=4,
        audio_channels=2,
        sampling_rate=16000,
    )
    vae.save_pretrained(tmp_path / "oobleck")
    tok = OobleckTokenizer(tmp_path / "oobleck", sample_rate=8000)
    assert tok.downsample == (8,) and tok.latent_channels == 4
    assert tok.latent_grid((4000,)) == (1000,)
    mean, std = tok.encode_moments(torch.rand(2, 1, 4000) - 0.5)
    assert mean.shape == (2, 4, 1000) and (std > 0).all()
    assert tok.decode(mean).shape == (2, 1, 4000)
    adapter = tiny_adapter(
        tmp_path,
        tokenizer={"_target_": "djepa.tokenizers.oobleck.OobleckTokenizer", "path": str(tmp_path / "oobleck")},
        patch_size=[4],
    )
    assert adapter.media_grid == (4000,) and adapter.token_grid == (250,) and adapter.token_dim == 16
    assert adapter.decode_tokens(adapter.to_tokens(mean)).shape == (2, 1, 4000)


def test_missing_tokenizer_says_how_to_make_it(tmp_path):
    adapter = tiny_adapter(tmp_path)
    with pytest.raises(FileNotFoundError, match="train_tokenizer modality=audio"):
        _ = adapter.tokenizer
