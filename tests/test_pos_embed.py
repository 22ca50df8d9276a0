import pytest
import torch

from djepa.nn.pos_embed import GridPositionalEmbedding, LearnedPositionalEmbedding, positional_embedding, sincos_grid


@pytest.mark.parametrize("grid", [(10,), (4, 6), (2, 3, 5)])
def test_embedding_shape_and_distinct_positions(grid):
    emb = GridPositionalEmbedding(grid, 48)()
    n = torch.tensor(grid).prod().item()
    assert emb.shape == (n, 48)
    # every position is distinguishable
    assert torch.cdist(emb, emb).add(torch.eye(n) * 1e3).min() > 1e-3


def test_sincos_is_factorised_per_axis():
    emb = sincos_grid((3, 4), 16).view(3, 4, 16)
    # first 8 channels depend on the row only, the next 8 on the column only
    assert torch.allclose(emb[:, 0, :8], emb[:, 3, :8])
    assert torch.allclose(emb[0, :, 8:], emb[2, :, 8:])


def test_other_grid_sizes_interpolate():
    pos = GridPositionalEmbedding((4, 4), 32)
    assert pos((6, 8)).shape == (48, 32)
    with pytest.raises(ValueError, match="rank"):
        pos((4, 4, 4))


def test_learned_table_has_one_row_per_position_and_resamples_to_another_grid():
    pos = positional_embedding("learned", (4, 4), 8)
    assert isinstance(pos, LearnedPositionalEmbedding) and pos() is pos.table and pos.table.shape == (16, 8)
    with torch.no_grad():
        pos.table.copy_(torch.arange(4.0).repeat_interleave(4)[:, None].expand(16, 8))  # the row index
    bigger = pos((8, 6)).view(8, 6, 8)
    assert bigger.shape == (8, 6, 8) and torch.allclose(bigger[:, 0], bigger[:, 5])  # constant along columns
    assert bigger[0, 0, 0] < bigger[7, 0, 0]  # still rising along rows
    with pytest.raises(ValueError, match="cannot be resampled"):
        pos((4,))
    with pytest.raises(ValueError, match="factorised or learned"):
        positional_embedding("rope", (4, 4), 8)
