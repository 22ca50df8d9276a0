"""Classifier-based quality metrics in the SC09 tradition, and the motion of video clips.

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


def ink_centroids(clips: torch.Tensor) -> torch.Tensor:
    """Per clip [N, T, C, H, W] in [-1, 1] (background -1): each frame's ink centroid (y, x) in pixels, [N, T, 2]."""
    ink = ((clips.mean(2) + 1) / 2).clamp(0, 1)  # [N, T, H, W], background 0
    h, w = ink.shape[-2:]
    ys = torch.arange(h, dtype=ink.dtype).view(1, 1, h, 1)
    xs = torch.arange(w, dtype=ink.dtype).view(1, 1, 1, w)
    mass = ink.sum((-2, -1)).clamp_min(1e-6)
    return torch.stack([(ink * ys).sum((-2, -1)) / mass, (ink * xs).sum((-2, -1)) / mass], -1)


def centroid_travel(clips: torch.Tensor) -> torch.Tensor:
    """Per clip [N, T, C, H, W] in [-1, 1]: the largest distance in pixels of a frame's ink centroid from the
    first frame's; a digit that stands still scores about 0."""
    centre = ink_centroids(clips)
    return (centre - centre[:, :1]).norm(dim=-1).amax(1)
