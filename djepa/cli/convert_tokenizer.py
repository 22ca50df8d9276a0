"""`convert_tokenizer checkpoint=kl16.ckpt out=DIR`: MAR's KL-16 VAE as a diffusers `AutoencoderKL` folder.

MAR (LTH14/mar, models/vae.py) uses LDM's KL autoencoder, the architecture diffusers' `AutoencoderKL` reimplements,
so the weights map one to one, renamed, with nothing approximated:

    encoder.down.{i}.block.{j}.*        encoder.down_blocks.{i}.resnets.{j}.*      (nin_shortcut -> conv_shortcut)
    encoder.down.{i}.attn.{j}.*         encoder.down_blocks.{i}.attentions.{j}.*   (AttnDownEncoderBlock2D; the
                                        1x1 conv q, k, v, proj_out -> linear to_q, to_k, to_v, to_out.0; norm ->
                                        group_norm)
    encoder.down.{i}.downsample.conv.*  encoder.down_blocks.{i}.downsamplers.0.conv.*  (both pad right/bottom by 1)
    {en,de}coder.mid.block_{1,2}.*      {en,de}coder.mid_block.resnets.{0,1}.*
    {en,de}coder.mid.attn_1.*           {en,de}coder.mid_block.attentions.0.*
    decoder.up.{i}.*                    decoder.up_blocks.{levels - 1 - i}.*   (diffusers counts from the lowest
                                        resolution; upsample.conv -> upsamplers.0.conv)
    {en,de}coder.norm_out.*             {en,de}coder.conv_norm_out.*
    conv_in, conv_out, quant_conv, post_quant_conv keep their names.

The layout (channels per level, resnets per level, which levels attend, latent channels) is read from the
checkpoint's shapes, so KL-16 gives 5 levels of [128, 128, 256, 256, 512] channels, attention in the encoder's
16x16 level (MAR's `attn_resolutions=(16,)` at resolution 256) and in both middle blocks, 16 latent channels and
16x downsampling: 256x256 images -> 16x16x16 latents. MAR multiplies latents by 0.2325; that is written as the
folder's `scaling_factor`, so the image adapter needs no `scale=` override.

Writes OUT/config.json and OUT/diffusion_pytorch_model.safetensors (diffusers' `save_pretrained`) and
OUT/conversion.json (source file and its sha256, what was converted and what was left out). Reads the
checkpoint with `torch.load(weights_only=True)` (no pickled code runs) or a .safetensors file.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, cast

import torch
from omegaconf import DictConfig

from djepa.cli.config import cli_errors, compose_config
from djepa.errors import UsageError
from djepa.io import atomic_write_json, sha256

SOURCES = {"mar_kl16": "MAR's KL-16 VAE (LTH14/mar models/vae.py, pretrained_models/vae/kl16.ckpt)"}
MAR_SCALE = 0.2325  # MAR's engine_mar.py: posterior.sample().mul_(0.2325), decode(z / 0.2325)
MAR_RESOLUTION = 256  # MAR's Encoder/Decoder default `resolution`, which placed the attention at 16x16
NORM_GROUPS = 32  # LDM's Normalize: GroupNorm(32, eps=1e-6), as diffusers' AutoencoderKL

# Parts of a training checkpoint that are not the autoencoder (LDM keeps its LPIPS/discriminator loss as `loss.`).
IGNORED_PREFIXES = ("loss.",)


def load_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a checkpoint file: safetensors, or a torch file read without running pickled code; a
    {'model': ...} or {'state_dict': ...} wrapper (MAR's and Lightning's) is unwrapped."""
    if not path.is_file():
        raise UsageError(f"checkpoint={path} is not a file")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        # MAR's training checkpoints carry their argparse Namespace beside the weights: plain data, allowed
        with torch.serialization.safe_globals([argparse.Namespace]):
            data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # pickle.UnpicklingError (code refused), RuntimeError (not a torch file), ...
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UsageError(f"checkpoint={path} does not load as plain tensors ({first})") from err
    for wrapper in ("model", "state_dict"):
        if isinstance(data, Mapping) and isinstance(data.get(wrapper), Mapping):
            data = data[wrapper]
    if not isinstance(data, Mapping) or not all(isinstance(v, torch.Tensor) for v in data.values()):
        raise UsageError(f"checkpoint={path} holds no state dict (a mapping of names to tensors)")
    return dict(data)


def _indices(state: Mapping[str, torch.Tensor], pattern: str) -> list[int]:
    return sorted({int(m.group(1)) for k in state if (m := re.fullmatch(pattern, k))})


def mar_layout(state: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """diffusers AutoencoderKL config for an LDM/MAR KL autoencoder, read from its tensor shapes."""
    required = ("encoder.conv_in.weight", "decoder.conv_out.weight", "quant_conv.weight", "post_quant_conv.weight")
    missing = [k for k in required if k not in state]
    if missing:
        raise UsageError(f"not an LDM/MAR KL autoencoder state dict: no {', '.join(missing)}")
    levels = _indices(state, r"encoder\.down\.(\d+)\..*")
    if not levels or levels != list(range(len(levels))) or _indices(state, r"decoder\.up\.(\d+)\..*") != levels:
        raise UsageError("encoder.down.* and decoder.up.* do not name the same levels 0..n-1")
    latent = int(state["post_quant_conv.weight"].shape[0])
    if tuple(state["quant_conv.weight"].shape[:2]) != (2 * latent, 2 * latent):
        raise UsageError(
            f"quant_conv {tuple(state['quant_conv.weight'].shape)} is not 2x{latent} -> 2x{latent}: a non-variational "
            "MAR VAE (use_variational=False) has no diffusers AutoencoderKL equivalent"
        )
    channels = [int(state[f"encoder.down.{i}.block.0.conv1.weight"].shape[0]) for i in levels]
    layers = _indices(state, r"encoder\.down\.0\.block\.(\d+)\..*")
    up_layers = _indices(state, r"decoder\.up\.0\.block\.(\d+)\..*")
    if len(up_layers) != len(layers) + 1:
        raise UsageError(f"decoder levels have {len(up_layers)} resnets, not encoder's {len(layers)} + 1")
    encoder_attn = [any(k.startswith(f"encoder.down.{i}.attn.") for k in state) for i in levels]
    decoder_attn = [any(k.startswith(f"decoder.up.{i}.attn.") for k in state) for i in levels]
    mid_attn = "encoder.mid.attn_1.q.weight" in state
    if mid_attn != ("decoder.mid.attn_1.q.weight" in state):
        raise UsageError("one middle block attends and the other does not: diffusers has one switch for both")
    return dict(
        in_channels=int(state["encoder.conv_in.weight"].shape[1]),
        out_channels=int(state["decoder.conv_out.weight"].shape[0]),
        down_block_types=["AttnDownEncoderBlock2D" if a else "DownEncoderBlock2D" for a in encoder_attn],
        # diffusers' decoder runs from the lowest resolution up: level n-1 first
        up_block_types=["AttnUpDecoderBlock2D" if a else "UpDecoderBlock2D" for a in reversed(decoder_attn)],
        block_out_channels=channels,
        layers_per_block=len(layers),
        act_fn="silu",
        latent_channels=latent,
        norm_num_groups=NORM_GROUPS,
        sample_size=MAR_RESOLUTION,
        mid_block_add_attention=mid_attn,
    )


_ATTN = {"norm": "group_norm", "q": "to_q", "k": "to_k", "v": "to_v", "proj_out": "to_out.0"}
_RESNET = {"nin_shortcut": "conv_shortcut"}
_TOP = {"norm_out": "conv_norm_out"}


def diffusers_key(key: str, levels: int) -> str:
    """The diffusers AutoencoderKL name of an LDM/MAR KL autoencoder tensor (see the module docstring)."""
    m = re.fullmatch(r"(encoder|decoder)\.(.*)", key)
    if m is None:
        return key  # quant_conv, post_quant_conv
    part, rest = m.groups()
    if m := re.fullmatch(r"(down|up)\.(\d+)\.(block|attn)\.(\d+)\.(\w+)\.(weight|bias)", rest):
        kind, level, sub, j, name, param = m.groups()
        level = int(level) if kind == "down" else levels - 1 - int(level)
        group = "down_blocks" if kind == "down" else "up_blocks"
        if sub == "block":
            return f"{part}.{group}.{level}.resnets.{j}.{_RESNET.get(name, name)}.{param}"
        return f"{part}.{group}.{level}.attentions.{j}.{_ATTN[name]}.{param}"
    if m := re.fullmatch(r"(down|up)\.(\d+)\.(downsample|upsample)\.conv\.(weight|bias)", rest):
        kind, level, sample, param = m.groups()
        level = int(level) if kind == "down" else levels - 1 - int(level)
        group = "down_blocks" if kind == "down" else "up_blocks"
        return f"{part}.{group}.{level}.{sample}rs.0.conv.{param}"
    if m := re.fullmatch(r"mid\.block_([12])\.(\w+)\.(weight|bias)", rest):
        index, name, param = m.groups()
        return f"{part}.mid_block.resnets.{int(index) - 1}.{_RESNET.get(name, name)}.{param}"
    if m := re.fullmatch(r"mid\.attn_1\.(\w+)\.(weight|bias)", rest):
        name, param = m.groups()
        return f"{part}.mid_block.attentions.0.{_ATTN[name]}.{param}"
    if m := re.fullmatch(r"(\w+)\.(weight|bias)", rest):
        name, param = m.groups()
        return f"{part}.{_TOP.get(name, name)}.{param}"
    raise UsageError(f"{key}: no counterpart in diffusers' AutoencoderKL")


def convert_mar_kl(
    state: Mapping[str, torch.Tensor],
) -> tuple[dict[str, Any], dict[str, torch.Tensor], list[str]]:
    """diffusers config, renamed tensors and the keys left out (training-only) of an LDM/MAR KL autoencoder."""
    ignored = sorted(k for k in state if k.startswith(IGNORED_PREFIXES))
    state = {k: v for k, v in state.items() if not k.startswith(IGNORED_PREFIXES)}
    config = mar_layout(state)
    levels = len(config["block_out_channels"])
    converted: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        name = diffusers_key(key, levels)
        if name in converted:
            raise UsageError(f"{key}: maps onto {name} twice")
        if ".attentions." in name and value.ndim == 4:
            value = value[:, :, 0, 0]  # a 1x1 convolution is a linear layer
        converted[name] = value
    return config, converted, ignored


def build_autoencoder(config: Mapping[str, Any], weights: Mapping[str, torch.Tensor]) -> Any:
    """A diffusers AutoencoderKL of `config` holding exactly `weights` (every tensor named and shaped as it
    expects, none left over)."""
    from diffusers import AutoencoderKL

    with torch.device("meta"):
        # cast: diffusers' lazy imports hide from mypy that AutoencoderKL is a torch Module
        vae = cast(torch.nn.Module, AutoencoderKL(**config))
    expected = {k: tuple(v.shape) for k, v in vae.state_dict().items()}
    missing = sorted(set(expected) - set(weights))
    extra = sorted(set(weights) - set(expected))
    wrong = sorted(k for k in set(expected) & set(weights) if tuple(weights[k].shape) != expected[k])
    if missing or extra or wrong:
        detail = "; ".join(
            f"{what}: {', '.join(keys[:3])}{' ...' if len(keys) > 3 else ''}"
            for what, keys in (("missing", missing), ("unexpected", extra), ("wrong shape", wrong))
            if keys
        )
        raise UsageError(f"the checkpoint does not fill diffusers' AutoencoderKL ({detail})")
    vae.load_state_dict({k: v.float().contiguous() for k, v in weights.items()}, strict=True, assign=True)
    return vae.eval()


def convert(checkpoint: Path, out: Path, source: str = "mar_kl16", scale: float = MAR_SCALE) -> Path:
    """Write the diffusers AutoencoderKL folder of a MAR KL checkpoint at `out`; returns `out`."""
    if source not in SOURCES:
        raise UsageError(f"source={source!r}: choose one of {', '.join(SOURCES)}")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UsageError(f"out={out} exists and is not an empty folder")
    config, weights, ignored = convert_mar_kl(load_state_dict(checkpoint))
    vae = build_autoencoder(config | {"scaling_factor": float(scale)}, weights)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.staging-"))
    try:
        vae.save_pretrained(staging, safe_serialization=True)
        atomic_write_json(
            staging / "conversion.json",
            {
                "source": source,
                "checkpoint": str(checkpoint.resolve()),
                "checkpoint_sha256": sha256(checkpoint),
                "tensors": len(weights),
                "parameters": sum(v.numel() for v in weights.values()),
                "left_out": ignored,
                "scaling_factor": float(scale),
            },
        )
        if out.exists():
            out.rmdir()
        os.replace(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out


def run(cfg: DictConfig) -> Path:
    """Convert `cfg.checkpoint` into the folder `cfg.out`."""
    out = convert(Path(cfg.checkpoint), Path(cfg.out), cfg.source, float(cfg.scale))
    print(
        f"wrote {out}: a diffusers AutoencoderKL (scaling_factor {cfg.scale}); use it with "
        f"modality.adapter.tokenizer.path={out}"
    )
    return out


def main(argv: Sequence[str] | None = None) -> None:
    with cli_errors():
        run(compose_config(list(sys.argv[1:] if argv is None else argv), "convert_tokenizer"))


if __name__ == "__main__":  # `python -m ...` answers --help as the console script does
    from djepa.cli import scripts

    scripts.convert_tokenizer()
