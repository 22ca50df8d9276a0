"""Experiment drivers: the commands that regenerate the results in the docs.

Each runs as `python -m djepa.benchmarks.experiments.NAME`; they use the evaluation library in djepa.benchmarks.
"""
