import pytest
import torch

from djepa.nn.model import DJEPA


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def tiny_model(grid, token_dim=4, num_classes=3, head=None, jepa=True, **overrides) -> DJEPA:
    settings = dict(
        encoder_depth=1,
        encoder_width=32,
        predictor_depth=1,
        predictor_width=32,
        num_heads=2,
        mlp_ratio=2.0,
        buffer_size=4,
        denoiser_depth=2,
        denoiser_width=64,
        diffusion_batch_mul=2,
    )
    settings.update(overrides)
    return DJEPA(
        token_dim=token_dim,
        grid=grid,
        num_classes=num_classes,
        jepa=jepa,
        head_config=head or {"_target_": "djepa.nn.heads.DiffusionHead", "sampling_steps": 10},
        **settings,
    )


@pytest.fixture
def make_tiny_model():
    return tiny_model


@pytest.fixture(scope="session")
def image_run(tmp_path_factory):
    """A tiny image run trained through the entry points: (common overrides, run_dir). Shared by the CLI and
    pipeline tests so the tokenizer and model train once per session."""
    from djepa.cli import train, train_tokenizer
    from djepa.engine.adapter import build_adapter
    from djepa.tokenizers.train_autoencoder import psnr

    home = tmp_path_factory.mktemp("home")
    # On the CPU even where a GPU is: the tests compare the commands' files byte for byte with CPU pipelines.
    common = [f"home={home}", "device=cpu"]
    tokenizer_config = train_tokenizer.compose_config(
        common + ["tokenizer.block_out_channels=[8,8,8]", "tokenizer.norm_num_groups=4", "tokenizer.steps=30"]
    )
    metrics = train_tokenizer.run(tokenizer_config)
    # The tokenizer learned the digits, not just their brightness: it beats the best constant decoder (every pixel
    # the data's mean: ~11.2 dB on the digits, where an all-zero decoder scores ~6.3 dB; 30 steps give ~12.6 dB).
    digits = build_adapter(tokenizer_config).tokenizer_training_data()
    assert metrics["psnr_db"] > psnr(digits, torch.full_like(digits, digits.mean().item()))
    run_dir = tmp_path_factory.mktemp("run")
    train.run(train.compose_config(common + [f"run_dir={run_dir}", *IMAGE_RUN]))
    return common, run_dir


# The image_run's training settings (a test may train the same run again with one setting changed).
IMAGE_RUN = [
    "model=tiny",
    "train.steps=12",
    "train.batch_size=16",
    "train.checkpoint_every=6",
    "train.preview_every=6",
    "sample.preview_per_class=1",
    "sample.num_steps=2",
    "loss.head.sampling_steps=3",
]


def pipeline_for(adapter, tmp_path, class_names):
    from omegaconf import OmegaConf

    from djepa.engine.sampling import SamplingSettings
    from djepa.pipeline import Pipeline

    model = tiny_model(adapter.token_grid, token_dim=adapter.token_dim, num_classes=len(class_names))
    config = OmegaConf.create({"modality": {"name": adapter.name}})
    return Pipeline(model, adapter, class_names, SamplingSettings(2.0, 1.0, 3, "constant"), config, tmp_path)


@pytest.fixture(scope="session")
def video_pipe(tmp_path_factory):
    """Pipelines over untrained tiny models and tiny tokenizers (pipeline, web demo tests)."""
    from djepa.modalities.video import VideoAdapter

    root = tmp_path_factory.mktemp("video")
    adapter = VideoAdapter(
        {"path": str(root / "tok")}, [2, 2, 2], str(root / "cache"), frames=8, image_size=16, digit_size=12,
        num_clips=20, fps=6,
    )  # fmt: skip
    adapter.train_tokenizer(dict(block_out_channels=[8, 16], norm_num_groups=4, steps=2, batch_size=16, holdout=0.1))
    return pipeline_for(adapter, root, [str(d) for d in range(10)])


@pytest.fixture(scope="session")
def audio_pipe(tmp_path_factory):
    import soundfile as sf

    from djepa.modalities.audio import AudioAdapter
    from djepa.modalities.espeak import speak

    root = tmp_path_factory.mktemp("audio")
    for word in ("one", "two"):
        (root / "data" / word).mkdir(parents=True)
        for i, voice in enumerate(["en-us", "en+m3"]):
            sf.write(root / "data" / word / f"{i}.wav", speak(word, voice, sample_rate=8000, num_samples=4000)[0], 8000)
    mel = {"n_fft": 256, "hop_length": 128, "n_mels": 16, "frames": 32, "griffin_lim_iters": 4}
    adapter = AudioAdapter(
        {"path": str(root / "tok")}, [2, 2], str(root / "cache"), sample_rate=8000, seconds=0.5,
        data_dir=str(root / "data"), mel=mel,
    )  # fmt: skip
    adapter.train_tokenizer(dict(block_out_channels=[8, 8], norm_num_groups=4, steps=2, batch_size=4, holdout=0.25))
    return pipeline_for(adapter, root, ["one", "two"])


def free_port() -> int:
    """A free localhost port for a torchrun rendezvous: a fixed one collides with any other torchrun on the
    machine (a second test session, a benchmark)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
