"""djepa's MAR-exact model against MAR's own code, and `convert_checkpoint`: an LTH14/mar checkpoint -> an export.

The reference is LTH14/mar's models/mar.py, models/diffloss.py and diffusion/ (tests/mar_reference/), built at a
tiny width with random weights in every tensor and saved as main_mar.py saves checkpoint-last.pth. MAR's code
calls `.cuda()` on what it creates; here that is the identity, so it runs on the CPU as written."""

import argparse
import json
from functools import partial

import pytest
import torch
from mar_reference.mar import MAR
from omegaconf import OmegaConf
from torch import nn

from djepa.cli import convert_checkpoint, scripts
from djepa.cli.config import compose_config
from djepa.engine.trainer import param_groups
from djepa.errors import UsageError
from djepa.nn.model import DJEPA, split_indices

TOL = 1e-5  # max abs difference, fp32


@pytest.fixture
def on_cpu(monkeypatch):
    monkeypatch.setattr(torch.Tensor, "cuda", lambda self, *args, **kwargs: self)


def tiny_mar() -> MAR:
    """MAR as mar_base builds it (eps 1e-6 norms), at 4x4 tokens of dim 16, encoder and decoder of different
    widths (so a swapped table shows), every tensor random (zero-initialised ones too)."""
    torch.manual_seed(0)
    mar = MAR(
        img_size=64,
        vae_stride=16,
        patch_size=1,
        encoder_embed_dim=32,
        encoder_depth=2,
        encoder_num_heads=4,
        decoder_embed_dim=24,
        decoder_depth=2,
        decoder_num_heads=4,
        mlp_ratio=4.0,
        norm_layer=partial(nn.LayerNorm, eps=1e-6),
        vae_embed_dim=16,
        class_num=10,
        buffer_size=4,
        diffloss_d=2,
        diffloss_w=24,
        num_sampling_steps="10",
    ).eval()
    with torch.no_grad():
        for tensor in mar.state_dict().values():
            tensor.add_(0.05 * torch.randn_like(tensor))
    return mar


def converted(mar: MAR) -> DJEPA:
    state = mar.state_dict()
    config = convert_checkpoint.mar_model_config(state, argparse.Namespace(num_sampling_steps="10"), num_heads=4)
    model = DJEPA(**config).eval()
    model.load_state_dict(convert_checkpoint.mar_weights(state, config["buffer_size"]))  # strict: every tensor
    return model


def test_mar_switches_make_djepa_compute_what_mar_computes(on_cpu):
    mar = tiny_mar()
    model = converted(mar)
    assert model.num_params() == sum(p.numel() for p in mar.parameters()) == 59_120
    assert (model.grid, model.buffer_size, model.token_dim) == ((4, 4), 4, 16)
    # train.no_decay=mar decays what MAR's add_weight_decay does: all but 1-D tensors, biases and the DiffLoss MLP
    mar_decayed = [p for n, p in mar.named_parameters() if p.ndim > 1 and "diffloss" not in n]
    decayed = param_groups(model, 0.02, "mar")[0]["params"]
    assert sum(p.numel() for p in decayed) == sum(p.numel() for p in mar_decayed) == 41_560
    assert len(decayed) == len(mar_decayed) + 2  # MAR's two sequence tables are four tensors here

    # encoder and decoder: the same tokens, labels (one row unconditional) and masks (11 of 16 hidden per row)
    b, n = 3, 16
    tokens, labels = torch.randn(b, n, 16), torch.tensor([1, 7, 3])
    mask = torch.zeros(b, n).scatter(1, torch.argsort(torch.rand(b, n), dim=1)[:, :11], 1.0)
    with torch.no_grad():
        ref_class = torch.cat([mar.class_emb(labels[:2]), mar.fake_latent])
        ref_encoded = mar.forward_mae_encoder(tokens, mask, ref_class)
        ref_decoded = mar.forward_mae_decoder(ref_encoded, mask)
        visible = split_indices(mask.bool())[0]
        class_emb = torch.cat([model.class_embedding(labels[:2], 2), model.class_embedding(None, 1)])
        encoded = model.encode(tokens, visible, class_emb)
        decoded = model.predict(encoded, visible)
    assert encoded.shape == ref_encoded.shape == (3, 4 + 5, 32) and decoded.shape == ref_decoded.shape == (3, 16, 24)
    assert (encoded - ref_encoded).abs().max() <= TOL
    assert (decoded - ref_decoded).abs().max() <= TOL
    assert ref_decoded.abs().max() > 0.5  # outputs of substance, not near-zero ones

    # the denoising head: network output, guided output, per-row training loss for the same timesteps and noise
    rows = 48
    x, cond, uncond = torch.randn(rows, 16), torch.randn(rows, 24), torch.randn(rows, 24)
    t = torch.randint(0, 1000, (rows,))
    net, head = mar.diffloss.net, model.head
    with torch.no_grad():
        ref_out, out = net(x, t, cond), head.net(x, t.float(), cond)
        assert (out - ref_out).abs().max() <= TOL and ref_out.abs().max() > 0.1
        ref_guided = net.forward_with_cfg(torch.cat([x, x]), torch.cat([t, t]), torch.cat([cond, uncond]), 3.0)
        assert (head._guided(x, t.float(), cond, uncond, 3.0) - ref_guided[:rows]).abs().max() <= TOL
        target, noise = torch.randn(rows, 16), torch.randn(rows, 16)
        terms = mar.diffloss.train_diffusion.training_losses(net, target, t, {"c": cond}, noise=noise)
        assert (head.loss(target, cond, (t, noise)) - terms["loss"]).abs().max() <= TOL

        # sampling: MAR's respaced ancestral loop and djepa's draw the same noise in the same order
        torch.manual_seed(7)
        start = torch.randn(rows, 16)
        ref_sample = mar.diffloss.gen_diffusion.p_sample_loop(
            net.forward, start.shape, start, clip_denoised=False, model_kwargs={"c": cond}, temperature=0.9
        )
        torch.manual_seed(7)
        sample = head.sample(cond, None, temperature=0.9)
    assert head.sampling_steps == 10 and head.clip_x0 is None
    assert (sample - ref_sample).abs().max() <= TOL and ref_sample.abs().max() > 0.5

    # the whole masked autoregressive loop, without guidance: the same tokens for the same seed once the random
    # streams are aligned: the generation order drawn as djepa draws it (MAR draws it with NumPy), and MAR's draw of
    # the noise it multiplies by 0 at the last diffusion step undone (djepa does not draw it)
    mar.sample_orders = lambda bsz: torch.argsort(torch.rand(bsz, mar.seq_len), dim=1)
    gen, p_sample = mar.diffloss.gen_diffusion, mar.diffloss.gen_diffusion.p_sample

    def p_sample_keeping_the_stream(model, x, t, **kwargs):
        state = torch.get_rng_state()
        out = p_sample(model, x, t, **kwargs)
        if int(t[0]) == 0:
            torch.set_rng_state(state)
        return out

    gen.p_sample = p_sample_keeping_the_stream
    torch.manual_seed(11)
    ref_tokens = mar.patchify(mar.sample_tokens(2, num_iter=4, labels=torch.tensor([2, 5]), temperature=0.9))
    torch.manual_seed(11)
    tokens = model.sample(torch.tensor([2, 5]), num_steps=4, temperature=0.9)
    assert tokens.shape == ref_tokens.shape == (2, 16, 16) and ref_tokens.abs().max() > 0.5
    assert (tokens - ref_tokens).abs().max() <= TOL


def tiny_kl16(path):
    """An AutoencoderKL folder shaped as MAR's KL-16 where it matters here: 16 latent channels, 16x downsampling."""
    from diffusers import AutoencoderKL

    torch.manual_seed(1)
    AutoencoderKL(
        down_block_types=("DownEncoderBlock2D",) * 5,
        up_block_types=("UpDecoderBlock2D",) * 5,
        block_out_channels=(8,) * 5,
        latent_channels=16,
        norm_num_groups=4,
        scaling_factor=0.2325,
    ).save_pretrained(path)
    return path


def test_convert_checkpoint_writes_an_export_that_samples_and_refuses_what_it_cannot_read(tmp_path, on_cpu, capsys):
    from djepa.pipeline import Pipeline

    mar = tiny_mar()
    raw = mar.state_dict()
    ema = {k: v + 0.01 * torch.randn_like(v) for k, v in raw.items()}
    args = argparse.Namespace(model="mar_tiny", num_sampling_steps="10", diffusion_batch_mul=4, proj_dropout=0.0)
    checkpoint = tmp_path / "checkpoint-last.pth"
    optimizer = {"state": {}, "param_groups": [{"lr": 1e-4, "params": [0, 1]}]}
    layout = {"model": raw, "model_ema": ema, "optimizer": optimizer, "epoch": 399, "scaler": {"scale": 65536.0}}
    torch.save(layout | {"args": args}, checkpoint)  # what main_mar.py's misc.save_model writes
    kl16 = tiny_kl16(tmp_path / "kl16")
    cfg = compose_config([f"checkpoint={checkpoint}", f"tokenizer_path={kl16}", "out=OUT"], "convert_checkpoint")

    def convert(**changes):  # the composed config with other values (composing again costs a Hydra pass)
        return convert_checkpoint.run(OmegaConf.merge(cfg, {k: str(v) for k, v in changes.items()}))

    with pytest.raises(UsageError, match=r"does not say its attention heads .*: give num_heads=N"):
        convert(out=tmp_path / "a")  # a width none of MAR's sizes has, and no MAR name in args.model
    out = convert(out=tmp_path / "mar", num_heads=4)
    report = json.loads((out / "conversion.json").read_text())
    assert (report["weights"], report["epoch"], report["parameters"]) == ("model_ema", 399, 59_120)
    assert "MAR (Li et al." in (out / "README.md").read_text()

    pipe = Pipeline.from_pretrained(out, device="cpu")
    expected = convert_checkpoint.mar_weights(ema, 4)  # the EMA weights, by default
    assert all(torch.equal(v, expected[k]) for k, v in pipe.model.state_dict().items())
    config = pipe.model.config
    assert (config["pos_embed"], config["diffusion_pos_embed"], config["qk_norm"]) == ("learned", True, False)
    assert (config["attn_drop"], config["proj_drop"], config["head_config"]["sampling_steps"]) == (0.1, 0.0, 10)
    assert (pipe.config.model.encoder_width, pipe.config.model.predictor_width, pipe.config.train.no_decay) == (
        32,
        24,
        "mar",
    )
    assert (pipe.config.loss.jepa_weight, pipe.config.modality.adapter.image_size, pipe.defaults.guidance_scale) == (
        0.0,
        64,
        3.0,
    )
    images = pipe(class_labels=[3], num_samples=2, num_steps=2, seed=0).images
    assert [(im.size, im.mode) for im in images] == [((64, 64), "RGB")] * 2

    # the raw weights on request; a checkpoint without EMA weights says which to ask for
    loaded = convert_checkpoint.load_checkpoint(checkpoint)
    assert (
        convert_checkpoint.pick_weights(loaded, "model", checkpoint)["z_proj.weight"]
        is loaded["model"]["z_proj.weight"]
    )
    torch.save({"model": raw, "model_ema": None, "args": args}, tmp_path / "no_ema.pth")
    with pytest.raises(UsageError, match="has no `model_ema` state dict .*: try weights=model"):
        convert(checkpoint=tmp_path / "no_ema.pth", out=tmp_path / "b", num_heads=4)

    class Payload:  # pickled code is refused, never run
        def __reduce__(self):
            return (print, ("ran",))

    torch.save({"model": Payload()}, tmp_path / "code.pth")
    with pytest.raises(UsageError, match=r"does not load as plain tensors with torch.load\(weights_only=True\)"):
        convert(checkpoint=tmp_path / "code.pth", out=tmp_path / "c")
    assert "ran" not in capsys.readouterr().out
    with pytest.raises(UsageError, match="is not an AutoencoderKL folder"):
        convert(tokenizer_path=tmp_path, out=tmp_path / "d")
    with pytest.raises(UsageError, match="exists and is not an empty folder"):
        convert(out=out, num_heads=4)
    with pytest.raises(SystemExit) as exit_info:  # the console script is there, with its keys
        scripts.convert_checkpoint(["--help"])
    assert exit_info.value.code in (0, None) and "tokenizer_path=" in capsys.readouterr().out
    assert not any((tmp_path / name).exists() for name in "abcd")
