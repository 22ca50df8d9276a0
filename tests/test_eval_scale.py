"""Evaluation that compares with published numbers: `sample format=npz` split over ranks and resumed after a kill,
reference statistics cached per folder and weights, precision/recall beside FID, and `train.eval_every`."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import free_port

from djepa.cli import sample
from djepa.errors import UsageError
from djepa.pipeline import Pipeline

NPZ = ["format=npz", "num_samples=5", "shard_size=2", "sample.num_steps=2", "sample.precision=fp32"]


def npz_args(image_run, out, seed=3):
    common, run_dir = image_run
    return [*common, f"run_dir={run_dir}", f"out={out}", "device=cpu", f"seed={seed}", *NPZ]


def sample_npz(argv):
    return sample.run(sample.compose_config(argv), argv)[0]


def read_npz(path):
    with np.load(path) as f:
        return f["arr_0"], f["arr_1"]


@pytest.mark.slow
def test_two_gloo_ranks_write_the_npz_one_rank_writes(tmp_path):
    from npz_worker import npz_config, npz_pipeline

    from djepa.cli.sample_npz import sample_npz as draw

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each torchrun rank runs, so the draws compare bit for bit
    try:
        one = draw(npz_pipeline(tmp_path), npz_config(tmp_path / "one"), {})
    finally:
        torch.set_num_threads(threads)
    assert one.name == "samples_7x16x16x3.npz" and not (tmp_path / "one" / "shards").exists()
    images, labels = read_npz(one)
    assert images.dtype == np.uint8 and images.shape == (7, 16, 16, 3)  # grey images as three equal channels
    assert np.array_equal(images[..., 0], images[..., 2]) and images.std() > 0
    assert labels.tolist() == [0, 1, 2, 0, 1, 2, 0]  # i % num_classes
    assert len({images[i].tobytes() for i in range(7)}) == 7  # no sample twice
    worker = Path(__file__).with_name("npz_worker.py")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={free_port()}"]
    cmd += [str(worker), str(tmp_path), str(tmp_path / "two")]
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    two = tmp_path / "two" / one.name  # shards 0, 2 from rank 0 and 1, 3 from rank 1, gathered in order
    assert [a.tobytes() for a in read_npz(two)] == [a.tobytes() for a in (images, labels)]
    assert json.loads(two.with_suffix(".json").read_text()) == json.loads(one.with_suffix(".json").read_text())


@pytest.mark.slow
def test_a_killed_npz_run_draws_only_its_missing_shards(image_run, tmp_path, monkeypatch):
    straight = sample_npz(npz_args(image_run, tmp_path / "straight"))
    calls = []
    draw = Pipeline.__call__

    def killed_after_one(self, labels, *args, **kwargs):
        calls.append(list(labels))
        if len(calls) == 2:
            raise KeyboardInterrupt  # the kill, while the second shard is drawn
        return draw(self, labels, *args, **kwargs)

    monkeypatch.setattr(Pipeline, "__call__", killed_after_one)
    with pytest.raises(KeyboardInterrupt):
        sample_npz(npz_args(image_run, tmp_path / "resumed"))
    shards = tmp_path / "resumed" / "shards"
    assert sorted(p.name for p in shards.glob("*.npy")) == ["shard_000000.npy"]
    (shards / "shard_000001.npy").write_bytes(b"torn")  # a torn shard is drawn again, never read
    calls.clear()
    monkeypatch.setattr(Pipeline, "__call__", lambda self, labels, *a, **k: calls.append(list(labels)) or draw(
        self, labels, *a, **k))  # fmt: skip
    resumed = sample_npz(npz_args(image_run, tmp_path / "resumed"))
    assert calls == [[2, 3], [4]]  # shards 1 and 2 only; shard 0 was on disk
    assert [a.tobytes() for a in read_npz(resumed)] == [a.tobytes() for a in read_npz(straight)]
    calls.clear()
    assert sample_npz(npz_args(image_run, tmp_path / "resumed")) == resumed and calls == []  # complete: nothing
    with pytest.raises(UsageError, match="holds samples_5x32x32x3.json of another sampling \\(differs in seed\\)"):
        sample_npz(npz_args(image_run, tmp_path / "resumed", seed=4))
    assert [a.tobytes() for a in read_npz(resumed)] == [a.tobytes() for a in read_npz(straight)]  # nothing lost


# ---------------------------------------------------------------------------- precision/recall, reference stats


def test_precision_recall_separate_quality_from_coverage():
    from djepa.benchmarks.metrics import precision_recall

    g = torch.Generator().manual_seed(0)
    real = torch.randn(300, 8, generator=g)
    assert precision_recall(real, real.clone()) == (1.0, 1.0)
    assert precision_recall(real, real + 100) == (0.0, 0.0)  # disjoint sets
    precision, recall = precision_recall(real, torch.randn(300, 8, generator=g))  # the same law, other draws
    assert precision > 0.7 and recall > 0.7
    precision, recall = precision_recall(real, 0.2 * torch.randn(300, 8, generator=g))  # collapsed to the centre
    assert precision > 0.95 and recall < 0.3
    with pytest.raises(ValueError, match="more than 3 items"):
        precision_recall(real, real[:3])


def write_images(folder, count, seed=0):
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(count):
        Image.fromarray(rng.integers(0, 256, (12, 10, 3), dtype=np.uint8)).save(folder / f"{i}.png")


@pytest.fixture
def channel_means(monkeypatch):
    """A stand-in for the Inception network (each image's three channel means), counting the loads."""
    from djepa.benchmarks import fid_stats, standard

    loads = []

    def network(path, device):
        loads.append(path)
        return lambda x: x.float().mean(dim=(2, 3))

    monkeypatch.setattr(fid_stats, "inception_network", network)
    monkeypatch.setattr(standard, "inception_network", network)
    return loads


def test_fid_stats_are_computed_once_per_folder_and_weights_and_read_by_evaluate(tmp_path, channel_means):
    from djepa.benchmarks import evaluate, fid_stats
    from djepa.cli.config import compose_config
    from djepa.modalities.image import read_image

    folder, weights, home = tmp_path / "data", tmp_path / "inception.pth", tmp_path / "home"
    write_images(folder, 6)
    weights.write_bytes(b"v1")
    argv = [f"data_dir={folder}", f"standard_weights={weights}", f"home={home}", "image_size=8", "workers=0"]
    cfg = compose_config([*argv, "device=cpu", "pr_items=6"], "fid_stats")

    def run(reference=None):
        cfg.reference = None if reference is None else str(reference)
        return fid_stats.run(cfg)

    first = run()["data_dir"]
    assert not first["cached"] and first["items"] == 6 and len(channel_means) == 1
    images = torch.stack([read_image(folder / f"{i}.png", 8, 3) for i in range(6)])
    features = ((images + 1) * 127.5).round().mean(dim=(2, 3)).double()
    stats, meta = fid_stats.load_stats(Path(first["stats"]))
    assert torch.allclose(stats.mean, features.mean(0)) and torch.allclose(stats.cov, features.T.cov())
    assert meta["items"] == 6 and meta["image_size"] == 8
    assert run()["data_dir"] == first | {"cached": True} and len(channel_means) == 1  # read, not computed

    # evaluate reads them in place of its real subset (which it never loads), and adds precision/recall
    run_cfg = compose_config([f"modality.adapter.data_dir={folder}", "modality.adapter.image_size=8", f"home={home}"])
    run_cfg.standard_weights = str(weights)
    metric = evaluate.standard_metric(run_cfg, evaluate.RealMedia(adapter=None))
    assert metric.reference_path == Path(first["stats"])
    scores = metric(images)
    assert scores["fid"] == pytest.approx(0, abs=1e-6) and (scores["precision"], scores["recall"]) == (1.0, 1.0)

    # the same images as an .npz (what `sample format=npz` writes) against the folder: FID 0, all inside
    uint8 = ((images + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    np.savez(tmp_path / "samples.npz", uint8, np.arange(6))
    both = run(tmp_path / "samples.npz")
    assert both["data_dir"]["cached"] and not both["reference"]["cached"] and both["reference"]["items"] == 6
    assert both["fid"] == pytest.approx(0, abs=1e-6) and both["precision"] == both["recall"] == 1.0

    weights.write_bytes(b"v2")  # other weights: other statistics
    assert not run()["data_dir"]["cached"]
    write_images(folder, 7, seed=1)  # the folder changed (a file added, the others rewritten)
    changed = run()["data_dir"]
    assert not changed["cached"] and changed["items"] == 7 and changed["stats"] != first["stats"]
    for bad, message in [(tmp_path / "none", "does not exist"), (weights, "expected an image folder or an .npz")]:
        with pytest.raises(UsageError, match=message):
            run(bad)
    assert all(f"  {key}=" in fid_stats.usage() for key in ("data_dir", "standard_weights", "reference", "pr_items"))


# ---------------------------------------------------------------------------- evaluation during training


class PoolFeatures:
    def predict(self, x):
        features = torch.nn.functional.adaptive_avg_pool2d(x.float(), 4).flatten(1)
        return features[:, :10], features


@pytest.mark.slow
def test_eval_every_writes_a_quality_curve_to_metrics_and_tensorboard(image_run, tmp_path, monkeypatch):
    pytest.importorskip("tensorboard")
    from conftest import IMAGE_RUN
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from djepa.benchmarks import evaluate
    from djepa.cli import train

    common, default_run = image_run
    records = [json.loads(line) for line in (default_run / "metrics.jsonl").read_text().splitlines()]
    assert not any(key.startswith("eval_") for r in records for key in r)  # off by default
    # 4x4 mean pooling stands in for the benchmark classifier's features (training it takes 400 steps).
    monkeypatch.setattr(evaluate, "load_classifier", lambda cfg, view, steps=400: (PoolFeatures(), 0.0))
    run_dir = tmp_path / "run"
    kept = [o for o in IMAGE_RUN if o.split("=")[0] not in ("train.steps", "train.checkpoint_every")]
    extra = ["train.steps=4", "train.checkpoint_every=4", "train.log_every=2", "train.tensorboard=true"]
    extra += ["train.eval_every=2", "train.eval_samples=4"]
    train.run(train.compose_config(common + [f"run_dir={run_dir}", *kept, *extra]))
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in records if "eval_fd" in r]
    assert [r["step"] for r in evals] == [2, 4] and [r["step"] for r in records if "loss" in r] == [2, 4]
    for r in evals:
        assert r["eval_samples"] == 4 and 0 <= r["eval_accuracy"] <= 1 and r["eval_fd"] > 0 and r["eval_seconds"] > 0
    assert evals[0]["eval_fd"] != evals[1]["eval_fd"]  # the same draws, other weights
    acc = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0})
    acc.Reload()
    assert [(e.step, e.value) for e in acc.Scalars("eval/eval_fd")] == [
        (r["step"], pytest.approx(r["eval_fd"], rel=1e-6)) for r in evals
    ]
