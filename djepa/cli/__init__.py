"""The command line: the console scripts (train, sample, train_tokenizer, export, serve; benchmark from
djepa.benchmarks), their --help wrapper (scripts.py), config composition and checks.

The top layer: nothing in djepa.nn, djepa.engine, modalities or tokenizers imports it. Run a command as its console
script or as `python -m djepa.cli.<command>`.
"""
