"""What LTH14/mar's and D-JEPA's checkpoints share: block counts, `args` values with the scripts' defaults, and the
constructor arguments both read from their tensors the same way (the converters add their own switches)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import torch

# Both references' module prefixes (MAR's `models/mar.py` names, which D-JEPA keeps) -> djepa's; the catch-all
# `diffloss.net.` comes after its more specific children.
MAR_PREFIXES = (
    ("z_proj_ln.", "encoder_in_norm."),
    ("z_proj.", "token_proj."),
    ("encoder_blocks.", "encoder.blocks."),
    ("encoder_norm.", "encoder.norm."),
    ("decoder_embed.", "predictor_embed."),
    ("decoder_blocks.", "predictor.blocks."),
    ("decoder_norm.", "predictor.norm."),
    ("diffloss.net.res_blocks.", "head.net.blocks."),
    ("diffloss.net.final_layer.", "head.net.final."),
    ("diffloss.net.", "head.net."),
)
HEAD_PARTS = {"in_ln": "norm", "adaLN_modulation": "modulation"}  # inside the denoising MLP's blocks


def prefixed_key(key: str, prefixes: tuple[tuple[str, str], ...]) -> str | None:
    """djepa's name of a reference tensor by the first matching prefix (head block parts renamed), else None."""
    for old, new in prefixes:
        if key.startswith(old):
            rest = key[len(old) :]
            if new.startswith("head.net."):
                rest = ".".join(HEAD_PARTS.get(part, part) for part in rest.split("."))
            return new + rest
    return None


def count_blocks(state: Mapping[str, torch.Tensor], prefix: str) -> int:
    """How many numbered blocks `prefix<N>.` the state dict holds."""
    return len({m.group(1) for k in state if (m := re.match(re.escape(prefix) + r"(\d+)\.", k))})


def script_arg(args: Any, name: str, defaults: Mapping[str, Any]) -> Any:
    """`args.<name>` of the checkpoint's saved command line, else the script's default."""
    return getattr(args, name, defaults.get(name)) if args is not None else defaults.get(name)


def shared_model_config(
    state: Mapping[str, torch.Tensor],
    args: Any,
    defaults: Mapping[str, Any],
    side: int,
    num_heads: int,
    buffer_size: int,
) -> dict[str, Any]:
    """DJEPA's constructor arguments that both references store alike: sizes from the tensors, dropout and the
    diffusion head from `args` (MAR's num_sampling_steps is a respacing string; a plain count in every run)."""
    width, token_dim = (int(s) for s in state["z_proj.weight"].shape)
    fc1 = state.get("encoder_blocks.0.mlp.fc1.weight")
    steps = str(script_arg(args, "num_sampling_steps", defaults))
    return {
        "token_dim": token_dim,
        "grid": [side, side],
        "num_classes": int(state["class_emb.weight"].shape[0]),
        "encoder_depth": count_blocks(state, "encoder_blocks."),
        "encoder_width": width,
        "predictor_depth": count_blocks(state, "decoder_blocks."),
        "predictor_width": int(state["decoder_embed.weight"].shape[0]),
        "num_heads": int(num_heads),
        "mlp_ratio": float(fc1.shape[0] / width) if fc1 is not None else 4.0,
        "buffer_size": buffer_size,
        "label_drop": float(script_arg(args, "label_drop_prob", defaults)),
        "attn_drop": float(script_arg(args, "attn_dropout", defaults)),
        "proj_drop": float(script_arg(args, "proj_dropout", defaults)),
        "denoiser_depth": count_blocks(state, "diffloss.net.res_blocks."),
        "denoiser_width": int(state["diffloss.net.input_proj.weight"].shape[0]),
        "diffusion_batch_mul": int(script_arg(args, "diffusion_batch_mul", defaults)),
        "head_config": {
            "_target_": "djepa.nn.heads.DiffusionHead",
            "num_timesteps": 1000,
            "sampling_steps": int(steps) if steps.isdigit() else 100,
            "sampler": "ddpm",
            "clip_x0": None,
        },
    }
