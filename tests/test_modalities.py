import pytest
import torch
from PIL import Image

from djepa.modalities.base import DataError, patchify, unpatchify
from djepa.modalities.image import ImageAdapter, load_image_folder, load_mnist_digits


@pytest.mark.parametrize(
    "shape,patch",
    [((2, 3, 8), (2,)), ((2, 4, 8, 6), (2, 3)), ((2, 4, 4, 8, 8), (1, 2, 2)), ((1, 4, 8, 8), (1, 1))],
)
def test_patchify_round_trips_any_rank(shape, patch):
    x = torch.randn(shape)
    tokens = patchify(x, patch)
    grid = tuple(s // p for s, p in zip(shape[2:], patch))
    assert tokens.shape == (
        shape[0],
        torch.tensor(grid).prod().item(),
        shape[1] * torch.tensor(patch).prod().item(),
    )
    assert torch.equal(unpatchify(tokens, grid, patch, shape[1]), x)


def test_patchify_keeps_a_patch_together():
    x = torch.arange(16.0).view(1, 1, 4, 4)
    tokens = patchify(x, (2, 2))
    assert tokens[0, 0].tolist() == [0.0, 1.0, 4.0, 5.0]


def test_embedded_mnist_is_balanced_real_digits():
    digits, labels = load_mnist_digits()
    assert digits.shape == (5000, 28, 28) and digits.dtype == torch.uint8
    assert torch.bincount(labels).tolist() == [500] * 10
    assert digits.float().mean() > 10  # ink, not blank


def write_images(root, per_class=3):
    for name in ("cat", "dog"):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            Image.new("RGB", (40 + i, 30), (i * 40, 100, 200)).save(root / name / f"{i}.png")


def test_image_folder_skips_and_counts_bad_files(tmp_path):
    write_images(tmp_path)
    (tmp_path / "cat" / "broken.png").write_bytes(b"\x89PNG not really")
    (tmp_path / "dog" / "empty.jpg").write_bytes(b"")
    (tmp_path / "dog" / "notes.txt").write_text("hello")
    images, labels, names, skipped = load_image_folder(tmp_path, 16, 3)
    assert images.shape == (6, 3, 16, 16)
    assert images.min() >= -1 and images.max() <= 1
    assert labels.tolist() == [0, 0, 0, 1, 1, 1]
    assert names == ["cat", "dog"]
    assert skipped == 3


def test_folder_errors_name_the_path(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_image_folder(tmp_path / "missing", 16, 3)
    with pytest.raises(DataError, match="no class subfolders"):
        load_image_folder(tmp_path, 16, 3)
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.png").write_bytes(b"junk")
    with pytest.raises(DataError, match="no readable images"):
        load_image_folder(tmp_path, 16, 3)


def test_adapter_writes_png_and_grid(tmp_path):
    adapter = ImageAdapter({"path": str(tmp_path / "none")}, [1, 1], str(tmp_path / "cache"), channels=3)
    imgs = torch.rand(6, 3, 8, 8) * 2 - 1
    path = adapter.save(imgs[0], tmp_path / "one")
    assert path.suffix == ".png" and Image.open(path).size == (8, 8)
    grid = adapter.save_grid(imgs, 2, tmp_path / "grid.png", scale=1)
    assert Image.open(grid).size == (3 * 10, 2 * 10)


def test_missing_tokenizer_says_how_to_make_it(tmp_path):
    adapter = ImageAdapter({"path": str(tmp_path / "nowhere")}, [1, 1], str(tmp_path / "cache"))
    with pytest.raises(FileNotFoundError, match="train_tokenizer modality=image"):
        _ = adapter.tokenizer


def test_flip_augmentation_adds_mirrored_copies(tmp_path):
    write_images(tmp_path / "data")
    plain = ImageAdapter(
        {"path": "x"}, [1, 1], str(tmp_path), image_size=16, channels=3, data_dir=str(tmp_path / "data")
    )
    flipped = ImageAdapter(
        {"path": "x"}, [1, 1], str(tmp_path), image_size=16, channels=3, data_dir=str(tmp_path / "data"), flip=True
    )
    images, labels = plain.load_dataset()
    both, both_labels = flipped.load_dataset()
    assert len(both) == 2 * len(images) and both_labels.tolist() == labels.tolist() * 2
    assert torch.equal(both[len(images) :], images.flip(-1))
    assert plain.source_id() != flipped.source_id()  # separate latent caches


def test_decompression_bomb_is_skipped_and_counted(tmp_path, monkeypatch):
    from PIL import Image

    write_images(tmp_path)
    # A real bomb is a 15000x15000 PNG; lowering PIL's limit makes any image over it one, cheaply.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1300)  # the good images have at most 42 x 30 = 1260 px
    Image.new("L", (60, 60)).save(tmp_path / "cat" / "bomb.png")  # 3600 px: over twice the limit -> error
    Image.new("L", (45, 45)).save(tmp_path / "dog" / "big.png")  # 2025 px: between the limit and twice -> warning
    images, labels, _, skipped = load_image_folder(tmp_path, 16, 3)
    assert skipped == 2 and labels.tolist() == [0, 0, 0, 1, 1, 1]


def test_empty_class_folder_is_an_error_naming_it(tmp_path):
    write_images(tmp_path)
    (tmp_path / "eel").mkdir()
    with pytest.raises(DataError, match="class folder .*eel is empty"):
        load_image_folder(tmp_path, 16, 3)
