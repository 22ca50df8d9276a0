import pytest
import torch

from djepa.model import DJEPA


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def tiny_model(grid, token_dim=4, num_classes=3, head=None, jepa=True, **overrides) -> DJEPA:
    settings = dict(
        encoder_depth=1,
        encoder_width=32,
        predictor_depth=1,
        predictor_width=32,
        heads=2,
        mlp_ratio=2.0,
        buffer_size=4,
        denoiser_depth=2,
        denoiser_width=64,
        diffusion_batch_mul=2,
    )
    settings.update(overrides)
    return DJEPA(
        token_dim=token_dim,
        grid=grid,
        num_classes=num_classes,
        jepa=jepa,
        head=head or {"type": "diffusion", "sampling_steps": 10},
        **settings,
    )


@pytest.fixture
def make_tiny_model():
    return tiny_model
