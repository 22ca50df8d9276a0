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
grid of the three (DIR/roundtrip.png, one row each, one column per word; the numbers in DIR/roundtrip.json). With a
model trained on the folder (`train modality=audio modality.adapter.data_dir=DIR/train run_dir=RUN`),

    python -m djepa.benchmarks.experiments.words generated out=DIR run_dir=RUN [per_word=20] [seed=0] \
        [sample.guidance_scale=G] [sample.temperature=T] [sample.num_steps=N] [sample.guidance_schedule=S] \
        [loss.head.sampling_steps=K]

samples `per_word` clips of each word (the run's sampling settings where none is given), has the same listener
hear them and reports per word beside the real clips and the round trips, and what the misheard ones were taken for
(DIR/generated.json), with a spectrogram grid (DIR/generated.png: a real test clip, its round trip and two generated
clips per word).
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


def share_per_word(correct: Any, labels: Any) -> dict[str, float]:
    """Share of correct items per word."""
    return {w: round(float(correct[labels == i].float().mean()), 3) for i, w in enumerate(WORDS) if (labels == i).any()}


def misheard(heard: Any, labels: Any, names: list[str]) -> dict[str, dict[str, int]]:
    """Per word (in WORDS order), the words its misheard clips were taken for and how often."""
    wrong: dict[str, dict[str, int]] = {}
    for said, got in zip(labels.tolist(), heard.tolist(), strict=True):
        if said != got:
            counts = wrong.setdefault(names[said], {})
            counts[names[got]] = counts.get(names[got], 0) + 1
    return {w: wrong[w] for w in WORDS if w in wrong}


def words_split(out: Path, split: str, rate: int, samples: int) -> tuple[Any, Any, list[str]]:
    """DIR/<split>'s clips at `rate` and `samples` long, their labels (in sorted folder order) and the folder names."""
    from djepa.modalities.audio import load_audio_folder

    clips, labels, names, _ = load_audio_folder(Path(out) / split, rate, samples)
    if names != sorted(WORDS):
        raise UsageError(f"{Path(out) / split}: expected the class folders {sorted(WORDS)}")
    return clips, labels, names


def words_listener(out: Path, rate: int, samples: int, listener_steps: int = 400) -> tuple[Any, float, Any]:
    """The listener trained on DIR/listener with noisy copies (cached in DIR), its held-out accuracy and its front
    end; its logits are in sorted folder order."""
    from djepa.benchmarks.classifiers import load_or_train_classifier
    from djepa.benchmarks.listener import ListenerFrontEnd, with_noisy_copies
    from djepa.chunks import map_chunks

    front_end = ListenerFrontEnd(rate)
    path = Path(out) / f"listener-{rate}hz-{samples}-{listener_steps}steps.safetensors"
    if path.is_file() and path.with_suffix(".json").is_file():  # cached: no need to read the clips
        listener, heldout = load_or_train_classifier(path, None, None, len(WORDS))  # type: ignore[arg-type]
        return listener, heldout, front_end
    heard, heard_labels, _ = words_split(out, "listener", rate, samples)
    x, y = with_noisy_copies(heard, heard_labels)
    listener, heldout = load_or_train_classifier(path, map_chunks(front_end, x), y, len(WORDS), steps=listener_steps)
    return listener, heldout, front_end


def roundtrip(out: Path, home: str = ".djepa", listener_steps: int = 400, adapter: Any = None) -> dict[str, Any]:
    """Per word: the held-out-voice listener's accuracy on DIR/test's real clips and on their round trips through
    the folder's tokenizer (the one `train_tokenizer modality=audio modality.adapter.data_dir=DIR/train` made), or
    through `adapter`'s (a run's)."""
    import torch

    from djepa.benchmarks.roundtrip import round_trip
    from djepa.chunks import map_chunks
    from djepa.cli.config import compose_config
    from djepa.engine.adapter import build_adapter
    from djepa.modalities.audio import AudioAdapter
    from djepa.tokenizers.mel import MelFrontEnd
    from djepa.tokenizers.train_autoencoder import psnr

    if adapter is None:
        cfg = compose_config(["modality=audio", f"modality.adapter.data_dir={Path(out) / 'train'}", f"home={home}"])
        adapter = build_adapter(cfg)
    if not isinstance(adapter, AudioAdapter):
        raise UsageError("the words round trip needs the built-in AudioAdapter")
    rate, samples = adapter.sample_rate, adapter.num_samples
    test, test_labels, names = words_split(out, "test", rate, samples)
    listener, listener_heldout, front_end = words_listener(out, rate, samples, listener_steps)
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
    result = {
        "tokenizer": str(adapter.tokenizer_config["path"]),
        "sample_rate": rate,
        "seconds": round(samples / rate, 4),
        "test_clips": len(test),
        "listener_heldout_accuracy": round(listener_heldout, 3),
        "real_accuracy": round(float(real_ok.float().mean()), 3),
        "vocoder_accuracy": round(float(vocoded_ok.float().mean()), 3),
        "roundtrip_accuracy": round(float(rebuilt_ok.float().mean()), 3),
        "roundtrip_psnr_db": round(psnr(test, rebuilt), 2),
        "real_per_word": share_per_word(real_ok, remap[test_labels]),
        "vocoder_per_word": share_per_word(vocoded_ok, remap[test_labels]),
        "roundtrip_per_word": share_per_word(rebuilt_ok, remap[test_labels]),
    }
    (Path(out) / "roundtrip.json").write_text(json.dumps(result, indent=2))
    return result


# ------------------------------------------------------------------------------------------- generated

SAMPLE_KEYS = ("sample.guidance_scale", "sample.temperature", "sample.num_steps", "sample.guidance_schedule")
GENERATED_KEYS = {"run_dir": "", "per_word": "20", "seed": "0", "listener_steps": "400", "device": "cpu"}
GENERATED_KEYS |= {k: "" for k in (*SAMPLE_KEYS, "sample.precision", "loss.head.sampling_steps")}


def generated(
    out: Path,
    run_dir: str,
    per_word: int = 20,
    seed: int = 0,
    listener_steps: int = 400,
    device: str = "cpu",
    sampling: dict[str, Any] | None = None,
    head_steps: int | None = None,
) -> dict[str, Any]:
    """Per word: the listener's accuracy on `per_word` clips of each word sampled from the run trained on DIR/train
    (class-conditional, the run's sampling settings unless `sampling` overrides some), beside real test clips and
    their round trips (DIR/roundtrip.json, made first when missing or of another tokenizer). Writes
    DIR/generated.json and DIR/generated.png (rows: a real test clip, its round trip, two generated clips)."""
    import torch

    from djepa.benchmarks.roundtrip import round_trip
    from djepa.modalities.audio import AudioAdapter
    from djepa.pipeline import Pipeline

    overrides = {} if head_steps is None else {"loss.head.sampling_steps": head_steps}
    pipe = Pipeline.from_pretrained(run_dir, device=device, overrides=overrides)
    adapter = pipe.adapter
    if not isinstance(adapter, AudioAdapter) or sorted(pipe.class_names) != sorted(WORDS):
        raise UsageError(f"run_dir {run_dir} is not an audio run on the words' class folders {sorted(WORDS)}")
    rate, samples = adapter.sample_rate, adapter.num_samples
    tokenizer = str(adapter.tokenizer_config["path"])
    done = Path(out) / "roundtrip.json"
    ceiling = json.loads(done.read_text()) if done.is_file() else {}
    if ceiling.get("tokenizer") != tokenizer or ceiling.get("seconds") != round(samples / rate, 4):
        ceiling = roundtrip(out, listener_steps=listener_steps, adapter=adapter)
    listener, _, front_end = words_listener(out, rate, samples, listener_steps)
    result = pipe(None, per_word, seed=seed, **(sampling or {}))  # class-major: per_word clips of each word
    labels = torch.tensor(result.labels)
    logits, _ = listener.predict(front_end(result.media.float()))
    correct = logits.argmax(1) == labels  # the run's classes and the listener's are both the sorted folder names
    remap = torch.tensor([WORDS.index(n) for n in pipe.class_names])
    test, test_labels, names = words_split(out, "test", rate, samples)
    first = torch.stack([test[int(torch.nonzero(test_labels == names.index(w))[0])] for w in WORDS])
    made = [result.media[labels == pipe.class_names.index(w)][:2] for w in WORDS]
    rows = torch.cat([first, round_trip(adapter, first), *(torch.stack([m[k] for m in made]) for k in range(2))])
    adapter.save_grid(rows, 4, Path(out) / "generated.png")
    settings = {**vars(pipe.defaults), **(sampling or {})}
    report = {
        "run_dir": str(run_dir),
        "tokenizer": tokenizer,
        "sampling": {**settings, "loss.head.sampling_steps": head_steps or "the run's"},
        "seed": seed,
        "generated_clips": len(labels),
        "real_accuracy": ceiling["real_accuracy"],
        "roundtrip_accuracy": ceiling["roundtrip_accuracy"],
        "generated_accuracy": round(float(correct.float().mean()), 3),
        "real_per_word": ceiling["real_per_word"],
        "roundtrip_per_word": ceiling["roundtrip_per_word"],
        "generated_per_word": share_per_word(correct, remap[labels]),
        "generated_heard_as": misheard(logits.argmax(1), labels, pipe.class_names),
    }
    (Path(out) / "generated.json").write_text(json.dumps(report, indent=2))
    return report


# ------------------------------------------------------------------------------------------- command line


def parse(argv: Sequence[str]) -> tuple[str, Path, dict[str, Any]]:
    """`make|roundtrip|generated out=DIR` and the numbers (make), home=DIR (roundtrip) or the run and its sampling
    overrides (generated) as key=value."""
    if not argv or argv[0] not in ("make", "roundtrip", "generated"):
        raise UsageError(
            "usage: words make out=DIR [per_word=N ...] | words roundtrip out=DIR [home=DIR] | "
            "words generated out=DIR run_dir=RUN [per_word=20] [sample.KEY=V ...]"
        )
    if argv[0] == "generated":
        return "generated", *generated_options(argv[1:])
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
        else:
            options[key] = whole(key, value)
    if not out:
        raise UsageError("out=DIR is required")
    return command, Path(out), options


def whole(key: str, value: str) -> int:
    """`value` as a whole number >= 0, or one line naming the key."""
    if not value.isdigit():
        raise UsageError(f"{key}={value} must be a whole number >= 0")
    return int(value)


def generated_options(argv: Sequence[str]) -> tuple[Path, dict[str, Any]]:
    """`generated`'s key=value arguments as `generated()`'s keywords; sample.* values are checked by the sampler."""
    from djepa.benchmarks.experiments import key_values

    args = key_values(argv, {"out": "", **GENERATED_KEYS})
    if not args["out"] or not args["run_dir"]:
        raise UsageError("generated needs out=DIR and run_dir=RUN")
    options: dict[str, Any] = {"run_dir": args["run_dir"], "device": args["device"]}
    options |= {k: whole(k, args[k]) for k in ("per_word", "seed", "listener_steps")}
    if options["per_word"] < 1:
        raise UsageError("per_word must be at least 1")
    kinds = {"guidance_scale": float, "temperature": float, "num_steps": int, "guidance_schedule": str}
    sampling = {}
    for key in (*SAMPLE_KEYS, "sample.precision"):
        name = key.split(".")[1]
        if args[key]:
            try:
                sampling[name] = kinds.get(name, str)(args[key])
            except ValueError:
                raise UsageError(f"{key}={args[key]} is not a {kinds[name].__name__}") from None
    options["sampling"] = sampling
    if args["loss.head.sampling_steps"]:
        options["head_steps"] = whole("loss.head.sampling_steps", args["loss.head.sampling_steps"])
    return Path(args["out"]), options


def main(argv: Sequence[str] | None = None) -> None:
    with cli_errors():
        command, out, options = parse(sys.argv[1:] if argv is None else argv)
        if command == "make":
            result: dict[str, Any] = make_words(out, **options)
        else:
            result = roundtrip(out, **options) if command == "roundtrip" else generated(out, **options)
        print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
