"""The web demo's buttons without the page (djepa.cli.serve_requests): the editor's painted mask, the time range,
length and overlap controls, and their mistakes as one-line messages."""

import numpy as np
import pytest
from PIL import Image

from djepa.cli import serve_requests as requests
from djepa.cli.serve_requests import Settings
from djepa.errors import UsageError
from djepa.pipeline import Pipeline


def settings(label="3", num_samples=2, seed=0):
    return Settings(label, num_samples, 2.0, 1.0, 2, seed)


def editor(painted_columns=None, size=32):
    """An ImageEditor value (type="pil"): a digit-like background and one layer painted on those columns."""
    background = Image.fromarray(np.tile(np.arange(size, dtype=np.uint8) * 8, (size, 1))).convert("RGBA")
    layer = np.zeros((size, size, 4), np.uint8)
    if painted_columns is not None:
        layer[:, painted_columns] = 255
    return {"background": background, "layers": [Image.fromarray(layer)], "composite": background}


@pytest.fixture(scope="module")
def image_pipe(image_run):
    return Pipeline.from_pretrained(image_run[1], device="cpu")


def test_the_painted_layers_become_the_mask_white_where_painted():
    image, mask = requests.editor_image_and_mask(editor(slice(20, 32)))
    assert image.mode == "RGB" and image.size == (32, 32)
    pixels = np.asarray(mask)
    assert (pixels[:, 20:] == 255).all() and (pixels[:, :20] == 0).all()
    assert requests.editor_image_and_mask(editor())[1] is None  # nothing painted
    # A layer on a canvas of another size is laid onto the image's pixels.
    value = editor()
    big = np.zeros((64, 64, 4), np.uint8)
    big[:, 32:] = 255
    value["layers"] = [Image.fromarray(big)]
    assert (np.asarray(requests.editor_image_and_mask(value)[1])[:, 16:] == 255).all()
    with pytest.raises(UsageError, match="upload an image to the editor"):
        requests.editor_image_and_mask({"background": None, "layers": [], "composite": None})
    with pytest.raises(UsageError, match="upload an image to the editor"):
        requests.editor_image_and_mask(None)


def test_inpaint_and_outpaint_write_the_strip_and_say_how_the_mask_was_rounded(image_pipe, tmp_path):
    made = requests.inpaint(image_pipe, settings(), tmp_path / "a", editor(slice(19, 32)))
    assert made.strip is not None and made.strip.is_file() and made.first.name == "3_000.png"
    assert made.notes == [
        "mask: regenerating 8 of 16 tokens (4x4 grid, 8x8 px each); rounding the mask to whole tokens changed 96 of "
        "1024 pixels"
    ]
    made = requests.inpaint(image_pipe, settings(), tmp_path / "b", editor(), "right", 0.25)
    assert made.notes == ["outpaint=right:0.25: regenerating 4 of 16 tokens (4x4 grid, 8x8 px each)"]
    assert "4x4 grid of tokens (8x8 px each)" in requests.token_note(image_pipe)


@pytest.mark.parametrize(
    "painted, side, message",
    [
        (None, "none", "nothing is painted; paint the region to regenerate on the image, or choose an outpaint side"),
        (slice(30, 32), "none", "mask covers no whole token once rounded to the 4x4 token grid"),
        (slice(0, 32), "none", "mask covers every token"),
        (slice(16, 32), "right", "a painted mask and outpaint=right: clear the painting or set outpaint to none"),
        (None, "sideways", "outpaint side 'sideways': choose one of none, left, right, top, bottom, all"),
    ],
)
def test_an_empty_or_useless_mask_is_a_clear_message(image_pipe, tmp_path, painted, side, message):
    with pytest.raises(UsageError, match=message.replace("(", r"\(")):
        requests.inpaint(image_pipe, settings(), tmp_path, editor(painted), side)
    assert not tmp_path.joinpath("3_000.png").exists()


def test_the_shared_controls_are_checked_first(image_pipe, video_pipe, tmp_path):
    with pytest.raises(UsageError, match="pick a class first"):
        requests.inpaint(image_pipe, settings(label=""), tmp_path, editor(slice(16, 32)))
    with pytest.raises(UsageError, match="samples must be between 1 and 16"):
        requests.generate(image_pipe, settings(num_samples=17), tmp_path)
    with pytest.raises(UsageError, match="seed must be a whole number >= 0, got -1"):
        requests.generate(image_pipe, settings(seed=-1), tmp_path)
    with pytest.raises(UsageError, match="inpainting is for image models; this one is video"):
        requests.inpaint(video_pipe, settings(), tmp_path, editor(slice(16, 32)))


def test_time_controls_become_the_pipeline_keys(video_pipe, audio_pipe):
    assert requests.window_length(video_pipe) == 8 and requests.window_length(audio_pipe) == 0.5
    # One window as trained: no length key; the overlap is the prime length (also kept of a prime).
    assert requests.time_options(video_pipe, None, "", 8, 4) == {"prime_frames": 4}
    assert requests.time_options(video_pipe, None, None, 20.0, 2) == {"frames": 20, "prime_frames": 2}
    assert requests.time_options(audio_pipe, "a.wav", " 0.1:0.3 ", 0.5, 0.25) == {"mask_seconds": "0.1:0.3"}
    assert requests.time_options(audio_pipe, None, "", 1.25, 0.25) == {"seconds": 1.25, "prime_seconds": 0.25}
    with pytest.raises(UsageError, match="frames 4:8: a range regenerates part of a clip; upload a prime clip first"):
        requests.time_options(video_pipe, None, "4:8", 8, 4)
    with pytest.raises(UsageError, match=r"overlap \(prime_seconds\) must be positive, got 0"):
        requests.time_options(audio_pipe, None, "", 1.0, 0)
    assert "One window is 8 frames (4 token rows of 2 frames)" in requests.time_note(video_pipe)


def test_a_range_of_a_prime_and_a_long_clip_say_what_they_did(video_pipe, audio_pipe, tmp_path):
    clip = requests.generate(video_pipe, settings(), tmp_path / "a").first
    made = requests.generate(video_pipe, settings(), tmp_path / "b", str(clip), "3:6", 8, 4)
    assert made.notes == [
        "mask_frames=3:6: regenerating frames 2..5 (token rows 1..2; the token grid's time step is 2 frames), the "
        "rest of the prime kept"
    ]
    made = requests.generate(audio_pipe, settings("one", 1), tmp_path / "c", None, "", 1.2, 0.25)
    assert made.notes == [
        "seconds=1.200: 4 windows of 0.500 seconds, each after the first primed with the previous one's last 0.256 "
        "seconds (4 token columns, prime_seconds), joined where that overlap starts"
    ]
    import soundfile as sf

    assert sf.info(str(made.first)).frames == round(1.2 * 8000)  # longer than the 0.5 s window, cut to length


@pytest.mark.parametrize(
    "region, length, message",
    [
        ("6:2", 8, "mask_frames='6:2' is empty or inverted"),
        ("0:12", 8, "mask_frames=0:12: the range ends past the clip, which is 8 frames long"),
        ("a:b", 8, "mask_frames='a:b' is not a range of numbers"),
        ("2:6", 16, "frames=16 and a mask range: regenerate a range of one window, or make a longer one"),
        ("", 2.5, "frames=2.5 must be a positive whole number"),
        ("", -3, "frames=-3 must be a positive whole number"),
    ],
)
def test_bad_ranges_and_lengths_are_one_line_messages(video_pipe, tmp_path, region, length, message):
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(b"")  # checked before the clip is read
    with pytest.raises(UsageError, match=message.replace("(", r"\(")):
        requests.generate(video_pipe, settings(), tmp_path / "out", str(clip), region, length, 4)
    assert not (tmp_path / "out").exists()


def test_the_page_offers_the_image_adapters_outpaint_sides_and_fraction():
    from djepa.modalities import inpainting

    assert (*requests.SIDES, "all") == inpainting.OUTPAINT_SIDES
    assert requests.OUTPAINT_FRACTION == inpainting.OUTPAINT_FRACTION
