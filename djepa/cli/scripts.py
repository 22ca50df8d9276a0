"""The console scripts: `--help` and `--cfg job` here, everything else in each command's own `main`.

Hydra's own `--help` needs `@hydra.main`; our commands compose with the compose API (one-line errors, no
output directories), so they answer `--help` themselves before composing anything.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Sequence
from importlib import resources
from types import ModuleType

from omegaconf import OmegaConf

from djepa.cli.config import cli_errors, compose_config

# (module with main(argv), what it does, main keys shown with their defaults)
COMMANDS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "train": (
        "djepa.cli.train",
        "Train D-JEPA on a modality's data: trains the default tokenizer first if it is missing, caches latents,\n"
        "writes RUN/config.yaml, metrics.jsonl, checkpoints/, previews/ and samples; re-running resumes.",
        (
            "modality",
            "run_dir",
            "home",
            "device",
            "seed",
            "train.steps",
            "train.batch_size",
            "train.lr",
            "train.checkpoint_every",
            "train.precision",
            "train.parallel",
            "train.tensorboard",
            "loss.jepa_weight",
            "model.encoder_depth",
            "model.encoder_width",
        ),
    ),
    "sample": (
        "djepa.cli.sample",
        "Sample a trained run (or an `export` folder): one file per item in OUT plus OUT/grid. The model, its\n"
        "adapter and its sampling defaults come from the run's own config; the same seed gives the same files.\n"
        "cfg, temperature, num_steps, cfg_schedule and loss.head.sampling_steps default to the run's values\n"
        "(shown below: a fresh image run's). Overrides that contradict training (patch, grid, channels) exit 2.",
        (
            "run_dir",
            "checkpoint",
            "out",
            "prompt_class",
            "num_samples",
            "seed",
            "cfg",
            "temperature",
            "num_steps",
            "cfg_schedule",
            "loss.head.sampling_steps",
            "prime",
            "prime_frames",
            "prime_seconds",
            "device",
        ),
    ),
    "train_tokenizer": (
        "djepa.cli.train_tokenizer",
        "Train the modality's small default AutoencoderKL tokenizer and save it at modality.adapter.tokenizer.path.",
        ("modality", "home", "modality.adapter.tokenizer.path", "tokenizer.steps", "tokenizer.batch_size"),
    ),
    "benchmark": (
        "djepa.benchmarks.run",
        "D-JEPA against MAR mode and the flow head at equal steps, seeds and data: results.json, summary.md, plots.",
        ("modality", "out", "benchmark.quick", "benchmark.steps", "standard_weights", "device"),
    ),
}


def config_groups() -> dict[str, list[str]]:
    """Config groups and their options, read from the installed configs package (without a group's `_base`
    and other `_`-named files: the settings its options share, listed in their defaults, not options)."""
    root = resources.files("djepa.configs")
    groups = {}
    for entry in sorted(root.iterdir(), key=lambda e: e.name):
        if entry.is_dir() and not entry.name.startswith(("_", ".")):
            groups[entry.name] = sorted(
                f.name[:-5] for f in entry.iterdir() if f.name.endswith(".yaml") and not f.name.startswith("_")
            )
    return groups


def usage(name: str) -> str:
    _, summary, keys = COMMANDS[name]
    cfg = compose_config([])
    lines = [f"usage: {name} [group=option ...] [key=value ...]", "", summary, "", "config groups:"]
    lines += [f"  {group}={'|'.join(options)}" for group, options in config_groups().items()]
    lines += ["", "main keys (defaults for modality=image; any key of `--cfg job` can be set):"]
    for key in keys:
        value = OmegaConf.select(cfg, key, default="<unset>")
        value = OmegaConf.to_container(value) if OmegaConf.is_config(value) else value
        lines.append(f"  {key}={'null' if value is None else value}")
    lines += [
        "",
        "options:",
        "  -h, --help   this text",
        "  --cfg job    print the composed config (with the overrides that follow) and exit",
        "",
        "Mistakes (unknown option or key, missing path, out-of-range value) print one line and exit with status 2.",
    ]
    return "\n".join(lines)


def dispatch(name: str, argv: Sequence[str] | None = None) -> None:
    """Answer `--help` / `--cfg job`, else run the command's own main."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if "-h" in argv or "--help" in argv:
        with cli_errors():
            print(usage(name))
        sys.exit(0)
    if argv[:2] == ["--cfg", "job"]:
        with cli_errors():
            print(OmegaConf.to_yaml(compose_config(argv[2:])), end="")
        sys.exit(0)
    main: Callable[[Sequence[str]], None] = importlib.import_module(COMMANDS[name][0]).main
    main(argv)


def _key_value_command(argv: Sequence[str] | None, usage: str, command: ModuleType, keys: dict[str, str]) -> None:
    """A command that takes plain key=value arguments (not Hydra): --help lists its keys, then it runs."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if "-h" in argv or "--help" in argv:
        print(f"usage: {usage}\n")
        print((command.__doc__ or "").strip() + "\n\nkeys:")
        print("\n".join(f"  {k}=  {doc}" for k, doc in keys.items()))
        sys.exit(0)
    command.main(argv)


def export(argv: Sequence[str] | None = None) -> None:
    from djepa.cli import export as command

    _key_value_command(argv, "export run_dir=RUN out=DIR [key=value ...]", command, command.EXPORT_KEYS)


def convert_tokenizer(argv: Sequence[str] | None = None) -> None:
    from djepa.cli import convert_tokenizer as command

    usage = "convert_tokenizer checkpoint=kl16.ckpt out=DIR [source=mar_kl16] [scale=0.2325]"
    _key_value_command(argv, usage, command, command.CONVERT_KEYS)


def train(argv: Sequence[str] | None = None) -> None:
    dispatch("train", argv)


def sample(argv: Sequence[str] | None = None) -> None:
    dispatch("sample", argv)


def train_tokenizer(argv: Sequence[str] | None = None) -> None:
    dispatch("train_tokenizer", argv)


def benchmark(argv: Sequence[str] | None = None) -> None:
    dispatch("benchmark", argv)
