"""Experiment drivers: the commands that regenerate the results in the docs.

Each runs as `python -m djepa.benchmarks.experiments.NAME`; they use the evaluation library in djepa.benchmarks.
"""

from __future__ import annotations

from collections.abc import Sequence

from djepa.errors import UsageError


def key_values(argv: Sequence[str], defaults: dict[str, str]) -> dict[str, str]:
    """`key=value` arguments over `defaults`; an unknown key or a bare word is one line naming the keys taken."""
    args = dict(defaults)
    for item in argv:
        key, sep, value = item.partition("=")
        if not sep or key not in args:
            raise UsageError(f"unknown argument {item!r}: takes {', '.join(k + '=' for k in args)}")
        args[key] = value
    return args
