"""A GPU check in one command: `python -m djepa.benchmarks.experiments.gpu_check [out=DIR] [batch=N] [compile=true]
[steps=N] [peak_tflops=X]`.

On the first CUDA device, within minutes, at the `model=djepa_b` shape on synthetic KL-16-shaped latents (256 tokens
of dim 16, 1000 classes):

1. the attention backends (math, sdpa, xformers where installed and its kernels run) against an fp32 math
   reference, forward and backward, in bf16 at the predictor's shape (64 x 12 heads x 320 tokens x 64);
2. bf16 training steps through the project's Trainer, per backend (and with `compile=true` compiled blocks), each
   over the same step indices: images/s, step time, peak memory; FLOPs of those steps counted by
   torch.utils.flop_counter.FlopCounterMode (SDPA: its backward is counted with the scores' recompute) beside the
   analytic count (`analytic_flops`), and the model FLOPs utilisation against the GPU's dense bf16 peak (a table of
   names, or `peak_tflops=`);
3. a training step and a sample under `torch.cuda.set_sync_debug_mode("error")` (no host sync);
4. sampling a small batch (64 reveal steps, the head's default diffusion steps, guidance 3);
5. with 2+ GPUs, a 2-rank NCCL DDP step (torch.multiprocessing), checking both ranks end with the same weights.

Writes every figure to DIR/gpu_check.json (default runs/gpu_check), after each part, so a timeout keeps what was
measured. Without CUDA it prints one line, writes {"skipped": "no CUDA device"} and exits 0. Each part's pieces
take a device, so the tests run them on the CPU at the tiny model's shape.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import importlib.metadata
import json
import math
import os
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from djepa.benchmarks.experiments import key_values
from djepa.cli.config import cli_errors, compose_config
from djepa.cli.train import train_config
from djepa.engine import distributed
from djepa.engine.data import TokenData
from djepa.engine.model_config import build_model
from djepa.engine.sampling import SamplingSettings, generate
from djepa.engine.trainer import Trainer, compile_blocks
from djepa.errors import UsageError
from djepa.nn.attention import attention, set_attention_backend, xformers_problem
from djepa.nn.model import DJEPA

# KL-16 latents of a 256 x 256 image: a 16 x 16 grid of 16-dim tokens; ImageNet's classes.
GRID, TOKEN_DIM, CLASSES = (16, 16), 16, 1000
MODEL = "djepa_b"
# [batch, heads, tokens, head_dim] of djepa_b's predictor: 12 heads of 64 over 64 buffer + 256 tokens.
ATTENTION_SHAPE = (64, 12, 320, 64)
# Largest relative error (max |x - ref| / max |ref|) against the fp32 math reference a backend may show.
TOLERANCE = {torch.bfloat16: 3e-2, torch.float32: 1e-4}
# Dense (no sparsity) bf16 tensor-core peaks in TFLOPS from the vendor's data sheets; the first name found in
# the device's name wins, so the more specific names come first.
PEAK_TFLOPS = (
    ("H100 PCIe", 756.0),
    ("H100 NVL", 835.0),
    ("H100", 989.0),
    ("H200", 989.0),
    ("H800", 989.0),
    ("B200", 2250.0),
    ("A100", 312.0),
    ("A800", 312.0),
    ("L40S", 362.0),
    ("A10G", 70.0),
    ("L4", 121.0),
)
DEFAULTS = {"out": "runs/gpu_check", "batch": "", "compile": "false", "steps": "20", "peak_tflops": ""}


def peak_tflops(name: str) -> float | None:
    """The dense bf16 peak of a GPU named `name`, or None for a name not in PEAK_TFLOPS."""
    return next((peak for key, peak in PEAK_TFLOPS if key in name), None)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@contextlib.contextmanager
def attention_backend(name: str) -> Iterator[None]:
    """Force an attention backend for the block; `auto` again after it."""
    set_attention_backend(name)
    try:
        yield
    finally:
        set_attention_backend("auto")


def relative_error(x: torch.Tensor, ref: torch.Tensor) -> float:
    return float((x.float() - ref).abs().max() / ref.abs().max().clamp_min(1e-12))


def attention_agreement(
    device: torch.device,
    dtype: torch.dtype,
    backends: Sequence[str],
    shape: tuple[int, int, int, int] = ATTENTION_SHAPE,
    repeats: int = 10,
) -> dict[str, dict[str, Any]]:
    """Each backend's output and input gradients in `dtype` against the fp32 math reference on the same inputs:
    the largest relative errors, whether they are within TOLERANCE, and the mean ms of a forward + backward."""
    gen = torch.Generator().manual_seed(0)
    inputs = [torch.randn(shape, generator=gen) for _ in range(3)]
    grad_out = torch.randn(shape, generator=gen)

    def run(backend: str, dt: torch.dtype) -> tuple[torch.Tensor, tuple[torch.Tensor, ...], float]:
        with attention_backend(backend):
            q, k, v = (t.to(device, dt).requires_grad_() for t in inputs)
            g = grad_out.to(device, dt)
            out = attention(q, k, v)
            grads = torch.autograd.grad(out, (q, k, v), g)
            synchronize(device)
            start = time.perf_counter()
            for _ in range(repeats):
                torch.autograd.grad(attention(q, k, v), (q, k, v), g)
            synchronize(device)
            return (
                out.detach().float(),
                tuple(x.float() for x in grads),
                1000 * (time.perf_counter() - start) / max(1, repeats),
            )

    ref_out, ref_grads, _ = run("math", torch.float32)
    results: dict[str, dict[str, Any]] = {}
    for backend in backends:
        try:
            out, grads, ms = run(backend, dtype)
        except Exception as err:  # a backend missing or failing here is a finding, not the end of the check
            results[backend] = {"error": f"{type(err).__name__}: {err}"[:300]}
            continue
        out_err = relative_error(out, ref_out)
        grad_err = max(relative_error(x, r) for x, r in zip(grads, ref_grads))
        ok = max(out_err, grad_err) <= TOLERANCE[dtype]
        results[backend] = {"out_rel_error": out_err, "grad_rel_error": grad_err, "ok": ok, "ms": ms}
    return results


def synthetic_tokens(items: int, grid: tuple[int, ...], dim: int, classes: int, seed: int = 0) -> TokenData:
    """Random latents of the given shape with a small posterior std, as the latent cache holds them."""
    gen = torch.Generator().manual_seed(seed)
    tokens = torch.randn(items, math.prod(grid), dim, generator=gen)
    return TokenData(tokens, torch.full_like(tokens, 0.05), torch.randint(0, classes, (items,), generator=gen))


def build_trainer(
    device: torch.device,
    batch: int,
    run_dir: Path,
    model: str = MODEL,
    grid: tuple[int, ...] = GRID,
    dim: int = TOKEN_DIM,
    classes: int = CLASSES,
    precision: str = "bf16",
    overrides: Sequence[str] = (),
) -> Trainer:
    """Model, data and Trainer as the train command builds them, from `model=<model>` and the train defaults, on
    synthetic tokens (4 batches' worth); the gradient probe is off, as it is on most steps of a run."""
    cfg = compose_config(
        [
            f"model={model}",
            f"train.batch_size={batch}",
            f"train.precision={precision}",
            "train.grad_probe_every=0",
            "train.warmup_steps=1",
            *overrides,
        ]
    )
    torch.manual_seed(0)  # the same initial weights on every rank
    net = build_model(cfg, dim, grid, classes)
    return Trainer(net, synthetic_tokens(4 * batch, grid, dim, classes), train_config(cfg), run_dir, device)


def run_steps(trainer: Trainer, start: int, count: int) -> list[dict[str, Any]]:
    """Trainer steps `start` .. start + count - 1 as fit() runs them; the records' values stay on the device."""
    trainer.step = start
    records = []
    for _ in range(count):
        records.append(trainer.train_step() | {"step": trainer.step + 1})
        trainer.step += 1
    return records


def time_training(trainer: Trainer, backend: str, steps: int, warmup: int = 3) -> dict[str, Any]:
    """Images/s over steps warmup .. warmup + steps - 1 with `backend` (the same indices, so the same masks, for
    every backend); the records are read back once at the end, as fit() does per logging interval."""
    device = trainer.device
    batch = trainer.config.batch_size
    with attention_backend(backend):
        trainer.settle(run_steps(trainer, 0, warmup))
        synchronize(device)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        start = time.perf_counter()
        good = trainer.settle(run_steps(trainer, warmup, steps))  # waits for the device
        seconds = time.perf_counter() - start
    result: dict[str, Any] = {
        "images_per_s": batch * steps / seconds,
        "step_ms": 1000 * seconds / steps,
        "finite_steps": len(good),
        "steps": steps,
        "loss": good[-1]["loss"] if good else None,
    }
    if device.type == "cuda":
        result["peak_memory_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    return result


def count_flops(trainer: Trainer, backend: str, start: int, steps: int) -> float:
    """FLOPs FlopCounterMode counts over steps start .. start + steps - 1, per image. The CPU's SDPA kernel has no
    FLOP formula in torch, so on the CPU count with `math` (its matmuls are counted)."""
    with attention_backend(backend), FlopCounterMode(display=False) as counter:
        trainer.settle(run_steps(trainer, start, steps))
    return counter.get_total_flops() / (steps * trainer.config.batch_size)


def visible_counts(trainer: Trainer, start: int, steps: int) -> list[int]:
    """The visible-token count of each step (every row of a step shares it), drawn as the step draws it."""
    return [int((~trainer.batch(step)[2][0]).sum()) for step in range(start, start + steps)]


def transformer_flops(depth: int, tokens: float, width: int, mlp_ratio: float) -> float:
    """Forward FLOPs of `depth` pre-norm blocks over `tokens` tokens: qkv, output projection and MLP matmuls
    (2 x tokens x width x (4 width + 2 hidden)) plus the two attention products (4 x tokens^2 x width)."""
    hidden = int(width * mlp_ratio)
    return depth * (2 * tokens * width * (4 * width + 2 * hidden) + 4 * tokens * tokens * width)


def analytic_flops(model: DJEPA, visible: float) -> dict[str, float]:
    """Matmul FLOPs per image of one training step with `visible` visible tokens, forward + backward: backward
    is twice the forward (input and weight gradients), once for layers whose input needs no gradient (the
    token projection, the head's noisy-input and time-frequency layers); the teacher runs forward only, over
    every token. Norms, activations, embeddings' lookups and the optimizer are not matmuls and not counted."""
    c = model.config
    n, buffer, dim = model.num_tokens, c["buffer_size"], model.token_dim
    d_enc, d_pred, ratio = c["encoder_width"], c["predictor_width"], c["mlp_ratio"]
    hidden = n - visible
    rows = c["diffusion_batch_mul"] * hidden
    net = model.head.net
    width, depth = c["denoiser_width"], c["denoiser_depth"]
    out = net.final.linear.out_features
    embed = 2 * n * dim * d_enc  # token_proj over every token, before the visible ones are picked
    encoder = transformer_flops(c["encoder_depth"], buffer + visible, d_enc, ratio)
    predictor = 2 * (buffer + visible) * d_enc * d_pred + transformer_flops(
        c["predictor_depth"], buffer + n, d_pred, ratio
    )
    # Head, per row: time MLP (freq -> w -> w), input projection, per block an MLP of two w x w and a 3w
    # modulation, the final layer's 2w modulation and output; the condition projection once per hidden token,
    # before the diffusion_batch_mul copies.
    head_no_input_grad = 2 * rows * (net.time_embed.freq_dim * width + dim * width)
    head = 2 * rows * (width * width + depth * 5 * width * width + 2 * width * width + width * out)
    head += 2 * (hidden if getattr(model.head, "takes_untiled_cond", False) else rows) * d_pred * width
    projector = 2 * hidden * (d_pred * 4 * d_enc + 4 * d_enc * d_enc) if model.jepa else 0.0
    teacher = 0.0
    if model.jepa and (visible > 0 or model.jepa_without_context):
        teacher = embed + transformer_flops(c["encoder_depth"], buffer + n, d_enc, ratio)
    parts = {
        "encoder": 3 * encoder + 2 * embed,
        "predictor": 3 * predictor,
        "head": 3 * head + 2 * head_no_input_grad,
        "projector": 3 * projector,
        "teacher": teacher,
    }
    return parts | {"total": sum(parts.values())}


def host_sync_check(trainer: Trainer, labels: torch.Tensor) -> str:
    """A training step and a short sample under CUDA's sync debug mode: "none", or the first sync found."""
    labels = labels.to(trainer.device)
    synchronize(trainer.device)
    torch.cuda.set_sync_debug_mode("error")
    try:
        trainer.train_step()
        trainer.ema.sample(labels, num_steps=4, guidance=3.0)
        return "none"
    except RuntimeError as err:
        return f"found: {err}"[:300]
    finally:
        torch.cuda.set_sync_debug_mode("default")


def sample_batch(model: DJEPA, count: int, num_steps: int, guidance: float = 3.0) -> dict[str, Any]:
    """Seconds to draw `count` images' tokens (bf16 autocast where fast), and whether they are all finite."""
    device = next(model.parameters()).device
    labels = torch.arange(count) % model.num_classes
    synchronize(device)
    start = time.perf_counter()
    tokens = generate(model, labels, SamplingSettings(guidance, 1.0, num_steps), batch_size=count, progress=False)
    seconds = time.perf_counter() - start
    return {
        "images": count,
        "reveal_steps": num_steps,
        "seconds": seconds,
        "shape": list(tokens.shape),
        "finite": bool(tokens.isfinite().all()),
    }


def ddp_worker(rank: int, world: int, port: int, out: str, device_type: str, spec: dict[str, Any]) -> None:
    """One rank of the DDP check (torch.multiprocessing.spawn's entry): `spec["steps"]` steps through the Trainer
    under DistributedDataParallel, then a checksum of its weights to out/ddp_rank<r>.json."""
    os.environ.update(
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(world),
        LOCAL_WORLD_SIZE=str(world),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
    device = distributed.init_from_env(device_type)
    try:
        trainer = build_trainer(
            device,
            spec["batch"],
            Path(out) / "ddp_run",
            spec["model"],
            tuple(spec["grid"]),
            spec["dim"],
            spec["classes"],
            spec["precision"],
        )
        good = trainer.settle(run_steps(trainer, 0, spec["steps"]))
        checksum = float(sum(p.detach().double().sum() for p in trainer.model.parameters()))
        result = {"rank": rank, "finite_steps": len(good), "loss": good[-1]["loss"] if good else None}
        (Path(out) / f"ddp_rank{rank}.json").write_text(json.dumps(result | {"checksum": checksum}))
    finally:
        distributed.shutdown()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ddp_check(device_type: str, spec: dict[str, Any], world: int = 2) -> dict[str, Any]:
    """`world` spawned ranks (NCCL on CUDA, gloo on the CPU) train `spec["steps"]` steps; their weights must agree."""
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        torch.multiprocessing.spawn(ddp_worker, (world, free_port(), tmp, device_type, spec), nprocs=world, join=True)
        ranks = [json.loads((Path(tmp) / f"ddp_rank{r}.json").read_text()) for r in range(world)]
    checksums = [r.pop("checksum") for r in ranks]
    same = all(abs(c - checksums[0]) <= 1e-9 * max(1.0, abs(checksums[0])) for c in checksums)
    return {"ranks": world, "seconds": time.perf_counter() - start, "weights_agree": same, "per_rank": ranks}


def parse_args(argv: Sequence[str]) -> dict[str, Any]:
    """key=value arguments over DEFAULTS, each checked, a bad one named."""
    raw = key_values(argv, DEFAULTS)
    args: dict[str, Any] = {"out": Path(raw["out"])}
    if raw["compile"] not in ("true", "false"):
        raise UsageError(f"compile={raw['compile']!r}: must be true or false")
    args["compile"] = raw["compile"] == "true"
    for key, kind in (("batch", int), ("steps", int), ("peak_tflops", float)):
        if raw[key] == "":
            args[key] = None
            continue
        try:
            args[key] = kind(raw[key])
        except ValueError:
            raise UsageError(f"{key}={raw[key]!r}: must be a number") from None
        if args[key] <= 0:
            raise UsageError(f"{key}={raw[key]!r}: must be positive")
    return args


def xformers_version() -> str | None:
    try:
        return importlib.metadata.version("xformers")
    except importlib.metadata.PackageNotFoundError:
        return None


def default_batch(device: torch.device) -> int:
    """Per-GPU batch by memory, from the estimate in docs/guides/scaling.md (djepa_b: ~6 GB + 0.32 GB per image)."""
    gib = torch.cuda.get_device_properties(device).total_memory / 2**30
    return 256 if gib > 100 else 128 if gib > 60 else 64


class Report:
    """The check's results, written to `path` whole after each part, so a timeout keeps what was measured."""

    def __init__(self, path: Path, results: dict[str, Any]):
        self.path = path
        self.results = results
        self.started = time.perf_counter()

    def write(self) -> None:
        self.results["seconds"] = time.perf_counter() - self.started
        self.path.write_text(json.dumps(self.results, indent=2) + "\n")

    def part(self, key: str, fn: Callable[[], Any]) -> Any:
        """One part: its result, or its error, under `key`; a failing part does not stop the others."""
        t = time.perf_counter()
        try:
            self.results[key] = fn()
        except Exception as err:
            self.results[key] = {"error": f"{type(err).__name__}: {err}"[:500]}
        print(f"gpu_check {key} ({time.perf_counter() - t:.0f} s): {json.dumps(self.results[key])[:400]}", flush=True)
        self.write()
        return self.results[key]


def single_gpu_parts(report: Report, device: torch.device, args: dict[str, Any], backends: list[str]) -> None:
    """Attention agreement, timed training per backend, FLOPs and MFU, the host-sync check and sampling."""
    batch, steps, warmup, peak = report.results["batch"], args["steps"] or 20, 3, report.results["peak_tflops"]
    report.part("attention", lambda: attention_agreement(device, torch.bfloat16, ["math", *backends]))
    trainer = build_trainer(device, batch, args["out"] / "run")
    report.results["parameters"] = trainer.model.num_params()
    training = {
        b: report.part(f"train_{b}", functools.partial(time_training, trainer, b, steps, warmup)) for b in backends
    }

    def flops() -> dict[str, Any]:
        counted = count_flops(trainer, "sdpa", warmup, steps)
        visible = visible_counts(trainer, warmup, steps)
        analytic = sum(analytic_flops(trainer.model, v)["total"] for v in visible) / len(visible)
        return {"counted_per_image": counted, "analytic_per_image": analytic, "mean_visible": sum(visible) / steps}

    counted = report.part("flops", flops).get("counted_per_image")  # eager, before any compilation
    if args["compile"]:
        compile_blocks(trainer.model)
        timed = functools.partial(time_training, trainer, "sdpa", steps, 8)  # more warm-up: compiling
        training["sdpa+compile"] = report.part("train_sdpa_compiled", timed)
    if peak and counted:
        speeds = {k: v["images_per_s"] for k, v in training.items() if "images_per_s" in v}
        report.results["mfu"] = {k: counted * images_per_s / (peak * 1e12) for k, images_per_s in speeds.items()}
        report.write()
    report.part("host_sync", lambda: host_sync_check(trainer, torch.arange(8)))
    report.part("sampling", lambda: sample_batch(trainer.ema, 16, 64))


def run_on_gpu(args: dict[str, Any], path: Path) -> dict[str, Any]:
    device = torch.device("cuda", 0)
    torch.cuda.set_device(device)
    name = torch.cuda.get_device_name(device)
    peak = args["peak_tflops"] or peak_tflops(name)
    results: dict[str, Any] = {
        "gpu": name,
        "gpus": torch.cuda.device_count(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "xformers": xformers_version(),
        "xformers_problem": xformers_problem() if xformers_version() else None,
        "model": MODEL,
        "tokens": [*GRID, TOKEN_DIM],
        "batch": args["batch"] or default_batch(device),
        "peak_tflops": peak,
        "peak_tflops_from": "argument" if args["peak_tflops"] else ("table" if peak else None),
    }
    report = Report(path, results)
    backends = ["sdpa"] + (["xformers"] if results["xformers"] and not results["xformers_problem"] else [])
    single_gpu_parts(report, device, args, backends)
    # The ranks need GPU 0's memory, which this process's allocator still holds after the parts above.
    gc.collect()
    torch.cuda.empty_cache()
    if torch.cuda.device_count() >= 2:
        spec = {"batch": 32, "model": MODEL, "grid": list(GRID), "dim": TOKEN_DIM, "classes": CLASSES}
        report.part("ddp", lambda: ddp_check("cuda", spec | {"precision": "bf16", "steps": 2}))
    else:
        results["ddp"] = {"skipped": "1 GPU"}
        report.write()
    return results


def run(argv: Sequence[str]) -> dict[str, Any]:
    args = parse_args(argv)
    out: Path = args["out"]
    out.mkdir(parents=True, exist_ok=True)
    path = out / "gpu_check.json"
    if not torch.cuda.is_available():
        results: dict[str, Any] = {"skipped": "no CUDA device"}
        path.write_text(json.dumps(results) + "\n")
        print(f"gpu_check: skipped, no CUDA device ({path})")
        return results
    results = run_on_gpu(args, path)
    print(f"gpu_check: {path}")
    return results


def main(argv: Sequence[str] | None = None) -> None:
    with cli_errors():
        run(sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    main()
