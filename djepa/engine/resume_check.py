"""What may change when a run resumes, and tidying a run_dir before it does.

A resumed run continues the weights in its checkpoints, so everything that shapes those weights'
meaning (the model, its loss and head, the modality, its data and tokenizer, the seed that picks
the data) must be what the run was started with; anything else (how long, how often to save or
log, the number format, the device, sampling settings) may change and is reported.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any, cast

from omegaconf import DictConfig, OmegaConf

from djepa.errors import UsageError
from djepa.nn.heads import FREE_HEAD_KEYS

# Prefixes of keys that define the run; a change means a different model or data. The tokenizer the latents
# come from is `modality.adapter.tokenizer.*` (path, shift, scale); the top-level `tokenizer.*` only says how
# to train a missing default one, which has been trained by the time a run has a checkpoint to resume.
FROZEN = ("modality.", "model.", "loss.", "seed")
# Keys under those prefixes that only touch sampling or where a cache lives, not the weights.
FREE_UNDER_FROZEN = ("modality.adapter.cache_dir", "loss.head.sampling_steps")
SHOWN = 4  # changes named in one line; the rest are counted


def flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    """{'model.num_heads': 4, ...} from a nested container; lists are leaves."""
    if isinstance(node, dict):
        out: dict[str, Any] = {}
        for key, value in node.items():
            out |= flatten(value, f"{prefix}{key}.")
        return out
    return {prefix[:-1]: node}


def is_frozen(key: str) -> bool:
    if key in FREE_UNDER_FROZEN:
        return False
    return any(key == p.rstrip(".") or key.startswith(p) for p in FROZEN)


def config_changes(saved: DictConfig, new: DictConfig) -> tuple[list[str], list[str]]:
    """(frozen, free) changes, each as 'key old -> new'. Keys the saved config lacks (added by a later
    version of djepa) are not changes; keys it has that the new one lacks are."""
    old = flatten(OmegaConf.to_container(saved, resolve=True))
    cur = flatten(OmegaConf.to_container(new, resolve=True))
    frozen: list[str] = []
    free: list[str] = []
    for key, before in old.items():
        after = cur.get(key, "(absent)")
        if key == "train.precision" and after == "auto":
            continue  # auto on resume means: keep the run's decided format
        if after != before:
            (frozen if is_frozen(key) else free).append(f"{key} {before} -> {after}")
    return frozen, free


def _summary(changes: list[str]) -> str:
    more = len(changes) - SHOWN
    return ", ".join(changes[:SHOWN]) + (f" and {more} more" if more > 0 else "")


def check_resume(cfg: DictConfig, run_dir: Path, step: int, state: dict[str, Any]) -> list[str]:
    """Refuse to resume `run_dir` (whose newest valid checkpoint is `step`, with `state`) under a config
    that changes the model or data; the allowed changes, for the log."""
    hint = "start a new run_dir, or drop these overrides to resume"
    trained_on = state.get("modality")
    if trained_on and trained_on != cfg.modality.name:
        raise UsageError(
            f"run_dir {run_dir} holds a modality={trained_on} run at step {step}, not {cfg.modality.name}: {hint}"
        )
    saved_path = run_dir / "config.yaml"
    if not saved_path.is_file():
        return []  # an older run without config.yaml: the model check after building still guards the weights
    saved = cast(DictConfig, OmegaConf.load(saved_path))  # a run's config is a mapping
    frozen, free = config_changes(saved, cfg)
    if frozen:
        raise UsageError(
            f"run_dir {run_dir} was trained to step {step} with other settings: {_summary(frozen)}; {hint}"
        )
    return free


def _normalise(value: Any) -> Any:
    return json.loads(json.dumps(value))  # tuples -> lists, as the checkpoint's JSON holds them


def check_model_config(run_dir: Path, step: int, state: dict[str, Any], model_config: dict[str, Any]) -> None:
    """The built model must be the checkpoint's (token dim and grid come from the tokenizer and data)."""
    saved = _normalise(dict(state.get("model_config", {})))
    new = _normalise(model_config)
    saved_head, new_head = saved.get("head_config"), new.get("head_config")
    if isinstance(saved_head, dict) and isinstance(new_head, dict):
        # A head setting the checkpoint lacks (added to its config by a later version of djepa) is no change,
        # as in config_changes; nor is a sampling-only one (steps, sampler): it does not touch the weights.
        new["head_config"] = {k: v for k, v in new_head.items() if k in saved_head and k not in FREE_HEAD_KEYS}
        saved["head_config"] = {k: v for k, v in saved_head.items() if k not in FREE_HEAD_KEYS}
    keys = sorted(set(saved) | set(new))
    changed = [f"{k} {saved.get(k)} -> {new.get(k)}" for k in keys if saved.get(k) != new.get(k)]
    if changed:
        raise UsageError(
            f"run_dir {run_dir} holds a different model at step {step} ({_summary(changed)}): "
            "start a new run_dir, or use the run's settings to resume"
        )


def trim_metrics(path: Path, step: int) -> int:
    """Drop records past `step` (written after the checkpoint a run resumes from), so a resumed run does not
    repeat steps; a torn last line from a crash goes too. Returns the number of lines dropped."""
    if not path.is_file():
        return 0
    lines = path.read_text().splitlines()
    kept = []
    for line in lines:
        try:
            if int(json.loads(line)["step"]) <= step:
                kept.append(line)
        except (ValueError, KeyError, TypeError):
            continue
    if len(kept) == len(lines):
        return 0
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text("".join(f"{line}\n" for line in kept))
    os.replace(tmp, path)
    return len(lines) - len(kept)


def clean_staging(run_dir: Path) -> list[Path]:
    """Remove `.staging_*` checkpoint folders a crash or a full disk left; safe only under the run lock."""
    root = run_dir / "checkpoints"
    if not root.is_dir():
        return []
    leftovers = [p for p in root.iterdir() if p.name.startswith(".staging_")]
    for path in leftovers:
        shutil.rmtree(path, ignore_errors=True)
    return leftovers
