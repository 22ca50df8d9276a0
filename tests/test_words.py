"""The spoken-words case: ten command words in class folders at 22,050 Hz, natural lengths, room noise, and the
listener's voices held out of the folder's."""

import json

import numpy as np
import pytest
import torch

from djepa.benchmarks.experiments import words
from djepa.benchmarks.listener import ListenerFrontEnd
from djepa.errors import UsageError

pytest.importorskip("espeakng_loader")


def test_words_are_written_as_class_folders_with_voices_held_out_for_the_listener(tmp_path):
    import soundfile as sf

    counts = words.make_words(tmp_path, per_word=1, test_per_word=0, listener_per_word=1, seed=5)
    assert counts == {"train": 10, "test": 0, "listener": 10}
    assert sorted(p.name for p in (tmp_path / "train").iterdir()) == sorted(words.WORDS)
    lengths = []
    for path in sorted((tmp_path / "train").rglob("*.wav")):
        clip, rate = sf.read(path, dtype="float32")
        assert rate == words.SAMPLE_RATE and clip.ndim == 1
        lengths.append(len(clip) / rate)
        edge = np.abs(clip[: int(0.01 * rate)])
        assert 0 < edge.max() < 0.1 * np.abs(clip).max()  # room noise before the word, well below it
    assert 0.2 < min(lengths) and max(lengths) < 1.2 and max(lengths) - min(lengths) > 0.1  # natural lengths
    assert not set(words.split_voices("train")) & set(words.split_voices("listener"))
    assert json.loads((tmp_path / "words.json").read_text())["clips"] == counts
    # the listener hears them at their own rate (a 25 ms window is 551 samples there, more than 16 kHz's FFT)
    features = ListenerFrontEnd(words.SAMPLE_RATE)(torch.from_numpy(clip)[None, None])
    assert features.shape == (1, 1, 40, 1 + len(clip) // 220) and features.max() == 1.0
    with pytest.raises(UsageError, match="per_word=x must be a whole number"):
        words.parse(["make", "out=x", "per_word=x"])
    with pytest.raises(UsageError, match="usage"):
        words.parse(["listen", "out=x"])
