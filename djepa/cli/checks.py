"""Every key checked once after composition, each message naming the real key.

Types, allowed values and ranges come from the schema (`djepa.schema`); this module adds the checks a schema
cannot state (a device name, a class given by index or name, paths that must be folders, a head class that must
import, the optional tensorboard package). A mistake stops the command before anything is written.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, cast

from omegaconf import DictConfig, OmegaConf

from djepa import schema
from djepa.errors import UsageError

_MISSING = object()


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def head_class(value: Any) -> str | None:
    """`loss.head._target_` must name a TokenHead (checked before the run directory is made)."""
    from djepa import builders

    try:
        builders.resolve({"_target_": value}, "loss.head", builders.HEAD)
    except UsageError as err:
        return str(err).split(f"{value!r} ", 1)[-1]
    return None


def tensorboard_flag(value: Any) -> str | None:
    """`train.tensorboard`: true or false, and true only where the optional tensorboard package is installed."""
    from djepa.engine.tensorboard import MISSING, tensorboard_missing

    if not isinstance(value, bool):
        return "must be true or false"
    return MISSING if value and tensorboard_missing() else None


def device_name(value: Any) -> str | None:
    if isinstance(value, str) and re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", value):
        return None
    return "must be auto, cpu, cuda or cuda:N"


def prompt_class(value: Any) -> str | None:
    # A whole number (its range depends on the checkpoint, checked when it is loaded) or a class name.
    if value is None or _is_int(value) and value >= 0 or isinstance(value, str) and value.strip():
        return None
    return "must be a class index (a whole number >= 0) or a class name"


def output_folder(value: Any) -> str | None:
    if value is not None and Path(str(value)).exists() and not Path(str(value)).is_dir():
        return "is an existing file: it must be a folder (it is created if missing)"
    return None


def checkpoint_folder(value: Any) -> str | None:
    # A path that does not exist is reported where the checkpoint is looked up, with the run_dir it came from.
    if value is None or not Path(str(value)).exists():
        return None
    path = Path(str(value))
    if not path.is_dir():
        return "is not a checkpoint: expected a folder such as RUN_DIR/checkpoints/step_0001200"
    if not (path / "state.json").is_file():
        return "is not a checkpoint: the folder has no state.json (expected RUN_DIR/checkpoints/step_NNNNNNN)"
    return None


# Checks beyond the schema's types and ranges, by dotted key.
CUSTOM_CHECKS: dict[str, Callable[[Any], str | None]] = {
    "device": device_name,
    "prompt_class": prompt_class,
    "out": output_folder,
    "checkpoint": checkpoint_folder,
    "train.tensorboard": tensorboard_flag,
    "loss.head._target_": head_class,
}


def _schema_problems(cfg: DictConfig, root: type) -> Iterator[tuple[str, Any, str]]:
    """Breaches of the schema: the top level, each section, and the keys of built-in adapters and heads."""
    plain = cast(dict[str, Any], OmegaConf.to_container(cfg, resolve=True))
    top = {k: v for k, v in plain.items() if k not in schema.SECTIONS}
    yield from schema.section_problems(root, top, "")
    if root is not schema.Config:
        return
    for name, settings in schema.SECTIONS.items():
        yield from schema.section_problems(settings, plain.get(name) or {}, f"{name}.")
    for where in ("modality.adapter", "loss.head"):
        section = OmegaConf.select(cfg, where, default=None)
        plugin = schema.PLUGINS.get(str(section.get("_target_"))) if section is not None else None
        if plugin is not None:
            values = cast(dict[str, Any], OmegaConf.to_container(section, resolve=True))
            yield from schema.section_problems(plugin, values, f"{where}.")


def validate(cfg: DictConfig, config_name: str = "config") -> None:
    """Raise a UsageError naming the first key that is missing, of the wrong type or out of range."""
    for key in map(str, cfg):
        if OmegaConf.is_missing(cfg, key):
            raise UsageError(f"{key}= is required ({config_name} --help lists the keys)")
    for key, value, problem in _schema_problems(cfg, schema.ROOTS[config_name]):
        raise UsageError(f"{key}={_show(value)} {problem}")
    if config_name in ("convert_tokenizer", "convert_checkpoint"):  # `checkpoint`: a file, not a run's checkpoint
        return
    for key, check in CUSTOM_CHECKS.items():
        value = OmegaConf.select(cfg, key, default=_MISSING)
        if value is _MISSING:
            continue
        found = check(value)
        if found:
            raise UsageError(f"{key}={_show(value)} {found}")


# `+key=value` adds a key; only the plug-in sections (constructor arguments) and the benchmark's variants (a name
# per variant) read every key they hold, so a new key anywhere else would be silently ignored.
OPEN_SECTIONS = ("modality.adapter.", "loss.head.", "benchmark.variants")


def validate_overrides(overrides: Sequence[str]) -> None:
    """Refuse `hydra.*` settings (compose() ignores them) and `+key=...` additions that nothing reads."""
    for item in overrides:
        key = item.split("=", 1)[0]
        bare = key.lstrip("+~")
        if key.startswith("+") and not bare.startswith(OPEN_SECTIONS):
            raise UsageError(f"{key}: unknown key, nothing reads it (the keys and their meaning: --help)")
        if bare == "hydra" or bare.startswith(("hydra.", "hydra/")):
            raise UsageError(
                f"{key}: hydra settings are not used by djepa (outputs go to run_dir=..., or out=... for sample)"
            )


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))  # as typed: a float key holds `-1` as -1.0
    return str(value)


def resolve_prompt_class(value: Any, class_names: Sequence[str]) -> int | None:
    """`prompt_class` as an index: a whole number in range, or one of the class names; one-line errors."""
    if value is None:
        return None
    if _is_int(value) and 0 <= value < len(class_names):
        return value
    if isinstance(value, str) and value in class_names:
        return list(class_names).index(value)
    if isinstance(value, str) and value.isdigit():
        return resolve_prompt_class(int(value), class_names)
    names = ", ".join(class_names)
    raise UsageError(
        f"prompt_class={_show(value)} is not a class of this model: use 0..{len(class_names) - 1} or a name ({names})"
    )
