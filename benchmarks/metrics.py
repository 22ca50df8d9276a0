"""Classifier-based quality metrics in the SC09 tradition, and the motion of video clips; the Fréchet distance of
two Gaussians and precision/recall, which the standard metrics (`standard.py`) share.

The classifier metrics are not comparable with published FID/FVD/FAD: the feature network is our own small
classifier.
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


def frechet_from_moments(mu_a: torch.Tensor, cov_a: torch.Tensor, mu_b: torch.Tensor, cov_b: torch.Tensor) -> float:
    """Fréchet distance between N(mu_a, cov_a) and N(mu_b, cov_b), as torchmetrics' FID computes it (float64; the
    trace of the product's square root from its eigenvalues)."""
    mu_a, cov_a, mu_b, cov_b = (t.double() for t in (mu_a, cov_a, mu_b, cov_b))
    root_trace = torch.linalg.eigvals(cov_a @ cov_b).sqrt().real.sum()
    return float((mu_a - mu_b).square().sum() + cov_a.trace() + cov_b.trace() - 2 * root_trace)


def knn_radii(features: torch.Tensor, k: int, chunk: int = 1024) -> torch.Tensor:
    """Each point's distance to its k-th nearest neighbour among the others (the point itself is at distance 0)."""
    return torch.cat([torch.cdist(part, features).kthvalue(k + 1, dim=1).values for part in features.split(chunk)])


def manifold_share(points: torch.Tensor, centres: torch.Tensor, radii: torch.Tensor, chunk: int = 1024) -> float:
    """The share of `points` inside at least one ball (centre, radius): the k-NN estimate of a set's manifold."""
    inside = [(torch.cdist(part, centres) <= radii[None]).any(1) for part in points.split(chunk)]
    return float(torch.cat(inside).float().mean())


def precision_recall(real: torch.Tensor, fake: torch.Tensor, k: int = 3) -> tuple[float, float]:
    """Improved precision and recall (Kynkäänniemi et al. 2019) on feature sets [N, D], as ADM's suite reports
    them with k = 3: precision is the share of generated items inside the real set's k-NN manifold (quality),
    recall the share of real items inside the generated set's (coverage)."""
    if len(real) <= k or len(fake) <= k:
        raise ValueError(f"precision/recall with k={k} needs more than {k} items per set, got {len(real)}, {len(fake)}")
    real, fake = real.float(), fake.float()
    return manifold_share(fake, real, knn_radii(real, k)), manifold_share(real, fake, knn_radii(fake, k))


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
