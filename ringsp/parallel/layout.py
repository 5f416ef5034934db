"""Sequence layout across SP ranks: shard sizes, padding, and the valid keys of each block.

The global sequence of length S is padded at its END to world * ceil(S / world) tokens and
cut into equal shards in SP-rank order, so the padding of a block is always its tail and a
block's valid keys are a prefix: kv_len = clamp(S - j * block, 0, block) for block j.
"""
import math


def shard_len(seq_len, world):
    """Tokens per rank (the last shards are padded up to this)."""
    return math.ceil(seq_len / world)


def block_kv_len(seq_len, block_index, block_len):
    """Valid keys in block `block_index` of a sequence padded only at its end."""
    return max(0, min(seq_len - block_index * block_len, block_len))


def check_seq_len(seq_len, local_len, world, name="seq_len"):
    """seq_len (None = unpadded) as an int in [0, world * local_len]."""
    padded = world * local_len
    if seq_len is None:
        return padded
    if isinstance(seq_len, bool) or not isinstance(seq_len, int):
        raise TypeError(f"{name} must be an int or None, got {type(seq_len).__name__}")
    if not 0 <= seq_len <= padded:
        raise ValueError(f"{name}={seq_len} is out of range [0, {padded}] "
                         f"({world} shards of {local_len} tokens)")
    return seq_len

