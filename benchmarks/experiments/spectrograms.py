"""Look at what the numbers say: per class, a real held-out clip, its tokenizer round trip and generated clips.

    python -m djepa.benchmarks.experiments.spectrograms run_dir=runs/audio out=docs/audio-spectrograms.png

Writes one PNG (rows: real, round trip, then `num_samples` generated rows; one column per class, drawn through
the adapter's own spectrogram preview) and the same clips as WAVs beside it (`<out stem>/<row>_<class>.wav`),
so a listener can check what the classifier says.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig

from djepa.benchmarks.roundtrip import own_items, round_trip
from djepa.cli.config import cli_errors, compose_config
from djepa.errors import UsageError
from djepa.modalities.audio import AudioAdapter, spectrogram_grid


def first_of_each_class(media: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    picks = [int(torch.nonzero(labels == c)[0]) for c in range(num_classes) if (labels == c).any()]
    if len(picks) < num_classes:
        raise UsageError(f"the held-out clips cover {len(picks)} of {num_classes} classes")
    return media[picks]


def run(cfg: DictConfig) -> Path:
    from PIL import Image

    from djepa.pipeline import Pipeline

    if not cfg.get("out"):
        raise UsageError("out=FILE.png is required")
    pipe = Pipeline.from_pretrained(cfg.run_dir, device=cfg.device)
    adapter = pipe.adapter
    if not isinstance(adapter, AudioAdapter):
        raise UsageError(f"run_dir {cfg.run_dir} is a {adapter.name} run; spectrograms are for audio")
    media, labels, _ = own_items(adapter)
    real = first_of_each_class(media, labels, adapter.num_classes)
    rebuilt = round_trip(adapter, real)
    per_class = int(cfg.get("num_samples") or 2)
    generated = pipe(class_labels=None, num_samples=per_class, seed=int(cfg.seed)).media  # class-major order
    rows = [("real", real), ("roundtrip", rebuilt)]
    rows += [(f"generated{k}", generated[k::per_class]) for k in range(per_class)]
    out = Path(cfg.out).with_suffix(".png")
    clips = out.with_suffix("")
    for name, row in rows:
        for c, clip in enumerate(row):
            adapter.save(clip, clips / f"{name}_{adapter.class_names[c]}")
    mels = adapter.front_end(torch.cat([row for _, row in rows]).float())
    canvas = spectrogram_grid(mels, len(rows), scale=2)
    out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.ascontiguousarray(canvas)).save(out)
    print(f"rows (top to bottom): {', '.join(name for name, _ in rows)}; columns: {', '.join(adapter.class_names)}")
    print(f"wrote {out} and {len(rows) * adapter.num_classes} clips in {clips}")
    return out


def main(argv: Sequence[str] | None = None) -> None:
    with cli_errors():
        run(compose_config(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    main()
