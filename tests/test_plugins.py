"""One way to plug parts in (djepa.builders): a tokenizer or a denoising head is a class plus a config entry naming
it by `_target_`, with no edit to an adapter or the model."""

from __future__ import annotations

import pytest
import torch

from djepa.builders import TOKENIZER, allowed_plugins, build
from djepa.errors import UsageError
from djepa.modalities.image import ImageAdapter
from djepa.nn.heads import FlowHead
from djepa.nn.model import DJEPA
from djepa.tokenizers.base import LatentTokenizer


class PoolTokenizer(LatentTokenizer):
    """A test-only tokenizer with no weights: average pooling by `factor`, nearest upsampling back."""

    def __init__(self, path: str, factor: int = 2, channels: int | None = None, how_to_make: str = ""):
        self.path, self.factor, self.offered = path, factor, {"channels": channels, "how_to_make": how_to_make}
        self.latent_channels = 1
        self.downsample = (factor, factor)

    def encode_moments(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean = torch.nn.functional.avg_pool2d(x.float(), self.factor)
        return mean, torch.zeros_like(mean)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return z.repeat_interleave(self.factor, -2).repeat_interleave(self.factor, -1)


class HalfStepFlowHead(FlowHead):
    """A test-only head: the flow head with its own default sampling steps."""

    def __init__(self, token_dim: int, cond_dim: int, width: int, depth: int, sampling_steps: int = 3):
        super().__init__(token_dim, cond_dim, width, depth, sampling_steps=sampling_steps, sampler="euler")


POOL = f"{__name__}.PoolTokenizer"
HEAD = f"{__name__}.HalfStepFlowHead"


@pytest.fixture(autouse=True)
def _this_module_is_a_plugin():
    """The test-only classes above live outside djepa: allow-listed, as a user allow-lists a plugin module."""
    with allowed_plugins([__name__]):
        yield


def test_a_new_tokenizer_plugs_in_by_config_alone(tmp_path):
    adapter = ImageAdapter({"_target_": POOL, "path": str(tmp_path), "factor": 4}, [2, 2], str(tmp_path), 32, 1)
    tok = adapter.tokenizer
    assert isinstance(tok, PoolTokenizer) and tok.factor == 4
    # the adapter offers what it knows; the tokenizer takes what its constructor names
    assert tok.offered == {"channels": None, "how_to_make": "train_tokenizer modality=image"}
    assert adapter.latent_grid == (8, 8) and adapter.token_grid == (4, 4) and adapter.token_dim == 4
    images = torch.rand(2, 1, 32, 32) * 2 - 1
    tokens = adapter.to_tokens(adapter.encode_media(images)[0])
    assert adapter.decode_tokens(tokens).shape == (2, 1, 32, 32)
    # a pretrained (non-default) tokenizer is never trained over
    with pytest.raises(UsageError, match="pretrained"):
        adapter.train_tokenizer({})


def test_bad_plugin_entries_are_one_line_errors_naming_the_key(tmp_path):
    where = "modality.adapter.tokenizer"
    with pytest.raises(UsageError, match=f"{where}._target_='collections.OrderedDict' is outside djepa"):
        build({"_target_": "collections.OrderedDict"}, where, TOKENIZER)
    with pytest.raises(UsageError, match=f"{where}._target_='djepa.nn.heads.FlowHead' is not a LatentTokenizer"):
        build({"_target_": "djepa.nn.heads.FlowHead"}, where, TOKENIZER)
    with allowed_plugins(["nowhere"]):
        with pytest.raises(UsageError, match=f"{where}._target_='nowhere.Thing' cannot be imported"):
            build({"_target_": "nowhere.Thing"}, where, TOKENIZER)
    with pytest.raises(UsageError, match=f"{where}.colour: PoolTokenizer takes no such setting"):
        build({"_target_": POOL, "path": "x", "colour": "red"}, where, TOKENIZER)
    with pytest.raises(UsageError, match=f"{where}._target_ is missing"):
        build({"path": "x"}, where, TOKENIZER)
    # null means "the default": another tokenizer's setting left in the config does no harm
    assert build({"_target_": POOL, "path": "x", "griffin_lim_iters": None}, where, TOKENIZER).factor == 2


def test_a_new_head_plugs_in_by_config_and_round_trips(tmp_path, make_tiny_model):
    model = make_tiny_model((2, 2), head={"_target_": HEAD})
    assert type(model.head) is HalfStepFlowHead and model.head.sampling_steps == 3
    assert model.sample(torch.tensor([0, 1]), num_steps=2).shape == (2, 4, 4)
    model.save_pretrained(tmp_path)
    again = DJEPA.from_pretrained(tmp_path)
    assert type(again.head) is HalfStepFlowHead
    with pytest.raises(UsageError, match="loss.head._target_='torch.nn.Linear' is outside djepa"):
        make_tiny_model((2, 2), head={"_target_": "torch.nn.Linear"})


def test_a_tokenizer_entry_without_target_is_the_adapters_default(tmp_path):
    assert (
        ImageAdapter({"path": "x"}, [2, 2], str(tmp_path))
        .tokenizer_config["_target_"]
        .endswith("AutoencoderKLTokenizer")
    )


def test_every_adapter_has_what_the_core_calls():
    """The adapters implement djepa.engine.adapter.Adapter, the interface train, the pipeline and export call (the
    type checker sees the core's side only): every member, methods taking the protocol's arguments in order."""
    import inspect

    from djepa.engine.adapter import Adapter
    from djepa.modalities.audio import AudioAdapter
    from djepa.modalities.video import VideoAdapter

    members = sorted(name for name in vars(Adapter) if not name.startswith("_"))
    assert {"decode_tokens", "save_grid", "token_grid", "train_tokenizer"} <= set(members)
    for cls in (ImageAdapter, VideoAdapter, AudioAdapter):
        for name in members:
            declared = any(name in vars(c) or name in getattr(c, "__annotations__", {}) for c in cls.__mro__)
            assert declared, f"{cls.__name__} has no {name}"
            wanted = vars(Adapter)[name]
            if inspect.isfunction(wanted):
                expected = list(inspect.signature(wanted).parameters)
                found = list(inspect.signature(getattr(cls, name)).parameters)
                assert found[: len(expected)] == expected, f"{cls.__name__}.{name}{tuple(found)}"
