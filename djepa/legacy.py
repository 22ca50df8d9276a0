"""Configs written before parts were plugged in by `_target_` (djepa.plugins), mapped to today's form.

Saved runs' config.yaml, checkpoints' model config and export folders in the wild name a tokenizer by
`modality.adapter.tokenizer.kind`, a denoising head by `loss.head.type`, MAR mode by `model.jepa: false`, and
the attention heads per block `model.heads` (today `model.num_heads`, so it cannot be read as `loss.head`).
This module is the one place that knows those old names; everything else reads only the new form.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

from omegaconf import DictConfig, OmegaConf

from djepa.errors import UsageError

_VIDEO_VAE = "djepa.tokenizers.video_vae.VideoVAETokenizer"
# old `tokenizer.kind` -> the keys that replace it
TOKENIZER_KINDS: dict[str, dict[str, str]] = {
    "mel": {"_target_": "djepa.tokenizers.mel.MelTokenizer"},
    "oobleck": {"_target_": "djepa.tokenizers.oobleck.OobleckTokenizer"},
    "per_frame": {"_target_": "djepa.tokenizers.per_frame.PerFrameTokenizer"},
    "cogvideox": {"_target_": _VIDEO_VAE, "family": "cogvideox"},
    "wan": {"_target_": _VIDEO_VAE, "family": "wan"},
    "ltx": {"_target_": _VIDEO_VAE, "family": "ltx"},
}
# old `loss.head.type` -> the head class
HEAD_TYPES: dict[str, str] = {"diffusion": "djepa.nn.heads.DiffusionHead", "flow": "djepa.nn.heads.FlowHead"}
DEFAULT_HEAD = "diffusion"


def upgrade_tokenizer(config: Mapping[str, Any], default_target: str | None = None) -> dict[str, Any]:
    """A tokenizer entry in the `_target_` form: an old `kind` mapped, neither key given -> `default_target`."""
    config = dict(config)
    if "_target_" in config:
        return config
    kind = config.pop("kind", None)
    if kind is None:
        return {"_target_": default_target, **config} if default_target else config
    if kind not in TOKENIZER_KINDS:
        raise UsageError(f"modality.adapter.tokenizer.kind={kind!r}: choose one of {', '.join(TOKENIZER_KINDS)}")
    return {**TOKENIZER_KINDS[kind], **config}


def upgrade_head(config: Mapping[str, Any] | None) -> dict[str, Any]:
    """A head entry in the `_target_` form: an old `type` mapped, none given -> the diffusion head."""
    config = dict(config or {})
    if "_target_" in config:
        return config
    kind = config.pop("type", DEFAULT_HEAD)
    if kind not in HEAD_TYPES:
        raise UsageError(f"loss.head.type={kind!r}: choose one of {', '.join(HEAD_TYPES)}")
    return {"_target_": HEAD_TYPES[kind], **config}


# DJEPA's constructor arguments renamed so that attention heads and the denoising head cannot be confused
MODEL_ARGUMENTS = {"heads": "num_heads", "head": "head_config"}
# Config keys renamed, old -> new, each within its section: a saved config's old key is read as the new one
# (upgrade_config); on the command line the old key is refused with the new name (djepa.cli.checks).
RENAMED_KEYS = {"model.heads": "model.num_heads"}


def upgrade_model_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """A checkpoint's or export's model config (DJEPA's constructor arguments) in today's form."""
    config = {MODEL_ARGUMENTS.get(k, k): v for k, v in config.items()}
    if "head_config" in config:
        config["head_config"] = upgrade_head(config["head_config"])
    return config


def upgrade_config(cfg: DictConfig) -> DictConfig:
    """A saved composed config (a run's or an export's config.yaml) in today's form; new configs pass unchanged."""
    cfg = cfg.copy()
    tokenizer = OmegaConf.select(cfg, "modality.adapter.tokenizer")
    if tokenizer is not None and "kind" in tokenizer and "_target_" not in tokenizer:
        new = upgrade_tokenizer(cast(dict[str, Any], OmegaConf.to_container(tokenizer)))
        OmegaConf.update(cfg, "modality.adapter.tokenizer", new, merge=False)
    head = OmegaConf.select(cfg, "loss.head")
    if head is not None and "_target_" not in head:
        OmegaConf.update(
            cfg, "loss.head", upgrade_head(cast(dict[str, Any], OmegaConf.to_container(head))), merge=False
        )
    for old_key, new_key in RENAMED_KEYS.items():
        section, old_name = old_key.rsplit(".", 1)
        new_name = new_key.rsplit(".", 1)[1]
        node = OmegaConf.select(cfg, section)
        if node is not None and old_name in node and new_name not in node:
            settings = cast(dict[str, Any], OmegaConf.to_container(node))
            renamed = {new_name if k == old_name else k: v for k, v in settings.items()}  # in place, order kept
            OmegaConf.update(cfg, section, renamed, merge=False)
    model = OmegaConf.select(cfg, "model")
    if model is not None and "jepa" in model:
        # Before the one switch, `model.jepa: false` was MAR mode whatever the weight; the weight is the switch now.
        with_jepa = bool(model.jepa)
        settings = cast(dict[str, Any], OmegaConf.to_container(model))
        settings.pop("jepa")
        OmegaConf.update(cfg, "model", settings, merge=False)
        if not with_jepa:
            OmegaConf.update(cfg, "loss.jepa_weight", 0.0, force_add=True)
    return cfg
