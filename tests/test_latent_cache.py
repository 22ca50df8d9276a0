"""The on-disk latent cache: keyed by what the latents depend on, built lazily and resumably, read on demand."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import free_port
from PIL import Image

from djepa.modalities.base import patchify
from djepa.modalities.image import ImageAdapter, read_image
from djepa.modalities.latent_cache import CachedTokens, LatentCache, encode_into_cache
from djepa.tokenizers.base import LatentTokenizer


class PoolTokenizer(LatentTokenizer):
    """A stand-in VAE: 2x2 average pooling, counting the items it encodes; its 'weights' are a file."""

    def __init__(self, path, channels=3):
        self.path = path
        self.latent_channels = channels
        self.downsample = (2, 2)
        self.encoded = 0
        self.fail_after: int | None = None

    def encode_moments(self, x):
        if self.fail_after is not None and self.encoded >= self.fail_after:
            raise KeyboardInterrupt("simulated interruption")
        self.encoded += len(x)
        mean = F.avg_pool2d(x.float(), 2)
        return mean, torch.full_like(mean, 0.1)

    def decode(self, z):
        return F.interpolate(z, scale_factor=2)


def write_class(root, name, count, start=0):
    (root / name).mkdir(parents=True, exist_ok=True)
    for i in range(start, start + count):
        Image.new("RGB", (20 + i, 16), (i * 30 % 255, 100, 200)).save(root / name / f"{i}.png")


def adapter_for(tmp_path, data, weights=None, **settings):
    weights = weights or tmp_path / "weights.bin"
    if not weights.exists():
        weights.write_bytes(b"v1")
    adapter = ImageAdapter(
        {"path": str(weights)},
        [2, 2],
        str(tmp_path / "cache"),
        image_size=8,
        channels=3,
        data_dir=str(data),
        **settings,
    )
    adapter._tokenizer = PoolTokenizer(weights)
    return adapter


def tokens(adapter, **kw):
    data = adapter.token_data(batch_size=2, device="cpu", workers=0, **kw)
    return data, data.mean.materialize()


def test_added_images_and_a_new_class_reach_the_data(tmp_path):
    data_dir = tmp_path / "data"
    write_class(data_dir, "cat", 3)
    write_class(data_dir, "dog", 3)
    first = adapter_for(tmp_path, data_dir)
    data, _ = tokens(first)
    assert len(data) == 6 and first.num_classes == 2

    write_class(data_dir, "cat", 2, start=3)
    write_class(data_dir, "emu", 3, start=10)
    second = adapter_for(tmp_path, data_dir)
    assert second.cache_key() != first.cache_key()
    data, mean = tokens(second)
    assert second.class_names == ["cat", "dog", "emu"]
    assert len(data) == 11 and data.labels.tolist() == [0] * 5 + [1] * 3 + [2] * 3
    emu = read_image(data_dir / "emu" / "10.png", 8, 3)
    assert torch.allclose(mean[8], patchify(F.avg_pool2d(emu[None], 2), (2, 2))[0])


def test_removing_a_class_builds_a_fresh_cache_with_valid_labels(tmp_path):
    data_dir = tmp_path / "data"
    for name in ("a", "b", "c"):
        write_class(data_dir, name, 2)
    tokens(adapter_for(tmp_path, data_dir))
    for path in (data_dir / "b").iterdir():
        path.unlink()
    (data_dir / "b").rmdir()
    adapter = adapter_for(tmp_path, data_dir)
    data, _ = tokens(adapter)
    assert adapter.class_names == ["a", "c"] and data.labels.tolist() == [0, 0, 1, 1]
    assert int(data.labels.max()) < adapter.num_classes  # once an IndexError in training


def test_a_touched_file_tokenizer_weights_or_settings_change_the_key(tmp_path):
    data_dir = tmp_path / "data"
    write_class(data_dir, "a", 2)
    key = adapter_for(tmp_path, data_dir).cache_key()
    assert adapter_for(tmp_path, data_dir).cache_key() == key  # stable while nothing changes
    assert adapter_for(tmp_path, data_dir, flip=True).cache_key() != key
    (tmp_path / "weights.bin").write_bytes(b"v2")  # retrained tokenizer
    key2 = adapter_for(tmp_path, data_dir).cache_key()
    assert key2 != key
    write_class(data_dir, "a", 1, start=0)  # the same name rewritten with other pixels
    (data_dir / "a" / "0.png").touch()
    assert adapter_for(tmp_path, data_dir).cache_key() != key2


def test_bad_files_are_skipped_and_counted(tmp_path):
    data_dir = tmp_path / "data"
    write_class(data_dir, "cat", 3)
    write_class(data_dir, "dog", 2)
    (data_dir / "cat" / "broken.png").write_bytes(b"\x89PNG not really")
    (data_dir / "dog" / "notes.txt").write_text("hello")
    adapter = adapter_for(tmp_path, data_dir, flip=True)
    data, mean = tokens(adapter)
    assert adapter.skipped_files == 2
    assert len(data) == 10 and data.labels.tolist() == [0, 0, 0, 1, 1] * 2  # originals, then mirrored copies
    cat = read_image(data_dir / "cat" / "0.png", 8, 3)
    assert torch.allclose(mean[5], patchify(F.avg_pool2d(cat.flip(-1)[None], 2), (2, 2))[0])
    again = adapter_for(tmp_path, data_dir, flip=True)
    tokens(again)
    assert again.skipped_files == 2 and again.tokenizer.encoded == 0  # read from the cache


def test_an_interrupted_caching_run_resumes_where_it_stopped(tmp_path):
    data_dir = tmp_path / "data"
    write_class(data_dir, "a", 4)
    write_class(data_dir, "b", 3)
    straight = adapter_for(tmp_path / "s", data_dir, weights=tmp_path / "w.bin")
    _, expected = tokens(straight)

    broken = adapter_for(tmp_path, data_dir, weights=tmp_path / "w.bin")
    broken.tokenizer.fail_after = 4  # two batches of 2, then the run dies
    with pytest.raises(KeyboardInterrupt):
        tokens(broken)
    resumed = adapter_for(tmp_path, data_dir, weights=tmp_path / "w.bin")
    data, mean = tokens(resumed)
    assert resumed.tokenizer.encoded == 3  # only what the first run had not written
    assert len(data) == 7 and torch.equal(mean, expected)


def test_training_reads_rows_from_the_cache_files(tmp_path):
    data_dir = tmp_path / "data"
    write_class(data_dir, "a", 5)
    data, mean = tokens(adapter_for(tmp_path, data_dir))
    assert isinstance(data.mean, CachedTokens)
    assert data.mean.shape == (5, 4, 12)  # 4x4 latents of 3 channels in 2x2 patches
    idx = torch.tensor([4, 0, 4])
    assert torch.equal(data.mean[idx], mean[idx]) and torch.equal(data.mean[2], mean[2])
    assert torch.allclose(data.std[idx], torch.full((3, 4, 12), 0.1))


def test_dataloader_workers_read_the_folder(tmp_path):
    data_dir = tmp_path / "data"
    write_class(data_dir, "a", 3)
    adapter = adapter_for(tmp_path, data_dir)
    data = adapter.token_data(batch_size=2, device="cpu", workers=1)
    assert len(data) == 3


def test_ranks_encode_disjoint_shares(tmp_path):
    """Two ranks' shares (run one after the other here) together cover every item once."""
    data_dir = tmp_path / "data"
    write_class(data_dir, "a", 5)
    adapter = adapter_for(tmp_path, data_dir)
    dataset = adapter.media_dataset()
    cache = LatentCache(tmp_path / "shared")
    cache.prepare(len(dataset), (3, 4, 4))
    shares = [cache.pending(0, 2), cache.pending(1, 2)]
    assert sorted(np.concatenate(shares).tolist()) == list(range(5))
    for share in shares:
        encode_into_cache(cache, dataset, share, adapter.encode_media, torch.device("cpu"), 2, progress=False)
    assert adapter.tokenizer.encoded == 5 and len(cache.pending()) == 0


@pytest.mark.slow  # all 5,000 embedded digits through the cache
def test_the_embedded_default_caches_as_before(tmp_path):
    weights = tmp_path / "weights.bin"
    weights.write_bytes(b"v1")
    adapter = ImageAdapter({"path": str(weights)}, [2, 2], str(tmp_path / "cache"), image_size=32, channels=1)
    adapter._tokenizer = PoolTokenizer(weights, channels=1)
    data = adapter.token_data(batch_size=1000, device="cpu")
    images, labels = adapter.load_dataset()
    assert len(data) == 5000 and torch.equal(data.labels, labels)
    rows = torch.tensor([0, 1234, 4999])
    assert torch.equal(data.mean[rows], patchify(F.avg_pool2d(images[rows], 2), (2, 2)))


class FramePoolTokenizer(PoolTokenizer):
    """Per-frame pooling for clips [B, T, C, H, W] -> [B, C, T, h, w]."""

    def __init__(self, path):
        super().__init__(path, channels=1)
        self.downsample = (1, 2, 2)

    def encode_moments(self, x):
        b, t = x.shape[:2]
        mean, std = super().encode_moments(x.flatten(0, 1))
        return (z.reshape(b, t, *z.shape[1:]).transpose(1, 2) for z in (mean, std))


def test_a_clip_added_to_a_video_folder_reaches_the_data(tmp_path):
    from djepa.modalities.video import VideoAdapter, write_mp4

    data_dir = tmp_path / "data"
    (data_dir / "jump").mkdir(parents=True)
    rng = np.random.default_rng(0)
    write_mp4(rng.integers(0, 255, (4, 16, 16, 3), dtype=np.uint8), data_dir / "jump" / "a.mp4")
    (data_dir / "jump" / "notes.txt").write_text("not a clip")
    weights = tmp_path / "weights.bin"
    weights.write_bytes(b"v1")

    def adapter():
        a = VideoAdapter(
            {"path": str(weights)}, [1, 2, 2], str(tmp_path / "cache"), frames=4, image_size=8, data_dir=str(data_dir)
        )
        a._tokenizer = FramePoolTokenizer(weights)
        return a

    first = adapter()
    assert len(first.token_data(batch_size=2, device="cpu", workers=0)) == 1 and first.skipped_files == 1
    (data_dir / "run").mkdir()
    write_mp4(rng.integers(0, 255, (4, 16, 16, 3), dtype=np.uint8), data_dir / "run" / "b.mp4")
    second = adapter()
    data = second.token_data(batch_size=2, device="cpu", workers=0)
    assert second.class_names == ["jump", "run"] and data.labels.tolist() == [0, 1]
    assert data.mean.shape == (2, 4 * 2 * 2, 4)


@pytest.mark.slow
def test_the_trainer_steps_on_cached_tokens(tmp_path, make_tiny_model):
    from djepa.engine.trainer import TrainConfig, Trainer

    data_dir = tmp_path / "data"
    write_class(data_dir, "a", 4)
    write_class(data_dir, "b", 4)
    data = adapter_for(tmp_path, data_dir).token_data(batch_size=4, device="cpu", workers=0)
    train_config = TrainConfig(
        steps=2, batch_size=4, lr=1e-3, warmup_steps=1, precision="fp32", log_every=1, checkpoint_every=2
    )
    trainer = Trainer(
        make_tiny_model((2, 2), token_dim=12, num_classes=2), data, train_config, tmp_path / "run", torch.device("cpu")
    )
    result = trainer.fit()
    assert trainer.step == 2 and result


@pytest.mark.slow
def test_two_gloo_ranks_each_cache_their_share(tmp_path):
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    data_dir = tmp_path / "data"
    write_class(data_dir, "a", 5)
    write_class(data_dir, "b", 4)
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "weights.bin").write_bytes(b"v1")
    worker = Path(__file__).with_name("cache_worker.py")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={free_port()}"]
    cmd += [str(worker), str(data_dir), str(tmp_path / "cache"), str(tmp_path / "r")]
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"r.rank{r}").read_text()) for r in range(2)]
    assert sorted(r["encoded"] for r in ranks) == [4, 5]  # disjoint shares, every item once
    assert ranks[0]["items"] == ranks[1]["items"] == 9
    assert ranks[0]["labels"] == ranks[1]["labels"] == [0] * 5 + [1] * 4
    assert ranks[0]["sum"] == ranks[1]["sum"]
