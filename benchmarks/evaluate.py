"""Score a trained run with the modality's classifier: `python -m djepa.benchmarks.evaluate run_dir=DIR`.

Samples `num_samples` items per class from the run's latest checkpoint and reports the classifier's
accuracy on them, the Fréchet distance on its features and the Inception-style score; with
`standard_weights=PATH` (a local file, see `standard.py`) also the standard FID (with precision and recall, against
the statistics `fid_stats.py` cached for the data folder where there are some) or feature-network FD; with
`roundtrip=true` also the classifier's accuracy on real items and on their tokenizer round trips (`roundtrip.py`).
An unconditional run (a folder without class subfolders) is sampled with guidance 1 and scored by the Fréchet
distance (and the view's own measurements) only: with one class there is no accuracy to read.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from collections.abc import Sequence
from typing import Any

import torch
from omegaconf import DictConfig

from djepa.benchmarks.classifiers import ConvClassifier
from djepa.benchmarks.fid_stats import cached_reference, load_stats
from djepa.benchmarks.metrics import accuracy, frechet_distance, inception_score, per_class_accuracy
from djepa.benchmarks.roundtrip import heldout_media, roundtrip_scores
from djepa.benchmarks.standard import SKIPPED, StandardMetric, weights_file
from djepa.benchmarks.views import ClassifierView, classify_media, config_view, load_classifier
from djepa.cli.config import cli_errors, compose_config
from djepa.engine.adapter import build_adapter, is_unconditional
from djepa.engine.loading import find_checkpoint, load_ema_model
from djepa.engine.runtime import resolve_device
from djepa.engine.sampling import SamplingSettings, class_grid_labels, generate
from djepa.modalities.base import ModalityAdapter
from djepa.nn.model import DJEPA


class RealMedia:
    """The fixed random subset of the dataset that generated samples are compared with, loaded once on first use
    (drawn from the bounded subset `in_memory_data` reads of a user folder)."""

    def __init__(self, adapter: ModalityAdapter, count: int = 2000):
        self.adapter = adapter
        self.count = count
        self._media: torch.Tensor | None = None

    def __call__(self) -> torch.Tensor:
        if self._media is None:
            # A user folder: at most modality.adapter.memory_items of it, never the whole folder.
            media, _ = self.adapter.in_memory_data()
            order = torch.randperm(len(media), generator=torch.Generator().manual_seed(0))
            self._media = media[order[: self.count]]
        return self._media


def modality_classifier(
    cfg: DictConfig, view: ClassifierView, real: RealMedia, steps: int = 400
) -> tuple[ConvClassifier, float, torch.Tensor]:
    """The cached classifier, its held-out accuracy, and real features for the Fréchet distance."""
    model, heldout = load_classifier(cfg, view, steps)
    _, real_features = classify_media(model, view, real())
    return model, heldout, real_features


def standard_metric(cfg: DictConfig, real: RealMedia) -> StandardMetric | None:
    """The standard metric from the user's local weights file (`standard_weights`), or None when none is given.

    Images are compared with the reference statistics `fid_stats` cached for the data folder at the run's image
    size where there are some (`reference_path` says which), else with the real subset. A wrong path fails here,
    before any data is loaded.
    """
    weights = cfg.get("standard_weights")
    if not weights:
        return None
    weights = weights_file(weights)
    found = None
    if cfg.modality.name == "image":
        adapter = cfg.modality.adapter
        found = cached_reference(cfg.home, adapter.get("data_dir"), weights, int(adapter.get("image_size", 0)))
    reference = load_stats(found)[0] if found is not None else None
    metric = StandardMetric(
        cfg.modality.name, real() if reference is None else None, weights, resolve_device(cfg.device), reference
    )
    metric.reference_path = found
    return metric


def score(
    model: DJEPA,
    view: ClassifierView,
    classifier: ConvClassifier,
    real_features: torch.Tensor,
    per_class: int,
    settings: SamplingSettings,
    standard: StandardMetric | None = None,
) -> dict[str, Any]:
    """The classifier's scores of `per_class` samples per class, and the view's own measurements of them."""
    adapter = view.adapter
    labels = class_grid_labels(adapter.num_classes, per_class)
    unconditional = is_unconditional(getattr(adapter, "class_names", []))
    if unconditional:  # one class: nothing for guidance to contrast
        settings = dataclasses.replace(settings, guidance_scale=1.0)
    start = time.perf_counter()
    tokens = generate(model, labels, settings)
    sample_seconds = time.perf_counter() - start
    media = adapter.decode_tokens(tokens)
    logits, feats = classify_media(classifier, view, media)
    # An unconditional run's classifier knows the digits, not the run's data: its features only.
    classes = (
        {}
        if unconditional
        else {
            "accuracy": accuracy(logits, labels),
            "per_class_accuracy": per_class_accuracy(logits, labels, getattr(adapter, "class_names", None)),
            "inception_score": inception_score(logits),
        }
    )
    return {
        **classes,
        "fd": frechet_distance(real_features, feats),
        "sample_ms_per_item": 1000 * sample_seconds / len(labels),
        "samples": len(labels),
        **view.media_metrics(media),
        **(standard(media) if standard is not None else {}),
    }


def run(cfg: DictConfig) -> dict[str, Any]:
    torch.manual_seed(cfg.seed)
    view = config_view(cfg, build_adapter(cfg))
    directory, state = find_checkpoint(cfg.run_dir, cfg.checkpoint)
    model = load_ema_model(directory, state, resolve_device(cfg.device), cfg.loss.head)
    real = RealMedia(view.adapter)
    standard = standard_metric(cfg, real)
    classifier, heldout, real_features = modality_classifier(cfg, view, real)
    # Training the classifier (not loading it from its cache) draws random numbers: the samples start from the seed.
    torch.manual_seed(cfg.seed)
    result = score(
        model,
        view,
        classifier,
        real_features,
        cfg.num_samples,
        SamplingSettings.from_config(cfg),
        standard,
    )
    if cfg.roundtrip:
        media, labels, origin = heldout_media(cfg, view.adapter)
        result |= roundtrip_scores(lambda m: classify_media(classifier, view, m)[0], view.adapter, media, labels)
        result["roundtrip_data"] = origin
    result |= {
        **(SKIPPED if standard is None else {"standard_weights": str(standard.path)}),
        **({"fid_reference": str(standard.reference_path)} if standard and standard.reference_path else {}),
        "classifier_heldout_accuracy": heldout,
        "checkpoint": str(directory),
        "step": state["step"],
        "note": "accuracy, fd and inception_score are classifier metrics; not comparable with published FID/FVD/FAD",
    }
    print(json.dumps(result, indent=2))
    return result


def main(argv: Sequence[str] | None = None) -> None:
    with cli_errors():
        run(compose_config(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    main()
