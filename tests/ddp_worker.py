"""Run by test_distributed under torchrun (or alone): a few tiny training steps, results to JSON."""

import hashlib
import json
import sys
from pathlib import Path

import torch

from djepa import distributed
from djepa.model import DJEPA
from djepa.trainer import TokenData, TrainConfig, Trainer


def main(out: Path) -> None:
    device = distributed.init_from_env("cpu")
    torch.manual_seed(0)
    model = DJEPA(
        token_dim=4,
        grid=(4, 4),
        num_classes=3,
        encoder_depth=1,
        encoder_width=32,
        predictor_depth=1,
        predictor_width=32,
        heads=2,
        buffer_size=4,
        denoiser_depth=1,
        denoiser_width=32,
        diffusion_batch_mul=2,
        head={"type": "flow"},
    )
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(64) % 3
    mean = torch.randn(3, 16, 4, generator=g)[labels] + 0.1 * torch.randn(64, 16, 4, generator=g)
    cfg = TrainConfig(
        steps=20,
        batch_size=16,
        lr=2e-3,
        warmup_steps=2,
        precision="fp32",
        log_every=1,
        checkpoint_every=20,
        ema_decay=0.9,
    )
    trainer = Trainer(model, TokenData(mean, None, labels), cfg, out.parent / "run", device)
    trainer.fit()
    digest = hashlib.sha256(
        torch.cat([p.detach().reshape(-1) for p in trainer.model.parameters()]).numpy().tobytes()
    ).hexdigest()
    losses = (
        [json.loads(line)["loss"] for line in (out.parent / "run" / "metrics.jsonl").read_text().splitlines()]
        if distributed.is_main()
        else []
    )
    Path(f"{out}.rank{distributed.rank()}").write_text(json.dumps({"losses": losses, "params": digest}))
    distributed.shutdown()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
