"""Spoken command words: ten English words said by eSpeak NG in many voices, rates and pitches, in a little room
noise, at natural lengths and 22,050 Hz, written as class folders, with voices held out for an independent listener.

    python -m djepa.benchmarks.experiments.words make out=DIR [per_word=200] [test_per_word=50] \
        [listener_per_word=200] [seed=0]

writes DIR/train/<word>/<n>.wav (the folder a user would train on), DIR/test/<word>/<n>.wav (new clips in the
same voices: the round trip's test clips) and DIR/listener/<word>/<n>.wav (other voices: the listener's training
clips), plus `words.json` (the recipe). Then, with the folder's tokenizer trained
(`train_tokenizer modality=audio modality.adapter.data_dir=DIR/train`),

    python -m djepa.benchmarks.experiments.words roundtrip out=DIR [home=.djepa]

trains the listener on DIR/listener (with noisy copies; cached in DIR) and reports per word how often it recognises
the real test clips, their mel -> vocoder copies (no VAE) and their encode -> decode round trips, with a spectrogram
grid of the three (DIR/roundtrip.png, one row each, one column per word).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from djepa.cli.config import cli_errors
from djepa.errors import UsageError

WORDS = ["yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go"]
SAMPLE_RATE = 22050  # eSpeak NG's own rate: no resampling
RATES = (130, 220)  # words per minute
PITCHES = (20, 80)
MARGIN_SECONDS = (0.02, 0.08)  # room noise before and after the word
NOISE_SNR_DB = (25.0, 40.0)  # the room's pink noise under the word
NUMBERS = {"per_word": 200, "test_per_word": 50, "listener_per_word": 200, "seed": 0}
SPLIT_SEEDS = {"train": 0, "test": 1, "listener": 2}  # added to seed: each split draws its own clips


def split_voices(split: str) -> list[str]:
    """The folder's voices (train and test share them) or the listener's, which the folder never uses."""
    from djepa.benchmarks.listener import listener_voices
    from djepa.modalities.espeak import espeak_voices

    return listener_voices() if split == "listener" else espeak_voices()


def room_noise(count: int, rng: np.random.Generator) -> np.ndarray:
    """Pink (1/f power) noise, unit RMS: a quiet room's hum and hiss."""
    spectrum = np.fft.rfft(rng.standard_normal(count))
    spectrum /= np.sqrt(np.maximum(np.arange(len(spectrum)), 1))
    noise = np.fft.irfft(spectrum, n=count)
    return noise / max(float(np.sqrt(np.mean(noise**2))), 1e-12)


def say(word: str, voice: str, rng: np.random.Generator) -> np.ndarray:
    """One clip: `word` in `voice` at a drawn rate and pitch, silence trimmed, a drawn margin of room noise on each
    side and under the word, peak 0.9; float32 at SAMPLE_RATE."""
    import torch

    from djepa.modalities.espeak import _Espeak
    from djepa.modalities.waveform import trim_silence

    engine = _Espeak.get()
    rate = int(rng.integers(RATES[0], RATES[1] + 1))
    pitch, spread = int(rng.integers(PITCHES[0], PITCHES[1] + 1)), int(rng.integers(10, 91))
    raw = engine.synth(word, voice, rate, pitch, spread, int(rng.integers(2**31 - 1))).astype(np.float32) / 32768.0
    if engine.sample_rate != SAMPLE_RATE:
        raise RuntimeError(f"eSpeak NG runs at {engine.sample_rate} Hz, expected {SAMPLE_RATE}")
    speech = trim_silence(torch.from_numpy(raw)).numpy()
    if speech.size == 0:
        raise RuntimeError(f"eSpeak NG returned silence for {word!r} in voice {voice!r}")
    before, after = (int(rng.uniform(*MARGIN_SECONDS) * SAMPLE_RATE) for _ in range(2))
    clip = np.concatenate([np.zeros(before, np.float32), speech, np.zeros(after, np.float32)])
    rms = float(np.sqrt(np.mean(speech**2)))
    snr = rng.uniform(*NOISE_SNR_DB)
    clip = clip + room_noise(len(clip), rng) * rms * 10 ** (-snr / 20)
    return (clip * 0.9 / max(float(np.abs(clip).max()), 1e-8)).astype(np.float32)


def write_split(root: Path, split: str, per_word: int, seed: int) -> int:
    """`per_word` clips of every word under root/<word>/, voices drawn from the split's; returns clips written."""
    import soundfile as sf

    voices = split_voices(split)
    rng = np.random.default_rng([seed, SPLIT_SEEDS[split]])
    for word in WORDS:
        (root / word).mkdir(parents=True, exist_ok=True)
    for n in range(per_word):
        for word in WORDS:
            clip = say(word, voices[int(rng.integers(len(voices)))], rng)
            sf.write(str(root / word / f"{n:05d}.wav"), clip, SAMPLE_RATE, subtype="PCM_16")
    return per_word * len(WORDS)


def make_words(
    out: Path, per_word: int = 200, test_per_word: int = 50, listener_per_word: int = 200, seed: int = 0
) -> dict[str, int]:
    """The three splits under `out` (see the module docstring); returns clips per split."""
    counts = {}
    for split, count in (("train", per_word), ("test", test_per_word), ("listener", listener_per_word)):
        counts[split] = write_split(Path(out) / split, split, count, seed) if count else 0
    recipe = {
        "words": WORDS,
        "sample_rate": SAMPLE_RATE,
        "rates": RATES,
        "pitches": PITCHES,
        "margin_seconds": MARGIN_SECONDS,
        "noise_snr_db": NOISE_SNR_DB,
        "seed": seed,
        "clips": counts,
    }
    (Path(out) / "words.json").write_text(json.dumps(recipe, indent=2))
    return counts


# ------------------------------------------------------------------------------------------- round trip


def per_word(correct: Any, labels: Any) -> dict[str, float]:
    """Share of correct items per word."""
    return {w: round(float(correct[labels == i].float().mean()), 3) for i, w in enumerate(WORDS) if (labels == i).any()}


def roundtrip(out: Path, home: str = ".djepa", listener_steps: int = 400) -> dict[str, Any]:
    """Per word: the held-out-voice listener's accuracy on DIR/test's real clips and on their round trips through
    the folder's tokenizer (the one `train_tokenizer modality=audio modality.adapter.data_dir=DIR/train` made)."""
    import torch

    from djepa.benchmarks.classifiers import load_or_train_classifier
    from djepa.benchmarks.listener import ListenerFrontEnd, with_noisy_copies
    from djepa.benchmarks.roundtrip import round_trip
    from djepa.chunks import map_chunks
    from djepa.cli.config import compose_config
    from djepa.engine.adapter import build_adapter
    from djepa.modalities.audio import AudioAdapter, load_audio_folder
    from djepa.tokenizers.mel import MelFrontEnd
    from djepa.tokenizers.train_autoencoder import psnr

    cfg = compose_config(["modality=audio", f"modality.adapter.data_dir={Path(out) / 'train'}", f"home={home}"])
    adapter = build_adapter(cfg)
    if not isinstance(adapter, AudioAdapter):
        raise UsageError("the words round trip needs the built-in AudioAdapter")
    rate, samples = adapter.sample_rate, adapter.num_samples
    test, test_labels, names, _ = load_audio_folder(Path(out) / "test", rate, samples)
    heard, heard_labels, listener_names, _ = load_audio_folder(Path(out) / "listener", rate, samples)
    if names != sorted(WORDS) or listener_names != names:
        raise UsageError(f"{out}: expected the class folders {sorted(WORDS)} in test/ and listener/")
    front_end = ListenerFrontEnd(rate)
    path = Path(out) / f"listener-{rate}hz-{samples}-{listener_steps}steps.safetensors"
    x, y = with_noisy_copies(heard, heard_labels)
    listener, listener_heldout = load_or_train_classifier(
        path, map_chunks(front_end, x), y, len(names), steps=listener_steps
    )
    rebuilt = round_trip(adapter, test)
    # the mel front end and vocoder alone (no VAE): what is lost before the latents
    mel = MelFrontEnd(getattr(adapter.tokenizer, "settings", adapter.mel_settings))
    vocoded = map_chunks(lambda audio: mel.inverse(mel(audio)), test)

    def correct(audio: torch.Tensor) -> torch.Tensor:
        logits, _ = listener.predict(map_chunks(front_end, audio))
        return logits.argmax(1) == test_labels

    real_ok, vocoded_ok, rebuilt_ok = correct(test), correct(vocoded), correct(rebuilt)
    order = [names.index(w) for w in WORDS]
    remap = torch.tensor([WORDS.index(n) for n in names])
    first = [int(torch.nonzero(test_labels == i)[0]) for i in order]
    adapter.save_grid(torch.cat([test[first], vocoded[first], rebuilt[first]]), 3, Path(out) / "roundtrip.png")
    return {
        "tokenizer": str(adapter.tokenizer_config["path"]),
        "sample_rate": rate,
        "seconds": round(samples / rate, 4),
        "test_clips": len(test),
        "listener_heldout_accuracy": round(listener_heldout, 3),
        "real_accuracy": round(float(real_ok.float().mean()), 3),
        "vocoder_accuracy": round(float(vocoded_ok.float().mean()), 3),
        "roundtrip_accuracy": round(float(rebuilt_ok.float().mean()), 3),
        "roundtrip_psnr_db": round(psnr(test, rebuilt), 2),
        "real_per_word": per_word(real_ok, remap[test_labels]),
        "vocoder_per_word": per_word(vocoded_ok, remap[test_labels]),
        "roundtrip_per_word": per_word(rebuilt_ok, remap[test_labels]),
    }


# ------------------------------------------------------------------------------------------- command line


def parse(argv: Sequence[str]) -> tuple[str, Path, dict[str, Any]]:
    """`make|roundtrip out=DIR` and the numbers (make) or home=DIR (roundtrip) as key=value."""
    if not argv or argv[0] not in ("make", "roundtrip"):
        raise UsageError("usage: words make out=DIR [per_word=N ...] | words roundtrip out=DIR [home=DIR]")
    command, out = argv[0], ""
    options: dict[str, Any] = {}
    allowed = set(NUMBERS) if command == "make" else {"home", "listener_steps"}
    for item in argv[1:]:
        key, sep, value = item.partition("=")
        if not sep or (key != "out" and key not in allowed):
            raise UsageError(f"{item}: expected one of {', '.join(k + '=' for k in ('out', *sorted(allowed)))}")
        if key == "out":
            out = value
        elif key == "home":
            options[key] = value
        elif value.isdigit():
            options[key] = int(value)
        else:
            raise UsageError(f"{key}={value} must be a whole number >= 0")
    if not out:
        raise UsageError("out=DIR is required")
    return command, Path(out), options


def main(argv: Sequence[str] | None = None) -> None:
    with cli_errors():
        command, out, options = parse(sys.argv[1:] if argv is None else argv)
        result = make_words(out, **options) if command == "make" else roundtrip(out, **options)
        print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
