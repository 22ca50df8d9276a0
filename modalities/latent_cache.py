"""The on-disk latent cache: .npy files written batch by batch (resumable), read row by row in training.

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
import os
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Subset
from tqdm import tqdm

from djepa.engine.data import TokenData
from djepa.io import atomic_write_json
from djepa.modalities.folder import collate_items

PENDING, ENCODED, UNUSABLE = 0, 1, 2
FORMAT = 1


class LatentCache:
    def __init__(self, directory: Path):
        self.dir = Path(directory)
        self._arrays: dict[str, np.memmap] = {}
        self._offsets: dict[str, int] = {}

    @property
    def complete(self) -> bool:
        return (self.dir / "meta.json").is_file()

    @property
    def meta(self) -> dict[str, Any]:
        return json.loads((self.dir / "meta.json").read_text())

    def prepare(self, items: int, latent_shape: Sequence[int]) -> bool:
        """Make the arrays for `items` latents of `latent_shape`, or keep a partial cache made for the same;
        True when resuming one."""
        latent = [int(s) for s in latent_shape]
        layout = {"format": FORMAT, "items": int(items), "latent_shape": latent}
        path = self.dir / "layout.json"
        if path.is_file() and json.loads(path.read_text()) == layout and self._arrays_exist() and not self.problem():
            return True
        self.dir.mkdir(parents=True, exist_ok=True)
        path.unlink(missing_ok=True)
        shape = (int(items), *latent)
        # Sparse files: nothing is held in memory, untouched pages take no disk until written.
        for name in ("mean", "std"):
            np.lib.format.open_memmap(self.dir / f"{name}.npy", "w+", np.float32, shape).flush()
        np.lib.format.open_memmap(self.dir / "labels.npy", "w+", np.int64, (int(items),)).flush()
        np.lib.format.open_memmap(self.dir / "state.npy", "w+", np.uint8, (int(items),)).flush()
        atomic_write_json(path, layout)
        self._arrays, self._offsets = {}, {}
        return False

    def _arrays_exist(self) -> bool:
        return all((self.dir / f"{n}.npy").is_file() for n in ("mean", "std", "labels", "state"))

    def problem(self) -> str | None:
        """What is wrong with the cache's files (a damaged or replaced array: another dtype or length, a pickled
        object array, which is never unpickled), or None when they fit its layout."""
        try:
            layout = json.loads((self.dir / "layout.json").read_text())
            items, shape = int(layout["items"]), tuple(int(s) for s in layout["latent_shape"])
        except (OSError, ValueError, KeyError, TypeError) as err:
            return f"layout.json unreadable ({err})"
        expected: dict[str, tuple[Any, tuple[int, ...]]] = {
            "mean": (np.float32, (items, *shape)),
            "std": (np.float32, (items, *shape)),
            "labels": (np.int64, (items,)),
            "state": (np.uint8, (items,)),
        }
        for name, (dtype, want) in expected.items():
            try:
                array = np.load(self.dir / f"{name}.npy", mmap_mode="r", allow_pickle=False)
            except (OSError, ValueError) as err:
                return f"{name}.npy unreadable ({str(err).splitlines()[0] if str(err) else type(err).__name__})"
            if array.dtype != dtype or tuple(array.shape) != want:
                return f"{name}.npy holds {array.dtype} {tuple(array.shape)}, not {np.dtype(dtype)} {want}"
        return None

    def clear(self) -> None:
        """Remove the cache's files (derived data: the next run encodes them again)."""
        self._arrays, self._offsets = {}, {}
        shutil.rmtree(self.dir, ignore_errors=True)

    def _offset(self, name: str) -> int:
        """Where the rows of a .npy file start (after its header)."""
        if name not in self._offsets:
            self._offsets[name] = int(np.load(self.dir / f"{name}.npy", mmap_mode="r").offset)
        return self._offsets[name]

    def _array(self, name: str) -> np.memmap:
        if name not in self._arrays:
            self._arrays[name] = np.load(self.dir / f"{name}.npy", mmap_mode="r+")
        return self._arrays[name]

    def state(self) -> np.ndarray:
        return np.array(np.load(self.dir / "state.npy", mmap_mode="r"))

    def labels(self) -> np.ndarray:
        return np.array(np.load(self.dir / "labels.npy", mmap_mode="r"))

    def pending(self, rank: int = 0, world: int = 1) -> np.ndarray:
        """Indices still to encode, this rank's share (every world-th)."""
        return np.flatnonzero(self.state() == PENDING)[rank::world]

    def write(self, index: np.ndarray, labels: np.ndarray, ok: np.ndarray, mean: np.ndarray, std: np.ndarray) -> None:
        """Store one batch: latents of the usable items (in `index[ok]` order), labels of all, then their state."""
        good = index[ok]
        if len(good):
            for name, values in (("mean", mean), ("std", std)):
                write_rows(self.dir / f"{name}.npy", self._offset(name), good, values)
        self._array("labels")[index] = labels
        self._array("labels").flush()
        state = self._array("state")
        state[index] = np.where(ok, ENCODED, UNUSABLE).astype(np.uint8)
        state.flush()

    def finish(self, meta: dict[str, Any]) -> None:
        self._arrays = {}
        atomic_write_json(self.dir / "meta.json", meta)

    def token_data(self, to_tokens: Callable[[torch.Tensor], torch.Tensor]) -> TokenData:
        """The encoded items as tokens, read from the cache files on demand (never loaded whole)."""
        rows = np.flatnonzero(self.state() == ENCODED)
        labels = torch.from_numpy(np.array(np.load(self.dir / "labels.npy", mmap_mode="r")[rows]))
        mean = CachedTokens(self.dir / "mean.npy", rows, to_tokens)
        std = CachedTokens(self.dir / "std.npy", rows, to_tokens)
        return TokenData(mean, std, labels)  # type: ignore[arg-type]  # indexable like a tensor


def write_rows(path: Path, offset: int, rows: np.ndarray, values: np.ndarray) -> None:
    """Write `values[i]` to row `rows[i]` of a .npy file with positioned writes, run by contiguous run.

    Plain writes, not a writable memmap: pages written through a mapping count in the process's
    resident memory, so a memmap writer's RSS grows with the dataset; these stay in the page cache only."""
    values = np.ascontiguousarray(values, dtype=np.float32)
    row_bytes = values[0].nbytes
    fd = os.open(path, os.O_WRONLY)
    try:
        start = 0
        for end in range(1, len(rows) + 1):
            if end == len(rows) or rows[end] != rows[end - 1] + 1:
                os.pwrite(fd, values[start:end].tobytes(), offset + int(rows[start]) * row_bytes)
                start = end
    finally:
        os.close(fd)


def read_into(fd: int, buffer: memoryview, offset: int) -> None:
    """Fill `buffer` from `offset` of file `fd` (a positioned read; short reads continue, end of file raises)."""
    done = 0
    while done < len(buffer):
        if hasattr(os, "preadv"):
            got = os.preadv(fd, [buffer[done:]], offset + done)
        else:  # no preadv (some macOS builds): a read and a copy
            data = os.pread(fd, len(buffer) - done, offset + done)
            buffer[done : done + len(data)] = data
            got = len(data)
        if got == 0:
            raise OSError(f"unexpected end of file at byte {offset + done} of a latent cache array")
        done += got


class CachedTokens:
    """Tokens [M, N, D] of a cached latent array, read on demand: indexing reads and patchifies those rows only.

    Stands in for the tensor in TokenData (the trainer takes `mean[idx]` and `.shape`); the cache keeps
    latents, not tokens, so one cache serves every patch size. Rows are read with positioned reads, not
    through a memory map: with the large page-cache folios of current kernels, 256 random 12 KB rows read
    through a mapping made ~150 MB resident, so a mapped reader's RSS grows to the whole cache within an
    epoch. The OS page cache still holds hot rows once for every rank on the machine.
    """

    def __init__(self, path: Path, rows: np.ndarray, to_tokens: Callable[[torch.Tensor], torch.Tensor]):
        header = np.load(path, mmap_mode="r")  # shape, dtype and data offset, then the mapping is dropped
        self.path = Path(path)
        self.item_shape = tuple(header.shape[1:])
        self.offset = int(header.offset)
        self.row_bytes = int(np.prod(self.item_shape)) * header.dtype.itemsize
        del header
        self.rows = rows
        self.to_tokens = to_tokens
        probe = to_tokens(torch.zeros(1, *self.item_shape))
        self.shape = torch.Size((len(rows), *probe.shape[1:]))
        self.dtype = torch.float32
        self._fd: int | None = None

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: Any) -> torch.Tensor:
        if isinstance(index, torch.Tensor):
            index = index.cpu().numpy()
        single = isinstance(index, (int, np.integer))
        picked = np.atleast_1d(self.rows[index])
        tokens = self.to_tokens(torch.from_numpy(self.read_rows(picked)))
        return tokens[0] if single else tokens

    def read_rows(self, picked: np.ndarray) -> np.ndarray:
        """Latent rows `picked` (any order, repeats allowed) as float32 [len(picked), *item_shape].

        The distinct rows are read in file order, each run of adjacent rows with one positioned read straight
        into the result's memory, then put in the asked order."""
        if self._fd is None:
            self._fd = os.open(self.path, os.O_RDONLY)
        rows, order = np.unique(np.asarray(picked, dtype=np.int64), return_inverse=True)
        out = np.empty((len(rows), *self.item_shape), np.float32)
        flat = out.reshape(len(rows), -1)
        starts = np.flatnonzero(np.diff(rows, prepend=-2) != 1).tolist() + [len(rows)]
        for start, end in zip(starts[:-1], starts[1:]):
            view = memoryview(flat[start:end].data).cast("B")  # rows start..end-1 of `out`, written in place
            read_into(self._fd, view, self.offset + int(rows[start]) * self.row_bytes)
        return out[order.reshape(-1)]

    def __del__(self) -> None:
        fd = getattr(self, "_fd", None)
        if fd is not None:
            os.close(fd)

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
