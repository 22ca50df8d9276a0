"""The trainer's host data path at scale: Trainer.batch (rows read from a latent cache, posterior noise, masks)
on one simulated rank of a torchrun job, on a synthetic cache of `items` rows.

    python -m djepa.benchmarks.experiments.data_path cache=DIR [items=1000000] [world=8] [steps=20] [batch=2048]

Defaults: 1,000,000 items of ImageNet-256 latents (16 x 16 x 16, 256 tokens of 16), the last rank of 8, 20 steps,
the global batch 2048. The cache arrays are sparse files (written only once, nothing on disk but the
labels): the figure is the read path's CPU cost, not a disk's. Prints ms per step and rows per second.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from djepa.benchmarks.experiments import key_values
from djepa.cli.config import cli_errors
from djepa.engine import distributed
from djepa.engine.trainer import EpochSampler, TrainConfig, Trainer
from djepa.errors import UsageError
from djepa.modalities.base import patchify
from djepa.modalities.latent_cache import ENCODED, LatentCache

LATENT = (16, 16, 16)


def measure(cache_dir: Path, items: int, world: int, steps: int, batch: int) -> dict[str, float]:
    """ms per step and rows per second of Trainer.batch on rank world - 1 (the first step, which draws the epoch's
    permutation and opens the files, not counted)."""
    cache = LatentCache(cache_dir)
    if not cache.complete:
        cache.prepare(items, LATENT)
        state = np.lib.format.open_memmap(cache_dir / "state.npy", "r+")
        state[:] = ENCODED
        state.flush()
        cache.finish({"items": items})
    config = TrainConfig(steps=steps + 1, batch_size=batch, precision="fp32")
    trainer = Trainer.__new__(Trainer)  # only the data path: no model
    trainer.config, trainer.token_grid, trainer.time_axis = config, None, None
    trainer.data = cache.token_data(lambda z: patchify(z, (1, 1)))
    trainer.sampler = EpochSampler(len(trainer.data), config.seed)
    rank, world_size = distributed.rank, distributed.world_size
    distributed.rank, distributed.world_size = (lambda: world - 1), (lambda: world)
    try:
        trainer.batch(0)
        start = time.perf_counter()
        for step in range(1, steps + 1):
            tokens = trainer.batch(step)[0]
        elapsed = time.perf_counter() - start
    finally:
        distributed.rank, distributed.world_size = rank, world_size
    return {
        "rows_per_step": tokens.shape[0],
        "ms_per_step": 1000 * elapsed / steps,
        "rows_per_s": steps * tokens.shape[0] / elapsed,
    }


def main(argv: Sequence[str] | None = None) -> None:
    defaults = dict(cache="", items="1000000", world="8", steps="20", batch="2048")
    with cli_errors():
        args = key_values(sys.argv[1:] if argv is None else argv, defaults)
        if not args["cache"]:
            raise UsageError("cache=DIR is required: where the synthetic cache is made (sparse files)")
        items, world, steps, batch = (int(args[k]) for k in ("items", "world", "steps", "batch"))
        result = measure(Path(args["cache"]), items, world, steps, batch)
        print(
            f"{items:,} cached rows, rank {world - 1} of {world}, global batch {batch}: {result['rows_per_step']} "
            f"rows per step, {result['ms_per_step']:.1f} ms per step, {result['rows_per_s']:,.0f} rows/s"
        )


if __name__ == "__main__":
    main()
