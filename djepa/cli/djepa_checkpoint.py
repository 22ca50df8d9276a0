"""D-JEPA's checkpoints (D-JEPA/djepa-imagenet) as djepa's one model with the reference's switches.

main_djepa.py saves `{'model', 'model_ema', 'optimizer', 'epoch', 'scaler', 'args'}`, `model_ema` a full copy of
the network whose parameters track the online ones at --ema_rate (the one it evaluates); with --compile (its
scripts' setting) every key starts with `_orig_mod.`, which is dropped. Its network (models/djepa.py) is djepa's
with `model.pos_embed=learned model.buffer_pos_embed=false model.diffusion_pos_embed=false`, `model.qk_norm` as
the checkpoint's blocks show and `model.jepa_projector=reference`; the weights map one to one, renamed:

    class_emb.weight, fake_latent, buffer, mask_token    class_emb.weight, fake_class, buffer, mask_token
    z_proj.*, z_proj_ln.*                                token_proj.*, encoder_in_norm.*
    encoder_pos_embed_learned [1, N, D]                  encoder_pos.table [N, D]
    encoder_blocks.{i}.*, encoder_norm.*                 encoder.blocks.{i}.*, encoder.norm.*  (attn.q_norm, k_norm too)
    decoder_embed.*                                      predictor_embed.*
    decoder_pos_embed_learned [1, N, D]                  predictor_pos.table [N, D]
    decoder_blocks.{i}.*, decoder_norm.*                 predictor.blocks.{i}.*, predictor.norm.*
    diffloss.net.*                                       head.net.*  (as MAR's: see convert_checkpoint)
    jepaloss.net.{fc1,norm,fc2}.*                        jepa_proj.{0,2,3}.*  (only where --jepa_weight > 0 built it)

Sizes come from the shapes; the attention heads from the qk-norm weights (one per head channel), else from
`args.model` (djepa_base 12, djepa_large and djepa_huge 16), else from the width, else from `num_heads=`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch

from djepa.cli.checkpoint_layout import (
    HEAD_PARTS,
    MAR_PREFIXES,
    count_blocks,
    prefixed_key,
    script_arg,
    shared_model_config,
)
from djepa.errors import UsageError

# models/djepa.py's sizes by name, depth and width: the heads no tensor shows without qk-norm.
DJEPA_HEADS = {"djepa_base": 12, "djepa_large": 16, "djepa_huge": 16}
DJEPA_HEADS_BY_WIDTH = {768: 12, 1024: 16, 1280: 16}
DJEPA_NAME_BY_DEPTH = {12: "djepa_base", 24: "djepa_large", 32: "djepa_huge"}
CONFIG_BY_NAME = {"djepa_base": "djepa_b", "djepa_large": "djepa_l", "djepa_huge": "djepa_h"}
# What only `args` records: main_djepa.py's defaults, scripts/djepa_base.sh's where it sets them.
ARG_DEFAULTS = {
    "attn_dropout": 0.1,
    "proj_dropout": 0.1,
    "label_drop_prob": 0.1,
    "diffusion_batch_mul": 4,
    "num_sampling_steps": "100",
    "jepa_weight": 1.0,
    "diffloss": "gauss",
}
COMPILED_PREFIX = "_orig_mod."  # torch.compile's wrapper (main_djepa.py --compile)

_PLAIN = {
    "class_emb.weight": "class_emb.weight",
    "fake_latent": "fake_class",
    "buffer": "buffer",
    "mask_token": "mask_token",
}
_TABLES = {"encoder_pos_embed_learned": "encoder_pos.table", "decoder_pos_embed_learned": "predictor_pos.table"}
_PREFIXES = (
    *MAR_PREFIXES,
    ("jepaloss.net.fc1.", "jepa_proj.0."),
    ("jepaloss.net.norm.", "jepa_proj.2."),
    ("jepaloss.net.fc2.", "jepa_proj.3."),
)


def strip_compiled(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The state dict without torch.compile's `_orig_mod.` in front of every key (as it was saved otherwise)."""
    if state and all(k.startswith(COMPILED_PREFIX) for k in state):
        return {k[len(COMPILED_PREFIX) :]: v for k, v in state.items()}
    return dict(state)


def is_djepa_state(state: Mapping[str, torch.Tensor]) -> bool:
    """D-JEPA's layout: a separate `buffer` and no diffusion position table (MAR's has the opposite)."""
    return "buffer" in state and "diffusion_pos_embed_learned" not in state


def _arg(args: Any, name: str) -> Any:
    return script_arg(args, name, ARG_DEFAULTS)


def size_name(state: Mapping[str, torch.Tensor], args: Any) -> str | None:
    """`djepa_base`, `djepa_large` or `djepa_huge`: from `args.model`, else from the depth and width."""
    name = getattr(args, "model", None)
    if name in DJEPA_HEADS:
        return str(name)
    guess = DJEPA_NAME_BY_DEPTH.get(count_blocks(state, "encoder_blocks."))
    width = int(state["z_proj.weight"].shape[0])
    if guess is not None and {"djepa_base": 768, "djepa_large": 1024, "djepa_huge": 1280}[guess] == width:
        return guess
    return None


def model_config(state: Mapping[str, torch.Tensor], args: Any = None, num_heads: int | None = None) -> dict[str, Any]:
    """DJEPA's constructor arguments for a D-JEPA state dict, sizes read from its shapes (see the module docstring)."""
    required: tuple[str, ...] = ("z_proj.weight", "buffer", "encoder_pos_embed_learned", "decoder_embed.weight")
    required = (*required, "class_emb.weight", "diffloss.net.input_proj.weight")
    missing = [k for k in required if k not in state]
    if missing:
        raise UsageError(f"not a D-JEPA/djepa-imagenet state dict: no {', '.join(missing)}")
    if str(_arg(args, "diffloss")) != "gauss":
        raise UsageError(
            f"the checkpoint's args.diffloss is {_arg(args, 'diffloss')!r}: only D-JEPA's Gaussian diffusion head "
            "(diffloss=gauss) converts"
        )
    width = int(state["z_proj.weight"].shape[0])
    num_tokens = int(state["encoder_pos_embed_learned"].shape[1])
    side = math.isqrt(num_tokens)
    if side * side != num_tokens:
        raise UsageError(f"encoder_pos_embed_learned has {num_tokens} rows: not a square grid as D-JEPA's")
    q_norm = state.get("encoder_blocks.0.attn.q_norm.weight")
    if num_heads is None and q_norm is not None:
        num_heads = width // int(q_norm.shape[0])  # one RMS weight per head channel
    if num_heads is None:
        name = getattr(args, "model", None)
        num_heads = DJEPA_HEADS.get(str(name)) if name is not None else DJEPA_HEADS_BY_WIDTH.get(width)
        if num_heads is None:
            raise UsageError(
                f"the checkpoint does not say its attention heads (width {width}, args.model {name!r}, no qk-norm): "
                "give num_heads=N"
            )
    shared = shared_model_config(state, args, ARG_DEFAULTS, side, num_heads, int(state["buffer"].shape[1]))
    return {
        **shared,
        "jepa": "jepaloss.net.fc1.weight" in state,
        "jepa_projector": "reference",
        "jepa_projector_norm": "jepaloss.net.norm.weight" in state,
        "jepa_without_context": True,
        "qk_norm": q_norm is not None,
        "pos_embed": "learned",
        "diffusion_pos_embed": False,
        "buffer_pos_embed": False,
    }


def djepa_key(key: str) -> str | None:
    """djepa's name of a D-JEPA tensor, None for a key D-JEPA's network does not have."""
    if key in _PLAIN:
        return _PLAIN[key]
    if key in _TABLES:
        return _TABLES[key]
    return prefixed_key(key, _PREFIXES)


def reference_key(key: str) -> str:
    """D-JEPA's name of a djepa tensor (djepa_key's inverse), for naming what a checkpoint lacks."""
    plain = {v: k for k, v in (*_PLAIN.items(), *_TABLES.items())}
    if key in plain:
        return plain[key]
    for old, new in _PREFIXES:
        if key.startswith(new):
            rest = key[len(new) :]
            if old.startswith("diffloss.net."):
                back = {v: k for k, v in HEAD_PARTS.items()}
                rest = ".".join(back.get(part, part) for part in rest.split("."))
            return old + rest
    return key


def weights(state: Mapping[str, torch.Tensor], expected: Mapping[str, tuple[int, ...]]) -> dict[str, torch.Tensor]:
    """D-JEPA's tensors under djepa's names, fp32; `expected` (djepa's names and shapes) must be filled exactly."""
    out: dict[str, torch.Tensor] = {}
    unknown = []
    for key, value in state.items():
        name = djepa_key(key)
        if name is None or name not in expected:
            unknown.append(key)
            continue
        out[name] = (value[0] if key in _TABLES else value).float().contiguous()
    missing = [reference_key(k) for k in expected if k not in out]
    wrong = [f"{reference_key(k)} {tuple(v.shape)}" for k, v in out.items() if tuple(v.shape) != tuple(expected[k])]
    problems = [("unknown keys", unknown), ("missing keys", missing), ("wrong shapes", wrong)]
    said = [f"{what} {', '.join(keys[:4])}{' ...' if len(keys) > 4 else ''}" for what, keys in problems if keys]
    if said:
        raise UsageError(f"the checkpoint does not fill D-JEPA's network: {'; '.join(said)}")
    return out


def export_overrides(config: Mapping[str, Any], args: Any, name: str | None) -> list[str]:
    """The export's config: model=djepa_b|l|h train=paper with the checkpoint's sizes and the reference's switches."""
    keys = (
        *("encoder_depth", "encoder_width", "predictor_depth", "predictor_width", "num_heads", "mlp_ratio"),
        *("buffer_size", "label_drop", "attn_drop", "proj_drop", "denoiser_depth", "denoiser_width"),
        *("diffusion_batch_mul", "qk_norm", "jepa_projector", "jepa_projector_norm", "pos_embed"),
        *("diffusion_pos_embed", "buffer_pos_embed"),
    )
    jepa_weight = (float(_arg(args, "jepa_weight")) or 1.0) if config["jepa"] else 0.0
    return [
        f"model={CONFIG_BY_NAME.get(name or '', 'djepa_b')}",
        "train=paper",
        *(f"model.{k}={str(config[k]).lower() if isinstance(config[k], bool) else config[k]}" for k in keys),
        f"loss.jepa_weight={jepa_weight}",
        f"loss.head.sampling_steps={config['head_config']['sampling_steps']}",
    ]
