"""configs/: every option of every group composes, and a group's shared `_base` is no option of its own."""

import pytest
from omegaconf import OmegaConf

from djepa.cli.config import MODALITIES, compose_config
from djepa.cli.scripts import config_groups
from djepa.errors import UsageError


def test_every_option_of_every_group_composes_and_the_shared_files_are_not_options():
    groups = config_groups()
    assert set(groups) == {"benchmark", "loss", "modality", "model", "sample", "tokenizer", "train"}
    for group, options in groups.items():
        assert not [o for o in options if o.startswith("_")], group  # `_base`, `_paper`: listed in defaults only
        for option in options:
            if group != "modality":
                assert compose_config([f"{group}={option}"])[group] is not None
    assert set(groups["modality"]) == set(MODALITIES)
    for modality in MODALITIES:
        assert compose_config([f"modality={modality}"]).modality.name == modality
    with pytest.raises(UsageError, match=r"options: audio, djepa_b, .*, video\)$") as err:
        compose_config(["model=nope"])
    assert "_base" not in str(err.value) and "_paper" not in str(err.value)


def test_each_modality_file_keeps_the_shared_settings_and_states_its_own():
    image, video, audio = (compose_config([f"modality={m}"]) for m in ("image", "video", "audio"))
    # the shared base, once: the same network and tokenizer trainer where no file says otherwise
    assert image.model == video.model == audio.model
    assert image.tokenizer == video.tokenizer and audio.tokenizer.block_out_channels == [16, 32, 64, 64]
    assert image.train == audio.train
    assert video.train == OmegaConf.merge(image.train, {"steps": 1000, "prefix_mask_prob": 0.75})
    assert OmegaConf.merge(audio.sample, {"num_steps": 8, "temperature": 0.85}) == image.sample
    assert (image.sample.temperature, audio.sample.temperature, audio.sample.num_steps) == (0.85, 0.7, 16)
    assert (video.sample.temperature, video.sample.num_steps) == (0.7, 16)
    assert (video.loss.head.sampler, video.loss.head.sampling_steps) == ("heun", 10)
    assert (image.loss.head.sampling_steps, audio.loss.head.sampling_steps) == (15, 100)
    assert list(video.benchmark.variants) == ["djepa", "mar", "flow"] and video.benchmark.variants.flow == ["loss=flow"]
    # the paper sizes share their settings with MAR's, which add MAR's architecture and turn the JEPA loss off
    for size in ("b", "l", "h"):
        djepa = compose_config([f"model=djepa_{size}"])
        mar = compose_config([f"model=mar_{size}"])
        for cfg in (djepa, mar):
            assert (cfg.model.attn_drop, cfg.model.buffer_size, cfg.model.diffusion_batch_mul) == (0.1, 64, 4)
        assert (mar.loss.jepa_weight, djepa.loss.jepa_weight) == (0.0, 1.0)
        assert (mar.model.pos_embed, djepa.model.pos_embed) == ("learned", "factorised")


def test_train_blr_is_read_only_when_train_lr_is_null():
    # every config sets train.lr; the README's paper recipes set train.lr=null and scale train.blr by the batch
    from djepa.cli.train import train_config

    assert train_config(compose_config(["train.blr=1"])).peak_lr == 1e-3  # the default lr; blr unread
    recipe = train_config(compose_config(["train.lr=null", "train.blr=1e-4", "train.batch_size=1024"]))
    assert recipe.peak_lr == pytest.approx(4e-4)
