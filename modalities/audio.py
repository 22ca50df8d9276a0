"""Audio: spoken digits synthesised by eSpeak NG, or a folder of the user's clips <-> mel (or waveform) latent grids."""

from __future__ import annotations

import functools
import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file
from torch.utils.data import Dataset

from djepa.chunks import map_chunks
from djepa.errors import UsageError
from djepa.io import atomic_write_safetensors
from djepa.modalities.base import HELDOUT_SEED_OFFSET, ModalityAdapter
from djepa.modalities.espeak import espeak_voices, speak
from djepa.modalities.folder import DataError, FileDataset, FolderScan, load_folder, scan_user_folder
from djepa.modalities.pixels import grid_canvas
from djepa.modalities.waveform import peak_normalize
from djepa.tokenizers.base import LatentTokenizer
from djepa.tokenizers.mel import MelFrontEnd, MelSettings, MelTokenizer, fit_length

log = logging.getLogger(__name__)

AUDIO_SUFFIXES = {".wav", ".flac", ".ogg", ".mp3"}
DIGIT_WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
SILENT_PEAK = 1e-4
HELDOUT_CLIPS = 500  # the round trip's test clips: the default distribution, another seed


# ------------------------------------------------------------------------------------------- spoken digits


def digit_schedule(count: int, seed: int) -> list[tuple[int, str, int, int, int, int]]:
    """(label, voice, rate, pitch, pitch range, noise seed) per clip: balanced (class i % 10), seeded."""
    voices = espeak_voices()
    rng = np.random.default_rng(seed)
    schedule = []
    for i in range(count):
        voice = voices[int(rng.integers(len(voices)))]
        rate, pitch, spread = int(rng.integers(120, 231)), int(rng.integers(15, 86)), int(rng.integers(10, 91))
        schedule.append((i % len(DIGIT_WORDS), voice, rate, pitch, spread, int(rng.integers(2**31 - 1))))
    return schedule


def speak_schedule(
    schedule: list[tuple[int, str, int, int, int, int]], sample_rate: int = 16000, num_samples: int = 16000
) -> tuple[torch.Tensor, torch.Tensor]:
    """The clips of a (label, voice, rate, pitch, pitch range, noise seed) schedule [N, 1, num_samples], labels."""
    audio = torch.empty(len(schedule), 1, num_samples)
    for i, (label, voice, rate, pitch, spread, noise_seed) in enumerate(schedule):
        audio[i] = speak(DIGIT_WORDS[label], voice, rate, pitch, spread, sample_rate, num_samples, noise_seed)
    return audio, torch.tensor([item[0] for item in schedule])


def synthesize_digits(
    count: int, seed: int, sample_rate: int = 16000, num_samples: int = 16000
) -> tuple[torch.Tensor, torch.Tensor]:
    """`count` spoken digits following `digit_schedule(count, seed)`.

    The schedule is deterministic; the samples are so only up to eSpeak NG's internal pitch jitter, whose state
    persists inside the library across calls, hence `load_spoken_digits` caches the clips on disk.
    """
    return speak_schedule(digit_schedule(count, seed), sample_rate, num_samples)


def cached_clips(
    path: Path, what: str, synthesize: Callable[[], tuple[torch.Tensor, torch.Tensor]]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Clips and labels stored as int16 at `path`, synthesised by `synthesize()` on first use."""
    if path.is_file():
        cached = load_file(str(path))
        return cached["audio"].float() / 32767.0, cached["labels"].long()
    start = time.perf_counter()
    audio, labels = synthesize()
    log.info("synthesised %d %s in %.1f s", len(audio), what, time.perf_counter() - start)
    pcm = (audio.clamp(-1, 1) * 32767.0).round().to(torch.int16)
    atomic_write_safetensors(path, {"audio": pcm, "labels": labels})
    return pcm.float() / 32767.0, labels


def load_spoken_digits(
    cache_dir: Path, count: int, seed: int, sample_rate: int = 16000, num_samples: int = 16000
) -> tuple[torch.Tensor, torch.Tensor]:
    """The embedded default, synthesised once and cached as int16 in `cache_dir`."""
    suffix = "" if (sample_rate, num_samples) == (16000, 16000) else f"-{sample_rate}hz-{num_samples}"
    path = Path(cache_dir) / f"audio-digits-{seed}-{count}{suffix}.safetensors"
    return cached_clips(path, "spoken digits", lambda: synthesize_digits(count, seed, sample_rate, num_samples))


# ------------------------------------------------------------------------------------------- user folders


def read_audio(path: Path, sample_rate: int) -> torch.Tensor:
    """A file read with soundfile, mixed to mono and resampled: [1, samples]. Raises ValueError when unusable."""
    import soundfile as sf
    import torchaudio.functional as AF

    try:
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except (RuntimeError, OSError, TypeError, ValueError, EOFError) as err:  # sf.LibsndfileError is a RuntimeError
        raise ValueError(f"unreadable audio: {err}") from err
    if data.size == 0:
        raise ValueError("no samples")
    audio = torch.from_numpy(np.ascontiguousarray(data.T)).mean(0, keepdim=True)
    if not torch.isfinite(audio).all():
        raise ValueError("non-finite samples")
    if audio.abs().max() < SILENT_PEAK:
        raise ValueError(f"silent (peak below {SILENT_PEAK})")
    if rate != sample_rate:
        audio = AF.resample(audio, int(rate), sample_rate)
    return audio


def read_clip_audio(path: Path, sample_rate: int, num_samples: int, normalize: bool = True) -> torch.Tensor:
    """One file of a user folder as [1, num_samples]; ValueError when unreadable, empty, silent or not audio."""
    audio = fit_length(read_audio(path, sample_rate), num_samples, "center")
    if audio.abs().max() < SILENT_PEAK:
        raise ValueError("silent after cropping")
    return peak_normalize(audio) if normalize else audio.clamp(-1, 1)


# What marks a file straight in a folder as a clip (an unlabelled folder); in class folders every file is tried.
AUDIO_SUFFIXES = {".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff", ".au", ".caf", ".w64"}


def scan_audio_folder(root: Path) -> FolderScan:
    """root/<class>/<clips>, or clips straight in root (one class, `unconditional`)."""
    return scan_user_folder(root, AUDIO_SUFFIXES, skip_hidden=True)


def audio_folder_dataset(scan: FolderScan, sample_rate: int, num_samples: int, normalize: bool = True) -> FileDataset:
    """The clips of a scanned folder, read one by one when asked (DataLoader workers), never all at once."""
    read = functools.partial(read_clip_audio, sample_rate=sample_rate, num_samples=num_samples, normalize=normalize)
    return FileDataset(scan.files, scan.labels, read, (ValueError,))


def load_audio_folder(
    root: Path, sample_rate: int, num_samples: int, normalize: bool = True
) -> tuple[torch.Tensor, torch.Tensor, list[str], int]:
    """Clips under root/<class>/ as [M, 1, num_samples] in memory (tokenizer training, the benchmark classifier);
    unreadable, empty, silent or non-audio files are skipped and counted. Latent caching reads lazily instead."""
    scan = scan_audio_folder(root)
    dataset = audio_folder_dataset(scan, sample_rate, num_samples, normalize)
    return load_folder(scan, dataset, root, AudioAdapter.folder_items)


# ------------------------------------------------------------------------------------------- folder defaults

EMBEDDED_SAMPLE_RATE = 16000  # the embedded digits' rate and length, and a folder's when its headers tell nothing
EMBEDDED_SECONDS = 1.0
CLIP_LENGTH_QUANTILE = 0.95  # a folder's clip length: this share of its clips fits uncropped
STAT_FILES = 4000  # at most this many file headers read for a folder's rate and lengths (a seeded subset)
FRAME_UNIT = 16  # mel frames are a multiple of this when nothing else says (the default tokenizer's 8x times patch 2)


@dataclass(frozen=True)
class FolderClips:
    """What a folder's file headers say: each examined clip's rate and length in samples, and how many files the
    folder has in all (only a seeded subset of at most STAT_FILES is examined)."""

    rates: list[int]
    lengths: list[int]
    total: int

    @property
    def sample_rate(self) -> int:
        """The most common rate (ties: the highest)."""
        values, counts = np.unique(np.asarray(self.rates), return_counts=True)
        return int(values[counts == counts.max()].max())

    def seconds(self, quantile: float = CLIP_LENGTH_QUANTILE) -> float:
        """The `quantile` of the clip lengths, in seconds."""
        return float(np.quantile(np.asarray(self.lengths) / np.asarray(self.rates), quantile))

    def longer_than(self, seconds: float) -> int:
        """How many examined clips last longer than `seconds` (they are cropped)."""
        return int(np.sum(np.asarray(self.lengths) / np.asarray(self.rates) > seconds + 1e-9))


def folder_clips(scan: FolderScan, limit: int = STAT_FILES, seed: int = 0) -> FolderClips:
    """The rate and length of up to `limit` files of a folder, from their headers (no samples decoded); files
    whose header soundfile cannot read are left out here (reading them later skips them)."""
    import soundfile as sf

    files = scan.files
    if len(files) > limit:
        order = np.random.default_rng(seed).permutation(len(files))[:limit]
        files = [files[i] for i in sorted(order)]
    rates, lengths = [], []
    for path in files:
        try:
            info = sf.info(str(path))
        except (RuntimeError, OSError, TypeError, ValueError, EOFError):
            continue
        if info.samplerate > 0 and info.frames > 0:
            rates.append(int(info.samplerate))
            lengths.append(int(info.frames))
    return FolderClips(rates, lengths, len(scan.files))


def grid_frames(num_samples: int, hop_length: int, unit: int = FRAME_UNIT) -> int:
    """Mel frames for a clip: its STFT frames rounded up to a multiple of `unit` (the latent grid tiles them)."""
    return math.ceil((1 + num_samples // hop_length) / unit) * unit


def derived_length(seconds: float, sample_rate: int, hop_length: int, unit: int) -> tuple[int, int]:
    """A folder's clip length rounded up to the latent grid: (num_samples, frames), the clip filling its frames."""
    frames = grid_frames(round(seconds * sample_rate), hop_length, unit)
    return (frames - 1) * hop_length, frames


def folder_audio_defaults(adapter: dict[str, Any], unit: int, quantile: float = CLIP_LENGTH_QUANTILE) -> dict[str, Any]:
    """Values for the audio adapter settings left null (`sample_rate`, `seconds`, `mel.frames`): from the folder at
    `data_dir` (its most common rate, its `quantile` clip length rounded up to the latent grid), else the embedded
    digits' (16 kHz, 1 s). Logs one warning counting the clips longer than the length, which are cropped."""
    hop = int((adapter.get("mel") or {}).get("hop_length") or MelSettings.hop_length)
    frames = (adapter.get("mel") or {}).get("frames")
    rate, seconds = adapter.get("sample_rate"), adapter.get("seconds")
    clips = None
    if adapter.get("data_dir"):
        try:
            clips = folder_clips(scan_audio_folder(Path(adapter["data_dir"])), seed=int(adapter.get("seed") or 0))
        except DataError:
            clips = None  # the folder's own checks report it, in one line, where it is read
        if clips is not None and not clips.rates:
            clips = None
    rate = int(rate or (clips.sample_rate if clips else EMBEDDED_SAMPLE_RATE))
    if seconds is not None:
        num_samples = round(float(seconds) * rate)
    elif clips is None:
        num_samples = round(EMBEDDED_SECONDS * rate)
    else:
        num_samples, fitted = derived_length(clips.seconds(quantile), rate, hop, unit)
        if frames is None:
            frames = fitted
        else:  # frames given: the length they hold at most
            num_samples = min(num_samples, (int(frames) - 1) * hop)
    frames = int(frames or grid_frames(num_samples, hop, unit))
    if clips is not None:
        cropped = clips.longer_than(num_samples / rate)
        if cropped:
            examined = " examined" if len(clips.lengths) < clips.total else ""
            log.warning(
                "%d of %d clips%s in %s are longer than %.3f s and are cropped around their centre "
                "(set modality.adapter.seconds to keep more)",
                cropped,
                len(clips.lengths),
                examined,
                adapter["data_dir"],
                num_samples / rate,
            )
    return {
        "sample_rate": rate,
        "seconds": float(seconds) if seconds is not None else num_samples / rate,
        "frames": frames,
    }


# ------------------------------------------------------------------------------------------- previews


def spectrogram_grid(mels: torch.Tensor, rows: int, scale: int = 2) -> np.ndarray:
    """Normalised log-mels [B, 1, F, T] in [-1, 1] -> an RGB uint8 canvas, low frequencies at the bottom."""
    import matplotlib

    cmap = matplotlib.colormaps["magma"]
    images = (cmap(((mels[:, 0].flip(1).clamp(-1, 1) + 1) / 2).numpy())[..., :3] * 255).round().astype(np.uint8)
    return grid_canvas(images, rows).repeat(scale, 0).repeat(scale, 1)


# ------------------------------------------------------------------------------------------- adapter


class AudioAdapter(ModalityAdapter):
    """Clips [1, samples] in [-1, 1]. The default tokenizer (MelTokenizer) works on a log-mel (n_mels, frames) grid;
    any other (e.g. OobleckTokenizer, a pretrained AutoencoderOobleck) on the waveform (1-D grid, 1-D patch_size)."""

    name = "audio"
    time_axis = -1
    file_suffix = ".wav"
    train_tokenizer_command = "train_tokenizer modality=audio"
    default_tokenizer = "djepa.tokenizers.mel.MelTokenizer"
    folder_items = "readable audio"

    @staticmethod
    def fill_config_defaults(cfg: Any, adapter: Any) -> None:
        """The settings left null (sample rate, clip length, mel frames) from the folder (or the embedded digits'),
        written into the config (`adapter`, cfg.modality.adapter) so that the run keeps them; frames tile the
        tokenizer's latent grid."""
        from omegaconf import OmegaConf, open_dict

        mel = adapter.get("mel")
        if adapter.get("sample_rate") is not None and adapter.get("seconds") is not None:
            if mel is not None and mel.get("frames") is not None:
                return
        blocks = OmegaConf.select(cfg, "tokenizer.block_out_channels")
        patch = adapter.get("patch_size")
        unit = FRAME_UNIT
        if blocks and patch and not isinstance(blocks, str) and not isinstance(patch, str):
            unit = 2 ** (len(blocks) - 1) * int(patch[-1])
        found = folder_audio_defaults(dict(OmegaConf.to_container(adapter, resolve=True)), unit)  # type: ignore[arg-type]
        with open_dict(adapter):
            adapter.sample_rate, adapter.seconds = found["sample_rate"], found["seconds"]
            if mel is None:
                adapter.mel = {}
            adapter.mel.frames = found["frames"]

    def __init__(
        self,
        tokenizer: dict[str, Any],
        patch_size: list[int],
        cache_dir: str,
        sample_rate: int | None = None,
        seconds: float | None = None,
        data_dir: str | None = None,
        count: int = 3000,
        normalize: bool = True,
        mel: dict[str, Any] | None = None,
        seed: int = 0,
        memory_items: int = 5000,
    ):
        super().__init__(tokenizer, patch_size, cache_dir, seed, memory_items)
        mel = dict(mel or {})
        if (
            sample_rate is None or seconds is None or mel.get("frames") is None
        ):  # null: from the folder (or 16 kHz, 1 s)
            found = folder_audio_defaults(
                {"data_dir": data_dir, "sample_rate": sample_rate, "seconds": seconds, "mel": mel, "seed": seed},
                FRAME_UNIT,
            )
            sample_rate, seconds, mel["frames"] = found["sample_rate"], found["seconds"], found["frames"]
        self.sample_rate = int(sample_rate)
        self.seconds = float(seconds)
        self.num_samples = round(self.sample_rate * self.seconds)
        self.data_dir = Path(data_dir) if data_dir else None
        self.count = int(count)
        self.normalize = normalize
        self.mel_settings = MelSettings.from_dict(
            {**mel, "sample_rate": self.sample_rate, "num_samples": self.num_samples}
        )
        self._front_end: MelFrontEnd | None = None

    # ---------------------------------------------------------------- data

    def embedded_class_names(self) -> list[str]:
        return list(DIGIT_WORDS)

    def scan_data_dir(self, root: Path) -> FolderScan:
        return scan_audio_folder(root)

    def folder_dataset(self, scan: FolderScan, augment: bool = False) -> Dataset:
        return audio_folder_dataset(scan, self.sample_rate, self.num_samples, self.normalize)

    def source_id(self) -> dict[str, Any]:
        source = {
            "data_dir": str(self.data_dir.resolve()) if self.data_dir else f"espeak_digits-{self.count}-{self.seed}",
            "sample_rate": self.sample_rate,
            "samples": self.num_samples,
            "normalize": self.normalize,
        }
        # A user folder's latents depend on its files: added, removed or changed ones give a new cache.
        return source | {"files": self.scan().fingerprint} if self.data_dir else source

    def load_dataset(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.data_dir is None:
            return load_spoken_digits(self.cache_dir, self.count, self.seed, self.sample_rate, self.num_samples)
        return self.load_folder()

    # ---------------------------------------------------------------- tokenizer

    @property
    def front_end(self) -> MelFrontEnd:
        """The mel front end with its default normalisation: spectrogram previews and the benchmark classifier."""
        if self._front_end is None:
            self._front_end = MelFrontEnd(self.mel_settings)
        return self._front_end

    @property
    def on_mels(self) -> bool:
        """Whether the tokenizer works on this adapter's log-mels; any other works on the waveform."""
        return issubclass(self.tokenizer_class, MelTokenizer)

    @property
    def media_grid(self) -> tuple[int, ...]:
        if not self.on_mels:
            return (self.num_samples,)
        return (self.mel_settings.n_mels, self.mel_settings.frames)

    def tokenizer_context(self) -> dict[str, Any]:
        return super().tokenizer_context() | {"sample_rate": self.sample_rate}

    def check_tokenizer(self, tokenizer: LatentTokenizer) -> None:
        """A mel tokenizer must have been trained on this adapter's mel front end (its mel.json)."""
        if not isinstance(tokenizer, MelTokenizer):
            return
        ours, theirs = asdict(self.mel_settings), asdict(tokenizer.settings)
        decode_only = ("db_max", "db_range", "griffin_lim_iters", "griffin_lim_momentum", "mel_inverse_iters")
        differ = [k for k in ours if k not in decode_only and ours[k] != theirs[k]]
        if differ:
            raise UsageError(
                f"mel tokenizer {tokenizer.path} was trained with other mel settings "
                f"({', '.join(f'{k}={theirs[k]} not {ours[k]}' for k in differ)}); "
                f"retrain it with `{self.train_tokenizer_command}` or match the settings"
            )

    def decode_tokens(self, tokens: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
        return fit_length(super().decode_tokens(tokens, batch_size), self.num_samples, "start")

    def train_tokenizer(self, settings: dict[str, Any]) -> dict[str, Any]:
        """Fit the mel normalisation and a small AutoencoderKL on the log-mels; save both at tokenizer.path."""
        from djepa.tokenizers.mel import fit_mel_normalisation, write_mel_settings
        from djepa.tokenizers.train_autoencoder import AutoencoderTrainConfig, train_autoencoder_kl

        self.require_default_tokenizer()
        self._tokenizer = None
        audio = self.in_memory_data()[0]  # a user folder: at most memory_items clips
        raw = MelFrontEnd(self.mel_settings)
        db = map_chunks(raw.db, audio)
        fitted = fit_mel_normalisation(db, self.mel_settings)
        front_end = MelFrontEnd(fitted)
        mels = map_chunks(front_end, audio)
        metrics = train_autoencoder_kl(mels, self.tokenizer_config["path"], AutoencoderTrainConfig(**settings))
        write_mel_settings(self.tokenizer_config["path"], fitted)
        return {**metrics, "mel_db_max": fitted.db_max, "mel_db_range": fitted.db_range}

    # ---------------------------------------------------------------- files

    def save(self, media: torch.Tensor, path: Path) -> Path:
        import soundfile as sf

        path = Path(path).with_suffix(self.file_suffix)
        path.parent.mkdir(parents=True, exist_ok=True)
        audio = media.detach().float().cpu().reshape(-1, media.shape[-1]).clamp(-1, 1).numpy().T
        sf.write(str(path), audio, self.sample_rate, subtype="PCM_16")
        return path

    def save_grid(self, media: torch.Tensor, rows: int, path: Path, scale: int = 2) -> Path:
        from PIL import Image

        front_end = self.front_end
        if media.shape[-1] > self.num_samples:  # longer than the window (`seconds=`): a front end of that length
            n, hop = int(media.shape[-1]), self.mel_settings.hop_length
            front_end = MelFrontEnd(replace(self.mel_settings, num_samples=n, frames=1 + n // hop))
        mels = front_end(media.detach().float().cpu())
        path = Path(path).with_suffix(".png")
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(spectrogram_grid(mels, max(1, rows), scale)).save(path)
        return path

    # ---------------------------------------------------------------- held-out clips and continuation

    def heldout_dataset(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Real clips of the default distribution that neither the tokenizer nor the model saw (another seed):
        the round trip's test set. None for a user folder (give `roundtrip_data=DIR` instead)."""
        if self.data_dir is not None:
            return None
        seed = self.seed + HELDOUT_SEED_OFFSET
        return load_spoken_digits(self.cache_dir, HELDOUT_CLIPS, seed, self.sample_rate, self.num_samples)

    @property
    def seconds_per_token_column(self) -> float:
        """Seconds of audio that one step along the token grid's last (time) axis covers."""
        media_unit = self.mel_settings.hop_length / self.sample_rate if self.on_mels else 1.0 / self.sample_rate
        columns = self.token_grid[-1]
        return self.media_grid[-1] / columns * media_unit

    def prime_tokens(self, path: str, options: Mapping[str, Any], count: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Tokens of a real clip, with the columns covering its first `prime_seconds` marked known."""
        file = Path(path)
        if not file.is_file():
            raise FileNotFoundError(f"prime file {file} does not exist")
        try:
            audio = read_audio(file, self.sample_rate)
        except ValueError as err:
            raise UsageError(f"prime file {file}: {err}") from err
        audio = fit_length(audio, self.num_samples, "start")
        if self.normalize:
            audio = peak_normalize(audio)
        tokens = self.to_tokens(self.tokenizer.encode(audio[None]).float().cpu())
        grid = self.token_grid
        seconds = float(options.get("prime_seconds", 0.25))
        keep = min(grid[-1] - 1, max(0, math.ceil(seconds / self.seconds_per_token_column - 1e-6)))
        mask = torch.zeros(grid, dtype=torch.bool)
        mask[..., :keep] = True
        return tokens.expand(count, -1, -1).clone(), mask.flatten()[None].expand(count, -1).clone()
