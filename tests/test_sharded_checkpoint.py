"""FSDP training state saved sharded with torch.distributed.checkpoint, resumed on 1 and 2 gloo ranks."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import free_port
from safetensors.torch import load_file

pytestmark = pytest.mark.slow  # training in torchrun processes

WORKER = Path(__file__).with_name("dcp_worker.py")


def run(tmp_path: Path, procs: int, *actions: str) -> dict:
    out = tmp_path / f"out{procs}-{len(actions)}"
    cmd = [sys.executable]
    if procs > 1:
        cmd += ["-m", "torch.distributed.run", f"--nproc_per_node={procs}", f"--master_port={free_port()}"]
    cmd += [str(WORKER), *actions, str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [json.loads(Path(f"{out}.rank{r}").read_text()) for r in range(procs)]
    assert all(r == ranks[0] for r in ranks)  # every rank sees the same whole state
    return ranks[0]


def test_sharded_checkpoints_resume_on_the_same_and_another_number_of_ranks(tmp_path):
    one, two = tmp_path / "saved_by_1", tmp_path / "saved_by_2"
    single = run(tmp_path, 1, f"save:{one}")
    sharded = run(tmp_path, 2, f"save:{two}", f"load:{two}", f"load:{one}")
    back = run(tmp_path, 1, f"load:{two}")
    assert sharded[f"load:{two}"] == sharded[f"save:{two}"]  # 2 ranks -> 2 ranks
    assert sharded[f"load:{one}"] == single[f"save:{one}"]  # 1 -> 2
    assert back[f"load:{two}"] == sharded[f"save:{two}"]  # 2 -> 1
    assert single[f"save:{one}"] == sharded[f"save:{two}"]  # same seed, same step: same state either way
    # Each rank wrote its own shard file; the EMA is consolidated once, whole, for sampling.
    assert len(list((two / "dcp").glob("*.distcp"))) == 2
    ema = load_file(str(two / "ema.safetensors"))
    assert ema and all(not hasattr(v, "placements") for v in ema.values())
