"""Standard Fréchet distances from feature networks the user supplies as local files; nothing is downloaded.

- image: FID on Inception-v3 pool features (torchmetrics over torch-fidelity), from an Inception state dict in
  torch-fidelity's format (the file its FID downloads, or one made with its `util_convert_inception_weights`).
- video, audio: the same hook for any feature network saved as TorchScript (`torch.jit.save`) or, named `*.pt2`,
  as a `torch.export` program (an exported I3D for FVD, VGGish for FAD, ...). It receives the media exactly as
  the adapter makes them — video [N, T, C, H, W] in [-1, 1], audio waveforms [N, samples] at the modality's
  sample rate — and returns features [N, D]; resizing, resampling or normalisation the network needs belongs
  inside the exported module.

Images also get precision and recall (Kynkäänniemi et al. 2019, k = 3) on the same features, as ADM's suite
reports them beside FID. The real side is a `FeatureStats`: computed from the real items given, or read from the
reference statistics `fid_stats.py` caches for a whole folder.

Without a weights file the metric is skipped with `SKIP_NOTE`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from djepa.benchmarks.metrics import frechet_distance, frechet_from_moments, precision_recall
from djepa.errors import UsageError

if TYPE_CHECKING:
    from torchmetrics.image.fid import FrechetInceptionDistance

SKIP_NOTE = "skipped: no local weights given (standard_weights=PATH); nothing is downloaded"
SKIPPED = {"standard_metrics": SKIP_NOTE}
BATCH = 32
PR_ITEMS = 10_000  # real features kept for precision/recall: ADM's reference batches hold 10,000 images
PR_K = 3  # the neighbour whose distance is a point's radius (ADM's suite, the paper's recommendation)


def weights_file(weights_path: str | Path) -> Path:
    path = Path(weights_path).expanduser()
    if not path.is_file():
        raise UsageError(f"standard_weights: no such file {path}")
    return path


def metric_name(modality: str, weights_path: str | Path) -> str:
    return "fid" if modality == "image" else f"fd_{Path(weights_path).stem}"


def _batches(x: torch.Tensor, device: torch.device) -> Iterator[torch.Tensor]:
    for i in range(0, len(x), BATCH):
        yield x[i : i + BATCH].to(device)


def _images_uint8(images: torch.Tensor) -> torch.Tensor:
    """[N, C, H, W] in [-1, 1] -> RGB uint8, as the Inception extractor wants it."""
    if images.dim() != 4 or images.shape[1] not in (1, 3):
        raise UsageError(f"FID needs images [N, 1 or 3, H, W], got {tuple(images.shape)}")
    x = ((images.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x


def _inception_fid(path: Path, device: torch.device) -> FrechetInceptionDistance:
    try:
        from torchmetrics.image.fid import FrechetInceptionDistance
    except ImportError as err:
        raise UsageError("standard metrics need torchmetrics and torch-fidelity: pip install 'djepa[metrics]'") from err
    try:
        # torch-fidelity unpickles the file in full; a weights-only load first refuses any pickled code.
        torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise UsageError(f"{path} is not a plain tensor state dict (refused by a weights-only load): {err}") from err
    try:
        # antialias=False: torch-fidelity's TF1-style resize, as the published FID numbers were computed
        fid = FrechetInceptionDistance(
            feature=2048, reset_real_features=False, feature_extractor_weights_path=str(path), antialias=False
        )
    except ModuleNotFoundError as err:
        raise UsageError(f"FID needs torch-fidelity: pip install 'djepa[metrics]' ({err})") from err
    except Exception as err:  # a bad file fails inside torch.load / load_state_dict with many error types
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UsageError(f"{path} is not an Inception-v3 state dict in torch-fidelity's format: {first}") from err
    return fid.to(device)


def inception_network(path: Path, device: torch.device) -> Callable[[torch.Tensor], torch.Tensor]:
    """The FID's Inception-v3 (torchmetrics' wrapper of torch-fidelity's port): RGB uint8 [N, 3, H, W] in, the
    2048-d pool features out, resized inside as torch-fidelity resizes."""
    return _inception_fid(path, device).inception


@dataclass
class FeatureStats:
    """A feature set's Gaussian statistics as float64 running sums (torchmetrics' FID states: the sum, the sum of
    outer products, the count), and up to PR_ITEMS of the features, in the order given, for precision/recall."""

    total: torch.Tensor
    outer: torch.Tensor
    count: int
    kept: torch.Tensor

    @classmethod
    def of(cls, batches: Iterable[torch.Tensor], keep: int = PR_ITEMS) -> FeatureStats:
        """The statistics of feature batches [n, D], accumulated one batch at a time."""
        stats: FeatureStats | None = None
        for batch in batches:
            f = batch.detach().double()
            if stats is None:
                d = f.shape[1]
                stats = cls(f.new_zeros(d), f.new_zeros(d, d), 0, torch.empty(0, d))
            stats.total += f.sum(0)
            stats.outer += f.T @ f
            stats.count += len(f)
            if len(stats.kept) < keep:
                stats.kept = torch.cat([stats.kept, f[: keep - len(stats.kept)].float().cpu()])
        if stats is None or stats.count < 2:
            raise UsageError("the Fréchet distance needs at least 2 items per set")
        stats.total, stats.outer = stats.total.cpu(), stats.outer.cpu()
        return stats

    @property
    def mean(self) -> torch.Tensor:
        return self.total / self.count

    @property
    def cov(self) -> torch.Tensor:
        """The unbiased covariance, as torchmetrics forms it from its sums."""
        mean = self.mean[None]
        return (self.outer - self.count * mean.T @ mean) / (self.count - 1)

    def fid(self, other: FeatureStats) -> float:
        return frechet_from_moments(self.mean, self.cov, other.mean, other.cov)

    def precision_recall(self, fake: torch.Tensor) -> dict[str, float]:
        """{"precision", "recall"} of generated features against the kept real ones; {} for sets too small."""
        if len(self.kept) <= PR_K or len(fake) <= PR_K:
            return {}
        precision, recall = precision_recall(self.kept, fake, PR_K)
        return {"precision": precision, "recall": recall}


@torch.no_grad()
def image_features(
    net: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor, device: torch.device
) -> Iterator[torch.Tensor]:
    """Inception features of images [N, C, H, W] in [-1, 1], a batch at a time."""
    for batch in _batches(_images_uint8(images), device):
        yield net(batch).float()


def _feature_network(path: Path, device: torch.device) -> torch.nn.Module:
    if path.suffix == ".pt2":
        try:
            return torch.export.load(str(path)).module().to(device)  # exported programs have no eval(); none needed
        except RuntimeError as err:
            raise UsageError(f"{path} is not a torch.export feature network (torch.export.load failed)") from err
    try:
        net = torch.jit.load(str(path), map_location="cpu")
    except RuntimeError as err:
        raise UsageError(f"{path} is not a TorchScript feature network (torch.jit.load failed)") from err
    return net.eval().to(device)


@torch.no_grad()
def _features(net: torch.nn.Module, media: torch.Tensor, path: Path, device: torch.device) -> torch.Tensor:
    parts = []
    for batch in _batches(media, device):
        out = net(batch)
        if not isinstance(out, torch.Tensor) or out.dim() != 2 or len(out) != len(batch):
            shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise UsageError(f"{path} must return features [N, D] for a batch of {len(batch)}, got {shape}")
        parts.append(out.float().cpu())
    return torch.cat(parts)


class StandardMetric:
    """One modality's standard Fréchet distance against a fixed real set, whose features are computed once (or,
    for images, whose `reference` statistics are given: see `fid_stats.py`)."""

    def __init__(
        self,
        modality: str,
        real: torch.Tensor | None,
        weights_path: str | Path,
        device: str | torch.device = "cpu",
        reference: FeatureStats | None = None,
    ) -> None:
        if modality not in ("image", "video", "audio"):
            raise UsageError(f"no standard metric for modality {modality!r}")
        if real is None and (reference is None or modality != "image"):
            raise ValueError("StandardMetric needs real items, or for images reference statistics")
        self.path = weights_file(weights_path)
        self.modality = modality
        self.name = metric_name(modality, self.path)
        self.device = torch.device(device)
        self.reference_path: Path | None = None  # the cached statistics read as the real side, if any
        if modality == "image":
            self._inception = inception_network(self.path, self.device)
            if reference is None:
                assert real is not None  # checked above
                reference = FeatureStats.of(image_features(self._inception, real, self.device))
            self.reference = reference
        else:
            assert real is not None
            self._net = _feature_network(self.path, self.device)
            self._real = _features(self._net, real, self.path, self.device)

    def __call__(self, fake: torch.Tensor) -> dict[str, float]:
        """{name: distance}; for images also precision and recall (with more than PR_K items per set)."""
        if self.modality == "image":
            features = list(image_features(self._inception, fake, self.device))
            stats = FeatureStats.of(features, keep=len(fake))
            return {self.name: self.reference.fid(stats), **self.reference.precision_recall(stats.kept)}
        return {self.name: frechet_distance(self._real, _features(self._net, fake, self.path, self.device))}


def image_fid(
    real: torch.Tensor, fake: torch.Tensor, weights_path: str | Path, device: str | torch.device = "cpu"
) -> float:
    """FID between image sets [N, C, H, W] in [-1, 1] (C = 1 or 3) with a local Inception-v3 weights file."""
    return StandardMetric("image", real, weights_path, device)(fake)["fid"]


def feature_fd(
    real: torch.Tensor, fake: torch.Tensor, weights_path: str | Path, device: str | torch.device = "cpu"
) -> float:
    """Fréchet distance on the features of a local TorchScript or `.pt2` network (media batch -> [N, D])."""
    path, dev = weights_file(weights_path), torch.device(device)
    net = _feature_network(path, dev)
    return frechet_distance(_features(net, real, path, dev), _features(net, fake, path, dev))


def standard_metrics(
    modality: str,
    real: torch.Tensor,
    fake: torch.Tensor,
    weights_path: str | Path | None,
    device: str | torch.device = "cpu",
) -> dict[str, float | str]:
    """{"fid": x} for images, {"fd_<file stem>": x} for video and audio, or the skip note without weights."""
    if not weights_path:
        return dict(SKIPPED)
    return dict(StandardMetric(modality, real, weights_path, device)(fake))
