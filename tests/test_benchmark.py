import json

from PIL import Image

from djepa.benchmarks import run as bench


def test_quick_benchmark_writes_results_plots_and_summary(tmp_path):
    home, out = tmp_path / "home", tmp_path / "bench"
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
