"""The commands keep OpenMP from busy-waiting (two djepa processes on one machine share the cores)."""

import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow  # fresh interpreters importing torch

CODE = "import os, djepa.cli.train, torch; torch.ones(4).sum(); print(os.environ.get('GOMP_SPINCOUNT'))"


def run(env: dict[str, str]) -> str:
    proc = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def test_commands_set_a_short_openmp_spin_before_torch_loads_and_respect_the_users():
    env = {k: v for k, v in os.environ.items() if k != "GOMP_SPINCOUNT"}
    assert run(env) == "1000"
    assert run({**env, "GOMP_SPINCOUNT": "50000"}) == "50000"
    probe = [sys.executable, "-c", "import sys, djepa.cli; print('torch' in sys.modules)"]
    assert subprocess.run(probe, capture_output=True, text=True, env=env).stdout.strip() == "False"
