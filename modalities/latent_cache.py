"""The on-disk latent cache: numpy memmaps written batch by batch (resumable), read memory-mapped in training.

A cache is a folder named by the adapter's cache key:
  mean.npy, std.npy   float32 [M, C, *grid]  posterior mean and std per item (flipped copies are items too)
  labels.npy          int64 [M]
  state.npy           uint8 [M]   0 pending, 1 encoded, 2 unusable file (skipped)
  layout.json         item count and latent shape the arrays were made for
  meta.json           written last: the cache is complete
Rows are written before their state flips, so an interrupted run leaves only whole rows marked done,
and the next run encodes the pending ones.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Subset
from tqdm import tqdm

from djepa.checkpoint import atomic_write_json
from djepa.modalities.folder import collate_items
from djepa.trainer import TokenData

PENDING, ENCODED, UNUSABLE = 0, 1, 2
FORMAT = 1


class LatentCache:
    def __init__(self, directory: Path):
        self.dir = Path(directory)
        self._arrays: dict[str, np.ndarray] = {}

    @property
    def complete(self) -> bool:
        return (self.dir / "meta.json").is_file()

    @property
    def meta(self) -> dict[str, Any]:
        return json.loads((self.dir / "meta.json").read_text())

    def prepare(self, items: int, latent_shape: Sequence[int]) -> bool:
        """Make the arrays for `items` latents of `latent_shape`, or keep a partial cache made for the same;
        True when resuming one."""
        layout = {"format": FORMAT, "items": int(items), "latent_shape": [int(s) for s in latent_shape]}
        path = self.dir / "layout.json"
        if path.is_file() and json.loads(path.read_text()) == layout and self._arrays_exist():
            return True
        self.dir.mkdir(parents=True, exist_ok=True)
        path.unlink(missing_ok=True)
        shape = (int(items), *layout["latent_shape"])
        # Sparse files: nothing is held in memory, untouched pages take no disk until written.
        for name in ("mean", "std"):
            np.lib.format.open_memmap(self.dir / f"{name}.npy", "w+", np.float32, shape).flush()
        np.lib.format.open_memmap(self.dir / "labels.npy", "w+", np.int64, (int(items),)).flush()
        np.lib.format.open_memmap(self.dir / "state.npy", "w+", np.uint8, (int(items),)).flush()
        atomic_write_json(path, layout)
        self._arrays = {}
        return False

    def _arrays_exist(self) -> bool:
        return all((self.dir / f"{n}.npy").is_file() for n in ("mean", "std", "labels", "state"))

    def _array(self, name: str) -> np.ndarray:
        if name not in self._arrays:
            self._arrays[name] = np.load(self.dir / f"{name}.npy", mmap_mode="r+")
        return self._arrays[name]

    def state(self) -> np.ndarray:
        return np.array(np.load(self.dir / "state.npy", mmap_mode="r"))

    def pending(self, rank: int = 0, world: int = 1) -> np.ndarray:
        """Indices still to encode, this rank's share (every world-th)."""
        return np.flatnonzero(self.state() == PENDING)[rank::world]

    def write(self, index: np.ndarray, labels: np.ndarray, ok: np.ndarray, mean: np.ndarray, std: np.ndarray) -> None:
        """Store one batch: latents of the usable items (in `index[ok]` order), labels of all, then their state."""
        good = index[ok]
        if len(good):
            for name, values in (("mean", mean), ("std", std)):
                array = self._array(name)
                array[good] = values
                array.flush()
        self._array("labels")[index] = labels
        self._array("labels").flush()
        state = self._array("state")
        state[index] = np.where(ok, ENCODED, UNUSABLE).astype(np.uint8)
        state.flush()

    def finish(self, meta: dict[str, Any]) -> None:
        self._arrays = {}
        atomic_write_json(self.dir / "meta.json", meta)

    def token_data(self, to_tokens: Callable[[torch.Tensor], torch.Tensor]) -> TokenData:
        """The encoded items as tokens, read from the memory-mapped arrays on demand (never loaded whole)."""
        rows = np.flatnonzero(self.state() == ENCODED)
        labels = torch.from_numpy(np.array(np.load(self.dir / "labels.npy", mmap_mode="r")[rows]))
        mean = MappedTokens(np.load(self.dir / "mean.npy", mmap_mode="r"), rows, to_tokens)
        std = MappedTokens(np.load(self.dir / "std.npy", mmap_mode="r"), rows, to_tokens)
        return TokenData(mean, std, labels)  # type: ignore[arg-type]  # indexable like a tensor


class MappedTokens:
    """Tokens [M, N, D] backed by a memory-mapped latent array: indexing reads and patchifies those rows only.

    Stands in for the tensor in TokenData (the trainer takes `mean[idx]` and `.shape`); the cache keeps
    latents, not tokens, so one cache serves every patch size.
    """

    def __init__(self, latents: np.ndarray, rows: np.ndarray, to_tokens: Callable[[torch.Tensor], torch.Tensor]):
        self.latents = latents
        self.rows = rows
        self.to_tokens = to_tokens
        probe = to_tokens(torch.zeros(1, *latents.shape[1:]))
        self.shape = torch.Size((len(rows), *probe.shape[1:]))
        self.dtype = torch.float32

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: Any) -> torch.Tensor:
        if isinstance(index, torch.Tensor):
            index = index.cpu().numpy()
        single = isinstance(index, (int, np.integer))
        picked = self.rows[[index] if single else index]
        tokens = self.to_tokens(torch.from_numpy(np.ascontiguousarray(self.latents[picked])))
        return tokens[0] if single else tokens

    def numel(self) -> int:
        return math.prod(self.shape)

    def materialize(self) -> torch.Tensor:
        """Every item in memory (small caches, tests)."""
        return self[np.arange(len(self))]


def encode_into_cache(
    cache: LatentCache,
    dataset: Dataset,
    todo: np.ndarray,
    encode: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]],
    device: torch.device,
    batch_size: int = 128,
    workers: int = 0,
    desc: str = "caching latents",
    progress: bool = True,
) -> int:
    """Encode the items `todo` of `dataset` into `cache` in batches on `device`; returns how many were read."""
    if len(todo) == 0:
        return 0
    loader = DataLoader(
        Subset(dataset, todo.tolist()),
        batch_size=batch_size,
        shuffle=False,
        num_workers=workers,
        pin_memory=device.type == "cuda",
        collate_fn=collate_items,
    )
    done = 0
    with tqdm(total=len(todo), desc=desc, unit="item", dynamic_ncols=True, disable=not progress) as bar:
        for batch in loader:
            media, ok = batch["media"], batch["ok"].numpy()
            mean = std = np.empty(0, np.float32)
            if len(media):
                with torch.inference_mode():
                    m, s = encode(media.to(device, non_blocking=True))
                mean, std = m.float().cpu().numpy(), s.float().cpu().numpy()
            cache.write(batch["index"].numpy(), batch["label"].numpy(), ok, mean, std)
            done += len(ok)
            bar.update(len(ok))
    return done
