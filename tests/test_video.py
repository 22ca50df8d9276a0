import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

from djepa.benchmarks.views import VideoView
from djepa.errors import UsageError
from djepa.modalities.base import DataError, patchify, unpatchify
from djepa.modalities.video import (
    ClipError,
    VideoAdapter,
    decode_decord,
    decode_pyav,
    fit_frames,
    load_video_folder,
    moving_digits,
    read_clip,
    video_decoders,
    write_mp4,
)
from djepa.tokenizers.per_frame import PerFrameTokenizer

VIDEO_VAE = "djepa.tokenizers.video_vae.VideoVAETokenizer"


def centroids(clips: torch.Tensor) -> torch.Tensor:
    """Ink centroids [N, T, 2] of clips [N, T, H, W] in [-1, 1]."""
    ink = (clips + 1) / 2
    h, w = clips.shape[-2:]
    mass = ink.sum((-1, -2))
    cy = (ink * torch.arange(h, dtype=torch.float32).view(h, 1)).sum((-1, -2)) / mass
    cx = (ink * torch.arange(w, dtype=torch.float32).view(1, w)).sum((-1, -2)) / mass
    return torch.stack([cy, cx], -1)


def adapter_for(tmp_path, **overrides) -> VideoAdapter:
    settings = dict(frames=16, image_size=32, num_clips=20, patch_size=[4, 2, 2])
    settings.update(overrides)
    tokenizer = settings.pop("tokenizer", {"path": str(tmp_path / "tok")})
    return VideoAdapter(tokenizer, settings.pop("patch_size"), str(tmp_path / "cache"), **settings)


def test_default_clips_are_seeded_moving_real_digits(tmp_path):
    clips, labels = adapter_for(tmp_path, num_clips=30).load_dataset()
    assert clips.shape == (30, 16, 1, 32, 32) and labels.shape == (30,)
    assert clips.min() >= -1 and clips.max() <= 1
    assert torch.bincount(labels, minlength=10).tolist() == [3] * 10
    again, labels_again = adapter_for(tmp_path, num_clips=30).load_dataset()
    assert torch.equal(clips, again) and torch.equal(labels, labels_again)
    other, _ = adapter_for(tmp_path, num_clips=30, seed=1).load_dataset()
    assert not torch.equal(clips, other)
    frames = clips[:, :, 0]
    travel = (centroids(frames) - centroids(frames)[:, :1]).norm(dim=-1).amax(1)
    assert (travel > 3).all(), travel
    # the whole digit stays on the canvas: no frame loses ink to the border
    ink = ((frames + 1) / 2).sum((-1, -2))
    assert torch.allclose(ink, ink[:, :1].expand_as(ink), rtol=1e-4)


def test_moving_digits_bounce_inside_the_canvas():
    clips, _ = moving_digits(12, 40, 32, 20, seed=3)  # long clips: every digit meets a wall
    ink = ((clips + 1) / 2).sum((-1, -2))
    assert torch.allclose(ink, ink[:, :1].expand_as(ink), rtol=1e-4)


def test_classifier_sees_real_digit_frames_and_averages_per_clip(tmp_path):
    view = VideoView(adapter_for(tmp_path))
    x, y = view.training_data()
    assert x.shape == (5000, 1, 32, 32) and torch.bincount(y).tolist() == [500] * 10
    media = torch.zeros(3, 16, 1, 32, 32)
    rows, group = view.rows(media)
    assert rows.shape == (48, 1, 32, 32) and group == 16


def test_mp4_round_trip_with_pyav_and_decord(tmp_path):
    adapter = adapter_for(tmp_path)
    clip = torch.rand(16, 1, 32, 32) * 2 - 1
    path = adapter.save(clip, tmp_path / "clip")
    assert path.suffix == ".mp4" and path.stat().st_size > 0
    with __import__("av").open(str(path)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264" and stream.codec_context.pix_fmt == "yuv420p"
    indices = list(range(16))
    b = decode_pyav(path, indices)
    assert b.shape == (16, 64, 64, 3)
    if importlib.util.find_spec("decord") is not None:  # the optional extra
        a = decode_decord(path, indices)
        assert a.shape == b.shape and np.abs(a.astype(int) - b.astype(int)).max() <= 2
    grid = adapter.save_grid(torch.stack([clip] * 4), 2, tmp_path / "grid")
    assert grid.suffix == ".png" and Image.open(grid).size[1] == 2 * (32 + 4) * 2
    assert Image.open(grid.with_suffix(".gif")).n_frames == 16


def test_clips_decode_through_pyav_where_decord_is_not_installed(tmp_path, monkeypatch):
    path = adapter_for(tmp_path).save(torch.rand(8, 1, 16, 16) * 2 - 1, tmp_path / "clip")
    has_decord = importlib.util.find_spec("decord") is not None
    assert video_decoders() == ([decode_decord] if has_decord else []) + [decode_pyav]
    with_decord = read_clip(path, 8, 1, 32, 3)
    monkeypatch.setitem(sys.modules, "decord", None)  # what `import decord` meets where it is not installed
    assert video_decoders() == [decode_pyav]
    with pytest.raises(ImportError):
        decode_decord(path, [0])
    clip = read_clip(path, 8, 1, 32, 3)
    assert torch.equal(clip, fit_frames(torch.from_numpy(decode_pyav(path, list(range(8)))), 32, 3))
    assert (clip - with_decord).abs().max() <= 2 / 127.5 + 1e-6  # decord and PyAV differ by <= 2 levels
    (tmp_path / "bad.mp4").write_bytes(b"not a video")
    with pytest.raises(ClipError) as error:  # a bad file reports PyAV's complaint, no missing module
        read_clip(tmp_path / "bad.mp4", 8, 1, 32, 3)
    assert str(error.value).startswith("decode_pyav:") and "decord" not in str(error.value)


def test_the_same_frames_always_encode_to_the_same_mp4_bytes(tmp_path):
    # With x264's macroblock-tree rate control on, a clip encoded again after a different clip came out as a
    # different bitstream in 4 groups of 6 repeats out of 5 on an AVX-512 CPU (other CPUs pass either way).
    def noise_clip(seed: int) -> np.ndarray:
        noise = np.random.default_rng(seed).integers(0, 255, (16, 16, 16, 1), dtype=np.uint8)
        return np.ascontiguousarray(np.repeat(noise, 3, -1).repeat(6, 1).repeat(6, 2))  # 96 x 96, as samples are

    target, encoded = noise_clip(0), set()
    for i in range(12):
        write_mp4(noise_clip(100 + i), tmp_path / "other.mp4", fps=6)
        encoded.add(write_mp4(target, tmp_path / f"{i}.mp4", fps=6).read_bytes())
    assert len(encoded) == 1, f"{len(encoded)} different files from the same frames"


def write_clip(path, frames, h, w, fps=8, pix_fmt="yuv420p"):
    import av

    g = np.random.default_rng(0)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = w, h, pix_fmt
        for _ in range(frames):
            frame = g.integers(0, 255, (h, w, 3), dtype=np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def test_folder_skips_and_counts_bad_files_and_resizes_odd_clips(tmp_path):
    root = tmp_path / "data"
    (root / "jump").mkdir(parents=True)
    (root / "run").mkdir()
    write_clip(root / "jump" / "a.mp4", 12, 32, 48)
    write_clip(root / "jump" / "odd.mkv", 10, 27, 45, fps=25, pix_fmt="yuv444p")  # odd size, other fps
    write_clip(root / "run" / "b.mp4", 9, 40, 40)
    (root / "run" / "empty.mp4").write_bytes(b"")
    good = (root / "jump" / "a.mp4").read_bytes()
    (root / "run" / "truncated.mp4").write_bytes(good[: len(good) // 3])
    (root / "run" / "noise.avi").write_bytes(b"not a video at all" * 50)
    (root / "run" / "notes.txt").write_text("hello")
    write_clip(root / "run" / "short.mp4", 4, 32, 32)
    clips, labels, names, skipped = load_video_folder(root, frames=8, stride=1, size=16, channels=3)
    assert clips.shape == (3, 8, 3, 16, 16) and clips.min() >= -1 and clips.max() <= 1
    assert labels.tolist() == [0, 0, 1] and names == ["jump", "run"]
    assert skipped == 5
    # a frame stride reaches past the short clips
    clips, labels, _, skipped = load_video_folder(root, frames=5, stride=2, size=16, channels=1)
    assert clips.shape == (3, 5, 1, 16, 16) and skipped == 5
    adapter = adapter_for(tmp_path, data_dir=str(root), frames=8, image_size=16, channels=1)
    media, _ = adapter.load_dataset()
    assert media.shape == (3, 8, 1, 16, 16) and adapter.skipped_files == 5
    assert adapter.class_names == ["jump", "run"]


def test_folder_errors_name_the_path(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_video_folder(tmp_path / "missing", 8, 1, 16, 1)
    with pytest.raises(DataError, match="no class subfolders"):
        load_video_folder(tmp_path, 8, 1, 16, 1)
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.mp4").write_bytes(b"junk")
    with pytest.raises(DataError, match=str(tmp_path)):
        load_video_folder(tmp_path, 8, 1, 16, 1)


def test_patchify_3d_grid_round_trips_time_slowest():
    latents = torch.randn(2, 4, 16, 8, 8)
    tokens = patchify(latents, (4, 2, 2))
    assert tokens.shape == (2, 64, 64)
    assert torch.equal(unpatchify(tokens, (4, 4, 4), (4, 2, 2), 4), latents)
    # the first 16 tokens hold the first 4 latent frames
    first = unpatchify(tokens[:, :16], (1, 4, 4), (4, 2, 2), 4)
    assert torch.equal(first, latents[:, :, :4])


@pytest.mark.slow
def test_per_frame_tokenizer_trains_loads_and_primes(tmp_path):
    tiny = dict(block_out_channels=[8, 16], norm_num_groups=4, steps=3, batch_size=16, holdout=0.1)
    adapter = adapter_for(tmp_path, frames=8, image_size=16, digit_size=12, patch_size=[2, 2, 2])
    metrics = adapter.train_tokenizer(tiny)
    assert (tmp_path / "tok" / "config.json").is_file() and "psnr_db" in metrics
    tok = adapter.tokenizer
    assert isinstance(tok, PerFrameTokenizer) and tok.downsample == (1, 2, 2)
    assert adapter.media_grid == (8, 16, 16) and adapter.latent_grid == (8, 8, 8)
    assert adapter.token_grid == (4, 4, 4) and adapter.token_dim == 4 * 8
    clips = adapter.load_dataset()[0][:3]
    mean, std = adapter.encode_media(clips)
    assert mean.shape == std.shape == (3, 4, 8, 8, 8)
    # each latent frame is its own frame's latent
    single, _ = tok.frame.encode_moments(clips[:, 5])
    assert torch.allclose(mean[:, :, 5], single, atol=1e-5)
    tokens = adapter.to_tokens(mean)
    assert tokens.shape == (3, 64, 32)
    assert adapter.decode_tokens(tokens).shape == (3, 8, 1, 16, 16)
    # continuation: a real clip file, its first frames' tokens known
    path = adapter.save(clips[0], tmp_path / "prime")
    known, mask = adapter.prime_tokens(str(path), OmegaConf.create({"prime_frames": 4}), 5)
    assert known.shape == (5, 64, 32) and mask.shape == (5, 64)
    assert mask[:, :32].all() and not mask[:, 32:].any()  # 4 frames = 2 temporal patches of 2 = 2 x 16 tokens
    known1, mask1 = adapter.prime_tokens(str(path), OmegaConf.create({"prime_frames": 1}), 1)
    assert mask1.sum() == 16
    data = adapter.token_data()
    assert data.mean.shape == (20, 64, 32)


def tiny_video_vae(kind: str):
    from diffusers import AutoencoderKLCogVideoX, AutoencoderKLLTXVideo, AutoencoderKLWan

    if kind == "cogvideox":
        return AutoencoderKLCogVideoX(
            down_block_types=("CogVideoXDownBlock3D",) * 3,
            up_block_types=("CogVideoXUpBlock3D",) * 3,
            block_out_channels=(8, 8, 8),
            latent_channels=4,
            layers_per_block=1,
            norm_num_groups=4,
            temporal_compression_ratio=4,
        )
    if kind == "wan":
        return AutoencoderKLWan(
            base_dim=8,
            z_dim=4,
            dim_mult=[1, 1, 1],
            num_res_blocks=1,
            temperal_downsample=[True, True],
            latents_mean=[0.1, 0.2, -0.1, 0.0],
            latents_std=[2.0, 1.5, 1.0, 0.5],
        )
    return AutoencoderKLLTXVideo(
        latent_channels=8,
        block_out_channels=(8, 8, 8, 8),
        decoder_block_out_channels=(8, 8, 8, 8),
        layers_per_block=(1, 1, 1, 1, 1),
        decoder_layers_per_block=(1, 1, 1, 1, 1),
        spatio_temporal_scaling=(True, True, True, False),
        decoder_spatio_temporal_scaling=(True, True, True, False),
        decoder_inject_noise=(False,) * 5,
        upsample_residual=(False,) * 4,
        upsample_factor=(1,) * 4,
        patch_size=1,
        patch_size_t=1,
    )


@pytest.mark.parametrize(
    "kind,frames,latent_grid,channels",
    [("cogvideox", 17, (5, 4, 4), 4), ("wan", 13, (4, 4, 4), 4), ("ltx", 17, (3, 2, 2), 8)],
)
def test_pretrained_video_vae_loads_from_a_local_directory(tmp_path, kind, frames, latent_grid, channels):
    torch.manual_seed(0)
    tiny_video_vae(kind).save_pretrained(str(tmp_path / kind))
    adapter = adapter_for(
        tmp_path,
        tokenizer={"_target_": VIDEO_VAE, "family": kind, "path": str(tmp_path / kind)},
        frames=frames,
        image_size=16,
        patch_size=[1, 2, 2] if kind != "ltx" else [1, 1, 1],
    )
    tok = adapter.tokenizer
    assert tok.latent_channels == channels
    assert adapter.latent_grid == latent_grid
    clips = torch.rand(2, frames, 1, 16, 16) * 2 - 1  # grey media through an RGB video VAE
    mean, std = adapter.encode_media(clips)
    assert mean.shape == std.shape == (2, channels, *latent_grid)
    tokens = adapter.to_tokens(mean)
    assert tokens.shape == (2, int(np.prod(adapter.token_grid)), adapter.token_dim)
    assert adapter.decode_tokens(tokens).shape == (2, frames, 1, 16, 16)
    with pytest.raises(ValueError, match="1 \\+"):
        tok.latent_grid((frames + 1, 16, 16))
    with pytest.raises(UsageError, match="pretrained"):
        adapter.train_tokenizer({})


def test_wan_normalisation_uses_its_latent_statistics(tmp_path):
    tiny_video_vae("wan").save_pretrained(str(tmp_path / "wan"))
    from djepa.tokenizers.video_vae import VideoVAETokenizer

    tok = VideoVAETokenizer("wan", tmp_path / "wan")
    x = torch.rand(1, 5, 3, 16, 16) * 2 - 1
    mean, _ = tok.encode_moments(x)
    raw = tok.vae.encode(x.transpose(1, 2)).latent_dist.mean
    expected = (raw - torch.tensor([0.1, 0.2, -0.1, 0.0]).view(1, 4, 1, 1, 1)) / torch.tensor(
        [2.0, 1.5, 1.0, 0.5]
    ).view(1, 4, 1, 1, 1)
    assert torch.allclose(mean, expected, atol=1e-5)


def test_missing_tokenizers_say_what_to_do(tmp_path):
    with pytest.raises(FileNotFoundError, match="train_tokenizer modality=video"):
        _ = adapter_for(tmp_path).tokenizer
    adapter = adapter_for(
        tmp_path, tokenizer={"_target_": VIDEO_VAE, "family": "wan", "path": str(tmp_path / "nowhere")}
    )
    with pytest.raises(FileNotFoundError, match="save_pretrained"):
        _ = adapter.tokenizer
    with pytest.raises(UsageError, match="family"):
        _ = adapter_for(tmp_path, tokenizer={"_target_": VIDEO_VAE, "family": "mochi", "path": "x"}).tokenizer


def group_file(group: str, name: str):
    """A config group option's settings as its file states them (over the schema's defaults): its defaults list,
    then its own keys."""
    from djepa import configs

    node = OmegaConf.load(Path(configs.__file__).parent / group / f"{name}.yaml") or OmegaConf.create()
    merged = OmegaConf.create()
    for entry in node.pop("defaults", ["_self_"]):
        merged = OmegaConf.merge(merged, node if entry == "_self_" else group_file(group, entry))
    return merged


def test_video_config_composes():
    from djepa.cli.config import compose_config

    cfg = compose_config(["modality=video", "home=/tmp/djepa-video-test"])
    assert cfg.modality.adapter._target_ == "djepa.modalities.video.VideoAdapter"
    assert cfg.modality.adapter.frames == 16 and list(cfg.modality.adapter.patch_size) == [2, 4, 4]
    assert cfg.loss.head._target_ == "djepa.nn.heads.FlowHead"  # the video default; image and audio: diffusion
    assert compose_config(["modality=video", "loss=diffusion"]).loss.head._target_ == "djepa.nn.heads.DiffusionHead"
    assert compose_config(["modality=image"]).loss.head._target_ == "djepa.nn.heads.DiffusionHead"
    assert cfg.modality.adapter.tokenizer.path == "/tmp/djepa-video-test/tokenizers/video"
    # every per-modality group comes from its video file (not the image default's)
    image = compose_config(["modality=image", "home=/tmp/djepa-video-test"])
    for key in ("model", "train", "tokenizer", "sample", "benchmark"):  # loss: its head is checked above
        composed = OmegaConf.create(OmegaConf.to_container(cfg[key], resolve=True))
        assert OmegaConf.merge(composed, group_file(key, "video")) == composed  # what the video file states, it holds
    assert cfg.train != image.train and cfg.sample != image.sample  # the groups that differ, told apart


def test_centroid_travel_tells_moving_digits_from_still_ones():
    from djepa.benchmarks.metrics import centroid_travel
    from djepa.modalities.video import moving_digits

    clips, _ = moving_digits(20, 16, 32, 20, seed=0)
    moving = centroid_travel(clips[:, :, None])
    still = centroid_travel(clips[:, :1, None].expand(-1, 16, -1, -1, -1))
    assert moving.min() > 3  # 1-2 px per frame over 16 frames, bounces included
    assert still.abs().max() < 1e-4
