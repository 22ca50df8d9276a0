"""Command-line values that used to reach torch or einops as tracebacks, or were silently accepted: each is one
line naming the key, exit status 2, nothing written. Most cases stop before anything is built; the sampling
cases share the session's tiny image run."""

import importlib.util

import pytest
import torch
from PIL import Image
from test_faults import one_line_error

from djepa import pipeline
from djepa.cli import sample, train, train_tokenizer
from djepa.cli.config import compose_config


def refused(capsys, tmp_path, main, overrides, key):
    """`main` with a fresh home and run_dir refuses `overrides` in one line naming `key`, writing nothing."""
    home, run_dir, out = tmp_path / "home", tmp_path / "run", tmp_path / "out"
    given = {item.split("=", 1)[0] for item in overrides}
    defaults = {"home": home, "run_dir": run_dir, "out": out, "model": "tiny"}
    argv = [f"{k}={v}" for k, v in defaults.items() if k not in given] + list(overrides)
    err = one_line_error(capsys, main, argv)
    assert err.startswith("error: ") and key in err, err
    assert not home.exists() and not run_dir.exists() and not out.exists()
    return err


@pytest.mark.parametrize(
    "overrides, key",
    [
        (["model.num_heads=3"], "model.num_heads=3"),  # model=tiny: widths 32
        (["model.num_heads=5", "model.encoder_width=40"], "model.predictor_width=32"),
        (["modality.adapter.image_size=0"], "modality.adapter.image_size=0"),
        (["modality.adapter.image_size=30"], "modality.adapter.image_size=30"),  # the tokenizer downsamples by 4
        (["modality.adapter.patch_size=[3,3]"], "modality.adapter.patch_size=[3,3]"),  # 8x8 latents
        (["modality=video", "modality.adapter.frames=15"], "modality.adapter.frames=15"),
        (["modality=audio", "modality.adapter.mel.n_mels=60"], "modality.adapter.mel.n_mels=60"),
    ],
    ids=["heads-encoder", "heads-predictor", "size-0", "size-30", "patch-3", "video-frames", "audio-mels"],
)
def test_shapes_that_do_not_tile_are_refused_at_start(overrides, key, capsys, tmp_path):
    refused(capsys, tmp_path, train.main, overrides, key)


@pytest.mark.parametrize(
    "override, key",
    [
        ("train.lr=inf", "train.lr=inf"),
        ("sample.guidance_scale=inf", "sample.guidance_scale=inf"),
        ("sample.guidance_scale=inf", "sample.guidance_scale=inf"),
        ("sample.temperature=inf", "sample.temperature=inf"),
        ("train.blr=nan", "train.blr=nan"),
        ("loss.jepa_weight=-inf", "loss.jepa_weight=-inf"),
    ],
)
def test_every_float_must_be_finite(override, key, capsys, tmp_path):
    refused(capsys, tmp_path, train.main, [override], key)


@pytest.mark.parametrize("main", [train.main, sample.main], ids=["train", "sample"])
def test_a_seed_beyond_64_bits_is_refused(main, capsys, tmp_path):
    err = refused(capsys, tmp_path, main, [f"seed={2**64}"], f"seed={2**64}")
    assert str(2**63 - 1) in err  # the largest seed torch takes


def test_a_seed_of_the_largest_signed_64_bit_value_is_taken():
    from djepa.cli.input_checks import check_inputs

    check_inputs(compose_config([f"seed={2**63 - 1}"]), "train")  # no error: torch.manual_seed takes it
    torch.manual_seed(2**63 - 1)


def test_train_tokenizer_with_zero_steps_is_refused(capsys, tmp_path):
    refused(capsys, tmp_path, train_tokenizer.main, ["tokenizer.steps=0"], "tokenizer.steps=0")


def test_train_tokenizer_checks_the_grid_of_the_tokenizer_it_trains(capsys, tmp_path):
    # Six blocks downsample 32 px by 32: one latent cell, which patch_size [2, 2] cannot tile.
    overrides = ["tokenizer.block_out_channels=[8,8,8,8,8,8]"]
    refused(capsys, tmp_path, train_tokenizer.main, overrides, "modality.adapter.patch_size=[2,2]")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
@pytest.mark.parametrize("device", ["cuda", "cuda:1"])
def test_a_cuda_device_without_a_gpu_is_refused_at_start(device, capsys, tmp_path):
    refused(capsys, tmp_path, train.main, [f"device={device}"], f"device={device}")


@pytest.mark.skipif(
    torch.cuda.is_available() and importlib.util.find_spec("xformers") is not None, reason="xformers can run here"
)
def test_xformers_without_cuda_or_xformers_is_refused_at_start(capsys, tmp_path):
    refused(capsys, tmp_path, train.main, ["attention_backend=xformers"], "attention_backend=xformers")


@pytest.mark.parametrize("modality", ["image", "video"])
def test_two_channels_of_the_grey_digits_are_refused_saying_what_is_allowed(modality, capsys, tmp_path):
    err = refused(capsys, tmp_path, train.main, [f"modality={modality}", "modality.adapter.channels=2"], "channels=2")
    assert "1 (grey) or 3 (RGB)" in err


@pytest.mark.parametrize(
    "override, key",
    [
        ("prime_seconds=-1", "prime_seconds=-1"),
        ("prime_frames=-3", "prime_frames=-3"),
        ("prime_frames=abc", "prime_frames: Value 'abc'"),
        ("prime_seconds=nan", "prime_seconds=nan"),
        ("sample.precision=fp16", "sample.precision='fp16'"),
    ],
)
def test_bad_sampling_values_are_refused_before_the_run_is_read(override, key, capsys, tmp_path):
    refused(capsys, tmp_path, sample.main, [override], key)


@pytest.mark.parametrize("key", ["run_dir", "out", "home"])
@pytest.mark.parametrize("main", [train.main, sample.main], ids=["train", "sample"])
def test_an_empty_path_is_refused_naming_the_key(main, key, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # where an empty path would have written
    err = refused(capsys, tmp_path, main, [f"{key}="], f"{key}='' must not be empty")
    assert list(tmp_path.iterdir()) == [], err


@pytest.mark.parametrize("value", ["/data/café", "/data/it's naïve", "C:\\Users\\Zoë\\", "日本/語"])
def test_non_ascii_values_are_taken_as_written(value):
    cfg = compose_config([f"run_dir={value}", "prompt_class=Ünïcode"])
    assert cfg.run_dir == value and cfg.out == f"{value}/samples" and cfg.prompt_class == "Ünïcode"


# ----------------------------------------------------------------------------- on the session's tiny run


@pytest.mark.slow
def test_prime_on_an_image_model_without_a_mask_is_one_line(image_run, capsys, tmp_path):
    common, run_dir = image_run
    prime = tmp_path / "digit.png"
    Image.new("L", (32, 32)).save(prime)
    out = tmp_path / "out"
    err = one_line_error(capsys, sample.main, [*common, f"run_dir={run_dir}", f"prime={prime}", f"out={out}"])
    assert err.startswith(f"error: prime={prime}: say what to regenerate: mask=left|right|top|bottom|center")
    assert not out.exists()


@pytest.mark.slow
@pytest.mark.parametrize("precision, dtype", [("fp32", torch.float32), ("bf16", torch.bfloat16)])
def test_sample_precision_decides_the_dtype_the_model_runs_in(precision, dtype, image_run, tmp_path, monkeypatch):
    common, run_dir = image_run
    seen = set()
    generate = pipeline.generate

    def recording(model, *args, **kwargs):  # the dtypes the model's linear layers compute in while sampling
        linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
        hooks = [m.register_forward_hook(lambda m, a, out: seen.add(out.dtype)) for m in linears]
        try:
            return generate(model, *args, **kwargs)
        finally:
            for hook in hooks:
                hook.remove()

    monkeypatch.setattr(pipeline, "generate", recording)
    argv = [*common, f"run_dir={run_dir}", "num_samples=1", "prompt_class=0", f"out={tmp_path}", "sample.num_steps=2"]
    sample.main([*argv, f"sample.precision={precision}"])
    assert (tmp_path / "0_000.png").is_file()
    assert dtype in seen and (dtype == torch.float32) == (torch.bfloat16 not in seen), seen


@pytest.mark.parametrize(
    "overrides",
    [
        ["modality=image"],
        ["modality=video"],
        ["modality=audio"],
        ["model=djepa_b", "modality.adapter.channels=3"],
        # Tokenizers the checks cannot size without loading them: their own grids and patch ranks stand.
        ["modality=audio", "modality.adapter.tokenizer._target_=djepa.tokenizers.oobleck.OobleckTokenizer",
         "modality.adapter.patch_size=[1]"],
        ["modality=video", "modality.adapter.tokenizer._target_=djepa.tokenizers.video_vae.VideoVAETokenizer",
         "modality.adapter.tokenizer.family=wan", "modality.adapter.frames=17", "modality.adapter.patch_size=[1,2,2]"],
    ],
    ids=["image", "video", "audio", "rgb-b", "oobleck", "wan"],
)  # fmt: skip
def test_the_shipped_settings_pass_every_check(overrides, tmp_path):
    from djepa.cli.input_checks import check_inputs

    for command in ("train", "train_tokenizer", "sample"):
        check_inputs(compose_config([f"home={tmp_path}", *overrides]), command)
