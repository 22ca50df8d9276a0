"""One attention function with a backend chosen once per device type.

xformers' memory-efficient kernel on CUDA where the `gpu` extra is installed and its kernels run on this
torch build, torch SDPA elsewhere; `math` is the explicit softmax reference used to check the other two.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
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


log = logging.getLogger(__name__)


@functools.cache
def xformers_problem() -> str | None:
    """Why xformers cannot run attention on this machine's CUDA device, or None where it can.

    Importing is not enough: a wheel built for another torch or CUDA imports, then has no kernel for any input.
    """
    if not torch.cuda.is_available():
        return "no CUDA device"
    try:
        import xformers.ops as xops

        q = torch.zeros(1, 8, 1, 64, device="cuda", dtype=torch.bfloat16)
        xops.memory_efficient_attention(q, q, q)
    except Exception as error:  # ImportError, or NotImplementedError from a build without CUDA kernels
        first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
        return f"{type(error).__name__}: {first_line}"
    return None


def _xformers_available() -> bool:
    return xformers_problem() is None


def resolve_backend(device: torch.device) -> str:
    """The backend `attention` uses for tensors on `device`."""
    key = device.type
    if key not in _resolved:
        if _forced != "auto":
            if _forced == "xformers" and key != "cuda":
                raise RuntimeError("attention_backend=xformers needs CUDA tensors and the `gpu` extra installed")
            if _forced == "xformers" and not _xformers_available():
                raise RuntimeError(f"attention_backend=xformers: xformers does not run here ({xformers_problem()})")
            _resolved[key] = _forced
        elif key == "cuda" and _xformers_available():
            _resolved[key] = "xformers"
        else:
            if key == "cuda" and importlib.util.find_spec("xformers") is not None:
                log.warning("xformers is installed but does not run here (%s); attention uses sdpa", xformers_problem())
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
