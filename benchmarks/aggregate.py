"""Several seeds of one variant as one result: means with standard errors, and steps to reach an FD."""

from __future__ import annotations

import math
from typing import Any

# Per-checkpoint and final scores that get a mean and a standard error over seeds.
SCORES = ("accuracy", "fd", "inception_score")


def mean_se(values: list[float]) -> tuple[float, float]:
    """Mean and standard error of the mean (0 for a single value)."""
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, 0.0
    var = sum((v - mean) ** 2 for v in values) / (n - 1)
    return mean, math.sqrt(var / n)


def aggregate_seeds(per_seed: list[dict[str, Any]]) -> dict[str, Any]:
    """One variant's results over seeds: numbers averaged, SCORES with `_se`, the mean curve, and every seed."""
    first = per_seed[0]
    out: dict[str, Any] = {}
    for key, value in first.items():
        if key in ("curve", "steps", "params", "flops_per_step") or not isinstance(value, (int, float)):
            out[key] = value
            continue
        values = [float(r[key]) for r in per_seed]
        out[key], se = mean_se(values)
        if key in SCORES or key.startswith(("context_use", "denoise_loss")):
            out[f"{key}_se"] = se
    steps = [p["step"] for p in first["curve"]]
    for r in per_seed[1:]:
        if [p["step"] for p in r["curve"]] != steps:
            raise ValueError("seeds of one variant must share their checkpoint steps")
    curve = []
    for i, step in enumerate(steps):
        point: dict[str, Any] = {"step": step}
        for key in SCORES:
            point[key], point[f"{key}_se"] = mean_se([r["curve"][i][key] for r in per_seed])
        curve.append(point)
    out["curve"] = curve
    out["num_seeds"] = len(per_seed)
    if len(per_seed) > 1:
        out["per_seed"] = per_seed
    return out


def steps_to_reach(curve: list[dict[str, Any]], target_fd: float) -> float | None:
    """The first step where the (mean) FD curve falls to `target_fd`, interpolated linearly between
    checkpoints; None if it never does."""
    prev = None
    for point in curve:
        if point["fd"] <= target_fd:
            if prev is None or prev["fd"] == point["fd"]:
                return float(point["step"])
            frac = (prev["fd"] - target_fd) / (prev["fd"] - point["fd"])
            return prev["step"] + frac * (point["step"] - prev["step"])
        prev = point
    return None
