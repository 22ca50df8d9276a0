"""Run by test_latent_cache under torchrun: every rank caches its share of an image folder (shard=True).

Usage: cache_worker.py DATA_DIR CACHE_DIR OUT — writes OUT.rank<r> with what the rank encoded and read.
"""

import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

from djepa.engine import distributed
from djepa.modalities.image import ImageAdapter
from djepa.tokenizers.base import LatentTokenizer


class PoolTokenizer(LatentTokenizer):
    def __init__(self, path):
        self.path = path
        self.latent_channels, self.downsample, self.encoded = 3, (2, 2), 0

    def encode_moments(self, x):
        self.encoded += len(x)
        mean = F.avg_pool2d(x.float(), 2)
        return mean, torch.full_like(mean, 0.1)

    def decode(self, z):
        return F.interpolate(z, scale_factor=2)


def main(data_dir: str, cache_dir: str, out: str) -> None:
    distributed.init_from_env("cpu")
    weights = Path(cache_dir) / "weights.bin"
    adapter = ImageAdapter({"path": str(weights)}, [2, 2], cache_dir, image_size=8, channels=3, data_dir=data_dir)
    adapter._tokenizer = PoolTokenizer(weights)
    data = adapter.token_data(batch_size=2, device="cpu", workers=0, shard=True)
    result = {
        "encoded": adapter.tokenizer.encoded,
        "items": len(data),
        "labels": data.labels.tolist(),
        "sum": float(data.mean.materialize().sum()),
    }
    Path(f"{out}.rank{distributed.rank()}").write_text(json.dumps(result))
    distributed.shutdown()


if __name__ == "__main__":
    main(*sys.argv[1:4])
