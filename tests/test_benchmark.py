import json

import pytest
from PIL import Image

from djepa.benchmarks.experiments import run as bench
from djepa.errors import UsageError

pytestmark = pytest.mark.slow  # the benchmark end to end: a tokenizer and three variants train


@pytest.fixture(scope="module")
def bench_home(tmp_path_factory):
    """One home for the benchmark runs here: the tokenizer, latent cache and classifier are made once."""
    return tmp_path_factory.mktemp("bench-home")


def test_quick_benchmark_writes_results_plots_and_summary(tmp_path, bench_home):
    home, out = bench_home, tmp_path / "bench"
    argv = [
        f"home={home}",
        f"out={out}",
        "benchmark.quick=true",
        "benchmark.quick_steps=4",
        "tokenizer.block_out_channels=[8,8,8]",
        "tokenizer.norm_num_groups=4",
        "tokenizer.steps=10",
        "train.batch_size=16",
    ]
    results = bench.run(bench.compose_config(argv), argv)
    saved = json.loads((out / "results.json").read_text())
    assert set(saved["variants"]) == {"djepa", "mar", "flow"}
    for name, v in saved["variants"].items():
        for key in (
            "fd",
            "accuracy",
            "inception_score",
            "train_step_ms",
            "tokens_per_s",
            "sample_ms_per_item",
            "peak_mem_mb",
            "params",
            "steps",
            "flops_per_step",
        ):
            assert key in v, (name, key)
        assert v["steps"] == 4 and [p["step"] for p in v["curve"]] == [2, 4]
        assert 0.0 <= v["accuracy"] <= 1.0 and v["peak_mem_mb"] > 0 and v["flops_per_step"] > 0
    # MAR mode has no JEPA projector and skips the EMA target pass: fewer parameters and FLOPs
    assert saved["variants"]["mar"]["params"] < saved["variants"]["djepa"]["params"]
    assert saved["variants"]["mar"]["flops_per_step"] < saved["variants"]["djepa"]["flops_per_step"]
    assert saved["git_commit"] is None or len(saved["git_commit"]) == 40
    assert "not comparable" in (out / "summary.md").read_text()
    assert Image.open(out / "quality_curves.png").size[0] > 100
    assert (out / "speed_memory.png").is_file()
    assert results["modality"] == "image"


def test_benchmark_with_seeds_gives_standard_errors_and_steps_to_reach(tmp_path, bench_home, monkeypatch):
    from djepa.cli import train

    # The quick test above runs each variant's training in its own process as the benchmark does; here the four
    # runs train in this process to spare four interpreter starts.
    monkeypatch.setattr(bench, "train_variant", train.main)
    home, out = bench_home, tmp_path / "bench"
    argv = [
        f"home={home}",
        f"out={out}",
        "benchmark.quick=true",
        "benchmark.quick_steps=4",
        "benchmark.seeds=2",
        "~benchmark.variants.flow",
        "tokenizer.block_out_channels=[8,8,8]",
        "tokenizer.norm_num_groups=4",
        "tokenizer.steps=10",
        "train.batch_size=16",
    ]
    results = bench.run(bench.compose_config(argv), argv)
    assert results["seeds"] == [0, 1]
    for name in ("djepa", "mar"):
        v = results["variants"][name]
        assert v["num_seeds"] == 2 and len(v["per_seed"]) == 2
        assert (out / name / "seed1" / "metrics.jsonl").is_file()
        assert "fd_se" in v and "fd_se" in v["curve"][-1]
        assert v["context_use_ratio"] > 0
        assert "steps_to_reference_fd" in v
    # The two seeds are different runs.
    fds = [s["fd"] for s in results["variants"]["djepa"]["per_seed"]]
    assert fds[0] != fds[1]
    assert results["variants"]["mar"]["steps_to_reference_fd"] is not None  # MAR reaches its own final FD
    assert "±" in (out / "summary.md").read_text()


@pytest.mark.slow
def test_speed_benchmark_times_both_modes_and_writes_its_ratios(tmp_path):
    from djepa.benchmarks.experiments import speed

    results = speed.run(
        ["model=tiny", "steps=1", "warmup=0", "dpm_steps=5", "fast_reveal_steps=2,1", f"out={tmp_path}"]
    )
    saved = json.loads((tmp_path / "speed.json").read_text())
    assert saved["djepa_over_mar_mode"] == pytest.approx(results["djepa_step_ms"] / results["mar_mode_step_ms"])
    assert results["teacher_pass_ms"] > 0 and results["sample_ms_per_item_dpm_solver_5"] > 0
    # Fewer reveal steps, fewer trunk passes: the fast setting is the quickest.
    assert results["sample_ms_per_item_reveal_2_dpm_solver_5"] < results["sample_ms_per_item_dpm_solver_5"]
    assert "sample_ms_per_item_reveal_1_dpm_solver_5" in saved
    with pytest.raises(UsageError, match="no models/mar.py"):
        speed.run(["model=tiny", "steps=1", "warmup=0", f"mar_repo={tmp_path}"])
