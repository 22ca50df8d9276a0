"""Optional TensorBoard logging (`train.tensorboard=true`): an event log in `run_dir/tensorboard/`.

It holds what the run already makes, never anything computed for it: each record written to metrics.jsonl as
scalars (at the same steps, from the same dict), and each preview the `train` command writes, from the files and
decoded media of that preview: the grid PNG as an image (an image grid, an audio spectrogram grid, a video frame
strip), the animated GIF a video preview writes beside it as an animated image (the record `add_video` writes;
encoded here with PIL, since `add_video` needs moviepy), and for audio one clip per class at the model's
sample rate. Rank 0 alone writes. A resumed run appends a new event file to the same folder with
`purge_step` = its checkpoint's step + 1, so TensorBoard drops the events the interrupted run logged past the
checkpoint, as metrics.jsonl drops its records.

The `tensorboard` package is optional (`pip install 'djepa[tensorboard]'`); nothing here imports it until a
writer is opened.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from djepa.errors import UsageError

LOG_DIR = "tensorboard"
INSTALL = "pip install 'djepa[tensorboard]'"  # the extra is tensorboard>=2.16
MISSING = f"needs the tensorboard package, which is not installed: {INSTALL} (or pip install tensorboard)"

# The TensorBoard section of each metrics.jsonl key; other keys go under train/. `step` is the x axis.
SECTIONS = {
    "loss": "loss",
    "denoise": "loss",
    "jepa": "loss",
    "lr": "optim",
    "grad_norm": "optim",
    "grad_norm_denoise": "optim",
    "grad_norm_jepa": "optim",
    "grad_cos": "optim",
    "clip_fraction": "optim",
    "step_ms": "perf",
    "tokens_per_s": "perf",
    "peak_mem_mb": "perf",
}
# How encoded images name their channels (Summary.Image.colorspace): 1 grey, 3 RGB, 4 RGBA; GIFs are palette images.
COLORSPACE = {"L": 1, "RGB": 3, "RGBA": 4, "P": 3}


def tensorboard_missing() -> bool:
    """True when the tensorboard package cannot be imported (checked without importing it)."""
    return importlib.util.find_spec("tensorboard") is None


def scalar_tag(key: str) -> str:
    """Its section and name; the train.eval_every records' eval_* keys go under eval/."""
    return f"{SECTIONS.get(key, 'eval' if key.startswith('eval_') else 'train')}/{key}"


class TensorBoardLog:
    """A SummaryWriter on `run_dir/tensorboard` for a run that starts (or resumes) at `step`; a context manager."""

    def __init__(self, run_dir: str | Path, step: int = 0):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as err:
            problem = MISSING if tensorboard_missing() else f"cannot import tensorboard ({err}): {INSTALL}"
            raise UsageError(f"train.tensorboard=true {problem}") from err
        self.log_dir = Path(run_dir) / LOG_DIR
        # Events at steps past the checkpoint a run resumes from were logged by the run that was interrupted:
        # TensorBoard drops them on reading (a SessionLog.START at purge_step). Step `step` itself was logged
        # before that checkpoint was written, and is kept, as in metrics.jsonl.
        self.writer = SummaryWriter(log_dir=str(self.log_dir), purge_step=step + 1)

    def __enter__(self) -> TensorBoardLog:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        self.writer.close()

    def scalars(self, record: dict[str, Any]) -> None:
        """One metrics.jsonl record (plain Python numbers, so no device sync) at its own `step`."""
        step = int(record["step"])
        for key, value in record.items():
            if key == "step" or not isinstance(value, (int, float)):
                continue
            self.writer.add_scalar(scalar_tag(key), float(value), step)

    def preview(self, tag: str, generation: Any, step: int) -> None:
        """A preview the run wrote: a djepa.pipeline.Generation whose `grid_path` is the adapter's grid file."""
        if generation.grid_path is not None:
            self.encoded_image(f"{tag}/grid", generation.grid_path, step)
            gif = Path(generation.grid_path).with_suffix(".gif")  # a video preview's animation, beside its strip
            if gif.is_file():
                self.encoded_image(f"{tag}/video", gif, step)
        if generation.modality == "audio":
            seen: set[str] = set()
            for name, wave in zip(generation.names, generation.waveforms):
                if name not in seen:  # one clip per class
                    seen.add(name)
                    mono = wave.mean(axis=0) if wave.ndim > 1 else wave
                    self.writer.add_audio(f"{tag}/audio/{name}", mono, step, sample_rate=generation.sample_rate)
        self.writer.flush()

    def encoded_image(self, tag: str, path: str | Path, step: int) -> None:
        """An image file's bytes as they are (PNG, or an animated GIF, which TensorBoard plays)."""
        from PIL import Image
        from torch.utils.tensorboard.summary import Summary

        data = Path(path).read_bytes()
        with Image.open(path) as img:
            width, height, colorspace = img.width, img.height, COLORSPACE.get(img.mode, 3)
        image = Summary.Image(height=height, width=width, colorspace=colorspace, encoded_image_string=data)
        self.writer._get_file_writer().add_summary(Summary(value=[Summary.Value(tag=tag, image=image)]), step)
