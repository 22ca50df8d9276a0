"""`train modality=M run_dir=DIR ...`: cache latents, train D-JEPA, write checkpoints and previews."""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import signal
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, cast

import torch
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from djepa import builders
from djepa.cli import init_from
from djepa.cli.config import cli_errors, compose_config, save_config
from djepa.cli.input_checks import check_inputs
from djepa.engine import distributed
from djepa.engine.adapter import Adapter, build_adapter, ensure_tokenizer, is_unconditional
from djepa.engine.checkpoint import CheckpointManager
from djepa.engine.model_config import build_model
from djepa.engine.resume_check import check_model_config, check_resume, clean_staging, trim_metrics
from djepa.engine.run_lock import RunLock, prepare_run_dir
from djepa.engine.runtime import resolve_precision
from djepa.engine.sampling import SamplingSettings, generate
from djepa.engine.tensorboard import TensorBoardLog
from djepa.engine.trainer import TrainConfig, Trainer
from djepa.errors import Terminated, UsageError, disk_problem
from djepa.nn.attention import set_attention_backend
from djepa.nn.model import DJEPA
from djepa.pipeline import Generation, decode_on, tokenizer_hash

# train.eval_every's scorer lives in the evaluation library, which sits above the commands: named, not imported.
TRAINING_EVAL = "djepa.benchmarks.training_eval"


def training_eval(cfg: DictConfig, adapter: Adapter) -> Callable[[DJEPA, int], dict[str, float]]:
    """The Trainer's `evaluate` callback (every rank holds one; rank 0 prepares its scorer now, before any step,
    so a bad standard_weights fails first, and alone runs it)."""
    scorer = importlib.import_module(TRAINING_EVAL).TrainingEval(cfg, adapter)
    if distributed.is_main():
        scorer.prepare()
    return cast(Callable[[DJEPA, int], dict[str, float]], scorer)


def train_config(cfg: DictConfig) -> TrainConfig:
    settings = cast(dict[str, Any], OmegaConf.to_container(cfg.train, resolve=True))
    try:
        return TrainConfig(
            **settings,
            denoise_weight=float(cfg.loss.denoise_weight),
            jepa_weight=float(cfg.loss.jepa_weight),
            jepa_rows=float(cfg.loss.get("jepa_rows", 1.0)),
            jepa_every=int(cfg.loss.get("jepa_every", 1)),
        )
    except (TypeError, ValueError) as err:
        raise UsageError(f"bad train config: {err}") from err


def write_class_grid(
    adapter: Adapter,
    model: DJEPA,
    cfg: DictConfig,
    path: Path,
    per_class: int,
    tensorboard: TensorBoardLog | None = None,
    tag: str = "preview",
    step: int = 0,
) -> Path:
    """One row per shown class (`sample.preview_classes` of them, evenly spaced), `per_class` samples each,
    decoded on the model's device and saved as the adapter's preview; with a TensorBoard log, the same preview
    logged there too (under `tag`, at `step`)."""
    classes = preview_classes(adapter.num_classes, int(cfg.sample.preview_classes))
    labels = classes.repeat_interleave(per_class)
    was_training = model.training
    model.eval()
    settings = SamplingSettings.from_config(cfg)
    if is_unconditional(adapter.class_names):  # one class: nothing for guidance to contrast
        settings = dataclasses.replace(settings, guidance_scale=1.0)
    tokens = generate(model, labels, settings, progress=False)
    model.train(was_training)
    decode_on(adapter, next(model.parameters()).device)
    media = adapter.decode_tokens(tokens)
    grid = adapter.save_grid(media, len(classes), path)
    if tensorboard is not None:
        rows = len(classes)
        view = Generation(media.detach().cpu(), labels.tolist(), adapter.class_names, rows, adapter, grid)
        tensorboard.preview(tag, view, step)
    return grid


def preview_classes(num_classes: int, shown: int) -> torch.Tensor:
    """`shown` class ids spread evenly over 0 .. num_classes - 1 (every class when there are no more)."""
    if shown >= num_classes:
        return torch.arange(num_classes)
    return torch.tensor([i * (num_classes - 1) // (shown - 1) for i in range(shown)] if shown > 1 else [0])


def decide_precision(cfg: DictConfig, device: torch.device, saved: str | None) -> str:
    """bf16 or fp32 for the whole run: `auto` keeps a resumed run's format, else is decided once here.

    `auto` times bf16 against fp32 at start-up, which can flip under load; deciding once per run and
    storing the answer in config.yaml keeps a run in one format across resumes.
    """
    requested = str(cfg.train.precision)
    if requested != "auto":
        return requested
    if saved in ("bf16", "fp32"):
        return saved
    return "bf16" if resolve_precision(device, "auto") == torch.bfloat16 else "fp32"


def _same_on_every_rank(value: Any) -> Any:
    if not torch.distributed.is_initialized():
        return value
    box = [value]
    torch.distributed.broadcast_object_list(box, src=0)
    return box[0]


def prepare(cfg: DictConfig, device: torch.device, run_dir: Path) -> tuple[int, dict[str, Any] | None]:
    """Rank 0, under the run lock, before anything is written: tidy the run_dir and check a resume.

    Returns the step a run resumes from (0 for a new run) and that checkpoint's state.
    """
    for path in clean_staging(run_dir):
        tqdm.write(f"removed {path.name}, left by an interrupted checkpoint write")
    checkpoints = CheckpointManager(run_dir)
    found = checkpoints.latest_valid()
    step, state = (int(found[1]["step"]), found[1]) if found else (0, None)
    # A corrupt checkpoint past the resume point would pass for the latest one: set it aside, never delete it.
    for path in checkpoints.set_aside_invalid(step):
        tqdm.write(f"{path.with_suffix('').name} is corrupt: moved aside to {path}; resuming from step {step}")
    saved = None
    if state is not None:
        for change in check_resume(cfg, run_dir, step, state):
            tqdm.write(f"resuming at step {step} with a changed setting: {change}")
        if cfg.get("init_from"):
            tqdm.write(f"run_dir {run_dir} holds a checkpoint at step {step}: resuming it (init_from starts new runs)")
        saved = state.get("train", {}).get("precision")
    cfg.train.precision = decide_precision(cfg, device, saved)
    return step, state


def run(cfg: DictConfig) -> dict[str, Any]:
    builders.set_plugins(cfg.get("plugins"))  # the command line's allow-list, never the run_dir's config.yaml
    set_attention_backend(cfg.attention_backend)
    device = distributed.init_from_env(cfg.device, float(cfg.train.distributed_timeout_minutes))
    run_dir = Path(cfg.run_dir)
    try:
        return run_locked(cfg, device, run_dir)
    except Exception as err:
        problem = disk_problem(err)
        if problem is None:
            raise
        raise UsageError(cannot_write(cfg, run_dir, *problem)) from err


def cannot_write(cfg: DictConfig, run_dir: Path, why: str, filename: str | None) -> str:
    """One line for a write that failed for space or permission: the file, what is kept, how to resume."""
    found = CheckpointManager(run_dir).latest_valid() if run_dir.is_dir() else None
    kept = f"the last valid checkpoint {found[0]} (step {found[1]['step']}) is intact" if found else "no checkpoint yet"
    where = filename or f"run_dir={run_dir} or home={cfg.home}"
    return f"cannot write {where}: {why}; {kept}: free space (or fix the folder) and run the same command to resume"


def run_locked(cfg: DictConfig, device: torch.device, run_dir: Path) -> dict[str, Any]:
    with contextlib.ExitStack() as stack:
        step, state = 0, None
        if distributed.is_main():
            # One writer per run_dir: taken before anything in it is read or written, held to the last sample.
            lock = stack.enter_context(RunLock(prepare_run_dir(run_dir)))
            if lock.previous:
                tqdm.write(f"run_dir {run_dir}: took over the lock left by {lock.previous}, which has ended")
            step, state = prepare(cfg, device, run_dir)
        cfg.train.precision = _same_on_every_rank(str(cfg.train.precision))
        # init_from is read (by every rank) only for a new run: a run_dir with a checkpoint resumes it.
        fresh = _same_on_every_rank(state is None)
        return train(cfg, device, run_dir, step, state, fresh and bool(cfg.get("init_from")))


def train(
    cfg: DictConfig,
    device: torch.device,
    run_dir: Path,
    step: int,
    state: dict[str, Any] | None,
    from_source: bool = False,
) -> dict:
    """Train on from `state` (a checkpoint), or from `init_from`'s weights when `from_source`, else from scratch."""
    settings = train_config(cfg)  # before any work, so a bad value costs nothing
    # The source's modality and tokenizer are checked before a missing tokenizer would be trained.
    source, notes = init_from.open_source(cfg) if from_source else (None, [])
    adapter = build_adapter(cfg)
    if settings.prefix_mask_prob > 0 and adapter.time_axis is None:
        raise UsageError(f"train.prefix_mask_prob: modality {cfg.modality.name} has no time axis to keep a prefix of")
    # Rank 0 trains a missing default tokenizer; then every rank encodes its own share of the latent cache
    # on its own device (collective under torchrun) and reads the finished cache.
    if distributed.is_main():
        ensure_tokenizer(cfg, adapter)
    distributed.barrier()
    time_axis = adapter.time_axis
    if settings.prefix_mask_prob > 0 and time_axis is not None and adapter.token_grid[time_axis] < 2:
        # Video's default keeps prefixes; a clip cut into one token along time has no prefix to keep.
        raise UsageError(
            f"train.prefix_mask_prob: the token grid {adapter.token_grid} has one position along time, no prefix "
            "to keep; set train.prefix_mask_prob=0 (or more frames / a shorter time patch)"
        )
    data = adapter.token_data(device=device, shard=True)
    torch.manual_seed(cfg.seed)  # the same initial weights on every rank
    model = build_model(cfg, adapter.token_dim, adapter.token_grid, adapter.num_classes)
    if source is not None:
        notes = [init_from.describe(source), *notes, *init_from.initialise(model, source, adapter.class_names)]
    if distributed.is_main():
        for note in notes:
            tqdm.write(note)
        if state is not None:
            check_model_config(run_dir, step, state, model.config)
        # Written only now, after every check: config.yaml never describes a run the checkpoints are not.
        save_config(cfg, run_dir / "config.yaml")
        dropped = trim_metrics(run_dir / "metrics.jsonl", step)
        if dropped:
            tqdm.write(f"metrics.jsonl: dropped {dropped} records past step {step}, which is resumed from")
    per_class = int(cfg.sample.preview_per_class)
    if distributed.is_main():
        head = model.config["head_config"]["_target_"].rsplit(".", 1)[-1]
        tqdm.write(
            f"{cfg.modality.name}: {len(data)} items, token grid {adapter.token_grid} x {adapter.token_dim}, "
            f"{model.num_params() / 1e6:.2f}M params, jepa={model.jepa}, head={head}, "
            f"{device} {settings.precision}"
        )
    with contextlib.ExitStack() as stack:
        # Rank 0's TensorBoard log (train.tensorboard=true), appended to from the step this run resumes at.
        tensorboard = None
        if settings.tensorboard and distributed.is_main():
            tensorboard = stack.enter_context(TensorBoardLog(run_dir, step))

        def preview(ema: DJEPA, step: int) -> None:
            path = run_dir / "previews" / f"step_{step:07d}"
            write_class_grid(adapter, ema, cfg, path, per_class, tensorboard, "preview", step)

        evaluate = training_eval(cfg, adapter) if settings.eval_every > 0 else None
        trainer = Trainer(
            model,
            data,
            settings,
            run_dir,
            device,
            preview,
            extra_state={
                "modality": cfg.modality.name,
                "class_names": adapter.class_names,
                # The pipeline refuses to decode with another tokenizer than the one the latents came from.
                "tokenizer_sha256": tokenizer_hash(cfg.modality.adapter.tokenizer.path),
            },
            tensorboard=tensorboard,
            token_grid=adapter.token_grid,
            time_axis=adapter.time_axis,
            evaluate=evaluate,
        )
        with stop_between_steps(trainer):
            last = trainer.fit()
        if per_class:
            ema = trainer.sampling_model()  # collective under FSDP
            if distributed.is_main():
                path = run_dir / "samples"
                grid = write_class_grid(adapter, ema, cfg, path, per_class, tensorboard, "samples", trainer.step)
                tqdm.write(f"samples: {grid}")
    return last


@contextlib.contextmanager
def stop_between_steps(trainer: Trainer) -> Iterator[None]:
    """SIGINT or SIGTERM (what schedulers send before a kill) stops at the next step boundary with a checkpoint.

    The signal only sets a flag; the check runs at the start of a step, where model, EMA, optimizer and
    step count agree, so the checkpoint resumes exactly. A second signal stops at once. One process only:
    under torchrun the ranks would reach the boundary at different steps, so the signal stops them at once.
    """
    if distributed.world_size() > 1:
        yield
        return
    received: list[int] = []

    def on_signal(signum: int, frame: Any) -> None:
        if received:
            raise Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()
        received.append(signum)
        tqdm.write(f"{signal.Signals(signum).name}: saving a checkpoint after this step (again to stop at once)")

    def before_step() -> None:
        if received:
            path = trainer.save()
            tqdm.write(f"saved checkpoint {path} at step {trainer.step}")
            raise Terminated() if received[0] == signal.SIGTERM else KeyboardInterrupt()

    trainer.before_step = before_step
    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        trainer.before_step = None


# Training checkpoints as it goes; a tokenizer trained first (no tokenizer yet) starts again.
RESUME_HINT = "interrupted; the last checkpoint is intact, run the same command to resume"


def main(argv: Sequence[str] | None = None) -> None:
    with cli_errors(RESUME_HINT):
        try:
            cfg = compose_config(sys.argv[1:] if argv is None else argv)
            check_inputs(cfg, "train")
            run(cfg)
        finally:
            distributed.shutdown()


if __name__ == "__main__":  # `python -m ...` answers --help / --cfg job as the console script does
    from djepa.cli import scripts

    scripts.train()
