"""One way to plug parts in: a config entry's `_target_` names the class (Hydra's convention), its other keys are
the constructor's arguments. Adapters, tokenizers and denoising heads are all built so; a new one is a class and a
config entry, with no edit to the code that uses it.

`build` resolves the class with `hydra.utils.get_class` and checks it against the expected base class before
calling anything: a `_target_` read from an export folder someone sent must not run an arbitrary callable.
The caller may offer what it knows (an adapter: media channels, sample rate, how to make its default tokenizer);
a class takes the offered arguments its constructor names and no others.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

from djepa.errors import UsageError


def plugin_class(config: Mapping[str, Any], where: str, base: type | None = None) -> type:
    """The class `config["_target_"]` names; `where` is the config key for one-line errors."""
    from hydra.utils import get_class

    target = config.get("_target_")
    if not isinstance(target, str) or not target:
        raise UsageError(f"{where}._target_ is missing: name the class to build, e.g. package.module.Class")
    try:
        cls = get_class(target)
    except Exception as err:  # ImportError, AttributeError and Hydra's wrappers of them
        raise UsageError(f"{where}._target_={target!r} cannot be imported ({str(err).splitlines()[0]})") from err
    if base is not None and not (isinstance(cls, type) and issubclass(cls, base)):
        raise UsageError(f"{where}._target_={target!r} is not a {base.__name__}")
    return cls


def build(
    config: Mapping[str, Any], where: str, base: type | None = None, offered: Mapping[str, Any] | None = None
) -> Any:
    """An instance of the class `config` names, built from the config's other keys plus the `offered` arguments
    the constructor takes. A key the constructor does not take is an error naming it, unless its value is None
    (null means "the default": a setting of another tokenizer left in the config does no harm)."""
    cls = plugin_class(config, where, base)
    params = inspect.signature(cls).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    kwargs: dict[str, Any] = {}
    for key, value in config.items():
        if key == "_target_" or (value is None and key not in params and not takes_any):
            continue
        if key not in params and not takes_any:
            raise UsageError(f"{where}.{key}: {cls.__name__} takes no such setting ({', '.join(params)})")
        kwargs[key] = value
    for key, value in (offered or {}).items():
        if key not in kwargs and (key in params or takes_any):
            kwargs[key] = value
    return cls(**kwargs)
