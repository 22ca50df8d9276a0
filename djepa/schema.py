"""The one source of every config key: its type, default, allowed values and a one-line meaning.

The dataclasses here are registered in Hydra's ConfigStore as the schema the YAML groups under `configs/`
extend, so a YAML file holds only what differs per modality or size. The checks of `djepa.cli.checks`, the
trainer's own settings check, the commands' `--help` and the docs' table of keys are all derived from them.

A field is declared with `setting(default, "meaning", choices=..., low=..., high=...)`; a float is always
required to be finite. `modality.adapter` and `loss.head` are plug-ins (any class named by `_target_`), so their
sections stay open mappings; the keys of the built-in adapters and heads are described by the `*Settings`
classes below and checked when the built-in class is the one named.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import types
import typing
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from omegaconf import II, MISSING

PRECISIONS = ("auto", "bf16", "fp32")
ATTENTION_BACKENDS = ("auto", "xformers", "sdpa", "math")
GUIDANCE_SCHEDULES = ("linear", "constant")
MAX_SAMPLES = 100_000  # one call writes one file per sample; more is a typo, not a plan
MAX_SEED = 2**63 - 1  # torch.manual_seed takes a signed 64-bit seed


def setting(
    default: Any,
    help: str,
    *,
    choices: tuple[str, ...] | None = None,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
    hints: Mapping[str, str] | None = None,
) -> Any:
    """A dataclass field carrying its meaning and allowed values (read by `problem`, `--help` and the docs)."""
    meta: dict[str, Any] = {
        "help": help,
        "choices": choices,
        "low": low,
        "high": high,
        "low_open": low_open,
        "high_open": high_open,
    }
    meta["hints"] = dict(hints or {})
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


# ------------------------------------------------------------------------------------------------ sections


@dataclass
class ModelSettings:
    encoder_depth: int = setting(4, "context encoder blocks", low=1)
    encoder_width: int = setting(192, "context encoder width (divisible by num_heads)", low=1)
    predictor_depth: int = setting(4, "feature predictor blocks", low=1)
    predictor_width: int = setting(192, "feature predictor width (divisible by num_heads)", low=1)
    num_heads: int = setting(4, "attention heads per transformer block", low=1)
    mlp_ratio: float = setting(4.0, "transformer MLP width as a multiple of the block width", low=0.0, low_open=True)
    buffer_size: int = setting(8, "buffer tokens in front of the sequence, carrying the class (64 in the paper)", low=0)
    label_drop: float = setting(
        0.1, "share of labels replaced by the fake class in training (for guidance)", low=0, high=1
    )
    attn_drop: float = setting(0.0, "attention dropout", low=0.0, high=1.0, high_open=True)
    proj_drop: float = setting(0.0, "projection dropout", low=0.0, high=1.0, high_open=True)
    denoiser_depth: int = setting(3, "residual blocks of the per-token denoising MLP", low=1)
    denoiser_width: int = setting(192, "width of the denoising MLP", low=1)
    diffusion_batch_mul: int = setting(2, "times each token is repeated per step in the denoising loss", low=1)
    grad_checkpointing: bool = setting(False, "recompute block activations in the backward pass to save memory")
    jepa_projector_norm: bool = setting(True, "LayerNorm on the JEPA projector's hidden layer (the reference's)")
    jepa_target_norm: bool = setting(False, "a second layer norm over the JEPA targets (ablation)")
    jepa_without_context: bool = setting(False, "apply the JEPA term on batches with no visible token (ablation)")
    qk_norm: bool = setting(False, "RMS-normalise each head's queries and keys (the reference's --qk_norm)")
    jepa_projector: str = setting(
        "djepa",
        "JEPA projector: djepa (Linear, LayerNorm, GELU, Linear; xavier) or reference (Linear, GELU, LayerNorm, "
        "Linear; hidden 4x predictor width; PyTorch's default init)",
        choices=("djepa", "reference"),
    )
    pos_embed: str = setting(
        "factorised",
        "token positions: factorised (sin-cos plus learned per-axis tables) or learned (one table per sequence, MAR's)",
        choices=("factorised", "learned"),
    )
    diffusion_pos_embed: bool = setting(False, "a learned table added to the predictor's output per token (MAR's)")
    buffer_pos_embed: bool = setting(
        True, "with pos_embed=learned, a learned table over the predictor's buffer rows too (MAR's; D-JEPA's has none)"
    )


@dataclass
class LossSettings:
    denoise_weight: float = setting(1.0, "weight of the denoising loss", low=0.0)
    jepa_weight: float = setting(1.0, "weight of the JEPA loss; 0 is MAR mode (no projector, no teacher)", low=0.0)
    jepa_rows: float = setting(
        1.0,
        "share of each batch's rows the JEPA term uses (the teacher pass and projector run on the first ones); 1: all",
        low=0.0,
        low_open=True,
        high=1.0,
    )
    jepa_every: int = setting(
        1,
        "the JEPA term (teacher pass and projector) on every k-th step only, the others as MAR mode; 1: every step",
        low=1,
    )
    head: dict[str, Any] = setting({}, "the denoising head: `_target_` names a TokenHead, other keys its arguments")


@dataclass
class TrainSettings:
    steps: int = setting(1200, "optimizer steps", low=1)
    batch_size: int = setting(64, "items per forward/backward pass (over all ranks)", low=1)
    grad_accum_steps: int = setting(
        1, "K: each optimizer step sums K passes' gradients (a batch of batch_size x K)", low=1
    )
    blr: float = setting(
        1e-4, "base lr, read only when lr is null: lr = blr x batch_size x grad_accum_steps / 256", low=0, low_open=True
    )
    lr: float | None = setting(1e-3, "peak learning rate; null: derived from blr", low=0.0, low_open=True)
    warmup_steps: int = setting(100, "linear warm-up steps", low=0)
    lr_schedule: str = setting(
        "cosine", "after warm-up: cosine decay to min_lr, or constant", choices=("cosine", "constant")
    )
    min_lr: float = setting(1e-4, "the cosine schedule's final lr", low=0.0)
    weight_decay: float = setting(0.02, "AdamW weight decay (not on the no-decay set)", low=0.0)
    no_decay: str = setting(
        "reference",
        "parameters without decay: the reference's set, embeddings only, or MAR's (1-D tensors and the head)",
        choices=("reference", "embeddings", "mar"),
    )
    grad_clip: float = setting(3.0, "gradient norm clip", low=0.0, low_open=True)
    adam_eps: float = setting(1e-8, "AdamW epsilon (the reference script's --adamw_eps: 1e-6)", low=0.0, low_open=True)
    ema_decay: float = setting(
        0.999, "the sampling EMA's rate (0.9999 in the paper)", low=0.0, high=1.0, high_open=True
    )
    ema_warmup: bool = setting(
        True, "warm the sampling EMA up as min(ema_decay, (1 + step) / (10 + step)); false: ema_decay from step 0"
    )
    teacher: str = setting(
        "separate", "JEPA teacher: its own slow EMA, or the sampling EMA", choices=("separate", "sampling_ema")
    )
    teacher_ema_start: float = setting(0.996, "the teacher's EMA rate at step 0, ramped linearly", low=0.0, high=1.0)
    teacher_ema_end: float = setting(1.0, "the teacher's EMA rate at the end of the ramp", low=0.0, high=1.0)
    teacher_ramp_steps: int = setting(0, "length of the teacher's ramp; 0: train.steps", low=0)
    grad_probe_every: int = setting(
        50, "log each loss's gradient norm on the shared trunk every N steps; 0: off", low=0
    )
    mask_ratio_min: float = setting(
        0.7, "lower bound of the masking ratio's truncated normal", low=0, high=1, low_open=True
    )
    prefix_mask_prob: float = setting(
        0.0, "video and audio: share of batches that keep the start of the time axis visible", low=0.0, high=1.0
    )
    precision: str = setting(
        "auto",
        "number format; auto: bf16 on CUDA and on CPUs with fast bf16, else fp32",
        choices=PRECISIONS,
        hints={"fp16": "fp16 overflows to NaN in this model; bf16 has fp32's range"},
    )
    seed: int = setting(II("seed"), "the run's seed (the top-level seed)", low=0, high=MAX_SEED)
    log_every: int = setting(10, "steps between metrics.jsonl records", low=1)
    checkpoint_every: int = setting(200, "steps between checkpoints", low=1)
    keep_checkpoints: int = setting(3, "valid checkpoints kept on disk", low=1)
    preview_every: int = setting(400, "steps between preview grids; 0: none", low=0)
    eval_every: int = setting(
        0,
        "steps between small evaluations in metrics.jsonl (eval_*: the benchmark classifier's FD, or the standard FID "
        "with standard_weights); 0: none",
        low=0,
    )
    eval_samples: int = setting(100, "items each train.eval_every evaluation draws (classes i % num_classes)", low=4)
    tensorboard: bool = setting(False, "also log to RUN/tensorboard (pip install 'djepa[tensorboard]')")
    max_bad_steps: int = setting(5, "consecutive non-finite steps before training stops", low=1)
    parallel: str = setting("ddp", "under torchrun: ddp replicas or fsdp shards", choices=("ddp", "fsdp", "none"))
    checkpoint_format: str = setting(
        "auto", "auto: sharded under FSDP on several ranks, else full", choices=("auto", "full", "sharded")
    )
    distributed_timeout_minutes: float = setting(
        60.0,
        "under torchrun: minutes a rank waits in a collective (while rank 0 alone trains a tokenizer, "
        "checks a resume or draws previews) before the run fails",
        low=0.0,
        low_open=True,
    )
    compile: bool = setting(False, "torch.compile each transformer and denoiser block")
    compile_backend: str = setting("inductor", "torch.compile backend")


@dataclass
class SampleSettings:
    guidance_scale: float = setting(4.0, "classifier-free guidance scale; 1: no guidance", low=1.0)
    guidance_schedule: str = setting(
        "linear",
        "linear: guidance ramps from 1 as tokens are revealed (MAR); constant: full from the start",
        choices=GUIDANCE_SCHEDULES,
    )
    temperature: float = setting(
        0.85, "scales the head's sampling noise; below 1: sharper, less varied", low=0.0, low_open=True
    )
    num_steps: int = setting(16, "reveal steps of the masked autoregressive sampler", low=1)
    preview_per_class: int = setting(4, "samples per class in training previews and the final grid", low=0)
    preview_classes: int = setting(
        10, "classes in training previews and the final grid (evenly spaced ids; every class when fewer)", low=1
    )
    precision: str = setting(
        "auto",
        "auto: bf16 autocast where bf16 is fast (the diffusion arithmetic stays fp32)",
        choices=PRECISIONS,
        hints={"fp16": "fp16 overflows to NaN in this model; bf16 has fp32's range"},
    )


@dataclass
class TokenizerSettings:
    block_out_channels: list[int] = setting([16, 32, 32], "train_tokenizer: AutoencoderKL channels per resolution")
    layers_per_block: int = setting(1, "train_tokenizer: resnet layers per resolution", low=1)
    latent_channels: int = setting(4, "train_tokenizer: latent channels", low=1)
    norm_num_groups: int = setting(8, "train_tokenizer: group-norm groups", low=1)
    mid_block_add_attention: bool = setting(False, "train_tokenizer: attention in the middle block")
    steps: int = setting(500, "train_tokenizer: optimizer steps", low=1)
    batch_size: int = setting(64, "train_tokenizer: items per step", low=1)
    lr: float = setting(0.002, "train_tokenizer: learning rate", low=0.0, low_open=True)
    kl_weight: float = setting(0.001, "train_tokenizer: weight of the KL term", low=0.0)
    holdout: float = setting(
        0.05, "train_tokenizer: share of items held out for the PSNR check", low=0.0, high=1.0, high_open=True
    )
    seed: int = setting(II("seed"), "train_tokenizer: seed (the top-level seed)", low=0, high=MAX_SEED)


@dataclass
class BenchmarkSettings:
    steps: int = setting(1200, "training steps per variant", low=1)
    eval_every: int = setting(300, "steps between quality-curve points", low=1)
    eval_per_class: int = setting(20, "samples per class at each point", low=1)
    seeds: int = setting(1, "runs per variant (seed, seed+1, ...): mean and standard error", low=1)
    quick: bool = setting(False, "a smoke run of a few steps on the tiny model")
    quick_steps: int = setting(10, "steps of a quick run", low=1)
    classifier: str = setting(
        "auto",
        "images: what the benchmark classifier trains on (digits, the folder's data, or auto: per folder)",
        choices=("auto", "digits", "data"),
    )
    variants: dict[str, Any] = setting(
        {"djepa": [], "mar": ["loss.jepa_weight=0"], "flow": ["loss=flow"]},
        "variant name: Hydra overrides on top of the command line",
    )


@dataclass
class ModalitySettings:
    name: str = setting(MISSING, "the modality", choices=("image", "video", "audio"))
    adapter: dict[str, Any] = setting({}, "the adapter: `_target_` names it, other keys its arguments")


@dataclass
class Config:
    """The whole composed config of train, sample, train_tokenizer and benchmark."""

    modality: ModalitySettings = field(default_factory=ModalitySettings)
    model: ModelSettings = field(default_factory=ModelSettings)
    loss: LossSettings = field(default_factory=LossSettings)
    train: TrainSettings = field(default_factory=TrainSettings)
    tokenizer: TokenizerSettings = field(default_factory=TokenizerSettings)
    sample: SampleSettings = field(default_factory=SampleSettings)
    benchmark: BenchmarkSettings = field(default_factory=BenchmarkSettings)
    run_dir: str = setting("runs/${modality.name}", "the run directory (config, checkpoints, metrics, samples)")
    home: str = setting("${oc.env:DJEPA_HOME,.djepa}", "where tokenizers, latent caches and classifiers live")
    device: str = setting("auto", "auto | cpu | cuda | cuda:N")
    attention_backend: str = setting(
        "auto", "attention kernel; auto: xformers on CUDA where installed, else SDPA", choices=ATTENTION_BACKENDS
    )
    seed: int = setting(0, "seed of data order, masks, noise and sampling", low=0, high=MAX_SEED)
    prompt_class: Any = setting(None, "sample: a class index or name; null: every class")
    num_samples: int = setting(
        8, "sample: items per class (or in all, with prompt_class or format=npz)", low=1, high=MAX_SAMPLES
    )
    format: str = setting(
        "files",
        "sample: files (one per item, and a grid) or npz (num_samples in all as one uint8 arr_0 [N, H, W, 3], "
        "as ADM/MAR's evaluation suites read; shared over torchrun ranks, resumed after a kill)",
        choices=("files", "npz"),
    )
    shard_size: int = setting(
        250,
        "sample format=npz: items per shard, drawn with one seed (equal values: equal files on any rank count)",
        low=1,
        high=MAX_SAMPLES,
    )
    out: str = setting("${run_dir}/samples", "sample: the output folder")
    checkpoint: str | None = setting(None, "sample: a checkpoint folder instead of the run's newest")
    prime: str | None = setting(None, "sample: a real clip whose start stays as given (continuation)")
    prime_frames: int = setting(4, "sample, video: frames of the prime kept", low=1)
    prime_seconds: float = setting(0.25, "sample, audio: seconds of the prime kept", low=0.0, low_open=True)
    mask_frames: str | None = setting(None, "sample, video: start:end, the frames of the prime regenerated (4:8)")
    mask_seconds: str | None = setting(None, "sample, audio: start:end, the seconds of the prime regenerated (0.3:0.6)")
    frames: int | None = setting(
        None, "sample, video: frames to make; beyond the model's window, window by window", low=1, high=MAX_SAMPLES
    )
    seconds: float | None = setting(
        None, "sample, audio: seconds to make; beyond the model's window, window by window", low=0.0, low_open=True,
        high=3600.0,
    )  # fmt: skip
    mask: Any = setting(
        None,
        "sample, image: what of prime to regenerate: left|right|top|bottom|center[:fraction], a box x0,y0,x1,y1 "
        "in pixels, or a mask PNG (white = regenerate); rounded to whole tokens",
    )
    outpaint: str | None = setting(
        None, "sample, image: extend prime past an edge: left|right|top|bottom|all[:fraction] (default 0.25)"
    )
    standard_weights: str | None = setting(None, "local weights for the standard FID/FVD/FAD; null: skipped")
    roundtrip: bool = setting(False, "evaluate: also score the tokenizer's round trips of real items")
    roundtrip_data: str | None = setting(None, "evaluate: held-out folder for the round trip; null: the training data")
    roundtrip_count: int = setting(200, "evaluate: items in the round trip", low=1)
    plugins: list[str] = setting([], "modules whose classes a config's `_target_` may name besides djepa's")
    init_from: str | None = setting(
        None,
        "train: a new run starts from these weights (a run_dir, an export folder, a checkpoint folder or file); "
        "a run_dir that holds checkpoints resumes instead",
    )
    init_from_weights: str = setting(
        "ema", "train, init_from a run or checkpoint folder: its EMA or its online weights", choices=("ema", "online")
    )


@dataclass
class ExportConfig:
    """`export`: a run as a self-describing folder."""

    run_dir: str = setting(MISSING, "the run directory to export (its newest valid checkpoint)")
    out: str = setting(MISSING, "the folder to write (created; must be empty or absent)")
    checkpoint: str | None = setting(None, "a checkpoint directory to export instead of the newest")
    copy_tokenizer: bool = setting(True, "true: copy the tokenizer into OUT/tokenizer; false: reference its path")
    scores: str | None = setting(None, "a JSON file of measured scores (e.g. what evaluate prints) for the card")
    device: str = setting("cpu", "where to load the model while exporting")
    plugins: list[str] = setting([], "modules whose classes a config's `_target_` may name besides djepa's")


@dataclass
class ServeConfig:
    """`serve`: the web demo."""

    run_dir: str = setting(MISSING, "a run directory or an `export` folder")
    port: int = setting(7860, "port to listen on", low=1, high=65535)
    host: str = setting("127.0.0.1", "address to listen on (127.0.0.1: this machine only)")
    device: str = setting("auto", "auto | cpu | cuda | cuda:N")
    checkpoint: str | None = setting(None, "a checkpoint directory instead of the newest")
    plugins: list[str] = setting([], "modules whose classes a config's `_target_` may name besides djepa's")


@dataclass
class ConvertTokenizerConfig:
    """`convert_tokenizer`: MAR's KL-16 VAE checkpoint as a diffusers AutoencoderKL folder."""

    checkpoint: str = setting(MISSING, "MAR's VAE checkpoint: kl16.ckpt ({'model': state_dict}) or a .safetensors file")
    out: str = setting(MISSING, "the AutoencoderKL folder to write (created; must be empty or absent)")
    source: str = setting("mar_kl16", "what the checkpoint is", choices=("mar_kl16",))
    scale: float = setting(0.2325, "the folder's scaling_factor (MAR's: 0.2325)", low=0.0, low_open=True)


@dataclass
class ConvertCheckpointConfig:
    """`convert_checkpoint`: an LTH14/mar or D-JEPA/djepa-imagenet checkpoint as an export folder."""

    checkpoint: str = setting(MISSING, "MAR's or D-JEPA's training checkpoint ({'model', 'model_ema', 'args', ...})")
    tokenizer_path: str = setting(MISSING, "its VAE as an AutoencoderKL folder (`convert_tokenizer` of kl16.ckpt)")
    out: str = setting(MISSING, "the export folder to write (created; must be empty or absent)")
    source: str = setting(
        "auto", "what the checkpoint is: auto (from its keys), mar or djepa", choices=("auto", "mar", "djepa")
    )
    weights: str = setting("ema", "model_ema (what MAR and D-JEPA evaluate) or the raw model", choices=("ema", "model"))
    num_heads: int | None = setting(
        None, "attention heads; null: from the qk-norm weights, the checkpoint's args.model or the width", low=1
    )
    guidance_scale: float | None = setting(
        None,
        "the export's guidance scale; null: MAR's README value (B 2.9, L 3.0, H 3.2; else 3.0), "
        "D-JEPA's args.cfg_scale (else 1.0)",
        low=1.0,
    )
    temperature: float | None = setting(
        None,
        "the export's sampling temperature; null: MAR's 1.0, D-JEPA's args.temperature (else 0.94)",
        low=0.0,
        low_open=True,
    )
    num_steps: int = setting(64, "the export's reveal steps (MAR's default; its FID runs use 256)", low=1)
    copy_tokenizer: bool = setting(True, "true: copy the tokenizer into OUT/tokenizer; false: reference its path")


@dataclass
class FidStatsConfig:
    """`python -m djepa.benchmarks.fid_stats`: a folder's reference statistics for the standard FID, cached."""

    data_dir: str = setting(
        MISSING, "an image folder (root/<class>/<files> or loose files) or an .npz of uint8 images arr_0 [N, H, W, 3]"
    )
    standard_weights: str = setting(MISSING, "Inception-v3 weights in torch-fidelity's format (a local file)")
    reference: str | None = setting(
        None, "a second folder or .npz: also the FID, precision and recall of data_dir against it"
    )
    image_size: int = setting(256, "folders: short side resized to this, centre-cropped (an .npz is read as is)", low=1)
    pr_items: int = setting(10000, "features kept per set for precision/recall (k = 3 neighbours)", low=4)
    batch_size: int = setting(64, "images per Inception batch", low=1)
    workers: int = setting(4, "processes reading a folder's files", low=0)
    seed: int = setting(0, "the order a folder is read in (its first pr_items features are kept)", low=0, high=MAX_SEED)
    home: str = setting("${oc.env:DJEPA_HOME,.djepa}", "where the statistics are cached (HOME/fid_stats)")
    device: str = setting("auto", "auto | cpu | cuda | cuda:N")


# Config name -> its root settings class: `config` for the Hydra commands, one each for the small commands.
ROOTS: dict[str, type] = {
    "config": Config,
    "export": ExportConfig,
    "serve": ServeConfig,
    "convert_tokenizer": ConvertTokenizerConfig,
    "convert_checkpoint": ConvertCheckpointConfig,
    "fid_stats": FidStatsConfig,
}

# Mappings read whole (a plug-in's constructor arguments, the benchmark's variants by name): keys may be added.
OPEN_SECTIONS = ("modality.adapter", "loss.head", "benchmark.variants")

SECTIONS: dict[str, type] = {
    "modality": ModalitySettings,
    "model": ModelSettings,
    "loss": LossSettings,
    "train": TrainSettings,
    "tokenizer": TokenizerSettings,
    "sample": SampleSettings,
    "benchmark": BenchmarkSettings,
}


# ---------------------------------------------------------------- plug-ins: the built-in adapters and heads


@dataclass
class TokenizerPluginSettings:
    path: str | None = setting(None, "a local save_pretrained directory or checkpoint file")
    shift: float | None = setting(None, "latent shift; null: the autoencoder config's shift_factor")
    scale: float | None = setting(None, "latent scale; null: its scaling_factor (MAR's KL-16: 0.2325)")


@dataclass
class AdapterSettings:
    tokenizer: dict[str, Any] = setting({}, "`_target_` names a LatentTokenizer, other keys its arguments")
    patch_size: list[int] = setting([2, 2], "latent cells per token, per axis")
    cache_dir: str = setting("${home}/cache", "where latent caches live")
    data_dir: str | None = setting(None, "null: the embedded data; else a folder (root/<class>/<files> or loose files)")
    seed: int = setting(II("seed"), "seed of the embedded data and subsets", low=0, high=MAX_SEED)
    memory_items: int = setting(10000, "user folders: at most this many items for tokenizer training", low=1)


@dataclass
class ImageAdapterSettings(AdapterSettings):
    image_size: int = setting(32, "side of the square images (MNIST 28x28 is padded to 32)", low=1)
    channels: int = setting(1, "1: grayscale, 3: RGB", low=1, high=3)
    flip: bool = setting(False, "cache mirrored copies too")


@dataclass
class VideoAdapterSettings(AdapterSettings):
    frames: int = setting(16, "frames per clip (causal video VAEs need 1 + 4k)", low=1)
    frame_stride: int = setting(1, "user clips: take every n-th frame", low=1)
    image_size: int = setting(32, "frame side: short side resized, centre-cropped", low=1)
    channels: int = setting(1, "1: grayscale, 3: RGB", low=1, high=3)
    num_clips: int = setting(3000, "embedded default: clips", low=1)
    digit_size: int = setting(24, "embedded default: digit side in pixels", low=1)
    fps: int = setting(8, "frame rate of written MP4s and GIFs", low=1)


@dataclass
class AudioAdapterSettings(AdapterSettings):
    sample_rate: int | None = setting(
        None, "samples per second; null: the folder's most common (embedded: 16000)", low=1
    )
    seconds: float | None = setting(
        None,
        "clip length; null: the folder's 95th-percentile clip rounded up to the latent grid (embedded: 1)",
        low=0.0,
        low_open=True,
    )
    count: int = setting(3000, "embedded default: clips", low=1)
    normalize: bool = setting(True, "peak-normalise every clip")
    mel: dict[str, Any] = setting(
        {}, "mel front end: n_fft, hop_length, n_mels, frames (null: the clip's, on the latent grid)"
    )


@dataclass
class DiffusionHeadSettings:
    num_timesteps: int = setting(1000, "diffusion steps of the cosine schedule in training", low=1)
    sampling_steps: int = setting(100, "respaced steps when sampling", low=1)
    sampler: str = setting("ddpm", "ddpm (ancestral) or dpm_solver (DPM-Solver++ 2M)", choices=("ddpm", "dpm_solver"))
    clip_x0: float | None = setting(5.0, "bound on the predicted clean token; null: none", low=0.0, low_open=True)


@dataclass
class FlowHeadSettings:
    sampling_steps: int = setting(25, "integration steps when sampling", low=1)
    sampler: str = setting("heun", "euler or heun", choices=("euler", "heun"))
    time_shift: float = setting(1.0, "time shifting of the sampling grid", low=0.0, low_open=True)


# `_target_` -> the settings class describing the built-in plug-in's keys.
PLUGINS: dict[str, type] = {
    "djepa.modalities.image.ImageAdapter": ImageAdapterSettings,
    "djepa.modalities.video.VideoAdapter": VideoAdapterSettings,
    "djepa.modalities.audio.AudioAdapter": AudioAdapterSettings,
    "djepa.nn.heads.DiffusionHead": DiffusionHeadSettings,
    "djepa.nn.heads.FlowHead": FlowHeadSettings,
}


# --------------------------------------------------------------------------------------- derived checks


@dataclass(frozen=True)
class Key:
    """One documented key: its dotted name, type, default and metadata."""

    name: str
    type: str
    default: Any
    help: str
    choices: tuple[str, ...] | None
    meta: Mapping[str, Any]


@functools.cache
def _hints(settings: type) -> dict[str, Any]:
    return typing.get_type_hints(settings)


@functools.cache
def _fields(settings: type) -> dict[str, dataclasses.Field[Any]]:
    return {f.name: f for f in dataclasses.fields(settings)}


def _type_name(annotation: Any) -> str:
    if isinstance(annotation, type) and not typing.get_args(annotation):
        return annotation.__name__
    return str(annotation).replace("typing.", "").replace("NoneType", "None")


def keys(settings: type = Config, prefix: str = "") -> Iterator[Key]:
    """Every documented key of a settings class, sections first-level expanded (dotted names)."""
    hints = _hints(settings)
    for f in _fields(settings).values():
        annotation = hints[f.name]
        if isinstance(annotation, type) and dataclasses.is_dataclass(annotation):
            yield from keys(annotation, f"{prefix}{f.name}.")
            continue
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        meta = f.metadata
        yield Key(f"{prefix}{f.name}", _type_name(annotation), default, meta.get("help", ""), meta.get("choices"), meta)


def _allows_none(annotation: Any) -> bool:
    return (
        annotation is Any
        or (isinstance(annotation, types.UnionType) and type(None) in typing.get_args(annotation))
        or (typing.get_origin(annotation) is typing.Union and type(None) in typing.get_args(annotation))
    )


def _base_type(annotation: Any) -> Any:
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    return args[0] if _allows_none(annotation) and len(args) == 1 else annotation


def choices(settings: type, name: str) -> tuple[str, ...]:
    """The allowed values of a field with choices."""
    found = _fields(settings)[name].metadata["choices"]
    assert found, f"{settings.__name__}.{name} has no choices"
    return tuple(found)


def problem(settings: type, name: str, value: Any) -> str | None:
    """What is wrong with `value` for field `name` of `settings` (None: nothing), as the tail of a one-line error."""
    f = _fields(settings)[name]
    annotation = _hints(settings)[name]
    meta = f.metadata
    if value is None:
        return None if _allows_none(annotation) else "must not be null"
    base = _base_type(annotation)
    if isinstance(value, str) and not value.strip() and base is str:
        return "must not be empty"
    if base is bool and not isinstance(value, bool):
        return "must be true or false"
    if base is int and not (isinstance(value, int) and not isinstance(value, bool)):
        return "must be a whole number"
    if base is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return "must be a number"
        if not math.isfinite(value):
            return "must be a finite number"
    choices = meta.get("choices")
    if choices and value not in choices:
        hint = meta.get("hints", {}).get(str(value))
        return f"must be one of {', '.join(choices)}" + (f" ({hint})" if hint else "")
    low, high = meta.get("low"), meta.get("high")
    if isinstance(value, (int, float)) and not isinstance(value, bool) and (low is not None or high is not None):
        above = low is None or (value > low if meta["low_open"] else value >= low)
        below = high is None or (value < high if meta["high_open"] else value <= high)
        if not (above and below):
            return f"must be {'a whole number' if base is int else 'a number'} {_range(meta)}"
    return None


def section_problems(settings: type, values: Mapping[str, Any], prefix: str) -> Iterator[tuple[str, Any, str]]:
    """(key, value, problem) for each value of a section that breaks its schema; unknown keys are skipped."""
    names = _fields(settings)
    for name, value in values.items():
        if name in names and not (isinstance(value, str) and value.startswith("${")):
            found = problem(settings, name, value)
            if found:
                yield f"{prefix}{name}", value, found


def markdown_table() -> str:
    """Every key as a Markdown table per section (the docs' configuration page), built-in plug-ins included."""
    out: list[str] = []
    header = ["| key | type | default | allowed | meaning |", "| --- | --- | --- | --- | --- |"]

    def table(title: str, settings: type, prefix: str = "", skip: Collection[str] = ()) -> None:
        out.extend([f"### {title}", "", *header])
        for key in keys(settings, prefix):
            if key.name.split(".", 1)[0] in skip:
                continue
            allowed = ", ".join(key.choices) if key.choices else _range(key.meta)
            default = "required" if key.default == MISSING else f"`{_yaml(key.default)}`"
            row = [f"`{key.name}`", key.type.replace("|", "or"), default, allowed, key.help.replace("|", "/")]
            out.append("| " + " | ".join(row) + " |")
        out.append("")

    table("Top level", Config, skip=SECTIONS)
    for name, settings in SECTIONS.items():
        table(f"`{name}`", settings, f"{name}.")
    for target, settings in PLUGINS.items():
        where = "modality.adapter" if "Adapter" in target else "loss.head"
        table(f"`{where}` of `{target.rsplit('.', 1)[1]}`", settings, f"{where}.")
    table("`modality.adapter.tokenizer` (built-in tokenizers)", TokenizerPluginSettings, "modality.adapter.tokenizer.")
    for name, root in ROOTS.items():
        if name != "config":
            table(f"`{name}`", root)
    return "\n".join(out)


def _yaml(value: Any) -> str:
    from omegaconf import OmegaConf

    return OmegaConf.to_yaml({"v": value})[3:].strip().replace("|", "/")


def _range(meta: Mapping[str, Any]) -> str:
    low, high = meta.get("low"), meta.get("high")
    parts = []
    if low is not None:
        parts.append(f"{'>' if meta.get('low_open') else '>='} {_number(low)}")
    if high is not None:
        parts.append(f"{'<' if meta.get('high_open') else '<='} {_number(high)}")
    return " and ".join(parts)


def _number(value: float) -> str:
    return str(value) if isinstance(value, int) else f"{value:g}"


def register() -> None:
    """Register the schema in Hydra's ConfigStore (idempotent): `configs/config.yaml` starts from `_schema`; the
    small commands compose their own root config by name."""
    from hydra.core.config_store import ConfigStore
    from omegaconf import OmegaConf

    store = ConfigStore.instance()
    root = OmegaConf.structured(Config)
    for where in OPEN_SECTIONS:  # every key there is read: plug-in arguments, variant names
        OmegaConf.set_struct(OmegaConf.select(root, where), False)
    store.store(name="_schema", node=root)
    for name, root in ROOTS.items():
        if name != "config":
            store.store(name=name, node=root)
