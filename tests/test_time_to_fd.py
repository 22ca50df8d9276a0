"""The time-to-FD table turns a benchmark's steps into seconds with a step profile's times."""

import json

import pytest

from djepa.benchmarks.experiments import time_to_fd
from djepa.errors import UsageError


def curve(*fds: float) -> list[dict[str, float]]:
    return [{"step": 200 * (i + 1), "fd": fd} for i, fd in enumerate(fds)]


def variant(*seeds: list[dict[str, float]]) -> dict:
    mean = [{"step": p["step"], "fd": sum(c[i]["fd"] for c in seeds) / len(seeds)} for i, p in enumerate(seeds[0])]
    return {"fd": mean[-1]["fd"], "fd_se": 0.1, "curve": mean, "per_seed": [{"curve": c} for c in seeds]}


@pytest.fixture
def files(tmp_path):
    results = {
        "variants": {
            # MAR mode's mean curve ends at 2.0 and first reaches it at its last point (step 600).
            "mar": variant(curve(8.0, 3.0, 2.0), curve(8.0, 3.0, 2.0)),
            # D-JEPA's mean curve (4.0, 1.5, 1.0) reaches 2.0 between steps 200 and 400.
            "djepa": variant(curve(4.0, 1.0, 0.5), curve(4.0, 2.0, 1.5)),
            # Never reaches it on one seed.
            "slow": variant(curve(9.0, 5.0, 1.0), curve(9.0, 5.0, 3.0)),
        }
    }
    profile = {"variants": {"mar": {"step_ms": 200.0}, "djepa": {"step_ms": 300.0}, "slow": {"step_ms": 100.0}}}
    (tmp_path / "results.json").write_text(json.dumps(results))
    (tmp_path / "profile.json").write_text(json.dumps(profile))
    return tmp_path


def test_steps_become_seconds_against_the_reference(files):
    time_to_fd.main([f"results={files / 'results.json'}", f"profile={files / 'profile.json'}", f"out={files / 'o'}"])
    report = json.loads((files / "o" / "time_to_fd.json").read_text())
    assert report["target_fd"] == 2.0
    mar, djepa, slow = (report["variants"][k] for k in ("mar", "djepa", "slow"))
    assert mar["steps"] == 600 and mar["seconds"] == pytest.approx(120.0) and mar["ratio"] == pytest.approx(1.0)
    # mean curve 4.0 -> 1.5 between steps 200 and 400: 2.0 is reached at 200 + 200 * 2.0 / 2.5 = 360
    assert djepa["steps"] == pytest.approx(360.0)
    assert djepa["seconds"] == pytest.approx(108.0) and djepa["ratio"] == pytest.approx(0.9)
    assert djepa["steps_per_seed"] == [pytest.approx(200 + 200 * 2 / 3), 400.0]
    assert slow["steps_per_seed"][1] is None and slow["seeds_reaching"] == 1
    assert slow["seconds_per_seed_mean"] is None  # not a mean over the seeds that happened to get there
    assert djepa["seconds_per_seed_mean"] == pytest.approx(0.3 * (200 + 200 * 2 / 3 + 400) / 2)
    assert "| djepa | 2 |" in (files / "o" / "time_to_fd.md").read_text()


def test_a_variant_without_a_step_time_is_named(files):
    (files / "profile.json").write_text(json.dumps({"variants": {"mar": {"step_ms": 1.0}}}))
    with pytest.raises(UsageError, match="djepa, slow"):
        time_to_fd.time_to_fd(
            json.loads((files / "results.json").read_text()), json.loads((files / "profile.json").read_text()), "mar"
        )


def test_an_unreadable_file_names_its_key(tmp_path):
    with pytest.raises(SystemExit):
        time_to_fd.main([f"results={tmp_path / 'none.json'}", f"profile={tmp_path / 'none.json'}"])
    with pytest.raises(UsageError, match="results="):
        time_to_fd.read_json(str(tmp_path / "none.json"), "results")


def test_several_profiles_give_each_variant_its_median_step_time():
    profiles = [
        {"variants": {"mar": {"step_ms": 100.0}, "djepa": {"step_ms": 130.0}}},
        {"variants": {"mar": {"step_ms": 110.0}, "djepa": {"step_ms": 120.0}, "slow": {"step_ms": 50.0}}},
        {"variants": {"mar": {"step_ms": 90.0}}},
    ]
    merged = time_to_fd.merged_profile(profiles)["variants"]
    assert merged["mar"] == {"step_ms": 100.0, "profiles": 3}
    assert merged["djepa"]["step_ms"] == 125.0 and merged["slow"]["step_ms"] == 50.0
