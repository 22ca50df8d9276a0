import pytest
import torch

from djepa.chunks import map_chunks


def test_map_chunks_matches_one_call_and_keeps_call_order():
    x = torch.arange(10.0)[:, None]
    seen = []

    def double(chunk):
        seen.append(len(chunk))
        return chunk * 2

    assert torch.equal(map_chunks(double, x, 4), x * 2)
    assert seen == [4, 4, 2]
    total, first = map_chunks(lambda c: (c.sum(1), c[:, 0]), x, 3)  # tuples concatenate part by part
    assert torch.equal(total, x[:, 0]) and torch.equal(first, x[:, 0])
    with pytest.raises(ValueError, match="chunk size"):
        map_chunks(double, x, 0)
