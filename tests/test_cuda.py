"""What needs a GPU, in one file: `pytest tests/test_cuda.py` wherever CUDA is present; skipped elsewhere.

docs/results/gpu.md says where and when these last ran.
"""

import math

import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F
from PIL import Image

from djepa.engine import distributed
from djepa.engine.data import TokenData
from djepa.engine.trainer import TrainConfig, Trainer
from djepa.modalities.image import ImageAdapter
from djepa.nn import attention as attn
from djepa.tokenizers.base import LatentTokenizer

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@pytest.mark.slow
def test_two_bf16_steps_with_xformers_attention(tmp_path, make_tiny_model):
    if attn.xformers_problem():
        pytest.skip(f"xformers does not run here: {attn.xformers_problem()}")
    attn.set_attention_backend("xformers")
    try:
        device = torch.device("cuda", torch.cuda.current_device())
        labels = torch.arange(32) % 3
        data = TokenData(torch.randn(32, 16, 4), torch.full((32, 16, 4), 0.1), labels)
        train_config = TrainConfig(steps=2, batch_size=8, lr=1e-3, warmup_steps=1, precision="bf16", log_every=1)
        trainer = Trainer(make_tiny_model((4, 4)).to(device), data, train_config, tmp_path / "run", device)
        trainer.fit()
        assert trainer.step == 2
        assert all(p.dtype == torch.float32 for p in trainer.ema.parameters())  # EMA and optimizer stay fp32
    finally:
        attn.set_attention_backend("auto")


@pytest.mark.slow
def test_a_training_step_never_syncs_with_the_host(tmp_path, make_tiny_model):
    """No step waits for the GPU: the loss terms, gradient norm and non-finite skip stay on the device until the
    log line reads them. The sync debug mode raises on any synchronising call."""
    device = torch.device("cuda", torch.cuda.current_device())
    labels = torch.arange(32) % 3
    data = TokenData(torch.randn(32, 16, 4), torch.full((32, 16, 4), 0.1), labels)
    train_config = TrainConfig(steps=4, batch_size=8, lr=1e-3, warmup_steps=1, precision="bf16", grad_probe_every=0)
    trainer = Trainer(make_tiny_model((4, 4)).to(device), data, train_config, tmp_path / "run", device)
    trainer.train_step()  # first-call set-up
    trainer.step += 1
    prompt = labels[:4].to(device)  # a pageable host-to-device copy synchronises, so it is made before the check
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        record = trainer.train_step()
        # Sampling too: the reveal schedule's counts are known on the host.
        tokens = trainer.ema.sample(prompt, num_steps=4, guidance=2.0)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert math.isfinite(trainer.settle([record | {"step": 2}])[0]["loss"])
    assert tokens.shape == (4, 16, 4) and bool(tokens.isfinite().all())


@pytest.fixture
def nccl_group(tmp_path):
    torch.cuda.set_device(0)
    store = dist.FileStore(str(tmp_path / "store"), 1)
    dist.init_process_group("nccl", store=store, rank=0, world_size=1, device_id=torch.device("cuda", 0))
    yield
    dist.destroy_process_group()


def test_nccl_reduces_cuda_tensors_and_refuses_cpu_ones(nccl_group):
    assert distributed.backend_device() == torch.device("cuda", 0)
    t = torch.ones(3, device="cuda")
    assert distributed.all_reduce(t).tolist() == [1.0, 1.0, 1.0]
    with pytest.raises(distributed.WrongCollectiveDevice):
        distributed.all_reduce(torch.ones(3))


class PoolTokenizer(LatentTokenizer):
    def __init__(self, path):
        self.path, self.latent_channels, self.downsample, self.devices = path, 3, (2, 2), set()

    def encode_moments(self, x):
        self.devices.add(x.device.type)
        mean = F.avg_pool2d(x.float(), 2)
        return mean, torch.full_like(mean, 0.1)

    def decode(self, z):
        return F.interpolate(z, scale_factor=2)


def test_latents_are_cached_on_the_gpu(tmp_path):
    for c in ("a", "b"):
        (tmp_path / "data" / c).mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (10, 10), (i * 50, 0, 0)).save(tmp_path / "data" / c / f"{i}.png")
    weights = tmp_path / "w.bin"
    weights.write_bytes(b"x")
    adapter = ImageAdapter(
        {"path": str(weights)},
        [2, 2],
        str(tmp_path / "cache"),
        image_size=8,
        channels=3,
        data_dir=str(tmp_path / "data"),
    )
    adapter._tokenizer = PoolTokenizer(weights)
    data = adapter.token_data(batch_size=4, workers=1)  # default device: this process's GPU
    assert adapter.tokenizer.devices == {"cuda"} and len(data) == 6
