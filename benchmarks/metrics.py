"""Classifier-based quality metrics in the SC09 tradition.

Not comparable with published FID/FVD/FAD: the feature network is our own small classifier.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from scipy import linalg


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    return float((logits.argmax(dim=1) == labels).float().mean())


def per_class_accuracy(logits: torch.Tensor, labels: torch.Tensor, names: Sequence[str] | None) -> dict[str, float]:
    """Accuracy on the items of each class present, by class name (the index where none is known): where a mean
    hides a lost class."""
    hits = logits.argmax(dim=1) == labels
    name = (lambda c: names[c]) if names else str
    return {name(c): float(hits[labels == c].float().mean()) for c in sorted(set(labels.tolist()))}


def frechet_distance(real: torch.Tensor, fake: torch.Tensor) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets [N, D]."""
    a, b = real.double().numpy(), fake.double().numpy()
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    offset = np.eye(len(cov_a)) * 1e-6  # keeps the product's square root finite for rank-deficient sets
    covmean = np.real(linalg.sqrtm((cov_a + offset) @ (cov_b + offset)))
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a) + np.trace(cov_b) - 2 * np.trace(covmean))


def inception_score(logits: torch.Tensor, splits: int = 1) -> float:
    """exp(E_x KL(p(y|x) || p(y))) over the classifier's softmax."""
    probs = logits.double().softmax(dim=1)
    scores = []
    for part in probs.chunk(splits):
        marginal = part.mean(0, keepdim=True)
        kl = (part * (part.clamp_min(1e-12).log() - marginal.clamp_min(1e-12).log())).sum(1)
        scores.append(kl.mean().exp().item())
    return float(np.mean(scores))
