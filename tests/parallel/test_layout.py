"""Sequence layout: shard sizes and the valid keys of each block."""
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ringsp.parallel.layout import block_kv_len, check_seq_len, shard_len


@given(seq=st.integers(1, 500), world=st.integers(1, 9))
def test_blocks_cover_the_sequence_once(seq, world):
    block = shard_len(seq, world)
    lens = [block_kv_len(seq, j, block) for j in range(world)]
    assert sum(lens) == seq and all(0 <= n <= block for n in lens)
    assert lens == sorted(lens, reverse=True)  # padding only at the end


def test_block_kv_len_examples():
    assert [block_kv_len(5, j, 2) for j in range(4)] == [2, 2, 1, 0]


def test_check_seq_len():
    assert check_seq_len(None, 3, 4) == 12
    assert check_seq_len(0, 3, 4) == 0
    with pytest.raises(ValueError, match=r"seq_len=13 is out of range \[0, 12\]"):
        check_seq_len(13, 3, 4)
    with pytest.raises(TypeError, match="seq_len must be an int"):
        check_seq_len(3.0, 3, 4)
