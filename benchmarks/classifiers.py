"""Small per-modality classifiers trained on real embedded data: the feature network of the metrics."""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn
from tqdm import tqdm

from djepa.chunks import map_chunks
from djepa.io import atomic_write_json, atomic_write_safetensors


class ConvClassifier(nn.Module):
    """A few conv blocks over a 2-D input (image, frame or spectrogram) -> penultimate features -> logits."""

    def __init__(self, in_channels: int, num_classes: int, width: int = 16, feature_dim: int = 128):
        super().__init__()
        self.config = {
            "in_channels": in_channels,
            "num_classes": num_classes,
            "width": width,
            "feature_dim": feature_dim,
        }

        def block(cin: int, cout: int) -> nn.Sequential:
            return nn.Sequential(
                nn.Conv2d(cin, cout, 3, padding=1),
                nn.BatchNorm2d(cout),
                nn.ReLU(),
                nn.Conv2d(cout, cout, 3, padding=1),
                nn.BatchNorm2d(cout),
                nn.ReLU(),
                nn.MaxPool2d(2),
            )

        self.body = nn.Sequential(
            block(in_channels, width),
            block(width, 2 * width),
            block(2 * width, 4 * width),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(4 * width, feature_dim),
            nn.ReLU(),
        )
        self.head = nn.Sequential(nn.Dropout(0.2), nn.Linear(feature_dim, num_classes))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))

    @torch.no_grad()
    def predict(self, x: torch.Tensor, batch_size: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits and penultimate features, in eval mode."""
        self.eval()

        def logits_and_features(chunk: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            features = self.features(chunk.float())
            return self.head(features), features

        logits, features = map_chunks(logits_and_features, x, batch_size)
        return logits, features


def random_shift(x: torch.Tensor, pixels: int, generator: torch.Generator) -> torch.Tensor:
    """Shift each item by up to `pixels` along the last two axes (padding with the minimum)."""
    if pixels == 0:
        return x
    padded = F.pad(x, (pixels,) * 4, value=float(x.min()))
    h, w = x.shape[-2:]
    out = torch.empty_like(x)
    offsets = torch.randint(0, 2 * pixels + 1, (len(x), 2), generator=generator)
    for i, (dy, dx) in enumerate(offsets.tolist()):
        out[i] = padded[i, ..., dy : dy + h, dx : dx + w]
    return out


def train_classifier(
    x: torch.Tensor,
    y: torch.Tensor,
    num_classes: int,
    steps: int = 400,
    batch_size: int = 128,
    holdout: float = 0.1,
    shift: int = 2,
    seed: int = 0,
) -> tuple[ConvClassifier, float]:
    """Train on real data; returns the model and its accuracy on a held-out split."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    perm = torch.randperm(len(x), generator=gen)
    n_hold = max(1, int(len(x) * holdout))
    hold, train = perm[:n_hold], perm[n_hold:]
    model = ConvClassifier(x.shape[1], num_classes)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3, total_steps=steps)
    model.train()
    for _ in tqdm(range(steps), desc="train classifier", leave=False):
        idx = train[torch.randint(len(train), (batch_size,), generator=gen)]
        loss = F.cross_entropy(model(random_shift(x[idx], shift, gen)), y[idx], label_smoothing=0.05)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    logits, _ = model.predict(x[hold])
    return model, float((logits.argmax(1) == y[hold]).float().mean())


def load_or_train_classifier(
    path: Path, x: torch.Tensor, y: torch.Tensor, num_classes: int, **kwargs
) -> tuple[ConvClassifier, float]:
    """Cached at `path` (.safetensors + .json) after the first training."""
    path = Path(path)
    meta_path = path.with_suffix(".json")
    if path.is_file() and meta_path.is_file():
        meta = json.loads(meta_path.read_text())
        model = ConvClassifier(**meta["config"])
        model.load_state_dict(load_file(str(path)))
        return model.eval(), meta["heldout_accuracy"]
    model, acc = train_classifier(x, y, num_classes, **kwargs)
    atomic_write_safetensors(path, model.state_dict())
    atomic_write_json(meta_path, {"config": model.config, "heldout_accuracy": acc})
    return model.eval(), acc
