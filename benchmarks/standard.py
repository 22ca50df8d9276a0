"""Standard Fréchet distances from feature networks the user supplies as local files; nothing is downloaded.

- image: FID on Inception-v3 pool features (torchmetrics over torch-fidelity), from an Inception state dict in
  torch-fidelity's format (the file its FID downloads, or one made with its `util_convert_inception_weights`).
- video, audio: the same hook for any feature network saved as TorchScript (`torch.jit.save`) or, named `*.pt2`,
  as a `torch.export` program (an exported I3D for FVD, VGGish for FAD, ...). It receives the media exactly as
  the adapter makes them — video [N, T, C, H, W] in [-1, 1], audio waveforms [N, samples] at the modality's
  sample rate — and returns features [N, D]; resizing, resampling or normalisation the network needs belongs
  inside the exported module.

Without a weights file the metric is skipped with `SKIP_NOTE`.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from djepa.benchmarks.metrics import frechet_distance
from djepa.errors import UsageError

if TYPE_CHECKING:
    from torchmetrics.image.fid import FrechetInceptionDistance

SKIP_NOTE = "skipped: no local weights given (standard_weights=PATH); nothing is downloaded"
SKIPPED = {"standard_metrics": SKIP_NOTE}
BATCH = 32


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
    """One modality's standard Fréchet distance against a fixed real set, whose features are computed once."""

    def __init__(
        self, modality: str, real: torch.Tensor, weights_path: str | Path, device: str | torch.device = "cpu"
    ) -> None:
        if modality not in ("image", "video", "audio"):
            raise UsageError(f"no standard metric for modality {modality!r}")
        self.path = weights_file(weights_path)
        self.modality = modality
        self.name = metric_name(modality, self.path)
        self.device = torch.device(device)
        if modality == "image":
            self._fid = _inception_fid(self.path, self.device)
            for batch in _batches(_images_uint8(real), self.device):
                self._fid.update(batch, real=True)
        else:
            self._net = _feature_network(self.path, self.device)
            self._real = _features(self._net, real, self.path, self.device)

    def __call__(self, fake: torch.Tensor) -> dict[str, float]:
        if self.modality == "image":
            self._fid.reset()  # keeps the real statistics (reset_real_features=False)
            for batch in _batches(_images_uint8(fake), self.device):
                self._fid.update(batch, real=False)
            return {self.name: float(self._fid.compute())}
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
