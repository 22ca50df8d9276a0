"""Memory at scale: does `train` on a user folder use the same memory for 2,000 items as for 20,000?

    python -m djepa.benchmarks.experiments.data_scale out=DIR [sizes=[2000,20000]] [steps=200] [modality=image]
        [any train override: model=..., train.batch_size=..., modality.adapter.tokenizer.path=VAE, ...]

For each size it writes a generated class folder (DIR/data/<modality>-<size>/<digit>/...: PNGs of the embedded
MNIST digits at random places for images, MP4s of moving digits for video, through the modality's own writer),
then runs the real commands in child processes, one per phase:
- tokenizer: `train_tokenizer` on the folder, when the run would train its default tokenizer (no
  `modality.adapter.tokenizer.path` given); it reads at most `modality.adapter.memory_items` items;
- caching: `train` with train.steps=1 on a fresh latent cache: it encodes the whole folder (and takes one step);
- training: `train` for `steps` steps on the finished cache (a fresh run_dir, the cache reused).
Per phase: the child's peak RSS (the kernel's ru_maxrss through wait4: the largest single process, DataLoader
workers counted as their own maxima, not added), the peak of the whole process tree's proportional set size
(PSS, sampled every 0.2 s from /proc, Linux only), wall time and items/s (caching: encoded items over the time
between the cache's layout.json and meta.json; training: batch x steps per second over the steady steps of
metrics.jsonl). The largest size passes when its peak memory is at most BOUND times the smallest's.
Writes DIR/results.json and DIR/summary.md.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf

from djepa.cli.config import cli_errors, compose_config
from djepa.errors import UsageError
from djepa.io import atomic_write_json

BOUND = 1.25  # the largest folder's peak memory over the smallest's
DEFAULTS: dict[str, Any] = {"out": None, "sizes": [2000, 20000], "steps": 200}
PHASES = ("tokenizer", "caching", "training")
RECIPE_FILE = "data_scale.json"


# ----------------------------------------------------------------------------------------------- arguments


def parse(argv: Sequence[str]) -> tuple[dict[str, Any], list[str]]:
    """The benchmark's own keys (out, sizes, steps) and the overrides passed on to train."""
    args = dict(DEFAULTS)
    rest = []
    for item in argv:
        key, sep, value = item.partition("=")
        if not sep or key not in DEFAULTS:
            rest.append(item)
        elif key == "out":
            args["out"] = value
        elif key == "sizes":
            try:
                args["sizes"] = sorted({int(s) for s in value.strip("[]").split(",") if s.strip()})
            except ValueError as err:
                raise UsageError(f"sizes={value}: expected whole numbers, e.g. sizes=[2000,20000]") from err
        elif value.isdigit():
            args[key] = int(value)
        else:
            raise UsageError(f"{key}={value} must be a whole number")
    if not args["out"]:
        raise UsageError("out=DIR is required")
    if len(args["sizes"]) < 2 or min(args["sizes"]) < 10:
        raise UsageError(f"sizes={args['sizes']}: give at least two folder sizes of 10 items or more")
    if args["steps"] < 1:
        raise UsageError("steps must be at least 1")
    return args, rest


# ----------------------------------------------------------------------------------------------- data


def write_image_folder(root: Path, count: int, size: int, channels: int, seed: int) -> None:
    """`count` PNGs of the embedded digits, each at a random place on a size x size ground (random ink colour
    for channels=3), classes by digit."""
    from PIL import Image

    from djepa.modalities.image import load_mnist_digits

    digits, labels = (t.numpy() for t in load_mnist_digits())
    rng = np.random.default_rng(seed)
    canvas = max(size, 32)
    for n in range(count):
        i = int(rng.integers(len(digits)))
        y, x = rng.integers(0, canvas - 28 + 1, size=2)
        grey = np.zeros((canvas, canvas), np.float64)
        grey[y : y + 28, x : x + 28] = digits[i] * rng.uniform(0.6, 1.0)
        if channels == 3:
            image = Image.fromarray(np.round(grey[..., None] * rng.uniform(0.3, 1.0, 3)).astype(np.uint8))
        else:
            image = Image.fromarray(np.round(grey).astype(np.uint8))
        path = root / str(int(labels[i])) / f"{n:06d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        image.save(path)


def write_video_folder(root: Path, count: int, frames: int, size: int, seed: int, chunk: int = 250) -> None:
    """`count` MP4s of one moving MNIST digit each (the embedded default's generator, new seeds), by digit; chunks
    of a multiple of ten clips keep the classes balanced."""
    from djepa.modalities.video import moving_digits, write_mp4

    canvas = size + size % 2
    for start in range(0, count, chunk):
        clips, labels = moving_digits(min(chunk, count - start), frames, canvas, min(24, canvas), seed + start)
        pixels = ((clips.clamp(-1, 1) + 1) * 127.5).round().byte().numpy()  # [N, T, H, W]
        for k, (clip, label) in enumerate(zip(pixels, labels.tolist())):
            path = root / str(label) / f"{start + k:06d}.mp4"
            path.parent.mkdir(parents=True, exist_ok=True)
            write_mp4(np.repeat(clip[..., None], 3, axis=-1), path)


def ensure_folder(root: Path, cfg: DictConfig, count: int) -> dict[str, Any]:
    """The generated folder for `count` items, written unless one with the same recipe is already there."""
    adapter = cfg.modality.adapter
    recipe: dict[str, Any] = {"modality": cfg.modality.name, "items": count, "seed": int(cfg.seed)}
    if cfg.modality.name == "image":
        recipe |= {"size": int(adapter.image_size), "channels": int(adapter.channels)}
    elif cfg.modality.name == "video":
        recipe |= {"size": int(adapter.image_size), "frames": int(adapter.frames) * int(adapter.frame_stride)}
    else:
        raise UsageError(f"data_scale generates image and video folders; modality={cfg.modality.name}")
    marker = root / RECIPE_FILE
    if marker.is_file() and json.loads(marker.read_text()) == recipe:
        return recipe
    if root.exists():
        shutil.rmtree(root)
    start = time.perf_counter()
    if cfg.modality.name == "image":
        write_image_folder(root, count, recipe["size"], recipe["channels"], recipe["seed"])
    else:
        write_video_folder(root, count, recipe["frames"], recipe["size"], recipe["seed"])
    # Beside the class folders, like rgb_digits' marker: a file, so no class of its own.
    atomic_write_json(marker, recipe)
    print(f"wrote {count} items to {root} in {time.perf_counter() - start:.0f} s", flush=True)
    return recipe


# ----------------------------------------------------------------------------------------------- measuring


def _children(pid: int) -> list[int]:
    """Every live descendant of `pid` (from /proc's parent ids)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
                parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
    tree, frontier = [], [pid]
    while frontier:
        frontier = [p for p, parent in parents.items() if parent in frontier]
        tree.extend(frontier)
    return tree


def _pss_kb(pid: int) -> int:
    """A process's proportional set size in kB (its resident set where PSS is not available)."""
    for name, key in (("smaps_rollup", "Pss:"), ("status", "VmRSS:")):
        try:
            for line in Path(f"/proc/{pid}/{name}").read_text().splitlines():
                if line.startswith(key):
                    return int(line.split()[1])
        except (OSError, ValueError):
            continue
    return 0


class TreeSampler(threading.Thread):
    """The peak over time of the summed PSS of a process and its descendants, sampled every `every` s."""

    def __init__(self, pid: int, every: float = 0.2):
        super().__init__(daemon=True)
        self.pid, self.every = pid, every
        self.peak_kb = 0
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.is_set():
            total = sum(_pss_kb(p) for p in [self.pid, *_children(self.pid)])
            self.peak_kb = max(self.peak_kb, total)
            self.stopped.wait(self.every)


def run_measured(module: str, overrides: list[str], log_path: Path) -> dict[str, Any]:
    """Run `python -m module overrides` to its end; its peak memory and wall time. A failure raises."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    start = time.perf_counter()
    with open(log_path, "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", module, *overrides], env=env, stdout=log, stderr=log)
        sampler = TreeSampler(proc.pid) if Path("/proc/self/stat").exists() else None
        if sampler is not None:
            sampler.start()
        # wait4, not Popen.wait: the rusage of this one child (and the processes it reaped), not of all children.
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        if sampler is not None:
            sampler.stopped.set()
            sampler.join()
    wall = time.perf_counter() - start
    if proc.returncode:
        tail = "\n".join(log_path.read_text().splitlines()[-15:])
        raise RuntimeError(f"{module} {' '.join(overrides)} failed ({proc.returncode}), see {log_path}:\n{tail}")
    # ru_maxrss is in kB on Linux, bytes on macOS.
    scale = 1 / 1024 if sys.platform != "darwin" else 1 / 2**20
    return {
        "peak_rss_mb": round(usage.ru_maxrss * scale, 1),
        "peak_tree_pss_mb": round(sampler.peak_kb / 1024, 1) if sampler is not None else None,
        "wall_s": round(wall, 2),
    }


def caching_rate(cache_root: Path) -> tuple[int, float]:
    """Items encoded into the one cache under `cache_root` and the seconds it took (layout.json to meta.json)."""
    caches = [p for p in cache_root.iterdir() if (p / "meta.json").is_file()]
    if len(caches) != 1:
        raise RuntimeError(f"expected one finished latent cache under {cache_root}, found {len(caches)}")
    cache = caches[0]
    items = int(json.loads((cache / "meta.json").read_text())["items"])
    seconds = (cache / "meta.json").stat().st_mtime - (cache / "layout.json").stat().st_mtime
    return items, max(seconds, 1e-6)


def training_rate(run_dir: Path, batch_size: int) -> float:
    """Items per second over the steady steps (the first fifth dropped as warm-up) of metrics.jsonl."""
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    steady = rows[len(rows) // 5 :] or rows
    mean_ms = sum(r["step_ms"] for r in steady) / len(steady)
    return batch_size * 1000 / mean_ms


# ----------------------------------------------------------------------------------------------- running


def measure_size(out: Path, cfg: DictConfig, passthrough: list[str], size: int, steps: int) -> dict[str, Any]:
    from djepa.engine.adapter import default_tokenizer_paths

    name = cfg.modality.name
    data_dir = out / "data" / f"{name}-{size}"
    recipe = ensure_folder(data_dir, cfg, size)
    work = out / f"{name}-{size}"
    work.mkdir(parents=True, exist_ok=True)
    cache_dir = work / "cache"
    common = [*passthrough, f"modality.adapter.data_dir={data_dir}", f"modality.adapter.cache_dir={cache_dir}"]
    sized = compose_config(common)
    batch = int(sized.train.batch_size)
    result: dict[str, Any] = {"items": size, "data_dir": str(data_dir), "recipe": recipe}
    no_run = ["train.preview_every=0", "sample.preview_per_class=0", "train.tensorboard=false"]

    tokenizer = Path(sized.modality.adapter.tokenizer.path)
    if tokenizer.exists() or tokenizer.resolve() not in default_tokenizer_paths(sized):
        result["tokenizer"] = {"skipped": f"tokenizer at {tokenizer} " + ("reused" if tokenizer.exists() else "given")}
    else:
        print(f"[{name} {size}] tokenizer", flush=True)
        result["tokenizer"] = run_measured("djepa.cli.train_tokenizer", common, work / "tokenizer.log")
        result["tokenizer"]["path"] = str(tokenizer)

    print(f"[{name} {size}] caching", flush=True)
    shutil.rmtree(cache_dir, ignore_errors=True)
    caching_run = work / "caching-run"
    shutil.rmtree(caching_run, ignore_errors=True)
    caching = run_measured(
        "djepa.cli.train",
        [*common, *no_run, f"run_dir={caching_run}", "train.steps=1", "train.checkpoint_every=1"],
        work / "caching.log",
    )
    items, seconds = caching_rate(cache_dir)
    result["caching"] = caching | {"cached_items": items, "encode_s": round(seconds, 2), "items_per_s": items / seconds}

    print(f"[{name} {size}] training {steps} steps", flush=True)
    training_run = work / "training-run"
    shutil.rmtree(training_run, ignore_errors=True)
    training = run_measured(
        "djepa.cli.train",
        [*common, *no_run, f"run_dir={training_run}", f"train.steps={steps}", f"train.checkpoint_every={steps}"]
        + ["train.log_every=1"],
        work / "training.log",
    )
    result["training"] = training | {"steps": steps, "batch_size": batch}
    result["training"]["items_per_s"] = training_rate(training_run, batch)
    return result


def compare(per_size: list[dict[str, Any]]) -> dict[str, Any]:
    """Per phase, the largest folder's peak memory over the smallest's, and whether it is within BOUND."""
    small, large = per_size[0], per_size[-1]
    out: dict[str, Any] = {"bound": BOUND, "smaller": small["items"], "larger": large["items"]}
    for phase in PHASES:
        a, b = small.get(phase, {}), large.get(phase, {})
        if "peak_rss_mb" not in a or "peak_rss_mb" not in b:
            continue
        entry: dict[str, Any] = {"rss_ratio": b["peak_rss_mb"] / a["peak_rss_mb"]}
        if a.get("peak_tree_pss_mb") and b.get("peak_tree_pss_mb"):
            entry["tree_pss_ratio"] = b["peak_tree_pss_mb"] / a["peak_tree_pss_mb"]
        entry["within_bound"] = all(v <= BOUND for k, v in entry.items() if k.endswith("_ratio"))
        out[phase] = entry
    out["within_bound"] = all(v["within_bound"] for k, v in out.items() if k in PHASES)
    return out


def write_summary(results: dict[str, Any], path: Path) -> None:
    box = results["machine"]
    gpu = f", {box['gpu']}" if "gpu" in box else ""
    lines = [
        f"# Data at scale: {results['modality']} ({box.get('cpu')}, {box.get('cores')} cores{gpu})",
        "",
        "| items | phase | peak RSS MB | peak tree PSS MB | wall s | items/s |",
        "|---:|---|---:|---:|---:|---:|",
    ]
    for size in results["sizes"]:
        for phase in PHASES:
            p = size.get(phase, {})
            if "skipped" in p:
                lines.append(f"| {size['items']} | {phase} | skipped: {p['skipped']} | | | |")
                continue
            if not p:
                continue
            rate = f"{p['items_per_s']:.1f}" if "items_per_s" in p else ""
            lines.append(
                f"| {size['items']} | {phase} | {p['peak_rss_mb']:.0f} | {p.get('peak_tree_pss_mb') or '-'} "
                f"| {p['wall_s']:.1f} | {rate} |"
            )
    c = results["comparison"]
    lines += ["", f"Largest ({c['larger']}) over smallest ({c['smaller']}), bound {c['bound']}:", ""]
    for phase in PHASES:
        if phase in c:
            ratios = ", ".join(f"{k} {v:.3f}" for k, v in c[phase].items() if k.endswith("_ratio"))
            lines.append(f"- {phase}: {ratios}: {'within' if c[phase]['within_bound'] else 'OVER'} the bound")
    lines += ["", f"All phases within the bound: {'yes' if c['within_bound'] else 'NO'}.", ""]
    path.write_text("\n".join(lines))


def run(args: dict[str, Any], passthrough: list[str]) -> dict[str, Any]:
    from djepa.benchmarks.experiments.run import git_commit, machine

    out = Path(args["out"]).resolve()
    out.mkdir(parents=True, exist_ok=True)
    if not any(a.split("=", 1)[0] == "home" for a in passthrough):
        passthrough = [*passthrough, f"home={out / 'home'}"]  # tokenizers trained here, never the user's
    for key in ("modality.adapter.data_dir", "modality.adapter.cache_dir", "run_dir", "train.steps"):
        if any(a.split("=", 1)[0] == key for a in passthrough):
            raise UsageError(f"{key} is set by data_scale itself")
    cfg = compose_config(passthrough)
    results: dict[str, Any] = {
        "modality": cfg.modality.name,
        "git_commit": git_commit(),
        "machine": machine(),
        "overrides": passthrough,
        "config": OmegaConf.to_container(cfg, resolve=True),
        "sizes": [],
    }
    for size in args["sizes"]:
        results["sizes"].append(measure_size(out, cfg, passthrough, size, int(args["steps"])))
        atomic_write_json(out / "results.json", results)
    results["comparison"] = compare(results["sizes"])
    atomic_write_json(out / "results.json", results)
    write_summary(results, out / "summary.md")
    print(f"wrote {out / 'results.json'} and {out / 'summary.md'}", flush=True)
    return results


def main(argv: Sequence[str] | None = None) -> None:
    with cli_errors():
        args, passthrough = parse(sys.argv[1:] if argv is None else argv)
        run(args, passthrough)


if __name__ == "__main__":
    main()
