"""Every key a user is likely to get wrong, checked once after composition, each message naming the real key.

A table of (key, check) rather than checks spread over the code that reads the keys: the readers
(trainer, heads, attention, sampling) then only ever see values of the right type and range, and a
mistake stops the command before anything is written. Keys absent from a config are skipped, so
configs of other commands (benchmark, train_tokenizer) pass through the same function.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from djepa.errors import UsageError
from djepa.legacy import RENAMED_KEYS

MAX_SAMPLES = 100_000  # one call writes one file per sample; more is a typo, not a plan
PRECISIONS = ("auto", "bf16", "fp32")
ATTENTION_BACKENDS = ("auto", "xformers", "sdpa", "math")  # djepa.nn.attention.BACKENDS, without importing torch
# DiffusionHead: ddpm | dpm_solver; FlowHead: euler | heun. The composed config need not name the run's head
# (`sample` reads it from the run), so each head refuses the other's samplers itself when it is built.
SAMPLERS = ("ddpm", "dpm_solver", "euler", "heun")
# cfg_schedule is checked by SamplingSettings.from_config, with the message tests/test_cli.py expects.
_MISSING = object()

# `+key=value` adds a key; only these sections hand all their keys on (as constructor arguments or a
# dict that is read whole), so a new key elsewhere would be silently ignored.
OPEN_SECTIONS = ("model", "loss", "modality", "tokenizer", "train", "benchmark")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def number(low: float | None = None, high: float | None = None, *, low_open: bool = False, high_open: bool = False):
    """A check for a number in [low, high] (or open at either end)."""

    def check(value: Any) -> str | None:
        if _is_number(value):
            above = low is None or (value > low if low_open else value >= low)
            below = high is None or (value < high if high_open else value <= high)
            if above and below:
                return None
        lo = "" if low is None else f"{'>' if low_open else '>='} {low:g}"
        hi = "" if high is None else f"{'<' if high_open else '<='} {high:g}"
        return "must be a number " + " and ".join(p for p in (lo, hi) if p)

    return check


def integer(low: int, high: int | None = None):
    def check(value: Any) -> str | None:
        if _is_int(value) and value >= low and (high is None or value <= high):
            return None
        return f"must be a whole number >= {low}" + (f" and <= {high:,}" if high is not None else "")

    return check


def boolean(value: Any) -> str | None:
    return None if isinstance(value, bool) else "must be true or false"


def one_of(choices: Sequence[str], hints: dict[str, str] | None = None):
    def check(value: Any) -> str | None:
        if value in choices:
            return None
        hint = (hints or {}).get(str(value))
        return f"must be one of {', '.join(choices)}" + (f" ({hint})" if hint else "")

    return check


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


def optional(inner: Callable[[Any], str | None]):
    return lambda value: None if value is None else inner(value)


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


CHECKS: dict[str, Callable[[Any], str | None]] = {
    "device": device_name,
    "attention_backend": one_of(ATTENTION_BACKENDS),
    "seed": integer(0),
    "cfg": number(1.0),
    "temperature": number(0.0, low_open=True),
    "num_steps": integer(1),
    "num_samples": integer(1, MAX_SAMPLES),
    "roundtrip": boolean,
    "roundtrip_count": integer(1),
    "prompt_class": prompt_class,
    "out": output_folder,
    "checkpoint": checkpoint_folder,
    "train.steps": integer(1),
    "train.batch_size": integer(1),
    "train.lr": optional(number(0.0, low_open=True)),
    "train.blr": number(0.0, low_open=True),
    "train.min_lr": number(0.0),
    "train.warmup_steps": integer(0),
    "train.weight_decay": number(0.0),
    "train.grad_clip": number(0.0, low_open=True),
    "train.ema_decay": number(0.0, 1.0, high_open=True),
    "train.teacher": one_of(("separate", "sampling_ema")),
    "train.teacher_ema_start": number(0.0, 1.0),
    "train.teacher_ema_end": number(0.0, 1.0),
    "train.teacher_ramp_steps": integer(0),
    "train.grad_probe_every": integer(0),
    "benchmark.seeds": integer(1),
    "train.mask_ratio_min": number(0.0, 1.0, low_open=True),
    "train.prefix_mask_prob": number(0.0, 1.0),
    "train.precision": one_of(PRECISIONS, {"fp16": "fp16 overflows to NaN in this model; bf16 has fp32's range"}),
    "train.log_every": integer(1),
    "train.checkpoint_every": integer(1),
    "train.keep_checkpoints": integer(1),
    "train.preview_every": integer(0),
    "train.tensorboard": tensorboard_flag,
    "train.max_bad_steps": integer(1),
    "train.parallel": one_of(("ddp", "fsdp", "none")),
    "train.checkpoint_format": one_of(("auto", "full", "sharded")),
    "loss.denoise_weight": number(0.0),
    "loss.jepa_weight": number(0.0),
    "loss.head._target_": head_class,
    "loss.head.sampler": one_of(SAMPLERS),
    "loss.head.sampling_steps": integer(1),
    "loss.head.num_timesteps": integer(1),
    "sample.preview_per_class": integer(0),
}


def validate(cfg: DictConfig) -> None:
    """Raise a UsageError naming the first key whose value is of the wrong type or out of range."""
    for key, check in CHECKS.items():
        value = OmegaConf.select(cfg, key, default=_MISSING)
        if value is _MISSING:
            continue
        problem = check(value)
        if problem:
            raise UsageError(f"{key}={_show(value)} {problem}")


def validate_overrides(overrides: Sequence[str]) -> None:
    """Refuse `hydra.*` settings (compose() ignores them), `+key=...` additions that nothing reads, and keys
    renamed since (djepa.legacy.RENAMED_KEYS), naming the new key."""
    for item in overrides:
        key = item.split("=", 1)[0]
        bare = key.lstrip("+~")
        if bare in RENAMED_KEYS:
            raise UsageError(f"{key}: renamed {RENAMED_KEYS[bare]} (saved runs that use the old name still load)")
        if bare == "hydra" or bare.startswith(("hydra.", "hydra/")):
            raise UsageError(
                f"{key}: hydra settings are not used by djepa (outputs go to run_dir=..., or out=... for sample)"
            )
        if key.startswith("+") and bare.split(".", 1)[0].split("/", 1)[0] not in OPEN_SECTIONS:
            raise UsageError(f"{key}: unknown key, nothing reads it (check the spelling against configs/config.yaml)")


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, str):
        return repr(value)
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
