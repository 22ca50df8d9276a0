"""The package layout: dependencies point down only, no import circles, and the top-level folders shadow nothing
installed.

Layers, lowest first: djepa.errors and djepa.io; djepa.nn (the network); djepa.engine (training, checkpoints,
sampling); djepa.pipeline and djepa.export (the public API); djepa.cli (the commands). modalities and tokenizers
sit beside the core, which never imports them; benchmarks (the evaluation library, with its experiment drivers in
benchmarks.experiments) sits on top: benchmarks -> modalities -> tokenizers, and each of them -> djepa.
"""

from __future__ import annotations

import ast
import importlib.metadata
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# folder in the repository -> the package name it installs as (pyproject.toml's package-dir)
PACKAGES = {
    "djepa": "djepa",
    "modalities": "djepa.modalities",
    "tokenizers": "djepa.tokenizers",
    "benchmarks": "djepa.benchmarks",
    "configs": "djepa.configs",
}

CORE_NEVER = ("djepa.modalities", "djepa.tokenizers", "djepa.benchmarks", "modalities", "tokenizers", "benchmarks")
# module prefix -> what modules under it must never import (prefix match on dotted names)
ABOVE_THE_BASE = ("djepa.nn", "djepa.engine", "djepa.cli", "djepa.pipeline", "djepa.export", *CORE_NEVER)
RULES = {
    "djepa.errors": ("djepa",),
    "djepa.io": ("djepa",),
    "djepa.chunks": ("djepa",),
    # the base layer beside errors and io: the `_target_` builder (class names as strings only, never imports of
    # what they name) and the config schema
    "djepa.builders": ABOVE_THE_BASE,
    "djepa.schema": ABOVE_THE_BASE,
    "djepa.nn": ("djepa.engine", "djepa.cli", "djepa.pipeline", "djepa.export", *CORE_NEVER),
    "djepa.engine": ("djepa.cli", "djepa.pipeline", "djepa.export", *CORE_NEVER),
    "djepa.pipeline": ("djepa.cli", *CORE_NEVER),
    "djepa.export": ("djepa.cli", *CORE_NEVER),
    "djepa.cli": CORE_NEVER,
    "djepa.modalities": ("djepa.cli", "djepa.pipeline", "djepa.export", "djepa.benchmarks"),
    "djepa.tokenizers": ("djepa.cli", "djepa.pipeline", "djepa.export", "djepa.benchmarks", "djepa.modalities"),
    # the evaluation library never reaches into the experiment drivers built on it
    "djepa.benchmarks": ("djepa.benchmarks.experiments",),
}


def module_files() -> dict[str, Path]:
    """Every module of the installed packages, by the dotted name it installs as."""
    found = {}
    for folder, package in PACKAGES.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            parts = list(path.relative_to(ROOT / folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join([package, *parts])] = path
    return found


def _is_type_checking(node: ast.AST) -> bool:
    """An `if TYPE_CHECKING:` block: imports for annotations only, never run."""
    if not isinstance(node, ast.If):
        return False
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _nodes(tree: ast.AST, runtime_only: bool) -> list[ast.AST]:
    if not runtime_only:
        return list(ast.walk(tree))
    found, todo = [], [tree]
    while todo:
        node = todo.pop()
        found.append(node)
        todo.extend(child for child in ast.iter_child_nodes(node) if not _is_type_checking(child))
    return found


def imported_names(module: str, path: Path, runtime_only: bool = False) -> set[str]:
    """Dotted names a module imports anywhere in its body (lazy imports inside functions included; with
    `runtime_only`, not those under `if TYPE_CHECKING:`).

    `from a.b import c` gives `a.b.c` (c may be a submodule); relative imports are resolved against `module`.
    """
    tree = ast.parse(path.read_text(), filename=str(path))
    is_package = path.name == "__init__.py"
    names = set()
    for node in _nodes(tree, runtime_only):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".")
                anchor = anchor[: len(anchor) - node.level + (1 if is_package else 0)]
                base = ".".join(anchor + ([base] if base else []))
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def under(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def _forbids(prefix: str, bad: str, module: str, name: str) -> bool:
    """Whether the rule `prefix: (..., bad, ...)` forbids `module` to import `name`. A module may import anything
    under its own prefix, except where `bad` is a part of that prefix: then only that part itself may."""
    if not under(name, bad):
        return False
    return not under(module, bad) if under(bad, prefix) else not under(name, prefix)


def forbidden(module: str, names: set[str]) -> list[str]:
    """The names among `names` that the rules forbid `module` to import."""
    return sorted(
        {
            name
            for prefix, never in RULES.items()
            if under(module, prefix)
            for name in names
            if any(_forbids(prefix, bad, module, name) for bad in never)
        }
    )


def violations() -> list[str]:
    return [
        f"{path.relative_to(ROOT)} imports {name}"
        for module, path in module_files().items()
        for name in forbidden(module, imported_names(module, path))
    ]


def test_the_layout_check_sees_every_layer_and_their_imports():
    modules = module_files()
    for prefix in RULES:
        assert any(under(m, prefix) for m in modules), f"no module under {prefix}: the layout check is stale"
    # it reads real imports, lazy ones too: the trainer uses the model, the model's save uses djepa.io lazily
    assert "djepa.nn.model.DJEPA" in imported_names("djepa.engine.trainer", modules["djepa.engine.trainer"])
    assert "djepa.io.atomic_write_json" in imported_names("djepa.nn.model", modules["djepa.nn.model"])
    # and it flags what points up or sideways
    assert forbidden("djepa.nn.vit", {"djepa.engine.checkpoint.CheckpointManager", "torch.nn"}) == [
        "djepa.engine.checkpoint.CheckpointManager"
    ]
    assert forbidden("djepa.engine.trainer", {"djepa.cli.config.cli_errors", "djepa.nn.model.DJEPA"}) == [
        "djepa.cli.config.cli_errors"
    ]
    assert forbidden("djepa.pipeline", {"djepa.modalities.image.ImageAdapter", "djepa.export.x"}) == [
        "djepa.modalities.image.ImageAdapter"
    ]
    assert forbidden("djepa.modalities.base", {"djepa.cli.config.cli_errors"}) == ["djepa.cli.config.cli_errors"]
    assert forbidden("djepa.cli.train", {"djepa.engine.trainer.Trainer", "djepa.pipeline.tokenizer_hash"}) == []
    # the evaluation library stays below its experiment drivers, which use it and each other
    assert forbidden("djepa.benchmarks.evaluate", {"djepa.benchmarks.experiments.run.machine"}) == [
        "djepa.benchmarks.experiments.run.machine"
    ]
    drivers = {"djepa.benchmarks.experiments.probes.context_use", "djepa.benchmarks.evaluate.score"}
    assert forbidden("djepa.benchmarks.experiments.run", drivers) == []
    assert forbidden("djepa.modalities.image", {"djepa.benchmarks.views.ImageView"}) == [
        "djepa.benchmarks.views.ImageView"
    ]
    assert forbidden("djepa.io", {"djepa.io.x", "djepa.errors.UsageError"}) == ["djepa.errors.UsageError"]


def test_dependencies_point_down_only():
    assert violations() == []


# Import circles still present, each as the set of modules it joins; the test fails once one is gone (drop it here).
KNOWN_CYCLES: list[set[str]] = []


def import_graph(modules: dict[str, Path]) -> dict[str, set[str]]:
    """module -> the modules of ours it imports when run (a name resolves to the longest module it starts with)."""

    def resolve(name: str) -> str | None:
        parts = name.split(".")
        return next((m for k in range(len(parts), 0, -1) if (m := ".".join(parts[:k])) in modules), None)

    graph = {}
    for module, path in modules.items():
        targets = {resolve(name) for name in imported_names(module, path, runtime_only=True)}
        graph[module] = {t for t in targets if t is not None and t != module}
    return graph


def import_cycles(graph: dict[str, set[str]]) -> list[set[str]]:
    """The strongly connected components of more than one module (Tarjan): every import circle."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(component)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return cycles


def test_the_cycle_check_finds_a_circle_through_lazy_imports_and_skips_annotation_imports(tmp_path):
    files = {"a": "import c\n", "b": "def f():\n    import a\n", "c": "from b import f\n"}
    files["d"] = "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import a\n"
    files["e"] = "from d import name\n"
    modules = {}
    for name, text in files.items():
        modules[name] = tmp_path / f"{name}.py"
        modules[name].write_text(text)
    graph = import_graph(modules)
    # `from b import f` is module b; the lazy import counts, the annotation-only one does not
    assert graph == {"a": {"c"}, "b": {"a"}, "c": {"b"}, "d": set(), "e": {"d"}}
    assert import_cycles(graph) == [{"a", "b", "c"}]
    graph["b"] = set()
    assert import_cycles(graph) == []


def test_no_import_circles_among_the_installed_packages():
    cycles = import_cycles(import_graph(module_files()))
    assert [c for c in cycles if c not in KNOWN_CYCLES] == []
    assert [c for c in KNOWN_CYCLES if c not in cycles] == [], "a known circle is gone: remove it from KNOWN_CYCLES"


def test_a_relative_import_resolves_to_the_module_it_names(tmp_path):
    path = tmp_path / "m.py"
    path.write_text("from ..cli import config\nfrom . import vit\n")
    assert imported_names("djepa.nn.m", path) == {"djepa.cli.config", "djepa.nn.vit"}


def _import_from_repo_root(code: str, pythonpath: str | None = None) -> dict:
    """Run `code` as `python -c` with the repository root as the working directory (sys.path[0] = '')."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONSAFEPATH")}
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


IMPORT_TOKENIZERS = """
import json, sys
try:
    import tokenizers
except ModuleNotFoundError as err:
    result = {"file": None, "error": str(err)}
else:
    result = {"file": tokenizers.__file__, "mark": getattr(tokenizers, "MARK", None)}
import djepa.tokenizers.base  # ours is still there under its installed name
result["ours"] = sys.modules["djepa.tokenizers"].__file__
print(json.dumps(result))
"""


def _is_ours(file: str | None) -> bool:
    return file is not None and Path(file).resolve().is_relative_to(ROOT / "tokenizers")


@pytest.mark.slow
def test_the_tokenizers_folder_does_not_shadow_hugging_face_tokenizers_from_the_repo_root():
    result = _import_from_repo_root(IMPORT_TOKENIZERS)
    assert not _is_ours(result["file"]), f"`import tokenizers` from the repo root found our folder: {result}"
    assert _is_ours(result["ours"])
    try:
        dist = importlib.metadata.distribution("tokenizers")
    except importlib.metadata.PackageNotFoundError:
        # Hugging Face tokenizers is not installed: the import fails as for any missing module.
        assert result["file"] is None and "No module named 'tokenizers'" in result["error"]
    else:
        assert result["file"] is not None and Path(result["file"]).resolve().is_relative_to(
            Path(dist.locate_file("")).resolve()
        )


@pytest.mark.slow
def test_importing_tokenizers_from_the_repo_root_hands_over_to_an_installed_package(tmp_path):
    # A stand-in for Hugging Face's package, later on sys.path than the repository root (as site-packages is).
    fake = tmp_path / "tokenizers"
    fake.mkdir()
    (fake / "__init__.py").write_text("from .sub import MARK\n")  # a relative import: its package must be in place
    (fake / "sub.py").write_text("MARK = 'installed'\n")
    result = _import_from_repo_root(IMPORT_TOKENIZERS, pythonpath=str(tmp_path))
    assert result["mark"] == "installed"
    assert Path(result["file"]).resolve() == (fake / "__init__.py").resolve()
    assert _is_ours(result["ours"])


@pytest.mark.slow
def test_transformers_imports_from_the_repo_root_when_installed():
    for name in ("transformers", "tokenizers"):
        try:
            importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            pytest.skip(f"{name} is not installed; the tests above check the tokenizers import itself")
    code = "import json, transformers; from transformers import PreTrainedTokenizerFast; print(json.dumps({}))"
    assert _import_from_repo_root(code) == {}


# import name -> distribution, for modules not installed here (the rest are looked up in the installed metadata)
DISTRIBUTIONS = {"xformers": "xformers", "decord": "decord", "gradio": "gradio", "selenium": "selenium"}


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def declared_distributions() -> set[str]:
    """Every distribution pyproject.toml names, in the dependencies or any extra."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        tomllib = pytest.importorskip("tomli")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = project["dependencies"] + [r for extra in project["optional-dependencies"].values() for r in extra]
    return {_normalise(re.match(r"[A-Za-z0-9._-]+", r).group(0)) for r in requirements}


def test_every_third_party_import_is_declared():
    local = {p.stem for p in (ROOT / "tests").glob("*.py")} | {"djepa", *PACKAGES}
    local |= {p.parent.name for p in (ROOT / "tests").glob("*/__init__.py")}  # reference code kept as packages
    files = [*module_files().values(), *(ROOT / "tests").glob("*.py")]
    top = {name.split(".")[0] for path in files for name in imported_names("x", path)}
    third_party = sorted(top - set(sys.stdlib_module_names) - local - {"__future__", "configs", "benchmarks"})
    installed = importlib.metadata.packages_distributions()
    declared = declared_distributions()
    undeclared = {
        name: dists
        for name in third_party
        if not (dists := installed.get(name, [DISTRIBUTIONS.get(name, name)]))
        or not any(_normalise(d) in declared for d in dists)
    }
    assert undeclared == {}, f"imported but not in pyproject.toml: {undeclared}"
    assert {"torch", "scipy", "omegaconf", "einops", "torchvision"} <= set(third_party)  # the check sees them
