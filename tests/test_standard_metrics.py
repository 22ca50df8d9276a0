"""Standard metrics from local weight files: skip note, clear errors, TorchScript and torch.export FD, Inception FID."""

from pathlib import Path

import pytest
import torch

from djepa.benchmarks import evaluate
from djepa.benchmarks.experiments.run import passthrough_overrides
from djepa.benchmarks.metrics import frechet_distance
from djepa.benchmarks.report import write_summary
from djepa.benchmarks.standard import (
    SKIP_NOTE,
    StandardMetric,
    feature_fd,
    image_fid,
    standard_metrics,
)
from djepa.cli.config import compose_config
from djepa.engine.sampling import SamplingSettings
from djepa.errors import UsageError


class PoolLinear(torch.nn.Module):
    """Any media batch -> 16 mean-pooled bins -> 4 features."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = torch.nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = torch.nn.functional.adaptive_avg_pool1d(x.flatten(1).unsqueeze(1), 16).squeeze(1)
        return self.proj(pooled)


class WrongShape(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten()


@pytest.fixture
def pool_net(tmp_path):
    path = tmp_path / "pool_linear.pt"
    torch.jit.script(PoolLinear()).save(str(path))
    return path


@pytest.fixture
def no_network(monkeypatch):
    """Every attempt to reach the network (a weights download) is recorded and refused; the test asserts none."""
    import socket

    attempts = []

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise OSError("network access in a test that promises none")

    for owner, name in [(socket, "create_connection"), (socket, "getaddrinfo"), (socket.socket, "connect")]:
        monkeypatch.setattr(owner, name, refuse)
    return attempts


@pytest.mark.parametrize("modality", ["image", "video", "audio"])
@pytest.mark.parametrize("weights", [None, ""])
def test_no_weights_gives_the_skip_note_and_downloads_nothing(modality, weights, no_network, monkeypatch):
    import torch.hub

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", lambda *a, **k: no_network.append(a))
    x = torch.zeros(2, 1, 8, 8)
    assert standard_metrics(modality, x, x, weights) == {"standard_metrics": SKIP_NOTE}
    assert no_network == []


@pytest.mark.parametrize("modality", ["image", "video", "audio"])
def test_missing_weights_file_is_an_error_naming_it(modality, tmp_path):
    missing = tmp_path / "nowhere" / "weights.pt"
    x = torch.zeros(2, 1, 8, 8)
    with pytest.raises(UsageError, match="nowhere/weights.pt"):
        standard_metrics(modality, x, x, missing)


def test_feature_fd_is_zero_for_identical_sets_and_grows_with_shift(pool_net):
    g = torch.Generator().manual_seed(0)
    audio = torch.randn(64, 800, generator=g)
    assert abs(feature_fd(audio, audio, pool_net)) < 1e-4
    shifted = feature_fd(audio, audio + 0.5, pool_net)
    w = torch.jit.load(str(pool_net)).proj.weight.detach()
    # pooling keeps a constant offset, so the features' means move by 0.5 * W @ 1 and nothing else
    assert shifted == pytest.approx(float(((0.5 * w.sum(1)) ** 2).sum()), rel=1e-3)
    assert shifted > 1e-2
    result = standard_metrics("audio", audio, audio + 0.5, pool_net)
    assert result == {"fd_pool_linear": pytest.approx(shifted)}


def test_feature_fd_takes_video_batches(pool_net):
    clips = torch.rand(40, 4, 1, 8, 8) * 2 - 1  # [N, T, C, H, W]
    metric = StandardMetric("video", clips, pool_net)
    assert metric.name == "fd_pool_linear"
    assert abs(metric(clips)["fd_pool_linear"]) < 1e-4
    assert metric(clips.flip(0) * 0.2)["fd_pool_linear"] > metric(clips.flip(0))["fd_pool_linear"]


def test_feature_fd_loads_a_torch_export_program(tmp_path, pool_net):
    net, path = PoolLinear(), tmp_path / "exported.pt2"
    net.load_state_dict(torch.jit.load(str(pool_net)).state_dict())
    program = torch.export.export(net, (torch.randn(4, 800),), dynamic_shapes=({0: torch.export.Dim("batch")},))
    torch.export.save(program, str(path))
    a = torch.randn(40, 800)
    assert feature_fd(a, a + 0.5, path) == pytest.approx(feature_fd(a, a + 0.5, pool_net), rel=1e-5)
    assert list(standard_metrics("audio", a, a, path)) == ["fd_exported"]


def test_bad_feature_networks_are_clear_errors(tmp_path):
    wrong = tmp_path / "wrong.pt"
    torch.jit.script(WrongShape()).save(str(wrong))
    x = torch.randn(4, 10)
    with pytest.raises(UsageError, match=r"wrong.pt must return features \[N, D\]"):
        feature_fd(x, x, wrong)
    not_script = tmp_path / "state.pt"
    torch.save({"w": torch.zeros(2)}, not_script)
    with pytest.raises(UsageError, match="not a TorchScript"):
        feature_fd(x, x, not_script)
    not_exported = tmp_path / "state.pt2"
    not_script.rename(not_exported)
    with pytest.raises(UsageError, match="not a torch.export"):
        feature_fd(x, x, not_exported)


@pytest.fixture(scope="module")
def inception_file(tmp_path_factory):
    """A randomly initialised Inception-v3 state dict in the format torch-fidelity's weights path loads."""
    from torch_fidelity import feature_extractor_inceptionv3 as fidelity

    cls = fidelity.FeatureExtractorInceptionV3
    folder = tmp_path_factory.mktemp("inception")
    empty = folder / "empty.pth"
    torch.save({}, empty)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(cls, "load_state_dict", lambda self, state: None)  # build the layers, load nothing

        def no_download(*args, **kwargs):
            raise AssertionError("tried to download")

        patch.setattr(fidelity, "load_state_dict_from_url", no_download)
        net = cls("inception-v3-compat", ["2048"], feature_extractor_weights_path=str(empty))
    torch.manual_seed(0)
    for m in net.modules():
        if isinstance(m, torch.nn.Conv2d):
            torch.nn.init.kaiming_normal_(m.weight)  # PyTorch's default init shrinks the features to ~1e-7
    path = folder / "inception.pth"
    torch.save(net.state_dict(), path)
    return path, net


def low_rank_fd(a: torch.Tensor, b: torch.Tensor) -> float:
    """frechet_distance restricted to the span of the centred features and the mean gap, where the FD lives
    (a 2048-d sqrtm takes ~10 s on this CPU)."""
    span = torch.cat([a - a.mean(0), b - b.mean(0), (a.mean(0) - b.mean(0))[None]]).double()
    q, _ = torch.linalg.qr(span.T)
    return frechet_distance(a.double() @ q, b.double() @ q)


@pytest.mark.slow
def test_image_fid_with_a_local_inception_file(inception_file, no_network):
    path, net = inception_file
    g = torch.Generator().manual_seed(0)
    real = torch.rand(3, 1, 28, 28, generator=g) * 2 - 1  # grayscale in [-1, 1], as the adapter decodes
    fake = real * 0.5 - 0.5
    assert abs(image_fid(real, real, path)) < 1e-3
    fid = standard_metrics("image", real, fake, path)["fid"]
    assert fid > 1.0
    # the same number from the pool features of torch-fidelity's own extractor fed RGB uint8 directly
    with torch.no_grad():
        as_rgb = [((x + 1) * 127.5).round().to(torch.uint8).expand(-1, 3, -1, -1) for x in (real, fake)]
        feats = [net(x)[0] for x in as_rgb]
    assert fid == pytest.approx(low_rank_fd(*feats), rel=1e-3)
    assert no_network == []  # the local file only


def test_a_file_that_is_not_an_inception_state_dict_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.pth"
    torch.save({"conv.weight": torch.zeros(1)}, bad)
    x = torch.zeros(2, 1, 8, 8)
    with pytest.raises(UsageError, match="bad.pth is not an Inception-v3 state dict"):
        image_fid(x, x, bad)


def test_config_key_reaches_evaluate_and_stays_out_of_training_overrides(tmp_path):
    default = compose_config([])
    assert default.standard_weights is None and "standard_weights" not in default.benchmark  # one key, top level
    never_loaded = evaluate.RealMedia(adapter=None)  # loading it would fail: the data must not be touched
    assert evaluate.standard_metric(default, never_loaded) is None
    assert compose_config(["modality=audio", "standard_weights=/w.pt"]).standard_weights == "/w.pt"
    missing = tmp_path / "gone.pt"
    with pytest.raises(UsageError, match="gone.pt"):  # before any data is loaded
        evaluate.standard_metric(compose_config([f"standard_weights={missing}"]), never_loaded)
    argv = ["modality=video", "standard_weights=/w.pt", "train.steps=3"]
    argv += ["~benchmark.variants", "+benchmark.variants={a:['loss.jepa_weight=2']}"]  # a variant set of one's own
    assert passthrough_overrides(argv) == ["modality=video", "train.steps=3"]


class StubAdapter:
    num_classes = 2

    def decode_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        return tokens.view(-1, 1, 2, 2)


class StubView:
    adapter = StubAdapter()

    def rows(self, media: torch.Tensor) -> tuple[torch.Tensor, int]:
        return media, 1

    def media_metrics(self, media: torch.Tensor) -> dict[str, float]:
        return {}


class StubClassifier:
    def predict(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.randn(len(x), 2), x.flatten(1)


def test_score_hands_the_decoded_samples_to_the_standard_metric(monkeypatch):
    monkeypatch.setattr(evaluate, "generate", lambda model, labels, *args: torch.rand(len(labels), 4))
    seen = []

    def standard(media: torch.Tensor) -> dict[str, float]:
        seen.append(media)
        return {"fid": 1.5}

    real = torch.rand(20, 4)
    point = evaluate.score(None, StubView(), StubClassifier(), real, 5, SamplingSettings(num_steps=2), standard)
    assert point["fid"] == 1.5 and seen[0].shape == (10, 1, 2, 2)
    assert "fid" not in evaluate.score(None, StubView(), StubClassifier(), real, 5, SamplingSettings(num_steps=2))


def summary_results(**top):
    variant = {
        "steps": 4,
        "accuracy": 0.5,
        "fd": 1.0,
        "inception_score": 1.5,
        "train_step_ms": 10.0,
        "tokens_per_s": 100.0,
        "sample_ms_per_item": 5.0,
        "peak_mem_mb": 50.0,
        "params": 1e6,
        "flops_per_step": 1e9,
        "curve": [{"step": 4, "accuracy": 0.5, "fd": 1.0}],
        "fid": 12.25,
    }
    base = {"modality": "image", "machine": {}, "git_commit": None, "classifier_heldout_accuracy": 0.9}
    return base | {"note": "not comparable", "variants": {"djepa": variant}} | top


def test_summary_shows_the_standard_metric_or_the_skip_note(tmp_path):
    write_summary(summary_results(standard_metric="fid", standard_weights="/w.pth"), tmp_path / "a.md")
    assert "Standard metric `fid` (local weights /w.pth), final step: djepa 12.250." in (tmp_path / "a.md").read_text()
    write_summary(summary_results(standard_metrics=SKIP_NOTE), tmp_path / "b.md")
    assert SKIP_NOTE in (tmp_path / "b.md").read_text()


def test_an_inception_file_carrying_pickled_code_is_refused_unexecuted(tmp_path):
    import pickle

    class Payload:
        def __reduce__(self):
            return (Path.write_text, (tmp_path / "pwned", "x"))

    path = tmp_path / "evil.pth"
    path.write_bytes(pickle.dumps({"weights": Payload()}))
    with pytest.raises(UsageError, match="weights-only"):
        StandardMetric("image", torch.zeros(2, 1, 8, 8), path)
    assert not (tmp_path / "pwned").exists()


def test_evaluate_draws_the_same_samples_whether_the_classifier_is_trained_or_cached(monkeypatch):
    """Training the classifier consumes random numbers, loading it does not: the samples must not notice."""
    from omegaconf import OmegaConf

    monkeypatch.setattr(evaluate, "build_adapter", lambda cfg: None)
    monkeypatch.setattr(evaluate, "config_view", lambda cfg, adapter: StubView())
    monkeypatch.setattr(evaluate, "find_checkpoint", lambda run_dir, checkpoint: ("ckpt", {"step": 1}))
    monkeypatch.setattr(evaluate, "load_ema_model", lambda *args: None)
    monkeypatch.setattr(evaluate, "RealMedia", lambda adapter: None)
    monkeypatch.setattr(evaluate, "standard_metric", lambda cfg, real: None)
    monkeypatch.setattr(evaluate.SamplingSettings, "from_config", staticmethod(lambda cfg: None))
    monkeypatch.setattr(evaluate, "score", lambda *args: {"draw": torch.rand(1).item()})
    cfg = OmegaConf.create({"seed": 3, "run_dir": "r", "checkpoint": None, "device": "cpu", "loss": {"head": {}},
                            "num_samples": 1, "roundtrip": False})  # fmt: skip
    results = []
    for trains in (True, False):
        monkeypatch.setattr(evaluate, "modality_classifier", lambda *a, t=trains: (torch.rand(5) if t else 0, 1.0, 0))
        results.append(evaluate.run(cfg)["draw"])
    assert results[0] == results[1]
