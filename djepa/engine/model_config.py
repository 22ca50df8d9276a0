"""The model from a composed config: DJEPA's constructor arguments from `model` and `loss`, checked up front."""

from __future__ import annotations

from typing import Any, cast

from omegaconf import DictConfig, OmegaConf

from djepa.errors import UsageError
from djepa.nn.model import DJEPA


def jepa_enabled(cfg: DictConfig) -> bool:
    """MAR mode's one switch: `loss.jepa_weight=0` means no JEPA loss, no projector and no teacher."""
    return float(cfg.loss.jepa_weight) > 0


def model_kwargs(cfg: DictConfig) -> dict[str, Any]:
    kwargs = cast(dict[str, Any], OmegaConf.to_container(cfg.model, resolve=True))
    if "jepa" in kwargs:
        raise UsageError(
            "model.jepa is no setting any more: MAR mode is loss.jepa_weight=0 (or model=mar_b|mar_l|mar_h)"
        )
    kwargs["jepa"] = jepa_enabled(cfg)
    kwargs["head_config"] = OmegaConf.to_container(cfg.loss.head, resolve=True)
    return kwargs


POSITIVE_MODEL_KEYS = (
    "encoder_depth",
    "encoder_width",
    "predictor_depth",
    "predictor_width",
    "num_heads",
    "buffer_size",
    "denoiser_depth",
    "denoiser_width",
    "diffusion_batch_mul",
    "mlp_ratio",
)


def validate_model_config(kwargs: dict[str, Any]) -> None:
    """Reject wrong types and non-positive sizes up front, naming the key."""
    for key in POSITIVE_MODEL_KEYS:
        value = kwargs.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
            raise UsageError(f"model.{key} must be a positive number, got {value!r}")
    for key in (
        "jepa_projector_norm",
        "jepa_target_norm",
        "jepa_without_context",
        "grad_checkpointing",
        "qk_norm",
        "diffusion_pos_embed",
        "buffer_pos_embed",
    ):
        if not isinstance(kwargs.get(key, False), bool):
            raise UsageError(f"model.{key} must be true or false, got {kwargs[key]!r}")
    for key in ("label_drop", "attn_drop", "proj_drop"):
        value = kwargs.get(key, 0.0)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
            raise UsageError(f"model.{key} must be in [0, 1), got {value!r}")


def build_model(cfg: DictConfig, token_dim: int, grid: tuple[int, ...], num_classes: int) -> DJEPA:
    kwargs = model_kwargs(cfg)
    validate_model_config(kwargs)
    try:
        return DJEPA(token_dim=token_dim, grid=grid, num_classes=num_classes, **kwargs)
    except TypeError as err:
        raise UsageError(f"bad model/loss config: {err}") from err
