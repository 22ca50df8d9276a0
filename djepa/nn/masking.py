"""Training masks: a ratio per batch from a truncated normal, over a random order per sample; and prefix masks,
which keep the start of a time axis visible (continuation practice)."""

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
    order_generator: torch.Generator | None = None,
) -> torch.Tensor:
    """One ratio for the batch from `generator`, then each row's random order from `order_generator` (default:
    the same generator, after the ratio)."""
    ratio = sample_mask_ratio(generator, minimum=mask_ratio_min)
    num_masked = min(num_tokens, max(1, math.ceil(num_tokens * ratio)))
    orders = order_generator if order_generator is not None else generator
    return mask_from_orders(random_orders(batch, num_tokens, orders, device), num_masked)


def prefix_mask(
    batch: int,
    token_grid: tuple[int, ...],
    time_axis: int,
    mask_ratio_min: float = 0.7,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
    order_generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Continuation practice, one draw per batch: every token in the first k positions along `time_axis` of the
    token grid (k uniform in 1 .. length - 1) is visible; of the later tokens a share drawn as in
    `training_mask` is masked, in a random order per sample. k = all later tokens masked is the first step of
    sampling from a prime; the partly revealed later tokens are its following steps. k and the share come from
    `generator`, the orders from `order_generator` (default: the same generator)."""
    length = token_grid[time_axis]
    if length < 2:
        raise ValueError(f"a prefix mask needs at least 2 positions along axis {time_axis} of {token_grid}")
    shape = [1] * len(token_grid)
    shape[time_axis] = length
    position = torch.arange(length).view(shape).expand(token_grid).flatten()  # [N]: time index of each token
    keep = int(torch.randint(1, length, (), generator=generator))
    later = position >= keep
    ratio = sample_mask_ratio(generator, minimum=mask_ratio_min)
    num_masked = max(1, math.ceil(int(later.sum()) * ratio))
    # Earlier tokens sort last, so mask_from_orders only ever picks later ones.
    orders = order_generator if order_generator is not None else generator
    scores = torch.rand(batch, len(position), generator=orders).masked_fill(~later, 2.0)
    return mask_from_orders(torch.argsort(scores, dim=1).to(device), num_masked)
