"""loss.jepa_rows and loss.jepa_every: the JEPA term (teacher pass and projector) on a share of each batch's rows,
or on every k-th step only."""

from typing import Any

import pytest
import torch

from djepa.cli.config import compose_config
from djepa.cli.train import train_config
from djepa.engine.data import TokenData
from djepa.engine.trainer import TrainConfig, Trainer
from djepa.nn.masking import training_mask


def token_data(n: int = 32) -> TokenData:
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(n) % 3
    mean = torch.randn(3, 16, 4, generator=g)[labels] + 0.1 * torch.randn(n, 16, 4, generator=g)
    return TokenData(mean, None, labels)


def small_config(**overrides: Any) -> TrainConfig:
    settings: dict[str, Any] = dict(batch_size=8, lr=1e-3, warmup_steps=1, checkpoint_every=10, log_every=1)
    return TrainConfig(precision="fp32", preview_every=0, **settings | overrides)


def test_the_jepa_term_on_the_first_rows_equals_that_term_on_those_rows_alone(make_tiny_model):
    model = make_tiny_model((4, 4)).eval()  # eval: no label drop, so rows do not share random draws
    g = torch.Generator().manual_seed(1)
    tokens, labels = torch.randn(8, 16, 4, generator=g), torch.arange(8) % 3
    mask = training_mask(8, 16, 0.7, g)
    visible = int((~mask[0]).sum())
    assert visible > 0
    targets = model.target_features(tokens, labels)
    with torch.no_grad():
        on_first = model.loss(tokens, labels, mask, targets[:2], visible)["jepa"]
        alone = model.loss(tokens[:2], labels[:2], mask[:2], targets[:2], visible)["jepa"]
        everything = model.loss(tokens, labels, mask, targets, visible)["jepa"]
    torch.testing.assert_close(on_first, alone)
    assert not torch.allclose(on_first, everything)


@pytest.mark.parametrize(("share", "rows"), [(1.0, 8), (0.5, 4), (0.25, 2), (0.01, 1)])
def test_the_teacher_sees_only_the_share_of_rows(make_tiny_model, tmp_path, share, rows):
    config = small_config(steps=3, jepa_rows=share)
    trainer = Trainer(make_tiny_model((4, 4)), token_data(), config, tmp_path, torch.device("cpu"))
    assert trainer.teacher is not None
    seen: list[int] = []
    trainer.teacher.register_forward_hook(lambda _m, args, _out: seen.append(args[0].shape[0]))
    trainer.fit()
    assert seen and set(seen) == {rows}


@pytest.mark.parametrize("bad", [0.0, -0.5, 1.5])
def test_a_share_outside_0_1_names_the_key(bad):
    with pytest.raises(ValueError, match="loss.jepa_rows"):
        TrainConfig(jepa_rows=bad)


def test_the_teacher_runs_only_on_every_kth_step(make_tiny_model, tmp_path):
    config = small_config(steps=8, jepa_every=3)
    trainer = Trainer(make_tiny_model((4, 4)), token_data(), config, tmp_path, torch.device("cpu"))
    assert trainer.teacher is not None
    taught: list[int] = []
    trainer.teacher.register_forward_hook(lambda _m, _args, _out: taught.append(trainer.step))
    records = []
    for _ in range(8):
        records.append(trainer.train_step())
        trainer.step += 1
    assert taught and all(step % 3 == 0 for step in taught)
    for step, record in enumerate(records):
        assert record["jepa_active"] == (step in taught)
        if step % 3:
            assert float(record["jepa"]) == 0.0 and float(record["denoise"]) > 0


def test_jepa_every_comes_from_the_loss_config_and_must_be_positive():
    assert train_config(compose_config(["loss.jepa_every=4"])).jepa_every == 4
    with pytest.raises(ValueError, match="loss.jepa_every"):
        TrainConfig(jepa_every=0)
