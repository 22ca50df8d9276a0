"""Hostile and damaged inputs: user folders, run state, disks, exports, the web demo. Each is one line naming
the path or key (exit status 2 from the commands), nothing written, nothing lost; or, where the input can be
used after all (a file name that is not UTF-8), the run goes on. A list that grows with every case found.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from djepa import builders
from djepa.modalities.folder import DataError
from djepa.modalities.image import ImageAdapter

POOL = {"_target_": "test_plugins.PoolTokenizer", "path": "none", "factor": 4}


@pytest.fixture
def pool_tokenizer():
    """The weightless test tokenizer of test_plugins, allow-listed as a plugin: latent caching in milliseconds."""
    with builders.allowed_plugins(["test_plugins"]):
        yield dict(POOL)


def write_class(root: Path, name: str | bytes, count: int = 2, good: bool = True) -> Path:
    folder = Path(os.fsdecode(os.path.join(os.fsencode(root), os.fsencode(name))))
    folder.mkdir(parents=True)
    for i in range(count):
        path = folder / f"{i}.png"
        if good:
            Image.new("L", (16, 16), 40 * i).save(path)
        else:
            path.write_bytes(b"\x89PNG truncated" if i else b"")
    return folder


def folder_adapter(tmp_path: Path, tokenizer: dict, data: Path) -> ImageAdapter:
    return ImageAdapter(tokenizer, [2, 2], str(tmp_path / "cache"), image_size=16, data_dir=str(data))


# ----------------------------------------------------------------------------- user folders


def test_names_that_are_not_utf8_are_read_and_the_run_goes_on(tmp_path, pool_tokenizer):
    data = tmp_path / "data"
    latin1 = write_class(data, b"caf\xe9")  # a Latin-1 folder name
    Image.new("L", (16, 16), 200).save(os.fsdecode(os.path.join(os.fsencode(latin1), b"\xe9t\xe9.png")))
    write_class(data, "tea")
    adapter = folder_adapter(tmp_path, pool_tokenizer, data)
    scan = adapter.scan()
    assert len(scan.fingerprint) == 32 and len(scan.files) == 5
    assert adapter.class_names == ["café", "tea"]
    json.dumps(adapter.class_names).encode()  # prints, goes into state.json
    tokens = adapter.token_data(device="cpu", workers=0)
    assert len(tokens) == 5 and adapter.skipped_files == 0
    # renaming the file to another non-UTF-8 name is a change of the folder
    before = scan.fingerprint
    os.rename(os.fsencode(latin1) + b"/\xe9t\xe9.png", os.fsencode(latin1) + b"/\xe8t\xe8.png")
    assert folder_adapter(tmp_path, pool_tokenizer, data).scan().fingerprint != before


def test_a_class_with_no_usable_file_is_refused_naming_it_on_every_run(tmp_path, pool_tokenizer):
    data = tmp_path / "data"
    write_class(data, "good")
    write_class(data, "broken", good=False)
    for _ in range(2):  # the run that builds the cache, and a re-run that finds it complete
        adapter = folder_adapter(tmp_path, pool_tokenizer, data)
        with pytest.raises(DataError, match=r"^class folder \S+/broken holds no readable images \(2 files skipped\)"):
            adapter.token_data(device="cpu", workers=0)
    assert len(list((tmp_path / "cache").iterdir())) == 1  # one cache, built once


def test_a_damaged_latent_cache_is_encoded_again_and_said_so(tmp_path, pool_tokenizer, caplog):
    data = tmp_path / "data"
    write_class(data, "a")
    write_class(data, "b")
    adapter = folder_adapter(tmp_path, pool_tokenizer, data)
    expected = adapter.token_data(device="cpu", workers=0)
    (cache,) = (tmp_path / "cache").iterdir()
    # a pickled object array in place of the labels: never unpickled
    np.save(cache / "labels.npy", np.array([{"x": 1}, None, 3, 4], dtype=object), allow_pickle=True)
    with caplog.at_level(logging.WARNING):
        again = folder_adapter(tmp_path, pool_tokenizer, data).token_data(device="cpu", workers=0)
    assert "labels.npy unreadable" in caplog.text and "encoding it again" in caplog.text
    assert again.labels.tolist() == expected.labels.tolist() and len(again) == 4
    assert np.load(cache / "labels.npy").dtype == np.int64
