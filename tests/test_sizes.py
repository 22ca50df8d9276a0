import pytest
import torch
from omegaconf import OmegaConf

from djepa.cli.config import compose_config
from djepa.engine.model_config import model_kwargs
from djepa.nn.model import DJEPA

PAPER = {"djepa_b": 212.0e6, "djepa_l": 687.4e6, "djepa_h": 1427e6}


@pytest.mark.parametrize("name", sorted(PAPER))
def test_paper_sizes_match_parameter_counts(name):
    cfg = compose_config([f"model={name}"])
    with torch.device("meta"):
        model = DJEPA(token_dim=16, grid=(16, 16), num_classes=1000, **model_kwargs(cfg))
    assert abs(model.num_params() - PAPER[name]) / PAPER[name] < 0.01


def test_small_shape_is_the_mar_comparison_shape():
    cfg = compose_config(["model=small", "loss.jepa_weight=0"])
    assert OmegaConf.to_container(cfg.model)["buffer_size"] == 64
    with torch.device("meta"):
        model = DJEPA(token_dim=4, grid=(8, 8), num_classes=10, **model_kwargs(cfg))
    assert not model.jepa
    # MAR's reference code has 7.79M at this shape; it keeps full (not factorised) position tables
    assert abs(model.num_params() - 7.79e6) / 7.79e6 < 0.01


def test_mar_configs_turn_the_jepa_loss_off():
    cfg = compose_config(["model=mar_b"])
    assert model_kwargs(cfg)["jepa"] is False
