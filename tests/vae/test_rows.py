"""Balanced row splits and the per-layer row bookkeeping."""
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ringsp.vae.rows import RowShard, split_rows


@settings(max_examples=200, deadline=None)
@given(height=st.integers(0, 500), parts=st.integers(1, 16))
def test_split_is_contiguous_balanced_and_complete(height, parts):
    bounds = split_rows(height, parts)
    assert len(bounds) == parts
    assert bounds[0][0] == 0 and bounds[-1][1] == height
    assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))
    sizes = [stop - start for start, stop in bounds]
    assert max(sizes) - min(sizes) <= 1
    assert sizes == sorted(sizes, reverse=True)  # the extra rows go to the first ranks


def test_split_examples():
    assert split_rows(7, 3) == [(0, 3), (3, 5), (5, 7)]
    assert split_rows(2, 3) == [(0, 1), (1, 2), (2, 2)]


@pytest.mark.parametrize("args", [(-1, 2), (4, 0), (4.0, 2), (4, True)])
def test_split_rejects_bad_arguments(args):
    with pytest.raises((TypeError, ValueError)):
        split_rows(*args)


def test_rows_at_scales_every_shard_by_the_local_factor():
    shard = RowShard(group=None, rank=1, world=3, latent_rows=(3, 2, 2))
    assert shard.rows_at(2) == [3, 2, 2]
    assert shard.rows_at(16) == [24, 16, 16]
    assert shard.has_prev and shard.has_next
    with pytest.raises(RuntimeError, match="not a multiple"):
        shard.rows_at(5)
