"""Run by test_sharded_checkpoint alone or under torchrun: train a tiny model a step and save a sharded
checkpoint, or load one into a fresh model laid out for this run; writes digests of the whole state.

Usage: dcp_worker.py ACTION CHECKPOINT OUT — ACTION is save or load (load may be given several times
as load:CHECKPOINT pairs: dcp_worker.py save A load:A load:B OUT)."""

import copy
import hashlib
import json
import sys
from pathlib import Path

import torch
from worker_model import FLOW, tiny_djepa

from djepa.engine import distributed
from djepa.engine.sharded_checkpoint import consolidate_ema, full_state, load_sharded, save_sharded
from djepa.nn.masking import training_mask


def build(seed: int):
    torch.manual_seed(seed)
    model = tiny_djepa(head_config=FLOW, jepa=False)
    ema = copy.deepcopy(model)
    if distributed.world_size() > 1:
        distributed.shard_model(model)
        distributed.shard_model(ema)
    return model, ema, torch.optim.AdamW(model.parameters(), lr=1e-2)


def digest(tree) -> str:
    """sha256 over every tensor and number of a nested state, in key order."""
    h = hashlib.sha256()

    def walk(x):
        if isinstance(x, dict):
            for k in sorted(x, key=str):
                h.update(str(k).encode())
                walk(x[k])
        elif isinstance(x, (list, tuple)):
            for v in x:
                walk(v)
        elif isinstance(x, torch.Tensor):
            h.update(x.detach().float().cpu().contiguous().numpy().tobytes())
        else:
            h.update(repr(x).encode())

    walk(tree)
    return h.hexdigest()


def summary(model, ema, optimizer) -> dict:
    state = full_state(model, optimizer)
    return {
        "model": digest(state["model"]),
        "optimizer": digest(state["optimizer"]),
        "ema": digest(full_state(ema)["model"]),
    }


def main(args: list[str]) -> None:
    distributed.init_from_env("cpu")
    out, results = args[-1], {}
    for action in args[:-1]:
        verb, _, where = action.partition(":")
        if verb == "save":
            model, ema, optimizer = build(0)
            # A real forward and backward, so FSDP reduce-scatters the gradients into shards.
            g = torch.Generator().manual_seed(0)
            tokens, labels = torch.randn(4, 16, 4, generator=g), torch.arange(4) % 3
            mask = training_mask(4, 16, 0.7, g)
            model(tokens, labels, mask, None)["denoise"].backward()
            optimizer.step()
            with torch.no_grad():
                for e, p in zip(ema.parameters(), model.parameters()):
                    e.lerp_(p, 0.5)
            save_sharded(Path(where), model, ema, optimizer, {"step": 1})
            consolidate_ema(Path(where), ema)
        else:
            model, ema, optimizer = build(1)  # other weights: everything must come from the checkpoint
            assert load_sharded(Path(where), model, ema, optimizer)["step"] == 1
        results[action] = summary(model, ema, optimizer)
    Path(f"{out}.rank{distributed.rank()}").write_text(json.dumps(results))
    distributed.shutdown()


if __name__ == "__main__":
    main(sys.argv[1:])
