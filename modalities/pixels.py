"""Pixel helpers shared by the image adapter, inpainting and the other adapters' previews: [-1, 1] tensors <->
uint8 arrays, fitting an image to the model's size, and preview grids."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError


def to_unit_range(pixels: torch.Tensor) -> torch.Tensor:
    return pixels.float() / 127.5 - 1.0


def grid_canvas(images: np.ndarray, rows: int) -> np.ndarray:
    """uint8 images [B, H, W, C] -> one canvas [rows * (H + 2), cols * (W + 2), C], filled row by row, each image
    framed by 1 px of black (2 px between neighbours): torchvision's `make_grid` with its outer pixel cut off."""
    from torchvision.utils import make_grid

    b, h, w, c = images.shape
    cols = -(-b // rows)
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2)
    # make_grid counts rows from the images, and hands back a lone image unframed: empty cells fill both in
    x = torch.cat([x, x.new_zeros(max(rows * cols - b, 2 - b), c, h, w)])
    grid = make_grid(x, nrow=cols, padding=2, pad_value=0)[:c, 1 : rows * (h + 2) + 1, 1 : cols * (w + 2) + 1]
    return grid.permute(1, 2, 0).numpy()


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """[C, H, W] or [B, C, H, W] in [-1, 1] -> uint8 HWC / BHWC arrays."""
    x = ((images.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.movedim(-3, -1).numpy()


def fit_image(img: Image.Image, size: int, channels: int) -> torch.Tensor:
    """Resize the short side to `size`, centre-crop, convert to [C, size, size] in [-1, 1]."""
    from torchvision.transforms.functional import pil_to_tensor

    img = img.convert("L" if channels == 1 else "RGB")
    w, h = img.size
    scale = size / min(w, h)
    img = img.resize((max(size, round(w * scale)), max(size, round(h * scale))), Image.Resampling.BICUBIC)
    w, h = img.size
    left, top = (w - size) // 2, (h - size) // 2
    return to_unit_range(pil_to_tensor(img.crop((left, top, left + size, top + size))))


# A decompression bomb (a small file that decodes to hundreds of megapixels) is an unusable file too.
IMAGE_ERRORS = (
    UnidentifiedImageError,
    OSError,
    ValueError,
    SyntaxError,
    Image.DecompressionBombError,
    Image.DecompressionBombWarning,
)


def save_canvas(images: torch.Tensor, rows: int, path: Path, scale: int = 2) -> Path:
    """[B, C, H, W] in [-1, 1] as one PNG grid of `rows` rows at `scale` times the size (nearest neighbour)."""
    canvas = grid_canvas(to_uint8(images), rows)
    img = Image.fromarray(canvas[..., 0] if canvas.shape[-1] == 1 else canvas)
    img = img.resize((img.width * scale, img.height * scale), Image.Resampling.NEAREST)
    path = Path(path).with_suffix(".png")
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
    return path
