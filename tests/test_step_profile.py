"""The step profile driver splits a training step and a sample into the code's labelled parts."""

import pytest

from djepa.benchmarks.experiments import step_profile
from djepa.cli.config import compose_config
from djepa.errors import UsageError


def test_profile_splits_a_step_and_a_sample_by_part(tmp_path):
    results = step_profile.run(
        [
            "steps=1", "warmup=1", "samples=2", "variants=djepa,mar,rows50", f"out={tmp_path}",
            "model=tiny", "sample.num_steps=2", "loss.head.sampling_steps=3",
        ]
    )  # fmt: skip
    runs = results["variants"]
    for name in ("djepa", "mar", "rows50"):
        parts = runs[name]["parts_ms"]
        assert parts["encoder"] > 0 and parts["predictor"] > 0 and parts["head"] > 0 and parts["backward"] > 0
        assert sum(parts.values()) == pytest.approx(runs[name]["profiled_step_ms"], rel=0.01)
        sampling = runs[name]["sampling"]["parts_ms"]
        assert sampling["sample_trunk"] > 0 and sampling["sample_head"] > 0
    assert runs["mar"]["parts_ms"]["teacher"] == 0 and runs["mar"]["parts_ms"]["jepa_projector"] == 0
    assert runs["djepa"]["parts_ms"]["teacher"] > 0 and runs["rows50"]["parts_ms"]["teacher"] > 0
    table = (tmp_path / "profile.md").read_text()
    assert "| teacher |" in table and "rows50" in table


def test_mar_architecture_is_a_valid_config():
    cfg = compose_config(step_profile.variant_overrides("mar_arch"))
    assert cfg.loss.jepa_weight == 0 and cfg.model.pos_embed == "learned" and cfg.model.diffusion_pos_embed
    assert cfg.train.no_decay == "mar"


def test_every_k_times_both_kinds_of_step(tmp_path):
    results = step_profile.run(
        [
            "steps=2", "warmup=0", "samples=2", "variants=every2", "model=tiny", "sample.num_steps=2",
            "loss.head.sampling_steps=3",
        ]
    )  # fmt: skip
    assert step_profile.variant_overrides("every2") == ["loss.jepa_every=2"]
    assert results["variants"]["every2"]["step_ms"] > 0


def test_an_unknown_variant_is_named():
    with pytest.raises(UsageError, match="rows0"):
        step_profile.run(["variants=djepa,rows0"])
