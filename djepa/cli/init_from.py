"""`train init_from=PATH`: a new run that starts from another run's weights (fine-tuning).

PATH is a run directory (its newest valid checkpoint), an `export` folder, a checkpoint folder
(`RUN/checkpoints/step_N`) or a single weights file (safetensors, or a torch file that loads with
`weights_only=True`). The source must be of the same modality, tokenizer (by its recorded sha256) and
architecture; other classes re-initialise the class table, another token grid of the same rank
interpolates the per-axis positional tables. Only a new run reads it: a run_dir with checkpoints resumes.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from djepa.engine.checkpoint import CheckpointManager
from djepa.errors import UsageError
from djepa.nn.heads import FREE_HEAD_KEYS
from djepa.nn.model import DJEPA
from djepa.pipeline import EXPORT_INDEX, Pipeline, tokenizer_hash

# Model settings that change how a run trains, not the shapes or meaning of its weights.
FREE_MODEL_KEYS = frozenset(
    {
        "num_classes",  # the class table is re-initialised when the classes differ
        "grid",  # positional tables are interpolated
        "head_config",  # compared key by key
        "label_drop",
        "attn_drop",
        "proj_drop",
        "grad_checkpointing",
        "diffusion_batch_mul",
        "jepa_target_norm",
        "jepa_without_context",
    }
)
POS_TABLE = re.compile(r"(encoder_pos|predictor_pos)\.tables\.(\d+)")
CLASS_TABLE = "class_emb.weight"
# Wrappers around a state dict in a single checkpoint file, tried in this order per `init_from_weights`.
FILE_WRAPPERS = {"ema": ("ema", "model", "state_dict"), "online": ("model", "state_dict")}


@dataclass
class Source:
    """What a fine-tune starts from; None where the source does not record it (a bare weights file)."""

    path: Path
    weights: dict[str, torch.Tensor]
    model_config: dict[str, Any] | None = None
    class_names: list[str] | None = None
    modality: str | None = None
    tokenizer_sha256: str | None = None
    tokenizer_path: str | None = None
    step: int | None = None
    which: str = "ema"  # ema, online, or the file's tensors


def _saved_tokenizer_path(config_path: Path) -> str | None:
    """The tokenizer path a run's config.yaml names, for messages; None when it cannot be read."""
    try:
        config = OmegaConf.load(config_path)
        value = OmegaConf.select(config, "modality.adapter.tokenizer.path", default=None)
    except Exception:  # a missing or damaged config only costs the path in a message
        return None
    return None if value is None else str(value)


def _from_checkpoint(
    path: Path, directory: Path, state: dict[str, Any], which: str, weights: dict[str, torch.Tensor] | None = None
) -> Source:
    """A checkpoint folder's weights (`ema` or `model`, or `weights` read from a file in it) and its records."""
    group = "ema" if which == "ema" else "model"
    if weights is None and not (directory / f"{group}.safetensors").is_file():
        raise UsageError(f"init_from={path}: {directory} holds no {group}.safetensors (a sharded checkpoint?)")
    return Source(
        path,
        CheckpointManager.load_tensors(directory, group) if weights is None else weights,
        dict(state.get("model_config") or {}) or None,
        state.get("class_names"),
        state.get("modality"),
        state.get("tokenizer_sha256"),
        _saved_tokenizer_path(directory.parent.parent / "config.yaml"),
        int(state["step"]) if "step" in state else None,
        which,
    )


def _verified(path: Path, directory: Path) -> dict[str, Any]:
    try:
        return CheckpointManager.verify(directory)
    except ValueError as err:
        raise UsageError(f"init_from={path}: the checkpoint is corrupt ({err})") from err


def load_tensor_file(path: Path, which: str) -> dict[str, torch.Tensor]:
    """A single weights file's tensors: safetensors, or a torch file read without running pickled code."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as err:  # safetensors raises its own SafetensorError
            raise UsageError(f"init_from={path} is not a readable safetensors file ({err})") from err
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # pickle.UnpicklingError (code refused), RuntimeError (not a torch file), ...
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise UsageError(f"init_from={path} does not load as plain tensors without pickle ({first})") from err
    if isinstance(data, Mapping) and not all(isinstance(v, torch.Tensor) for v in data.values()):
        data = next((data[k] for k in FILE_WRAPPERS[which] if isinstance(data.get(k), Mapping)), data)
    if not isinstance(data, Mapping) or not data or not all(isinstance(v, torch.Tensor) for v in data.values()):
        raise UsageError(f"init_from={path} holds no state dict (a mapping of parameter names to tensors)")
    return dict(data)


def read_source(path: Path, which: str = "ema") -> Source:
    """The weights and what the source records about them; a one-line UsageError naming `path` otherwise."""
    if not path.exists():
        raise UsageError(f"init_from={path} does not exist")
    if path.is_file():
        # A file beside its checkpoint's state.json or its export's config.json keeps what those record.
        weights = load_tensor_file(path, which)
        if (path.parent / "state.json").is_file():
            source = _from_checkpoint(path, path.parent, _verified(path, path.parent), which, weights)
        elif (path.parent.parent / EXPORT_INDEX).is_file():
            source = dataclasses.replace(read_source(path.parent.parent), path=path, weights=weights)
        else:
            source = Source(path, weights)
        return dataclasses.replace(source, which="file")
    if (path / EXPORT_INDEX).is_file():
        if which != "ema":
            raise UsageError(f"init_from_weights={which}: the export {path} holds only the EMA weights")
        config, state, weights, digest = Pipeline._read_export(path)
        tokenizer = OmegaConf.select(config, "modality.adapter.tokenizer.path", default=None)
        return Source(
            path,
            weights,
            state["model_config"],
            state["class_names"],
            state["modality"],
            digest,
            None if tokenizer is None else str(tokenizer),
            state.get("step"),
        )
    if (path / "state.json").is_file():
        return _from_checkpoint(path, path, _verified(path, path), which)
    found = CheckpointManager(path).latest_valid()
    if found is None:
        raise UsageError(
            f"init_from={path} is no run_dir with a valid checkpoint, export folder, checkpoint folder or weights file"
        )
    return _from_checkpoint(path, *found, which)


def check_source(source: Source, cfg: DictConfig) -> list[str]:
    """Refuse another modality or tokenizer than this run's, in one line naming both; notes for the log."""
    name = cfg.modality.name
    if source.modality is not None and source.modality != name:
        raise UsageError(
            f"init_from={source.path} holds a modality={source.modality} model, not {name}: "
            "fine-tuning stays within one modality"
        )
    if source.tokenizer_sha256 is None:
        return [f"init_from={source.path} records no tokenizer: not checked against this run's"]
    ours = str(cfg.modality.adapter.tokenizer.path)
    theirs = f"{source.tokenizer_path or 'its tokenizer'} (sha256 {source.tokenizer_sha256[:12]}…)"
    # A user folder's default tokenizer is its own (another path): the fix is to name the source's.
    fix = f"modality.adapter.tokenizer.path={source.tokenizer_path}" if source.tokenizer_path else "the same tokenizer"
    if not Path(ours).exists():
        raise UsageError(
            f"init_from={source.path} was trained with tokenizer {theirs}, this run's {ours} does not exist: "
            f"fine-tuning needs the source's tokenizer ({fix})"
        )
    digest = tokenizer_hash(ours)
    if digest != source.tokenizer_sha256:
        raise UsageError(
            f"init_from={source.path} was trained with tokenizer {theirs}, this run's is {ours} "
            f"(sha256 {digest[:12]}…): fine-tuning needs the source's tokenizer ({fix})"
        )
    return []


def open_source(cfg: DictConfig) -> tuple[Source, list[str]]:
    """`init_from`'s weights, checked against this run's modality and tokenizer; notes for the log."""
    source = read_source(Path(str(cfg.init_from)), str(cfg.get("init_from_weights", "ema")))
    return source, check_source(source, cfg)


def _key_name(key: str) -> str:
    """The config key a model setting comes from."""
    return {"token_dim": "token_dim (from the tokenizer)", "jepa": "loss.jepa_weight (D-JEPA or MAR mode)"}.get(
        key, f"model.{key}"
    )


def check_architecture(source: Source, model: DJEPA) -> None:
    """The source's architecture must be this run's: a differing key is a one-line UsageError naming it."""
    if source.model_config is None:
        return  # a bare file: its tensors' shapes are checked when they are loaded
    saved, new = json.loads(json.dumps(source.model_config)), json.loads(json.dumps(model.config))  # tuples -> lists

    def refuse(key: str, old: Any, value: Any) -> UsageError:
        return UsageError(
            f"init_from={source.path}: {key} is {old} in the source and {value} in this run; fine-tuning keeps "
            "the source's architecture (give its model= and model.* settings)"
        )

    for key in sorted(saved):  # a setting the source lacks (added by a later djepa) is no change, as on resume
        if key not in FREE_MODEL_KEYS and saved.get(key) != new.get(key):
            raise refuse(_key_name(key), saved.get(key), new.get(key))
    old_head, new_head = dict(saved.get("head_config") or {}), dict(new.get("head_config") or {})
    for key in sorted(old_head):
        if key not in FREE_HEAD_KEYS and old_head.get(key) != new_head.get(key):
            raise refuse(f"loss.head.{key}", old_head.get(key), new_head.get(key))
    if len(saved.get("grid", model.grid)) != len(model.grid):
        raise UsageError(
            f"init_from={source.path}: its token grid {tuple(saved['grid'])} has another rank than this run's "
            f"{model.grid}; positional tables interpolate only along the same axes"
        )


def resize_table(table: torch.Tensor, size: int) -> torch.Tensor:
    """A per-axis positional table [n, dim] at `size` rows, linearly interpolated (as the model does at sampling)."""
    resized = torch.nn.functional.interpolate(table.float().T[None], size=size, mode="linear", align_corners=True)
    return resized[0].T.to(table.dtype).contiguous()


def _names(names: list[str] | None, count: int) -> str:
    if names is None:
        return f"{count} classes (names not recorded)"
    shown = ", ".join(names[:4]) + (", …" if len(names) > 4 else "")
    return f"{len(names)} classes ({shown})"


def initialise(model: DJEPA, source: Source, class_names: list[str]) -> list[str]:
    """Load `source` into `model` (built for this run's data and grid); what was adapted, one line each."""
    check_architecture(source, model)
    expected = model.state_dict()
    weights = dict(source.weights)
    notes = []
    table = weights.get(CLASS_TABLE)
    same_classes = (
        source.class_names == list(class_names)
        if source.class_names is not None
        else table is not None and table.shape == expected[CLASS_TABLE].shape
    )
    reinitialised = not same_classes and table is not None
    if table is not None and reinitialised:
        del weights[CLASS_TABLE]  # the freshly built model's table, one row per new class, stays
        notes.append(
            f"init_from: this data's {_names(list(class_names), len(class_names))} are not the source's "
            f"{_names(source.class_names, table.shape[0])}: the class embeddings are re-initialised "
            f"({len(class_names)} rows)"
        )
    resized = False
    for key, value in list(weights.items()):
        if POS_TABLE.fullmatch(key) and key in expected and value.ndim == 2 and expected[key].ndim == 2:
            size = expected[key].shape[0]
            if value.shape[0] != size and value.shape[1] == expected[key].shape[1]:
                weights[key] = resize_table(value, size)
                resized = True
    if resized:
        old = tuple(int(t.shape[0]) for k, t in sorted(source.weights.items()) if k.startswith("encoder_pos.tables."))
        notes.append(
            f"init_from: the source's token grid {old} is {model.grid} here: its positional tables are "
            "interpolated along each axis"
        )
    missing = [k for k in expected if k not in weights and not (reinitialised and k == CLASS_TABLE)]
    unexpected = [k for k in weights if k not in expected]
    if missing or unexpected:
        what = f"lacks {missing[0]}" if missing else f"has {unexpected[0]}, which this model lacks"
        more = len(missing) + len(unexpected) - 1
        raise UsageError(
            f"init_from={source.path} {what}{f' (and {more} more)' if more else ''}: not this architecture"
        )
    for key, value in weights.items():
        if value.shape != expected[key].shape:
            raise UsageError(
                f"init_from={source.path}: {key} is {tuple(value.shape)} there and {tuple(expected[key].shape)} "
                "here: not this architecture"
            )
    model.load_state_dict(weights, strict=False)
    return notes


def describe(source: Source) -> str:
    """The log line naming what a fine-tune starts from."""
    which = {"ema": "EMA weights", "online": "online weights", "file": "weights"}[source.which]
    at = f" at step {source.step}" if source.step is not None else ""
    return f"init_from: a new run from {source.path}'s {which}{at} (fresh optimizer, step 0)"
