"""Context use, measured directly: how much the denoiser's loss depends on the context it is given.

The thing JEPA is supposed to improve is the predictor's use of the visible tokens. For a batch of real
token grids with half the tokens visible, the denoising loss on the hidden tokens is computed twice with the
same noise and timesteps: with each row's own predictor features, and with the features of another row of
the same class at the same position (the context shuffled across the batch, the class kept, so that only
what the visible tokens say is taken away). A model that ignores its context
scores the same on both; the larger `shuffled / true`, the more the prediction rests on the context.
"""

from __future__ import annotations

import torch

from djepa.nn.masking import mask_from_orders, random_orders
from djepa.nn.model import DJEPA, visible_indices


def same_class_derangement(labels: torch.Tensor) -> torch.Tensor:
    """A permutation of the rows that sends each row to another row of its class (a class of one stays)."""
    perm = torch.arange(len(labels))
    for label in labels.unique():
        rows = (labels == label).nonzero().flatten()
        perm[rows] = rows.roll(1)
    return perm


@torch.no_grad()
def context_use(
    model: DJEPA, tokens: torch.Tensor, labels: torch.Tensor, visible_fraction: float = 0.5, seed: int = 0
) -> dict[str, float]:
    """Denoising loss with the true and with batch-shuffled conditioning on `tokens` [B, N, D]."""
    model.eval()
    device = model.buffer.device
    tokens, labels = tokens.to(device), labels.to(device)
    gen = torch.Generator().manual_seed(seed)
    b, n, _ = tokens.shape
    mask = mask_from_orders(random_orders(b, n, gen), n - max(1, round(n * visible_fraction))).to(device)
    visible = visible_indices(mask)
    z = model.predict(model.encode(tokens, visible, model.class_emb(labels)), visible)
    perm = same_class_derangement(labels.cpu())
    target, true_cond, shuffled_cond = tokens[mask], z[mask], z[perm.to(device)][mask]
    losses = {}
    for name, cond in (("true", true_cond), ("shuffled", shuffled_cond)):
        torch.manual_seed(seed)  # the same timesteps and noise for both
        losses[name] = float(model.head.loss(target.repeat(4, 1), cond.repeat(4, 1)).mean())
    return {
        "denoise_loss_true_context": losses["true"],
        "denoise_loss_shuffled_context": losses["shuffled"],
        "context_use_ratio": losses["shuffled"] / losses["true"],
    }
