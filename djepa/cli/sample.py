"""`sample run_dir=DIR [prompt_class=C] [num_samples=N] [seed=S] out=OUT`: files plus a grid.

Video and audio: `prime=CLIP` keeps the clip's start (`prime_frames`, `prime_seconds`) or all but a range
(`mask_frames=4:8`, `mask_seconds=0.3:0.6`); `frames=48` / `seconds=4` make items longer than the model's window.

An unconditional model (trained on a folder without class subfolders) takes no prompt_class and samples with
guidance 1: `num_samples` items in all.

`format=npz` writes `num_samples` images in all as one ImageNet-style `.npz` for ADM/MAR's evaluation suites,
split over the ranks under torchrun and resumed after a kill (`djepa.cli.sample_npz`).

Image models inpaint and outpaint: `sample prime=IMAGE mask=right` (or `mask=center:0.4`, a box `mask=x0,y0,x1,y1`
in pixels, a mask PNG with white = regenerate) or `outpaint=right:0.25`; without prompt_class the known part
decides, `num_samples` items in all. `inpainting.png` shows the prime, the mask and the results side by side.

A thin layer over `djepa.Pipeline`: the model, its adapter and its sampling defaults come from the run's (or
export's) own config; the command line picks classes, count, seed and sampling settings.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from djepa import schema
from djepa.cli.config import cli_errors, compose_config
from djepa.cli.input_checks import check_inputs
from djepa.cli.sample_npz import sample_npz
from djepa.engine import distributed
from djepa.errors import UsageError, writing
from djepa.nn.attention import set_attention_backend
from djepa.pipeline import Pipeline

SAMPLING_KEYS = ("guidance_scale", "temperature", "num_steps", "guidance_schedule", "precision")
# Video and audio time keys, passed on only when given (a prime length the user set cannot join a mask range).
TIME_KEYS = ("prime_frames", "prime_seconds", "mask_frames", "mask_seconds", "frames", "seconds")


def override_keys(argv: Sequence[str]) -> list[str]:
    """The config keys the command line sets (`+key=v`, `key=v`; group choices give the group's name)."""
    return [a.split("=", 1)[0].lstrip("+") for a in argv if "=" in a and not a.startswith("~")]


def sampling_overrides(cfg: DictConfig, keys: Sequence[str] | None) -> dict[str, Any]:
    """The `sample.*` settings the user set; the rest come from the run's defaults. `keys` None: take all of them
    (so does choosing the group itself, `sample=video`)."""
    if keys is None or "sample" in keys:
        return {k: cfg.sample[k] for k in SAMPLING_KEYS}
    return {k: cfg.sample[k] for k in SAMPLING_KEYS if f"sample.{k}" in keys}


def time_options(cfg: DictConfig, keys: Sequence[str] | None) -> dict[str, Any]:
    """The time keys the user gave (`keys` None: those that differ from the schema's defaults)."""
    defaults = {f.name: f.default for f in dataclasses.fields(schema.Config)}
    given = [k for k in TIME_KEYS if (cfg[k] != defaults[k] if keys is None else k in keys)]
    return {k: cfg[k] for k in given if cfg[k] is not None}


def run(cfg: DictConfig, argv: Sequence[str] | None = None) -> list[Path]:
    """Sample from `cfg.run_dir`. `argv` (the command line) tells which keys the user set, so that the others
    come from the run's config; without it the composed `cfg`'s sampling settings are used as given."""
    set_attention_backend(cfg.attention_backend)
    if cfg.num_samples < 1:
        raise UsageError(f"num_samples must be positive, got {cfg.num_samples}")
    keys = None if argv is None else override_keys(argv)
    # Keys that describe the model: checked against the run's own config, never used to rebuild it.
    model_keys = [k for k in keys or [] if k.split(".")[0] in ("modality", "model", "loss")]
    overrides = {k: OmegaConf.select(cfg, k) for k in model_keys}
    # format=npz: each torchrun rank draws its share on its own device (one process: cfg.device as given)
    device = distributed.init_from_env(cfg.device) if cfg.format == "npz" else cfg.device
    pipe = Pipeline.from_pretrained(
        cfg.run_dir, device=device, checkpoint=cfg.checkpoint, overrides=overrides, plugins=cfg.get("plugins")
    )
    if keys is None or {"sample", "sample.precision"} & set(keys):  # else the run's own sample.precision
        pipe.defaults = dataclasses.replace(pipe.defaults, precision=str(cfg.sample.precision))
    settings = sampling_overrides(cfg, keys)
    if pipe.unconditional and "sample.guidance_scale" not in (keys or []):
        settings.pop("guidance_scale", None)  # guidance 1, unless the user asked for another (refused)
    if cfg.format == "npz":
        return [sample_npz(pipe, cfg, settings)]
    labels = None if cfg.prompt_class is None else [pipe.class_index(cfg.prompt_class, "prompt_class")]
    result = pipe(
        labels,
        int(cfg.num_samples),
        seed=int(cfg.seed),
        prime=cfg.get("prime"),
        mask=OmegaConf.to_container(mask) if OmegaConf.is_config(mask := cfg.get("mask")) else mask,
        outpaint=cfg.get("outpaint"),
        progress=True,
        **time_options(cfg, keys),
        **settings,
    )
    for note in result.notes:
        tqdm.write(note)
    with writing("out", cfg.out):
        written = result.save(cfg.out)
    if result.strip_path is not None:  # prime, mask and results side by side
        written.append(result.strip_path)
    tqdm.write(f"wrote {len(written)} files and {result.grid_path} from {pipe.source} (seed {cfg.seed})")
    return written


def main(argv: Sequence[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    with cli_errors():
        try:
            cfg = compose_config(argv)
            check_inputs(cfg, "sample")
            run(cfg, argv)
        finally:
            distributed.shutdown()


if __name__ == "__main__":  # `python -m ...` answers --help / --cfg job as the console script does
    from djepa.cli import scripts

    scripts.sample()
