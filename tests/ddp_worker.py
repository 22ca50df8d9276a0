"""Run by test_distributed under torchrun (or alone): a few tiny training steps, results to JSON.

Usage: ddp_worker.py OUT [PARALLEL] [STEPS] [FORMAT] — PARALLEL is ddp or fsdp; STEPS < 20 makes a run to
resume (the lr is constant after warm-up, so 10 + 10 steps must equal 20 straight); FORMAT is
train.checkpoint_format (auto: sharded under FSDP on 2 ranks, full otherwise).
"""

import hashlib
import json
import sys
from pathlib import Path

import torch
from worker_model import FLOW, tiny_djepa

from djepa.engine import distributed
from djepa.engine.data import TokenData
from djepa.engine.sharded_checkpoint import full_state
from djepa.engine.trainer import TrainConfig, Trainer


def digest(tensors: dict) -> str:
    return hashlib.sha256(
        torch.cat([tensors[k].float().reshape(-1) for k in sorted(tensors)]).numpy().tobytes()
    ).hexdigest()


def main(out: Path, parallel: str = "ddp", steps: int = 20, checkpoint_format: str = "auto") -> None:
    device = distributed.init_from_env("cpu")
    torch.manual_seed(0)
    model = tiny_djepa(diffusion_batch_mul=2, head_config=FLOW)
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(64) % 3
    mean = torch.randn(3, 16, 4, generator=g)[labels] + 0.1 * torch.randn(64, 16, 4, generator=g)
    train_config = TrainConfig(
        steps=steps,
        batch_size=16,
        lr=2e-3,
        warmup_steps=2,
        precision="fp32",
        log_every=1,
        checkpoint_every=10,
        ema_decay=0.9,
        teacher_ramp_steps=20,  # the resume test trains 10 steps, then resumes to 20: the same ramp
        parallel=parallel,
        checkpoint_format=checkpoint_format,
    )
    trainer = Trainer(model, TokenData(mean, None, labels), train_config, out.parent / "run", device)
    trainer.fit()
    full = distributed.full_tensors(trainer.model.state_dict())
    # The whole training state, by parameter name (layout-free): what a resume on any number of ranks restores.
    optimizer = full_state(trainer.model, trainer.optimizer)["optimizer"]["state"]
    state = {
        "optimizer": digest({f"{n}.{k}": v for n, entry in optimizer.items() for k, v in entry.items()}),
        "ema": digest(full_state(trainer.ema)["model"]),
        "teacher": digest(full_state(trainer.teacher)["model"]),
    }
    sample_model = trainer.sampling_model()
    losses = (
        [json.loads(line)["loss"] for line in (out.parent / "run" / "metrics.jsonl").read_text().splitlines()]
        if distributed.is_main()
        else []
    )
    result = {
        "losses": losses,
        "params": digest(full),
        "state": state,
        "step": trainer.step,
        "sharded": type(trainer.model).__name__ != "DJEPA",
        "sample_shape": list(sample_model.sample(torch.tensor([0, 1]), num_steps=2).shape),
    }
    Path(f"{out}.rank{distributed.rank()}").write_text(json.dumps(result))
    distributed.shutdown()


if __name__ == "__main__":
    main(Path(sys.argv[1]), *(sys.argv[2:3] or ["ddp"]), *[int(a) for a in sys.argv[3:4]], *sys.argv[4:5])
