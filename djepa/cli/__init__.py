"""The command line: the console scripts (train, sample, train_tokenizer, export, serve; benchmark from
djepa.benchmarks), their --help wrapper (scripts.py), config composition and checks.

The top layer: nothing in djepa.nn, djepa.engine, modalities or tokenizers imports it. Run a command as its console
script or as `python -m djepa.cli.<command>`.
"""

import os

# Two djepa processes on one small machine (a `sample` beside a `train`) collapsed: PyTorch's OpenMP threads
# busy-wait for ~300,000 spins after each parallel region, so each process burnt the cores the other needed.
# Measured on 2 cores (README, Speed): two concurrent image trainings took 600-930 ms per step against 159-167 ms
# alone; with GOMP_SPINCOUNT=1000, 344-364 ms (2.1x, the fair share of two cores) and 162-169 ms alone.
# OMP_WAIT_POLICY=PASSIVE also fixed the pair but cost 33 % alone. Set before torch loads libgomp; a value in
# the environment wins.
os.environ.setdefault("GOMP_SPINCOUNT", "1000")
