"""Colour-blind view of images for the benchmark classifier: luminance, polarity and contrast normalised.

When ink and ground colours vary independently of the class, a classifier that saw colour could learn the
colours of the training set instead of the shapes, and a generator could score by painting the right colours.
The classifier therefore sees one grey channel with ink bright on a dark ground, stretched to [-1, 1]: the
form the grey MNIST digits already have, so a classifier trained on grey digits reads coloured ones.
"""

from __future__ import annotations

import torch

# ITU-R BT.601 luma weights (what PIL's convert("L") uses): the brightness a viewer sees the digit by.
LUMA = (0.299, 0.587, 0.114)


def luminance(images: torch.Tensor) -> torch.Tensor:
    """[B, C, H, W] in [-1, 1] -> [B, 1, H, W]; one channel is kept as it is, three are weighted by LUMA."""
    if images.shape[1] == 1:
        return images.float()
    if images.shape[1] != 3:
        raise ValueError(f"luminance needs 1 or 3 channels, got {images.shape[1]}")
    weights = torch.tensor(LUMA, dtype=torch.float32).view(1, 3, 1, 1)
    return (images.float() * weights).sum(1, keepdim=True)


def border_mask(height: int, width: int, border: int) -> torch.Tensor:
    mask = torch.ones(height, width, dtype=torch.bool)
    mask[border:-border, border:-border] = False
    return mask


def colour_blind(
    images: torch.Tensor, border: int = 2, ink_quantile: float = 0.99, min_range: float = 0.1
) -> torch.Tensor:
    """Grey images [B, 1, H, W] in [-1, 1], ink bright (+1) on a dark ground (-1), decided per image.

    - ground level: the median of the outer `border` pixels (a centred object leaves the border to the ground);
    - polarity: the ink is on the side of the ground that the central half's mean lies on (the centre mixes
      ground and ink, so its mean departs from the ground towards the ink); dark ink is flipped to bright;
    - contrast: ground -> -1 and the `ink_quantile` level (a quantile, not the maximum, so one stray pixel of
      a sample does not set the scale) -> +1, clamped. A nearly blank image has no ink to stretch:
      `min_range` keeps its noise from being blown up to full contrast.
    """
    y = luminance(images)
    b, _, h, w = y.shape
    flat = y.view(b, -1)
    ground = flat[:, border_mask(h, w, border).flatten()].median(1).values
    centre = y[:, 0, h // 4 : h - h // 4, w // 4 : w - w // 4].reshape(b, -1).mean(1)
    sign = torch.where(centre < ground, -1.0, 1.0)
    oriented = flat * sign[:, None]
    ground = ground * sign
    ink = oriented.quantile(ink_quantile, dim=1)
    scale = (ink - ground).clamp_min(min_range)
    out = (oriented - ground[:, None]) / scale[:, None] * 2 - 1
    return out.clamp(-1, 1).view(b, 1, h, w)
