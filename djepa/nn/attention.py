"""One attention function with a backend chosen once per device type.

xformers' memory-efficient kernel on CUDA where the `gpu` extra is installed, torch SDPA
elsewhere; `math` is the explicit softmax reference used to check the other two.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from djepa.schema import ATTENTION_BACKENDS

BACKENDS = ATTENTION_BACKENDS
_forced: str = "auto"
_resolved: dict[str, str] = {}


def set_attention_backend(name: str) -> None:
    """Force a backend (`xformers`, `sdpa`, `math`) or go back to `auto`."""
    if name not in BACKENDS:
        raise ValueError(f"attention_backend must be one of {BACKENDS}, got {name!r}")
    global _forced
    _forced = name
    _resolved.clear()


def _xformers_available() -> bool:
    try:
        import xformers.ops  # noqa: F401
    except Exception:
        return False
    return True


def resolve_backend(device: torch.device) -> str:
    """The backend `attention` uses for tensors on `device`."""
    key = device.type
    if key not in _resolved:
        if _forced != "auto":
            if _forced == "xformers" and (key != "cuda" or not _xformers_available()):
                raise RuntimeError("attention_backend=xformers needs CUDA tensors and the `gpu` extra installed")
            _resolved[key] = _forced
        elif key == "cuda" and _xformers_available():
            _resolved[key] = "xformers"
        else:
            _resolved[key] = "sdpa"
    return _resolved[key]


def math_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, dropout_p: float = 0.0) -> torch.Tensor:
    scores = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(q.shape[-1]))
    weights = scores.float().softmax(dim=-1).to(q.dtype)
    if dropout_p > 0:
        weights = F.dropout(weights, p=dropout_p)
    return weights @ v


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, dropout_p: float = 0.0) -> torch.Tensor:
    """Multi-head attention over [batch, heads, tokens, head_dim] tensors, no mask."""
    backend = resolve_backend(q.device)
    if backend == "xformers":
        import xformers.ops as xops

        out = xops.memory_efficient_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), p=dropout_p)
        return out.transpose(1, 2)
    if backend == "sdpa":
        return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p)
    return math_attention(q, k, v, dropout_p)
