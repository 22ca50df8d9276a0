"""The one place config becomes objects: every `_target_` in a config (the command line's, a run directory's
config.yaml, an export's, a checkpoint's model config) is resolved here, and the adapter, tokenizer and denoising
head are built here. The model (djepa.nn.model.DJEPA) builds its head through `head`.

A `_target_` names a class (Hydra's convention); the entry's other keys are its constructor's arguments. A run
directory or an export may come from someone else, so a `_target_` is untrusted: it resolves only to a class of
the expected base (ADAPTER, TOKENIZER, HEAD) defined in djepa's own packages or in a module the user allow-lists,
and anything else is refused in one line naming the key, before any module is imported.

Allow-listing a plugin module (it covers its submodules too; never read from a run's or an export's files):
- the command line: the top-level config key `plugins`, a list of module names (`plugins=[mypkg.adapters]`;
  `export` and `serve` take `plugins=mypkg.adapters,other`), handed to `set_plugins` once per command;
- in code: `Pipeline.from_pretrained(..., plugins=["mypkg.adapters"])`, or `with allowed_plugins([...]):`.

Base classes are checked by their dotted names in the class's MRO, so this module imports no layer above it.
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from djepa.errors import UsageError

OWN_PACKAGES = ("djepa",)


@dataclass(frozen=True)
class Kind:
    """What a `_target_` must name: a subclass of one of `bases` (dotted names), or, where `members` is set, a
    class with those methods (the adapter is a protocol; a plugin need not subclass ModalityAdapter)."""

    noun: str
    bases: tuple[str, ...]
    members: tuple[str, ...] = ()


ADAPTER = Kind(
    "ModalityAdapter",
    ("djepa.modalities.base.ModalityAdapter",),
    ("token_data", "decode_tokens", "save", "save_grid", "prime_tokens", "train_tokenizer"),
)
TOKENIZER = Kind("LatentTokenizer", ("djepa.tokenizers.base.LatentTokenizer",))
HEAD = Kind("TokenHead", ("djepa.nn.heads.TokenHead",))

_command_line: tuple[str, ...] = ()  # the command's `plugins` key (set_plugins)
_scoped: list[str] = []  # allowed_plugins blocks, innermost last


def plugin_list(value: Any, key: str = "plugins") -> list[str]:
    """Module names from a list or a comma-separated string; each must be a dotted Python name."""
    if value is None or value == "":
        return []
    items = value.split(",") if isinstance(value, str) else list(value)
    names = [str(item).strip() for item in items]
    for name in names:
        if not _is_dotted(name):
            raise UsageError(f"{key}: {name!r} is not a module name (e.g. mypkg.adapters)")
    return names


def set_plugins(modules: Any) -> None:
    """The modules this command allow-lists (its `plugins` key), replacing any earlier command's."""
    global _command_line
    _command_line = tuple(plugin_list(modules))


@contextlib.contextmanager
def allowed_plugins(modules: Any) -> Iterator[None]:
    """Allow-list `modules` too while the block runs."""
    names = plugin_list(modules)
    _scoped.extend(names)
    try:
        yield
    finally:
        del _scoped[len(_scoped) - len(names) :]


def plugin_modules() -> tuple[str, ...]:
    """Every module allow-listed now, besides djepa's own packages."""
    return (*_command_line, *_scoped)


def _is_dotted(name: str) -> bool:
    return bool(name) and all(part.isidentifier() and not part.startswith("__") for part in name.split("."))


def _under(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def _import(target: str) -> Any:
    """The object a dotted name names: the longest importable module prefix, then attributes."""
    parts = target.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        module_name = ".".join(parts[:cut])
        try:
            obj = importlib.import_module(module_name)
        except ModuleNotFoundError as err:
            if err.name is not None and _under(module_name, err.name):
                continue  # this prefix is no module (a class path): try a shorter one
            raise
        for attr in parts[cut:]:
            obj = getattr(obj, attr)
        return obj
    raise ModuleNotFoundError(f"No module named {parts[0]!r}")


def _is_kind(obj: Any, kind: Kind) -> bool:
    if not isinstance(obj, type):
        return False
    names = {f"{c.__module__}.{c.__qualname__}" for c in obj.__mro__}
    if any(base in names for base in kind.bases):
        return True
    return bool(kind.members) and all(callable(getattr(obj, m, None)) for m in kind.members)


def resolve(config: Mapping[str, Any], where: str, kind: Kind) -> type:
    """The class `config["_target_"]` names, refused (UsageError naming `where`) unless it lies in djepa or an
    allow-listed module, which is checked before anything is imported, and is a `kind`, checked after."""
    target = config.get("_target_")
    if target is None or target == "":
        raise UsageError(f"{where}._target_ is missing: name the class to build, e.g. package.module.Class")
    if not isinstance(target, str) or not _is_dotted(target) or "." not in target:
        raise UsageError(f"{where}._target_={target!r} is not a dotted class name (package.module.Class)")
    trusted = (*OWN_PACKAGES, *plugin_modules())
    if not any(_under(target, prefix) and target != prefix for prefix in trusted):
        module = target.rsplit(".", 1)[0]
        listed = ", ".join(plugin_modules()) or "none"
        raise UsageError(
            f"{where}._target_={target!r} is outside djepa and the allow-listed plugin modules ({listed}): "
            f"refused without importing it; if you trust that code, allow-list it with plugins=[{module}]"
        )
    try:
        obj = _import(target)
    except Exception as err:  # ImportError, AttributeError, or an error raised by the module's own code
        first_line = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise UsageError(f"{where}._target_={target!r} cannot be imported ({first_line})") from err
    if not _is_kind(obj, kind):
        raise UsageError(f"{where}._target_={target!r} is not a {kind.noun}")
    return obj


def build(config: Mapping[str, Any], where: str, kind: Kind, offered: Mapping[str, Any] | None = None) -> Any:
    """An instance of the class `config` names, built from the config's other keys plus the `offered` arguments
    the constructor takes. A key the constructor does not take is an error naming it, unless its value is None
    (null means "the default": a setting of another tokenizer left in the config does no harm)."""
    cls = resolve(config, where, kind)
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


def adapter_class(settings: Mapping[str, Any], where: str = "modality.adapter") -> type:
    """The adapter class `modality.adapter` names, not built: for its class-level hooks."""
    return resolve(settings, where, ADAPTER)


def adapter(settings: Mapping[str, Any], where: str = "modality.adapter") -> Any:
    """The modality adapter `modality.adapter` names; its tokenizer entry stays a dict (built on first use)."""
    return build(settings, where, ADAPTER)


def tokenizer(config: Mapping[str, Any], offered: Mapping[str, Any], where: str = "modality.adapter.tokenizer") -> Any:
    """The latent tokenizer an adapter's `tokenizer` entry names, with what the adapter offers its constructor."""
    return build(config, where, TOKENIZER, offered)


def head(config: Mapping[str, Any], sizes: Mapping[str, Any], where: str = "loss.head") -> Any:
    """The denoising head `loss.head` (or a checkpoint's `head_config`) names, its sizes given by the model."""
    return build(config, where, HEAD, sizes)
