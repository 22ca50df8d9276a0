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


def test_generated_scores_a_run_trained_on_the_words_per_word_beside_real_and_round_trip(tmp_path):
    from djepa.cli import train

    words.make_words(tmp_path / "words", per_word=2, test_per_word=1, listener_per_word=2, seed=3)
    run_dir = tmp_path / "run"
    tiny = ["model=tiny", "train.steps=2", "train.batch_size=4", "sample.preview_per_class=0", "sample.num_steps=2"]
    tiny += ["loss.head.sampling_steps=2", "tokenizer.block_out_channels=[8,8,8]", "tokenizer.norm_num_groups=4"]
    tiny += ["tokenizer.steps=2", "tokenizer.batch_size=4"]
    home = [f"home={tmp_path / 'home'}", "device=cpu", "modality=audio"]
    train.run(
        train.compose_config(
            [*home, f"modality.adapter.data_dir={tmp_path / 'words/train'}", f"run_dir={run_dir}", *tiny]
        )
    )
    out, options = words.generated_options(
        [f"out={tmp_path / 'words'}", f"run_dir={run_dir}", "per_word=2", "listener_steps=2", "sample.temperature=0.5"]
    )
    assert options["sampling"] == {"temperature": 0.5} and "head_steps" not in options
    report = words.generated(out, **options)
    assert report["generated_clips"] == 20 and report["sampling"]["temperature"] == 0.5
    assert report["sampling"]["num_steps"] == 2  # the run's own setting where none is given
    assert list(report["generated_per_word"]) == words.WORDS == list(report["roundtrip_per_word"])
    mean = sum(report["generated_per_word"].values()) / len(words.WORDS)
    assert abs(mean - report["generated_accuracy"]) < 1e-3  # equal clips per word: the mean of the words
    wrong = sum(sum(c.values()) for c in report["generated_heard_as"].values())
    assert wrong == round(20 * (1 - report["generated_accuracy"]))  # every misheard clip is counted once
    assert words.misheard(torch.tensor([2, 0, 2]), torch.tensor([0, 0, 1]), sorted(words.WORDS)) == {
        "down": {"left": 1},
        "go": {"left": 1},
    }
    assert json.loads((out / "generated.json").read_text()) == report
    assert json.loads((out / "roundtrip.json").read_text())["tokenizer"] == report["tokenizer"]
    from PIL import Image

    assert Image.open(out / "generated.png").size[0] > Image.open(out / "generated.png").size[1]  # 10 columns, 4 rows
    with pytest.raises(UsageError, match="run_dir=RUN"):
        words.parse(["generated", "out=x"])
    with pytest.raises(UsageError, match="sample.guidance_scale=high is not a float"):
        words.parse(["generated", "out=x", "run_dir=y", "sample.guidance_scale=high"])
    with pytest.raises(UsageError, match="unknown argument 'sample.cfg=2'"):
        words.parse(["generated", "out=x", "run_dir=y", "sample.cfg=2"])
