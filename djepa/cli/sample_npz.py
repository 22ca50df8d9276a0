"""`sample format=npz`: many images as one ImageNet-style `.npz`, drawn in shards shared over torchrun ranks.

The file is what ADM's and MAR's evaluation suites read: `arr_0` uint8 [N, H, W, 3] (grey images repeated to
three channels) and `arr_1` the class ids. Sample i has class i % num_classes (MAR's balanced classes; every
item `prompt_class` when one is given) and lies in shard i // shard_size, which is drawn in one call seeded by
(seed, shard): the same seed and shard_size give the same file on any number of ranks. Rank r draws the shards
k with k % world_size == r and writes each atomically to OUT/shards/, beside a manifest of what is being drawn;
started again after a kill, the same command draws only the shards that are missing (a different sampling into
the same OUT is refused). Rank 0 then streams the shards into the `.npz` in order, one shard in memory at a
time, writes the manifest beside it and removes the shards.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import shutil
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from djepa import schema
from djepa.engine import distributed
from djepa.errors import UsageError, writing
from djepa.io import atomic_write, atomic_write_json
from djepa.pipeline import Pipeline

SHARDS = "shards"
MANIFEST = "manifest.json"


@dataclass(frozen=True)
class ShardPlan:
    """`num_samples` items cut into shards of `shard_size` (the last one may be shorter)."""

    num_samples: int
    shard_size: int

    @property
    def count(self) -> int:
        return math.ceil(self.num_samples / self.shard_size)

    def items(self, shard: int) -> range:
        return range(shard * self.shard_size, min(self.num_samples, (shard + 1) * self.shard_size))

    def of_rank(self, rank: int, world: int) -> list[int]:
        """The shards rank `rank` of `world` draws: every world-th, so no shard is drawn twice or left out."""
        return list(range(rank, self.count, world))


def shard_seed(seed: int, shard: int) -> int:
    """The seed of one shard's draws: a function of (seed, shard) alone, never of the rank that draws it."""
    return (seed * 1_000_003 + shard) % schema.MAX_SEED


def item_labels(items: range, num_classes: int, prompt: int | None) -> list[int]:
    """Class of each item: i % num_classes (as MAR samples its 50,000), or the one prompted class."""
    return [prompt if prompt is not None else i % num_classes for i in items]


def rgb_uint8(media: torch.Tensor) -> np.ndarray:
    """[N, C, H, W] in [-1, 1], C = 1 or 3 -> uint8 [N, H, W, 3] (grey repeated to three channels)."""
    x = ((media.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    return np.ascontiguousarray(x.permute(0, 2, 3, 1).numpy())


def shard_path(folder: Path, shard: int) -> Path:
    return folder / f"shard_{shard:06d}.npy"


def finished(path: Path, rows: int) -> bool:
    """A shard written in full: atomic writes leave either the whole file or none, and its rows are checked."""
    try:
        array = np.load(path, mmap_mode="r")
    except (OSError, ValueError):
        return False
    return array.dtype == np.uint8 and array.ndim == 4 and array.shape[0] == rows and array.shape[-1] == 3


def save_npy(path: str, array: np.ndarray) -> None:
    with open(path, "wb") as f:  # a file object: np.save would add ".npy" to a temporary name
        np.save(f, array)


def npz_name(num_samples: int, height: int, width: int) -> str:
    """ADM's naming: samples_<N>x<H>x<W>x3.npz."""
    return f"samples_{num_samples}x{height}x{width}x3.npz"


def manifest(pipe: Pipeline, cfg: DictConfig, settings: dict[str, Any], prompt: int | None) -> dict[str, Any]:
    """What decides the samples: the model, the sampling settings (the run's with the user's on top), the head's
    sampling keys, the seed, the count and the shard size. Shards drawn under another manifest are not mixed in."""
    head = pipe.config.loss.head if "loss" in pipe.config else {}
    return {
        "source": str(Path(pipe.source).resolve()),
        "step": pipe.step,
        "checkpoint": None if cfg.checkpoint is None else str(Path(cfg.checkpoint).resolve()),
        "settings": dataclasses.asdict(pipe.settings(**settings)),
        "head": OmegaConf.to_container(head, resolve=True) if OmegaConf.is_config(head) else dict(head),
        "seed": int(cfg.seed),
        "num_samples": int(cfg.num_samples),
        "shard_size": int(cfg.shard_size),
        "prompt_class": prompt,
    }


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def check_out(out: Path, wanted: dict[str, Any], name: str) -> bool:
    """True when OUT already holds the finished `.npz` of this manifest; a UsageError when OUT holds shards or an
    `.npz` of another sampling (mixing them would give a file no single setting made)."""
    for path in (out / SHARDS / MANIFEST, (out / name).with_suffix(".json")):
        found = _read_json(path) if path.is_file() else None
        if path.is_file() and found != wanted:
            changed = sorted(k for k in wanted if not isinstance(found, dict) or found.get(k) != wanted[k])
            raise UsageError(
                f"out={out} holds {path.name} of another sampling (differs in {', '.join(changed) or 'format'}): "
                "use another out, or delete it to start again"
            )
    return (out / name).is_file() and (out / name).with_suffix(".json").is_file()


def write_npz(path: Path, shards: Sequence[Path], shape: tuple[int, ...], labels: np.ndarray) -> None:
    """`arr_0` (uint8 `shape`) streamed from the shards in order, and `arr_1` the labels, as np.savez lays them
    out; written atomically."""

    def write(tmp: str) -> None:
        header = {"descr": np.lib.format.dtype_to_descr(np.dtype(np.uint8)), "fortran_order": False, "shape": shape}
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as archive:
            with archive.open("arr_0.npy", "w", force_zip64=True) as f:
                np.lib.format.write_array_header_1_0(f, header)
                for shard in shards:
                    f.write(np.ascontiguousarray(np.load(shard)).tobytes())
            with archive.open("arr_1.npy", "w", force_zip64=True) as f:
                np.lib.format.write_array(f, labels)

    atomic_write(path, write)


def sample_npz(pipe: Pipeline, cfg: DictConfig, settings: dict[str, Any]) -> Path:
    """Draw this rank's missing shards, then (rank 0) gather them into OUT/samples_<N>x<H>x<W>x3.npz."""
    if pipe.modality != "image":
        raise UsageError(f"format=npz writes images (ADM/MAR's evaluation suites); this run is {pipe.modality}")
    if cfg.get("prime"):
        raise UsageError("prime: format=npz draws whole images; leave prime out")
    prompt = None if cfg.prompt_class is None else pipe.class_index(cfg.prompt_class, "prompt_class")
    plan = ShardPlan(int(cfg.num_samples), int(cfg.shard_size))
    out = Path(cfg.out)
    folder = out / SHARDS
    wanted = manifest(pipe, cfg, settings, prompt)
    size = int(pipe.config.modality.adapter.image_size)
    name = npz_name(plan.num_samples, size, size)
    done = check_out(out, wanted, name)  # every rank reads; none writes before all have checked
    distributed.barrier()
    if done:
        if distributed.is_main():
            tqdm.write(f"{out / name} is already complete (seed {cfg.seed})")
        return out / name
    with writing("out", out):
        if distributed.is_main() and not (folder / MANIFEST).is_file():
            atomic_write_json(folder / MANIFEST, wanted)
        distributed.barrier()
        draw_shards(pipe, plan, folder, int(cfg.seed), prompt, settings)
        distributed.barrier()  # every shard is on disk before rank 0 reads them
        if distributed.is_main():
            gather(plan, folder, out / name, len(pipe.class_names), prompt)
        distributed.barrier()
    return out / name


def draw_shards(
    pipe: Pipeline, plan: ShardPlan, folder: Path, seed: int, prompt: int | None, settings: dict[str, Any]
) -> None:
    """This rank's shards that are not on disk yet, each drawn in one seeded call and written atomically."""
    rank, world = distributed.rank(), distributed.world_size()
    mine = plan.of_rank(rank, world)
    todo = [k for k in mine if not finished(shard_path(folder, k), len(plan.items(k)))]
    total = sum(len(plan.items(k)) for k in mine)
    bar = tqdm(
        total=total,
        initial=total - sum(len(plan.items(k)) for k in todo),
        unit="img",
        desc=f"sampling (rank 0 of {world})" if world > 1 else "sampling",
        dynamic_ncols=True,
        disable=rank != 0,
    )
    num_classes = len(pipe.class_names)
    for k in todo:
        items = plan.items(k)
        labels = item_labels(items, num_classes, prompt)
        result = pipe(labels, 1, seed=shard_seed(seed, k), batch_size=plan.shard_size, **settings)
        atomic_write(shard_path(folder, k), functools.partial(save_npy, array=rgb_uint8(result.media)))
        bar.update(len(items))
    bar.close()


def gather(plan: ShardPlan, folder: Path, path: Path, num_classes: int, prompt: int | None) -> None:
    """Rank 0: the shards, all present, into one `.npz`; the manifest beside it; the shards removed."""
    shards = [shard_path(folder, k) for k in range(plan.count)]
    missing = [p.name for k, p in enumerate(shards) if not finished(p, len(plan.items(k)))]
    if missing:  # a rank ended without drawing its share: nothing is gathered, the shards stay for a rerun
        raise RuntimeError(f"{folder}: {len(missing)} shards missing ({missing[0]}, ...): run the same command again")
    shape = (plan.num_samples, *np.load(shards[0], mmap_mode="r").shape[1:])
    labels = np.asarray(item_labels(range(plan.num_samples), num_classes, prompt), dtype=np.int64)
    write_npz(path, shards, shape, labels)
    atomic_write_json(path.with_suffix(".json"), json.loads((folder / MANIFEST).read_text()))
    shutil.rmtree(folder)
    tqdm.write(f"wrote {path}: arr_0 uint8 {list(shape)}, arr_1 class ids")
