"""`Pipeline`: a trained run or an exported folder, ready to generate media in a few lines.

    from djepa import Pipeline
    pipe = Pipeline.from_pretrained("runs/image")
    out = pipe(class_labels=[3, 7], num_samples=4, seed=0)
    out.images[0]            # PIL image; out.save("samples/") writes what `sample` writes

Everything that decides how tokens become media (modality, grid, patch size, channels, tokenizer) comes from
the run's own saved config, never from the caller: a model sampled with another patch size than it was trained
with decodes to scrambled media, so such overrides are refused, naming the key. The `sample` command and the
export are thin layers over this class.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from djepa import builders
from djepa.engine.adapter import UNCONDITIONAL, Adapter, HasFps, HasSampleRate, build_adapter, is_unconditional
from djepa.engine.checkpoint import CheckpointManager
from djepa.engine.loading import find_checkpoint, sampling_head_config
from djepa.engine.long_generation import decode_long, generate_windows, plan_length
from djepa.engine.runtime import resolve_device
from djepa.engine.sampling import SamplingSettings, generate
from djepa.engine.time_masks import check_time_keys
from djepa.errors import UsageError
from djepa.export import EXPORT_INDEX, export_pipeline, tokenizer_hash
from djepa.nn.heads import FREE_HEAD_KEYS
from djepa.nn.model import DJEPA

# Keys under `modality.adapter` that may differ from training: where files live and how they are written.
# Everything else there (patch size, image size, channels, frames, sample rate, mel settings, tokenizer kind,
# shift and scale) shapes the tokens, so a different value would decode the model's tokens into garbage.
FREE_ADAPTER_KEYS = {
    "tokenizer.path",
    "tokenizer.griffin_lim_iters",
    "cache_dir",
    "data_dir",
    "seed",
    "fps",
    "count",
    "num_clips",
    "digit_size",
    "frame_stride",
    "normalize",
    "flip",
}
# How video and audio items are masked, for the error when an image mask is given to such a model.
TIME_MASKS = {"video": "mask_frames=A:B", "audio": "mask_seconds=A:B"}
# What a group choice on the command line (`modality=video`, `loss=flow`) is compared by.
GROUP_IDENTITY = {"modality": "modality.name", "loss": "loss.head._target_"}


def _leaves(key: str, value: Any) -> list[tuple[str, Any]]:
    """Dotted (key, value) pairs of a config value; a group choice (`model=tiny`) becomes its leaves."""
    if isinstance(value, DictConfig):
        value = OmegaConf.to_container(value, resolve=True)
    if isinstance(value, Mapping):
        return [leaf for k, v in value.items() for leaf in _leaves(f"{key}.{k}", v)]
    return [(key, value)]


def _plain(value: Any) -> Any:
    return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value


def _show(value: Any) -> str:
    return json.dumps(_plain(value)).replace(" ", "") if isinstance(_plain(value), list) else str(_plain(value))


def _is_free(key: str) -> bool:
    if key.startswith("modality.adapter."):
        return key.removeprefix("modality.adapter.") in FREE_ADAPTER_KEYS
    if key.startswith("loss.head."):
        return key.removeprefix("loss.head.") in FREE_HEAD_KEYS
    return False


def apply_overrides(config: DictConfig, overrides: Mapping[str, Any], source: Path) -> DictConfig:
    """The run's config with the allowed overrides applied; one that contradicts training is a UsageError."""
    config = config.copy()
    leaves = []
    for key, value in overrides.items():
        # A group choice names a preset, not its values: `modality=video` on a video run trained with another
        # patch size is no contradiction, so only its identity is compared (`loss=flow`: the head class).
        identity = GROUP_IDENTITY.get(key)
        if identity is not None:
            value = OmegaConf.select(value, identity.split(".", 1)[1]) if OmegaConf.is_config(value) else value
            leaves.append((identity, value))
        else:
            leaves += _leaves(key, value)
    for key, value in leaves:
        if not key.startswith(("modality.", "model.", "loss.head.")):
            continue  # training-only keys (train.*, loss weights, tokenizer training) do not matter here
        trained = OmegaConf.select(config, key, default="<absent>")
        if _is_free(key):
            OmegaConf.update(config, key, value, force_add=True)
        elif _plain(trained) != _plain(value):
            raise UsageError(
                f"{key}={_show(value)} contradicts how the model was trained ({_show(trained)}, "
                f"{source / 'config.yaml'}); sampling always uses the run's own value: drop the override"
            )
    return config


def decode_on(adapter: Adapter, device: torch.device) -> None:
    """Move the adapter's tokenizer to `device`, so decoding runs where the model samples (a tokenizer without
    networks, or without `to`, stays where it is)."""
    move = getattr(adapter.tokenizer, "to", None)
    if callable(move):
        move(device)


def _to_uint8(x: torch.Tensor) -> np.ndarray:
    """[..., C, H, W] in [-1, 1] -> uint8 [..., H, W, C]."""
    return ((x.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).movedim(-3, -1).numpy()


@dataclass
class Generation:
    """What one pipeline call made: decoded media plus ready-to-use views (`images`, `videos`, `waveforms`)."""

    media: torch.Tensor  # decoded batch as the adapter returns it, values in [-1, 1]
    labels: list[int]
    class_names: list[str]
    rows: int  # rows of the preview grid: one per requested class (unconditional: about square)
    adapter: Adapter = field(repr=False)
    grid_path: Path | None = None  # set by save()
    tokens: torch.Tensor | None = field(default=None, repr=False)  # the sampled tokens [B, N, D]
    # Inpainting / outpainting: the prime with its known tokens (djepa.modalities.inpainting.ImagePrime).
    prime: Any = field(default=None, repr=False)
    strip_path: Path | None = None  # set by save() when there is a prime: prime | mask | results
    # What the call decided for the caller: a mask's rounding, a time range's rows, a long item's windows.
    notes: list[str] = field(default_factory=list)

    @property
    def modality(self) -> str:
        return self.adapter.name

    @property
    def names(self) -> list[str]:
        """Class name of each item (`unconditional` for an item sampled without a class, label -1)."""
        return [UNCONDITIONAL if y < 0 else self.class_names[y] for y in self.labels]

    def _expect(self, modality: str, view: str) -> None:
        if self.modality != modality:
            hint = {"image": "images", "video": "videos", "audio": "waveforms"}.get(self.modality, "media")
            raise AttributeError(f"{view} is for {modality} models; this one is {self.modality}: use .{hint}")

    @property
    def images(self) -> list[Any]:
        """PIL images (grayscale `L` or `RGB`)."""
        from PIL import Image

        self._expect("image", "images")
        arrays = _to_uint8(self.media)
        return [Image.fromarray(a[..., 0] if a.shape[-1] == 1 else a) for a in arrays]

    @property
    def videos(self) -> list[np.ndarray]:
        """uint8 arrays [T, H, W, C], C = 1 or 3; play them at `fps`."""
        self._expect("video", "videos")
        return list(_to_uint8(self.media))

    @property
    def fps(self) -> int:
        self._expect("video", "fps")
        return int(cast(HasFps, self.adapter).fps)

    @property
    def waveforms(self) -> list[np.ndarray]:
        """float32 arrays [channels, samples] in [-1, 1] at `sample_rate`."""
        self._expect("audio", "waveforms")
        return [w.reshape(-1, w.shape[-1]) for w in self.media.float().clamp(-1, 1).numpy()]

    @property
    def sample_rate(self) -> int:
        self._expect("audio", "sample_rate")
        return int(cast(HasSampleRate, self.adapter).sample_rate)

    def save(self, out: str | Path) -> list[Path]:
        """One file per item, `<class>_<index>.<png|mp4|wav>`, plus the adapter's `grid` preview (and with a prime,
        `inpainting.png`: prime, mask and results side by side): as `sample`."""
        out = Path(out)
        written = [
            self.adapter.save(m, out / f"{name}_{i:03d}") for i, (m, name) in enumerate(zip(self.media, self.names))
        ]
        self.grid_path = self.adapter.save_grid(self.media, self.rows, out / "grid")
        if self.prime is not None:
            self.strip_path = self.prime.save_strip(self.media, self.rows, out / "inpainting")
        return written


class Pipeline:
    """A D-JEPA model with its adapter (tokenizer included), class names and sampling defaults.

    A model trained on a folder without class subfolders has the one class `unconditional` (`unconditional`):
    it samples with guidance 1 (there is no other class to contrast) and takes no class; asking for another
    class or another guidance scale is a UsageError.
    """

    def __init__(
        self,
        model: DJEPA,
        adapter: Adapter,
        class_names: Sequence[str],
        defaults: SamplingSettings,
        config: DictConfig,
        source: Path,
        step: int | None = None,
    ):
        self.model = model.eval()
        self.adapter = adapter
        self.class_names = list(class_names)
        self.defaults = dataclasses.replace(defaults, guidance_scale=1.0) if self.unconditional else defaults
        self.config = config
        self.source = Path(source)
        self.step = step

    # ---------------------------------------------------------------- loading

    @classmethod
    def from_pretrained(
        cls,
        path: str | Path,
        device: str | torch.device = "auto",
        checkpoint: str | Path | None = None,
        overrides: Mapping[str, Any] | None = None,
        plugins: Sequence[str] | None = None,
    ) -> Pipeline:
        """Load a run directory (its newest valid checkpoint, or `checkpoint`) or an `export` folder.

        Args:
            path: a run directory written by `train`, or a folder written by `export` / `save_pretrained`.
            device: `auto` (CUDA where available, else CPU), `cpu`, `cuda` or `cuda:N`.
            checkpoint: a checkpoint folder (`RUN/checkpoints/step_NNNNNNN`) to load instead of the newest valid one.
            overrides: dotted config keys that may differ from training, e.g.
                `{"modality.adapter.tokenizer.path": ..., "loss.head.sampling_steps": 50}`; one that contradicts
                how the model was trained (grid, patch, channels, modality, model) raises UsageError naming the key.
            plugins: modules whose classes the folder's `_target_` entries may name besides djepa's own
                (djepa.builders): a folder someone sent cannot run code of its choosing.

        Returns:
            The pipeline, its model in eval mode on `device`.

        Examples:
            >>> from djepa import Pipeline
            >>> pipe = Pipeline.from_pretrained("runs/image", device="cpu")
            >>> pipe.modality, len(pipe.class_names)
            ('image', 10)
        """
        with builders.allowed_plugins(plugins):
            return cls._load(Path(path), device, checkpoint, overrides)

    @classmethod
    def _load(
        cls,
        path: Path,
        device: str | torch.device,
        checkpoint: str | Path | None,
        overrides: Mapping[str, Any] | None,
    ) -> Pipeline:
        device = resolve_device(str(device)) if not isinstance(device, torch.device) else device
        if (path / EXPORT_INDEX).is_file():
            config, state, weights, expected_hash = cls._read_export(path)
        else:
            directory, state = find_checkpoint(path, str(checkpoint) if checkpoint else None)
            config_path = (Path(checkpoint).parent.parent if checkpoint else path) / "config.yaml"
            if not config_path.is_file():
                raise UsageError(f"{config_path} is missing: the run's config says how to decode its tokens")
            config = cast(DictConfig, OmegaConf.load(config_path))  # a run's config is a mapping
            weights = CheckpointManager.load_tensors(directory, "ema")
            # Checked when training recorded it (extra_state "tokenizer_sha256"); exports always record it.
            expected_hash = state.get("tokenizer_sha256")
        config = apply_overrides(config, overrides or {}, path)
        if state.get("modality") and state["modality"] != config.modality.name:
            raise UsageError(f"{path} holds a {state['modality']} model but its config says {config.modality.name}")
        model_config = dict(state["model_config"])
        # Sampling-only head settings may change; the denoiser's weights are the same.
        head = config.loss.head if "loss" in config else None
        model_config["head_config"] = sampling_head_config(model_config["head_config"], head)
        try:
            model = DJEPA(**model_config)
            model.load_state_dict(weights)
        except UsageError:
            raise
        except (TypeError, ValueError, RuntimeError, KeyError) as err:  # a hand-edited or damaged model config
            first_line = (str(err).strip().splitlines() or [type(err).__name__])[0]
            raise UsageError(f"{path}: the saved model config and weights do not make a model ({first_line})") from err
        adapter = build_adapter(config)
        if expected_hash is not None:
            found = tokenizer_hash(config.modality.adapter.tokenizer.path)
            if found != expected_hash:
                raise UsageError(
                    f"tokenizer {config.modality.adapter.tokenizer.path} is not the one this model was exported "
                    f"with (sha256 {found[:12]}… != {expected_hash[:12]}…)"
                )
        try:
            _ = adapter.tokenizer  # load it now, before any sampling work, so a bad file fails first
        except (OSError, ValueError, RuntimeError) as err:
            first_line = (str(err).strip().splitlines() or [type(err).__name__])[0]
            raise UsageError(
                f"tokenizer {config.modality.adapter.tokenizer.path} cannot be loaded: {first_line}"
            ) from err
        if tuple(adapter.token_grid) != tuple(model.grid) or adapter.token_dim != model.token_dim:
            raise UsageError(
                f"the tokenizer at {config.modality.adapter.tokenizer.path} gives tokens {adapter.token_grid} x "
                f"{adapter.token_dim}, the model was trained on {tuple(model.grid)} x {model.token_dim}"
            )
        class_names = state.get("class_names") or [str(i) for i in range(model_config["num_classes"])]
        defaults = SamplingSettings.from_config(config)
        decode_on(adapter, device)
        return cls(model.to(device), adapter, class_names, defaults, config, path, state.get("step"))

    def save_pretrained(self, out: str | Path, copy_tokenizer: bool = True) -> Path:
        """Write a self-describing folder that `from_pretrained` and `sample run_dir=OUT` read (see djepa.export)."""
        return export_pipeline(self, Path(out), copy_tokenizer=copy_tokenizer)

    @staticmethod
    def _read_export(path: Path) -> tuple[DictConfig, dict[str, Any], dict[str, torch.Tensor], str | None]:
        """An export folder's config, state, weights and tokenizer hash; a damaged file is a one-line
        UsageError naming it (weights are read as safetensors only, never unpickled)."""
        from safetensors.torch import load_file

        def damaged(name: str, err: BaseException) -> UsageError:
            first_line = (str(err).strip().splitlines() or [type(err).__name__])[0]
            return UsageError(f"{path / name} is damaged or not what `export` writes: {first_line}")

        try:
            index = json.loads((path / EXPORT_INDEX).read_text())
            tokenizer = index["tokenizer"]
            tok_path = Path(tokenizer["path"])
            class_names, modality = list(index["class_names"]), str(index["modality"])
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise damaged(EXPORT_INDEX, err) from err
        try:
            config = OmegaConf.load(path / "config.yaml")
        except Exception as err:  # OSError, YAML and OmegaConf errors
            raise damaged("config.yaml", err) from err
        if not isinstance(config, DictConfig) or "modality" not in config:
            raise damaged("config.yaml", ValueError("no modality section"))
        OmegaConf.update(
            config, "modality.adapter.tokenizer.path", str(tok_path if tok_path.is_absolute() else path / tok_path)
        )
        try:
            model_config = json.loads((path / "model" / "config.json").read_text())
            if not isinstance(model_config, dict):
                raise ValueError("not a JSON object")
        except (OSError, ValueError) as err:
            raise damaged("model/config.json", err) from err
        try:
            weights = load_file(str(path / "model" / "model.safetensors"))
        except Exception as err:  # safetensors raises its own SafetensorError for a pickle or a torn file
            raise damaged("model/model.safetensors", err) from err
        state = {
            "model_config": model_config,
            "class_names": class_names,
            "modality": modality,
            "step": index.get("step"),
        }
        return config, state, weights, tokenizer.get("sha256")

    # ---------------------------------------------------------------- generating

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def modality(self) -> str:
        return str(self.config.modality.name)

    @property
    def unconditional(self) -> bool:
        """Trained on a folder without class subfolders: no class to choose, no guidance."""
        return is_unconditional(self.class_names)

    def class_index(self, label: int | str, key: str = "class_labels") -> int:
        """A class id from an id or a class name; `key` names the argument in the error."""
        if self.unconditional and label not in (0, "0", UNCONDITIONAL):
            raise UsageError(
                f"{key}={label!r}: this model is unconditional (trained on a folder without class subfolders): "
                f"leave {key} out"
            )
        if isinstance(label, str) and label in self.class_names:
            return self.class_names.index(label)
        if isinstance(label, str) and label.lstrip("-").isdigit():
            label = int(label)
        if isinstance(label, bool) or not isinstance(label, (int, np.integer)):
            raise UsageError(f"{key}={label!r} is not a class: choose an id or one of {', '.join(self.class_names)}")
        if not 0 <= int(label) < len(self.class_names):
            raise UsageError(
                f"{key}={label} is out of range: this model has {len(self.class_names)} classes "
                f"(0..{len(self.class_names) - 1})"
            )
        return int(label)

    def settings(
        self,
        guidance_scale: float | None = None,
        temperature: float | None = None,
        num_steps: int | None = None,
        guidance_schedule: str | None = None,
        precision: str | None = None,
    ) -> SamplingSettings:
        """The run's sampling defaults with the given values replacing them."""
        d = self.defaults
        if self.unconditional and guidance_scale is not None and float(guidance_scale) != 1.0:
            raise UsageError(
                f"guidance_scale={guidance_scale}: this model is unconditional, guidance has no class to contrast: "
                "leave it out (1)"
            )
        return SamplingSettings(  # validated on construction
            float(d.guidance_scale if guidance_scale is None else guidance_scale),
            float(d.temperature if temperature is None else temperature),
            int(d.num_steps if num_steps is None else num_steps),
            str(d.guidance_schedule if guidance_schedule is None else guidance_schedule),
            str(d.precision if precision is None else precision),
        )

    @torch.no_grad()
    def __call__(
        self,
        class_labels: int | str | Sequence[int | str] | None = None,
        num_samples: int = 1,
        *,
        guidance_scale: float | None = None,
        temperature: float | None = None,
        num_steps: int | None = None,
        guidance_schedule: str | None = None,
        precision: str | None = None,
        seed: int | None = None,
        prime: str | Path | None = None,
        prime_frames: int | None = None,
        prime_seconds: float | None = None,
        mask_frames: str | tuple[int, int] | None = None,
        mask_seconds: str | tuple[float, float] | None = None,
        frames: int | None = None,
        seconds: float | None = None,
        image: Any = None,
        mask: Any = None,
        outpaint: str | None = None,
        batch_size: int = 50,
        progress: bool = False,
    ) -> Generation:
        """Generate `num_samples` items for each of `class_labels`, decoded to media.

        Args:
            class_labels: class ids or names (`pipe.class_names`), one or a list; None: every class (an
                unconditional model: leave it out; inpainting and outpainting: no class, the known part decides).
            num_samples: items per class.
            guidance_scale: classifier-free guidance scale (1: none); None: the run's `sample.guidance_scale` (an
                unconditional model: 1, the only value it takes).
            temperature: scales the denoiser's sampling noise (below 1: sharper, less varied); None: the run's.
            num_steps: reveal steps of the masked autoregressive sampler; None: the run's.
            guidance_schedule: `linear` (guidance ramps up as tokens are revealed, MAR's) or `constant`; None: the
                run's.
            precision: `auto` (bf16 autocast where bf16 is fast), `bf16` or `fp32`; None: the run's.
            seed: makes the call repeatable: the same seed gives the same media, bit for bit, on the same machine
                (the global torch RNG is left as it was). None: draws from the global RNG.
            prime: video / audio: a real file whose start stays fixed while the rest is generated (continuation);
                image: the image to inpaint or outpaint, as `image`.
            prime_frames: video: frames of `prime` kept (None: 4); with `frames`, also the overlap of its windows.
            prime_seconds: audio: seconds of `prime` kept (None: 0.25); with `seconds`, also the overlap of its
                windows.
            mask_frames: video: `start:end` (or a pair), the frames of `prime` regenerated (4:8: frames 4..7) while
                the others stay; rounded to whole token rows (said in one line). Not with `prime_frames`.
            mask_seconds: audio: `start:end` in seconds (0.3:0.6), as `mask_frames`. Not with `prime_seconds`.
            frames: video: frames to make; beyond the model's window, window by window, each window primed with
                the last `prime_frames` frames of the one before (djepa.engine.long_generation). None: one window.
            seconds: audio: seconds to make, as `frames` (the overlap: `prime_seconds`).
            image: image models: the image to inpaint or outpaint (a path or a PIL image), fitted to the model's
                size as the training images were (short side resized, centre-cropped); needs `mask` or `outpaint`.
            mask: what of `image` to regenerate (white = regenerate), the rest stays: `left`, `right`, `top`,
                `bottom` or `center`, optionally with the fraction of the image (`right:0.3`, default 0.5); a box
                `x0,y0,x1,y1` (or a 4-tuple) in the image's pixels; a mask PNG or PIL image of the image's size.
                Rounded to whole tokens (a token is regenerated when half its pixels are; `notes` says how).
            outpaint: extend `image` beyond an edge at the model's fixed size: `left`, `right`, `top` or `bottom`
                (the image moves away from that side by the fraction, default 0.25, and the strip beyond its edge
                is generated; its far edge leaves the frame) or `all` (the image shrinks to the centre, the border
                is generated), as whole tokens.
            batch_size: items drawn per model call.
            progress: show a progress bar.

        Returns:
            A `Generation`: `.images` (PIL), `.videos` or `.waveforms` by modality, `.labels`, `.tokens`, `.notes`,
            and `.save(folder)`, which writes what the `sample` command writes.

        Examples:
            >>> out = pipe(class_labels=[3, 7], num_samples=2, seed=0, num_steps=4)
            >>> len(out.images), out.labels
            (4, [3, 3, 7, 7])
            >>> again = pipe(class_labels=[3, 7], num_samples=2, seed=0, num_steps=4)
            >>> again.images[0].tobytes() == out.images[0].tobytes()
            True

            Inpainting: the left half of a digit stays, the right half is drawn again (no class: the left half
            decides; `class_labels` guides it towards a class).

            >>> filled = pipe(image=out.images[0], mask="right", num_samples=3, seed=0, num_steps=4)
            >>> len(filled.images), filled.names[0]
            (3, 'unconditional')
            >>> filled.notes[0]
            'mask=right: regenerating 8 of 16 tokens (4x4 grid, 8x8 px each); the mask fits the token grid as given'
            >>> wider = pipe(class_labels=7, image=out.images[0], outpaint="right:0.25", seed=0, num_steps=4)
            >>> wider.notes[0]
            'outpaint=right:0.25: regenerating 4 of 16 tokens (4x4 grid, 8x8 px each)'
        """
        if num_samples < 1:
            raise UsageError(f"num_samples must be positive, got {num_samples}")
        if class_labels is None:
            ids = list(range(len(self.class_names)))
        elif isinstance(class_labels, (int, str, np.integer)):
            ids = [self.class_index(class_labels)]
        else:
            ids = [self.class_index(c) for c in class_labels]
        edit = image is not None or mask is not None or outpaint is not None or bool(prime) and self.modality == "image"
        # Inpainting without a class: the known part decides (the model's class-free embedding).
        conditional = not (edit and class_labels is None and not self.unconditional)
        labels = torch.tensor(ids if conditional else [0], dtype=torch.long).repeat_interleave(num_samples)
        settings = self.settings(guidance_scale, temperature, num_steps, guidance_schedule, precision)
        time_range = check_time_keys(self.adapter, prime, mask_frames, mask_seconds, prime_frames, prime_seconds)
        range_mask, range_note = time_range if time_range is not None else (None, None)
        long = plan_length(self.adapter, frames, seconds, prime_frames, prime_seconds, range_mask is not None)
        devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices, enabled=seed is not None):
            if seed is not None:
                torch.manual_seed(int(seed))
            known_tokens = known_mask = image_prime = None
            if edit:
                image_prime = self._image_prime(prime, image, mask, outpaint)
                known_tokens = image_prime.tokens.expand(len(labels), -1, -1)
                known_mask = image_prime.known.expand(len(labels), -1)
            elif prime:
                if not Path(prime).is_file():
                    raise UsageError(f"prime={prime} does not exist")
                options = {
                    "prime_frames": int(4 if prime_frames is None else prime_frames),
                    "prime_seconds": float(0.25 if prime_seconds is None else prime_seconds),
                }
                known_tokens, known_mask = self.adapter.prime_tokens(str(prime), options, len(labels))
                if range_mask is not None:  # the whole prime's tokens, kept outside the range
                    known_mask = range_mask.expand(len(labels), -1).clone()
            tokens: torch.Tensor | None = None
            if long is not None:
                windows = generate_windows(
                    self.model, labels, settings, long, batch_size, known_tokens, known_mask, progress=progress
                )
                media = decode_long(self.adapter, windows, long)
            else:
                tokens = generate(
                    self.model,
                    labels,
                    settings,
                    batch_size,
                    known_tokens,
                    known_mask,
                    progress=progress,
                    conditional=conditional,
                )
                # Decoding can draw random numbers too (Griffin-Lim's initial phase), so it stays inside the seed.
                media = self.adapter.decode_tokens(tokens)
        # An unconditional batch has one class: its preview is laid out about square rather than in one row.
        rows = max(1, math.isqrt(len(labels))) if self.unconditional or not conditional else len(ids)
        return Generation(
            media,
            labels.tolist() if conditional else [-1] * len(labels),
            self.class_names,
            rows,
            self.adapter,
            tokens=tokens,
            prime=image_prime,
            notes=[n for n in (image_prime and image_prime.note, range_note, long.note if long else None) if n],
        )

    def _image_prime(self, prime: str | Path | None, image: Any, mask: Any, outpaint: str | None) -> Any:
        """The image to inpaint or outpaint with its known tokens (djepa.modalities.inpainting.ImagePrime)."""
        make = getattr(self.adapter, "prime_image", None)
        if make is None or self.modality != "image":
            if mask is not None or outpaint is not None:
                key = "mask" if mask is not None else "outpaint"
                hint = TIME_MASKS.get(self.modality)
                use = f"use {hint}" if hint else "only image models take one"
                raise UsageError(f"{key}: {self.modality} models are masked in time, not with an image mask: {use}")
            raise UsageError(f"image: {self.modality} models take no image; continuation takes prime=FILE")
        if image is not None and prime:
            raise UsageError("prime and image both given: they name the same image, give one")
        if image is None and not prime:
            key, value = ("mask", mask) if mask is not None else ("outpaint", outpaint)
            raise UsageError(f"{key}={value} needs the image to change: prime=IMAGE (Pipeline: image=...)")
        return make(image if image is not None else prime, mask, outpaint, "image" if image is not None else "prime")
