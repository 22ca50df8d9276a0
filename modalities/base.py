"""The modality adapter interface and what every adapter shares: patchify, latent caching."""

from __future__ import annotations

import hashlib
import json
import math
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from tqdm import tqdm

from djepa.checkpoint import atomic_write_json, atomic_write_safetensors
from djepa.errors import UsageError
from djepa.tokenizers.base import LatentTokenizer
from djepa.trainer import TokenData


class DataError(UsageError):
    """A user data source is unusable (missing, empty, no class folders); the message names it."""


def patchify(latents: torch.Tensor, patch: tuple[int, ...]) -> torch.Tensor:
    """[B, C, *grid*patch] -> tokens [B, N, C * prod(patch)] for a grid of any rank."""
    b, c, *sizes = latents.shape
    if len(patch) != len(sizes):
        raise ValueError(f"patch size {patch} does not match a {len(sizes)}-D latent grid")
    grid = [s // p for s, p in zip(sizes, patch)]
    shape = [b, c] + [v for g, p in zip(grid, patch) for v in (g, p)]
    x = latents.reshape(shape)
    k = len(sizes)
    perm = [0] + [2 + 2 * i for i in range(k)] + [1] + [3 + 2 * i for i in range(k)]
    return x.permute(perm).reshape(b, math.prod(grid), c * math.prod(patch))


def unpatchify(tokens: torch.Tensor, grid: tuple[int, ...], patch: tuple[int, ...], channels: int) -> torch.Tensor:
    """Inverse of `patchify`: tokens [B, N, D] -> latents [B, C, *grid*patch]."""
    b = tokens.shape[0]
    k = len(grid)
    x = tokens.reshape([b, *grid, channels, *patch])
    perm = [0, k + 1] + [v for i in range(k) for v in (1 + i, k + 2 + i)]
    return x.permute(perm).reshape([b, channels] + [g * p for g, p in zip(grid, patch)])


class ModalityAdapter(ABC):
    """Builds the dataset, owns the tokenizer, maps latents <-> tokens and writes media files."""

    name: str
    file_suffix: str
    train_tokenizer_command: str

    def __init__(self, tokenizer: dict[str, Any], patch_size: list[int], cache_dir: str, seed: int = 0):
        self.tokenizer_config = dict(tokenizer)
        self.patch_size = tuple(int(p) for p in patch_size)
        self.cache_dir = Path(cache_dir)
        self.seed = seed
        self._tokenizer: LatentTokenizer | None = None
        self._class_names: list[str] | None = None  # set by load_dataset for user folders
        self.skipped_files = 0

    # --------------------------------------------------------------- to implement

    @abstractmethod
    def load_dataset(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Media tensors [M, ...] and class ids [M]."""

    @abstractmethod
    def default_class_names(self) -> list[str]:
        """Class names before the dataset is loaded: the embedded default's, or the user folder's subfolders."""

    @property
    @abstractmethod
    def media_grid(self) -> tuple[int, ...]:
        """The media axes the tokenizer downsamples (H, W for images)."""

    @abstractmethod
    def build_tokenizer(self) -> LatentTokenizer: ...

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
        return torch.cat(
            [self.tokenizer.decode(latents[i : i + batch_size]).cpu() for i in range(0, len(latents), batch_size)]
        )

    def classifier_data(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Real examples and labels to train the benchmark classifier on (the dataset by default)."""
        return self.load_dataset()

    def classifier_input(self, media: torch.Tensor) -> tuple[torch.Tensor, int]:
        """What the classifier sees for decoded media, and how many classifier rows make one item
        (video: one row per frame, logits averaged per clip)."""
        return media, 1

    def media_metrics(self, media: torch.Tensor) -> dict[str, float]:
        """Modality-specific measurements of decoded media beyond the classifier (video: motion)."""
        return {}

    def prime_tokens(self, path: str, cfg: Any, count: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Known tokens and mask [count, N(, D)] from a real file, for continuation sampling."""
        raise NotImplementedError(f"modality {self.name} has no continuation (prime=...) support")

    def encode_media(self, media: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior mean and std latents of media items (tokenizers may override for speed)."""
        return self.tokenizer.encode_moments(media)

    def cache_key(self) -> str:
        tok = getattr(self.tokenizer, "path", None)
        stamp = None
        if tok is not None and Path(tok).exists():
            files = sorted(p for p in Path(tok).rglob("*") if p.is_file())
            stamp = [(p.name, p.stat().st_size, int(p.stat().st_mtime)) for p in files]
        blob = json.dumps(
            {"source": self.source_id(), "tokenizer": self.tokenizer_config, "stamp": stamp},
            sort_keys=True,
            default=str,
        )
        return f"{self.name}-{hashlib.sha256(blob.encode()).hexdigest()[:16]}"

    def token_data(self, batch_size: int = 128) -> TokenData:
        """Latents of the whole dataset as tokens; the latents are encoded once and cached on disk."""
        path = self.cache_dir / f"{self.cache_key()}.safetensors"
        if path.is_file():
            cached = load_file(str(path))
        else:
            media, labels = self.load_dataset()
            means, stds = [], []
            for i in tqdm(range(0, len(media), batch_size), desc=f"caching {self.name} latents", leave=False):
                mean, std = self.encode_media(media[i : i + batch_size])
                means.append(mean.float().cpu())
                stds.append(std.float().cpu())
            cached = {"mean": torch.cat(means), "std": torch.cat(stds), "labels": labels.long()}
            atomic_write_safetensors(path, cached)
            atomic_write_json(
                path.with_suffix(".json"),
                {"source": self.source_id(), "items": len(labels), "skipped_files": self.skipped_files},
            )
        # The cache holds latents, not tokens, so another patch size reuses it.
        return TokenData(self.to_tokens(cached["mean"]), self.to_tokens(cached["std"]), cached["labels"])
