"""What `group` means in this layer: one rule for every function.

`None` is torch.distributed's default group (WORLD), as in torch.distributed itself.
`SINGLE` is a group of one (this rank alone, no communication): what a pure Ulysses call
passes as its ring, or a pure ring call as its Ulysses group.
"""
import torch.distributed as dist


class _Single:
    def __repr__(self):
        return "SINGLE"


SINGLE = _Single()


def size_rank(group):
    """(world size, rank) of `group` (None = WORLD, SINGLE = a group of one)."""
    if group is SINGLE:
        return 1, 0
    return dist.get_world_size(group), dist.get_rank(group)
