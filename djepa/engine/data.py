"""What the engine consumes: cached latents as tokens, built by adapters and the latent cache, read by the trainer."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class TokenData:
    """Cached latents as tokens: posterior mean and std [M, N, D] (std may be None) and labels [M]."""

    mean: torch.Tensor
    std: torch.Tensor | None
    labels: torch.Tensor

    def __len__(self) -> int:
        return self.mean.shape[0]
