"""The command line: the console scripts (train, sample, train_tokenizer, export, serve, convert_tokenizer;
benchmark from djepa.benchmarks.experiments), their --help wrapper (scripts.py), config composition and checks.

The top layer: nothing in djepa.nn, djepa.engine, modalities or tokenizers imports it. Run a command as its console
script or as `python -m djepa.cli.<command>`.
"""

import os

# OpenMP threads busy-wait after each parallel region, so two djepa processes on a small machine starve each other;
# a short spin keeps each at its fair share (docs: Results, speed). Set before torch loads libgomp; the environment
# wins.
os.environ.setdefault("GOMP_SPINCOUNT", "1000")
