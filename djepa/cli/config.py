"""Hydra config composition for the console scripts, with one-line errors for user mistakes."""

from __future__ import annotations

import contextlib
import re
import signal
import sys
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import cast

from omegaconf import DictConfig, OmegaConf

from djepa import builders
from djepa.cli.checks import validate, validate_overrides
from djepa.errors import Terminated, UsageError

MODALITIES = ("image", "video", "audio")


def compose_config(overrides: Sequence[str], config_name: str = "config") -> DictConfig:
    """Compose a command's config (`configs/config.yaml`, or a small command's own schema) with command-line
    overrides, resolved and validated."""
    for item in overrides:
        if item.startswith("modality="):
            name = item.split("=", 1)[1]
            if name not in MODALITIES:
                raise UsageError(f"unknown modality {name!r}: choose one of {', '.join(MODALITIES)}")
    validate_overrides(overrides)
    overrides = [quote_box(quote_non_ascii(item)) for item in overrides]
    cfg = _compose(config_name, list(overrides))
    if config_name == "config":
        extra = data_default_overrides(cfg, overrides)
        if extra:  # config groups (loss=flow) can only change by composing again
            cfg = _compose(config_name, extra + list(overrides))
        apply_data_defaults(cfg, overrides)
    builders.set_plugins(cfg.get("plugins"))  # the command line's allow-list, before a head class is checked
    validate(cfg, config_name)
    return cfg


def quote_non_ascii(item: str) -> str:
    """`key=café` -> `key='café'`: Hydra's grammar takes non-ASCII letters only inside quotes. Lists, dicts and
    values the user quoted are left as they are; backslashes before a quote or the end are escaped."""
    key, sep, value = item.partition("=")
    if not sep or value.isascii() or value[:1] in ("'", '"', "[", "{"):
        return item
    escaped = re.sub(r"(\\*)('|$)", lambda m: m.group(1) * 2 + ("\\'" if m.group(2) else ""), value)
    return f"{key}='{escaped}'"


def quote_box(item: str) -> str:
    """`mask=0,4,16,32` -> `mask='0,4,16,32'`: Hydra would read the commas as a sweep over four values."""
    key, sep, value = item.partition("=")
    if sep and key.lstrip("+") == "mask" and re.fullmatch(r"\s*-?\d+(\s*,\s*-?\d+)+\s*", value):
        return f"{key}='{value}'"
    return item


# An RGB folder's tokenizer must keep shapes under colours that vary independently of them: it trains 3x longer
# than the grey digits' (evidence: docs, Results, colourful user images).
RGB_TOKENIZER_STEPS = 1500


def _overridden(overrides: Sequence[str], key: str) -> bool:
    return any(item.split("=", 1)[0].lstrip("+~") == key for item in overrides)


# RGB image folders get the video defaults (flow head, constant guidance, temperature 0.7) and longer training,
# measured on coloured digits (docs, Results, colourful user images).
RGB_IMAGE_DEFAULTS = {
    "loss": "flow",
    "sample.guidance_schedule": "constant",
    "sample.temperature": "0.7",
    "train.steps": "2000",
    "tokenizer.steps": str(RGB_TOKENIZER_STEPS),
}


# A recipe chosen on the command line sets the head, sampling and training length itself (configs/train/paper.yaml).
RECIPE_KEYS = {"train=paper": ("loss", "sample.", "train.")}


def data_default_overrides(cfg: DictConfig, overrides: Sequence[str]) -> list[str]:
    """Overrides the data calls for, for settings the command line did not choose itself."""
    adapter = cfg.modality.get("adapter")
    if cfg.modality.name != "image" or adapter is None or not adapter.get("data_dir") or adapter.get("channels") != 3:
        return []
    chosen = tuple(p for item in overrides for p in RECIPE_KEYS.get(item.strip(), ()))
    return [
        f"{key}={value}"
        for key, value in RGB_IMAGE_DEFAULTS.items()
        if not _overridden(overrides, key) and not key.startswith(chosen)
    ]


def apply_data_defaults(cfg: DictConfig, overrides: Sequence[str]) -> None:
    """The folder's own default tokenizer location (never the embedded data's), unless the command line set one."""
    from djepa.engine.adapter import dataset_tokenizer_path

    adapter = cfg.modality.get("adapter")
    if adapter is not None and adapter.get("_target_"):
        fill_adapter_defaults(cfg, adapter)
    if adapter is None or not adapter.get("data_dir"):
        return
    embedded_default = Path(cfg.home) / "tokenizers" / cfg.modality.name
    tokenizer = adapter.get("tokenizer")
    if tokenizer is not None and not _overridden(overrides, "modality.adapter.tokenizer.path"):
        if Path(str(tokenizer.path)).resolve() == embedded_default.resolve():
            container = OmegaConf.to_container(adapter, resolve=True)
            tokenizer.path = str(dataset_tokenizer_path(cfg.home, cfg.modality.name, container))


def fill_adapter_defaults(cfg: DictConfig, adapter: DictConfig) -> None:
    """Settings the adapter class derives from its data (an audio folder's sample rate and clip length), written
    into the config so that the run keeps them: the class's `fill_config_defaults(cfg, adapter)`, where it has one."""
    from djepa import builders

    cls = builders.adapter_class(cast(dict, OmegaConf.to_container(adapter, resolve=False)))
    fill = getattr(cls, "fill_config_defaults", None)
    if fill is not None:
        fill(cfg, adapter)


def _compose(config_name: str, overrides: list[str]) -> DictConfig:
    from hydra import compose, initialize_config_module
    from hydra.errors import HydraException
    from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException

    from djepa.schema import register

    register()
    try:
        with initialize_config_module(config_module="djepa.configs", version_base=None):
            cfg = compose(config_name=config_name, overrides=list(overrides))
        OmegaConf.resolve(cfg)
    except (HydraException, OmegaConfBaseException) as err:
        raise UsageError(_one_line(err, (ConfigAttributeError, ConfigKeyError))) from err
    return cfg


def _one_line(err: Exception, unknown_key: tuple[type, ...]) -> str:
    """Hydra's and OmegaConf's composition errors as one line naming the key."""
    cause = err.__cause__ if isinstance(err.__cause__, Exception) else err
    key = getattr(cause, "full_key", None)
    if key and isinstance(cause, unknown_key):
        return f"{key}: unknown key (the keys and their meaning: --help, or docs/concepts/configuration.md)"
    if key and cause is not err:
        return f"{key}: {str(cause).strip().splitlines()[0]}"
    lines = str(err).strip().splitlines()
    options = []
    if "Available options" in str(err):
        start = next(i for i, line in enumerate(lines) if "Available options" in line) + 1
        for line in lines[start:]:
            if not line.startswith("\t"):
                break
            if not line.strip().startswith("_"):  # a group's `_paper` and the like: shared settings, not options
                options.append(line.strip())
    hint = f" (options: {', '.join(options)})" if options else ""
    return lines[0] + hint


def _raise_terminated(signum: int, frame: object) -> None:
    raise Terminated()


@contextlib.contextmanager
def cli_errors(interrupted: str = "interrupted; nothing half-written is kept") -> Iterator[None]:
    """Turn user mistakes into one clear line on stderr and exit status 2; SIGTERM into a clean stop (143) that
    prints `interrupted` (what the command can resume)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    except (UsageError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt as err:
        print(interrupted, file=sys.stderr)
        sys.exit(143 if isinstance(err, Terminated) else 130)


def save_config(cfg: DictConfig, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(cfg, path)
