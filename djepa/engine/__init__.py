"""The engine: the training loop, checkpoints (whole and sharded), distributed helpers, devices and precision,
run locks and resume checks, the data it consumes, and the wiring from a composed config to a model and sampling.

Imports the network (djepa.nn), never the command line (djepa.cli).
"""
