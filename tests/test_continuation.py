"""Continuation: prefix masks in training, the video prime mask, and the continuation measurement."""

import pytest
import torch

from djepa.benchmarks.experiments.continuation import continuation_scores
from djepa.nn.masking import prefix_mask


@pytest.mark.parametrize("grid, axis", [((8, 2, 2), 0), ((4, 8), -1), ((16,), 0)])
def test_prefix_mask_keeps_a_time_prefix_visible_and_masks_only_later_tokens(grid, axis):
    n = torch.Size(grid).numel()
    position = torch.arange(grid[axis]).view([grid[axis] if a == axis % len(grid) else 1 for a in range(len(grid))])
    position = position.expand(grid).flatten()
    seen_keeps = set()
    for seed in range(40):
        mask = prefix_mask(6, grid, axis, 0.7, torch.Generator().manual_seed(seed))
        assert mask.shape == (6, n) and mask.dtype == torch.bool
        counts = mask.sum(1)
        assert (counts == counts[0]).all() and counts[0] >= 1  # one count per batch: the model needs it
        first_masked = int(position[mask.any(0)].min())
        visible_prefix = position < first_masked
        assert not mask[:, visible_prefix].any()  # the prefix is fully visible in every row
        later = position >= first_masked
        assert counts[0] >= 0.7 * int(later.sum()) - 1  # most of the rest is hidden (ratio drawn from [0.7, 1])
        seen_keeps.add(first_masked)
    assert len(seen_keeps) > 1  # the prefix length varies between batches
    with pytest.raises(ValueError, match="at least 2"):
        prefix_mask(2, (1, 4), 0)


def test_continuation_scores_tell_a_continued_digit_from_a_chance_one():
    from djepa.modalities.video import moving_digits

    clips, labels = moving_digits(40, 8, 32, 20, seed=3)
    clips = clips[:, :, None]
    always_right = lambda frames: torch.nn.functional.one_hot(torch.zeros(len(frames), dtype=torch.long), 10).float()  # noqa: E731
    perfect = continuation_scores(clips, clips, labels, 2, always_right)
    assert perfect["centroid_px_first_generated"] == pytest.approx(0.0, abs=1e-4)
    assert perfect["chance_px_first_generated"] > 2.0  # another clip of the class sits elsewhere
    assert perfect["generated_frame_accuracy"] == pytest.approx(float((labels == 0).float().mean()))
    # A "model" that draws the right digit in the wrong place: another clip of the same class.
    from djepa.benchmarks.experiments.probes import same_class_derangement

    lost = continuation_scores(clips, clips[same_class_derangement(labels)], labels, 2, always_right)
    assert lost["centroid_px_first_generated"] == pytest.approx(lost["chance_px_first_generated"])
    assert len(lost["centroid_px_per_frame"]) == 8 and lost["primed_frames"] == 2


def test_video_prime_mask_matches_prime_tokens_and_counts_frames(tmp_path):
    from djepa.modalities.video import VideoAdapter

    adapter = VideoAdapter({"path": str(tmp_path / "tok")}, [2, 2, 2], str(tmp_path / "c"), frames=8, image_size=16)
    adapter.train_tokenizer(dict(block_out_channels=[8, 16], norm_num_groups=4, steps=1, batch_size=8, holdout=0.1))
    assert adapter.token_grid == (4, 4, 4) and adapter.time_axis == 0
    mask, frames = adapter.prime_mask(4)
    assert frames == 4 and mask.sum() == 32 and mask[:32].all()
    mask, frames = adapter.prime_mask(8)  # never all of it: one row is left to generate
    assert frames == 6 and mask.sum() == 48
    held, labels = adapter.heldout_dataset()
    train, _ = adapter.load_dataset()
    assert held.shape[1:] == train.shape[1:] and len(held) == len(labels) == 300
    assert not torch.equal(held[:5], train[:5])  # new trajectories


def test_trainer_draws_prefix_masks_only_when_asked(tmp_path, make_tiny_model):
    from djepa.engine.data import TokenData
    from djepa.engine.trainer import TrainConfig, Trainer, step_seed
    from djepa.nn.masking import training_mask

    tiny_model = make_tiny_model

    grid = (4, 2, 2)
    data = TokenData(torch.randn(32, 16, 4), None, torch.arange(32) % 3)
    plain = TrainConfig(steps=2, batch_size=8, lr=1e-3)
    model = tiny_model(grid)
    with pytest.raises(ValueError, match="time axis"):
        Trainer(model, data, TrainConfig(steps=2, batch_size=8, lr=1e-3, prefix_mask_prob=1.0), tmp_path / "a", "cpu")
    off = Trainer(tiny_model(grid), data, plain, tmp_path / "b", torch.device("cpu"), token_grid=grid, time_axis=0)
    on = Trainer(
        tiny_model(grid),
        data,
        TrainConfig(steps=2, batch_size=8, lr=1e-3, prefix_mask_prob=1.0),
        tmp_path / "c",
        torch.device("cpu"),
        token_grid=grid,
        time_axis=0,
    )
    for step in range(6):
        tokens, _, mask = on.batch(step)
        first = int(torch.nonzero(mask.any(0))[0, 0])
        assert first % 4 == 0 and first > 0 and not mask[:, :first].any()  # whole leading time rows visible
        # with the key at 0 the mask is the random one the Trainer always drew (no extra random draw)
        expected = training_mask(8, 16, 0.7, torch.Generator().manual_seed(step_seed(0, step)))
        assert torch.equal(off.batch(step)[2], expected)


def test_video_trains_with_prefix_masks_by_default_and_a_one_row_clip_says_which_key(tmp_path):
    from djepa.cli import train
    from djepa.errors import UsageError

    home = tmp_path / "home"
    video = [
        "modality=video",
        f"home={home}",
        f"run_dir={tmp_path / 'run'}",
        "modality.adapter.frames=2",  # 2 frames in one [2, 4, 4] patch: a single token row along time
        "modality.adapter.num_clips=20",
        "tokenizer.block_out_channels=[8,8,8]",
        "tokenizer.norm_num_groups=4",
        "tokenizer.steps=2",
    ]
    cfg = train.compose_config(video)
    assert cfg.train.prefix_mask_prob == 0.75  # the video default (README: continuation)
    assert train.compose_config(["modality=audio"]).train.prefix_mask_prob == 0.0
    with pytest.raises(UsageError, match=r"train.prefix_mask_prob: the token grid \(1, 2, 2\) has one position"):
        train.run(cfg)
    # refused before the latent cache or a checkpoint was written (the tokenizer it needed to know the grid stays)
    assert not (home / "cache").exists() and not (tmp_path / "run" / "checkpoints").exists()
