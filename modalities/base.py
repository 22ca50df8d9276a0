"""The modality adapter interface and what every adapter shares: patchify, latent caching."""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from einops import rearrange
from torch.utils.data import Dataset, Subset

from djepa import builders
from djepa.chunks import map_chunks
from djepa.engine import distributed
from djepa.engine.data import TokenData
from djepa.errors import UsageError
from djepa.modalities.folder import DataError, FolderScan, MappedDataset, MemoryDataset, dataset_length, load_folder
from djepa.modalities.latent_cache import ENCODED, UNUSABLE, LatentCache, encode_into_cache
from djepa.modalities.latent_cache import FORMAT as LATENT_CACHE_FORMAT
from djepa.tokenizers.base import LatentTokenizer, weights_hash

log = logging.getLogger(__name__)


def _patch_axes(rank: int) -> tuple[str, str, str]:
    """einops axis names of a rank-k grid: the latent layout, the token-index group and the patch group."""
    grid = " ".join(f"(g{i} p{i})" for i in range(rank))
    return f"b c {grid}", " ".join(f"g{i}" for i in range(rank)), " ".join(f"p{i}" for i in range(rank))


def patchify(latents: torch.Tensor, patch: tuple[int, ...]) -> torch.Tensor:
    """[B, C, *grid*patch] -> tokens [B, N, C * prod(patch)] for a grid of any rank (row-major over the grid,
    each token a patch's channels then its pixels)."""
    if len(patch) != latents.dim() - 2:
        raise ValueError(f"patch size {patch} does not match a {latents.dim() - 2}-D latent grid")
    media, grid, pixels = _patch_axes(len(patch))
    return rearrange(latents, f"{media} -> b ({grid}) (c {pixels})", **{f"p{i}": p for i, p in enumerate(patch)})


def unpatchify(tokens: torch.Tensor, grid: tuple[int, ...], patch: tuple[int, ...], channels: int) -> torch.Tensor:
    """Inverse of `patchify`: tokens [B, N, D] -> latents [B, C, *grid*patch]."""
    media, cells, pixels = _patch_axes(len(grid))
    sizes = {f"g{i}": g for i, g in enumerate(grid)} | {f"p{i}": p for i, p in enumerate(patch)}
    return rearrange(tokens, f"b ({cells}) (c {pixels}) -> {media}", c=channels, **sizes)


def encode_device(device: str | torch.device | None) -> torch.device:
    """Where caching runs the tokenizer: as asked, else this rank's current GPU when there is one, else the CPU."""
    if device is not None:
        return torch.device(device)
    return torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")


# Held-out items of an embedded default come from the same generator with seed + this offset.
HELDOUT_SEED_OFFSET = 10007


class ModalityAdapter(ABC):
    """Builds the dataset, owns the tokenizer, maps latents <-> tokens and writes media files: the interface the
    core calls (djepa.engine.adapter.Adapter) plus what the adapters share."""

    name: str
    file_suffix: str
    train_tokenizer_command: str
    # The tokenizer of a config that names none (image configs before `_target_`); `train_tokenizer` makes it.
    default_tokenizer: str
    # What a user folder holds, for the error when none of its files is usable (e.g. "readable images").
    folder_items: str
    data_dir: Path | None = None  # a user folder root/<class>/<files>; None: the embedded default
    time_axis: int | None = None  # the token grid's time axis (video, audio): prefix masks and continuation

    def __init__(
        self, tokenizer: dict[str, Any], patch_size: list[int], cache_dir: str, seed: int = 0, memory_items: int = 10000
    ):
        # A tokenizer entry without `_target_` is the adapter's default tokenizer with those arguments.
        self.tokenizer_config = dict(tokenizer)
        if "_target_" not in self.tokenizer_config and self.default_tokenizer:
            self.tokenizer_config = {"_target_": self.default_tokenizer, **self.tokenizer_config}
        self.patch_size = tuple(int(p) for p in patch_size)
        self.cache_dir = Path(cache_dir)
        self.seed = seed
        if int(memory_items) < 1:
            raise DataError(f"modality.adapter.memory_items must be at least 1, got {memory_items}")
        # User folders: the most items tokenizer training and the benchmark classifier hold in memory.
        self.memory_items = int(memory_items)
        self._tokenizer: LatentTokenizer | None = None
        self._class_names: list[str] | None = None  # set by load_dataset for user folders
        self.skipped_files = 0
        self._scan: FolderScan | None = None

    # --------------------------------------------------------------- to implement

    @abstractmethod
    def load_dataset(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Media tensors [M, ...] and class ids [M]."""

    @abstractmethod
    def train_tokenizer(self, settings: dict[str, Any]) -> dict[str, Any]:
        """Train the default tokenizer with the `tokenizer` config section, save it at tokenizer.path, return its
        metrics (`require_default_tokenizer` refuses a pretrained one)."""

    @abstractmethod
    def embedded_class_names(self) -> list[str]:
        """The embedded default's class names."""

    @abstractmethod
    def scan_data_dir(self, root: Path) -> FolderScan:
        """The candidate files of a user folder, by class."""

    @abstractmethod
    def folder_dataset(self, scan: FolderScan, augment: bool = False) -> Dataset:
        """The items of a scanned user folder, read one by one when asked (DataLoader workers), never all at
        once; `augment` adds the copies the latent cache keeps (image: mirrored ones)."""

    @property
    @abstractmethod
    def media_grid(self) -> tuple[int, ...]:
        """The media axes the tokenizer downsamples (H, W for images)."""

    def tokenizer_context(self) -> dict[str, Any]:
        """What this adapter offers every tokenizer's constructor; each takes the arguments it names."""
        return {"how_to_make": self.train_tokenizer_command}

    def check_tokenizer(self, tokenizer: LatentTokenizer) -> None:
        """Refuse a tokenizer that does not fit this adapter's settings (one-line UsageError); all fit by default."""
        return None

    @property
    def tokenizer_class(self) -> type:
        """The configured tokenizer's class, without loading it (its weights may not exist yet)."""
        return builders.resolve(self.tokenizer_config, "modality.adapter.tokenizer", builders.TOKENIZER)

    def build_tokenizer(self) -> LatentTokenizer:
        """The tokenizer `modality.adapter.tokenizer._target_` names, built from that entry (djepa.builders)."""
        tokenizer = builders.tokenizer(self.tokenizer_config, self.tokenizer_context())
        self.check_tokenizer(tokenizer)
        return tokenizer

    def require_default_tokenizer(self) -> None:
        """`train_tokenizer` makes the default tokenizer only; any other is pretrained."""
        default = builders.resolve({"_target_": self.default_tokenizer}, "default tokenizer", builders.TOKENIZER)
        if self.tokenizer_class is not default:
            raise UsageError(
                f"train_tokenizer trains {self.default_tokenizer.rsplit('.', 1)[-1]}; "
                f"modality.adapter.tokenizer._target_={self.tokenizer_config['_target_']} is a pretrained model: "
                "point modality.adapter.tokenizer.path at its local save_pretrained directory"
            )

    @abstractmethod
    def save(self, media: torch.Tensor, path: Path) -> Path:
        """Write one decoded item to `path` (suffix added if missing)."""

    @abstractmethod
    def save_grid(self, media: torch.Tensor, rows: int, path: Path) -> Path:
        """A preview of a batch laid out in `rows` rows."""

    @abstractmethod
    def source_id(self) -> dict[str, Any]:
        """What identifies the dataset, for the latent cache key."""

    # --------------------------------------------------------------- shared

    def default_class_names(self) -> list[str]:
        """Class names before the dataset is loaded: the embedded default's, or the user folder's subfolders."""
        return self.scan().class_names if self.data_dir else self.embedded_class_names()

    def scan(self) -> FolderScan:
        """The user folder's files, listed once per adapter so the cache key and the dataset agree."""
        if self._scan is None:
            assert self.data_dir is not None
            self._scan = self.scan_data_dir(self.data_dir)
        return self._scan

    def load_folder(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The user folder's usable items in memory, with labels; unusable files are skipped and counted."""
        assert self.data_dir is not None
        scan = self.scan()
        items, labels, self._class_names, self.skipped_files = load_folder(
            scan, self.folder_dataset(scan), self.data_dir, self.folder_items
        )
        if self.skipped_files:
            log.warning("%d unusable files skipped in %s", self.skipped_files, self.data_dir)
        return items, labels

    def folder_subset(
        self, augment: bool = False, per_item: Callable[[torch.Tensor], torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """At most `memory_items` items of the user folder in memory, with labels: all of them, in order, when
        the folder holds no more (as `load_folder`), else a random subset seeded by `seed`, kept in folder order.
        Only the chosen files are read, one at a time (`per_item` applied to each as it is read), so memory
        does not grow with the folder. Unusable files among them are skipped and counted."""
        assert self.data_dir is not None
        scan = self.scan()
        dataset: Dataset = self.folder_dataset(scan, augment)
        total = dataset_length(dataset)
        if total > self.memory_items:
            order = torch.randperm(total, generator=torch.Generator().manual_seed(int(self.seed)))
            dataset = Subset(dataset, order[: self.memory_items].sort().values.tolist())
            log.info(
                "%s: %d of %d items read into memory (modality.adapter.memory_items)",
                scan.root,
                self.memory_items,
                total,
            )
        if per_item is not None:
            dataset = MappedDataset(dataset, per_item)
        items, labels, self._class_names, self.skipped_files = load_folder(
            scan, dataset, self.data_dir, self.folder_items
        )
        if self.skipped_files:
            log.warning("%d unusable files skipped in %s", self.skipped_files, self.data_dir)
        return items, labels

    def in_memory_data(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Items and labels in memory for tokenizer training and the benchmarks: the embedded default whole
        (`load_dataset`), a user folder's bounded subset (`folder_subset`, with the cached copies, e.g. mirrored)."""
        return self.folder_subset(augment=True) if self.data_dir is not None else self.load_dataset()

    @property
    def class_names(self) -> list[str]:
        if self._class_names is None:
            self._class_names = self.default_class_names()
        return self._class_names

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def tokenizer(self) -> LatentTokenizer:
        if self._tokenizer is None:
            self._tokenizer = self.build_tokenizer()
        return self._tokenizer

    @property
    def latent_grid(self) -> tuple[int, ...]:
        return self.tokenizer.latent_grid(self.media_grid)

    @property
    def token_grid(self) -> tuple[int, ...]:
        grid = self.latent_grid
        if any(g % p for g, p in zip(grid, self.patch_size)):
            raise ValueError(f"{self.name}.patch_size {self.patch_size} does not divide the latent grid {grid}")
        return tuple(g // p for g, p in zip(grid, self.patch_size))

    @property
    def token_dim(self) -> int:
        return self.tokenizer.latent_channels * math.prod(self.patch_size)

    def to_tokens(self, latents: torch.Tensor) -> torch.Tensor:
        return patchify(latents, self.patch_size)

    def to_latents(self, tokens: torch.Tensor) -> torch.Tensor:
        return unpatchify(tokens, self.token_grid, self.patch_size, self.tokenizer.latent_channels)

    def decode_tokens(self, tokens: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
        latents = self.to_latents(tokens.float())
        return map_chunks(lambda z: self.tokenizer.decode(z).cpu(), latents, batch_size)

    def heldout_dataset(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Real items nobody trained on, where the adapter can make them (the audio default synthesises new
        clips); None: the benchmarks fall back to the dataset itself."""
        return None

    def prime_tokens(self, path: str, options: Mapping[str, Any], count: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Known tokens and mask [count, N(, D)] from a real file, for continuation sampling; `options` holds
        how much of the file stays (`prime_frames` for video, `prime_seconds` for audio)."""
        raise UsageError(f"prime={path}: {self.name} models have no continuation (prime=...) yet; video and audio do")

    def encode_media(self, media: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior mean and std latents of media items (tokenizers may override for speed)."""
        return self.tokenizer.encode_moments(media)

    def media_dataset(self) -> Dataset:
        """Items (index, media or None if unusable, label) for latent caching: a user folder's files read lazily,
        the embedded default generated in memory."""
        if self.data_dir is not None:
            return self.folder_dataset(self.scan(), augment=True)
        return MemoryDataset(*self.load_dataset())

    def cache_key(self) -> str:
        """Names the latent cache by everything the latents depend on: the source (for a user folder its
        file list with sizes and mtimes), the adapter settings, the tokenizer settings and its weights."""
        blob = json.dumps(
            {
                "cache_format": LATENT_CACHE_FORMAT,
                "source": self.source_id(),
                "tokenizer": self.tokenizer_config,
                "weights": weights_hash(getattr(self.tokenizer, "path", None)),
            },
            sort_keys=True,
            default=str,
        )
        return f"{self.name}-{hashlib.sha256(blob.encode()).hexdigest()[:16]}"

    def token_data(
        self,
        batch_size: int = 128,
        device: str | torch.device | None = None,
        workers: int | None = None,
        shard: bool = False,
    ) -> TokenData:
        """The dataset's latents as tokens, read on demand from the on-disk cache (built first if missing).

        Caching runs the tokenizer on `device` (default: this rank's GPU when there is one) in batches read
        through a DataLoader with `workers` processes; an interrupted run resumes. With `shard`, every rank
        must call this together and each encodes its share; without, the caller alone encodes everything.
        """
        cache = LatentCache(self.cache_dir / self.cache_key())
        if cache.complete and (not shard or distributed.is_main()):
            problem = cache.problem()
            if problem is not None:
                log.warning("latent cache %s is damaged (%s): removing it and encoding it again", cache.dir, problem)
                cache.clear()
        if shard:
            distributed.barrier()
        if not cache.complete:
            self._build_cache(cache, batch_size, encode_device(device), workers, shard)
        meta = cache.meta
        self.skipped_files = int(meta.get("skipped_files", 0))
        if meta.get("class_names"):
            self._class_names = list(meta["class_names"])
        self.check_classes(cache)
        # The cache holds latents, not tokens, so another patch size reuses it.
        return cache.token_data(self.to_tokens)

    def check_classes(self, cache: LatentCache) -> None:
        """A user folder's class none of whose files is usable would be a label the model is asked for but never
        sees: refused as an empty class folder is, on the run that builds the cache and on every later one."""
        if self.data_dir is None:
            return
        state, labels = cache.state(), cache.labels()
        usable = np.bincount(labels[state == ENCODED], minlength=self.num_classes)
        for label, name in enumerate(self.class_names):
            if usable[label] == 0:
                files = sum(1 for y in self.scan().labels if y == label)
                raise DataError(
                    f"class folder {self.data_dir / name} holds no {self.folder_items} ({files} files "
                    "skipped): replace its files or remove the folder"
                )

    def _build_cache(
        self, cache: LatentCache, batch_size: int, device: torch.device, workers: int | None, shard: bool
    ) -> None:
        rank, world = (distributed.rank(), distributed.world_size()) if shard else (0, 1)
        dataset = self.media_dataset()
        if workers is None:
            workers = 0 if isinstance(dataset, MemoryDataset) else min(8, max(0, (os.cpu_count() or 1) - 1))
        tokenizer = self.tokenizer.to(device)
        desc = f"caching {self.name} latents"
        if rank == 0:
            count = dataset_length(dataset)
            resumed = cache.prepare(count, (tokenizer.latent_channels, *self.latent_grid))
            if resumed:
                desc += f" (resuming, {int((cache.state() != 0).sum())} of {count} done)"
        if shard:
            distributed.barrier()
        todo = cache.pending(rank, world)
        if shard:
            distributed.barrier()  # every rank has its share before any rank writes
        encode_into_cache(cache, dataset, todo, self.encode_media, device, batch_size, workers, desc, rank == 0)
        if shard:
            distributed.barrier()
        if rank == 0:
            # A safety net: rank 0 encodes anything still pending (nothing, when every share completed).
            encode_into_cache(cache, dataset, cache.pending(), self.encode_media, device, batch_size, workers, desc)
            self._finish_cache(cache, getattr(dataset, "copies", 1))
        if shard:
            distributed.barrier()

    def _finish_cache(self, cache: LatentCache, copies: int) -> None:
        """Count the skipped files (each bad file is `copies` items), refuse an empty result, mark complete."""
        state = cache.state()
        source = self.source_id().get("data_dir")
        skipped = int((state == UNUSABLE).sum()) // copies
        if not (state == ENCODED).any():
            raise DataError(f"{source} holds no usable items ({skipped} files skipped)")
        if skipped:
            log.warning("%d unusable files skipped in %s", skipped, source)
        meta = {"source": self.source_id(), "items": int((state == ENCODED).sum()), "skipped_files": skipped}
        cache.finish(meta | {"class_names": self.class_names})
