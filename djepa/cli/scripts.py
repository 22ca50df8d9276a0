"""The console scripts: `--help` and `--cfg job` here, everything else in each command's own `main`.

Every command takes `key=value` overrides composed by Hydra against the schema (`djepa.schema`): train, sample,
train_tokenizer and benchmark the shared config with its groups, export, serve and convert_tokenizer a small root
config each. `--help` is generated from the same schema.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Sequence
from importlib import resources

from omegaconf import OmegaConf

from djepa import schema
from djepa.cli.config import cli_errors, compose_config

# (module with main(argv), what it does, main keys shown with their defaults; empty: all the root's keys)
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
        "The sample.* settings and loss.head.sampling_steps default to the run's values\n"
        "(shown below: a fresh image run's). Overrides that contradict training (patch, grid, channels) exit 2.",
        (
            "run_dir",
            "checkpoint",
            "out",
            "prompt_class",
            "num_samples",
            "seed",
            "format",
            "shard_size",
            "sample.guidance_scale",
            "sample.temperature",
            "sample.num_steps",
            "sample.guidance_schedule",
            "sample.precision",
            "loss.head.sampling_steps",
            "prime",
            "prime_frames",
            "prime_seconds",
            "mask_frames",
            "mask_seconds",
            "frames",
            "seconds",
            "device",
        ),
    ),
    "train_tokenizer": (
        "djepa.cli.train_tokenizer",
        "Train the modality's small default AutoencoderKL tokenizer and save it at modality.adapter.tokenizer.path.",
        ("modality", "home", "modality.adapter.tokenizer.path", "tokenizer.steps", "tokenizer.batch_size"),
    ),
    "benchmark": (
        "djepa.benchmarks.experiments.run",
        "D-JEPA against MAR mode and the flow head at equal steps, seeds and data: results.json, summary.md, plots.",
        ("modality", "out", "benchmark.quick", "benchmark.steps", "standard_weights", "device"),
    ),
    "export": (
        "djepa.cli.export",
        "A run as a self-describing folder (model, EMA weights, adapter config, tokenizer and its hash, class names,\n"
        "sampling defaults, model card) that `sample`, `serve` and `Pipeline.from_pretrained` read.",
        (),
    ),
    "serve": ("djepa.cli.serve", "A Gradio page on localhost over the Pipeline of a run or an export folder.", ()),
    "convert_tokenizer": (
        "djepa.cli.convert_tokenizer",
        "MAR's KL-16 VAE checkpoint as a diffusers AutoencoderKL folder for modality.adapter.tokenizer.path.",
        (),
    ),
    "convert_checkpoint": (
        "djepa.cli.convert_checkpoint",
        "An LTH14/mar (MAR-B/L/H) or D-JEPA/djepa-imagenet (D-JEPA-B/L/H) checkpoint as an export folder of\n"
        "djepa's model with the source's switches, with its KL-16 tokenizer folder from convert_tokenizer:\n"
        "`sample`, `serve` and `Pipeline.from_pretrained` read it.",
        (),
    ),
}


def config_name(name: str) -> str:
    """The root config a command composes: its own for the small commands, else the shared one."""
    return name if name in schema.ROOTS else "config"


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
    _, summary, main_keys = COMMANDS[name]
    root = config_name(name)
    documented = {k.name: k for k in schema.keys(schema.ROOTS[root])}
    shown = main_keys or tuple(documented)
    lines = [
        f"usage: {name} [key=value ...]" if root != "config" else f"usage: {name} [group=option ...] [key=value ...]"
    ]
    lines += ["", summary, ""]
    if root == "config":
        cfg = compose_config([])
        lines += ["config groups:"] + [f"  {group}={'|'.join(options)}" for group, options in config_groups().items()]
        lines += ["", "main keys (defaults for modality=image; any key of `--cfg job` can be set):"]
    else:
        cfg = None
        lines += ["keys:"]
    for key in shown:
        if cfg is not None:
            value = OmegaConf.select(cfg, key, default="<unset>")
            value = OmegaConf.to_container(value) if OmegaConf.is_config(value) else value
        else:
            value = documented[key].default
        shown_value = "REQUIRED" if value == "???" else OmegaConf.to_yaml({"v": value})[3:].strip()
        meaning = documented[key].help if key in documented else plugin_help(key)
        lines.append(f"  {key}={shown_value}".ljust(38) + f"  {meaning}".rstrip())
    lines += [
        "",
        "options:",
        "  -h, --help   this text",
        "  --cfg job    print the composed config (with the overrides that follow) and exit",
        "",
        "Mistakes (unknown option or key, missing path, out-of-range value) print one line and exit with status 2.",
    ]
    return "\n".join(lines)


def plugin_help(key: str) -> str:
    """The meaning of a built-in plug-in's key (`loss.head.sampler`), from its settings class."""
    section, _, name = key.rpartition(".")
    for settings in schema.PLUGINS.values():
        for found in schema.keys(settings):
            if found.name == name and section in ("loss.head", "modality.adapter"):
                return found.help
    return ""


def dispatch(name: str, argv: Sequence[str] | None = None) -> None:
    """Answer `--help` / `--cfg job`, else run the command's own main."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if "-h" in argv or "--help" in argv:
        with cli_errors():
            print(usage(name))
        sys.exit(0)
    if argv[:2] == ["--cfg", "job"]:
        with cli_errors():
            print(OmegaConf.to_yaml(compose_config(argv[2:], config_name(name))), end="")
        sys.exit(0)
    main: Callable[[Sequence[str]], None] = importlib.import_module(COMMANDS[name][0]).main
    main(argv)


def export(argv: Sequence[str] | None = None) -> None:
    dispatch("export", argv)


def serve(argv: Sequence[str] | None = None) -> None:
    dispatch("serve", argv)


def convert_tokenizer(argv: Sequence[str] | None = None) -> None:
    dispatch("convert_tokenizer", argv)


def convert_checkpoint(argv: Sequence[str] | None = None) -> None:
    dispatch("convert_checkpoint", argv)


def train(argv: Sequence[str] | None = None) -> None:
    dispatch("train", argv)


def sample(argv: Sequence[str] | None = None) -> None:
    dispatch("sample", argv)


def train_tokenizer(argv: Sequence[str] | None = None) -> None:
    dispatch("train_tokenizer", argv)


def benchmark(argv: Sequence[str] | None = None) -> None:
    dispatch("benchmark", argv)
