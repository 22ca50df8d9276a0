"""The modality adapter: the interface the core calls (`Adapter`), the adapter of a composed config, built from
`modality.adapter._target_` (djepa.builders), and its default tokenizer, trained on first use.

The core never imports a modality: adapters arrive as objects named by `_target_` in the config.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, cast

from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from djepa import builders

if TYPE_CHECKING:  # annotations only: `import djepa.cli.config` stays free of torch
    import torch

    from djepa.engine.data import TokenData


# The one class of an adapter whose data has no classes (a folder without class subfolders): its model is
# unconditional, so classifier-free guidance has no other class to contrast and sampling uses guidance 1.
UNCONDITIONAL = "unconditional"


def is_unconditional(class_names: list[str]) -> bool:
    """Whether a model with these classes is unconditional (the one class `unconditional`)."""
    return list(class_names) == [UNCONDITIONAL]


class Adapter(Protocol):
    """What the core (train, train_tokenizer, the pipeline, sample, export) calls on a modality adapter: the
    contract of any class `modality.adapter._target_` names. djepa.modalities.base.ModalityAdapter implements
    it, with what the adapters share besides (patchify, the latent cache, user folders); the benchmarks, which
    sit beside the core, use more of it."""

    @property
    def name(self) -> str:
        """The modality: image, video or audio."""
        ...

    @property
    def train_tokenizer_command(self) -> str:
        """The command that trains this adapter's default tokenizer, for messages."""
        ...

    @property
    def class_names(self) -> list[str]: ...

    @property
    def num_classes(self) -> int: ...

    @property
    def token_grid(self) -> tuple[int, ...]: ...

    @property
    def token_dim(self) -> int: ...

    @property
    def time_axis(self) -> int | None:
        """The token grid's time axis (video, audio) or None: prefix masks and continuation."""
        ...

    @property
    def tokenizer(self) -> object:
        """The latent tokenizer, loaded on first use (the core only makes it load)."""
        ...

    def train_tokenizer(self, settings: dict[str, Any]) -> dict[str, Any]:
        """Train the default tokenizer with the `tokenizer` config section; its metrics."""
        ...

    def token_data(
        self,
        batch_size: int = ...,
        device: str | torch.device | None = ...,
        workers: int | None = ...,
        shard: bool = ...,
    ) -> TokenData:
        """The dataset as tokens (cached latents), for the trainer."""
        ...

    def decode_tokens(self, tokens: torch.Tensor, batch_size: int = ...) -> torch.Tensor:
        """Tokens [B, N, D] -> media [B, ...] in [-1, 1]."""
        ...

    def save(self, media: torch.Tensor, path: Path) -> Path:
        """One item as a file (PNG, MP4, WAV); the path written."""
        ...

    def save_grid(self, media: torch.Tensor, rows: int, path: Path) -> Path:
        """A preview of a batch in `rows` rows; the path written."""
        ...

    def prime_tokens(self, path: str, options: Mapping[str, Any], count: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Known tokens and their mask [count, N(, D)] from a real file, for continuation."""
        ...


class HasFps(Protocol):
    """A video adapter, as the pipeline sees it: its clips play at `fps`."""

    fps: int


class HasSampleRate(Protocol):
    """An audio adapter, as the pipeline sees it: its waveforms are at `sample_rate`."""

    sample_rate: int


def build_adapter(cfg: DictConfig) -> Adapter:
    # The tokenizer entry inside stays a dict: the adapter builds it when first needed (it may not exist yet).
    settings = cast(dict[str, Any], OmegaConf.to_container(cfg.modality.adapter, resolve=True))
    return cast(Adapter, builders.adapter(settings))


# What a user folder's own default tokenizer depends on, besides the folder (adapter keys, where present).
DATASET_TOKENIZER_KEYS = ("channels", "image_size", "sample_rate", "seconds", "frames", "mel")


def dataset_tokenizer_path(home: str | Path, modality: str, adapter_cfg: Any) -> Path:
    """Where the default tokenizer of a user folder lives: `home/tokenizers/<modality>-<folder>-<hash>`, one per
    folder and media settings, so an RGB folder never meets the grey digits' tokenizer (or another folder's)."""
    data_dir = Path(adapter_cfg["data_dir"]).resolve()
    settings = {k: adapter_cfg.get(k) for k in DATASET_TOKENIZER_KEYS if adapter_cfg.get(k) is not None}
    blob = json.dumps({"data_dir": str(data_dir), **settings}, sort_keys=True, default=str)
    return Path(home) / "tokenizers" / f"{modality}-{data_dir.name}-{hashlib.sha256(blob.encode()).hexdigest()[:8]}"


def default_tokenizer_paths(cfg: DictConfig) -> list[Path]:
    """The locations where `train` may train the default tokenizer itself: the embedded data's, and the user
    folder's own when one is given."""
    paths = [Path(cfg.home) / "tokenizers" / cfg.modality.name]
    adapter_cfg = cast(dict[str, Any], OmegaConf.to_container(cfg.modality.adapter, resolve=True))
    if adapter_cfg.get("data_dir"):
        paths.append(dataset_tokenizer_path(cfg.home, cfg.modality.name, adapter_cfg))
    return [p.resolve() for p in paths]


def ensure_tokenizer(cfg: DictConfig, adapter: Adapter) -> None:
    """Train the small default tokenizer on first use, so `train modality=M` works on a fresh machine.

    Only at a default location (`default_tokenizer_paths`): a missing path the user named stays an error.
    """
    path = Path(cfg.modality.adapter.tokenizer.path)
    if path.exists() or path.resolve() not in default_tokenizer_paths(cfg):
        return
    tqdm.write(f"no tokenizer at {path}: training the default one first (`{adapter.train_tokenizer_command}`)")
    metrics = adapter.train_tokenizer(cast(dict[str, Any], OmegaConf.to_container(cfg.tokenizer, resolve=True)))
    summary = ", ".join(f"{k} {v:.4g}" for k, v in metrics.items() if isinstance(v, float))
    tqdm.write(f"tokenizer saved to {path}: {summary}")
