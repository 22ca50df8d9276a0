"""The benchmark's statistics: means with standard errors over seeds, steps to reach an FD, the context probe."""

import math

import pytest
import torch

from djepa.benchmarks.aggregate import aggregate_seeds, mean_se, steps_to_reach
from djepa.benchmarks.experiments.probes import context_use, same_class_derangement


def seed_result(fds, acc=0.5, **extra):
    curve = [{"step": 100 * (i + 1), "fd": fd, "accuracy": acc, "inception_score": 2.0} for i, fd in enumerate(fds)]
    return {
        "fd": fds[-1],
        "accuracy": acc,
        "inception_score": 2.0,
        "params": 10,
        "steps": 100 * len(fds),
        "curve": curve,
        "train_step_ms": 5.0,
        **extra,
    }


def test_mean_and_standard_error():
    assert mean_se([2.0]) == (2.0, 0.0)
    mean, se = mean_se([1.0, 2.0, 3.0])
    assert mean == 2.0 and se == pytest.approx(1.0 / math.sqrt(3))


def test_aggregate_seeds_averages_curves_and_keeps_every_seed():
    out = aggregate_seeds([seed_result([4.0, 2.0]), seed_result([6.0, 4.0])])
    assert out["fd"] == 3.0 and out["fd_se"] == pytest.approx(1.0)
    assert [p["fd"] for p in out["curve"]] == [5.0, 3.0]
    assert out["curve"][0]["fd_se"] == pytest.approx(1.0)
    assert out["num_seeds"] == 2 and len(out["per_seed"]) == 2 and out["params"] == 10
    with pytest.raises(ValueError, match="checkpoint steps"):
        aggregate_seeds([seed_result([4.0, 2.0]), seed_result([4.0])])


def test_steps_to_reach_interpolates_between_checkpoints():
    curve = seed_result([8.0, 4.0, 2.0])["curve"]  # steps 100, 200, 300
    assert steps_to_reach(curve, 8.0) == 100.0
    assert steps_to_reach(curve, 3.0) == pytest.approx(250.0)
    assert steps_to_reach(curve, 1.0) is None


def test_same_class_derangement_keeps_the_class_and_moves_every_row():
    labels = torch.tensor([0, 1, 0, 2, 1, 0, 2])
    perm = same_class_derangement(labels)
    assert torch.equal(labels[perm], labels)
    assert (perm != torch.arange(len(labels))).all()
    assert sorted(perm.tolist()) == list(range(len(labels)))


def test_context_probe_is_deterministic_and_sees_context(make_tiny_model):
    model = make_tiny_model((4, 4))
    with torch.no_grad():  # a head that reads its conditioning: the zero-initialised output layers get weights
        for p in model.head.parameters():
            if p.abs().sum() == 0:
                p.normal_(std=0.5)
    tokens, labels = torch.randn(24, 16, 4), torch.arange(24) % 3
    first, second = context_use(model, tokens, labels), context_use(model, tokens, labels)
    assert first == second
    assert first["denoise_loss_true_context"] > 0
    assert first["denoise_loss_true_context"] != first["denoise_loss_shuffled_context"]
    assert first["context_use_ratio"] == pytest.approx(
        first["denoise_loss_shuffled_context"] / first["denoise_loss_true_context"]
    )


def test_combine_merges_benchmark_outputs_and_recomputes_steps_to_reach(tmp_path):
    import json

    from djepa.benchmarks.experiments.combine import combine
    from djepa.errors import UsageError

    def write(folder, variants):
        folder.mkdir()
        data = {"modality": "image", "variants": variants, "classifier_heldout_accuracy": 0.99, "note": "n"}
        (folder / "results.json").write_text(json.dumps(data))
        return folder

    a = write(tmp_path / "a", {"mar": aggregate_seeds([seed_result([8.0, 4.0])])})
    b = write(tmp_path / "b", {"djepa": aggregate_seeds([seed_result([6.0, 2.0])])})
    merged = combine([a, b])
    assert set(merged["variants"]) == {"mar", "djepa"}
    assert merged["steps_to_reach"]["fd"] == 4.0
    assert merged["variants"]["djepa"]["steps_to_reference_fd"] == pytest.approx(150.0)
    with pytest.raises(UsageError, match="more than one source"):
        combine([a, a])


def test_combine_pools_seeds_of_one_variant_run_in_separate_processes(tmp_path):
    import json

    from djepa.benchmarks.experiments.combine import combine

    def write(folder, seeds, variants):
        folder.mkdir()
        data = {"modality": "image", "seeds": seeds, "variants": variants, "note": "n"}
        (folder / "results.json").write_text(json.dumps(data))
        return folder

    one = write(tmp_path / "s0", [0], {"djepa": aggregate_seeds([seed_result([6.0, 2.0])])})
    pair = aggregate_seeds([seed_result([6.0, 4.0]), seed_result([9.0, 3.0])])
    two = write(tmp_path / "s12", [1, 2], {"djepa": pair})
    mar = write(tmp_path / "m1", [1], {"mar": aggregate_seeds([seed_result([8.0, 4.0])])})
    merged = combine([two, mar, one])
    djepa = merged["variants"]["djepa"]
    assert djepa["num_seeds"] == 3 and djepa["seeds"] == [0, 1, 2] and merged["seeds"] == [0, 1, 2]
    assert djepa["fd"] == pytest.approx(3.0) and djepa["fd_se"] == pytest.approx(mean_se([2.0, 4.0, 3.0])[1])
    assert [p["fd"] for p in djepa["curve"]] == pytest.approx([7.0, 3.0])
    assert [r["seed"] for r in djepa["per_seed"]] == [0, 1, 2]
    assert merged["variants"]["mar"]["seeds"] == [1]
    assert djepa["steps_to_reference_fd"] == pytest.approx(175.0)
    # a combined output, whose variants have different seeds, is itself a source
    (tmp_path / "merged").mkdir()
    (tmp_path / "merged" / "results.json").write_text(json.dumps(merged))
    extra = write(tmp_path / "m0", [0], {"mar": aggregate_seeds([seed_result([7.0, 5.0])])})
    again = combine([tmp_path / "merged", extra])
    assert again["variants"]["mar"]["seeds"] == [0, 1] and again["variants"]["djepa"]["seeds"] == [0, 1, 2]
    assert again["variants"]["djepa"]["fd"] == pytest.approx(3.0)


def test_summary_names_each_variants_seeds_when_they_differ():
    from djepa.benchmarks.report import seeds_line

    same = {"seeds": [0, 1], "variants": {"djepa": {"seeds": [0, 1]}, "mar": {"seeds": [0, 1]}}}
    assert seeds_line(same) == "2"
    pooled = {"seeds": [0, 1, 2], "variants": {"djepa": {"seeds": [0, 1, 2]}, "const": {"seeds": [0, 1]}}}
    assert seeds_line(pooled) == "djepa 3 (0, 1, 2), const 2 (0, 1)"
    assert seeds_line({"variants": {"djepa": {}}}) == "1"  # a single-seed benchmark lists no seeds
