"""`convert_tokenizer`: MAR's KL-16 VAE checkpoint -> a diffusers AutoencoderKL folder the image adapter loads.

The checkpoint is MAR's own architecture (tests/mar_vae_reference.py, MAR's models/vae.py) with random weights,
saved as MAR's kl16.ckpt is ({"model": state_dict}): exactly its keys and shapes."""

import argparse
import json

import pytest
import torch
from mar_vae_reference import AutoencoderKL as MarAutoencoderKL
from safetensors.torch import load_file

from djepa.cli import convert_tokenizer, scripts
from djepa.cli.config import compose_config
from djepa.errors import UsageError
from djepa.tokenizers.autoencoder_kl import AutoencoderKLTokenizer


def mar_kl16() -> MarAutoencoderKL:
    """MAR's KL-16 as main_mar.py builds it, every tensor random (norms too, so no two tensors look alike)."""
    torch.manual_seed(0)
    vae = MarAutoencoderKL(embed_dim=16, ch_mult=(1, 1, 2, 2, 4)).eval()
    with torch.no_grad():
        for tensor in vae.state_dict().values():
            tensor.add_(0.05 * torch.randn_like(tensor))
    return vae


@pytest.mark.slow
def test_mar_kl16_becomes_an_autoencoder_kl_with_its_weights_and_its_outputs(tmp_path):
    mar = mar_kl16()
    original = mar.state_dict()
    assert len(original) == 312 and sum(v.numel() for v in original.values()) == 66_456_019
    checkpoint = tmp_path / "kl16.ckpt"
    # a training checkpoint may carry LDM's loss networks beside the autoencoder: left out, and said so
    torch.save({"model": original | {"loss.logvar": torch.zeros(())}}, checkpoint)
    out = tmp_path / "kl16"
    assert convert_tokenizer.run(compose_config([f"checkpoint={checkpoint}", f"out={out}"], "convert_tokenizer")) == out

    config = json.loads((out / "config.json").read_text())
    assert config["_class_name"] == "AutoencoderKL" and config["scaling_factor"] == 0.2325
    assert config["block_out_channels"] == [128, 128, 256, 256, 512] and config["latent_channels"] == 16
    assert config["down_block_types"] == ["DownEncoderBlock2D"] * 4 + ["AttnDownEncoderBlock2D"]
    assert config["up_block_types"] == ["UpDecoderBlock2D"] * 5 and config["mid_block_add_attention"]
    report = json.loads((out / "conversion.json").read_text())
    assert report["left_out"] == ["loss.logvar"] and report["tensors"] == 312
    assert report["parameters"] == 66_456_019

    # every tensor of MAR's is in the folder under its diffusers name, equal (1x1 convolutions as linear layers)
    converted = load_file(out / "diffusion_pytorch_model.safetensors")
    names = {key: convert_tokenizer.diffusers_key(key, 5) for key in original}
    assert sorted(names.values()) == sorted(converted) and len(converted) == 312
    for key, value in original.items():
        assert torch.equal(converted[names[key]], value.reshape(converted[names[key]].shape)), key
    assert names["decoder.up.4.block.0.conv1.weight"] == "decoder.up_blocks.0.resnets.0.conv1.weight"
    assert names["encoder.down.4.attn.1.q.weight"] == "encoder.down_blocks.4.attentions.1.to_q.weight"

    # the image adapter's tokenizer loads it: 256x256 -> 16x16x16 at MAR's scale, and it computes what MAR does
    tok = AutoencoderKLTokenizer(out)
    assert (tok.scale, tok.shift, tok.latent_channels, tok.downsample) == (0.2325, 0.0, 16, (16, 16))
    assert tok.latent_grid((256, 256)) == (16, 16)
    x = torch.rand(1, 3, 256, 256) * 2 - 1
    mean, std = tok.encode_moments(x)
    with torch.no_grad():
        posterior = mar.encode(x)
    assert mean.shape == std.shape == (1, 16, 16, 16)
    torch.testing.assert_close(mean, posterior.mean * 0.2325, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(std, posterior.std * 0.2325, rtol=1e-4, atol=1e-5)
    z = torch.randn(1, 16, 16, 16)
    image = tok.decode(z)
    with torch.no_grad():
        expected = mar.decode(z / 0.2325)
    assert image.shape == (1, 3, 256, 256)
    torch.testing.assert_close(image, expected, rtol=1e-4, atol=1e-4)


def test_convert_tokenizer_refuses_what_it_cannot_convert_in_one_line(tmp_path, capsys):
    layers = {"encoder.conv_in.weight": torch.zeros(8, 3, 3, 3)}
    torch.save({"model": layers, "args": argparse.Namespace(vae_embed_dim=16)}, tmp_path / "partial.ckpt")
    with pytest.raises(UsageError, match="not an LDM/MAR KL autoencoder state dict: no decoder.conv_out.weight"):
        convert_tokenizer.run(
            compose_config([f"checkpoint={tmp_path / 'partial.ckpt'}", f"out={tmp_path / 'a'}"], "convert_tokenizer")
        )

    class Payload:  # pickled code is refused, never run
        def __reduce__(self):
            return (print, ("ran",))

    torch.save({"model": Payload()}, tmp_path / "code.ckpt")
    with pytest.raises(UsageError, match="does not load as plain tensors"):
        convert_tokenizer.run(
            compose_config([f"checkpoint={tmp_path / 'code.ckpt'}", f"out={tmp_path / 'b'}"], "convert_tokenizer")
        )
    assert "ran" not in capsys.readouterr().out

    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("")
    with pytest.raises(UsageError, match="exists and is not an empty folder"):
        convert_tokenizer.run(
            compose_config([f"checkpoint={tmp_path / 'partial.ckpt'}", f"out={tmp_path / 'full'}"], "convert_tokenizer")
        )
    with pytest.raises(UsageError, match="checkpoint= is required"):
        convert_tokenizer.run(compose_config([f"out={tmp_path / 'c'}"], "convert_tokenizer"))
    with pytest.raises(UsageError, match="vae: unknown key"):
        convert_tokenizer.run(compose_config(["vae=x"], "convert_tokenizer"))
    with pytest.raises(SystemExit) as exit_info:  # the console script: one line, status 2
        scripts.convert_tokenizer([f"checkpoint={tmp_path / 'missing.ckpt'}", f"out={tmp_path / 'd'}"])
    assert exit_info.value.code == 2 and "missing.ckpt is not a file" in capsys.readouterr().err
    assert not any(p.name.startswith((".a", ".b", ".d")) for p in tmp_path.iterdir())  # no staging folder left
