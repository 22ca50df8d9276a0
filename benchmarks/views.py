"""What the benchmark classifier sees of each modality: the data it trains on, its input for decoded media, the
name of its cached network, and the measurements taken beside it (video: motion).

The adapters only turn media into tokens and back; everything here is evaluation. `classifier_view` picks the
view of an adapter by its class; an adapter of another kind gets the default view (its own data, as it is).
An unconditional run (a folder without class subfolders: one class) gives a classifier nothing to learn, so its
classifier trains on the modality's embedded digits and serves as the feature network of the Fréchet distance.
"""

from __future__ import annotations

from pathlib import Path

import torch
from omegaconf import DictConfig

from djepa import schema
from djepa.benchmarks.classifiers import ConvClassifier, load_or_train_classifier
from djepa.benchmarks.colour_blind import colour_blind
from djepa.benchmarks.listener import LISTENER_CLIPS, ListenerFrontEnd, listener_clips, with_noisy_copies
from djepa.benchmarks.metrics import centroid_travel
from djepa.chunks import map_chunks
from djepa.engine.adapter import is_unconditional
from djepa.errors import UsageError
from djepa.modalities.audio import AudioAdapter
from djepa.modalities.base import ModalityAdapter
from djepa.modalities.image import DIGIT_NAMES, ImageAdapter, mnist_images
from djepa.modalities.video import MAX_FRAMES_IN_MEMORY, VideoAdapter, render_digits, scaled_digits

# Written by `python -m djepa.benchmarks.experiments.rgb_digits` beside the class folders of each split: a folder
# that holds it is coloured MNIST digits, so the image classifier is trained on the grey digits instead.
RGB_DIGITS_MARKER = "rgb_digits.json"
# benchmark.classifier (images): what the classifier trains on; auto picks per folder (`ImageView.source`).
CLASSIFIER_SOURCES = schema.choices(schema.BenchmarkSettings, "classifier")


class ClassifierView:
    """The default view: the classifier trains on the adapter's data and reads media as they are, one row each."""

    def __init__(self, adapter: ModalityAdapter):
        self.adapter = adapter

    @property
    def unconditional(self) -> bool:
        """The run's data has no classes: the classifier learns the embedded digits instead (features only)."""
        return is_unconditional(self.adapter.class_names)

    @property
    def tag(self) -> str:
        """Part of the cached classifier's file name: a view that changes the input makes another network."""
        return ""

    def training_data(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Real examples and labels to train the classifier on (of a user folder, at most `memory_items`)."""
        return self.adapter.in_memory_data()

    def rows(self, media: torch.Tensor) -> tuple[torch.Tensor, int]:
        """The classifier's input for decoded media, and how many of its rows make one item."""
        return media, 1

    def media_metrics(self, media: torch.Tensor) -> dict[str, float]:
        """Measurements of decoded media beyond the classifier."""
        return {}


class ImageView(ClassifierView):
    """RGB media, and coloured digits in any channel count, are classified through `colour_blind`, so colour
    cannot carry the class; grey media are read as they are."""

    adapter: ImageAdapter

    def __init__(self, adapter: ImageAdapter, source: str = "auto"):
        super().__init__(adapter)
        if source not in CLASSIFIER_SOURCES:
            raise UsageError(f"benchmark.classifier={source!r}: choose one of {', '.join(CLASSIFIER_SOURCES)}")
        self.choice = source

    @property
    def rgb_digits(self) -> bool:
        data_dir = self.adapter.data_dir
        return data_dir is not None and (data_dir / RGB_DIGITS_MARKER).is_file()

    @property
    def source(self) -> str:
        """What the classifier trains on: "digits" (the embedded grey digits) or "data" (the folder's images).

        auto: the digits for the embedded default, for folders written by rgb_digits and for unlabelled folders
        (one class teaches nothing), the folder's own images otherwise (a user's classes are not digits)."""
        if self.choice == "data" and self.unconditional:
            raise UsageError(
                f"benchmark.classifier=data: {self.adapter.data_dir} has no classes to train a classifier on; "
                "use benchmark.classifier=digits (or auto)"
            )
        if self.choice != "auto":
            return self.choice
        return "digits" if self.adapter.data_dir is None or self.rgb_digits or self.unconditional else "data"

    @property
    def colour_blind(self) -> bool:
        return self.adapter.channels == 3 or self.rgb_digits

    @property
    def tag(self) -> str:
        return f"-colourblind-{self.source}" if self.colour_blind else ""

    def training_data(self) -> tuple[torch.Tensor, torch.Tensor]:
        if not (self.colour_blind or self.unconditional):
            return super().training_data()
        if self.source == "digits":
            if self.adapter.class_names != DIGIT_NAMES and not self.unconditional:
                raise UsageError(
                    f"benchmark.classifier=digits needs the class folders 0..9, {self.adapter.data_dir} has "
                    f"{self.adapter.class_names}"
                )
            images, labels = mnist_images(self.adapter.image_size)
        else:
            images, labels = self.adapter.in_memory_data()
        return (colour_blind(images) if self.colour_blind else images), labels

    def rows(self, media: torch.Tensor) -> tuple[torch.Tensor, int]:
        return (colour_blind(media) if self.colour_blind else media), 1


class VideoView(ClassifierView):
    """A frame classifier: every frame of a clip is one row and the clip's logits are the mean of its frames'."""

    adapter: VideoAdapter

    def training_data(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Single frames [M, C, H, W]: the real MNIST digits placed as in the clips, or a user folder's frames (of
        a labelled one: an unlabelled folder's classifier learns the digits)."""
        adapter = self.adapter
        if adapter.data_dir is not None and not self.unconditional:
            return adapter.folder_frames(MAX_FRAMES_IN_MEMORY)
        digits, labels = scaled_digits(adapter.digit_size)
        gen = torch.Generator().manual_seed(int(adapter.seed) + 1)
        start = torch.rand(len(digits), 1, 2, generator=gen) * (adapter.image_size - adapter.digit_size)
        frames = render_digits(digits, start, adapter.image_size)[:, 0]
        return frames[:, None].expand(-1, adapter.channels, -1, -1).contiguous(), labels

    def rows(self, media: torch.Tensor) -> tuple[torch.Tensor, int]:
        return media.flatten(0, 1), media.shape[1]

    def media_metrics(self, media: torch.Tensor) -> dict[str, float]:
        """Motion: how far the ink centroid travels from the first frame (mean pixels, share moving >= 3 px)."""
        travel = centroid_travel(media)
        return {"centroid_travel_px": float(travel.mean()), "moving_share": float((travel >= 3).float().mean())}


class AudioView(ClassifierView):
    """A listener of its own (benchmarks/listener.py): other voices than the default data's, its own front end
    rather than the tokenizer's, and noisy copies of every clip so that a vocoder's hiss is not another word."""

    adapter: AudioAdapter

    def __init__(self, adapter: AudioAdapter):
        super().__init__(adapter)
        self.front_end = ListenerFrontEnd(adapter.sample_rate)

    @property
    def tag(self) -> str:
        return "-listener2"

    def training_data(self) -> tuple[torch.Tensor, torch.Tensor]:
        adapter = self.adapter
        if adapter.data_dir is None or self.unconditional:  # an unlabelled folder: the digits' listener
            audio, labels = listener_clips(adapter.cache_dir, LISTENER_CLIPS, adapter.sample_rate, adapter.num_samples)
        else:
            audio, labels = adapter.in_memory_data()  # at most memory_items clips
        audio, labels = with_noisy_copies(audio, labels)
        return self.rows(audio)[0], labels

    def rows(self, media: torch.Tensor) -> tuple[torch.Tensor, int]:
        return map_chunks(self.front_end, media.detach().float().cpu()), 1


def benchmark_adapter(adapter: object) -> ModalityAdapter:
    """The adapter as the benchmarks use it (its data, encoder and held-out items): a ModalityAdapter."""
    if not isinstance(adapter, ModalityAdapter):
        raise UsageError(
            f"the benchmarks need a djepa.modalities.base.ModalityAdapter; {type(adapter).__name__} is not one"
        )
    return adapter


def classifier_view(adapter: object, source: str = "auto") -> ClassifierView:
    """The view of `adapter` by its class; `source` is benchmark.classifier (images only)."""
    adapter = benchmark_adapter(adapter)
    if isinstance(adapter, ImageAdapter):
        return ImageView(adapter, source)
    if isinstance(adapter, VideoAdapter):
        return VideoView(adapter)
    if isinstance(adapter, AudioAdapter):
        return AudioView(adapter)
    return ClassifierView(adapter)


def config_view(cfg: DictConfig, adapter: object) -> ClassifierView:
    """`classifier_view` with benchmark.classifier from the config (auto when the config has none)."""
    return classifier_view(adapter, str(cfg.benchmark.get("classifier", "auto")))


def load_classifier(cfg: DictConfig, view: ClassifierView, steps: int = 400) -> tuple[ConvClassifier, float]:
    """The modality's classifier (trained on first use, then cached under home) and its held-out accuracy."""
    name = f"{cfg.modality.name}-{view.adapter.cache_key()}{view.tag}-{steps}steps.safetensors"
    x, labels = view.training_data()
    path = Path(cfg.home) / "classifiers" / name
    # An unconditional run's classifier learns the embedded digits: their classes, not the run's one.
    num_classes = int(labels.max()) + 1 if view.unconditional else view.adapter.num_classes
    return load_or_train_classifier(path, x, labels, num_classes, steps=steps)


def classify_media(
    classifier: ConvClassifier, view: ClassifierView, media: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-item logits and features; items made of several classifier rows (frames) are averaged."""
    x, group = view.rows(media)
    logits, feats = classifier.predict(x)
    return logits.view(-1, group, logits.shape[-1]).mean(1), feats.view(-1, group, feats.shape[-1]).mean(1)
