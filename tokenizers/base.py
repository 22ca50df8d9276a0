"""The latent tokenizer interface: media tensors <-> unit-variance latent grids."""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, Protocol

import torch

from djepa.errors import UsageError
from djepa.io import tree_sha256

_HASHES: dict[tuple, str] = {}


def weights_hash(path: str | Path | None) -> str | None:
    """sha256 over a tokenizer's files (a folder or one file): names and contents, so retrained or replaced
    weights give another latent cache. Memoised per (path, sizes, mtimes): a large VAE is read once per process."""
    if path is None or not Path(path).exists():
        return None
    root = Path(path)
    files = sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else [root]
    stamp = (str(root.resolve()), *((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in files))
    if stamp not in _HASHES:
        _HASHES[stamp] = tree_sha256(root)  # the same identity the pipeline checks exports and runs by
    return _HASHES[stamp]


class TokenizerNotFound(FileNotFoundError):
    """A configured tokenizer path is missing; the message says how to make it."""


class PretrainedModel(Protocol):
    """A diffusers model class, as `load_local_model` uses it."""

    @classmethod
    def from_pretrained(cls, *args: Any, **kwargs: Any) -> Any: ...


def load_local_model(cls: type[PretrainedModel], path: str | Path, missing: str) -> Any:
    """A diffusers model of class `cls` from a local `save_pretrained` directory (or a single-file checkpoint where
    the class reads one), never from the hub; `missing` is the message when `path` does not exist."""
    path = Path(path)
    if not path.exists():
        raise TokenizerNotFound(missing)
    # Nothing is downloaded at run time: a config that points at the hub fails instead of fetching.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if path.is_file():
        if not hasattr(cls, "from_single_file"):
            raise TokenizerNotFound(f"{cls.__name__} loads from a save_pretrained directory, not the file {path}")
        if path.suffix != ".safetensors":  # .bin / .ckpt / .pt are pickles: never read from a path in a config
            raise UsageError(
                f"modality.adapter.tokenizer.path={path}: a single-file tokenizer must be .safetensors, pickle "
                "formats (.bin, .ckpt, .pt) are never loaded; convert it (convert_tokenizer) to a safetensors folder"
            )
    try:
        if path.is_file():
            # diffusers' FromOriginalModelMixin: on the concrete classes, not on the type variable's bound
            return cls.from_single_file(  # type: ignore[attr-defined]
                str(path), local_files_only=True, low_cpu_mem_usage=False
            )
        return cls.from_pretrained(str(path), local_files_only=True, low_cpu_mem_usage=False)
    except (OSError, ValueError, RuntimeError, KeyError) as err:  # a damaged or foreign file: one line, not diffusers'
        first_line = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise UsageError(f"modality.adapter.tokenizer.path={path} cannot be loaded: {first_line}") from err


class LatentTokenizer(ABC):
    """`encode(x) -> z`, `decode(z) -> x`, with z = (latent - shift) * scale of unit variance."""

    latent_channels: int
    downsample: tuple[int, ...]
    shift: float = 0.0
    scale: float = 1.0

    @abstractmethod
    def encode_moments(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Scaled posterior mean and std, each [B, latent_channels, *grid]."""

    @abstractmethod
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Media tensor from scaled latents."""

    def encode(self, x: torch.Tensor, sample: bool = False) -> torch.Tensor:
        mean, std = self.encode_moments(x)
        return mean + std * torch.randn_like(std) if sample else mean

    def to(self, device: str | torch.device) -> LatentTokenizer:
        """Move the networks to `device` (encoding then runs there); tokenizers without weights stay as they are."""
        for name in ("vae", "frame"):
            inner = getattr(self, name, None)
            if inner is not None:
                inner.to(device)
        return self

    def latent_grid(self, media_grid: tuple[int, ...]) -> tuple[int, ...]:
        """Latent grid for a media grid (image H, W; frames T, H, W; ...)."""
        return tuple(size // factor for size, factor in zip(media_grid, self.downsample))
