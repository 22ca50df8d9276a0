"""`export run_dir=DIR out=OUT`: a self-describing folder that `Pipeline.from_pretrained` and `sample` read.

Laid out as diffusers lays out a pipeline, so the folder looks familiar:

    OUT/model_index.json     what the folder is: modality, class names, sampling defaults, adapter, tokenizer hash
    OUT/model/config.json    the DJEPA constructor arguments
    OUT/model/model.safetensors   the EMA weights (the ones sampling uses)
    OUT/tokenizer/           a copy of the latent tokenizer (or `copy_tokenizer=false`: referenced by path)
    OUT/config.yaml          the run's full config; the adapter is built from its `modality` section
    OUT/README.md            the model card: data, steps, losses, scores when given, how to use it
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path

from omegaconf import DictConfig

from djepa.cli.config import cli_errors, compose_config
from djepa.errors import UsageError
from djepa.export import export_pipeline
from djepa.pipeline import Pipeline


def run(cfg: DictConfig) -> Path:
    """Export `cfg.run_dir` (its newest valid checkpoint, or `cfg.checkpoint`) to `cfg.out`."""
    scores = None
    if cfg.scores:
        try:
            scores = json.loads(Path(cfg.scores).read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise UsageError(f"scores={cfg.scores}: not a readable JSON file ({err})") from err
    pipe = Pipeline.from_pretrained(
        cfg.run_dir, device=cfg.device, checkpoint=cfg.checkpoint, plugins=list(cfg.plugins)
    )
    out = export_pipeline(pipe, Path(cfg.out), copy_tokenizer=bool(cfg.copy_tokenizer), scores=scores)
    print(f"exported {pipe.source} (step {pipe.step}) to {out}")
    return out


def main(argv: Sequence[str] | None = None) -> None:
    with cli_errors():
        run(compose_config(list(sys.argv[1:] if argv is None else argv), "export"))


if __name__ == "__main__":  # `python -m ...` answers --help / --cfg job as the console script does
    from djepa.cli import scripts

    scripts.export()
