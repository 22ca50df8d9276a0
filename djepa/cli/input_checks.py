"""Checks of a composed config that need more than one key, the machine, or the command: run once at start.

The schema (`djepa.schema`, through `djepa.cli.checks`) types and bounds single keys; here the values that only
fail later, deep in torch or einops: widths the heads do not divide, media sizes the tokenizer and patch do not
tile, devices and attention kernels this machine lacks, empty paths inside plug-in sections. Each refusal
is one UsageError line naming the key, raised before anything is read, trained or written.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from djepa.errors import UsageError

# Paths inside plug-in sections (the schema refuses empty top-level paths): empty would mean the current directory.
PATH_KEYS = ("modality.adapter.tokenizer.path", "modality.adapter.cache_dir")
# The AutoencoderKL-based tokenizers `train_tokenizer` makes, per modality: their downsampling is
# 2 ** (len(block_out_channels) - 1) per spatial axis, read from the saved config.json or from `tokenizer`.
KL_TOKENIZERS = {
    "image": "djepa.tokenizers.autoencoder_kl.AutoencoderKLTokenizer",
    "video": "djepa.tokenizers.per_frame.PerFrameTokenizer",
    "audio": "djepa.tokenizers.mel.MelTokenizer",
}
MEDIA_CHANNELS = (1, 3)  # grey or RGB: folders are read as L or RGB, the embedded digits are grey (3: copied)


def check_inputs(cfg: DictConfig, command: str) -> None:
    """Raise a one-line UsageError naming the first key of `cfg` that `command` (train, sample, train_tokenizer,
    ...) cannot run with. `sample` takes the model and modality from the run, so their checks are skipped there."""
    check_paths(cfg)
    check_device(cfg)
    if command == "sample":
        return
    check_model(cfg)
    check_tokenizer_training(cfg)
    check_media(cfg, command)


def _leaves(value: Any, key: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _leaves(v, f"{key}.{k}" if key else str(k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _leaves(v, f"{key}[{i}]")
    else:
        yield key, value


def _select(cfg: DictConfig, key: str, default: Any = None) -> Any:
    value = OmegaConf.select(cfg, key, default=default)
    return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_paths(cfg: DictConfig) -> None:
    for key in PATH_KEYS:
        value = OmegaConf.select(cfg, key, default=None)
        if isinstance(value, str) and not value.strip():
            raise UsageError(f"{key} is empty: give a folder (an empty path would mean the current directory)")


def check_device(cfg: DictConfig) -> None:
    """A device and an attention kernel this machine has, refused now rather than at the first step."""
    import torch

    name = str(_select(cfg, "device", "auto"))
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UsageError(f"device={name}: torch sees no CUDA GPU on this machine; use device=cpu or auto")
        index = int(name.split(":", 1)[1]) if ":" in name else 0
        if index >= torch.cuda.device_count():
            raise UsageError(f"device={name}: this machine has {torch.cuda.device_count()} GPU(s), cuda:0 and up")
    if name == "mps" and not torch.backends.mps.is_available():
        raise UsageError("device=mps: torch sees no Apple GPU (MPS) here; use device=cpu or auto")
    if _select(cfg, "attention_backend") == "xformers":
        from djepa.engine.runtime import resolve_device
        from djepa.nn.attention import _xformers_available

        device = resolve_device(name)
        if device.type != "cuda":
            raise UsageError(
                f"attention_backend=xformers needs a CUDA GPU (device={name} runs on {device.type}); "
                "use attention_backend=auto or sdpa"
            )
        if not _xformers_available():
            raise UsageError("attention_backend=xformers: xformers is not installed (the `gpu` extra); use auto")


def check_model(cfg: DictConfig) -> None:
    """Sizes up front (as build_model checks them, but before a tokenizer is trained), and heads that divide
    both transformer widths."""
    if "model" not in cfg or "loss" not in cfg:
        return
    from djepa.engine.model_config import model_kwargs, validate_model_config

    kwargs = model_kwargs(cfg)
    validate_model_config(kwargs)
    heads: Any = kwargs.get("num_heads")
    for key in ("encoder_width", "predictor_width"):
        width: Any = kwargs.get(key)
        if _is_int(heads) and _is_int(width) and width % heads:
            raise UsageError(
                f"model.num_heads={heads} does not divide model.{key}={width}: each head takes an equal share"
            )


def check_tokenizer_training(cfg: DictConfig) -> None:
    """The `tokenizer` section trains the default tokenizer (train_tokenizer, or train on a fresh machine)."""
    for key, low in (("steps", 1), ("batch_size", 1)):
        value = _select(cfg, f"tokenizer.{key}")
        if value is not None and not (_is_int(value) and value >= low):
            raise UsageError(f"tokenizer.{key}={value!r} must be a whole number >= {low}")
    lr = _select(cfg, "tokenizer.lr")
    if lr is not None and not (isinstance(lr, (int, float)) and not isinstance(lr, bool) and lr > 0):
        raise UsageError(f"tokenizer.lr={lr!r} must be a number > 0")
    holdout = _select(cfg, "tokenizer.holdout")
    if holdout is not None and not (isinstance(holdout, (int, float)) and 0 <= holdout < 1):
        raise UsageError(f"tokenizer.holdout={holdout!r} must be a fraction in [0, 1)")


def default_kind(cfg: DictConfig) -> bool:
    """Whether the modality's tokenizer is the AutoencoderKL kind `train_tokenizer` makes (mel for audio)."""
    name = str(_select(cfg, "modality.name"))
    tokenizer = _select(cfg, "modality.adapter.tokenizer")
    if not isinstance(tokenizer, dict) or "kind" in tokenizer:  # `kind`: an old config, upgraded when loaded
        return False
    return name in KL_TOKENIZERS and tokenizer.get("_target_", KL_TOKENIZERS[name]) == KL_TOKENIZERS[name]


def tokenizer_downsample(cfg: DictConfig, command: str) -> tuple[int, str] | None:
    """The default-kind tokenizer's spatial downsampling and where it comes from: its saved config.json, or the
    `tokenizer` section it is (about to be) trained from. None where it cannot be known without loading it."""
    if not default_kind(cfg):
        return None
    tokenizer = _select(cfg, "modality.adapter.tokenizer")
    path = Path(str(tokenizer.get("path")))
    blocks: Any = None
    source = "tokenizer.block_out_channels"
    if command != "train_tokenizer" and path.exists():
        try:
            blocks = json.loads((path / "config.json").read_text())["block_out_channels"]
        except (OSError, ValueError, KeyError, TypeError):
            return None  # a single-file or damaged tokenizer: loading it gives its own error
        source = f"the tokenizer at {path}"
    else:
        blocks = _select(cfg, "tokenizer.block_out_channels")
    if not isinstance(blocks, list) or not blocks:
        return None
    return 2 ** (len(blocks) - 1), source


def check_media(cfg: DictConfig, command: str) -> None:
    """Media sizes the tokenizer downsamples evenly into a latent grid that the patch tiles, and channel
    counts the data has."""
    adapter = _select(cfg, "modality.adapter")
    name = _select(cfg, "modality.name")
    if not isinstance(adapter, dict) or name not in KL_TOKENIZERS:
        return
    prefix = "modality.adapter"
    axes: list[tuple[str, Any]]
    if name in ("image", "video"):
        channels = adapter.get("channels", 1)
        if channels not in MEDIA_CHANNELS:
            source = (
                "folder images are read as one of the two"
                if adapter.get("data_dir")
                else ("the embedded digits are grey (1), 3 copies them into RGB")
            )
            raise UsageError(f"{prefix}.channels={channels!r} must be 1 (grey) or 3 (RGB): {source}")
        axes = [("image_size", adapter.get("image_size"))] * 2
        if name == "video":
            axes = [("frames", adapter.get("frames"))] + axes
    elif not default_kind(cfg):
        return  # e.g. Oobleck: a 1-D waveform grid, its own patch rank
    else:
        mel = adapter.get("mel") or {}
        axes = [("mel.n_mels", mel.get("n_mels")), ("mel.frames", mel.get("frames"))]
    for key, size in axes:
        if size is not None and not (_is_int(size) and size >= 1):
            raise UsageError(f"{prefix}.{key}={size!r} must be a whole number >= 1")
    patch = adapter.get("patch_size")
    shown = json.dumps(patch).replace(" ", "")
    if not (isinstance(patch, list) and len(patch) == len(axes) and all(_is_int(p) and p >= 1 for p in patch)):
        raise UsageError(f"{prefix}.patch_size={shown} must be {len(axes)} whole numbers >= 1 (one per axis)")
    found = tokenizer_downsample(cfg, command)
    if found is None or any(size is None for _, size in axes):
        return
    factor, source = found
    # Video's per-frame tokenizer keeps time as is; every spatial axis is downsampled by `factor`.
    factors = [1] * (len(axes) - 2) + [factor, factor]
    for (key, size), down, p in zip(axes, factors, patch):
        if size % down:
            raise UsageError(
                f"{prefix}.{key}={size} must be a multiple of {down * p}: {source} downsamples by {down} "
                f"and patch_size {shown} takes {p} latent cells per token"
            )
        if down == 1 and size % p:
            raise UsageError(f"{prefix}.patch_size={shown} does not tile {prefix}.{key}={size}: not a multiple of {p}")
        if (size // down) % p:
            raise UsageError(
                f"{prefix}.patch_size={shown} does not tile the latent grid: {prefix}.{key}={size} / {down} "
                f"({source}) = {size // down} latent cells, not a multiple of {p}"
            )
