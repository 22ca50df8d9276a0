"""Per-token denoising MLP with AdaLN conditioning (MAR's SimpleMLPAdaLN design)."""

from __future__ import annotations

import math

import torch
from torch import nn


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class TimestepEmbedder(nn.Module):
    def __init__(self, width: int, freq_dim: int = 256):
        super().__init__()
        self.freq_dim = freq_dim
        self.mlp = nn.Sequential(nn.Linear(freq_dim, width), nn.SiLU(), nn.Linear(width, width))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return self.mlp(timestep_embedding(t, self.freq_dim))


def linear(layer: nn.Module) -> nn.Linear:
    """A Linear entry of an nn.Sequential, as a Linear (torch types `Sequential[i]` as any Module)."""
    assert isinstance(layer, nn.Linear), type(layer).__name__
    return layer


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + scale) + shift


class ResBlock(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.norm = nn.LayerNorm(width, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(width, width), nn.SiLU(), nn.Linear(width, width))
        self.modulation = nn.Sequential(nn.SiLU(), nn.Linear(width, 3 * width))

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift, scale, gate = self.modulation(c).chunk(3, dim=-1)
        return x + gate * self.mlp(modulate(self.norm(x), shift, scale))


class FinalLayer(nn.Module):
    def __init__(self, width: int, out_channels: int):
        super().__init__()
        self.norm = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.linear = nn.Linear(width, out_channels)
        self.modulation = nn.Sequential(nn.SiLU(), nn.Linear(width, 2 * width))

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift, scale = self.modulation(c).chunk(2, dim=-1)
        return self.linear(modulate(self.norm(x), shift, scale))


class DenoiserMLP(nn.Module):
    """Predicts the noise (or velocity) of one token from its noisy value, the time and a condition."""

    def __init__(self, in_channels: int, cond_channels: int, width: int, depth: int, out_channels: int):
        super().__init__()
        self.time_embed = TimestepEmbedder(width)
        self.cond_embed = nn.Linear(cond_channels, width)
        self.input_proj = nn.Linear(in_channels, width)
        self.blocks = nn.ModuleList([ResBlock(width) for _ in range(depth)])
        self.final = FinalLayer(width, out_channels)
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
        nn.init.normal_(linear(self.time_embed.mlp[0]).weight, std=0.02)
        nn.init.normal_(linear(self.time_embed.mlp[2]).weight, std=0.02)
        # Zero modulation and output: every block starts as the identity, the net predicts zero.
        for block in self.blocks:
            assert isinstance(block, ResBlock)
            nn.init.zeros_(linear(block.modulation[-1]).weight)
            nn.init.zeros_(linear(block.modulation[-1]).bias)
        nn.init.zeros_(linear(self.final.modulation[-1]).weight)
        nn.init.zeros_(linear(self.final.modulation[-1]).bias)
        nn.init.zeros_(self.final.linear.weight)
        nn.init.zeros_(self.final.linear.bias)

    def embed_cond(self, cond: torch.Tensor) -> torch.Tensor:
        """The condition's embedding: made once per sampling call, not once per denoising step."""
        return self.cond_embed(cond)

    def forward(
        self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor, cond_emb: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Output for rows x [M, D] at times t [M]. `cond` may hold each row's condition once for k tiled copies
        of the rows ([M / k, C], as `repeat(k, 1)` would tile it): embedded first, then tiled. `cond_emb`, an
        `embed_cond` result made earlier, replaces embedding `cond`."""
        h = self.input_proj(x)
        c = self.embed_cond(cond) if cond_emb is None else cond_emb
        if c.shape[0] != x.shape[0]:
            c = c.repeat(x.shape[0] // c.shape[0], 1)
        c = self.time_embed(t) + c
        for block in self.blocks:
            h = block(h, c)
        return self.final(h, c)
