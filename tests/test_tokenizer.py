import pytest
import torch

from djepa.tokenizers.autoencoder_kl import AutoencoderKLTokenizer
from djepa.tokenizers.train_autoencoder import AutoencoderTrainConfig, train_autoencoder_kl

pytestmark = pytest.mark.slow  # trains an autoencoder


def test_trained_autoencoder_loads_back_through_the_pretrained_path(tmp_path):
    g = torch.Generator().manual_seed(0)
    # smooth blobs: learnable in a few dozen steps
    base = torch.nn.functional.interpolate(torch.rand(64, 1, 4, 4, generator=g), size=16, mode="bilinear")
    data = base * 2 - 1
    train_config = AutoencoderTrainConfig(
        block_out_channels=[8, 16], norm_num_groups=4, steps=60, batch_size=16, lr=3e-3
    )
    metrics = train_autoencoder_kl(data, tmp_path / "vae", train_config)
    assert (tmp_path / "vae" / "config.json").is_file()
    assert metrics["psnr_db"] > 15
    tok = AutoencoderKLTokenizer(tmp_path / "vae")
    assert tok.downsample == (2, 2) and tok.latent_channels == 4
    mean, std = tok.encode_moments(data)
    assert mean.shape == (64, 4, 8, 8) and (std > 0).all()
    # the stored shift/scale give unit-variance latents
    assert 0.6 < tok.encode(data, sample=True).std().item() < 1.5
    recon = tok.decode(mean)
    assert recon.shape == data.shape
    assert torch.nn.functional.mse_loss(recon, data) < 0.05
