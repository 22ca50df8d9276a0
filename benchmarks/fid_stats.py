"""Reference statistics for the standard FID, computed once per folder and weights file and cached:
`python -m djepa.benchmarks.fid_stats data_dir=DIR standard_weights=PATH [reference=DIR_OR_NPZ]`.

`data_dir` is an image folder (root/<class>/<files>, or the files straight in it), read as RGB, each image's short
side resized to `image_size` and centre-cropped as training reads it, or an `.npz` whose `arr_0` holds uint8 images
[N, H, W, 3] (what `sample format=npz` writes, and ADM's reference batches), read as they are, a chunk at a time.
Its Inception statistics (mean and covariance of the 2048-d pool features, plus up to 10,000 features for
precision/recall) go to HOME/fid_stats/<key>.pt, where the key is a hash of the folder's contents (each file's
name, size and modification time, as the latent cache's) and of the weights file's bytes, and the image size: a
second call with the same folder and weights reads the file instead of computing. `evaluate` and the benchmark
use the statistics cached for the run's `modality.adapter.data_dir` at its image size in place of their
2,000-item real subset. With `reference=`, the statistics of that folder or `.npz` too (cached alike), and the
FID, precision and recall of data_dir against it, as ADM's evaluation suite prints them.
"""

from __future__ import annotations

import hashlib
import json
import sys
import zipfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig
from torch.utils.data import DataLoader, Subset
from tqdm import tqdm

from djepa import schema
from djepa.benchmarks.standard import FeatureStats, inception_network, weights_file
from djepa.cli.config import cli_errors, compose_config
from djepa.engine.runtime import resolve_device
from djepa.errors import UsageError
from djepa.io import atomic_write, sha256
from djepa.modalities.folder import collate_items
from djepa.modalities.image import image_folder_dataset, scan_image_folder

CACHE = "fid_stats"
FEATURES = "inception-v3-pool-2048"  # what the statistics are of; part of the key


def source_fingerprint(path: Path) -> str:
    """What the statistics depend on in a folder (FolderScan's fingerprint) or an `.npz` (name, size, mtime)."""
    if path.is_file():
        stat = path.stat()
        return hashlib.sha256(f"{path.resolve()}\0{stat.st_size}\0{stat.st_mtime_ns}".encode()).hexdigest()[:32]
    return scan_image_folder(path).fingerprint


def stats_key(source: Path, weights: Path, image_size: int) -> str:
    parts = [FEATURES, source_fingerprint(source), sha256(weights), str(image_size)]
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:32]


def cache_path(home: str | Path, source: Path, weights: Path, image_size: int) -> Path:
    return Path(home) / CACHE / f"{stats_key(source, weights, image_size)}.pt"


def check_source(value: Any, key: str) -> Path:
    path = Path(str(value)).expanduser()
    if path.is_file() and path.suffix != ".npz":
        raise UsageError(f"{key}={path}: expected an image folder or an .npz of images (arr_0 uint8 [N, H, W, 3])")
    if not path.exists():
        raise UsageError(f"{key}={path} does not exist")
    return path


def npz_images(path: Path, batch: int) -> Iterator[torch.Tensor]:
    """`arr_0` of an `.npz` as uint8 [n, 3, H, W] batches, streamed from the archive (never all in memory)."""
    try:
        archive = zipfile.ZipFile(path)
        member = archive.open("arr_0.npy")
    except (OSError, KeyError, zipfile.BadZipFile) as err:
        raise UsageError(f"{path} is not an .npz holding arr_0 ({err})") from err
    with archive, member:
        version = np.lib.format.read_magic(member)
        if version not in ((1, 0), (2, 0)):
            raise UsageError(f"{path}: arr_0 is in .npy format {version}; save it with np.savez (format 1.0 or 2.0)")
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = read_header(member)
        if dtype != np.uint8 or len(shape) != 4 or shape[-1] != 3 or fortran:
            raise UsageError(f"{path}: arr_0 must be uint8 [N, H, W, 3] in C order, got {dtype} {list(shape)}")
        row = int(np.prod(shape[1:]))
        for start in range(0, shape[0], batch):
            n = min(batch, shape[0] - start)
            data = np.frombuffer(member.read(n * row), dtype=np.uint8)
            yield torch.from_numpy(data.reshape(n, *shape[1:]).copy()).permute(0, 3, 1, 2)


def folder_images(path: Path, image_size: int, batch: int, workers: int, seed: int) -> Iterator[torch.Tensor]:
    """A folder's images as uint8 RGB [n, 3, S, S] batches in a seeded random order (so the features kept for
    precision/recall are a random subset); unreadable files are skipped."""
    dataset = image_folder_dataset(scan_image_folder(path), image_size, 3)
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed)).tolist()
    loader = DataLoader(Subset(dataset, order), batch_size=batch, num_workers=workers, collate_fn=collate_items)
    for items in loader:
        if len(items["media"]):
            yield ((items["media"].float() + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)


def compute_stats(cfg: DictConfig, source: Path, weights: Path, device: torch.device) -> FeatureStats:
    net = inception_network(weights, device)
    if source.is_file():
        images = npz_images(source, int(cfg.batch_size))
    else:
        images = folder_images(source, int(cfg.image_size), int(cfg.batch_size), int(cfg.workers), int(cfg.seed))

    def features() -> Iterator[torch.Tensor]:
        with torch.no_grad():
            for batch in tqdm(images, desc=f"features of {source.name}", unit="batch", leave=False):
                yield net(batch.to(device)).float()

    return FeatureStats.of(features(), keep=int(cfg.pr_items))


def save_stats(path: Path, stats: FeatureStats, meta: dict[str, Any]) -> None:
    tensors = {"total": stats.total, "outer": stats.outer, "kept": stats.kept, "count": torch.tensor(stats.count)}
    atomic_write(path, lambda tmp: torch.save({**tensors, "meta": json.dumps(meta)}, tmp))


def load_stats(path: Path) -> tuple[FeatureStats, dict[str, Any]]:
    """A cached statistics file (tensors and a JSON string only: loaded weights-only, no pickled code runs)."""
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
        stats = FeatureStats(data["total"], data["outer"], int(data["count"]), data["kept"])
        return stats, json.loads(data["meta"])
    except Exception as err:  # a torn or foreign file: computed again
        raise ValueError(f"{path} is not a statistics file fid_stats wrote: {err}") from err


def reference_stats(
    cfg: DictConfig, source: Path, weights: Path, device: torch.device
) -> tuple[FeatureStats, Path, bool]:
    """The statistics of `source`: from the cache when they are there (True), else computed and cached."""
    path = cache_path(cfg.home, source, weights, int(cfg.image_size))
    # What else shapes the file: the features kept for precision/recall (how many, and a folder's read order).
    kept = {"pr_items": int(cfg.pr_items), "seed": int(cfg.seed)}
    if path.is_file():
        try:
            stats, found = load_stats(path)
            if all(found.get(k) == v for k, v in kept.items()):
                return stats, path, True
        except ValueError as err:
            tqdm.write(f"{err}; computing it again")
    stats = compute_stats(cfg, source, weights, device)
    meta = {"source": str(source.resolve()), "weights": str(weights.resolve()), "image_size": int(cfg.image_size)}
    save_stats(path, stats, meta | kept | {"items": stats.count})
    return stats, path, False


def cached_reference(home: str | Path, data_dir: str | None, weights: Path, image_size: int) -> Path | None:
    """The cached statistics of a run's data folder at its image size, when fid_stats has computed them."""
    if not data_dir or not Path(data_dir).is_dir():
        return None
    path = cache_path(home, Path(data_dir), weights, image_size)
    return path if path.is_file() else None


def run(cfg: DictConfig) -> dict[str, Any]:
    weights = weights_file(cfg.standard_weights)
    sources = {"data_dir": check_source(cfg.data_dir, "data_dir")}
    if cfg.reference:
        sources["reference"] = check_source(cfg.reference, "reference")
    device = resolve_device(cfg.device)
    result: dict[str, Any] = {"standard_weights": str(weights)}
    found: dict[str, FeatureStats] = {}
    for key, source in sources.items():
        stats, path, cached = reference_stats(cfg, source, weights, device)
        found[key] = stats
        result[key] = {"path": str(source), "items": stats.count, "stats": str(path), "cached": cached}
    if "reference" in found:
        ref, samples = found["reference"], found["data_dir"]
        result |= {"fid": ref.fid(samples), **ref.precision_recall(samples.kept)}
    print(json.dumps(result, indent=2))
    return result


def usage() -> str:
    """--help: what the driver does and its keys, from the schema."""
    lines = ["usage: python -m djepa.benchmarks.fid_stats [key=value ...]", "", (__doc__ or "").strip(), "", "keys:"]
    for key in schema.keys(schema.FidStatsConfig):
        default = "REQUIRED" if key.default == "???" else key.default
        lines.append(f"  {key.name}={default}".ljust(34) + f"  {key.help}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "-h" in argv or "--help" in argv:
        print(usage())
        return
    with cli_errors():
        run(compose_config(argv, "fid_stats"))


if __name__ == "__main__":
    main()
