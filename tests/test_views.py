"""What the benchmark classifier sees: the view picked per adapter class, the default for other adapters."""

import pytest
import torch

from djepa.benchmarks.views import AudioView, ClassifierView, ImageView, VideoView, classifier_view
from djepa.errors import UsageError
from djepa.modalities.audio import AudioAdapter
from djepa.modalities.base import ModalityAdapter
from djepa.modalities.image import ImageAdapter
from djepa.modalities.video import VideoAdapter


class PointsAdapter(ModalityAdapter):
    """A plugin's own adapter, none of the three modalities (what it does not need here is left out)."""

    name = "points"
    default_tokenizer = "djepa.tokenizers.autoencoder_kl.AutoencoderKLTokenizer"
    train_tokenizer = embedded_class_names = scan_data_dir = folder_dataset = source_id = save = save_grid = None
    media_grid = (2,)

    def load_dataset(self):
        return torch.arange(12.0).view(6, 2), torch.tensor([0, 1] * 3)


def test_each_modality_gets_its_view_and_another_adapter_the_default(tmp_path):
    args = ({"path": str(tmp_path / "tok")}, [1, 1], str(tmp_path))
    assert type(classifier_view(ImageAdapter(*args))) is ImageView
    assert type(classifier_view(VideoAdapter(args[0], [1, 1, 1], args[2]))) is VideoView
    assert type(classifier_view(AudioAdapter(*args))) is AudioView
    view = classifier_view(PointsAdapter(*args))
    assert type(view) is ClassifierView and view.tag == ""
    x, labels = view.training_data()
    assert x.shape == (6, 2) and labels.tolist() == [0, 1] * 3
    media = torch.ones(3, 2)
    assert view.rows(media) == (media, 1) and view.media_metrics(media) == {}


def test_an_object_that_is_no_modality_adapter_is_refused_in_one_line():
    with pytest.raises(UsageError, match="the benchmarks need a djepa.modalities.base.ModalityAdapter; dict is not"):
        classifier_view({"name": "image"})
