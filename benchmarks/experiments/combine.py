"""`python -m djepa.benchmarks.experiments.combine out=DIR RUN_A RUN_B ...`: one report from several benchmark outputs.

Benchmarks run as separate processes (say one per core, or an ablation added later) each write their own
results.json; this merges their variants (same modality and steps), recomputes steps to MAR mode's final
FD across all of them, and writes results.json, summary.md and the plots as one benchmark would.

A variant that appears in several sources with different seeds (one process per seed, e.g. `seed=1
'~benchmark.variants.mar'` on one core and `seed=1 '~benchmark.variants.djepa'` on the other) is pooled:
its seeds are aggregated again into one mean ± standard error. The same variant and seed twice is an error.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from djepa.benchmarks.aggregate import aggregate_seeds
from djepa.benchmarks.experiments.run import add_steps_to_reach
from djepa.benchmarks.report import write_plots, write_summary
from djepa.errors import UsageError


def seed_runs(variant: dict[str, Any], seeds: list[int]) -> list[dict[str, Any]]:
    """The per-seed results inside one variant's aggregate, each tagged with its seed. `seeds` is the benchmark's
    list; a variant's own list (a combined output's, where variants can have different seeds) wins."""
    seeds = [int(s) for s in variant.get("seeds", seeds)]
    if "per_seed" in variant:
        runs = [dict(run) for run in variant["per_seed"]]
    else:  # a single seed: the aggregate is that seed's result plus zero standard errors
        derived = ("num_seeds", "steps_to_reference_fd", "seeds")
        runs = [{k: v for k, v in variant.items() if not k.endswith("_se") and k not in derived}]
    if len(runs) != len(seeds):
        raise UsageError(f"a variant holds {len(runs)} seed results but its benchmark lists seeds {seeds}")
    for run, seed in zip(runs, seeds):
        run.setdefault("seed", seed)
    return runs


def combine(sources: Sequence[Path]) -> dict[str, Any]:
    merged: dict[str, Any] | None = None
    runs_by_variant: dict[str, list[dict[str, Any]]] = {}
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
        seeds = [int(s) for s in results.get("seeds", [results.get("config", {}).get("seed", 0)])]
        for name, variant in results["variants"].items():
            runs = runs_by_variant.setdefault(name, [])
            for run in seed_runs(variant, seeds):
                if any(r["seed"] == run["seed"] for r in runs):
                    raise UsageError(f"variant {name!r} seed {run['seed']} appears in more than one source ({path})")
                runs.append(run)
    if merged is None:
        raise UsageError("give at least one benchmark output folder")
    for name, runs in runs_by_variant.items():
        runs.sort(key=lambda r: r["seed"])
        try:
            merged["variants"][name] = aggregate_seeds(runs)
        except ValueError as err:
            raise UsageError(f"variant {name!r}: {err}") from None
        merged["variants"][name]["seeds"] = [r["seed"] for r in runs]
    merged["seeds"] = sorted({r["seed"] for runs in runs_by_variant.values() for r in runs})
    add_steps_to_reach(merged)
    return merged


def main(argv: Sequence[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    outs = [a.split("=", 1)[1] for a in argv if a.startswith("out=")]
    if len(outs) != 1:
        sys.exit("usage: python -m djepa.benchmarks.experiments.combine out=DIR RESULTS_DIR [RESULTS_DIR ...]")
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
