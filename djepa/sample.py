"""`sample modality=M run_dir=DIR prompt_class=C num_samples=N out=OUT`: files plus a grid."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

import torch
from omegaconf import DictConfig
from tqdm import tqdm

from djepa.attention import set_attention_backend
from djepa.build import (
    SamplingSettings,
    build_adapter,
    class_grid_labels,
    find_checkpoint,
    generate,
    load_ema_model,
)
from djepa.config import cli_errors, compose_config
from djepa.errors import UsageError
from djepa.runtime import resolve_device


def run(cfg: DictConfig) -> list[Path]:
    set_attention_backend(cfg.attention_backend)
    device = resolve_device(cfg.device)
    directory, state = find_checkpoint(cfg.run_dir, cfg.checkpoint)
    trained_on = state.get("modality")
    if trained_on and trained_on != cfg.modality.name:
        raise UsageError(f"checkpoint {directory} was trained on modality={trained_on}, not {cfg.modality.name}")
    class_names = state.get("class_names") or [str(i) for i in range(state["model_config"]["num_classes"])]
    if cfg.num_samples < 1:
        raise UsageError(f"num_samples must be positive, got {cfg.num_samples}")
    if cfg.prompt_class is not None and not 0 <= int(cfg.prompt_class) < len(class_names):
        raise UsageError(
            f"prompt_class={cfg.prompt_class} is out of range: this model has "
            f"{len(class_names)} classes (0..{len(class_names) - 1})"
        )
    settings = SamplingSettings.from_config(cfg)
    adapter = build_adapter(cfg)
    model = load_ema_model(directory, state, device, cfg.loss.head)
    if cfg.prompt_class is None:
        labels, rows = class_grid_labels(len(class_names), cfg.num_samples), len(class_names)
    else:
        labels, rows = torch.full((cfg.num_samples,), int(cfg.prompt_class)), 1
    known_tokens = known_mask = None
    if cfg.get("prime"):
        known_tokens, known_mask = adapter.prime_tokens(cfg.prime, cfg, len(labels))
    tokens = generate(model, labels, settings, known_tokens=known_tokens, known_mask=known_mask)
    media = adapter.decode_tokens(tokens)
    out = Path(cfg.out)
    written = [
        adapter.save(item, out / f"{class_names[int(y)]}_{i:03d}") for i, (item, y) in enumerate(zip(media, labels))
    ]
    grid = adapter.save_grid(media, rows, out / "grid")
    tqdm.write(f"wrote {len(written)} files and {grid} from {directory}")
    return written


def main(argv: Sequence[str] | None = None) -> None:
    with cli_errors():
        run(compose_config(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    main()
