"""Defaults that follow the user's folder: its own tokenizer location, a longer tokenizer for RGB images, and a
64x64 RGB folder that trains and samples through the plain commands."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from djepa.cli import sample, train
from djepa.cli.config import RGB_TOKENIZER_STEPS, compose_config


def write_rgb_folder(root: Path, size: int = 64, per_class: int = 6) -> Path:
    """Two classes, a bar and a ring, in random ink on random ground (colour independent of the class)."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:size, :size] / size - 0.5
    shapes = {"bar": np.abs(xx) < 0.1, "ring": np.abs(np.hypot(xx, yy) - 0.3) < 0.07}
    for name, mask in shapes.items():
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            ink, ground = rng.random(3), rng.random(3)
            pixels = np.where(mask[..., None], ink, ground)
            Image.fromarray((pixels * 255).astype(np.uint8)).save(root / name / f"{i}.png")
    return root


def test_a_user_folder_gets_its_own_tokenizer_location_and_rgb_a_longer_tokenizer(tmp_path):
    home, data = tmp_path / "home", tmp_path / "shapes"
    embedded = compose_config(["modality=image", f"home={home}"])
    assert Path(embedded.modality.adapter.tokenizer.path) == home / "tokenizers" / "image"
    grey = compose_config(["modality=image", f"home={home}", f"modality.adapter.data_dir={data}"])
    rgb = compose_config(
        ["modality=image", f"home={home}", f"modality.adapter.data_dir={data}", "modality.adapter.channels=3"]
    )
    grey_path, rgb_path = Path(grey.modality.adapter.tokenizer.path), Path(rgb.modality.adapter.tokenizer.path)
    assert grey_path.parent == rgb_path.parent == home / "tokenizers"
    assert grey_path.name.startswith("image-shapes-") and grey_path != rgb_path  # channels are part of its key
    assert embedded.tokenizer.steps == grey.tokenizer.steps < rgb.tokenizer.steps == RGB_TOKENIZER_STEPS
    # RGB image folders sample as the video default does: flow head, constant guidance, temperature 0.7
    assert "Flow" in rgb.loss.head._target_ and "Diffusion" in grey.loss.head._target_
    assert (rgb.sample.guidance_schedule, rgb.sample.temperature, rgb.train.steps) == ("constant", 0.7, 2000)
    assert grey.train.steps == embedded.train.steps < 2000
    assert (
        (grey.sample.guidance_schedule, grey.sample.temperature)
        == (embedded.sample.guidance_schedule, embedded.sample.temperature)
        == ("linear", 0.85)
    )
    mine = compose_config(
        [
            "modality=image",
            f"home={home}",
            f"modality.adapter.data_dir={data}",
            "modality.adapter.channels=3",
            f"modality.adapter.tokenizer.path={home}/tokenizers/image",
            "tokenizer.steps=7",
            "loss=diffusion",
            "sample.temperature=0.9",
        ]
    )
    assert Path(mine.modality.adapter.tokenizer.path) == home / "tokenizers" / "image" and mine.tokenizer.steps == 7
    assert (
        "Diffusion" in mine.loss.head._target_
        and mine.sample.temperature == 0.9
        and mine.sample.guidance_schedule == "constant"
    )


@pytest.mark.slow
def test_a_64px_rgb_folder_trains_with_its_own_tokenizer_and_samples(tmp_path):
    home, run_dir, out = tmp_path / "home", tmp_path / "run", tmp_path / "out"
    data = write_rgb_folder(tmp_path / "shapes")
    common = [
        "modality=image",
        f"home={home}",
        f"modality.adapter.data_dir={data}",
        "modality.adapter.channels=3",
        "modality.adapter.image_size=64",
        "tokenizer.steps=2",
        "tokenizer.batch_size=4",
    ]
    # a grey tokenizer at the embedded default's location must not be picked up by the RGB folder
    (home / "tokenizers" / "image").mkdir(parents=True)
    tiny = ["model=tiny", "train.steps=2", "train.batch_size=4", "train.checkpoint_every=2", "train.preview_every=0"]
    train.run(
        compose_config(common + tiny + [f"run_dir={run_dir}", "sample.num_steps=2", "loss.head.sampling_steps=2"])
    )
    tokenizers = sorted(p.name for p in (home / "tokenizers").iterdir())
    assert tokenizers[0] == "image" and tokenizers[1].startswith("image-shapes-") and len(tokenizers) == 2
    written = sample.run(
        sample.compose_config(common + [f"run_dir={run_dir}", "num_samples=2", f"out={out}", "sample.num_steps=2"])
    )
    assert sorted(p.name for p in written) == ["bar_000.png", "bar_001.png", "ring_002.png", "ring_003.png"]
    image = Image.open(written[0])
    assert image.size == (64, 64) and image.mode == "RGB"
