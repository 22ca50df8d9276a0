"""Image inpainting and outpainting: mask forms rounded to whole tokens, known tokens kept, one-line errors."""

import numpy as np
import pytest
import torch
from PIL import Image

from djepa import Pipeline
from djepa.cli import sample
from djepa.errors import UsageError
from djepa.modalities.inpainting import outpaint_canvas, rounded_mask

GRID = (4, 4)  # the default image model's: 32x32 pixels, 8x8 per token


def regen(spec, prime_size=(32, 32)):
    return rounded_mask(spec, prime_size, 32, GRID)[0]


def test_mask_forms_become_whole_tokens_and_say_how_they_were_rounded(tmp_path):
    right, note = rounded_mask("right", (32, 32), 32, GRID)
    assert right[:, 2:].all() and not right[:, :2].any()
    assert (
        note == "mask=right: regenerating 8 of 16 tokens (4x4 grid, 8x8 px each); the mask fits the token grid as given"
    )
    assert torch.equal(regen("left:0.25"), torch.tensor([[True, False, False, False]] * 4))
    assert regen("top")[:2].all() and not regen("top")[2:].any()
    assert regen("bottom:0.75").sum() == 12 and not regen("bottom:0.75")[0].any()
    center = regen("center")  # half the width and half the height: the middle 2x2 tokens
    assert center.sum() == 4 and center[1:3, 1:3].all()
    # A box in the prime's pixels, as text (the command line) or as a list (Hydra's mask=[...], the API).
    assert torch.equal(regen("8,0,24,32"), regen([8, 0, 24, 32]))
    assert regen("8,0,24,32")[:, 1:3].all() and regen("8,0,24,32").sum() == 8
    # A box on a wider prime is fitted as the prime is (short side to 32, centre crop): 16..32 is the left half.
    assert torch.equal(regen("16,0,32,32", prime_size=(64, 32)), regen("left"))
    # A PNG, white = regenerate: 5 of a token's 8 columns white round up, the whole token is regenerated.
    png = np.zeros((32, 32), np.uint8)
    png[:, 19:] = 255
    Image.fromarray(png).save(tmp_path / "mask.png")
    found, note = rounded_mask(str(tmp_path / "mask.png"), (32, 32), 32, GRID)
    assert torch.equal(found, right)
    assert note.endswith("rounding the mask to whole tokens changed 96 of 1024 pixels")  # 3 columns x 32 rows
    png[:, 19:21] = 0  # now 3 of 8: rounded down
    assert torch.equal(rounded_mask(Image.fromarray(png), (32, 32), 32, GRID)[0], regen("right:0.25"))


def test_outpainting_moves_the_prime_and_regenerates_what_it_leaves():
    image = torch.arange(32.0).expand(1, 32, 32)  # each pixel holds its column
    canvas, regenerate = outpaint_canvas("right:0.25", image, GRID, (8, 8))
    assert torch.equal(canvas[..., :24], image[..., 8:]) and canvas[..., 24:].isnan().all()
    assert regenerate[:, 3].all() and regenerate.sum() == 4
    canvas, regenerate = outpaint_canvas("top", image, GRID, (8, 8))
    assert torch.equal(canvas[:, 8:], image[:, :24]) and regenerate[0].all() and regenerate.sum() == 4
    canvas, regenerate = outpaint_canvas("all", image, GRID, (8, 8))  # shrunk into the middle 16x16
    assert regenerate.sum() == 12 and not regenerate[1:3, 1:3].any()
    assert not canvas[:, 8:24, 8:24].isnan().any() and canvas[:, :8].isnan().all()
    assert float(canvas[0, 12, 8]) < float(canvas[0, 12, 23])  # the image is still left to right


@pytest.mark.parametrize(
    "spec, message",
    [
        ("middle", "mask=middle is not a mask (nor an existing file): give left|right|top|bottom|center"),
        ("right:1.5", "mask=right:1.5: the fraction must be a number between 0 and 1"),
        ("right:half", "mask=right:half: the fraction must be a number between 0 and 1"),
        ("0,0,40,8", "mask=0,0,40,8: the box x0,y0,x1,y1 must lie in the 32x32 prime"),
        ("8,8,8,16", "mask=8,8,8,16: the box x0,y0,x1,y1 must lie in the 32x32 prime"),
        ("left:0.1", "mask=left:0.1 covers no whole token once rounded to the 4x4 token grid (8x8 px each)"),
        ("0,0,32,32", "mask=0,0,32,32 covers every token: nothing of the prime would stay"),
        ([1, 2], "mask=[1, 2] is not a mask: give"),
        ("small.png", "mask=small.png is 16x16, the prime is 32x32: give a mask of the prime's size"),
        ("text.png", "mask=text.png: cannot read it as an image"),
    ],
)
def test_bad_masks_are_one_line_errors(spec, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Image.new("L", (16, 16)).save("small.png")
    (tmp_path / "text.png").write_text("not an image")
    with pytest.raises(UsageError) as info:
        regen(spec)
    assert str(info.value).startswith(message) and "\n" not in str(info.value)


@pytest.mark.parametrize("spec", ["right:0.05", "all:0.5", "sideways"])
def test_bad_outpainting_is_a_one_line_error(spec):
    with pytest.raises(UsageError, match=f"^outpaint={spec}") as info:
        outpaint_canvas(spec, torch.zeros(1, 32, 32), GRID, (8, 8))
    assert "\n" not in str(info.value)


@pytest.mark.slow
def test_inpainting_keeps_the_known_tokens_and_the_command_writes_the_strip(image_run, tmp_path, capsys):
    from djepa.modalities.image import mnist_images

    common, run_dir = image_run
    pipe = Pipeline.from_pretrained(run_dir, device="cpu")
    images, labels = mnist_images(32)
    digit = Image.fromarray(((images[0, 0] + 1) * 127.5).round().byte().numpy())
    digit.save(tmp_path / "digit.png")
    out = pipe(image=digit, mask="right", num_samples=3, seed=1)
    known, prime = out.prime.known, out.prime
    assert out.names == ["unconditional"] * 3 and int(known.sum()) == 8 and known.view(GRID)[:, :2].all()
    assert torch.equal(out.tokens[:, known], prime.tokens[known].expand(3, -1, -1))  # kept exactly
    assert not torch.equal(out.tokens[0, ~known], out.tokens[1, ~known])  # the right half is drawn anew
    # Decoded, the known half stays near what the tokenizer makes of the prime (the decoder also sees the new
    # right half; this tiny tokenizer blurs everything towards the mean), nearer than a sample without the prime.
    roundtrip = pipe.adapter.decode_tokens(prime.tokens[None])
    plain = pipe(class_labels=int(labels[0]), num_samples=3, seed=1).media

    def known_half_error(media):
        return float((media[..., :16] - roundtrip[..., :16]).abs().mean())

    assert known_half_error(out.media) < 0.85 * known_half_error(plain)
    # With a class: guided towards it, the same known tokens.
    guided = pipe(class_labels=[2], image=str(tmp_path / "digit.png"), mask="right", seed=1)
    assert guided.names == ["2"] and torch.equal(guided.tokens[0, known], prime.tokens[known])

    # The command: a box on the command line (not a Hydra sweep), the rounding said, the strip written.
    argv = common + [f"run_dir={run_dir}", f"prime={tmp_path / 'digit.png'}", "mask=16,0,32,32", "num_samples=2",
                     f"out={tmp_path / 'out'}"]  # fmt: skip
    written = sample.run(sample.compose_config(argv), argv)
    assert "mask=16,0,32,32: regenerating 8 of 16 tokens" in capsys.readouterr().out
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "grid.png",
        "inpainting.png",
        "unconditional_000.png",
        "unconditional_001.png",
    ]
    assert len(written) == 3
    with Image.open(tmp_path / "out" / "inpainting.png") as strip:
        assert strip.size == (4 * 34 * 2, 34 * 2)  # prime, mask, two results; 1 px frames, twice the size
    cfg = sample.compose_config(["outpaint=all:0.25", "mask=[0,0,8,8]"])
    assert cfg.outpaint == "all:0.25" and list(cfg.mask) == [0, 0, 8, 8]
    assert sample.compose_config(["mask=center:0.4"]).mask == "center:0.4"  # Hydra keeps the colon


@pytest.mark.slow
def test_bad_inpainting_requests_are_one_line_errors(image_run, video_pipe, tmp_path, capsys):
    common, run_dir = image_run
    pipe = Pipeline.from_pretrained(run_dir, device="cpu")
    Image.new("L", (32, 32)).save(tmp_path / "prime.png")
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    cases = [
        (dict(mask="right"), "mask=right needs the image to change: prime=IMAGE"),
        (dict(prime=str(tmp_path / "missing.png"), mask="right"), f"prime={tmp_path / 'missing.png'} does not exist"),
        (dict(prime=str(tmp_path / "broken.png"), mask="right"), f"prime={tmp_path / 'broken.png'}: cannot read it"),
        (dict(prime=str(tmp_path / "prime.png")), f"prime={tmp_path / 'prime.png'}: say what to regenerate: mask="),
        (dict(image=str(tmp_path / "prime.png"), mask="right", outpaint="left"), "mask and outpaint together"),
        (dict(image=str(tmp_path / "prime.png"), prime=str(tmp_path / "prime.png"), mask="right"), "prime and image"),
        (dict(image=str(tmp_path / "prime.png"), mask="left:0.1"), "mask=left:0.1 covers no whole token"),
    ]
    for kwargs, message in cases:
        with pytest.raises(UsageError) as info:
            pipe(**kwargs)
        assert str(info.value).startswith(message) and "\n" not in str(info.value), kwargs
    with pytest.raises(UsageError, match="^mask: video models are masked in time, not with an image mask: use mask_fr"):
        video_pipe(mask="right")
    # Through the command: exit status 2, one line, nothing written.
    with pytest.raises(SystemExit) as exit_info:
        sample.main(common + [f"run_dir={run_dir}", "mask=right", f"out={tmp_path / 'none'}"])
    err = capsys.readouterr().err.strip()
    assert (
        exit_info.value.code == 2
        and err == "error: mask=right needs the image to change: prime=IMAGE (Pipeline: image=...)"
    )
    assert not (tmp_path / "none").exists()
