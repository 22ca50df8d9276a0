"""The tokenizer's ceiling: the classifier's accuracy on real items and on their encode -> decode round trips.

A generator draws tokens and the tokenizer decodes them, so samples can at best be as recognisable as round
trips of real items. PSNR alone does not tell whether the shape survived (a blurred digit on the right colour
scores well), the classifier does. Run it on held-out items the tokenizer never saw:

    python -m djepa.benchmarks.roundtrip modality=image modality.adapter.channels=3 \
        modality.adapter.data_dir=DIR/train roundtrip_data=DIR/heldout

`evaluate ... roundtrip=true` adds the same numbers to a run's scores.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from typing import Any

import torch
from omegaconf import DictConfig

from djepa.benchmarks.metrics import accuracy, per_class_accuracy
from djepa.benchmarks.views import benchmark_adapter, classify_media, config_view, load_classifier
from djepa.chunks import map_chunks
from djepa.cli.config import cli_errors, compose_config
from djepa.engine.adapter import build_adapter, is_unconditional
from djepa.modalities.base import DataError, ModalityAdapter
from djepa.tokenizers.train_autoencoder import psnr


@torch.no_grad()
def round_trip(adapter: ModalityAdapter, media: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    """Media -> posterior-mean latents -> tokens -> media: the path a sample's tokens take back to pixels."""

    def one_chunk(chunk: torch.Tensor) -> torch.Tensor:
        mean, _ = adapter.encode_media(chunk)
        return adapter.decode_tokens(adapter.to_tokens(mean.float().cpu()))

    return map_chunks(one_chunk, media, batch_size)


def roundtrip_scores(
    classify: Callable[[torch.Tensor], torch.Tensor],
    adapter: ModalityAdapter,
    media: torch.Tensor,
    labels: torch.Tensor,
) -> dict[str, Any]:
    """`classify(media) -> logits` on real items and on their round trips; the gap is what the tokenizer loses."""
    rebuilt = round_trip(adapter, media)
    real_logits, rebuilt_logits = classify(media), classify(rebuilt)
    names = getattr(adapter, "class_names", None)
    measured = {"roundtrip_psnr_db": psnr(media, rebuilt), "roundtrip_items": len(media)}
    if names is not None and is_unconditional(names):
        return measured  # one class, and a classifier of other classes (the digits): no accuracy to read
    return {
        "roundtrip_real_accuracy": accuracy(real_logits, labels),
        "roundtrip_accuracy": accuracy(rebuilt_logits, labels),
        "roundtrip_per_class_accuracy": per_class_accuracy(rebuilt_logits, labels, names),
        **measured,
    }


def own_items(adapter: ModalityAdapter) -> tuple[torch.Tensor, torch.Tensor, str]:
    """The adapter's held-out items where it has some, else its dataset; and which of the two it was."""
    heldout = adapter.heldout_dataset()
    if heldout is not None:
        return *heldout, "the adapter's held-out items"
    return *adapter.load_dataset(), "the training data"


def heldout_media(cfg: DictConfig, adapter: ModalityAdapter) -> tuple[torch.Tensor, torch.Tensor, str]:
    """Up to `roundtrip_count` items, a fixed random subset: from `roundtrip_data` (a folder laid out as the
    training one; its classes are matched to the run's by name), else from the adapter's held-out items where it
    has some (the audio default: new clips the tokenizer never saw), else from its own dataset; and where from."""
    if cfg.roundtrip_data:
        other = cfg.copy()
        other.modality.adapter.data_dir = cfg.roundtrip_data
        source = benchmark_adapter(build_adapter(other))
        media, labels = source.load_dataset()
        unknown = sorted(set(source.class_names) - set(adapter.class_names))
        if unknown:
            raise DataError(f"roundtrip_data {cfg.roundtrip_data} has classes the run does not: {unknown}")
        remap = torch.tensor([adapter.class_names.index(n) for n in source.class_names])
        labels, origin = remap[labels], str(cfg.roundtrip_data)
    else:
        media, labels, origin = own_items(adapter)
    order = torch.randperm(len(media), generator=torch.Generator().manual_seed(0))[: cfg.roundtrip_count]
    return media[order], labels[order], origin


def run(cfg: DictConfig) -> dict[str, Any]:
    torch.manual_seed(cfg.seed)
    view = config_view(cfg, build_adapter(cfg))
    classifier, heldout = load_classifier(cfg, view, 60 if cfg.benchmark.quick else 400)
    media, labels, origin = heldout_media(cfg, view.adapter)
    result = roundtrip_scores(lambda m: classify_media(classifier, view, m)[0], view.adapter, media, labels)
    result |= {"classifier_heldout_accuracy": heldout, "roundtrip_data": origin}
    print(json.dumps(result, indent=2))
    return result


def main(argv: Sequence[str] | None = None) -> None:
    with cli_errors():
        run(compose_config(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    main()
