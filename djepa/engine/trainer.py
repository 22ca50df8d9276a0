"""One clear training loop: masks, EMA targets, D-JEPA loss, AdamW, EMA, checkpoints, resume."""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import math
import resource
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch.distributed.checkpoint.state_dict import get_model_state_dict, set_model_state_dict
from torch.nn.parallel import DistributedDataParallel
from torch.profiler import record_function
from tqdm import tqdm

from djepa import schema
from djepa.engine import distributed, sharded_checkpoint
from djepa.engine.checkpoint import CheckpointManager, flatten_optimizer, unflatten_optimizer
from djepa.engine.data import TokenData
from djepa.engine.runtime import autocast, resolve_precision
from djepa.engine.tensorboard import TensorBoardLog
from djepa.io import sha256
from djepa.nn.heads import TokenHead
from djepa.nn.masking import prefix_mask, training_mask
from djepa.nn.model import DJEPA, LossDraws


@dataclass
class TrainConfig:
    steps: int = 1000
    batch_size: int = 64  # the global batch of one forward/backward pass (all ranks together)
    # Each optimizer step accumulates the gradients of K such batches: the update of one batch K times larger.
    grad_accum_steps: int = 1
    blr: float = 1e-4  # the base lr, read only when lr is None (the paper's rule)
    lr: float | None = None  # absolute; defaults to blr * effective_batch / 256
    warmup_steps: int = 100
    lr_schedule: str = "constant"  # or cosine
    min_lr: float = 0.0
    weight_decay: float = 0.02
    grad_clip: float = 3.0
    adam_eps: float = 1e-8
    ema_decay: float = 0.9999  # the sampling EMA, warmed up as min(ema_decay, (1 + step) / (10 + step))
    ema_warmup: bool = True  # false: ema_decay from the first step, as the references' update_ema
    # The JEPA teacher. "separate": an EMA of the encoder of its own, its rate ramped linearly from
    # teacher_ema_start to teacher_ema_end over train.steps (I-JEPA); start = end = 0.9999 is the reference's
    # constant rate. "sampling_ema": targets from the sampling EMA (fast: the teacher is nearly the student).
    teacher: str = "separate"
    teacher_ema_start: float = 0.996
    teacher_ema_end: float = 1.0
    teacher_ramp_steps: int = 0  # the ramp's length; 0: train.steps (fix it to resume with more steps exactly)
    grad_probe_every: int = 50  # every N steps log each loss's gradient norm on the shared trunk; 0: never
    denoise_weight: float = 1.0
    jepa_weight: float = 1.0
    jepa_rows: float = 1.0  # share of a batch's rows the JEPA term (teacher pass, projector) is computed on
    jepa_every: int = 1  # the JEPA term on every k-th step only; the steps between train as MAR mode
    mask_ratio_min: float = 0.7
    # Share of batches that get a prefix mask (the start of the time axis visible, continuation practice) instead
    # of the random one; only for adapters with a time axis (video, audio), which the Trainer is told.
    prefix_mask_prob: float = 0.0
    precision: str = "auto"
    seed: int = 0
    log_every: int = 10
    checkpoint_every: int = 500
    keep_checkpoints: int = 3
    preview_every: int = 0
    # Every eval_every steps (0: never) the `evaluate` callback scores the sampling EMA on rank 0; its record
    # (eval_* keys) goes to metrics.jsonl and TensorBoard beside the step's.
    eval_every: int = 0
    eval_samples: int = 100
    max_bad_steps: int = 5
    # Also log the metrics.jsonl records and the previews to run_dir/tensorboard (djepa.engine.tensorboard). The
    # train command opens the writer on rank 0 and hands it to the Trainer, which only passes records on.
    tensorboard: bool = False
    parallel: str = "ddp"  # under torchrun: ddp (replicas) or fsdp (sharded, for the L and H sizes)
    distributed_timeout_minutes: float = 60.0  # read when the process group forms (train command), before this
    compile: bool = False  # torch.compile each transformer and denoiser block
    compile_backend: str = "inductor"
    # auto: sharded (torch.distributed.checkpoint, each rank its shard) under FSDP on several ranks, else full
    # (gathered safetensors). Resume reads either, whatever this says.
    checkpoint_format: str = "auto"

    # "reference": no decay on the reference's no_weight_decay set (NO_DECAY_MODULES); "embeddings": only on the
    # embeddings and tables (an ablation); "mar": MAR's set, 1-D tensors and the denoising head only.
    no_decay: str = "reference"

    def __post_init__(self) -> None:
        """The same checks as the command line's, from the schema (a Trainer may be built in code)."""
        values = asdict(self)
        losses = {k: values.pop(k) for k in ("denoise_weight", "jepa_weight", "jepa_rows", "jepa_every")}
        for key, value, problem in (
            *schema.section_problems(schema.TrainSettings, values, "train."),
            *schema.section_problems(schema.LossSettings, losses, "loss."),
        ):
            raise ValueError(f"{key}={value!r} {problem}")

    @property
    def effective_batch(self) -> int:
        """The rows one optimizer step learns from: batch_size times grad_accum_steps."""
        return self.batch_size * self.grad_accum_steps

    @property
    def peak_lr(self) -> float:
        return self.lr if self.lr is not None else self.blr * self.effective_batch / 256


class NonFiniteLoss(RuntimeError):
    pass


def peak_memory_mb(device: torch.device) -> float:
    """Peak GPU memory allocated on CUDA, peak resident set size of the process on CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def lr_at(step: int, config: TrainConfig) -> float:
    if step < config.warmup_steps:
        return config.peak_lr * (step + 1) / config.warmup_steps
    if config.lr_schedule == "constant":
        return config.peak_lr
    progress = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
    return config.min_lr + (config.peak_lr - config.min_lr) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


# The set excluded before the fidelity fixes, for `train.no_decay=embeddings` (an ablation): class and fake-class
# embeddings, buffer, mask token, positional tables.
EMBEDDING_MODULES = (
    "class_emb",
    "fake_class",
    "buffer",
    "mask_token",
    "encoder_pos",
    "predictor_pos",
    "predictor_buffer_pos",
    "diffusion_pos",
)
# The reference's no_weight_decay set (models/djepa.py) in our names: the denoising head, the JEPA projector, the
# token and predictor embeddings, and the embeddings above.
NO_DECAY_MODULES = ("head", "jepa_proj", "token_proj", "predictor_embed", *EMBEDDING_MODULES)


def param_groups(model: torch.nn.Module, weight_decay: float, no_decay_set: str = "reference") -> list[dict[str, Any]]:
    """Weight decay on the transformer blocks' matrices only; none on biases, norms or NO_DECAY_MODULES."""
    # MAR's set (util/misc.py add_weight_decay): only 1-D tensors and the denoising head go undecayed.
    excluded = {"reference": NO_DECAY_MODULES, "mar": ("head",)}.get(no_decay_set, EMBEDDING_MODULES)
    decay: list[torch.nn.Parameter] = []
    no_decay: list[torch.nn.Parameter] = []
    for name, p in model.named_parameters():
        skip = p.ndim < 2 or name.split(".", 1)[0] in excluded
        (no_decay if skip else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def teacher_decay(step: int, config: TrainConfig) -> float:
    """The teacher's EMA rate at `step`: linear from teacher_ema_start to teacher_ema_end over train.steps."""
    progress = min(1.0, step / max(1, config.teacher_ramp_steps or config.steps))
    return config.teacher_ema_start + (config.teacher_ema_end - config.teacher_ema_start) * progress


def trunk_parameters(model: DJEPA) -> list[torch.nn.Parameter]:
    """The parameters both losses reach: everything but the denoising head and the JEPA projector."""
    return [p for n, p in model.named_parameters() if n.split(".", 1)[0] not in ("head", "jepa_proj")]


def compile_blocks(model: DJEPA, backend: str = "inductor") -> None:
    """Regional compilation: each block alone, with dynamic shapes, since visible counts change per step."""
    # The gradient probe differentiates each loss with retain_graph=True, which AOTAutograd's donated buffers
    # (reusing a backward's saved tensors as its outputs) forbid; they save memory only.
    import torch._functorch.config as functorch_config

    functorch_config.donated_buffer = False
    for block in model.repeated_blocks():
        block.compile(backend=backend, dynamic=True)


def step_seed(seed: int, step: int) -> int:
    return (seed * 1_000_003 + step) % (2**63 - 1)


def rank_seed(seed: int, step: int, rank: int) -> int:
    """The seed of a step's in-model draws (dropout, label drop, timesteps, noise) on `rank`: rank 0 keeps
    step_seed, so one process draws as it always has; other ranks mix in their rank, so no two ranks draw alike."""
    base = step_seed(seed, step)
    return base if rank == 0 else (base ^ (rank * 0x9E3779B97F4A7C15)) % (2**63 - 1)


def stream_seed(stream: str, seed: int, step: int, rank: int) -> int:
    """The seed of a named random stream of `rank` at `step`: a hash, so no two streams, steps or ranks share one
    (nor with step_seed and rank_seed) but by a 2**-63 chance."""
    digest = hashlib.blake2b(f"{stream}:{seed}:{step}:{rank}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") % (2**63 - 1)


def noise_seed(seed: int, step: int, rank: int) -> int:
    """The seed of the posterior noise `rank` adds to its rows at `step`."""
    return stream_seed("posterior noise", seed, step, rank)


def order_seed(seed: int, step: int, rank: int) -> int:
    """The seed of the mask orders of `rank`'s rows at `step`, for ranks other than 0 (rank 0 draws them from
    step_seed's stream after the batch's shared draws, as one process always has)."""
    return stream_seed("mask orders", seed, step, rank)


class EpochSampler:
    """The data order as a function of (seed, step): a fresh permutation per epoch, seeded by the epoch (so a
    resumed run reads what the uninterrupted one read, with no state to save), drawn once per epoch."""

    def __init__(self, num_items: int, seed: int):
        self.num_items, self.seed = num_items, seed
        self._perms: dict[int, torch.Tensor] = {}

    def permutation(self, epoch: int) -> torch.Tensor:
        if epoch not in self._perms:
            if len(self._perms) >= 2:  # a batch spans at most the epoch it starts in and the next
                del self._perms[min(self._perms)]
            gen = torch.Generator().manual_seed(step_seed(self.seed, -1 - epoch))
            self._perms[epoch] = torch.randperm(self.num_items, generator=gen)
        return self._perms[epoch]

    def batch(self, batch_size: int, step: int) -> torch.Tensor:
        """The item indices of `step`'s global batch."""
        start = step * batch_size
        parts: list[torch.Tensor] = []
        taken = 0
        while taken < batch_size:
            epoch, offset = divmod(start + taken, self.num_items)
            part = self.permutation(epoch)[offset : offset + batch_size - taken]
            parts.append(part)
            taken += len(part)
        return torch.cat(parts)


def batch_indices(num_items: int, batch_size: int, seed: int, step: int) -> torch.Tensor:
    """`step`'s global batch (EpochSampler, without keeping its permutations)."""
    return EpochSampler(num_items, seed).batch(batch_size, step)


class Trainer:
    def __init__(
        self,
        model: DJEPA,
        data: TokenData,
        config: TrainConfig,
        run_dir: str | Path,
        device: torch.device,
        preview: Callable[[DJEPA, int], None] | None = None,
        extra_state: dict[str, Any] | None = None,
        tensorboard: TensorBoardLog | None = None,
        token_grid: tuple[int, ...] | None = None,
        time_axis: int | None = None,
        evaluate: Callable[[DJEPA, int], dict[str, float]] | None = None,
    ):
        # Prefix masks (train.prefix_mask_prob) need to know which token-grid axis is time.
        if config.prefix_mask_prob > 0 and (token_grid is None or time_axis is None):
            raise ValueError("train.prefix_mask_prob needs a modality with a time axis (video, audio)")
        self.token_grid, self.time_axis = token_grid, time_axis
        self.model = model.to(device)
        self.ema = copy.deepcopy(self.model).eval().requires_grad_(False)
        # MAR mode is decided once, when the model is built (loss.jepa_weight=0: no projector); here it only
        # follows the model: a JEPA term with weight 0 would cost the teacher pass for nothing.
        if model.jepa and config.jepa_weight <= 0:
            raise ValueError("train.jepa_weight=0 is MAR mode: build the model with jepa=False (build_model does)")
        self.use_jepa = model.jepa
        # The JEPA teacher: the sampling EMA, or an EMA of its own that moves slowly (DESIGN.md section 3).
        # Copied before any wrapping: FSDP modules cannot be deep-copied.
        self.teacher = None
        if self.use_jepa and config.teacher == "separate":
            self.teacher = copy.deepcopy(self.model).eval().requires_grad_(False)
        if config.compile:
            compile_blocks(self.model, config.compile_backend)
        self.sharded = config.parallel == "fsdp" and distributed.world_size() > 1
        self.dtype = resolve_precision(device, config.precision)
        # What the step calls; under FSDP both models are sharded in place, before the optimizer sees them.
        self.train_module = distributed.wrap_for_training(self.model, config.parallel, self.dtype)
        if self.sharded:
            distributed.shard_model(self.ema, self.dtype)
            if self.teacher is not None:
                distributed.shard_model(self.teacher, self.dtype)
        self.data = data
        self.sampler = EpochSampler(len(data), config.seed)
        # fit's loader thread, which makes the next step's batch while this one runs (a batch is a pure function
        # of the step); the prefetched (step, batch).
        self._loader: ThreadPoolExecutor | None = None
        self._ahead: tuple[int, Future] | None = None
        self.config = config
        self.device = torch.device(device)
        self.run_dir = Path(run_dir)
        self.preview = preview
        self.evaluate = evaluate  # train.eval_every's scorer: (EMA model, step) -> {eval_*: value}
        self.tensorboard = tensorboard  # gets each metrics.jsonl record (rank 0; None: off)
        self.extra_state = extra_state or {}
        # Accumulation draws a step's randomness once for all its rows (DJEPA.loss_draws); a plugin head that
        # cannot hand its draws over lets each micro-batch draw its own (equal in law, not bit for bit).
        self.exact_draws = type(model.head).draw is not TokenHead.draw
        if config.grad_accum_steps > 1 and not self.exact_draws and distributed.is_main():
            tqdm.write(f"{type(model.head).__name__} has no draw(): each micro-batch draws its own noise")
        # Fused AdamW skips a step with non-finite gradients on the device (its found_inf), so deciding the
        # skip needs no host sync; FSDP's DTensor parameters keep the foreach kernel and decide on the host.
        self.fused_optimizer = not self.sharded
        self.optimizer = torch.optim.AdamW(
            param_groups(self.model, config.weight_decay, config.no_decay),
            lr=config.peak_lr,
            betas=(0.9, 0.95),
            eps=config.adam_eps,
            fused=self.fused_optimizer or None,
        )
        self.checkpoints = CheckpointManager(self.run_dir, keep=config.keep_checkpoints)
        self.sharded_checkpoints = config.checkpoint_format == "sharded" or (
            config.checkpoint_format == "auto" and self.sharded
        )
        self.step = 0
        self.skipped = 0
        self.bad_in_a_row = 0
        # Called at every step boundary (the command line's signal handling saves and stops there).
        self.before_step: Callable[[], None] | None = None
        # The EMA pairs, listed once after any sharding (FSDP replaces the parameters; loading a checkpoint
        # copies into them in place). The teacher tracks only what the targets come from.
        online = [p.detach() for p in self.model.parameters()]
        self.ema_pairs: tuple[list[torch.Tensor], list[torch.Tensor]] = (list(self.ema.parameters()), online)
        self.teacher_pairs: tuple[list[torch.Tensor], list[torch.Tensor]] | None = None
        if self.teacher is not None:
            tracked = [
                (t, p)
                for (name, t), p in zip(self.teacher.named_parameters(), online)
                if name.split(".", 1)[0] in DJEPA.TARGET_MODULES
            ]
            self.teacher_pairs = ([t for t, _ in tracked], [p for _, p in tracked])
        if config.batch_size % distributed.world_size():
            raise ValueError(
                f"train.batch_size={config.batch_size} (the global batch) must divide by the "
                f"{distributed.world_size()} processes"
            )

    # ------------------------------------------------------------------ state

    def save(self) -> Path | None:
        """A checkpoint of this step, in the run's format; collective. Returns its path on rank 0."""
        return self.save_sharded() if self.sharded_checkpoints else self.save_full()

    def checkpoint_state(self) -> dict[str, Any]:
        return {
            "model_config": self.model.config,
            "train": asdict(self.config),
            "skipped_steps": self.skipped,
            **self.extra_state,
        }

    def copies(self) -> dict[str, torch.nn.Module]:
        """The EMA copies saved beside the model: the sampling EMA and, when separate, the JEPA teacher."""
        copies: dict[str, torch.nn.Module] = {"ema": self.ema}
        return copies | ({"teacher": self.teacher} if self.teacher is not None else {})

    def save_full(self) -> Path | None:
        """Rank 0 writes; the others wait, so no rank runs ahead of a checkpoint."""
        opt_tensors, opt_meta = flatten_optimizer(self.optimizer)
        # Gathering sharded tensors is collective: every rank takes part, rank 0 writes.
        tensors = {
            "model": distributed.full_tensors(self.model.state_dict()),
            "optimizer": distributed.full_tensors(opt_tensors),
        } | {name: distributed.full_tensors(module.state_dict()) for name, module in self.copies().items()}
        if not distributed.is_main():
            distributed.barrier()
            return None
        path = self.checkpoints.save(self.step, tensors, self.checkpoint_state() | {"optimizer": opt_meta})
        distributed.barrier()
        return path

    def save_sharded(self) -> Path | None:
        """Every rank writes its own shards into rank 0's staging folder (nothing is gathered but the EMA,
        once, for sampling); rank 0 then records every file's checksum and renames the folder into place."""
        staging = self.checkpoints.staging_path(self.step)
        if distributed.is_main():
            self.checkpoints.staging(self.step)
        distributed.barrier()
        checksums = sharded_checkpoint.write_shards(staging, self.model, self.optimizer, self.copies())
        ema_path = sharded_checkpoint.consolidate_ema(staging, self.ema)
        path = None
        if distributed.is_main():
            checksums[ema_path.name] = sha256(ema_path)
            state = self.checkpoint_state() | {"checkpoint_format": "sharded"}
            path = self.checkpoints.commit(self.step, staging, state, checksums)
        distributed.barrier()
        return path

    def resume(self) -> bool:
        found = self.checkpoints.latest_valid()
        if found is None:
            return False
        directory, state = found
        if sharded_checkpoint.is_sharded(directory):
            self.resume_sharded(directory)
        else:
            self.resume_full(directory, state)
        self.step = int(state["step"])
        self.skipped = int(state.get("skipped_steps", 0))
        tqdm.write(f"resumed from step {self.step} ({directory})")
        return True

    def resume_full(self, directory: Path, state: dict[str, Any]) -> None:
        load = CheckpointManager.load_tensors
        groups = [(self.model, "model"), (self.ema, "ema")]
        if self.teacher is not None:
            # A checkpoint from before the separate teacher starts it from the sampling EMA.
            has_teacher = (directory / "teacher.safetensors").exists()
            groups.append((self.teacher, "teacher" if has_teacher else "ema"))
        for module, group in groups:
            template = module.state_dict()
            module.load_state_dict(
                {k: distributed.shard_like(v, template[k]) for k, v in load(directory, group, self.device).items()}
            )
        params = [p for group in self.optimizer.param_groups for p in group["params"]]
        opt_tensors = {
            name: distributed.shard_like(value, params[int(name.split(".", 1)[0])])
            for name, value in load(directory, "optimizer", self.device).items()
        }
        self.optimizer.load_state_dict(unflatten_optimizer(opt_tensors, state["optimizer"]))

    def resume_sharded(self, directory: Path) -> None:
        """DCP reads the shards into this run's layout, whatever number of ranks saved them."""
        copies = self.copies()
        saved = sharded_checkpoint.saved_groups(directory)
        missing = [name for name in copies if name not in saved]
        present = {name: module for name, module in copies.items() if name in saved}
        sharded_checkpoint.read_shards(directory, self.model, self.optimizer, present)
        if missing == ["teacher"]:  # a run that switches to a separate teacher starts it from the sampling EMA
            assert self.teacher is not None  # copies() lists it only then
            set_model_state_dict(self.teacher, get_model_state_dict(self.ema))
        elif missing:
            raise ValueError(f"{directory}: the sharded checkpoint holds no {', '.join(missing)}")

    # ------------------------------------------------------------------ one step

    def batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """This rank's tokens, labels and mask of a step (all its micro-batches), on the host (the step reads
        the mask's counts there). A function of (seed, step, rank) alone: the prefetching thread may make it."""
        config = self.config
        rank, world = distributed.rank(), distributed.world_size()
        # Under torchrun each rank takes every world-th row of the global batch, and reads and noises only those.
        idx = self.sampler.batch(config.effective_batch, step)[rank::world]
        tokens = self.data.mean[idx]
        if self.data.std is not None:
            noise = torch.Generator().manual_seed(noise_seed(config.seed, step, rank))
            tokens = tokens + self.data.std[idx] * torch.randn(tokens.shape, generator=noise)
        # A mask's per-batch draws (prefix or not, the ratio, the prefix) come from one stream on every rank, so
        # the ranks share the visible count (FSDP's teacher pass, a collective, runs on all of them or none);
        # each rank draws its own rows' orders. The prefix draw happens only when prefix masks are on, so runs
        # without them keep their random stream.
        gen = torch.Generator().manual_seed(step_seed(config.seed, step))
        orders = gen if rank == 0 else torch.Generator().manual_seed(order_seed(config.seed, step, rank))
        rows = len(idx)
        if config.prefix_mask_prob > 0 and float(torch.rand((), generator=gen)) < config.prefix_mask_prob:
            assert self.token_grid is not None and self.time_axis is not None  # checked in __init__
            mask = prefix_mask(
                rows, self.token_grid, self.time_axis, config.mask_ratio_min, gen, order_generator=orders
            )
        else:
            mask = training_mask(rows, tokens.shape[1], config.mask_ratio_min, gen, order_generator=orders)
        return tokens, self.data.labels[idx], mask

    def next_batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """batch(step), made by the loader thread while the previous step ran (inside fit), then the next
        step's batch started there; made here when it was not prefetched."""
        ahead, self._ahead = self._ahead, None
        made = ahead[1].result() if ahead is not None and ahead[0] == step else self.batch(step)
        if self._loader is not None and step + 1 < self.config.steps:
            self._ahead = (step + 1, self._loader.submit(self.batch, step + 1))
        return made

    def to_device(self, tensor: torch.Tensor) -> torch.Tensor:
        """A host tensor onto the training device; to a GPU from pinned memory, so the copy does not block."""
        if self.device.type != "cuda":
            return tensor.to(self.device)
        return tensor.pin_memory().to(self.device, non_blocking=True)

    def forward(
        self,
        tokens: torch.Tensor,
        labels: torch.Tensor,
        mask: torch.Tensor,
        num_visible: int,
        with_jepa: bool,
        draws: LossDraws | None = None,
    ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """The per-term losses of one (micro-)batch and their weighted total."""
        config = self.config
        teacher = self.teacher if self.teacher is not None else self.ema
        with autocast(self.device, self.dtype):
            targets = None
            if self.use_jepa and with_jepa:
                rows = self.jepa_row_count(tokens.shape[0])
                with record_function("djepa::teacher"):
                    targets = teacher(tokens[:rows], labels[:rows])
            if self.sharded and targets is not None:
                # FSDP keeps a root unsharded after forward, expecting a backward. fully_shard gives the
                # module's class its reshard method at run time, which the type checker cannot see.
                teacher.reshard()  # type: ignore[operator]
            args = (tokens, labels, mask, targets, num_visible, draws)
            losses = self.train_module(*args, with_jepa=with_jepa)
        total = config.denoise_weight * losses["denoise"]
        if self.use_jepa:
            total = total + config.jepa_weight * losses["jepa"]
        return losses, total

    def jepa_row_count(self, rows: int) -> int:
        """How many of a (micro-)batch's first rows the JEPA term uses: loss.jepa_rows of them, at least one."""
        return max(1, min(rows, math.ceil(self.config.jepa_rows * rows - 1e-9)))

    @contextlib.contextmanager
    def gradient_sync(self, sync: bool) -> Iterator[None]:
        """Backward passes inside reduce their gradients over ranks only when `sync`: DDP's no_sync, FSDP's
        set_requires_gradient_sync; nothing to do in one process."""
        if isinstance(self.train_module, DistributedDataParallel) and not sync:
            with self.train_module.no_sync():
                yield
            return
        if self.sharded:
            self.model.set_requires_gradient_sync(sync)  # type: ignore[operator]  # given by fully_shard
        yield

    def accumulate(
        self, tokens: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor, num_visible: int, with_jepa: bool
    ) -> tuple[dict[str, torch.Tensor], torch.Tensor, dict[str, torch.Tensor]]:
        """grad_accum_steps forward/backward passes over equal slices of the step's rows, gradients summed.

        The step's random draws are made once for all its rows, in the order one pass over them makes them,
        and each pass takes its rows' share: with dropout off the update equals one pass over all rows up to
        float rounding (dropout masks are drawn per pass). Returns the mean losses, the mean total and the
        gradient probe's record (taken on the first pass)."""
        k = self.config.grad_accum_steps
        rows = tokens.shape[0] // k
        num_hidden = self.model.num_tokens - num_visible
        draws = self.model.loss_draws(tokens.shape[0], num_hidden, tokens) if self.exact_draws else None
        self.optimizer.zero_grad(set_to_none=True)
        sums: dict[str, torch.Tensor] = {}
        probe: dict[str, torch.Tensor] = {}
        for i in range(k):
            part = slice(i * rows, (i + 1) * rows)
            part_draws = None if draws is None else self.model.slice_draws(draws, tokens.shape[0], num_hidden, part)
            with self.gradient_sync(i == k - 1):  # the ranks reduce the summed gradients once, on the last pass
                micro = (tokens[part], labels[part], mask[part])
                losses, total = self.forward(*micro, num_visible, with_jepa, part_draws)
                if i == 0 and self.probe_due() and with_jepa:
                    probe = self.gradient_probe(losses)
                (total / k).backward()
            for name, value in [*losses.items(), ("total", total)]:
                sums[name] = sums[name] + value.detach() if name in sums else value.detach()
        means = {name: value / k for name, value in sums.items()}
        total = means.pop("total")
        return means, total, probe

    def train_step(self) -> dict[str, Any]:
        """One optimizer step. Its values stay on the device as 0-dim tensors, so on a GPU the step costs no
        host sync; `settle` reads a whole logging interval back at once and applies the non-finite rule."""
        config = self.config
        # Every random draw of a step (dropout, label drop, noise, timesteps) follows from (seed, step, rank),
        # so a resumed run repeats the uninterrupted one exactly, and ranks draw independently.
        torch.manual_seed(rank_seed(config.seed, self.step, distributed.rank()))
        with record_function("djepa::batch"):
            tokens, labels, mask = self.next_batch(self.step)
        # Every row shares its visible count (training_mask, prefix_mask): read here on the host, it spares the
        # model a device sync to size its gathers.
        num_visible = int((~mask[0]).sum()) if mask.numel() else 0
        tokens, labels, mask = (self.to_device(t) for t in (tokens, labels, mask))
        lr = lr_at(self.step, config)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.model.train()
        # The JEPA term is off for a batch with no visible token (no context to predict targets from) and on the
        # steps loss.jepa_every skips: DJEPA.loss zero-weights it and the teacher pass is skipped.
        has_context = num_visible > 0 or self.model.jepa_without_context
        with_jepa = has_context and self.step % config.jepa_every == 0
        record: dict[str, Any] = {"lr": lr}
        if self.use_jepa:
            record["jepa_active"] = with_jepa
        if config.grad_accum_steps > 1:
            losses, total, probe = self.accumulate(tokens, labels, mask, num_visible, with_jepa)
            record |= probe
        else:
            losses, total = self.forward(tokens, labels, mask, num_visible, with_jepa)
            self.optimizer.zero_grad(set_to_none=True)
            if self.probe_due() and with_jepa:
                record |= self.gradient_probe(losses)
            with record_function("djepa::backward"):
                total.backward()
        with record_function("djepa::clip"):
            norm = distributed.full_tensor(torch.nn.utils.clip_grad_norm_(self.model.parameters(), config.grad_clip))
        # A non-finite loss (on any rank: the sum goes through a collective) or gradient skips the update. The
        # gradients are averaged over ranks, so every rank decides alike.
        loss_sum = distributed.all_reduce(total.detach().float().clone()) if distributed.world_size() > 1 else total
        bad = ~(torch.isfinite(loss_sum.detach()) & torch.isfinite(norm))
        with record_function("djepa::optimizer"):
            if self.fused_optimizer:
                self.optimizer.found_inf = bad.float()  # type: ignore[attr-defined]  # the fused kernel's skip flag
                self.optimizer.step()
            elif not bool(bad):  # a host sync, under FSDP only
                self.optimizer.step()
        with record_function("djepa::ema"):
            self.update_ema()  # after a skipped update the EMAs move towards unchanged weights
        return (
            record
            | {k: v.detach() for k, v in losses.items()}
            | {"loss": total.detach(), "grad_norm": norm, "bad": bad}
        )

    def settle(self, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The steps' records with their device values read back in one sync and averaged over ranks; applies
        the non-finite rule in step order: a bad step is counted and left out, `max_bad_steps` in a row stop
        the run. Returns the good steps' records, all values plain numbers."""
        slots = [(i, k) for i, r in enumerate(records) for k, v in r.items() if isinstance(v, torch.Tensor)]
        out = [dict(r) for r in records]
        if slots:
            values = torch.stack([records[i][k].float().reshape(()) for i, k in slots]).tolist()
            means = distributed.mean_over_ranks({str(j): value for j, value in enumerate(values)})
            for j, (i, k) in enumerate(slots):
                out[i][k] = means[str(j)]
        good = []
        for record in out:
            if record.pop("bad", 0.0) > 0:
                self.skipped += 1
                self.bad_in_a_row += 1
                tqdm.write(f"step {record['step']}: non-finite loss {record}, step skipped")
                if self.bad_in_a_row >= self.config.max_bad_steps:
                    raise NonFiniteLoss(
                        f"{self.bad_in_a_row} non-finite losses in a row ending at step {record['step']}: "
                        f"{record}; the weights kept the last finite step's values"
                    )
                continue
            self.bad_in_a_row = 0
            good.append(record)
        return good

    def probe_due(self) -> bool:
        # autograd.grad beside DDP's reducer hooks is not supported: the probe runs in one process only.
        every = self.config.grad_probe_every
        return self.use_jepa and every > 0 and (self.step + 1) % every == 0 and distributed.world_size() == 1

    def gradient_probe(self, losses: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Each loss's weighted gradient norm on the shared trunk and the cosine between them.

        Shows how the two terms interfere: a JEPA gradient much larger than the denoiser's, or pointing
        against it, slows denoising. Two extra backward passes, every grad_probe_every steps.
        """
        params = [p for p in trunk_parameters(self.model) if p.requires_grad]
        weights = {"denoise": self.config.denoise_weight, "jepa": self.config.jepa_weight}
        flat = {}
        for name, weight in weights.items():
            grads = torch.autograd.grad(weight * losses[name], params, retain_graph=True, allow_unused=True)
            flat[name] = torch.cat(
                [(g if g is not None else torch.zeros_like(p)).flatten().float() for g, p in zip(grads, params)]
            )
        cos = torch.nn.functional.cosine_similarity(flat["denoise"], flat["jepa"], dim=0)
        return {"grad_norm_denoise": flat["denoise"].norm(), "grad_norm_jepa": flat["jepa"].norm(), "grad_cos": cos}

    def sampling_model(self) -> DJEPA:
        """The EMA model whole, for sampling on one rank; under FSDP a collective that gathers a copy."""
        if not self.sharded:
            return self.ema
        full = distributed.full_tensors(self.ema.state_dict())
        model = DJEPA(**self.model.config).to(self.device).eval().requires_grad_(False)
        model.load_state_dict(full)
        return model

    def log_evaluation(self, metrics: Any) -> None:
        """train.eval_every: rank 0 scores the sampling EMA (gathered under FSDP, a collective) and appends the
        record to metrics.jsonl (`metrics`, rank 0's open file) and TensorBoard."""
        ema = self.sampling_model()
        if not distributed.is_main() or self.evaluate is None:
            return
        record = {"step": self.step, **self.evaluate(ema, self.step)}
        if metrics:
            metrics.write(json.dumps(record) + "\n")
            metrics.flush()
        if self.tensorboard is not None:
            self.tensorboard.scalars(record)

    def _stop_loader(self) -> None:
        """Run before the loader thread is joined: nothing more is prefetched (a pending batch is dropped)."""
        self._loader, self._ahead = None, None

    @torch.no_grad()
    def update_ema(self) -> None:
        decay = self.config.ema_decay
        if self.config.ema_warmup:
            decay = min(decay, (1 + self.step) / (10 + self.step))
        torch._foreach_lerp_(*self.ema_pairs, 1 - decay)
        if self.teacher_pairs is not None:
            torch._foreach_lerp_(*self.teacher_pairs, 1 - teacher_decay(self.step, self.config))

    # ------------------------------------------------------------------ loop

    def fit(self) -> dict[str, Any]:
        config = self.config
        main = distributed.is_main()
        if main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        distributed.barrier()
        self.resume()
        tokens_per_step = config.effective_batch * self.model.num_tokens
        bar = tqdm(total=config.steps, initial=self.step, desc="train", dynamic_ncols=True, disable=not main)
        last: dict[str, Any] = {}
        pending: list[dict[str, Any]] = []  # the records since the last settle, values still on the device
        since = time.perf_counter()
        with contextlib.ExitStack() as stack:
            metrics = stack.enter_context(open(self.run_dir / "metrics.jsonl", "a")) if main else None
            self._loader = stack.enter_context(ThreadPoolExecutor(1, thread_name_prefix="djepa-batches"))
            stack.callback(self._stop_loader)
            while self.step < config.steps:
                if self.before_step is not None:
                    self.before_step()  # at a step boundary model, EMA, optimizer and step agree
                record = self.train_step()
                self.step += 1
                pending.append(record | {"step": self.step})
                bar.update(1)
                log_due = self.step % config.log_every == 0 or self.step == config.steps
                save_due = self.step % config.checkpoint_every == 0 or self.step == config.steps
                preview_due = self.preview is not None and config.preview_every > 0
                preview_due = preview_due and self.step % config.preview_every == 0
                eval_due = self.evaluate is not None and config.eval_every > 0 and self.step % config.eval_every == 0
                if not (log_due or save_due or preview_due or eval_due):
                    continue
                # The interval's one host sync: reading its values back waits for the device, so the time per
                # step is the interval's mean.
                good = self.settle(pending)
                step_s = (time.perf_counter() - since) / len(pending)
                pending = []
                if good and good[-1]["step"] == self.step:  # this step's update went through
                    last = good[-1] | {
                        "step_ms": 1000 * step_s,
                        "tokens_per_s": tokens_per_step / step_s,
                        "peak_mem_mb": peak_memory_mb(self.device),
                    }
                    bar.set_postfix(loss=f"{last['loss']:.4f}", ms=f"{last['step_ms']:.0f}")
                    if log_due:
                        # How often clipping fired over the good steps since the last settle.
                        clipped = sum(r["grad_norm"] > config.grad_clip for r in good)
                        logged = last | {"clip_fraction": clipped / len(good), "skipped_steps": self.skipped}
                        if metrics:
                            metrics.write(json.dumps(logged) + "\n")
                            metrics.flush()
                        if self.tensorboard is not None and main:
                            self.tensorboard.scalars(logged)
                if save_due:
                    self.save()
                if preview_due and self.preview is not None:
                    ema = self.sampling_model()
                    if main:
                        self.preview(ema, self.step)
                if eval_due:
                    self.log_evaluation(metrics)
                since = time.perf_counter()  # checkpoints and previews are not step time
        bar.close()
        return last
