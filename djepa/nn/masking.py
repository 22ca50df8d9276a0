"""Training masks: a ratio per batch from a truncated normal, over a random order per sample."""

from __future__ import annotations

import math

import torch


def sample_mask_ratio(
    generator: torch.Generator | None = None, mean: float = 1.0, std: float = 0.25, minimum: float = 0.7
) -> float:
    """A draw from N(mean, std) truncated to [minimum, 1] by inverse-CDF sampling."""
    normal = torch.distributions.Normal(0.0, 1.0)
    lo = normal.cdf(torch.tensor((minimum - mean) / std))
    hi = normal.cdf(torch.tensor((1.0 - mean) / std))
    u = lo + (hi - lo) * torch.rand((), generator=generator)
    return float(mean + std * normal.icdf(u.clamp(1e-6, 1 - 1e-6)))


def random_orders(
    batch: int, num_tokens: int, generator: torch.Generator | None = None, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """A random permutation of token indices per sample, [batch, num_tokens]."""
    return torch.argsort(torch.rand(batch, num_tokens, generator=generator), dim=1).to(device)


def mask_from_orders(orders: torch.Tensor, num_masked: int) -> torch.Tensor:
    """Boolean mask [batch, num_tokens], True for the first `num_masked` tokens of each order."""
    mask = torch.zeros(orders.shape, dtype=torch.bool, device=orders.device)
    return mask.scatter(1, orders[:, :num_masked], True)


def training_mask(
    batch: int,
    num_tokens: int,
    mask_ratio_min: float = 0.7,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    ratio = sample_mask_ratio(generator, minimum=mask_ratio_min)
    num_masked = min(num_tokens, max(1, math.ceil(num_tokens * ratio)))
    return mask_from_orders(random_orders(batch, num_tokens, generator, device), num_masked)
