"""`serve run_dir=DIR [port=7860]`: a Gradio page on localhost over `Pipeline`.

Class dropdown with the model's class names, guidance / temperature / steps / seed controls (an unconditional
model hides the class and guidance), Generate shows the image grid, a playable video or a playable clip with its
spectrogram. Video and audio models take an uploaded prime (or the first result) for continuation, a time range
of it to regenerate, and a length beyond the model's window; image models inpaint the region painted in an image
editor, or outpaint past a side. What a request decided (mask rounding, windows and overlap) shows as notes;
mistakes show as one message in the page, never a stack trace. The buttons' work is djepa.cli.serve_requests.
Needs the `demo` extra (`pip install -e ".[demo]"`); nothing is fetched from the network.
"""

from __future__ import annotations

import atexit
import errno
import logging
import os
import shutil
import socket
import sys
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from djepa.cli import serve_requests as requests
from djepa.cli.config import cli_errors, compose_config
from djepa.errors import UsageError
from djepa.pipeline import Pipeline

log = logging.getLogger(__name__)

MAX_SAMPLES = requests.MAX_SAMPLES
KEEP_REQUESTS = 8  # output folders kept for the page to fetch; older requests' files are removed


def check_port(value: object, host: str = "127.0.0.1") -> int:
    """`port`: a whole number 1-65535 that nothing on `host` listens on yet; one-line UsageError otherwise."""
    text = str(value).strip()
    if not text.isdigit():
        raise UsageError(f"port must be a number, got {value!r}")
    port = int(text)
    if not 1 <= port <= 65535:
        raise UsageError(f"port={port} is out of range: choose one from 1 to 65535 (default 7860)")
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server binds: a closing port is free
        try:
            sock.bind((host, port))
        except OSError as err:
            if err.errno == errno.EADDRINUSE:
                raise UsageError(
                    f"port={port} is in use on {host}: stop what listens there or choose another port"
                ) from err
            raise UsageError(f"port={port} cannot be opened on host={host}: {err.strerror or err}") from err
    return port


class RequestOutputs:
    """Each request's files in its own folder under one `$TMPDIR/djepa-serve-*` folder: the newest `keep`
    requests' folders stay (the page fetches them), older ones are removed, and the whole folder goes at close."""

    def __init__(self, keep: int = KEEP_REQUESTS):
        self.root = Path(tempfile.mkdtemp(prefix="djepa-serve-"))
        self.keep = max(1, keep)
        self.count = 0
        atexit.register(self.close)  # also when the server stops by Ctrl-C or an error

    def next(self) -> Path:
        """A fresh folder for one request, after removing those beyond the newest `keep - 1`."""
        self.count += 1
        folders = sorted((p for p in self.root.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))
        for old in folders[: max(0, len(folders) - (self.keep - 1))]:
            shutil.rmtree(old, ignore_errors=True)
        return self.root / str(self.count)

    def close(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


def _gradio() -> Any:
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no network at any point
    try:
        import gradio as gr
    except ImportError as err:
        raise UsageError('serve needs gradio: pip install -e ".[demo]"') from err
    return gr


def generate_files(
    pipe: Pipeline,
    label: str,
    num_samples: int,
    guidance: float,
    temperature: float,
    num_steps: int,
    seed: int,
    prime: str | None,
    out: Path,
) -> tuple[Path, Path]:
    """Sample and write the files; returns (grid preview, first item's file)."""
    settings = requests.Settings(label, num_samples, guidance, temperature, num_steps, seed)
    made = requests.generate(pipe, settings, out, prime)
    return made.grid, made.first


def _file_path(value: Any) -> str | None:
    """A gr.File value (a path, or an object with `.name`) as a path."""
    return value if isinstance(value, str) else getattr(value, "name", None)


def build_app(pipe: Pipeline, outputs: RequestOutputs | None = None) -> Any:
    """The Gradio Blocks app for `pipe` (not launched); its files go to `outputs` (`app.djepa_outputs`)."""
    gr = _gradio()
    lock = threading.Lock()  # one generation at a time: the model is shared
    files = outputs or RequestOutputs()
    modality = pipe.modality
    d = pipe.defaults

    def guarded(make: Any) -> Any:
        """Run `make(out)` under the lock; a mistake becomes one line in the page, never a traceback."""
        try:
            with lock:
                return make(files.next())
        except (UsageError, FileNotFoundError, ValueError) as err:
            raise gr.Error(str(err).splitlines()[0]) from err
        except Exception as err:  # the page shows one line; the server log keeps the traceback
            log.exception("generation failed")
            first_line = str(err).splitlines()[0] if str(err) else ""
            raise gr.Error(f"generation failed: {type(err).__name__}: {first_line}") from err

    def notes_text(made: requests.Made) -> str:
        return "\n".join(made.notes)

    def run(label, num_samples, guidance, temperature, num_steps, seed, prime=None, *times):
        """Generate; video and audio also pass the time controls: region, length, overlap."""
        settings = requests.Settings(label, num_samples, guidance, temperature, num_steps, seed)
        region, length, overlap = times or (None, None, None)
        made = guarded(lambda out: requests.generate(pipe, settings, out, _file_path(prime), region, length, overlap))
        # image: the grid; video and audio: the first item, playable, and the grid (frame strips / spectrograms)
        shown = [str(made.grid)] if modality == "image" else [str(made.first), str(made.grid)]
        return (*shown, notes_text(made), str(made.first))

    def run_inpaint(label, num_samples, guidance, temperature, num_steps, seed, editor, side, fraction):
        settings = requests.Settings(label, num_samples, guidance, temperature, num_steps, seed)
        made = guarded(lambda out: requests.inpaint(pipe, settings, out, editor, side, fraction))
        return str(made.grid), str(made.strip), notes_text(made), str(made.first)

    def first_item(first: str | None) -> str:
        if not first:
            raise gr.Error("generate first: this loads the first sample of the last request")
        return first

    # Gradio's own copies of the files shown: removed hourly once an hour old (and when the server restarts).
    with gr.Blocks(title=f"D-JEPA {modality}", delete_cache=(3600, 3600)) as app:
        trained = f" (step {pipe.step})" if pipe.step is not None else ""  # a model built in code has no step
        classes = "unconditional" if pipe.unconditional else f"{len(pipe.class_names)} classes"
        gr.Markdown(f"## D-JEPA {modality} model\n`{pipe.source}`{trained}, {classes}")
        first = gr.State(None)  # the first item of the last request: loadable into the editor or as the prime
        with gr.Row():
            with gr.Column(scale=1):
                # An unconditional model has no class to pick and no guidance (its default is 1): both hidden.
                conditional = not pipe.unconditional
                label = gr.Dropdown(
                    pipe.class_names, value=pipe.class_names[0], label="class", elem_id="class", visible=conditional
                )
                num_samples = gr.Slider(1, MAX_SAMPLES, value=4, step=1, label="samples", elem_id="samples")
                guidance = gr.Slider(
                    1.0, 10.0, value=d.guidance_scale, step=0.1, label="guidance scale", elem_id="cfg",
                    visible=conditional,
                )  # fmt: skip
                temperature = gr.Slider(0.1, 1.5, value=d.temperature, step=0.05, label="temperature")
                num_steps = gr.Slider(1, 128, value=d.num_steps, step=1, label="steps", elem_id="steps")
                seed = gr.Number(value=0, precision=0, label="seed", elem_id="seed")
                settings = [label, num_samples, guidance, temperature, num_steps, seed]
                if modality != "image":
                    unit = requests.UNITS[modality][0]
                    whole = unit == "frames"
                    prime = gr.File(
                        label="prime: continue this clip (optional)",
                        file_types=[".mp4", ".avi", ".webm", ".gif"] if whole else [".wav", ".flac", ".ogg"],
                        elem_id="prime",
                    )
                    use_first = gr.Button("use the first result as the prime", size="sm", elem_id="use-first")
                    time_controls = [
                        gr.Textbox(
                            label=f"regenerate {unit} a:b of the prime (optional)",
                            placeholder="4:8" if whole else "0.25:0.5",
                            elem_id="region",
                        ),
                        gr.Number(
                            value=requests.window_length(pipe), precision=0 if whole else None,
                            label=f"length ({unit}; beyond one window: window by window)", elem_id="length",
                        ),
                        gr.Number(
                            value=requests.DEFAULT_OVERLAP[modality], precision=0 if whole else None,
                            label=f"overlap ({unit} of the prime kept, and shared by windows)", elem_id="overlap",
                        ),
                    ]  # fmt: skip
                    gr.Markdown(requests.time_note(pipe), elem_id="time-note")
                    use_first.click(first_item, [first], [prime])
                    inputs = [*settings, prime, *time_controls]
                else:
                    inputs = settings
                button = gr.Button("Generate", variant="primary", elem_id="generate")
            with gr.Column(scale=2):
                if modality == "image":
                    shown = [gr.Image(label="samples", type="filepath", elem_id="result")]
                elif modality == "video":
                    shown = [
                        gr.Video(label="first clip", elem_id="result"),
                        gr.Image(label="all clips (frame strips)", type="filepath", elem_id="grid"),
                    ]
                else:
                    shown = [
                        gr.Audio(label="first clip", type="filepath", elem_id="result"),
                        gr.Image(label="spectrograms", type="filepath", elem_id="grid"),
                    ]
                notes = gr.Textbox(label="what was done", interactive=False, elem_id="notes")
        button.click(run, inputs, [*shown, notes, first])
        if modality == "image":
            brush_size = max(1, int(getattr(pipe.adapter, "image_size", 32)) // 8)  # default model: a token wide
            with gr.Row():
                with gr.Column(scale=2):
                    editor = gr.ImageEditor(
                        label="inpaint: paint what to regenerate (white), the rest stays",
                        type="pil", image_mode="RGBA", format="png", sources=["upload", "clipboard"],
                        transforms=(), layers=False, canvas_size=(256, 256),
                        brush=gr.Brush(brush_size, ["#ffffff"], "#ffffff", "fixed"),
                        elem_id="editor",
                    )  # fmt: skip
                with gr.Column(scale=1):
                    gr.Markdown(requests.token_note(pipe), elem_id="token-note")
                    load_first = gr.Button("load the first sample", size="sm", elem_id="load-first")
                    side = gr.Dropdown(
                        list(requests.OUTPAINT_CHOICES), value=requests.NO_OUTPAINT, elem_id="outpaint",
                        label="outpaint: extend past this side instead (none: inpaint the painted region)",
                    )  # fmt: skip
                    fraction = gr.Slider(
                        0.05, 0.45, value=requests.OUTPAINT_FRACTION, step=0.05, label="outpaint fraction",
                        elem_id="fraction",
                    )  # fmt: skip
                    inpaint_button = gr.Button("Inpaint / outpaint", variant="primary", elem_id="inpaint")
                with gr.Column(scale=2):
                    strip = gr.Image(label="image | mask | results", type="filepath", elem_id="strip")
            load_first.click(lambda f: {"background": first_item(f), "layers": [], "composite": f}, [first], [editor])
            inpaint_button.click(run_inpaint, [*settings, editor, side, fraction], [shown[0], strip, notes, first])
    app.djepa_outputs = files
    return app


def load_pipeline(cfg: DictConfig) -> Pipeline:
    """The model `serve` shows: `run_dir` (or `checkpoint`), its `_target_` classes from djepa or `plugins`."""
    return Pipeline.from_pretrained(cfg.run_dir, cfg.device, cfg.checkpoint, plugins=list(cfg.plugins))


def launch(pipe: Pipeline, port: int = 7860, host: str = "127.0.0.1", block: bool = True) -> Any:
    """Serve `pipe`. Blocking: until stopped, then its output files are removed; otherwise the caller closes the
    app and `app.djepa_outputs` (or the files go at exit)."""
    port = check_port(port, host)
    app = build_app(pipe)
    try:
        app.queue().launch(
            server_name=host, server_port=port, share=False, show_error=True, prevent_thread_lock=not block, quiet=True
        )
    except OSError as err:  # the port taken between the check and the bind
        app.djepa_outputs.close()
        raise UsageError(f"port={port} cannot be opened on host={host}: {str(err).splitlines()[0]}") from err
    if block:
        app.djepa_outputs.close()
    return app


def main(argv: Sequence[str] | None = None) -> None:
    with cli_errors():
        cfg = compose_config(list(sys.argv[1:] if argv is None else argv), "serve")
        port = check_port(cfg.port, cfg.host)  # before the model loads: a taken port costs nothing
        _gradio()
        pipe = load_pipeline(cfg)
        print(f"serving {pipe.source} on http://{cfg.host}:{port}")
        launch(pipe, port, str(cfg.host))


if __name__ == "__main__":  # `python -m ...` answers --help / --cfg job as the console script does
    from djepa.cli import scripts

    scripts.serve()
