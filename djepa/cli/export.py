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

from djepa import builders
from djepa.cli.config import cli_errors
from djepa.errors import UsageError
from djepa.export import export_pipeline
from djepa.pipeline import Pipeline

EXPORT_KEYS = {
    "run_dir": "the run directory to export (its newest valid checkpoint)",
    "out": "the folder to write (created; must be empty or absent)",
    "checkpoint": "a checkpoint directory to export instead of the newest (default: null)",
    "copy_tokenizer": "true: copy the tokenizer into OUT/tokenizer; false: reference its path (default: true)",
    "scores": "a JSON file of measured scores (e.g. what `python -m djepa.benchmarks.evaluate` prints) for the card",
    "device": "where to load the model while exporting (default: cpu)",
}


def parse_args(argv: Sequence[str]) -> dict[str, str]:
    args: dict[str, str] = {}
    for item in argv:
        key, sep, value = item.partition("=")
        if not sep or key not in EXPORT_KEYS:
            raise UsageError(f"unknown argument {item!r}: export takes {', '.join(k + '=' for k in EXPORT_KEYS)}")
        args[key] = value
    for key in ("run_dir", "out"):
        if not args.get(key):
            raise UsageError(f"{key}= is required: export run_dir=RUN out=DIR")
    return args


def run(argv: Sequence[str]) -> Path:
    args = parse_args(argv)
    copy = args.get("copy_tokenizer", "true").lower()
    if copy not in ("true", "false"):
        raise UsageError(f"copy_tokenizer must be true or false, got {copy!r}")
    scores = None
    if args.get("scores"):
        try:
            scores = json.loads(Path(args["scores"]).read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise UsageError(f"scores={args['scores']}: not a readable JSON file ({err})") from err
    pipe = Pipeline.from_pretrained(
        args["run_dir"],
        device=args.get("device", "cpu"),
        checkpoint=args.get("checkpoint"),
        plugins=builders.plugin_list(args.get("plugins"), "plugins"),
    )
    out = export_pipeline(pipe, Path(args["out"]), copy_tokenizer=copy == "true", scores=scores)
    print(f"exported {pipe.source} (step {pipe.step}) to {out}")
    return out


def main(argv: Sequence[str] | None = None) -> None:
    with cli_errors():
        run(list(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":  # `python -m ...` answers --help / --cfg job as the console script does
    from djepa.cli import scripts

    scripts.export()
