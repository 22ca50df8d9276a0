"""The GPU check (benchmarks/experiments/gpu_check.py) without a GPU: it skips cleanly, and its parts that need no
CUDA (attention agreement, a timed Trainer step, the FLOP count against the analytic one, sampling, a gloo DDP step)
run on the CPU at the tiny model's shape."""

import json

import pytest
import torch

from djepa.benchmarks.experiments import gpu_check
from djepa.nn import attention as attn


def tiny_trainer(tmp_path):
    """djepa's tiny model (16 tokens of dim 4, 3 classes) in fp32 on the CPU, batch 4."""
    return gpu_check.build_trainer(torch.device("cpu"), 4, tmp_path / "run", "tiny", (4, 4), 4, 3, "fp32")


def test_without_cuda_it_skips_with_exit_0_and_says_so_in_the_json(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    gpu_check.main([f"out={tmp_path / 'out'}"])  # returns: exit status 0
    out = capsys.readouterr().out.strip()
    assert len(out.splitlines()) == 1 and "skipped" in out and "no CUDA" in out
    assert json.loads((tmp_path / "out" / "gpu_check.json").read_text()) == {"skipped": "no CUDA device"}


@pytest.mark.parametrize("arg", ["batch=0", "steps=x", "compile=yes", "bogus=1"])
def test_a_bad_argument_is_one_line_naming_it_and_nothing_is_written(tmp_path, capsys, arg):
    with pytest.raises(SystemExit) as exit_info:
        gpu_check.main([f"out={tmp_path / 'out'}", arg])
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and len(err.splitlines()) == 1 and arg.split("=")[0] in err, err
    assert not (tmp_path / "out").exists()


def test_peak_tflops_by_gpu_name_the_specific_name_first():
    assert gpu_check.peak_tflops("NVIDIA H100 PCIe") == 756.0
    assert gpu_check.peak_tflops("NVIDIA H100 80GB HBM3") == 989.0
    assert gpu_check.peak_tflops("NVIDIA A100-SXM4-80GB") == 312.0
    assert gpu_check.peak_tflops("Some Unknown Accelerator") is None


def test_sdpa_and_math_agree_on_cpu_and_a_missing_backend_is_reported_not_raised():
    shape = (2, 2, 10, 8)
    found = gpu_check.attention_agreement(torch.device("cpu"), torch.float32, ["math", "sdpa", "xformers"], shape, 1)
    for backend in ("math", "sdpa"):
        assert found[backend]["ok"], found
        assert found[backend]["out_rel_error"] < 1e-5 and found[backend]["grad_rel_error"] < 1e-5
    assert "error" in found["xformers"]  # xformers needs CUDA tensors


def test_a_backend_that_disagrees_is_flagged(monkeypatch):
    sdpa = attn.F.scaled_dot_product_attention
    monkeypatch.setattr(attn.F, "scaled_dot_product_attention", lambda q, k, v, **kw: 1.1 * sdpa(q, k, v, **kw))
    found = gpu_check.attention_agreement(torch.device("cpu"), torch.float32, ["sdpa"], (1, 2, 6, 4), 0)
    assert not found["sdpa"]["ok"] and found["sdpa"]["out_rel_error"] > 0.05


def test_a_timed_trainer_step_and_its_counted_flops_match_the_analytic_count(tmp_path):
    trainer = tiny_trainer(tmp_path)
    timed = gpu_check.time_training(trainer, "sdpa", steps=2, warmup=1)
    assert timed["images_per_s"] > 0 and timed["finite_steps"] == 2 and timed["loss"] > 0
    counted = gpu_check.count_flops(trainer, "math", start=1, steps=2)
    visible = gpu_check.visible_counts(trainer, 1, 2)
    analytic = sum(gpu_check.analytic_flops(trainer.model, v)["total"] for v in visible) / 2
    assert counted > 0
    assert counted == pytest.approx(analytic, rel=1e-3)  # every matmul of the step accounted for


def test_the_analytic_count_has_its_parts_and_grows_with_the_masked_share(tmp_path):
    trainer = tiny_trainer(tmp_path)
    few_hidden, many_hidden = (gpu_check.analytic_flops(trainer.model, v) for v in (12, 2))
    assert set(few_hidden) == {"encoder", "predictor", "head", "projector", "teacher", "total"}
    assert many_hidden["head"] > few_hidden["head"] and many_hidden["encoder"] < few_hidden["encoder"]
    assert gpu_check.analytic_flops(trainer.model, 0)["teacher"] == 0  # no context: no teacher pass


def test_sampling_a_small_batch_on_cpu(tmp_path):
    trainer = tiny_trainer(tmp_path)
    trainer.ema.head.set_sampling_steps(5)
    drawn = gpu_check.sample_batch(trainer.ema, 3, num_steps=2)
    assert drawn["finite"] and drawn["shape"] == [3, 16, 4] and drawn["seconds"] > 0


def test_the_single_gpu_parts_fit_together_on_cpu(tmp_path, monkeypatch):
    """run_on_gpu's sequence (attention, timed steps, FLOPs, MFU, sampling) at the tiny shape, the CUDA-only
    host-sync check stubbed: every part reports figures, none an error, and the JSON holds them."""

    trainer = tiny_trainer(tmp_path)
    trainer.ema.head.set_sampling_steps(2)

    agreement = gpu_check.attention_agreement
    monkeypatch.setattr(gpu_check, "build_trainer", lambda device, batch, run_dir: trainer)
    monkeypatch.setattr(
        gpu_check, "attention_agreement", lambda d, dtype, b: agreement(d, torch.float32, b, (1, 2, 6, 4), 0)
    )
    monkeypatch.setattr(gpu_check, "host_sync_check", lambda trainer, labels: "not checked")
    report = gpu_check.Report(tmp_path / "gpu_check.json", {"batch": 4, "peak_tflops": 1.0})
    args = {"steps": 1, "out": tmp_path, "compile": False}
    gpu_check.single_gpu_parts(report, torch.device("cpu"), args, ["sdpa"])
    found = json.loads((tmp_path / "gpu_check.json").read_text())
    parts = ("attention", "train_sdpa", "flops", "mfu", "host_sync", "sampling")
    assert all(key in found and "error" not in found[key] for key in parts), found
    assert found["mfu"]["sdpa"] > 0 and found["flops"]["counted_per_image"] > 0 and found["sampling"]["finite"]


@pytest.mark.slow
def test_a_two_rank_ddp_step_ends_with_the_same_weights_on_both_ranks():
    spec = {"batch": 4, "model": "tiny", "grid": [4, 4], "dim": 4, "classes": 3, "precision": "fp32", "steps": 2}
    found = gpu_check.ddp_check("cpu", spec)
    assert found["weights_agree"] and [r["finite_steps"] for r in found["per_rank"]] == [2, 2]
