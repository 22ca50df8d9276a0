"""Every command in the README's and the docs' shell code blocks still parses, at `--help` level.

A command line is found in a ```bash / ```sh / ```shell / ```console block of README.md or docs/**/*.md when it
runs one of the console scripts (directly, through `.venv/bin/`, `torchrun`, `env` or `taskset`) or
`python -m djepa.<package>.<module>`. Hydra commands (train, sample, train_tokenizer, benchmark and the
benchmark drivers that compose a config) must compose with `compose_config`; the key=value commands must name
keys that their `--help` lists. Placeholders in capitals (DIR, PATH, RUN, CLIP.mp4) stand for a temporary path.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import io
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import pytest

from djepa.cli.config import compose_config
from djepa.errors import UsageError

ROOT = Path(__file__).resolve().parents[1]
DOC_FILES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
SHELL_FENCE = re.compile(r"^```(bash|sh|shell|console)\s*$")
HYDRA_SCRIPTS = ("train", "sample", "train_tokenizer", "benchmark")
# python -m djepa.benchmarks.<module>: the keys each driver reads itself (None: it composes every argument);
# with `passthrough` the arguments that are not its own are composed as train overrides.
BENCHMARK_DRIVERS: dict[str, tuple[tuple[str, ...], bool] | None] = {
    "evaluate": None,
    "roundtrip": None,
    "spectrograms": None,
    "continuation": None,
    "speed": (("shape", "mar_repo", "steps", "warmup", "out", "dpm_steps", "fast_reveal_steps", "timed"), True),
    "step_profile": (("shape", "variants", "steps", "warmup", "samples", "out"), True),
    "data_scale": (("out", "sizes", "steps"), True),
    "rgb_digits": (("out", "per_class", "heldout_per_class", "seed"), False),
    "memory_estimate": (("model", "tokens", "dim", "classes", "buffer", "batch", "gpus"), False),
    "combine": (("out",), False),  # plus the result folders to pool, as plain paths
    "time_to_fd": (("results", "profile", "reference", "out"), False),
    "gpu_check": (("out", "batch", "compile", "steps", "peak_tflops"), False),
    "finetune": (("out", "source", "steps", "eval_every", "seeds", "per_class", "eval_per_class"), True),
    "fid_stats": (("data_dir", "standard_weights", "reference", "image_size", "pr_items", "workers", "home"), False),
    "data_path": (("cache", "items", "world", "steps", "batch"), False),
    "inpainting": (("out", "count", "num_steps"), True),
    # plus its step, make, roundtrip or generated, as a plain word
    "words": (
        ("out", "per_word", "test_per_word", "listener_per_word", "seed", "home", "listener_steps", "run_dir")
        + ("device", "sample.guidance_scale", "sample.temperature", "sample.num_steps", "sample.guidance_schedule")
        + ("sample.precision", "loss.head.sampling_steps"),
        False,
    ),
}
PLACEHOLDER = re.compile(r"^[A-Z][A-Z0-9_]+(\.[a-z0-9]+)?$")  # DIR, DIR_S0, CLIP.mp4, FILE.png


def console_scripts() -> dict[str, str]:
    """pyproject.toml's [project.scripts]: name -> "module:function"."""
    text = (ROOT / "pyproject.toml").read_text()
    section = text.split("[project.scripts]", 1)[1].split("\n[", 1)[0]
    return dict(re.findall(r'^([\w-]+)\s*=\s*"([\w.]+:\w+)"', section, flags=re.M))


SCRIPTS = console_scripts()


@dataclass
class Command:
    where: str  # file:line, the test id
    program: str  # a console script name, or "python -m <module>"
    args: list[str]


def shell_blocks(path: Path) -> list[tuple[int, str]]:
    """(line number, logical line) of every shell code block, backslash continuations joined."""
    out: list[tuple[int, str]] = []
    inside, pending, start = False, "", 0
    for number, line in enumerate(path.read_text().splitlines(), 1):
        stripped = line.strip()
        if stripped.startswith("```"):
            inside = not inside and bool(SHELL_FENCE.match(stripped))
            continue
        if not inside:
            continue
        if not pending:
            start = number
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        out.append((start, pending + stripped))
        pending = ""
    return out


def split_commands(line: str, variables: dict[str, str]) -> list[list[str]]:
    """A shell line as simple commands (split at ; && || | &), comments dropped, $VARS expanded."""
    lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    lexer.commenters = "#"
    commands: list[list[str]] = [[]]
    for token in lexer:
        if token and set(token) <= set(";&|"):
            commands.append([])
        elif token.startswith("$") and token[1:] in variables:
            commands[-1].extend(shlex.split(variables[token[1:]]))
        else:
            commands[-1].append(token)
    return [c for c in commands if c]


def unwrap(tokens: list[str], variables: dict[str, str]) -> tuple[str, list[str]] | None:
    """The djepa program a simple command runs and its arguments, or None for anything else."""
    while tokens and re.match(r"^[A-Z_][A-Z0-9_]*=", tokens[0]):  # VAR=value [command]
        name, value = tokens[0].split("=", 1)
        if len(tokens) == 1:
            variables[name] = value
        tokens = tokens[1:]
    while tokens:
        head = Path(tokens[0]).name
        if head == "taskset":
            tokens = tokens[3:]  # taskset -c CPUS
        elif head == "env":
            tokens = tokens[1:]
            while tokens and re.match(r"^[A-Z_][A-Z0-9_]*=", tokens[0]):
                tokens = tokens[1:]
        elif head == "torchrun":
            tokens = tokens[1:]
            while tokens and tokens[0].startswith("-"):
                tokens = tokens[1:]
        elif head in ("python", "python3") and len(tokens) > 2 and tokens[1] == "-m":
            return (f"python -m {tokens[2]}", tokens[3:]) if tokens[2].startswith("djepa.") else None
        elif head in SCRIPTS:
            return head, tokens[1:]
        else:
            return None
    return None


def doc_commands() -> list[Command]:
    """Each distinct command once (composing a config takes a Hydra pass), with every place it is shown."""
    found: dict[tuple[str, ...], Command] = {}
    for path in DOC_FILES:
        variables: dict[str, str] = {}
        for number, line in shell_blocks(path):
            for tokens in split_commands(line, variables):
                unwrapped = unwrap(tokens, variables)
                if unwrapped:
                    where = f"{path.relative_to(ROOT)}:{number}"
                    key = (unwrapped[0], *unwrapped[1])
                    if key in found:
                        found[key].where += f", {where}"
                    else:
                        found[key] = Command(where, *unwrapped)
    return list(found.values())


COMMANDS = doc_commands()


def fill_placeholders(args: list[str], tmp: Path) -> list[str]:
    """`key=DIR/train` -> `key=<tmp>/DIR/train`: a capitalised first path component is a placeholder."""
    out = []
    for arg in args:
        key, sep, value = arg.partition("=")
        if sep and PLACEHOLDER.match(value.split("/", 1)[0]):
            arg = f"{key}={tmp / value}"
        out.append(arg)
    return out


def assert_composes(overrides: list[str], where: str) -> None:
    try:
        compose_config(overrides)
    except UsageError as err:
        pytest.fail(f"{where}: does not compose: {err}", pytrace=False)


def help_text(script: str) -> str:
    """What `<script> --help` prints, run in this process."""
    module, function = SCRIPTS[script].split(":")
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer), pytest.raises(SystemExit) as exit_info:
        getattr(importlib.import_module(module), function)(["--help"])
    assert exit_info.value.code in (0, None), f"{script} --help exited {exit_info.value.code}"
    return buffer.getvalue()


def check_keys(keys: list[str], known: tuple[str, ...] | str, program: str) -> None:
    for key in keys:
        if isinstance(known, str):
            assert f"{key}=" in known, f"{program}: `{key}=` is not in its --help"
        else:
            assert key in known, f"{program}: unknown key {key!r} (takes {', '.join(known)})"


def test_the_docs_show_commands() -> None:
    """The extractor finds the commands (a broken one would make every check below vacuous)."""
    programs = {c.program for c in COMMANDS}
    assert len(COMMANDS) >= 40  # distinct commands
    assert {"train", "sample", "benchmark", "export", "serve", "convert_tokenizer"} <= programs
    assert any(c.where.startswith("README.md") for c in COMMANDS)
    assert "python -m djepa.benchmarks.evaluate" in programs


@pytest.mark.parametrize("command", COMMANDS, ids=[f"{c.where.split(',')[0]} {c.program}" for c in COMMANDS])
def test_command_parses(command: Command, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # relative out=/run_dir= paths must not meet files of the checkout
    args = fill_placeholders(command.args, tmp_path)
    if command.program.startswith("python -m "):
        module = command.program.split()[-1]
        assert importlib.util.find_spec(module) is not None, f"no module {module}"
        if module.startswith("djepa.cli."):
            program = module.rsplit(".", 1)[1]
            assert program in SCRIPTS, f"{module} is not a console script"
        else:
            driver = module.rsplit(".", 1)[1]
            assert module.startswith("djepa.benchmarks.") and driver in BENCHMARK_DRIVERS, f"unknown driver {module}"
            own = BENCHMARK_DRIVERS[driver]
            if own is None:
                assert_composes(args, command.where)
                return
            keys, passthrough = own
            source = Path(importlib.util.find_spec(module).origin or "").read_text()
            for key in keys:  # the driver still reads the keys this test knows it by
                assert re.search(rf"\b{key}\b", source), f"{module} no longer reads {key}"
            mine = [a.split("=", 1)[0] for a in args if "=" in a and a.split("=", 1)[0] in keys]
            rest = [a for a in args if not ("=" in a and a.split("=", 1)[0] in keys)]
            check_keys(mine, keys, module)
            if passthrough:
                assert_composes(rest, command.where)
            elif driver not in ("combine", "words"):
                assert not rest, f"{module} does not take {rest}"
            return
    else:
        program = command.program
    if program in HYDRA_SCRIPTS:
        if "--help" in args or "-h" in args:
            return
        if args[:2] == ["--cfg", "job"]:
            args = args[2:]
        assert_composes(args, command.where)
    else:
        text = help_text(program)
        check_keys([a.split("=", 1)[0] for a in args if "=" in a], text, program)
        assert all("=" in a for a in args), f"{program} takes key=value arguments only: {args}"
