import math

import pytest
import torch

from djepa.benchmarks.classifiers import ConvClassifier, random_shift, train_classifier
from djepa.benchmarks.metrics import accuracy, frechet_distance, inception_score


def test_frechet_distance_is_zero_for_identical_sets_and_grows_with_shift():
    x = torch.randn(500, 8)
    assert abs(frechet_distance(x, x)) < 1e-3
    assert frechet_distance(x, x + 1.0) > 7.5  # mean shift of 1 in 8 dims adds 8


def test_inception_score_bounds():
    confident = torch.eye(10).repeat(10, 1) * 50
    assert math.isclose(inception_score(confident), 10.0, rel_tol=1e-3)
    assert math.isclose(inception_score(torch.zeros(100, 10)), 1.0, rel_tol=1e-6)


def test_accuracy():
    assert accuracy(torch.tensor([[2.0, 1.0], [0.0, 3.0]]), torch.tensor([0, 0])) == 0.5


@pytest.mark.slow
def test_classifier_learns_separable_images():
    g = torch.Generator().manual_seed(0)
    y = torch.arange(200) % 2
    x = torch.randn(200, 1, 16, 16, generator=g) * 0.3
    x[y == 1, :, :8] += 1.5  # class 1: bright top half
    model, heldout = train_classifier(x, y, 2, steps=60, batch_size=32, shift=1)
    assert isinstance(model, ConvClassifier) and heldout >= 0.9


def test_random_shift_moves_each_item_by_its_own_offset_within_the_bound():
    x = torch.zeros(32, 1, 8, 8)
    x[:, :, 3:5, 3:5] = 1  # a 2x2 square that a shift of up to 2 px keeps on the canvas
    out = random_shift(x, 2, torch.Generator().manual_seed(0))
    assert out.shape == x.shape
    offsets = set()
    for item, shifted in zip(x, out):
        dy, dx = (shifted[0].nonzero().min(0).values - 3).tolist()
        assert abs(dy) <= 2 and abs(dx) <= 2
        assert torch.equal(shifted, item.roll((dy, dx), dims=(-2, -1)))  # the same square, moved, nothing else
        offsets.add((dy, dx))
    assert len(offsets) >= 10  # items draw their own offsets (25 possible); none at all would give one
    assert torch.equal(random_shift(x, 2, torch.Generator().manual_seed(0)), out)  # seeded
    assert random_shift(x, 0, torch.Generator()) is x
