"""`convert_checkpoint checkpoint=checkpoint-last.pth tokenizer_path=KL16_DIR out=DIR`: an LTH14/mar or a
D-JEPA/djepa-imagenet checkpoint as an export folder that `sample`, `serve` and `Pipeline.from_pretrained` read.

`source=auto` tells the two apart by their keys: D-JEPA's has a `buffer` and no `diffusion_pos_embed_learned`
(its mapping: djepa/cli/djepa_checkpoint.py). The rest of this docstring is MAR's.

MAR's network (models/mar.py) is djepa's one model with MAR's switches (`model.pos_embed=learned`,
`model.diffusion_pos_embed`: configs/model/_mar.yaml); its weights map one to one,
renamed, MAR's two sequence tables split at the buffer (B buffer rows, then N token rows):

    class_emb.weight, fake_latent, mask_token      class_emb.weight, fake_class, mask_token
    z_proj.*, z_proj_ln.*                          token_proj.*, encoder_in_norm.*
    encoder_pos_embed_learned [1, B + N, D]        buffer [1, B, D] and encoder_pos.table [N, D]
    encoder_blocks.{i}.*, encoder_norm.*           encoder.blocks.{i}.*, encoder.norm.*    (timm's Block names)
    decoder_embed.*                                predictor_embed.*
    decoder_pos_embed_learned [1, B + N, D]        predictor_buffer_pos [1, B, D] and predictor_pos.table [N, D]
    decoder_blocks.{i}.*, decoder_norm.*           predictor.blocks.{i}.*, predictor.norm.*
    diffusion_pos_embed_learned [1, N, D]          diffusion_pos [N, D]
    diffloss.net.{time_embed,cond_embed,input_proj}.*                head.net.{time_embed,cond_embed,input_proj}.*
    diffloss.net.res_blocks.{i}.{in_ln,mlp,adaLN_modulation}.*       head.net.blocks.{i}.{norm,mlp,modulation}.*
    diffloss.net.final_layer.{linear,adaLN_modulation}.*             head.net.final.{linear,modulation}.*

MAR fills its buffer rows with copies of the class embedding and adds the table's buffer rows; djepa adds its
`buffer` to the class-embedding copies: the same sum. Sizes come from the tensors' shapes; the attention heads,
which no shape shows, from the checkpoint's `args.model` (mar_base 12, mar_large and mar_huge 16), else from the
width as MAR's sizes have it, else from `num_heads=`. Dropouts, label drop, batch multiplier and the respaced
sampling steps come from `args` where the checkpoint carries it (MAR's defaults otherwise). The head samples as
MAR's does: no clipping of the predicted clean token (`loss.head.clip_x0=null`).

Writes what `export` writes plus OUT/conversion.json (source file and its sha256, epoch, which weights). Reads the
checkpoint with `torch.load(weights_only=True)`: only tensors and plain data (MAR's argparse Namespace of
training arguments included) are unpickled, no code runs.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from djepa.cli import djepa_checkpoint
from djepa.cli.checkpoint_layout import MAR_PREFIXES, count_blocks, prefixed_key, script_arg, shared_model_config
from djepa.cli.config import cli_errors, compose_config
from djepa.errors import UsageError
from djepa.io import atomic_write_json, sha256

SOURCES = {
    "mar": "an LTH14/mar training checkpoint (checkpoint-last.pth of MAR-B, MAR-L or MAR-H)",
    "djepa": "a D-JEPA/djepa-imagenet training checkpoint (D-JEPA-B, D-JEPA-L or D-JEPA-H)",
}
# MAR's sizes by name (models/mar.py mar_base/mar_large/mar_huge) and their width: the heads no tensor shows.
MAR_HEADS = {"mar_base": 12, "mar_large": 16, "mar_huge": 16}
MAR_HEADS_BY_WIDTH = {768: 12, 1024: 16, 1280: 16}
# The guidance scale MAR's README evaluates each size with (FID-50K, linear schedule, temperature 1.0).
MAR_GUIDANCE = {"mar_base": 2.9, "mar_large": 3.0, "mar_huge": 3.2}
MAR_NAME_BY_DEPTH = {12: "mar_base", 16: "mar_large", 20: "mar_huge"}
# main_mar.py's defaults for what only `args` records (diffusion_batch_mul: its README's training command).
MAR_ARG_DEFAULTS = {
    "attn_dropout": 0.1,
    "proj_dropout": 0.1,
    "label_drop_prob": 0.1,
    "diffusion_batch_mul": 4,
    "num_sampling_steps": "100",
}

_PLAIN = {
    "class_emb.weight": "class_emb.weight",
    "fake_latent": "fake_class",
    "mask_token": "mask_token",
    "diffusion_pos_embed_learned": "diffusion_pos",
}
# MAR's sequence tables: split at the buffer into djepa's (buffer rows, token rows).
_TABLES = {
    "encoder_pos_embed_learned": ("buffer", "encoder_pos.table"),
    "decoder_pos_embed_learned": ("predictor_buffer_pos", "predictor_pos.table"),
}


def load_checkpoint(path: Path) -> Mapping[str, Any]:
    """A torch checkpoint read without running pickled code (MAR's argparse Namespace is plain data, allowed)."""
    if not path.is_file():
        raise UsageError(f"checkpoint={path} is not a file")
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # pickle.UnpicklingError (code refused), RuntimeError (not a torch file), ...
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UsageError(
            f"checkpoint={path} does not load as plain tensors with torch.load(weights_only=True) ({first})"
        ) from err
    if not isinstance(data, Mapping):
        raise UsageError(f"checkpoint={path} holds a {type(data).__name__}, not a {{'model': ...}} mapping")
    return data


def pick_weights(data: Mapping[str, Any], which: str, path: Path) -> dict[str, torch.Tensor]:
    """The state dict `which` names ("ema": model_ema, "model": model); a bare state dict is itself."""
    if data and all(isinstance(v, torch.Tensor) for v in data.values()):
        return dict(data)
    key = "model_ema" if which == "ema" else "model"
    state = data.get(key)
    if not isinstance(state, Mapping):
        other = "weights=model" if which == "ema" else "weights=ema"
        raise UsageError(
            f"checkpoint={path} has no `{key}` state dict (keys: {', '.join(map(str, data))}): try {other}"
        )
    return dict(state)


def _arg(args: Any, name: str) -> Any:
    return script_arg(args, name, MAR_ARG_DEFAULTS)


def mar_name(state: Mapping[str, torch.Tensor], args: Any) -> str | None:
    """`mar_base`, `mar_large` or `mar_huge`: from `args.model`, else from the depth when the width is MAR's."""
    name = getattr(args, "model", None)
    if name in MAR_HEADS:
        return str(name)
    depth = count_blocks(state, "encoder_blocks.")
    guess = MAR_NAME_BY_DEPTH.get(depth)
    width = int(state["z_proj.weight"].shape[0])
    return guess if guess is not None and MAR_HEADS_BY_WIDTH.get(width) == MAR_HEADS[guess] else None


def mar_model_config(
    state: Mapping[str, torch.Tensor], args: Any = None, num_heads: int | None = None
) -> dict[str, Any]:
    """DJEPA's constructor arguments for a MAR state dict, sizes read from its shapes (see the module docstring)."""
    required = ("z_proj.weight", "encoder_pos_embed_learned", "decoder_embed.weight", "diffusion_pos_embed_learned")
    missing = [k for k in required if k not in state]
    if missing:
        raise UsageError(f"not an LTH14/mar MAR state dict: no {', '.join(missing)}")
    width = int(state["z_proj.weight"].shape[0])
    num_tokens = int(state["diffusion_pos_embed_learned"].shape[1])
    side = math.isqrt(num_tokens)
    if side * side != num_tokens:
        raise UsageError(f"diffusion_pos_embed_learned has {num_tokens} rows: not a square grid as MAR's")
    buffer_size = int(state["encoder_pos_embed_learned"].shape[1]) - num_tokens
    if num_heads is None:
        name = getattr(args, "model", None)
        num_heads = MAR_HEADS.get(str(name)) if name is not None else MAR_HEADS_BY_WIDTH.get(width)
        if num_heads is None:
            raise UsageError(
                f"the checkpoint does not say its attention heads (width {width}, args.model {name!r}): "
                "give num_heads=N"
            )
    return {
        **shared_model_config(state, args, MAR_ARG_DEFAULTS, side, num_heads, buffer_size),
        "jepa": False,
        "pos_embed": "learned",
        "diffusion_pos_embed": True,
        "qk_norm": False,
    }


def djepa_key(key: str) -> str:
    """djepa's name of a MAR tensor that maps whole (the sequence tables are split by `mar_weights`)."""
    if key in _PLAIN:
        return _PLAIN[key]
    mapped = prefixed_key(key, MAR_PREFIXES)
    if mapped is None:
        raise UsageError(f"{key}: no counterpart in djepa's MAR-exact model")
    return mapped


def mar_weights(state: Mapping[str, torch.Tensor], buffer_size: int) -> dict[str, torch.Tensor]:
    """MAR's tensors under djepa's names (see the module docstring), fp32."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        value = value.float()
        if key in _TABLES:
            buffer_name, table_name = _TABLES[key]
            out[buffer_name] = value[:, :buffer_size].contiguous()
            out[table_name] = value[0, buffer_size:].contiguous()
        elif key == "diffusion_pos_embed_learned":
            out["diffusion_pos"] = value[0].contiguous()
        else:
            out[djepa_key(key)] = value.contiguous()
    return out


def tokenizer_layout(path: Path) -> tuple[int, int]:
    """(latent channels, downsampling factor) of a diffusers AutoencoderKL folder (`convert_tokenizer` output)."""
    try:
        config = json.loads((path / "config.json").read_text())
        return int(config["latent_channels"]), 2 ** (len(config["block_out_channels"]) - 1)
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise UsageError(
            f"tokenizer_path={path} is not an AutoencoderKL folder (no readable config.json with latent_channels and "
            "block_out_channels): `convert_tokenizer` writes MAR's KL-16 as one"
        ) from err


def export_config(
    model_config: Mapping[str, Any], cfg: DictConfig, image_size: int, patch: int, name: str | None
) -> DictConfig:
    """The export's config.yaml: model=mar_b with the checkpoint's sizes, the image adapter at MAR's resolution."""
    sizes = (
        *("encoder_depth", "encoder_width", "predictor_depth", "predictor_width", "num_heads", "mlp_ratio"),
        *("buffer_size", "label_drop", "attn_drop", "proj_drop", "denoiser_depth", "denoiser_width"),
    )
    guidance = cfg.guidance_scale if cfg.guidance_scale is not None else MAR_GUIDANCE.get(name or "", 3.0)
    head = model_config["head_config"]
    mar = [
        "model=mar_b",
        *(f"model.{k}={model_config[k]}" for k in (*sizes, "diffusion_batch_mul")),
        f"loss.head.sampling_steps={head['sampling_steps']}",
        "+loss.head.clip_x0=null",
    ]
    temperature = cfg.temperature if cfg.temperature is not None else 1.0
    return compose_config(["modality=image", *mar, *image_overrides(cfg, image_size, patch, guidance, temperature)])


def image_overrides(cfg: DictConfig, image_size: int, patch: int, guidance: float, temperature: float) -> list[str]:
    """The export's image adapter (the tokenizer folder at the checkpoint's resolution) and sampling settings."""
    return [
        f"modality.adapter.tokenizer.path={Path(cfg.tokenizer_path).resolve()}",
        f"modality.adapter.image_size={image_size}",
        "modality.adapter.channels=3",
        f"modality.adapter.patch_size=[{patch},{patch}]",
        f"sample.guidance_scale={guidance}",
        f"sample.temperature={temperature}",
        f"sample.num_steps={cfg.num_steps}",
        "sample.guidance_schedule=linear",
    ]


def djepa_export_config(
    model_config: Mapping[str, Any], cfg: DictConfig, image_size: int, patch: int, args: Any, name: str | None
) -> DictConfig:
    """The export's config.yaml for a D-JEPA checkpoint: model=djepa_b|l|h train=paper with its sizes and switches."""
    guidance = cfg.guidance_scale if cfg.guidance_scale is not None else float(getattr(args, "cfg_scale", 1.0))
    temperature = cfg.temperature if cfg.temperature is not None else float(getattr(args, "temperature", 0.94))
    overrides = djepa_checkpoint.export_overrides(model_config, args, name)
    return compose_config(
        ["modality=image", *overrides, *image_overrides(cfg, image_size, patch, guidance, temperature)]
    )


def convert(cfg: DictConfig) -> Path:
    """Write the export folder of MAR or D-JEPA checkpoint `cfg.checkpoint` at `cfg.out`; returns `cfg.out`."""
    from djepa.engine.adapter import build_adapter
    from djepa.engine.sampling import SamplingSettings
    from djepa.export import export_pipeline
    from djepa.nn.model import DJEPA
    from djepa.pipeline import Pipeline

    checkpoint, tokenizer, out = Path(cfg.checkpoint), Path(cfg.tokenizer_path), Path(cfg.out)
    if not checkpoint.is_file():
        raise UsageError(f"checkpoint={checkpoint} is not a file")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UsageError(f"out={out} exists and is not an empty folder")
    latent_channels, downsample = tokenizer_layout(tokenizer)
    data = load_checkpoint(checkpoint)
    state = djepa_checkpoint.strip_compiled(pick_weights(data, cfg.weights, checkpoint))
    args = data.get("args") if isinstance(data.get("args"), argparse.Namespace) else None
    source = cfg.source if cfg.source != "auto" else "djepa" if djepa_checkpoint.is_djepa_state(state) else "mar"
    if source == "djepa":
        model_config = djepa_checkpoint.model_config(state, args, cfg.num_heads)
        size = djepa_checkpoint.size_name(state, args)
    else:
        model_config = mar_model_config(state, args, cfg.num_heads)
        size = mar_name(state, args)
    patch = math.isqrt(model_config["token_dim"] // latent_channels)
    if patch * patch * latent_channels != model_config["token_dim"]:
        raise UsageError(
            f"the checkpoint's tokens have {model_config['token_dim']} channels, not the tokenizer's "
            f"{latent_channels} latent channels times a square patch: tokenizer_path={tokenizer} is not its VAE"
        )
    image_size = model_config["grid"][0] * patch * downsample
    model = DJEPA(**model_config)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    if source == "djepa":
        weights = djepa_checkpoint.weights(state, expected)
    else:
        weights = mar_weights(state, model_config["buffer_size"])
        problems = sorted(set(expected) ^ set(weights)) + sorted(
            k for k in set(expected) & set(weights) if tuple(weights[k].shape) != expected[k]
        )
        if problems:
            raise UsageError(f"the checkpoint does not fill the MAR-exact model: {', '.join(problems[:3])}")
    model.load_state_dict(weights)
    if source == "djepa":
        config = djepa_export_config(model_config, cfg, image_size, patch, args, size)
        title = f"D-JEPA {config.modality.name} model (converted)"
        about = (
            f"D-JEPA (Chen et al., arXiv 2410.03755, D-JEPA/djepa-imagenet), {cfg.weights} weights of "
            f"`{checkpoint.name}` converted by `convert_checkpoint` into djepa's model with the reference's switches."
        )
    else:
        config = export_config(model_config, cfg, image_size, patch, size)
        title = f"MAR {config.modality.name} model (converted)"
        about = (
            f"MAR (Li et al., NeurIPS 2024, LTH14/mar), {cfg.weights} weights of `{checkpoint.name}` converted by "
            "`convert_checkpoint` into djepa's MAR-exact model (model=mar_b|mar_l|mar_h architecture)."
        )
    adapter = build_adapter(config)
    names = [str(i) for i in range(model_config["num_classes"])]
    pipe = Pipeline(model, adapter, names, SamplingSettings.from_config(config), config, checkpoint)
    created = not out.exists()
    export_pipeline(pipe, out, copy_tokenizer=bool(cfg.copy_tokenizer), about=(title, about))
    try:
        atomic_write_json(
            out / "conversion.json",
            {
                "source": source,
                "checkpoint": str(checkpoint.resolve()),
                "checkpoint_sha256": sha256(checkpoint),
                "epoch": data.get("epoch") if isinstance(data.get("epoch"), int) else None,
                "weights": "model_ema" if cfg.weights == "ema" else "model",
                f"{source}_size": size,
                "tensors": len(state),
                "parameters": model.num_params(),
            },
        )
    except BaseException:
        if created:
            shutil.rmtree(out, ignore_errors=True)
        raise
    return out


def run(cfg: DictConfig) -> Path:
    """Convert `cfg.checkpoint` into the export folder `cfg.out`."""
    out = convert(cfg)
    print(f"wrote {out}: sample run_dir={out}, or Pipeline.from_pretrained({str(out)!r})")
    return out


def main(argv: Sequence[str] | None = None) -> None:
    with cli_errors():
        run(compose_config(list(sys.argv[1:] if argv is None else argv), "convert_checkpoint"))


if __name__ == "__main__":  # `python -m ...` answers --help as the console script does
    from djepa.cli import scripts

    scripts.convert_checkpoint()
