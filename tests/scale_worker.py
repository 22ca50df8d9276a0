"""Run by test_scale under torchrun (2 gloo ranks): per-rank randomness, DDP without label drop, gradient
accumulation under DDP and FSDP. Writes OUT.rankR (JSON) with what each scenario saw.

Usage: scale_worker.py OUT
"""

import hashlib
import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from torch.distributed.algorithms.ddp_comm_hooks import default_hooks
from worker_model import DIFFUSION, tiny_djepa

from djepa.engine import distributed
from djepa.engine.data import TokenData
from djepa.engine.trainer import TrainConfig, Trainer
from djepa.nn.model import DJEPA


def model(**overrides) -> DJEPA:
    torch.manual_seed(0)  # the same initial weights on every rank, as the train command
    return tiny_djepa(**({"diffusion_batch_mul": 2, "head_config": {**DIFFUSION, "sampling_steps": 5}} | overrides))


def data() -> TokenData:
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(64) % 3
    mean = torch.randn(3, 16, 4, generator=g)[labels] + 0.1 * torch.randn(64, 16, 4, generator=g)
    return TokenData(mean, torch.full_like(mean, 0.05), labels)


def trainer(run_dir: Path, net: DJEPA | None = None, **overrides) -> Trainer:
    settings = dict(steps=3, batch_size=8, lr=1e-3, warmup_steps=1, precision="fp32", checkpoint_every=100)
    return Trainer(net or model(), data(), TrainConfig(**(settings | overrides)), run_dir, torch.device("cpu"))


def params(t: Trainer) -> list[list[float]]:
    """The weights, less the attention key biases (no true gradient: test_scale.assert_close_params says why)."""
    full = distributed.full_tensors(t.model.state_dict())
    return [
        (torch.cat([p.chunk(3)[0], p.chunk(3)[2]]) if name.endswith("attn.qkv.bias") else p).reshape(-1).tolist()
        for name, p in full.items()
    ]


def draws(root: Path) -> dict:
    """The global RNG's state as each step's loss starts (it decides the step's timesteps and noise), straight
    and across a resume at step 2."""

    def recorded(t: Trainer) -> list[str]:
        seen: list[str] = []
        loss = t.model.head.loss

        def spy(*args, **kwargs):
            seen.append(hashlib.sha256(torch.get_rng_state().numpy().tobytes()).hexdigest())
            return loss(*args, **kwargs)

        t.model.head.loss = spy
        t.fit()
        return seen

    straight = recorded(trainer(root / "straight"))
    trainer(root / "resumed", steps=2).fit()
    resumed = recorded(trainer(root / "resumed"))  # resumes at step 2: only step 2's loss runs
    return {"straight": straight, "resumed": resumed}


def no_label_drop(root: Path, parallel: str) -> int:
    t = trainer(root / f"no_label_drop_{parallel}", model(label_drop=0.0), parallel=parallel)
    t.fit()
    return t.step


def fit_counting_reductions(t: Trainer, parallel: str) -> int:
    """Train, counting the gradient reductions over ranks (DDP's bucket all-reduces, FSDP's reduce-scatters)."""
    count = [0]
    if parallel == "ddp":

        def hook(state, bucket):
            count[0] += 1
            return default_hooks.allreduce_hook(state, bucket)

        t.train_module.register_comm_hook(None, hook)
        t.fit()
        return count[0]
    # FSDP2 reduce-scatters through torch.distributed by one of these names, depending on the version.
    names = [n for n in ("reduce_scatter_tensor", "reduce_scatter_single") if hasattr(dist, n)]
    originals = {n: getattr(dist, n) for n in names}

    def counting(original):
        def counted(*args, **kwargs):
            count[0] += 1
            return original(*args, **kwargs)

        return counted

    for n in names:
        setattr(dist, n, counting(originals[n]))
    try:
        t.fit()
    finally:
        for n in names:
            setattr(dist, n, originals[n])
    return count[0]


def accumulation(root: Path, parallel: str) -> dict:
    """K=4 micro-batches of 4 rows against one batch of 16, and how many gradient reductions each made."""
    out = {}
    for name, batch, k in (("large", 16, 1), ("accumulated", 4, 4)):
        t = trainer(root / f"{parallel}_{name}", batch_size=batch, grad_accum_steps=k, parallel=parallel)
        reductions = fit_counting_reductions(t, parallel)
        out[name] = {"params": params(t), "reductions": reductions}
    return out


def main(out: Path) -> None:
    distributed.init_from_env("cpu")
    root = out.parent
    result = {"draws": draws(root)}
    for parallel in ("ddp", "fsdp"):
        try:
            result[f"no_label_drop_{parallel}"] = no_label_drop(root, parallel)
        except RuntimeError as err:
            result[f"no_label_drop_{parallel}_error"] = str(err)[:300]
        try:
            result[f"accumulation_{parallel}"] = accumulation(root, parallel)
        except (TypeError, ValueError) as err:
            result[f"accumulation_{parallel}_error"] = str(err)[:300]
    Path(f"{out}.rank{distributed.rank()}").write_text(json.dumps(result))
    distributed.shutdown()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
