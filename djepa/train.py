"""`train modality=M run_dir=DIR ...`: cache latents, train D-JEPA, write checkpoints and previews."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from djepa import distributed
from djepa.attention import set_attention_backend
from djepa.build import SamplingSettings, build_adapter, build_model, class_grid_labels, ensure_tokenizer, generate
from djepa.config import cli_errors, compose_config, save_config
from djepa.errors import UsageError
from djepa.model import DJEPA
from djepa.runtime import resolve_precision
from djepa.trainer import TrainConfig, Trainer


def train_config(cfg: DictConfig) -> TrainConfig:
    settings = OmegaConf.to_container(cfg.train, resolve=True)
    try:
        return TrainConfig(
            **settings, denoise_weight=float(cfg.loss.denoise_weight), jepa_weight=float(cfg.loss.jepa_weight)
        )
    except (TypeError, ValueError) as err:
        raise UsageError(f"bad train config: {err}") from err


def write_class_grid(adapter: Any, model: DJEPA, cfg: DictConfig, path: Path, per_class: int) -> Path:
    """One row per class, `per_class` samples each, decoded and saved as the adapter's preview."""
    labels = class_grid_labels(adapter.num_classes, per_class)
    was_training = model.training
    model.eval()
    tokens = generate(model, labels, SamplingSettings.from_config(cfg), progress=False)
    model.train(was_training)
    return adapter.save_grid(adapter.decode_tokens(tokens), adapter.num_classes, path)


def run(cfg: DictConfig) -> dict[str, Any]:
    set_attention_backend(cfg.attention_backend)
    device = distributed.init_from_env(cfg.device)
    adapter = build_adapter(cfg)
    # Rank 0 trains a missing default tokenizer and caches the latents; the other ranks then read them.
    if distributed.is_main():
        ensure_tokenizer(cfg, adapter)
        data = adapter.token_data()
    distributed.barrier()
    if not distributed.is_main():
        data = adapter.token_data()
    torch.manual_seed(cfg.seed)  # the same initial weights on every rank
    model = build_model(cfg, adapter.token_dim, adapter.token_grid, adapter.num_classes)
    settings = train_config(cfg)
    run_dir = Path(cfg.run_dir)
    if distributed.is_main():
        save_config(cfg, run_dir / "config.yaml")
    per_class = int(cfg.sample.preview_per_class)

    def preview(ema: DJEPA, step: int) -> None:
        write_class_grid(adapter, ema, cfg, run_dir / "previews" / f"step_{step:07d}", per_class)

    if distributed.is_main():
        tqdm.write(
            f"{cfg.modality.name}: {len(data)} items, token grid {adapter.token_grid} x {adapter.token_dim}, "
            f"{model.num_params() / 1e6:.2f}M params, jepa={model.jepa}, head={model.config['head']['type']}, "
            f"{device} {str(resolve_precision(device, settings.precision)).replace('torch.', '')}"
        )
    trainer = Trainer(
        model,
        data,
        settings,
        run_dir,
        device,
        preview,
        extra_state={"modality": cfg.modality.name, "class_names": adapter.class_names},
    )
    last = trainer.fit()
    if per_class:
        ema = trainer.sampling_model()  # collective under FSDP
        if distributed.is_main():
            grid = write_class_grid(adapter, ema, cfg, run_dir / "samples", per_class)
            tqdm.write(f"samples: {grid}")
    return last


def main(argv: Sequence[str] | None = None) -> None:
    with cli_errors():
        try:
            run(compose_config(sys.argv[1:] if argv is None else argv))
        finally:
            distributed.shutdown()


if __name__ == "__main__":
    main()
