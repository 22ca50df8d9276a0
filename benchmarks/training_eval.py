"""`train.eval_every=K`: a small evaluation every K steps, so that a run has a quality curve without a benchmark.

`train.eval_samples` items (class i % num_classes, drawn with the run's seed at every point, so that points differ
by the weights alone) are scored with the standard FID, precision and recall when `standard_weights` is given
(against the statistics `fid_stats` cached for the data folder, else the real subset `evaluate` uses), else with
the benchmark classifier's Fréchet distance and, for a labelled run, its accuracy. The keys are prefixed `eval_`.
A FID of a few hundred items is biased upwards: it compares the points of one run, it is no number for a paper's
table (that takes 50,000 samples: `sample format=npz`, then `fid_stats`). The scorer is prepared once, before
training (the classifier trained on first use and cached under home, as `evaluate` does).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable

import torch
from omegaconf import DictConfig

from djepa.benchmarks.evaluate import RealMedia, modality_classifier, standard_metric
from djepa.benchmarks.metrics import accuracy, frechet_distance
from djepa.benchmarks.views import classify_media, config_view
from djepa.engine.sampling import SamplingSettings, generate
from djepa.nn.model import DJEPA

Scorer = Callable[[torch.Tensor, torch.Tensor], dict[str, float]]


class TrainingEval:
    """The Trainer's `evaluate` callback: (sampling EMA, step) -> {"eval_<metric>": value}."""

    def __init__(self, cfg: DictConfig, adapter: object):
        self.cfg = cfg
        self.view = config_view(cfg, adapter)
        self.count = int(cfg.train.eval_samples)
        self._score: Scorer | None = None

    def prepare(self) -> Scorer:
        """The scorer: the standard metric with `standard_weights`, else the classifier's; built on first use."""
        if self._score is not None:
            return self._score
        real = RealMedia(self.view.adapter)
        standard = standard_metric(self.cfg, real)
        if standard is not None:
            self._score = lambda media, labels: standard(media)
            return self._score
        classifier, _, real_features = modality_classifier(self.cfg, self.view, real)

        def classifier_scores(media: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
            logits, features = classify_media(classifier, self.view, media)
            scores = {"fd": frechet_distance(real_features, features)}
            if not self.view.unconditional:  # an unlabelled run's classifier knows the digits, not its data
                scores["accuracy"] = accuracy(logits, labels)
            return scores

        self._score = classifier_scores
        return self._score

    def __call__(self, model: DJEPA, step: int) -> dict[str, float]:
        score = self.prepare()
        adapter = self.view.adapter
        labels = torch.arange(self.count) % adapter.num_classes
        settings = SamplingSettings.from_config(self.cfg)
        if self.view.unconditional:  # one class: nothing for guidance to contrast
            settings = dataclasses.replace(settings, guidance_scale=1.0)
        device = next(model.parameters()).device
        start = time.perf_counter()
        # The same seed at every point; the training RNG is left as it was.
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(int(self.cfg.seed))
            media = adapter.decode_tokens(generate(model, labels, settings, progress=False))
        seconds = time.perf_counter() - start
        scores = {f"eval_{key}": float(value) for key, value in score(media, labels).items()}
        return scores | {"eval_samples": self.count, "eval_seconds": seconds}
