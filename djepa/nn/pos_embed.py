"""Positional embeddings factorised over the axes of a token grid of any rank."""

from __future__ import annotations

import math

import torch
from torch import nn


def sincos_1d(positions: torch.Tensor, dim: int) -> torch.Tensor:
    """Sin-cos embedding [len, dim] of 1-D positions; dim must be even."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float64) / max(half, 1))
    angles = positions.double()[:, None] * freqs[None]
    return torch.cat([angles.sin(), angles.cos()], dim=1).float()


def sincos_grid(grid: tuple[int, ...], dim: int) -> torch.Tensor:
    """Fixed embedding [prod(grid), dim]: each axis gets its own slice of the channels."""
    per_axis = 2 * (dim // (2 * len(grid)))
    parts = []
    for axis, size in enumerate(grid):
        emb = sincos_1d(torch.arange(size), per_axis)
        shape = [1] * len(grid) + [per_axis]
        shape[axis] = size
        parts.append(emb.view(shape).expand(*grid, per_axis))
    pad = dim - per_axis * len(grid)
    if pad:
        parts.append(torch.zeros(*grid, pad))
    return torch.cat(parts, dim=-1).reshape(-1, dim)


class GridPositionalEmbedding(nn.Module):
    """Fixed sin-cos per axis plus a learned per-axis table, summed over axes.

    Learned tables are factorised (one row per position along each axis), so a grid of
    another size at inference interpolates each table instead of a whole 2-D/3-D block.
    """

    fixed: torch.Tensor  # a buffer

    def __init__(self, grid: tuple[int, ...], dim: int, learned: bool = True):
        super().__init__()
        self.grid = tuple(int(g) for g in grid)
        self.register_buffer("fixed", sincos_grid(self.grid, dim), persistent=False)
        self.tables = nn.ParameterList([nn.Parameter(torch.zeros(size, dim)) for size in self.grid] if learned else [])
        for table in self.tables:
            nn.init.normal_(table, std=0.02)

    def forward(self, grid: tuple[int, ...] | None = None) -> torch.Tensor:
        """Embedding [prod(grid), dim] for `grid` (defaults to the training grid)."""
        grid = self.grid if grid is None else tuple(grid)
        if len(grid) != len(self.grid):
            raise ValueError(f"grid rank {len(grid)} differs from the model's grid {self.grid}")
        dim = self.fixed.shape[-1]
        out = self.fixed if grid == self.grid else sincos_grid(grid, dim).to(self.fixed.device)
        for axis, (size, table) in enumerate(zip(grid, self.tables)):
            if size != table.shape[0]:
                table = nn.functional.interpolate(table.T[None], size=size, mode="linear", align_corners=True)[0].T
            shape = [1] * len(grid) + [dim]
            shape[axis] = size
            out = out + table.view(shape).expand(*grid, dim).reshape(-1, dim)
        return out


class LearnedPositionalEmbedding(nn.Module):
    """One learned row per grid position (MAR's tables; std 0.02 at init).

    A grid of another size with the same rank resamples the table over the grid (linear, bicubic or trilinear),
    as ViT fine-tuning at a new resolution does.
    """

    def __init__(self, grid: tuple[int, ...], dim: int):
        super().__init__()
        self.grid = tuple(int(g) for g in grid)
        self.table = nn.Parameter(torch.zeros(math.prod(self.grid), dim))
        nn.init.normal_(self.table, std=0.02)

    def forward(self, grid: tuple[int, ...] | None = None) -> torch.Tensor:
        """Embedding [prod(grid), dim] for `grid` (defaults to the training grid)."""
        grid = self.grid if grid is None else tuple(grid)
        if grid == self.grid:
            return self.table
        if len(grid) != len(self.grid) or len(grid) > 3:
            raise ValueError(f"grid {grid} cannot be resampled from the model's grid {self.grid}")
        dim = self.table.shape[-1]
        mode = {1: "linear", 2: "bicubic", 3: "trilinear"}[len(grid)]
        table = self.table.T.reshape(1, dim, *self.grid)
        return nn.functional.interpolate(table, size=grid, mode=mode, align_corners=False).reshape(dim, -1).T


def positional_embedding(kind: str, grid: tuple[int, ...], dim: int) -> nn.Module:
    """The token positions `model.pos_embed` names: `factorised` (GridPositionalEmbedding) or `learned`."""
    if kind == "factorised":
        return GridPositionalEmbedding(grid, dim)
    if kind == "learned":
        return LearnedPositionalEmbedding(grid, dim)
    raise ValueError(f"model.pos_embed must be factorised or learned, got {kind!r}")
