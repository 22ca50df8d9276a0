"""D-JEPA as the reference has it: equal start with MAR mode, the projector, the targets, weight decay,
the slow teacher, the JEPA term off without context, and the interference metrics."""

import json

import pytest
import torch
from torch import nn

from djepa.engine.data import TokenData
from djepa.engine.trainer import TrainConfig, Trainer, param_groups, teacher_decay
from djepa.nn.masking import mask_from_orders, random_orders


def token_data(n=64, grid_tokens=16):
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(n) % 3
    mean = torch.randn(3, grid_tokens, 4, generator=g)[labels] + 0.1 * torch.randn(n, grid_tokens, 4, generator=g)
    return TokenData(mean, None, labels)


def config(**overrides):
    settings = dict(steps=20, batch_size=8, lr=1e-3, warmup_steps=2, log_every=5, checkpoint_every=20)
    settings.update(precision="fp32", preview_every=0, ema_decay=0.99)
    settings.update(overrides)
    return TrainConfig(**settings)


def test_same_seed_gives_djepa_and_mar_identical_shared_weights(make_tiny_model):
    torch.manual_seed(7)
    djepa = make_tiny_model((4, 4), jepa=True).state_dict()
    torch.manual_seed(7)
    mar = make_tiny_model((4, 4), jepa=False).state_dict()
    assert set(mar) < set(djepa)
    assert {k.split(".")[0] for k in set(djepa) - set(mar)} == {"jepa_proj"}
    for name, value in mar.items():
        assert torch.equal(value, djepa[name]), name


def test_projector_is_an_mlp_with_a_layer_norm_on_its_hidden_layer(make_tiny_model):
    proj = make_tiny_model((4, 4)).jepa_proj
    kinds = [type(m) for m in proj]
    assert kinds == [nn.Linear, nn.LayerNorm, nn.GELU, nn.Linear]
    assert proj[0].out_features == proj[1].normalized_shape[0] == proj[3].in_features


def test_targets_are_the_encoders_final_norm_output_without_a_second_norm(make_tiny_model):
    model = make_tiny_model((4, 4)).eval()
    with torch.no_grad():
        model.encoder.norm.weight.fill_(3.0)
        model.encoder.norm.bias.fill_(0.5)
    tokens, labels = torch.randn(2, 16, 4), torch.tensor([0, 1])
    targets = model.target_features(tokens, labels)
    # A second layer norm would force each token back to mean 0 and std 1.
    assert targets.mean().item() == pytest.approx(0.5, abs=0.05)
    assert targets.std().item() == pytest.approx(3.0, rel=0.05)


def test_no_weight_decay_on_head_projector_and_embeddings(make_tiny_model):
    model = make_tiny_model((4, 4))
    decay, no_decay = param_groups(model, 0.02)
    decayed = {id(p) for p in decay["params"]}
    names = {n for n, p in model.named_parameters() if id(p) in decayed}
    assert names, "the transformer blocks' matrices decay"
    assert all(n.startswith(("encoder.blocks", "predictor.blocks")) for n in names), names
    for prefix in ("head.", "jepa_proj.", "token_proj.", "predictor_embed."):
        assert not any(n.startswith(prefix) for n in names)
    assert no_decay["weight_decay"] == 0.0


def test_teacher_ramp_and_validation():
    train_config = config(steps=100, teacher_ema_start=0.996, teacher_ema_end=1.0)
    assert teacher_decay(0, train_config) == pytest.approx(0.996)
    assert teacher_decay(50, train_config) == pytest.approx(0.998)
    assert teacher_decay(100, train_config) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="train.teacher"):
        config(teacher="online")
    with pytest.raises(ValueError, match="teacher_ema_start"):
        config(teacher_ema_start=1.5)


@pytest.mark.slow
def test_separate_teacher_moves_slower_than_the_sampling_ema(make_tiny_model, tmp_path):
    model = make_tiny_model((4, 4))
    start = {k: v.clone() for k, v in model.state_dict().items()}
    train_config = config(teacher_ema_start=0.999, teacher_ema_end=0.999)
    trainer = Trainer(model, token_data(), train_config, tmp_path, torch.device("cpu"))
    trainer.fit()

    def drift(module, prefix):
        return sum((v - start[k]).norm() for k, v in module.state_dict().items() if k.startswith(prefix))

    assert drift(trainer.teacher, "encoder.") < 0.2 * drift(trainer.ema, "encoder.")
    # Only the parts the targets come from are tracked; the teacher's head stays at its start.
    assert drift(trainer.teacher, "head.") == 0
    # The teacher is saved with the run, and MAR mode has none.
    assert (trainer.checkpoints.directories()[-1] / "teacher.safetensors").exists()
    mar = Trainer(
        make_tiny_model((4, 4), jepa=False), token_data(), train_config, tmp_path / "mar", torch.device("cpu")
    )
    assert mar.teacher is None


def test_sampling_ema_teacher_option_uses_the_ema(make_tiny_model, tmp_path):
    trainer = Trainer(make_tiny_model((4, 4)), token_data(), config(teacher="sampling_ema"), tmp_path, "cpu")
    assert trainer.teacher is None


def test_no_context_batch_has_no_jepa_term_and_no_teacher_pass(make_tiny_model, tmp_path, monkeypatch):
    model = make_tiny_model((4, 4))
    tokens, labels = torch.randn(4, 16, 4), torch.arange(4) % 3
    all_hidden = torch.ones(4, 16, dtype=torch.bool)
    losses = model.loss(tokens, labels, all_hidden, targets=None)  # no targets needed
    assert losses["jepa"].item() == 0.0
    losses["jepa"].backward()
    assert model.jepa_proj[0].weight.grad is not None  # still part of the graph (DDP needs every parameter)

    some_visible = mask_from_orders(random_orders(4, 16), 12)
    targets = model.target_features(tokens, labels)
    assert model.loss(tokens, labels, some_visible, targets)["jepa"].item() > 0

    trainer = Trainer(make_tiny_model((4, 4)), token_data(), config(steps=1), tmp_path, "cpu")
    calls = []
    monkeypatch.setattr(trainer.teacher, "forward", lambda *a, **k: calls.append(1) or None)
    monkeypatch.setattr(trainer, "batch", lambda step: (tokens, labels, all_hidden))
    record = trainer.train_step()
    assert calls == [] and record["jepa_active"] is False and record["jepa"] == 0.0


@pytest.mark.slow
def test_metrics_log_gradient_interference_and_clipping(make_tiny_model, tmp_path):
    train_config = config(steps=20, grad_probe_every=1, log_every=1, grad_clip=1e-3, mask_ratio_min=0.5)
    Trainer(make_tiny_model((4, 4)), token_data(), train_config, tmp_path, torch.device("cpu")).fit()
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    probed = [r for r in rows if "grad_norm_jepa" in r]
    assert probed, "every step with context is probed at grad_probe_every=1"
    for r in probed:
        assert r["grad_norm_jepa"] > 0 and -1 <= r["grad_cos"] <= 1
    # The denoiser's output and modulation start at zero, so its gradient reaches the trunk after step 1.
    assert probed[-1]["grad_norm_denoise"] > 0
    assert all(r["clip_fraction"] == 1.0 for r in rows)  # a tiny clip threshold fires every step
    rows_mar = tmp_path / "mar"
    Trainer(make_tiny_model((4, 4), jepa=False), token_data(), train_config, rows_mar, torch.device("cpu")).fit()
    mar = [json.loads(line) for line in (rows_mar / "metrics.jsonl").read_text().splitlines()]
    assert not any("grad_norm_jepa" in r for r in mar)


def test_each_fidelity_fix_has_an_ablation_switch(make_tiny_model, tmp_path, monkeypatch):
    """Issue 12's per-fix ablation: each switch brings back the behaviour from before the fixes, alone."""
    torch.manual_seed(0)
    reference = make_tiny_model((4, 4))
    torch.manual_seed(0)
    plain = make_tiny_model((4, 4), jepa_projector_norm=False, jepa_target_norm=True)
    assert not any(isinstance(m, nn.LayerNorm) for m in plain.jepa_proj)
    shared = {k: v for k, v in plain.state_dict().items() if not k.startswith("jepa_proj")}
    assert all(torch.equal(v, reference.state_dict()[k]) for k, v in shared.items())  # still an equal start
    tokens, labels = torch.randn(4, 16, 4), torch.arange(4) % 3
    for model in (reference, plain):  # a trained final norm's scale, which the second norm takes away
        nn.init.constant_(model.encoder.norm.weight, 2.0)
    normed = plain.target_features(tokens, labels)
    assert torch.allclose(normed.mean(-1), torch.zeros(4, 16), atol=1e-5)
    assert torch.allclose(normed.std(-1, unbiased=False), torch.ones(4, 16), atol=1e-3)
    assert not torch.allclose(reference.target_features(tokens, labels).std(-1, unbiased=False), torch.ones(4, 16))

    # Without context: the JEPA term and the teacher pass stay on when no token is visible.
    always = make_tiny_model((4, 4), jepa_without_context=True)
    all_hidden = torch.ones(4, 16, dtype=torch.bool)
    assert always.loss(tokens, labels, all_hidden, always.target_features(tokens, labels))["jepa"].item() > 0
    trainer = Trainer(always, token_data(), config(steps=1), tmp_path, "cpu")
    calls = []
    teacher_forward = trainer.teacher.forward
    monkeypatch.setattr(trainer.teacher, "forward", lambda *a, **k: calls.append(1) or teacher_forward(*a, **k))
    monkeypatch.setattr(trainer, "batch", lambda step: (tokens, labels, all_hidden))
    assert trainer.train_step()["jepa_active"] is True and calls == [1]

    # The no-decay set before the fixes decayed the head's, projector's and token embedding's matrices.
    model = make_tiny_model((4, 4))
    names = {id(p): n for n, p in model.named_parameters()}
    for setting, head_decayed in (("reference", False), ("embeddings", True)):
        decayed = {names[id(p)].split(".")[0] for p in param_groups(model, 0.02, setting)[0]["params"]}
        assert ("head" in decayed) is head_decayed and ("jepa_proj" in decayed) is head_decayed
        assert not decayed & {"class_emb", "buffer", "mask_token", "encoder_pos", "predictor_pos"}
    with pytest.raises(ValueError, match="train.no_decay"):
        config(no_decay="none")
