"""Benchmark outputs a person reads first: quality curves, speed/memory bars, a Markdown table."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def write_plots(results: dict[str, Any], out: Path) -> None:
    variants = results["variants"]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for name, v in variants.items():
        steps = [p["step"] for p in v["curve"]]
        seeds = v.get("num_seeds", 1)
        label = name if seeds == 1 else f"{name} ({seeds} seeds, ±1 s.e.)"
        for ax, key in ((axes[0], "accuracy"), (axes[1], "fd")):
            mean = [p[key] for p in v["curve"]]
            (line,) = ax.plot(steps, mean, marker="o", label=label)
            if seeds > 1:
                se = [p.get(f"{key}_se", 0.0) for p in v["curve"]]
                lo, hi = [m - e for m, e in zip(mean, se)], [m + e for m, e in zip(mean, se)]
                ax.fill_between(steps, lo, hi, color=line.get_color(), alpha=0.2)
    reach = results.get("steps_to_reach")
    if reach:
        axes[1].axhline(reach["fd"], color="grey", linestyle=":", label=f"{reach['reference']} final FD")
    axes[0].set(xlabel="training step", ylabel="classifier accuracy on samples", title="accuracy (higher is better)")
    axes[1].set(xlabel="training step", ylabel="Fréchet distance (classifier features)", title="FD (lower is better)")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(f"{results['modality']}: quality against steps (not comparable with published FID)")
    fig.tight_layout()
    fig.savefig(out / "quality_curves.png", dpi=120)
    plt.close(fig)

    names = list(variants)
    metrics = [
        ("train_step_ms", "train step (ms)"),
        ("sample_ms_per_item", "sampling (ms / item)"),
        ("peak_mem_mb", "peak memory (MB)"),
    ]
    fig, axes = plt.subplots(1, len(metrics), figsize=(12, 3.5))
    for ax, (key, label) in zip(axes, metrics):
        ax.bar(names, [variants[n][key] for n in names], color=["C0", "C1", "C2", "C3"][: len(names)])
        ax.set_title(label)
    fig.tight_layout()
    fig.savefig(out / "speed_memory.png", dpi=120)
    plt.close(fig)


def fmt(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def pm(v: dict[str, Any], key: str, digits: int) -> str:
    """`mean ± se` when the variant ran several seeds, else the value alone."""
    se = v.get(f"{key}_se")
    return f"{v[key]:.{digits}f}" + (f" ± {se:.{digits}f}" if v.get("num_seeds", 1) > 1 and se is not None else "")


def seeds_line(results: dict[str, Any]) -> str:
    """How many seeds each variant ran: one number when all agree, else each variant's seeds (a combined report
    can pool variants run with different seeds)."""
    default = results.get("seeds", [0])
    per_variant = {name: v.get("seeds", default) for name, v in results["variants"].items()}
    lists = {tuple(s) for s in per_variant.values()}
    if len(lists) <= 1:  # the variants agree: say their count (a benchmark without variants: its own list)
        return str(len(lists.pop() if lists else default))
    return ", ".join(f"{name} {len(s)} ({', '.join(map(str, s))})" for name, s in per_variant.items())


def write_summary(results: dict[str, Any], path: Path) -> None:
    lines = [
        f"# Benchmark: {results['modality']}",
        "",
        f"Machine: {results['machine']}. Commit: {results['git_commit']}. "
        f"Classifier held-out accuracy on real data: {results['classifier_heldout_accuracy']:.3f}.",
        "",
        f"Seeds per variant: {seeds_line(results)} (scores are the mean ± one standard error).",
        "",
        "| variant | steps | accuracy | FD | IS | steps to reference FD | context use | train step ms | "
        "tokens/s | sample ms/item | peak MB | params | GFLOP/step |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, v in results["variants"].items():
        reach = v.get("steps_to_reference_fd")
        ctx = v.get("context_use_ratio")
        lines.append(
            f"| {name} | {v['steps']} | {pm(v, 'accuracy', 3)} | {pm(v, 'fd', 3)} | {v['inception_score']:.2f} | "
            f"{'never' if reach is None and 'steps_to_reference_fd' in v else fmt(reach, 0)} | "
            f"{'-' if ctx is None else pm(v, 'context_use_ratio', 3)} | "
            f"{v['train_step_ms']:.0f} | {v['tokens_per_s']:.0f} | {v['sample_ms_per_item']:.0f} | "
            f"{v['peak_mem_mb']:.0f} | {v['params'] / 1e6:.2f}M | {v['flops_per_step'] / 1e9:.1f} |"
        )
    reach = results.get("steps_to_reach")
    if reach:
        lines += [
            "",
            f"Steps to reference FD: where the variant's mean FD curve first reaches {reach['reference']}'s final "
            f"mean FD ({reach['fd']:.3f}), interpolated between checkpoints. Context use: the denoising loss with "
            "another same-class row's context over the loss with the row's own context (half the tokens visible, "
            "final checkpoint); higher means the prediction rests more on the visible tokens.",
        ]
    lines += ["", "Quality curves (accuracy / FD at each checkpoint, mean over seeds):", ""]
    for name, v in results["variants"].items():
        points = ", ".join(f"{p['step']}: {p['accuracy']:.2f} / {p['fd']:.2f}" for p in v["curve"])
        lines.append(f"- {name}: {points}")
    if results.get("standard_metric"):
        key = results["standard_metric"]
        values = ", ".join(f"{name} {v[key]:.3f}" for name, v in results["variants"].items())
        lines += ["", f"Standard metric `{key}` (local weights {results['standard_weights']}), final step: {values}."]
    elif results.get("standard_metrics"):
        lines += ["", f"Standard FID/FVD/FAD: {results['standard_metrics']}."]
    lines += ["", results["note"] + ".", ""]
    path.write_text("\n".join(lines))
