"""djepa's model with D-JEPA's switches against D-JEPA's network, and `convert_checkpoint` of a D-JEPA checkpoint.

The reference is tests/djepa_reference/ (D-JEPA/djepa-imagenet's models/djepa.py restated on MAR's vendored code),
built at a tiny width with random weights in every tensor and saved as main_djepa.py saves its checkpoints. Its
code calls `.cuda()` on what it creates; here that is the identity, so it runs on the CPU as written."""

import argparse
import json

import pytest
import torch
from djepa_reference.djepa import DJEPA as ReferenceDJEPA
from omegaconf import OmegaConf
from test_convert_checkpoint import tiny_kl16

from djepa.cli import convert_checkpoint, djepa_checkpoint
from djepa.cli.config import compose_config
from djepa.errors import UsageError
from djepa.nn.model import DJEPA, split_indices

TOL = 1e-5  # max abs difference, fp32


@pytest.fixture
def on_cpu(monkeypatch):
    monkeypatch.setattr(torch.Tensor, "cuda", lambda self, *args, **kwargs: self)


def tiny_reference() -> ReferenceDJEPA:
    """D-JEPA as main_djepa.py builds it with --qk_norm and --jepa_weight 1, at 4x4 tokens of dim 16, encoder and
    decoder of different widths (so a swapped table or projector side shows), every tensor random."""
    torch.manual_seed(0)
    ref = ReferenceDJEPA(
        img_size=64,
        vae_stride=16,
        encoder_embed_dim=32,
        encoder_depth=2,
        encoder_num_heads=4,
        decoder_embed_dim=24,
        decoder_depth=2,
        decoder_num_heads=4,
        qk_norm=True,
        vae_embed_dim=16,
        class_num=10,
        buffer_size=4,
        diffloss_d=2,
        diffloss_w=24,
        num_sampling_steps="10",
    ).eval()
    with torch.no_grad():
        for tensor in ref.state_dict().values():
            tensor.add_(0.05 * torch.randn_like(tensor))
    return ref


def converted(ref: ReferenceDJEPA) -> DJEPA:
    state = ref.state_dict()
    config = djepa_checkpoint.model_config(state, argparse.Namespace(num_sampling_steps="10"))
    model = DJEPA(**config).eval()
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    model.load_state_dict(djepa_checkpoint.weights(state, expected))  # strict: every tensor
    return model


def test_djepa_switches_make_djepa_compute_what_the_reference_computes(on_cpu):
    ref = tiny_reference()
    model = converted(ref)
    assert model.num_params() == sum(p.numel() for p in ref.parameters())
    assert (model.grid, model.buffer_size, model.token_dim, model.config["num_heads"]) == ((4, 4), 4, 16, 4)
    assert model.config["qk_norm"] and model.predictor_buffer_pos is None and model.diffusion_pos is None

    # encoder and decoder: the same tokens, labels (one row unconditional) and masks (11 of 16 hidden per row)
    b, n = 3, 16
    tokens, labels = torch.randn(b, n, 16), torch.tensor([1, 7, 3])
    mask = torch.zeros(b, n).scatter(1, torch.argsort(torch.rand(b, n), dim=1)[:, :11], 1.0)
    with torch.no_grad():
        ref_class = torch.cat([ref.class_emb(labels[:2]), ref.fake_latent])
        ref_encoded = ref.forward_encoder(tokens, mask, ref_class)
        ref_decoded = ref.forward_decoder(ref_encoded, mask)
        visible = split_indices(mask.bool())[0]
        class_emb = torch.cat([model.class_embedding(labels[:2], 2), model.class_embedding(None, 1)])
        encoded = model.encode(tokens, visible, class_emb)
        decoded = model.predict(encoded, visible)
        # the JEPA targets (every token visible, buffer dropped) and the projector of the predictor's features
        ref_targets = ref.forward_ema_encoder(ref.unpatchify(tokens), labels)
        targets = model.target_features(tokens, labels)
        ref_projected, projected = ref.jepaloss.net(ref_decoded), model.jepa_proj(decoded)
    assert encoded.shape == ref_encoded.shape == (3, 4 + 5, 32) and decoded.shape == ref_decoded.shape == (3, 16, 24)
    assert (encoded - ref_encoded).abs().max() <= TOL
    assert (decoded - ref_decoded).abs().max() <= TOL and ref_decoded.abs().max() > 0.5
    assert targets.shape == ref_targets.shape == (3, 16, 32) and (targets - ref_targets).abs().max() <= TOL
    assert projected.shape == ref_projected.shape == (3, 16, 32) and ref_projected.abs().max() > 0.5
    assert (projected - ref_projected).abs().max() <= TOL

    # the denoising head: network output and guided output for the same timesteps
    rows = 48
    x, cond, uncond = torch.randn(rows, 16), torch.randn(rows, 24), torch.randn(rows, 24)
    t = torch.randint(0, 1000, (rows,))
    net, head = ref.diffloss.net, model.head
    with torch.no_grad():
        ref_out = net(x, t, cond)
        assert (head.net(x, t.float(), cond) - ref_out).abs().max() <= TOL and ref_out.abs().max() > 0.1
        ref_guided = net.forward_with_cfg(torch.cat([x, x]), torch.cat([t, t]), torch.cat([cond, uncond]), 3.0)
        assert (head._guided(x, t.float(), cond, uncond, 3.0) - ref_guided[:rows]).abs().max() <= TOL

    # the masked generation loop without guidance: the same tokens for the same seed once the random streams are
    # aligned as in the MAR test (generation order drawn as djepa draws it; the noise the last diffusion step
    # multiplies by 0 not drawn)
    ref.sample_orders = lambda bsz: torch.argsort(torch.rand(bsz, ref.seq_len), dim=1)
    gen, p_sample = ref.diffloss.gen_diffusion, ref.diffloss.gen_diffusion.p_sample

    def p_sample_keeping_the_stream(model, x, t, **kwargs):
        state = torch.get_rng_state()
        out = p_sample(model, x, t, **kwargs)
        if int(t[0]) == 0:
            torch.set_rng_state(state)
        return out

    gen.p_sample = p_sample_keeping_the_stream
    torch.manual_seed(11)
    ref_tokens = ref.patchify(ref.sample_tokens(2, num_iter=4, labels=torch.tensor([2, 5]), temperature=0.9))
    torch.manual_seed(11)
    sampled = model.sample(torch.tensor([2, 5]), num_steps=4, temperature=0.9)
    assert sampled.shape == ref_tokens.shape == (2, 16, 16) and ref_tokens.abs().max() > 0.5
    assert (sampled - ref_tokens).abs().max() <= TOL


def test_buffer_pos_embed_switch():
    sizes = dict(token_dim=4, grid=(2, 2), num_classes=3, encoder_width=8, predictor_width=8, num_heads=2)
    torch.manual_seed(0)
    mar_like = DJEPA(**sizes, pos_embed="learned")
    djepa_like = DJEPA(**sizes, pos_embed="learned", buffer_pos_embed=False)
    assert mar_like.predictor_buffer_pos is not None and mar_like.buffer.abs().max() > 0  # MAR's: std 0.02 rows
    assert djepa_like.predictor_buffer_pos is None and not djepa_like.buffer.any()  # D-JEPA's: zeros
    assert "predictor_buffer_pos" not in djepa_like.state_dict()
    cfg = compose_config(["model=tiny", "model.pos_embed=learned", "model.buffer_pos_embed=false"])
    assert cfg.model.buffer_pos_embed is False


def test_convert_checkpoint_reads_a_djepa_checkpoint(tmp_path, on_cpu, capsys):
    from djepa.pipeline import Pipeline

    ref = tiny_reference()
    raw = ref.state_dict()
    ema = {k: v + 0.01 * torch.randn_like(v) for k, v in raw.items()}
    # main_djepa.py's args after main() (--precision bf16 became a torch dtype), its scripts' values
    args = argparse.Namespace(
        model="djepa_tiny", num_sampling_steps="10", diffusion_batch_mul=4, proj_dropout=0.1, qk_norm=True,
        jepa_weight=1.0, diffloss="gauss", temperature=0.94, cfg_scale=1.0, precision=torch.bfloat16,
    )  # fmt: skip
    compiled = {f"_orig_mod.{k}": v for k, v in ema.items()}  # --compile: the model is torch.compile's wrapper
    optimizer = {"state": {}, "param_groups": [{"lr": 8e-4, "params": [0, 1]}]}
    layout = {"model": raw, "model_ema": compiled, "optimizer": optimizer, "epoch": 1399, "scaler": {}}
    checkpoint = tmp_path / "checkpoint-last.pth"
    torch.save(layout | {"args": args}, checkpoint)  # what misc.save_model writes
    kl16 = tiny_kl16(tmp_path / "kl16")
    cfg = compose_config([f"checkpoint={checkpoint}", f"tokenizer_path={kl16}", "out=OUT"], "convert_checkpoint")

    def convert(**changes):
        return convert_checkpoint.run(OmegaConf.merge(cfg, {k: str(v) for k, v in changes.items()}))

    out = convert(out=tmp_path / "djepa")  # heads from the qk-norm weights, no num_heads= needed
    report = json.loads((out / "conversion.json").read_text())
    assert (report["source"], report["weights"], report["epoch"]) == ("djepa", "model_ema", 1399)
    assert "D-JEPA (Chen et al." in (out / "README.md").read_text()

    pipe = Pipeline.from_pretrained(out, device="cpu")
    expected = {k: tuple(v.shape) for k, v in pipe.model.state_dict().items()}
    ema_weights = djepa_checkpoint.weights(ema, expected)  # the EMA weights, by default
    assert all(torch.equal(v, ema_weights[k]) for k, v in pipe.model.state_dict().items())
    c = pipe.model.config
    assert (c["pos_embed"], c["buffer_pos_embed"], c["diffusion_pos_embed"], c["qk_norm"]) == (
        "learned",
        False,
        False,
        True,
    )
    assert (c["jepa"], c["jepa_projector"], c["num_heads"], c["head_config"]["sampling_steps"]) == (
        True,
        "reference",
        4,
        10,
    )
    assert (pipe.config.loss.jepa_weight, pipe.config.train.no_decay, pipe.config.modality.adapter.image_size) == (
        1.0,
        "reference",
        64,
    )
    assert (pipe.defaults.guidance_scale, pipe.defaults.temperature) == (1.0, 0.94)
    images = pipe(class_labels=[3], num_samples=2, num_steps=2, seed=0).images
    assert [(im.size, im.mode) for im in images] == [((64, 64), "RGB")] * 2

    # a checkpoint without the projector (--jepa_weight 0) converts with the JEPA term off
    no_jepa = {k: v for k, v in raw.items() if not k.startswith("jepaloss.")}
    torch.save({"model": no_jepa, "model_ema": no_jepa, "args": args}, tmp_path / "no_jepa.pth")
    out = convert(checkpoint=tmp_path / "no_jepa.pth", out=tmp_path / "no_jepa")
    assert Pipeline.from_pretrained(out, device="cpu").config.loss.jepa_weight == 0.0

    # unknown and missing keys are named in one line; pickled code is refused
    odd = {k: v for k, v in ema.items() if k != "decoder_norm.bias"} | {"extra_head.weight": torch.zeros(2)}
    torch.save({"model_ema": odd}, tmp_path / "odd.pth")
    with pytest.raises(UsageError, match=r"unknown keys extra_head.weight; missing keys decoder_norm.bias$"):
        convert(checkpoint=tmp_path / "odd.pth", out=tmp_path / "a")
    torch.save({"model_ema": ema, "args": argparse.Namespace(diffloss="flow")}, tmp_path / "flow.pth")
    with pytest.raises(UsageError, match="args.diffloss is 'flow'"):
        convert(checkpoint=tmp_path / "flow.pth", out=tmp_path / "b")

    class Payload:
        def __reduce__(self):
            return (print, ("ran",))

    torch.save({"model_ema": {"buffer": Payload()}}, tmp_path / "code.pth")
    with pytest.raises(UsageError, match=r"does not load as plain tensors with torch.load\(weights_only=True\)"):
        convert(checkpoint=tmp_path / "code.pth", out=tmp_path / "c")
    assert "ran" not in capsys.readouterr().out
    assert not any((tmp_path / name).exists() for name in "abc")
