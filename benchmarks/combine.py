"""`python -m djepa.benchmarks.combine out=DIR RUN_A RUN_B ...`: one report from several benchmark outputs.

Benchmarks run as separate processes (say one per core, or an ablation added later) each write their own
results.json; this merges their variants (same modality and steps), recomputes steps to MAR mode's final
FD across all of them, and writes results.json, summary.md and the plots as one benchmark would.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from djepa.benchmarks.report import write_plots, write_summary
from djepa.benchmarks.run import add_steps_to_reach
from djepa.errors import UsageError


def combine(sources: Sequence[Path]) -> dict[str, Any]:
    merged: dict[str, Any] | None = None
    for source in sources:
        path = source / "results.json" if source.is_dir() else source
        if not path.is_file():
            raise UsageError(f"{path} does not exist: expected a benchmark output folder or its results.json")
        results = json.loads(path.read_text())
        if merged is None:
            merged = {**results, "variants": {}, "sources": []}
        elif results["modality"] != merged["modality"]:
            raise UsageError(f"{path} is a {results['modality']} benchmark, the first is {merged['modality']}")
        merged["sources"].append(str(path))
        for name, variant in results["variants"].items():
            if name in merged["variants"]:
                raise UsageError(f"variant {name!r} appears in more than one source ({path})")
            merged["variants"][name] = variant
    if merged is None:
        raise UsageError("give at least one benchmark output folder")
    add_steps_to_reach(merged)
    return merged


def main(argv: Sequence[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    outs = [a.split("=", 1)[1] for a in argv if a.startswith("out=")]
    if len(outs) != 1:
        sys.exit("usage: python -m djepa.benchmarks.combine out=DIR RESULTS_DIR [RESULTS_DIR ...]")
    try:
        results = combine([Path(a) for a in argv if not a.startswith("out=")])
    except UsageError as err:
        sys.exit(f"error: {err}")
    out = Path(outs[0])
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=2))
    write_plots(results, out)
    write_summary(results, out / "summary.md")
    print(f"wrote {out / 'results.json'}, {out / 'summary.md'} and plots")


if __name__ == "__main__":
    main()
