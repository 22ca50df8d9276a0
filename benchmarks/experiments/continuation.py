"""Does a video continue from its prime?

    python -m djepa.benchmarks.experiments.continuation run_dir=DIR [num_samples=10]

The first `prime_frames` frames of held-out clips (new trajectories the model never saw) stay known, the rest is
generated with the clip's true class, and each frame's ink centroid is compared with the real clip's (both
through the tokenizer, so the round trip's own error is the floor, shown as the primed frames' distance). A
model that ignores where the prime left the digit lands about as far off as another clip of the same class
does: that chance level is printed beside it. The classifier scores the generated frames' digit. With
`num_samples` clips per class; results and a picture (for 8 clips, a row of the real frames above a row of the
generated ones) go to `out=DIR` (default: RUN_DIR/continuation).
Embedded default only (the centroid of one digit on a blank canvas is what it measures).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from djepa.benchmarks.experiments.probes import same_class_derangement
from djepa.benchmarks.metrics import ink_centroids
from djepa.benchmarks.views import VideoView, load_classifier
from djepa.cli.config import cli_errors, compose_config
from djepa.engine.adapter import build_adapter
from djepa.engine.loading import find_checkpoint, load_ema_model
from djepa.engine.runtime import resolve_device
from djepa.engine.sampling import SamplingSettings, generate
from djepa.errors import UsageError
from djepa.io import atomic_write_json
from djepa.modalities.video import VideoAdapter


def centroid_distances(generated: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """Per frame, the mean over clips of the distance in pixels between the two clips' ink centroids, [T]."""
    return (ink_centroids(generated) - ink_centroids(real)).norm(dim=-1).mean(0)


def continuation_scores(
    real: torch.Tensor, generated: torch.Tensor, labels: torch.Tensor, primed_frames: int, classify: Any
) -> dict[str, Any]:
    """Centroid distances per frame against the real clips and against chance (another clip of the same class),
    and the classifier's accuracy on the generated frames. Clips [N, T, C, H, W] in [-1, 1], decoded."""
    per_frame = centroid_distances(generated, real)
    chance = centroid_distances(real[same_class_derangement(labels)], real)
    new = slice(primed_frames, None)
    logits = classify(generated[:, new].flatten(0, 1))
    frame_labels = labels.repeat_interleave(generated.shape[1] - primed_frames)
    return {
        "clips": len(labels),
        "primed_frames": primed_frames,
        "centroid_px_per_frame": [round(float(d), 3) for d in per_frame],
        "centroid_px_primed": float(per_frame[:primed_frames].mean()),
        "centroid_px_first_generated": float(per_frame[primed_frames]),
        "centroid_px_last": float(per_frame[-1]),
        "centroid_px_generated_mean": float(per_frame[new].mean()),
        "chance_px_first_generated": float(chance[primed_frames]),
        "chance_px_generated_mean": float(chance[new].mean()),
        "generated_frame_accuracy": float((logits.argmax(1) == frame_labels).float().mean()),
    }


def run(cfg: DictConfig, out_dir: str) -> dict[str, Any]:
    if cfg.modality.name != "video":
        raise UsageError(f"continuation is measured on video; modality={cfg.modality.name}")
    torch.manual_seed(cfg.seed)
    adapter = build_adapter(cfg)
    if not isinstance(adapter, VideoAdapter):
        raise UsageError(f"continuation needs a VideoAdapter; modality.adapter._target_ gives {type(adapter).__name__}")
    held = adapter.heldout_dataset()
    if held is None:
        raise UsageError("continuation is measured on the embedded default's held-out clips; unset data_dir")
    per_class = int(cfg.num_samples)
    rows = torch.cat([torch.nonzero(held[1] == c)[:per_class, 0] for c in range(adapter.num_classes)])
    media, labels = held[0][rows], held[1][rows]
    directory, state = find_checkpoint(cfg.run_dir, cfg.checkpoint)
    model = load_ema_model(directory, state, resolve_device(cfg.device), cfg.loss.head)
    mean, _ = adapter.encode_media(media)
    tokens = adapter.to_tokens(mean.float().cpu())
    known, primed_frames = adapter.prime_mask(int(cfg.get("prime_frames", 4)))
    known = known.expand(len(labels), -1)
    generated = generate(model, labels, SamplingSettings.from_config(cfg), known_tokens=tokens, known_mask=known)
    real = adapter.decode_tokens(tokens)
    clips = adapter.decode_tokens(generated)
    classifier, _ = load_classifier(cfg, VideoView(adapter))
    result = continuation_scores(real, clips, labels, primed_frames, lambda frames: classifier.predict(frames)[0])
    result |= {"checkpoint": str(directory), "step": state["step"]}
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    show = torch.linspace(0, len(labels) - 1, 8).long()  # 8 clips across the classes
    pairs = torch.stack([real[show], clips[show]], 1).flatten(0, 1)  # real, generated, real, generated, ...
    result["picture"] = str(adapter.save_grid(pairs, len(pairs), out / "continuation", strip=adapter.frames))
    atomic_write_json(out / "continuation.json", result)
    print(json.dumps(result, indent=2))
    return result


def main(argv: Sequence[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    with cli_errors():
        cfg = compose_config(argv)
        given = any(a.split("=", 1)[0] == "out" for a in argv)
        run(cfg, cfg.out if given else str(Path(cfg.run_dir) / "continuation"))


if __name__ == "__main__":
    main()
