"""The audio benchmark's listener (voices held out of the default data, its own front end) and the mel
tokenizer's vocoder path that it judges."""

import torch
import torchaudio

from djepa.benchmarks.listener import LISTENER_VARIANTS, ListenerFrontEnd, listener_schedule
from djepa.modalities.audio import AudioAdapter, digit_schedule
from djepa.modalities.espeak import ESPEAK_VARIANTS, speak
from djepa.tokenizers.mel import MelFrontEnd, MelSettings, invert_mel_nonnegative


def test_listener_voices_and_settings_are_held_out_of_the_default_data():
    assert not set(LISTENER_VARIANTS) & set(ESPEAK_VARIANTS)
    schedule = listener_schedule(200)
    variants = {voice.split("+")[1] for _, voice, *_ in schedule}
    default_variants = {voice.split("+", 1)[1] for _, voice, *_ in digit_schedule(200, seed=0) if "+" in voice}
    assert len(variants) >= 10 and not variants & default_variants
    assert [label for label, *_ in schedule[:20]] == list(range(10)) * 2
    assert min(rate for _, _, rate, *_ in schedule) < 120 and max(rate for _, _, rate, *_ in schedule) > 230


def test_listener_front_end_ignores_loudness_and_is_not_the_tokenizers():
    clip = speak("nine", voice="en-us+Mike")[None]
    front = ListenerFrontEnd()
    features = front(clip)
    assert features.shape == (1, 1, 40, 101) and features.max() == 1.0 and features.min() >= -1.0
    assert torch.allclose(front(0.1 * clip), features, atol=1e-4)
    assert features.shape[-2:] != MelFrontEnd(MelSettings()).grid


def test_nonnegative_mel_inversion_explains_the_mel_and_beats_the_unconstrained_solve():
    spec = torchaudio.transforms.Spectrogram(n_fft=512, hop_length=128, power=2.0)(speak("two")[0])
    mel_scale = torchaudio.transforms.MelScale(n_mels=64, sample_rate=16000, n_stft=257)
    mel = mel_scale(spec)[None]
    fb = mel_scale.fb
    ours = invert_mel_nonnegative(fb, mel, iters=100)
    assert ours.shape == (1, 257, spec.shape[-1]) and (ours >= 0).all()
    ours_error = ((fb.T @ ours - mel).norm() / mel.norm()).item()
    assert ours_error < 0.05
    # the unconstrained least-squares solve clipped at zero (torchaudio's InverseMelScale) misses by far more
    clipped = torch.linalg.lstsq(fb.T[None], mel, driver="gelsd").solution.relu()
    assert ((fb.T @ clipped - mel).norm() / mel.norm()).item() > 2 * ours_error


def test_mel_vocoder_keeps_the_plosive_of_two():
    """Without any VAE, mel -> waveform -> mel returns the same spectrogram, onset included: the 64 ms windows
    and the clipped least-squares inversion of the old front end lost "two" (issue #13)."""
    front = MelFrontEnd(MelSettings())
    two = speak("two", voice="en-gb-x-rp")[None]
    mel = front(two)
    again = front(front.inverse(mel))
    assert mel.shape == again.shape == (1, 1, 64, 128)
    loud = mel > -0.5
    assert (again - mel)[loud].abs().mean() < 0.12


def test_audio_adapter_scores_with_the_listener_and_holds_out_round_trip_clips(tmp_path):
    from djepa.benchmarks.views import AudioView, classifier_view

    adapter = AudioAdapter(tokenizer={"path": str(tmp_path / "tok")}, patch_size=[2, 2], cache_dir=str(tmp_path))
    view = classifier_view(adapter)
    assert isinstance(view, AudioView)
    x, group = view.rows(speak("one")[None])
    assert x.shape == (1, 1, 40, 101) and group == 1
    assert "listener" in view.tag
    held_out = adapter.heldout_dataset()
    assert held_out is not None and held_out[0].shape[1:] == (1, 16000)
    from djepa.benchmarks.roundtrip import own_items

    media, labels, origin = own_items(adapter)
    assert torch.equal(media, held_out[0]) and torch.equal(labels, held_out[1])
    assert origin == "the adapter's held-out items"


def test_listener_training_set_adds_seeded_noisy_copies_at_the_stated_snr():
    from djepa.benchmarks.listener import add_noise, with_noisy_copies

    clips = torch.stack([speak("three"), speak("eight", voice="en+f2")])
    audio, labels = with_noisy_copies(clips, torch.tensor([3, 8]), copies=2)
    assert audio.shape == (6, 1, 16000) and labels.tolist() == [3, 8, 3, 8, 3, 8]
    assert torch.equal(audio[:2], clips) and not torch.equal(audio[2:4], audio[4:6])
    assert torch.equal(with_noisy_copies(clips, torch.tensor([3, 8]))[0], audio)  # seeded
    noisy = add_noise(clips.repeat(20, 1, 1), torch.Generator().manual_seed(0))
    noise = noisy - clips.repeat(20, 1, 1)
    snr = 10 * torch.log10(clips.repeat(20, 1, 1).pow(2).mean(-1) / noise.pow(2).mean(-1))
    assert snr.min() >= 5 - 1e-3 and snr.max() <= 35 + 1e-3 and snr.std() > 3
