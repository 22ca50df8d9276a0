"""Train a small diffusers `AutoencoderKL` on a tensor dataset and save it with `save_pretrained`."""

from __future__ import annotations

import json
import math
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from djepa.chunks import map_chunks


@dataclass
class AutoencoderTrainConfig:
    block_out_channels: list[int] = field(default_factory=lambda: [32, 64, 64])
    layers_per_block: int = 1
    latent_channels: int = 4
    norm_num_groups: int = 16
    mid_block_add_attention: bool = False
    steps: int = 1200
    batch_size: int = 64
    lr: float = 2e-3
    kl_weight: float = 1e-3
    holdout: float = 0.05
    seed: int = 0


def psnr(reference: torch.Tensor, estimate: torch.Tensor, data_range: float = 2.0) -> float:
    mse = F.mse_loss(estimate.float(), reference.float()).item()
    return 10 * math.log10(data_range**2 / max(mse, 1e-12))


def build_autoencoder_kl(in_channels: int, sample_size: int, config: AutoencoderTrainConfig):
    from diffusers import AutoencoderKL

    blocks = len(config.block_out_channels)
    return AutoencoderKL(
        in_channels=in_channels,
        out_channels=in_channels,
        down_block_types=("DownEncoderBlock2D",) * blocks,
        up_block_types=("UpDecoderBlock2D",) * blocks,
        block_out_channels=tuple(config.block_out_channels),
        layers_per_block=config.layers_per_block,
        latent_channels=config.latent_channels,
        norm_num_groups=config.norm_num_groups,
        sample_size=sample_size,
        mid_block_add_attention=config.mid_block_add_attention,
    )


def train_autoencoder_kl(data: torch.Tensor, out_dir: str | Path, config: AutoencoderTrainConfig) -> dict:
    """Fit on `data` [M, C, H, W] in [-1, 1]; store unit-variance latent shift/scale in the config.

    Returns metrics including the held-out reconstruction PSNR (dB, data range 2).
    """
    torch.manual_seed(config.seed)
    gen = torch.Generator().manual_seed(config.seed)
    perm = torch.randperm(len(data), generator=gen)
    n_hold = max(1, int(len(data) * config.holdout))
    held, train = data[perm[:n_hold]], data[perm[n_hold:]]
    vae = build_autoencoder_kl(data.shape[1], data.shape[-1], config)
    optimizer = torch.optim.AdamW(vae.parameters(), lr=config.lr, weight_decay=0.0)
    warmup = max(1, config.steps // 20)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * s / config.steps))
    )
    start = time.perf_counter()
    bar = tqdm(range(config.steps), desc="train tokenizer", dynamic_ncols=True)
    for _ in bar:
        x = train[torch.randint(len(train), (config.batch_size,), generator=gen)]
        posterior = vae.encode(x).latent_dist
        recon = vae.decode(posterior.sample()).sample
        rec_loss = F.mse_loss(recon, x)
        kl = posterior.kl().mean() / posterior.mean[0].numel()
        loss = rec_loss + config.kl_weight * kl
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        bar.set_postfix(mse=f"{rec_loss.item():.4f}", kl=f"{kl.item():.3f}")
    train_seconds = time.perf_counter() - start
    vae.eval()
    with torch.no_grad():
        latents = map_chunks(lambda x: vae.encode(x).latent_dist.sample(), train)
        recon = map_chunks(lambda x: vae.decode(vae.encode(x).latent_dist.mean).sample, held)
    shift, std = latents.mean().item(), latents.std().item()
    vae.register_to_config(shift_factor=shift, scaling_factor=1.0 / std)
    metrics = {
        "psnr_db": psnr(held, recon.clamp(-1, 1)),
        "train_seconds": train_seconds,
        "params": sum(p.numel() for p in vae.parameters()),
        "shift": shift,
        "scale": 1.0 / std,
        "config": asdict(config),
    }
    out_dir = Path(out_dir)
    staging = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    vae.save_pretrained(str(staging))
    (staging / "train_metrics.json").write_text(json.dumps(metrics, indent=2))
    shutil.rmtree(out_dir, ignore_errors=True)
    staging.rename(out_dir)
    return metrics
