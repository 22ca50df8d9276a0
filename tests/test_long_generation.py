"""Time on video and audio models: a time range of a prime regenerated with the rest kept (`mask_frames`,
`mask_seconds`), and items longer than the model's window made window by window (`frames`, `seconds`)."""

from types import SimpleNamespace

import pytest
import torch
from conftest import pipeline_for
from test_faults import one_line_error

from djepa.cli import sample
from djepa.engine.long_generation import LongPlan, stitch
from djepa.engine.time_masks import TimeAxis, check_time_keys
from djepa.errors import UsageError


def spy(monkeypatch, target):
    """Calls of `target` (a dotted name), recorded as (args, result)."""
    module, name = target.rsplit(".", 1)
    real = getattr(__import__(module, fromlist=[name]), name)
    calls = []

    def recorded(*args, **kwargs):
        result = real(*args, **kwargs)
        calls.append((args, result))
        return result

    monkeypatch.setattr(target, recorded)
    return calls


def test_stitching_cuts_where_the_overlap_starts_and_crossfades_audio():
    # 4 token rows of 25 samples; windows overlap by 1 row, so each window but the last gives 75 samples.
    audio = TimeAxis("audio", "seconds", (0.0, 0.25, 0.5, 0.75, 1.0), 1.0, (1, 4), 1, 100.0)
    pieces = [torch.full((1, 1, 100), float(w)) for w in range(3)]
    out = stitch(pieces, LongPlan(audio, 2.0, 3, 1), -1)[0, 0]
    assert out.shape == (200,)  # 100 + 75 + 75 made, cut to the 2 s asked for
    assert (out[:75] == 0).all() and (out[77:150] == 1).all() and (out[152:] == 2).all()
    fade = out[75:77]  # 20 ms at 100 samples/s: two samples between the windows
    assert (0 < fade).all() and (fade < 1).all() and fade[0] < fade[1]
    video = TimeAxis("video", "frames", (0.0, 2.0, 4.0, 6.0, 8.0), 8.0, (4, 2, 2), 0, 1.0)
    frames = [torch.full((1, 8, 1, 2, 2), float(w)) for w in range(3)]
    out = stitch(frames, LongPlan(video, 15.0, 3, 2), 1)[0, :, 0, 0, 0]
    assert out.tolist() == [0] * 4 + [1] * 4 + [2] * 7  # cut, no fade; 16 frames made, 15 kept


@pytest.mark.slow
@pytest.mark.parametrize("modality", ["video", "audio"])
def test_a_time_range_regenerates_only_its_token_rows_and_keeps_the_prime(modality, request, tmp_path, monkeypatch):
    pipe = request.getfixturevalue(f"{modality}_pipe")
    label = pipe.class_names[1]
    prime = pipe.adapter.save(pipe(class_labels=[label], num_samples=1, seed=0).media[0], tmp_path / "prime")
    prime_tokens = pipe.adapter.prime_tokens(str(prime), {}, 1)[0]
    calls = spy(monkeypatch, "djepa.pipeline.generate")
    if modality == "video":  # token rows of 2 frames: 3:6 rounds to frames 2..5, rows 1 and 2
        out = pipe(class_labels=[label], num_samples=2, seed=1, prime=prime, mask_frames="3:6")
        assert out.videos[0].shape == (8, 16, 16, 1)
        kept_rows, said = [True, False, False, True], "mask_frames=3:6: regenerating frames 2..5 (token rows 1..2;"
    else:  # token columns of 0.064 s: 0.1:0.3 rounds to 0.128..0.320 s, columns 2..4
        out = pipe(class_labels=[label], num_samples=2, seed=1, prime=prime, mask_seconds="0.1:0.3")
        assert out.waveforms[0].shape == (1, 4000)
        kept_rows, said = [True, True, False, False, False, True, True, True], "regenerating seconds 0.128..0.320"
    assert len(out.notes) == 1 and said in out.notes[0]  # `sample` prints it
    ((args, tokens),) = calls
    known_tokens, known_mask = args[4], args[5]
    grid = pipe.adapter.token_grid
    axis = pipe.adapter.time_axis % len(grid)
    rows = known_mask.view(2, *grid).movedim(axis + 1, 1).flatten(2)
    assert (rows.all(2) == torch.tensor(kept_rows)).all() and not (rows.any(2) & ~rows.all(2)).any()  # whole rows
    kept = known_mask[0]
    assert torch.equal(known_tokens[:, kept], prime_tokens[:, kept].expand(2, -1, -1))
    assert torch.equal(tokens[:, kept], prime_tokens[:, kept].expand(2, -1, -1))  # the prime, token for token
    assert not torch.isclose(tokens[:, ~kept], prime_tokens[:, ~kept]).any()  # the range is new

    # With a length too: the first window is primed by the clip's start, as plain continuation.
    windows = spy(monkeypatch, "djepa.pipeline.generate_windows")
    length = {"frames": 12} if modality == "video" else {"seconds": 0.8}
    pipe(class_labels=[label], num_samples=1, seed=2, prime=prime, **length)
    first = windows[0][1][0]
    _, prefix = pipe.adapter.prime_tokens(str(prime), {}, 1)
    assert torch.equal(first[:, prefix[0]], prime_tokens[:, prefix[0]]) and 0 < prefix.sum() < prefix.numel()


@pytest.mark.slow
def test_long_items_have_the_length_asked_and_each_window_starts_with_the_one_befores_tail(
    video_pipe, audio_pipe, tmp_path, monkeypatch
):
    windows = spy(monkeypatch, "djepa.pipeline.generate_windows")
    out = video_pipe(class_labels=[1], num_samples=2, seed=0, frames=20)
    assert out.videos[0].shape == (20, 16, 16, 1) and len(out.videos) == 2
    made = windows[-1][1]
    assert len(made) == 4  # 8 frames, then 4 new per window (overlap: prime_frames 4 = 2 token rows of 16 tokens)
    assert out.notes == [
        "frames=20: 4 windows of 8 frames, each after the first primed with the previous one's last 4 frames (2 token "
        "rows, prime_frames), joined where that overlap starts"
    ]
    for before, after in zip(made, made[1:]):
        assert torch.equal(after[:, :32], before[:, 32:])  # primed with the tail, kept token for token
    decoded = [video_pipe.adapter.decode_tokens(w) for w in made]
    expected = torch.cat([decoded[0][:, :4], decoded[1][:, :4], decoded[2][:, :4], decoded[3]], 1)
    assert torch.equal(out.media, expected)  # joined where each overlap starts

    out = audio_pipe(class_labels=["one"], num_samples=1, seed=0, seconds=1.0)
    assert out.waveforms[0].shape == (1, 8000)  # 0.5 s windows overlapping by 0.256 s (4 token columns)
    made = windows[-1][1]
    assert len(made) == 3
    for before, after in zip(made, made[1:]):
        assert torch.equal(after.view(1, 4, 8, -1)[:, :, :4], before.view(1, 4, 8, -1)[:, :, 4:])
    out.save(tmp_path / "audio")
    assert (tmp_path / "audio" / "grid.png").is_file()

    unconditional = pipeline_for(video_pipe.adapter, tmp_path, ["unconditional"])
    out = unconditional(num_samples=2, seed=0, frames=12, prime_frames=2)
    assert out.videos[0].shape == (12, 16, 16, 1) and len(windows[-1][1]) == 2  # overlap 1 row: 6 new frames


@pytest.mark.slow
@pytest.mark.parametrize(
    "pipe, given, message",
    [
        ("video_pipe", {"mask_frames": "8:4"}, "mask_frames='8:4' is empty or inverted"),
        ("video_pipe", {"mask_frames": "3:3"}, "mask_frames='3:3' is empty or inverted"),
        ("video_pipe", {"mask_frames": "4:20"}, "the range ends past the clip, which is 8 frames long"),
        ("video_pipe", {"mask_frames": "4:5"}, "covers no whole token row: the token grid's time step is 2 frames"),
        ("video_pipe", {"mask_frames": "2.5:4"}, "whole frame numbers"),
        ("video_pipe", {"mask_frames": "a:b"}, "is not a range of numbers"),
        ("video_pipe", {"mask_frames": "4"}, "is not a range: give start:end"),
        ("video_pipe", {"mask_frames": "2:4", "prime": None}, "needs prime=CLIP"),
        ("video_pipe", {"mask_frames": "2:4", "prime_frames": 4}, "prime_frames and mask_frames: give one"),
        ("video_pipe", {"mask_seconds": "0.1:0.2"}, "mask_seconds is for audio models; this one is video: use mask"),
        ("video_pipe", {"mask_frames": "2:4", "frames": 20}, "frames=20 and a mask range"),
        ("video_pipe", {"seconds": 2.0}, "seconds is for audio models; this one is video: use frames"),
        ("video_pipe", {"frames": 2.5}, "frames=2.5 must be a positive whole number"),
        ("audio_pipe", {"mask_frames": "2:4"}, "mask_frames is for video models; this one is audio: use mask_sec"),
        ("audio_pipe", {"mask_seconds": "0.1:0.9"}, "ends past the clip, which is 0.500 seconds long"),
        ("audio_pipe", {"seconds": 1.0, "frames": 3}, "frames and seconds: give one"),
        ("audio_pipe", {"seconds": -1.0}, "seconds=-1.0 must be a positive number"),
    ],
)
def test_bad_time_inputs_are_one_line_errors(pipe, given, message, request, tmp_path):
    given = {"prime": str(tmp_path / "clip"), **given}  # refused before the prime is read
    with pytest.raises(UsageError, match=message) as err:
        request.getfixturevalue(pipe)(num_samples=1, **given)
    assert "\n" not in str(err.value)


def test_a_time_range_on_an_image_model_says_it_has_no_time():
    image = SimpleNamespace(name="image", time_axis=None)
    with pytest.raises(UsageError, match="mask_frames: image models have no time axis"):
        check_time_keys(image, "digit.png", "4:8", None, None, None)


@pytest.mark.slow
def test_sample_refuses_a_time_range_on_an_image_run_in_one_line(image_run, capsys, tmp_path):
    common, run_dir = image_run
    out = tmp_path / "out"
    argv = [*common, f"run_dir={run_dir}", f"prime={tmp_path / 'x.png'}", "mask_frames=4:8", f"out={out}"]
    err = one_line_error(capsys, sample.main, argv)
    assert "mask_frames: image models have no time axis" in err and not out.exists()
    err = one_line_error(capsys, sample.main, [*common, f"run_dir={run_dir}", "frames=0", f"out={out}"])
    assert "frames=0" in err and not out.exists()
