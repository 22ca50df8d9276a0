"""The speed driver times the video default's shape with its flow head, and refuses a sampler it does not know."""

import pytest

from djepa.benchmarks.experiments import speed
from djepa.errors import UsageError


def test_video_shape_times_training_and_the_flow_head_rows():
    results = speed.run(["shape=video", "model=tiny", "steps=1", "warmup=0", "timed=2:heun:2,2:euler:1"])
    assert results["djepa_step_ms"] > 0 and results["mar_mode_step_ms"] > 0
    assert results["sample_ms_per_item_reveal_2_heun_2"] > 0 and results["sample_ms_per_item_reveal_2_euler_1"] > 0
    assert not any(key.startswith("sample_ms_per_item_ddpm") for key in results)  # a flow head has no DDPM row
    assert speed.SHAPES["video"].grid == (8, 2, 2) and speed.SHAPES["video"].token_dim == 128


def test_an_unknown_timed_sampler_is_named():
    with pytest.raises(UsageError, match="heun"):
        speed.timed_settings("8:plms:10")
