"""Hydra config composition for the console scripts, with one-line errors for user mistakes."""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from djepa.cli.checks import validate, validate_overrides
from djepa.errors import Terminated, UsageError

MODALITIES = ("image", "video", "audio")


def compose_config(overrides: Sequence[str], config_name: str = "config") -> DictConfig:
    """Compose `configs/<config_name>.yaml` with command-line overrides, resolved and validated."""
    from hydra import compose, initialize_config_module
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    for item in overrides:
        if item.startswith("modality="):
            name = item.split("=", 1)[1]
            if name not in MODALITIES:
                raise UsageError(f"unknown modality {name!r}: choose one of {', '.join(MODALITIES)}")
    validate_overrides(overrides)
    try:
        with initialize_config_module(config_module="djepa.configs", version_base=None):
            cfg = compose(config_name=config_name, overrides=list(overrides))
        OmegaConf.resolve(cfg)
    except (HydraException, OmegaConfBaseException) as err:
        lines = str(err).strip().splitlines()
        options = []
        if "Available options" in str(err):
            start = next(i for i, line in enumerate(lines) if "Available options" in line) + 1
            for line in lines[start:]:
                if not line.startswith("\t"):
                    break
                options.append(line.strip())
        hint = f" (options: {', '.join(options)})" if options else ""
        raise UsageError(lines[0] + hint) from err
    validate(cfg)
    return cfg


def _raise_terminated(signum: int, frame: object) -> None:
    raise Terminated()


@contextlib.contextmanager
def cli_errors() -> Iterator[None]:
    """Turn user mistakes into one clear line on stderr and exit status 2; SIGTERM into a clean stop (143)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    except (UsageError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt as err:
        print("interrupted; the last checkpoint is intact, run the same command to resume", file=sys.stderr)
        sys.exit(143 if isinstance(err, Terminated) else 130)


def save_config(cfg: DictConfig, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(cfg, path)
