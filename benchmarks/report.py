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
        axes[0].plot(steps, [p["accuracy"] for p in v["curve"]], marker="o", label=name)
        axes[1].plot(steps, [p["fd"] for p in v["curve"]], marker="o", label=name)
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


def write_summary(results: dict[str, Any], path: Path) -> None:
    lines = [
        f"# Benchmark: {results['modality']}",
        "",
        f"Machine: {results['machine']}. Commit: {results['git_commit']}. "
        f"Classifier held-out accuracy on real data: {results['classifier_heldout_accuracy']:.3f}.",
        "",
        "| variant | steps | accuracy | FD | IS | train step ms | tokens/s | sample ms/item | peak MB | params | "
        "GFLOP/step |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, v in results["variants"].items():
        lines.append(
            f"| {name} | {v['steps']} | {v['accuracy']:.3f} | {v['fd']:.3f} | {v['inception_score']:.2f} | "
            f"{v['train_step_ms']:.0f} | {v['tokens_per_s']:.0f} | {v['sample_ms_per_item']:.0f} | "
            f"{v['peak_mem_mb']:.0f} | {v['params'] / 1e6:.2f}M | {v['flops_per_step'] / 1e9:.1f} |"
        )
    lines += ["", "Quality curves (accuracy / FD at each checkpoint):", ""]
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
