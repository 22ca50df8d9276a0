"""Run by test_eval_scale under torchrun (2 gloo ranks): `sample format=npz`'s drawing and gathering on a tiny
untrained model whose tokenizer is a fixed upsampling (no VAE to load, so the ranks start fast).

Usage: npz_worker.py ROOT OUT — writes OUT/samples_7x16x16x3.npz (ROOT: where the pipeline says it comes from).
"""

import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf
from worker_model import DIFFUSION, tiny_djepa

from djepa.cli.sample_npz import sample_npz
from djepa.engine import distributed
from djepa.engine.sampling import SamplingSettings
from djepa.modalities.image import ImageAdapter
from djepa.pipeline import Pipeline
from djepa.tokenizers.base import LatentTokenizer


class Upsample(LatentTokenizer):
    latent_channels, downsample = 1, (2, 2)

    def encode_moments(self, x):
        mean = F.avg_pool2d(x.float(), 2)
        return mean, torch.zeros_like(mean)

    def decode(self, z):
        return torch.tanh(F.interpolate(z, scale_factor=2))


def npz_pipeline(root: Path) -> Pipeline:
    """A grey 16x16 image pipeline over a seeded untrained model: the same weights in every process."""
    torch.manual_seed(0)
    adapter = ImageAdapter({"path": str(root / "tok")}, [2, 2], str(root / "cache"), image_size=16)
    adapter._tokenizer = Upsample()
    head = {**DIFFUSION, "sampling_steps": 3}
    config = OmegaConf.create({"modality": {"name": "image", "adapter": {"image_size": 16}}, "loss": {"head": head}})
    settings = SamplingSettings(2.0, 1.0, 2, "linear", "fp32")
    return Pipeline(tiny_djepa(head_config=head), adapter, ["a", "b", "c"], settings, config, root)


def npz_config(out: Path) -> DictConfig:
    keys = {"num_samples": 7, "shard_size": 2, "seed": 3, "prompt_class": None, "prime": None, "checkpoint": None}
    return OmegaConf.create({**keys, "out": str(out)})


def main(root: str, out: str) -> None:
    distributed.init_from_env("cpu")
    sample_npz(npz_pipeline(Path(root)), npz_config(Path(out)), {})
    distributed.shutdown()


if __name__ == "__main__":
    main(*sys.argv[1:3])
