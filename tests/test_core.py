import pytest
import torch

from djepa.nn.masking import mask_from_orders, random_orders, sample_mask_ratio, training_mask


@pytest.mark.slow
@pytest.mark.parametrize("grid", [(12,), (4, 4), (2, 3, 3)])
@pytest.mark.parametrize("head", ["diffusion", "flow"])
def test_loss_falls_and_samples_have_grid_shape(make_tiny_model, grid, head):
    model = make_tiny_model(grid, head={"_target_": f"djepa.nn.heads.{head.title()}Head", "sampling_steps": 5})
    n = model.num_tokens
    # a learnable distribution: each class has its own mean token pattern
    means = torch.randn(3, n, 4)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(60):
        y = torch.randint(0, 3, (32,))
        tokens = means[y] + 0.1 * torch.randn(32, n, 4)
        mask = training_mask(32, n)
        out = model.loss(tokens, y, mask, model.target_features(tokens, y))
        total = out["denoise"] + out["jepa"]
        assert torch.isfinite(total)
        opt.zero_grad()
        total.backward()
        opt.step()
        losses.append(out["denoise"].item())
    assert sum(losses[-10:]) / 10 < 0.8 * sum(losses[:10]) / 10
    model.eval()
    samples = model.sample(torch.tensor([0, 1, 2]), num_steps=4, guidance=2.0, temperature=0.9)
    assert samples.shape == (3, n, 4)
    assert torch.isfinite(samples).all()


def test_mask_ratio_stays_in_truncated_range():
    g = torch.Generator().manual_seed(0)
    ratios = torch.tensor([sample_mask_ratio(g) for _ in range(2000)])
    assert ratios.min() >= 0.7 and ratios.max() <= 1.0
    # the mode is at 1.0: more mass in the top half of the range
    assert (ratios > 0.85).float().mean() > 0.5


def test_masks_follow_random_orders():
    orders = random_orders(5, 20, torch.Generator().manual_seed(1))
    assert all(sorted(o.tolist()) == list(range(20)) for o in orders)
    mask = mask_from_orders(orders, 7)
    assert (mask.sum(1) == 7).all()
    assert not torch.equal(mask[0], mask[1])


def test_known_tokens_are_kept_when_sampling(make_tiny_model):
    model = make_tiny_model((4, 4)).eval()
    known = torch.randn(2, 16, 4)
    known_mask = torch.zeros(2, 16, dtype=torch.bool)
    known_mask[:, :6] = True
    out = model.sample(torch.tensor([0, 1]), num_steps=5, known_tokens=known, known_mask=known_mask)
    torch.testing.assert_close(out[:, :6], known[:, :6])
    assert not torch.allclose(out[:, 6:], torch.zeros_like(out[:, 6:]))
    uneven = known_mask.clone()
    uneven[1, 6] = True
    with pytest.raises(ValueError, match="same number of visible tokens"):
        model.sample(torch.tensor([0, 1]), num_steps=5, known_tokens=known, known_mask=uneven)


def test_constant_cfg_guides_the_first_tokens_and_linear_does_not(make_tiny_model):
    model = make_tiny_model((4, 4), head={"_target_": "djepa.nn.heads.FlowHead", "sampling_steps": 3}).eval()
    with torch.no_grad():  # zero-initialised output layers would make guidance a no-op
        for p in model.parameters():
            p.add_(0.2 * torch.randn_like(p))
    labels = torch.tensor([0, 1, 2])

    def draw(guidance: float, schedule: str) -> torch.Tensor:
        torch.manual_seed(0)  # same reveal order and noise for every call
        return model.sample(labels, num_steps=16, guidance=guidance, guidance_schedule=schedule)

    # one token per step: the linear ramp guides the first token with 1 + 7/16, the constant one with 8,
    # so the constant schedule moves the samples further from the unguided ones
    linear, constant, unguided = draw(8.0, "linear"), draw(8.0, "constant"), draw(1.0, "linear")
    assert not torch.allclose(linear, constant)
    gap_linear = (linear - unguided).norm().item()
    gap_constant = (constant - unguided).norm().item()
    assert gap_constant > gap_linear > 0
    with pytest.raises(ValueError, match="guidance_schedule"):
        model.sample(labels, num_steps=2, guidance=2.0, guidance_schedule="cosine")


def test_mar_mode_has_no_jepa_loss(make_tiny_model):
    model = make_tiny_model((4, 4), jepa=False)
    assert model.jepa_proj is None
    out = model.loss(torch.randn(2, 16, 4), torch.tensor([0, 1]), training_mask(2, 16))
    assert set(out) == {"denoise"}


def test_jepa_loss_needs_targets(make_tiny_model):
    model = make_tiny_model((4, 4))
    with pytest.raises(ValueError, match="target"):
        model.loss(torch.randn(2, 16, 4), torch.tensor([0, 1]), training_mask(2, 16))


def test_save_and_load_pretrained_round_trip(make_tiny_model, tmp_path):
    from djepa.nn.model import DJEPA

    model = make_tiny_model((3, 5))
    model.save_pretrained(tmp_path / "m")
    again = DJEPA.from_pretrained(tmp_path / "m")
    for (name, a), (_, b) in zip(model.state_dict().items(), again.state_dict().items()):
        assert torch.equal(a, b), name


def test_sampling_steps_of_a_checkpoint_follow_the_loss_head_config(make_tiny_model, tmp_path):
    from omegaconf import OmegaConf

    from djepa.engine.checkpoint import CheckpointManager
    from djepa.engine.loading import load_ema_model

    model = make_tiny_model((4, 4))
    directory = CheckpointManager(tmp_path).save(1, {"ema": model.state_dict()}, {"model_config": model.config})
    state = CheckpointManager.verify(directory)
    assert load_ema_model(directory, state, torch.device("cpu")).head.sampling_steps == 10
    head = OmegaConf.create({"_target_": "djepa.nn.heads.DiffusionHead", "sampling_steps": 7})
    assert load_ema_model(directory, state, torch.device("cpu"), head).head.sampling_steps == 7
    other = OmegaConf.create(
        {"_target_": "djepa.nn.heads.FlowHead", "sampling_steps": 3}
    )  # another head type: left as trained
    assert load_ema_model(directory, state, torch.device("cpu"), other).head.sampling_steps == 10


def test_the_sampler_of_a_checkpoint_follows_the_loss_head_config(make_tiny_model, tmp_path):
    from omegaconf import OmegaConf

    from djepa.engine.checkpoint import CheckpointManager
    from djepa.engine.loading import load_ema_model

    model = make_tiny_model((4, 4))  # its head config names no sampler, as checkpoints from before it
    assert "sampler" not in model.config["head_config"]
    directory = CheckpointManager(tmp_path).save(1, {"ema": model.state_dict()}, {"model_config": model.config})
    state = CheckpointManager.verify(directory)
    assert load_ema_model(directory, state, torch.device("cpu")).head.sampler == "ddpm"
    head = OmegaConf.create({"_target_": "djepa.nn.heads.DiffusionHead", "sampling_steps": 4, "sampler": "dpm_solver"})
    loaded = load_ema_model(directory, state, torch.device("cpu"), head)
    assert loaded.head.sampler == "dpm_solver" and loaded.head.sampling_steps == 4
    assert loaded.sample(torch.tensor([0, 1]), num_steps=2).shape[0] == 2
    other = OmegaConf.create(
        {"_target_": "djepa.nn.heads.FlowHead", "sampler": "euler"}
    )  # another head type: left as trained
    assert load_ema_model(directory, state, torch.device("cpu"), other).head.sampler == "ddpm"
