"""`train_tokenizer modality=M`: train the modality's default tokenizer and save it at tokenizer.path."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any, cast

from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from djepa import builders
from djepa.cli.config import cli_errors, compose_config
from djepa.cli.input_checks import check_inputs
from djepa.engine.adapter import build_adapter
from djepa.errors import UsageError


def run(cfg: DictConfig) -> dict[str, Any]:
    builders.set_plugins(cfg.get("plugins"))  # the command line's allow-list (djepa.builders)
    adapter = build_adapter(cfg)
    try:
        metrics = adapter.train_tokenizer(cast(dict[str, Any], OmegaConf.to_container(cfg.tokenizer, resolve=True)))
    except TypeError as err:
        raise UsageError(f"bad tokenizer config: {err}") from err
    summary = ", ".join(f"{k} {v:.4g}" for k, v in metrics.items() if isinstance(v, float))
    tqdm.write(f"tokenizer saved to {cfg.modality.adapter.tokenizer.path}: {summary}")
    return metrics


def main(argv: Sequence[str] | None = None) -> None:
    with cli_errors("interrupted; tokenizer training keeps no checkpoint: the same command starts it again"):
        cfg = compose_config(sys.argv[1:] if argv is None else argv)
        check_inputs(cfg, "train_tokenizer")
        run(cfg)


if __name__ == "__main__":  # `python -m ...` answers --help / --cfg job as the console script does
    from djepa.cli import scripts

    scripts.train_tokenizer()
