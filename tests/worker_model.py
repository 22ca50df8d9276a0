"""The tiny DJEPA the torchrun workers (ddp_worker, dcp_worker, scale_worker) train: 16 tokens of dim 4, 3 classes."""

from typing import Any

from djepa.nn.model import DJEPA

FLOW = {"_target_": "djepa.nn.heads.FlowHead"}
DIFFUSION = {"_target_": "djepa.nn.heads.DiffusionHead"}


def tiny_djepa(**overrides: Any) -> DJEPA:
    settings: dict[str, Any] = dict(
        token_dim=4,
        grid=(4, 4),
        num_classes=3,
        encoder_depth=1,
        encoder_width=32,
        predictor_depth=1,
        predictor_width=32,
        num_heads=2,
        buffer_size=4,
        denoiser_depth=1,
        denoiser_width=32,
    )
    return DJEPA(**(settings | overrides))
