"""Video: embedded moving MNIST digits or a UCF-101-style folder of clips <-> 3-D (t, h, w) latent grids.

A media item is a clip [T, C, H, W] in [-1, 1]; batches are [B, T, C, H, W].
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import Dataset

from djepa.modalities.base import HELDOUT_SEED_OFFSET, DataError, ModalityAdapter
from djepa.modalities.folder import FileDataset, FolderScan, load_folder, scan_user_folder
from djepa.modalities.image import digit_or_folder_names, load_mnist_digits
from djepa.modalities.pixels import to_uint8, to_unit_range

log = logging.getLogger(__name__)

VIDEO_SUFFIXES = {".mp4", ".avi", ".webm", ".mkv", ".mov", ".m4v", ".mpg", ".mpeg"}


class ClipError(Exception):
    """One file cannot give a clip (unreadable, truncated, too short); the loader skips it."""


# ------------------------------------------------------------------ embedded moving digits


HELDOUT_CLIPS = 300  # continuation and round-trip test clips of the embedded default (30 per digit)


def bounce(start: torch.Tensor, velocity: torch.Tensor, frames: int, limit: int) -> torch.Tensor:
    """Positions [N, frames, 2] moving at `velocity` from `start` and reflecting off 0 and `limit`."""
    t = torch.arange(frames, dtype=torch.float32)[None, :, None]
    raw = start[:, None] + velocity[:, None] * t
    if limit == 0:
        return torch.zeros_like(raw)
    period = 2 * limit
    folded = torch.remainder(raw, period)
    return torch.where(folded > limit, period - folded, folded)


def render_digits(digits: torch.Tensor, positions: torch.Tensor, canvas: int) -> torch.Tensor:
    """Paste digits [N, d, d] (in [-1, 1]) at integer top-left `positions` [N, T, 2] (y, x): [N, T, canvas, canvas]."""
    n, t = positions.shape[:2]
    d = digits.shape[-1]
    out = torch.full((n, t, canvas, canvas), -1.0)
    pos = positions.round().long().clamp(0, canvas - d)
    for i in range(n):
        for k in range(t):
            y, x = pos[i, k].tolist()
            out[i, k, y : y + d, x : x + d] = digits[i]
    return out


def scaled_digits(size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The 5,000 real MNIST digits resized to size x size, in [-1, 1], and their labels."""
    digits, labels = _scaled_digits(size)
    return digits.clone(), labels.clone()


@functools.lru_cache(maxsize=2)
def _scaled_digits(size: int) -> tuple[torch.Tensor, torch.Tensor]:
    digits, labels = load_mnist_digits()
    x = to_unit_range(digits)[:, None]
    if size != 28:
        x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return x[:, 0].clamp(-1, 1), labels


def moving_digits(
    num_clips: int, frames: int, canvas: int, digit_size: int, seed: int, speed: tuple[float, float] = (1.0, 2.0)
) -> tuple[torch.Tensor, torch.Tensor]:
    """Clips [N, T, canvas, canvas] of one real MNIST digit moving with bounces, class-balanced, seeded."""
    digits, labels = scaled_digits(digit_size)
    gen = torch.Generator().manual_seed(int(seed))
    per_class = [torch.nonzero(labels == c)[:, 0] for c in range(10)]
    picks = []
    for c in range(num_clips):
        pool = per_class[c % 10]
        picks.append(pool[torch.randint(len(pool), (1,), generator=gen)])
    index = torch.cat(picks)
    index = index[torch.randperm(num_clips, generator=gen)]
    limit = canvas - digit_size
    start = torch.rand(num_clips, 2, generator=gen) * limit
    angle = torch.rand(num_clips, generator=gen) * 2 * math.pi
    magnitude = speed[0] + torch.rand(num_clips, generator=gen) * (speed[1] - speed[0])
    velocity = torch.stack([angle.sin(), angle.cos()], 1) * magnitude[:, None]
    clips = render_digits(digits[index], bounce(start, velocity, frames, limit), canvas)
    return clips, labels[index]


# ------------------------------------------------------------------ files


def fit_frames(frames: torch.Tensor, size: int, channels: int) -> torch.Tensor:
    """uint8 frames [T, H, W, 3], any size -> [T, channels, size, size] in [-1, 1]: short side resized, centre crop."""
    x = frames.permute(0, 3, 1, 2).float()
    if channels == 1:
        x = (x * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True)
    h, w = x.shape[-2:]
    scale = size / min(h, w)
    nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
    if (nh, nw) != (h, w):
        x = F.interpolate(x, size=(nh, nw), mode="bilinear", antialias=True, align_corners=False)
    top, left = (nh - size) // 2, (nw - size) // 2
    x = x[..., top : top + size, left : left + size]
    return (x / 127.5 - 1.0).clamp(-1, 1)


def decode_decord(path: Path, indices: list[int]) -> np.ndarray:
    import decord  # the optional `decord` extra: no wheel for macOS arm64 or aarch64 Linux

    reader = decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=1)
    if len(reader) <= indices[-1]:
        raise ClipError(f"{len(reader)} frames, needs {indices[-1] + 1}")
    return reader.get_batch(indices).asnumpy()


def decode_pyav(path: Path, indices: list[int]) -> np.ndarray:
    import av

    wanted, frames = set(indices), []
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for i, frame in enumerate(container.decode(stream)):
            if i in wanted:
                frames.append(frame.to_ndarray(format="rgb24"))
            if i >= indices[-1]:
                break
    if len(frames) < len(indices):
        raise ClipError(f"{len(frames)} of the {len(indices)} frames decoded")
    return np.stack(frames)


def video_decoders() -> list[Callable[[Path, list[int]], np.ndarray]]:
    """The decoders a clip is tried with, in order: decord where it is installed (`pip install djepa[decord]`),
    then PyAV, which is always there (a dependency; it writes the MP4s too)."""
    return ([decode_decord] if importlib.util.find_spec("decord") is not None else []) + [decode_pyav]


def read_clip(path: str | Path, frames: int, stride: int, size: int, channels: int) -> torch.Tensor:
    """The first `frames` frames (every `stride`-th) of a video file as [T, C, size, size]; ClipError if impossible."""
    path = Path(path)
    if not path.is_file():
        raise ClipError("not a file")
    if path.stat().st_size == 0:
        raise ClipError("empty file")
    indices = [i * stride for i in range(frames)]
    errors = []
    for decode in video_decoders():
        try:
            return fit_frames(torch.from_numpy(decode(path, indices)), size, channels)
        except ClipError:
            raise
        except Exception as err:  # decoder errors of every kind: try the next decoder, never kill the run
            errors.append(f"{decode.__name__}: {type(err).__name__}: {str(err).strip()[:120]}")
    raise ClipError("; ".join(errors))


def read_video_file(path: Path, frames: int, stride: int, size: int, channels: int) -> torch.Tensor:
    """A clip [T, C, size, size] from one file of a user folder; ClipError for non-video or unusable files."""
    if path.suffix.lower() not in VIDEO_SUFFIXES:
        raise ClipError(f"not a video file ({', '.join(sorted(VIDEO_SUFFIXES))})")
    return read_clip(path, frames, stride, size, channels)


def scan_video_folder(root: Path) -> FolderScan:
    """root/<class>/<clips>, or clips straight in root (one class, `unconditional`)."""
    return scan_user_folder(root, VIDEO_SUFFIXES, skip_hidden=True)


def video_folder_dataset(scan: FolderScan, frames: int, stride: int, size: int, channels: int) -> FileDataset:
    """The clips of a scanned folder, decoded one by one when asked (DataLoader workers), never all at once."""
    read = functools.partial(read_video_file, frames=frames, stride=stride, size=size, channels=channels)
    return FileDataset(scan.files, scan.labels, read, (ClipError,))


def load_video_folder(
    root: Path, frames: int, stride: int, size: int, channels: int
) -> tuple[torch.Tensor, torch.Tensor, list[str], int]:
    """Clips under root/<class>/*.{mp4,avi,webm,mkv,...} stacked in memory (tokenizer training, the benchmark
    classifier); bad, short or non-video files are skipped and counted. Latent caching reads lazily instead."""
    scan = scan_video_folder(root)
    dataset = video_folder_dataset(scan, frames, stride, size, channels)
    return load_folder(scan, dataset, root, f"usable clips of {frames} frames")


def write_mp4(frames: np.ndarray, path: Path, fps: int = 8) -> Path:
    """uint8 frames [T, H, W, 3] (even H, W) -> H.264 MP4 (libx264, yuv420p) through PyAV."""
    import av

    t, h, w, _ = frames.shape
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        # mbtree=0 and one thread: x264's macroblock-tree rate control can encode the same frames into different
        # bytes on AVX-512 CPUs, and seeded samples must give identical files; it costs a little compression.
        stream.options = {"crf": "18", "preset": "fast", "x264-params": "mbtree=0"}
        stream.codec_context.thread_count = 1
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def upscale_even(frames: np.ndarray, min_size: int) -> np.ndarray:
    """Nearest-neighbour upscale [T, H, W, C] so the short side is >= min_size, then pad to even H and W."""
    factor = max(1, math.ceil(min_size / min(frames.shape[1:3])))
    frames = frames.repeat(factor, axis=1).repeat(factor, axis=2)
    pad_h, pad_w = frames.shape[1] % 2, frames.shape[2] % 2
    if pad_h or pad_w:
        frames = np.pad(frames, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="edge")
    return frames


# ------------------------------------------------------------------ adapter

# Tokenizer training and the benchmark classifier keep at most about this many frames of a user folder in memory.
MAX_FRAMES_IN_MEMORY = 16000


class VideoAdapter(ModalityAdapter):
    name = "video"
    time_axis = 0
    file_suffix = ".mp4"
    train_tokenizer_command = "train_tokenizer modality=video"
    default_tokenizer = "djepa.tokenizers.per_frame.PerFrameTokenizer"

    def __init__(
        self,
        tokenizer: dict[str, Any],
        patch_size: list[int],
        cache_dir: str,
        frames: int = 16,
        frame_stride: int = 1,
        image_size: int = 32,
        channels: int = 1,
        data_dir: str | None = None,
        num_clips: int = 3000,
        digit_size: int = 20,
        fps: int = 8,
        seed: int = 0,
        memory_items: int = 2000,
    ):
        super().__init__(tokenizer, patch_size, cache_dir, seed, memory_items)
        self.frames = int(frames)
        self.frame_stride = max(1, int(frame_stride))
        self.image_size = int(image_size)
        self.channels = int(channels)
        self.data_dir = Path(data_dir) if data_dir else None
        self.num_clips = int(num_clips)
        self.digit_size = min(int(digit_size), self.image_size)
        self.fps = int(fps)
        self.folder_items = f"usable clips of {self.frames} frames"

    # --------------------------------------------------------------- data

    def embedded_class_names(self) -> list[str]:
        return digit_or_folder_names(None)

    def scan_data_dir(self, root: Path) -> FolderScan:
        return scan_video_folder(root)

    def folder_dataset(self, scan: FolderScan, augment: bool = False) -> Dataset:
        return video_folder_dataset(scan, self.frames, self.frame_stride, self.image_size, self.channels)

    @property
    def media_grid(self) -> tuple[int, ...]:
        return (self.frames, self.image_size, self.image_size)

    def source_id(self) -> dict[str, Any]:
        source: dict[str, Any] = {
            "frames": self.frames,
            "size": self.image_size,
            "channels": self.channels,
        }
        if self.data_dir:
            # The folder's files (paths, sizes, mtimes): added, removed or changed clips give a new cache.
            return source | {
                "data_dir": str(self.data_dir.resolve()),
                "stride": self.frame_stride,
                "files": self.scan().fingerprint,
            }
        return source | {
            "data_dir": "moving_mnist_5k",
            "clips": self.num_clips,
            "digit_size": self.digit_size,
            "seed": self.seed,
        }

    def _expand(self, x: torch.Tensor, dim: int) -> torch.Tensor:
        return x.unsqueeze(dim).expand(*[-1] * dim, self.channels, *[-1] * (x.dim() - dim)).contiguous()

    def load_dataset(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.data_dir is None:
            clips, labels = moving_digits(self.num_clips, self.frames, self.image_size, self.digit_size, self.seed)
            return self._expand(clips, 2), labels
        return self.load_folder()

    def heldout_dataset(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Clips of the default distribution that neither the tokenizer nor the model saw (new trajectories from
        another seed; the digit images come from the same embedded MNIST set). None for a user folder."""
        if self.data_dir is not None:
            return None
        clips, labels = moving_digits(
            HELDOUT_CLIPS, self.frames, self.image_size, self.digit_size, self.seed + HELDOUT_SEED_OFFSET
        )
        return self._expand(clips, 2), labels

    def folder_frames(self, max_frames: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Frames [M, C, H, W] and their clips' labels from at most `memory_items` clips of the user folder (a
        seeded random subset), each clip's frames thinned evenly as it is read so that about `max_frames` stay."""
        clips = min(len(self.scan().files), self.memory_items)
        step = max(1, math.ceil(clips * self.frames / max_frames))
        kept, labels = self.folder_subset(per_item=lambda clip: clip[::step].clone())
        return kept.flatten(0, 1), labels.repeat_interleave(kept.shape[1])

    def tokenizer_training_data(self, max_frames: int = MAX_FRAMES_IN_MEMORY) -> torch.Tensor:
        """Frames [M, C, H, W] of the dataset's clips (evenly thinned to at most `max_frames`; of a user folder,
        from at most `memory_items` clips)."""
        if self.data_dir is not None:
            return self.folder_frames(max_frames)[0]
        frames = self.load_dataset()[0].flatten(0, 1)
        step = max(1, math.ceil(len(frames) / max_frames))
        return frames[::step].contiguous()

    # --------------------------------------------------------------- tokenizer

    def tokenizer_context(self) -> dict[str, Any]:
        return super().tokenizer_context() | {"channels": self.channels}

    def train_tokenizer(self, settings: dict[str, Any]) -> dict[str, Any]:
        """Train the default per-frame AutoencoderKL on frames of the clips; save it at tokenizer.path."""
        from djepa.tokenizers.train_autoencoder import AutoencoderTrainConfig, train_autoencoder_kl

        self.require_default_tokenizer()
        self._tokenizer = None
        return train_autoencoder_kl(
            self.tokenizer_training_data(), self.tokenizer_config["path"], AutoencoderTrainConfig(**settings)
        )

    # --------------------------------------------------------------- continuation

    def prime_tokens(self, path: str, options: Mapping[str, Any], count: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Tokens of a real clip with those of its first `options["prime_frames"]` frames marked known."""
        try:
            clip = read_clip(path, self.frames, self.frame_stride, self.image_size, self.channels)
        except ClipError as err:
            raise DataError(f"prime={path}: cannot read {self.frames} frames from it ({err})") from err
        mean, _ = self.encode_media(clip[None])
        tokens = self.to_tokens(mean.float().cpu())[0]
        mask, _ = self.prime_mask(int(options.get("prime_frames", 4)))
        return tokens.expand(count, -1, -1).clone(), mask.expand(count, -1).clone()

    def prime_mask(self, frames: int) -> tuple[torch.Tensor, int]:
        """Which tokens [N] a prime of `frames` frames makes known (whole token rows in time, at least one row
        and one row short of all), and how many frames those rows cover."""
        t_tokens = self.token_grid[0]
        down_t = self.tokenizer.downsample[0]
        latent_frames = frames if down_t == 1 else 1 + max(0, frames - 1) // down_t
        keep = min(max(1, round(latent_frames / self.patch_size[0])), t_tokens - 1) if t_tokens > 1 else 0
        mask = torch.zeros(math.prod(self.token_grid), dtype=torch.bool)
        mask[: keep * math.prod(self.token_grid[1:])] = True
        kept_latent_frames = keep * self.patch_size[0]
        kept_frames = kept_latent_frames if down_t == 1 else 1 + (kept_latent_frames - 1) * down_t
        return mask, min(kept_frames, self.frames)

    # --------------------------------------------------------------- writing

    def _frames_uint8(self, clip: torch.Tensor) -> np.ndarray:
        arr = to_uint8(clip)  # [T, H, W, C]
        return np.repeat(arr, 3, axis=-1) if arr.shape[-1] == 1 else arr

    def save(self, media: torch.Tensor, path: Path, min_size: int = 64) -> Path:
        """One clip [T, C, H, W] as an H.264 MP4 (nearest-upscaled to an even size of at least `min_size`)."""
        path = Path(path).with_suffix(self.file_suffix)
        path.parent.mkdir(parents=True, exist_ok=True)
        return write_mp4(upscale_even(self._frames_uint8(media), min_size), path, self.fps)

    def save_grid(self, media: torch.Tensor, rows: int, path: Path, scale: int = 2, strip: int = 8) -> Path:
        """A PNG with `rows` rows of clips, each clip a strip of `strip` evenly spaced frames, plus an animated GIF
        of the same layout (all frames) beside it. Returns the PNG's path."""
        arr = np.stack([self._frames_uint8(clip) for clip in media])  # [B, T, H, W, 3]
        b, t, h, w, c = arr.shape
        cols = -(-b // rows)
        shown = np.unique(np.linspace(0, t - 1, min(strip, t)).round().astype(int))

        def layout(frames_of_clip: list[np.ndarray]) -> np.ndarray:
            k = len(frames_of_clip[0])
            cw = k * (w + 1) + 3
            canvas = np.full((rows * (h + 4), cols * cw, c), 40, dtype=np.uint8)
            for i in range(b):
                r, q = divmod(i, cols)
                for j, frame in enumerate(frames_of_clip[i]):
                    y, x = r * (h + 4) + 2, q * cw + 2 + j * (w + 1)
                    canvas[y : y + h, x : x + w] = frame
            return canvas.repeat(scale, 0).repeat(scale, 1)

        path = Path(path).with_suffix(".png")
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(layout([arr[i, shown] for i in range(b)])).save(path)
        gif = [Image.fromarray(layout([arr[i, k : k + 1] for i in range(b)])) for k in range(t)]
        gif[0].save(path.with_suffix(".gif"), save_all=True, append_images=gif[1:], duration=1000 // self.fps, loop=0)
        return path
