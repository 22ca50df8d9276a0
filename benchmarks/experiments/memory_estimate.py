"""Training memory per GPU, ESTIMATED from parameter counts (nothing is run on a GPU): the docs' recipe table.

    python -m djepa.benchmarks.experiments.memory_estimate [model=djepa_b] [tokens=16,16] [dim=16]
        [classes=1000] [buffer=64] [batch=64] [gpus=8]

The model is built on the meta device for the token grid and dim (parameter count only). Memory model, bf16
autocast, no gradient checkpointing:
- static, DDP: 28 bytes per parameter (fp32 weights 4, gradients 4, AdamW moments 8, DDP's gradient buckets 4,
  the sampling EMA 4, the separate JEPA teacher 4); FSDP: 24 / GPUs.
- activations per sample: 34 bytes x tokens x width per transformer layer (Korthikanti et al. 2022, "Reducing
  activation recomputation in large transformer models", without the attention-score term, which SDPA does not
  keep); the encoder sees the buffer plus 30 % of the tokens (the most visible at mask ratio 0.7), the predictor
  the buffer plus all of them; the denoiser about 28 bytes x width per row per block, `diffusion_batch_mul` rows
  per masked token, every token masked at worst.
CUDA context, allocator slack and the VAE are not counted.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from typing import Any

import torch

from djepa.benchmarks.experiments import key_values
from djepa.cli.config import cli_errors, compose_config
from djepa.engine.model_config import model_kwargs
from djepa.nn.model import DJEPA

DDP_BYTES_PER_PARAM = 28
FSDP_BYTES_PER_PARAM = 24
LAYER_BYTES = 34  # per token per unit of width per transformer layer
DENOISER_BYTES = 28  # per row per unit of width per block
MOST_VISIBLE = 0.3  # 1 - mask_ratio_min


def estimate(
    model: str, tokens: Sequence[int], dim: int, classes: int, buffer: int | None = None, batch: int = 64, gpus: int = 8
) -> dict[str, Any]:
    """Parameters, static bytes (DDP and FSDP over `gpus`), activation bytes per sample and the peaks at `batch`."""
    overrides = [f"model={model}"] + ([f"model.buffer_size={buffer}"] if buffer else [])
    kwargs = model_kwargs(compose_config(overrides))
    with torch.device("meta"):
        params = DJEPA(token_dim=dim, grid=tuple(tokens), num_classes=classes, **kwargs).num_params()
    n, buf = math.prod(tokens), kwargs["buffer_size"]
    encoder = LAYER_BYTES * (buf + MOST_VISIBLE * n) * kwargs["encoder_width"] * kwargs["encoder_depth"]
    predictor = LAYER_BYTES * (buf + n) * kwargs["predictor_width"] * kwargs["predictor_depth"]
    rows = n * kwargs["diffusion_batch_mul"]
    denoiser = DENOISER_BYTES * rows * kwargs["denoiser_width"] * kwargs["denoiser_depth"]
    per_sample = encoder + predictor + denoiser
    ddp, fsdp = DDP_BYTES_PER_PARAM * params, FSDP_BYTES_PER_PARAM * params / gpus
    return {
        "parameters": params,
        "static_ddp": ddp,
        "static_fsdp": fsdp,
        "activations_per_sample": per_sample,
        "peak_ddp": ddp + batch * per_sample,
        "peak_fsdp": fsdp + batch * per_sample,
    }


def main(argv: Sequence[str] | None = None) -> None:
    defaults = dict(model="djepa_b", tokens="16,16", dim="16", classes="1000", buffer="", batch="64", gpus="8")
    with cli_errors():
        args = key_values(sys.argv[1:] if argv is None else argv, defaults)
        tokens = [int(t) for t in args["tokens"].split(",")]
        buffer = int(args["buffer"]) if args["buffer"] else None
        gpus = int(args["gpus"])
        e = estimate(args["model"], tokens, int(args["dim"]), int(args["classes"]), buffer, int(args["batch"]), gpus)
        print(
            f"ESTIMATE (not measured) {args['model']}, tokens {args['tokens']} x {args['dim']}: "
            f"{e['parameters'] / 1e6:.1f}M parameters; static {e['static_ddp'] / 1e9:.1f} GB DDP, "
            f"{e['static_fsdp'] / 1e9:.1f} GB FSDP over {gpus}; {e['activations_per_sample'] / 1e6:.0f} MB activations "
            f"per sample; batch {args['batch']} per GPU: {e['peak_ddp'] / 1e9:.1f} GB DDP, "
            f"{e['peak_fsdp'] / 1e9:.1f} GB FSDP"
        )


if __name__ == "__main__":
    main()
