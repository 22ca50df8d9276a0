"""The modality adapter from a composed config, built from `modality.adapter._target_` (djepa.plugins), and its
default tokenizer, trained on first use.

The core never imports a modality: adapters arrive as objects named by `_target_` in the config.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from djepa.plugins import build


def build_adapter(cfg: DictConfig) -> Any:
    # The tokenizer entry inside stays a dict: the adapter builds it when first needed (it may not exist yet).
    return build(OmegaConf.to_container(cfg.modality.adapter, resolve=True), "modality.adapter")


def ensure_tokenizer(cfg: DictConfig, adapter: Any) -> None:
    """Train the small default tokenizer on first use, so `train modality=M` works on a fresh machine.

    Only at the default location (`home/tokenizers/<modality>`): a missing path the user named stays an error.
    """
    path = Path(cfg.modality.adapter.tokenizer.path)
    if path.exists() or path.resolve() != (Path(cfg.home) / "tokenizers" / cfg.modality.name).resolve():
        return
    tqdm.write(f"no tokenizer at {path}: training the default one first (`{adapter.train_tokenizer_command}`)")
    metrics = adapter.train_tokenizer(OmegaConf.to_container(cfg.tokenizer, resolve=True))
    summary = ", ".join(f"{k} {v:.4g}" for k, v in metrics.items() if isinstance(v, float))
    tqdm.write(f"tokenizer saved to {path}: {summary}")
