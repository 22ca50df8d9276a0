"""Steps into seconds: `python -m djepa.benchmarks.experiments.time_to_fd results=BENCH/results.json
profile=PROFILE/profile.json[,PROFILE2/profile.json,...] [reference=mar] [out=DIR]`.

A benchmark measures quality against steps; what a user pays for is seconds. This joins a benchmark's results
(one process's or `combine`'s, several seeds per variant) with a step profile of the same variants (quiet medians
per step from `step_profile`) and gives one table: per variant its final FD, the steps at which its mean curve first
reaches the reference variant's final FD (and each seed's own curve), the milliseconds per step, and the seconds
that makes, with their ratio to the reference's own time to that FD. Seconds per seed give the mean ± one standard
error where every seed reaches the FD within the run (else only how many did). Variants must have the
same names in both files (`step_profile variants=djepa,mar,mar_arch,rows25`). Step times move by several percent
between quiet profiles on a small CPU: with several profiles (a comma list) each variant's step time is the median
of the profiles that time it.
"""

from __future__ import annotations

import json
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from djepa.benchmarks.aggregate import mean_se, steps_to_reach
from djepa.benchmarks.experiments import key_values
from djepa.cli.config import cli_errors
from djepa.errors import UsageError
from djepa.io import atomic_write_json

DEFAULTS = {"results": "", "profile": "", "reference": "mar", "out": ""}


def read_json(path: str, key: str) -> dict[str, Any]:
    """A JSON file given as `key=path`, with a one-line error naming the key and file."""
    if not path:
        raise UsageError(f"{key}= is required")
    try:
        return dict(json.loads(Path(path).read_text()))
    except (OSError, ValueError) as err:
        raise UsageError(f"{key}={path}: cannot read it as JSON ({err})") from err


def merged_profile(profiles: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One profile from several: per variant the median step time over the profiles that time it."""
    times: dict[str, list[float]] = {}
    for profile in profiles:
        for name, record in profile.get("variants", {}).items():
            times.setdefault(name, []).append(float(record["step_ms"]))
    return {"variants": {name: {"step_ms": statistics.median(ms), "profiles": len(ms)} for name, ms in times.items()}}


def seed_curves(variant: dict[str, Any]) -> list[list[dict[str, Any]]]:
    """Each seed's quality curve (a one-seed variant is its own)."""
    return [run["curve"] for run in variant.get("per_seed", [variant])]


def time_to_fd(results: dict[str, Any], profile: dict[str, Any], reference: str) -> dict[str, Any]:
    """Per variant: steps and seconds to the reference's final FD, from the mean curve and per seed."""
    variants, timed = results.get("variants", {}), profile.get("variants", {})
    if reference not in variants:
        raise UsageError(f"reference={reference}: not a variant of the results ({', '.join(variants)})")
    missing = [name for name in variants if name not in timed]
    if missing:
        raise UsageError(f"profile has no step time for {', '.join(missing)} (it has {', '.join(timed)})")
    target = float(variants[reference]["fd"])
    ref_steps = steps_to_reach(variants[reference]["curve"], target)
    ref_seconds = None if ref_steps is None else ref_steps * timed[reference]["step_ms"] / 1000
    rows = {}
    for name, variant in variants.items():
        ms = float(timed[name]["step_ms"])
        steps = steps_to_reach(variant["curve"], target)
        per_seed = [steps_to_reach(curve, target) for curve in seed_curves(variant)]
        reached = [s * ms / 1000 for s in per_seed if s is not None]
        # A mean over only the seeds that got there would drop the slowest: none unless every seed did.
        seconds_mean, seconds_se = None, None
        if len(reached) == len(per_seed):
            seconds_mean, se = mean_se(reached)
            seconds_se = se if len(reached) > 1 else None
        seconds = None if steps is None else steps * ms / 1000
        rows[name] = {
            "seeds": len(per_seed),
            "final_fd": float(variant["fd"]),
            "final_fd_se": variant.get("fd_se"),
            "steps": steps,
            "steps_per_seed": per_seed,
            "step_ms": ms,
            "seconds": seconds,
            "seconds_per_seed_mean": seconds_mean,
            "seconds_per_seed_se": seconds_se,
            "seeds_reaching": len(reached),
            "ratio": None if seconds is None or not ref_seconds else seconds / ref_seconds,
        }
    return {"reference": reference, "target_fd": target, "variants": rows}


def fmt(value: float | None, se: float | None = None, digits: int = 0) -> str:
    if value is None:
        return "never"
    return f"{value:.{digits}f}" + ("" if se is None else f" ± {se:.{digits}f}")


def table(report: dict[str, Any]) -> str:
    """The report as one markdown table."""
    lines = [
        f"Target: {report['reference']}'s final FD, {report['target_fd']:.2f}.",
        "",
        "| variant | seeds | final FD | steps to it (mean curve) | per seed | ms per step | seconds to it "
        "(mean curve) | per seed (reached) | over the reference |",
        "| --- | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: |",
    ]
    for name, row in report["variants"].items():
        per_seed = " / ".join(fmt(s) for s in row["steps_per_seed"])
        seconds = fmt(row["seconds_per_seed_mean"], row["seconds_per_seed_se"])
        reached = f"{seconds} ({row['seeds_reaching']}/{row['seeds']})"
        ratio = "never" if row["ratio"] is None else f"{row['ratio']:.2f}x"
        lines.append(
            f"| {name} | {row['seeds']} | {fmt(row['final_fd'], row['final_fd_se'], 2)} | {fmt(row['steps'])} | "
            f"{per_seed} | {row['step_ms']:.0f} | {fmt(row['seconds'])} | {reached} | {ratio} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> None:
    with cli_errors():
        args = key_values(list(sys.argv[1:] if argv is None else argv), DEFAULTS)
        results = read_json(args["results"], "results")
        profile = merged_profile([read_json(path, "profile") for path in args["profile"].split(",")])
        report = time_to_fd(results, profile, args["reference"])
        text = table(report)
        if args["out"]:
            out = Path(args["out"])
            out.mkdir(parents=True, exist_ok=True)
            atomic_write_json(out / "time_to_fd.json", report)
            (out / "time_to_fd.md").write_text(text)
        print(text, end="")


if __name__ == "__main__":
    main()
