"""The modality adapter from a composed config, built from `modality.adapter._target_` (djepa.plugins), and its
default tokenizer, trained on first use.

The core never imports a modality: adapters arrive as objects named by `_target_` in the config.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from djepa.plugins import build


def build_adapter(cfg: DictConfig) -> Any:
    # The tokenizer entry inside stays a dict: the adapter builds it when first needed (it may not exist yet).
    return build(OmegaConf.to_container(cfg.modality.adapter, resolve=True), "modality.adapter")


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
    adapter_cfg = OmegaConf.to_container(cfg.modality.adapter, resolve=True)
    if adapter_cfg.get("data_dir"):
        paths.append(dataset_tokenizer_path(cfg.home, cfg.modality.name, adapter_cfg))
    return [p.resolve() for p in paths]


def ensure_tokenizer(cfg: DictConfig, adapter: Any) -> None:
    """Train the small default tokenizer on first use, so `train modality=M` works on a fresh machine.

    Only at a default location (`default_tokenizer_paths`): a missing path the user named stays an error.
    """
    path = Path(cfg.modality.adapter.tokenizer.path)
    if path.exists() or path.resolve() not in default_tokenizer_paths(cfg):
        return
    tqdm.write(f"no tokenizer at {path}: training the default one first (`{adapter.train_tokenizer_command}`)")
    metrics = adapter.train_tokenizer(OmegaConf.to_container(cfg.tokenizer, resolve=True))
    summary = ", ".join(f"{k} {v:.4g}" for k, v in metrics.items() if isinstance(v, float))
    tqdm.write(f"tokenizer saved to {path}: {summary}")
