"""Running a function over a large batch in slices: one loop instead of one per caller."""

from __future__ import annotations

from collections.abc import Callable
from typing import cast, overload

import torch


@overload
def map_chunks(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, size: int = 256) -> torch.Tensor: ...


@overload
def map_chunks(
    fn: Callable[[torch.Tensor], tuple[torch.Tensor, ...]], x: torch.Tensor, size: int = 256
) -> tuple[torch.Tensor, ...]: ...


def map_chunks(
    fn: Callable[[torch.Tensor], torch.Tensor | tuple[torch.Tensor, ...]], x: torch.Tensor, size: int = 256
) -> torch.Tensor | tuple[torch.Tensor, ...]:
    """`fn` over `x[i : i + size]` in order, outputs concatenated along the first axis; a function that returns
    a tuple of tensors gives the tuple of their concatenations. Bounds memory; the calls are the same, in the
    same order, as a hand-written loop's, so random draws inside `fn` are too."""
    if size < 1:
        raise ValueError(f"chunk size must be positive, got {size}")
    outs = [fn(x[i : i + size]) for i in range(0, len(x), size)]
    if outs and isinstance(outs[0], tuple):
        return tuple(torch.cat(parts) for parts in zip(*outs))
    return torch.cat(cast(list[torch.Tensor], outs))  # fn returns one kind: tensors here
