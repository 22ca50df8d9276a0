"""User folders (root/<class>/<files>, or root/<files> for an unconditional model): the file list, its
fingerprint, and a lazy torch Dataset over it."""

from __future__ import annotations

import functools
import hashlib
import logging
import os
from collections.abc import Callable, Sized
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import Dataset

from djepa.engine.adapter import UNCONDITIONAL
from djepa.errors import UsageError

log = logging.getLogger(__name__)


class DataError(UsageError):
    """A user data source is unusable (missing, empty, no class folders); the message names it."""


@dataclass(frozen=True)
class FolderScan:
    """Every candidate file under root/<class>/ (or straight in root: the one class `unconditional`) in a fixed
    order, its class id, and the class names."""

    root: Path
    files: list[Path]
    labels: list[int]
    class_names: list[str]

    @functools.cached_property
    def fingerprint(self) -> str:
        """What the latents depend on in the folder: each file's path, size and mtime (ns), and the classes.

        Adding, removing, replacing or touching a file, or adding/removing a class, changes it; reading
        the contents is not needed (a stat per file: seconds for a million files)."""
        digest = hashlib.sha256()
        digest.update("\0".join(self.class_names).encode())
        for path, label in zip(self.files, self.labels):
            stat = path.stat()
            # The name's bytes as the file system holds them: a name that is not UTF-8 hashes as well.
            digest.update(b"\n" + os.fsencode(path.relative_to(self.root)))
            digest.update(f"\0{label}\0{stat.st_size}\0{stat.st_mtime_ns}".encode())
        return digest.hexdigest()[:32]


def readable_name(name: str) -> str:
    """A file or folder name as text: one that is not valid UTF-8 (a Latin-1 `caf\\xe9`) reads as Latin-1, so a
    class name prints, goes into JSON and matches a prompt (`café`)."""
    raw = os.fsencode(name)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def class_folders(root: Path) -> list[Path]:
    """Class subfolders of a user data directory (none: an unlabelled folder), refusing a missing root and an
    empty class folder."""
    if not root.is_dir():
        raise DataError(f"data_dir {root} does not exist or is not a directory")
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    for folder in folders:
        # A class with no items would be a label the model is asked for but never sees: refuse it.
        if next((p for p in folder.rglob("*") if p.is_file()), None) is None:
            raise DataError(f"class folder {folder} is empty: add files to it or remove it")
    return folders


def loose_media(root: Path, suffixes: set[str]) -> list[Path]:
    """The media files straight in `root` (by suffix, hidden ones left out), sorted."""
    return sorted(
        p for p in root.iterdir() if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in suffixes
    )


def scan_user_folder(root: Path, suffixes: set[str], skip_hidden: bool) -> FolderScan:
    """root/<class>/<files> labelled by class, or media files straight in root (no class subfolders) as the one
    class `unconditional`; both at once, or neither, is a one-line DataError naming what was found."""
    folders = class_folders(root)
    loose = loose_media(root, suffixes)
    if folders and loose:
        raise DataError(
            f"data_dir {root} mixes loose files ({loose[0].name}) and class subfolders ({folders[0].name}/): "
            "move the files into class folders, or out of the folders for an unconditional model"
        )
    if folders:
        return scan_class_folders(folders, root, skip_hidden)
    if not loose:
        raise DataError(
            f"data_dir {root} has no class subfolders and no media files ({', '.join(sorted(suffixes))}): "
            f"expected {root}/<class>/<files>, or the files straight in it for an unconditional model"
        )
    return FolderScan(root, loose, [0] * len(loose), [UNCONDITIONAL])


def scan_class_folders(folders: list[Path], root: Path, skip_hidden: bool) -> FolderScan:
    """The files of each class folder (recursively, sorted), labelled by the folder's position."""
    files, labels = [], []
    for label, folder in enumerate(folders):
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            if skip_hidden and path.name.startswith("."):
                continue
            files.append(path)
            labels.append(label)
    return FolderScan(root, files, labels, [readable_name(f.name) for f in folders])


class FileDataset(Dataset):
    """Reads one file per item on demand: (index, media or None when the file is unusable, label).

    `read(path)` turns a file into a media tensor and raises one of `errors` for a bad file, which is
    logged and reported as None, never fatal. With `flip`, items len..2*len-1 are the mirrored copies
    (last axis), MAR's augmentation cached with the latents.
    """

    def __init__(
        self,
        files: list[Path],
        labels: list[int],
        read: Callable[[Path], torch.Tensor],
        errors: tuple[type[BaseException], ...],
        flip: bool = False,
    ):
        self.files = list(files)
        self.labels = list(labels)
        self.read = read
        self.errors = errors
        self.copies = 2 if flip else 1

    def __len__(self) -> int:
        return len(self.files) * self.copies

    def label(self, index: int) -> int:
        return self.labels[index % len(self.files)]

    def __getitem__(self, index: int) -> tuple[int, torch.Tensor | None, int]:
        path = self.files[index % len(self.files)]
        try:
            media = self.read(path)
        except self.errors as err:
            log.warning("skipping unusable file %s: %s", path, err)
            return index, None, self.label(index)
        if index >= len(self.files):
            media = media.flip(-1)
        return index, media, self.label(index)


class MemoryDataset(Dataset):
    """Media already in memory (the embedded defaults): the same items FileDataset gives, none bad."""

    copies = 1

    def __init__(self, media: torch.Tensor, labels: torch.Tensor):
        self.media = media
        self.labels = labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[int, torch.Tensor | None, int]:
        return index, self.media[index], int(self.labels[index])


class MappedDataset(Dataset):
    """Another dataset's items with `fn` applied to each usable one as it is read (e.g. thinning a clip's frames
    before it is kept in memory); len and labels as the original's."""

    def __init__(self, dataset: Dataset, fn: Callable[[torch.Tensor], torch.Tensor]):
        self.dataset = dataset
        self.fn = fn

    def __len__(self) -> int:
        return dataset_length(self.dataset)

    def __getitem__(self, index: int) -> tuple[int, torch.Tensor | None, int]:
        i, media, label = self.dataset[index]
        return i, None if media is None else self.fn(media), label


def collate_items(items: list[tuple[int, torch.Tensor | None, int]]) -> dict[str, torch.Tensor]:
    """A batch: every item's index, label and ok flag, and the media of the usable ones stacked."""
    good = [m for _, m, _ in items if m is not None]
    return {
        "index": torch.tensor([i for i, _, _ in items], dtype=torch.long),
        "label": torch.tensor([y for _, _, y in items], dtype=torch.long),
        "ok": torch.tensor([m is not None for _, m, _ in items], dtype=torch.bool),
        "media": torch.stack(good) if good else torch.empty(0),
    }


def dataset_length(dataset: Dataset) -> int:
    """The length of a map-style dataset (torch's Dataset declares none; every dataset here has one)."""
    if not isinstance(dataset, Sized):
        raise TypeError(f"{type(dataset).__name__} has no length")
    return len(dataset)


def stack_dataset(dataset: Dataset) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Every usable item in memory, for the small consumers that want tensors (tokenizer training, the
    benchmark classifier); latent caching never does this. Returns media, labels, skipped count."""
    media, labels, skipped = [], [], 0
    for i in range(dataset_length(dataset)):
        _, item, label = dataset[i]
        if item is None:
            skipped += 1
            continue
        media.append(item)
        labels.append(label)
    copies = getattr(dataset, "copies", 1)
    if not media:
        return torch.empty(0), torch.empty(0, dtype=torch.long), skipped // copies
    return torch.stack(media), torch.tensor(labels), skipped // copies


def load_folder(
    scan: FolderScan, dataset: Dataset, root: Path, what: str
) -> tuple[torch.Tensor, torch.Tensor, list[str], int]:
    """A scanned folder's usable items stacked in memory (tokenizer training, the benchmark classifier), their
    labels, the class names and the count of skipped files; no usable `what` at all is a DataError."""
    items, labels, skipped = stack_dataset(dataset)
    if not len(items):
        raise DataError(f"data_dir {root} holds no {what} ({skipped} files skipped)")
    return items, labels, scan.class_names, skipped
