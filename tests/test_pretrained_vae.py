"""A real pretrained VAE's shapes through the real commands: an SD-VAE-shaped AutoencoderKL (random weights, the
real config) on a 256x256 RGB folder: cache latents, train, sample, decode."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from djepa.cli import sample, train
from djepa.cli.config import compose_config

# stabilityai/sd-vae-ft-mse's config.json (the SD 1.x VAE): 83.7M parameters, 8x downsampling, 4 latent channels.
SD_VAE_CONFIG = dict(
    in_channels=3,
    out_channels=3,
    down_block_types=["DownEncoderBlock2D"] * 4,
    up_block_types=["UpDecoderBlock2D"] * 4,
    block_out_channels=[128, 256, 512, 512],
    layers_per_block=2,
    act_fn="silu",
    latent_channels=4,
    norm_num_groups=32,
    sample_size=256,
    scaling_factor=0.18215,
)


def write_sd_vae(path: Path) -> Path:
    import torch
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    vae = AutoencoderKL(**SD_VAE_CONFIG)
    assert 83e6 < sum(p.numel() for p in vae.parameters()) < 84e6
    vae.save_pretrained(path)
    return path


def write_photo_folder(root: Path, size: int = 256, per_class: int = 2) -> Path:
    """Two classes of smooth random colour fields, JPEG as ImageNet's are, one of them not square."""
    rng = np.random.default_rng(0)
    for c, name in enumerate(("n01440764", "n01443537")):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            coarse = Image.fromarray((rng.random((4, 4, 3)) * 255).astype(np.uint8))
            shape = (size + 64, size) if (c, i) == (0, 0) else (size, size)  # resized and centre-cropped
            coarse.resize(shape, Image.BICUBIC).save(root / name / f"{name}_{i}.JPEG", quality=90)
    return root


@pytest.mark.slow
def test_sd_vae_shaped_autoencoder_kl_on_a_256px_folder_caches_trains_samples_and_decodes(tmp_path):
    home, run_dir, out = tmp_path / "home", tmp_path / "run", tmp_path / "out"
    vae = write_sd_vae(tmp_path / "sd-vae")
    data = write_photo_folder(tmp_path / "imagenet" / "train")
    common = [
        "modality=image",
        f"home={home}",
        f"modality.adapter.data_dir={data}",
        "modality.adapter.channels=3",
        "modality.adapter.image_size=256",
        f"modality.adapter.tokenizer.path={vae}",
    ]
    cfg = compose_config(common)
    assert cfg.modality.adapter.patch_size == [2, 2]  # 32x32x4 latents -> 16x16 = 256 tokens of dim 16, as MAR
    tiny = ["model=tiny", "train.steps=2", "train.batch_size=4", "train.log_every=1", "train.checkpoint_every=2"]
    fast = ["train.preview_every=0", "sample.preview_per_class=0", "sample.num_steps=2", "loss.head.sampling_steps=2"]
    train.run(compose_config(common + tiny + fast + [f"run_dir={run_dir}"]))

    # no tokenizer was trained: the SD-VAE-shaped one encoded the folder into one 32x32x4 latent per image
    assert not (home / "tokenizers").exists()
    (cache,) = (home / "cache").iterdir()
    assert json.loads((cache / "layout.json").read_text())["latent_shape"] == [4, 32, 32]
    meta = json.loads((cache / "meta.json").read_text())
    assert meta["items"] == 4 and meta["skipped_files"] == 0
    mean = np.load(cache / "mean.npy")
    assert mean.shape == (4, 4, 32, 32) and np.isfinite(mean).all() and mean.std() > 0
    assert (run_dir / "checkpoints" / "step_0000002").is_dir()
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in records if "loss" in r]
    assert len(losses) == 2 and np.isfinite(losses).all()

    written = sample.run(
        sample.compose_config(common + [f"run_dir={run_dir}", "num_samples=1", f"out={out}", "sample.num_steps=2"])
    )
    assert [p.name for p in written] == ["n01440764_000.png", "n01443537_001.png"]
    for path in written:
        image = Image.open(path)
        assert image.size == (256, 256) and image.mode == "RGB"
