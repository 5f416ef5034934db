"""Halo exchange for the row-split VAE decode: each rank of a process group holds one
contiguous slab of a tensor along some dimension (rank order = slab order) and needs a few
boundary rows of its neighbours' slabs, before a convolution whose kernel reaches across
the slab edge.

    handle = start_halo_exchange(x, dim=-2, before=1, after=1, group=group)
    ...                                   # work that needs no halo overlaps the transfer
    from_prev, from_next = handle.wait()  # None at the first / last rank

`before` rows come from the previous rank (the end of its slab), `after` rows from the next
rank (the start of its slab). The ranks form a line, not a ring: the first rank has no
predecessor and the last no successor, and it is the caller's business what stands in for
the missing halo there (zero padding, say).

Every rank must call with the same `dim`, `before`, `after`, dtype and, apart from `dim`,
the same shape: the receive buffers are sized from the local tensor, so the caller agrees
on shapes across ranks beforehand (parallel_vae_decode does, with one agreement before
any exchange); the local checks here raise on the rank that fails them only. Knows
nothing of what the rows mean.

`group=None` is the default (WORLD) group, as everywhere in ringsp.
"""
import torch
import torch.distributed as dist

from ringsp.parallel.fail_together import wait

__all__ = ["HaloExchange", "start_halo_exchange", "exchange_halo", "check_group"]


class HaloExchange:
    """An exchange in flight; `wait()` returns (rows from prev rank, rows from next rank)."""

    def __init__(self, works, from_prev, from_next):
        self._works = works
        self._from_prev = from_prev
        self._from_next = from_next
        self._done = False

    def wait(self):
        if not self._done:
            for work in self._works:
                wait(work)
            self._done = True
        return self._from_prev, self._from_next


def start_halo_exchange(x, dim, before, after, group=None):
    """Starts sending this rank's edge rows to its neighbours and receiving theirs.

    x: this rank's slab; dim: the split dimension; before/after: how many rows this rank
    needs from its previous / next rank (non-negative ints, the same on every rank);
    group: the process group whose rank order is the slab order (None = WORLD).
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    dim = _check_dim(x, dim)
    before = _check_count("before", before)
    after = _check_count("after", after)
    check_group(group, "start_halo_exchange")
    rank, world = dist.get_rank(group), dist.get_world_size(group)
    has_prev, has_next = rank > 0, rank < world - 1
    # A neighbour's halo must come from this rank's slab alone: it cannot hop over ranks.
    needed = max(after if has_prev else 0, before if has_next else 0)
    if x.shape[dim] < needed:
        raise ValueError(
            f"rank {rank} holds {x.shape[dim]} rows along dim {dim} but its neighbours need {needed} "
            f"(before={before}, after={after}); use fewer ranks or a larger tensor"
        )

    ops, from_prev, from_next = [], None, None
    if has_prev and before > 0:
        from_prev = _empty_rows(x, dim, before)
        ops.append(dist.P2POp(dist.irecv, from_prev, group=group, group_peer=rank - 1))
    if has_next and after > 0:
        from_next = _empty_rows(x, dim, after)
        ops.append(dist.P2POp(dist.irecv, from_next, group=group, group_peer=rank + 1))
    if has_prev and after > 0:
        ops.append(dist.P2POp(dist.isend, x.narrow(dim, 0, after).contiguous(), group=group, group_peer=rank - 1))
    if has_next and before > 0:
        tail = x.narrow(dim, x.shape[dim] - before, before).contiguous()
        ops.append(dist.P2POp(dist.isend, tail, group=group, group_peer=rank + 1))
    works = dist.batch_isend_irecv(ops) if ops else []
    return HaloExchange(works, from_prev, from_next)


def exchange_halo(x, dim, before, after, group=None):
    """Blocking form of `start_halo_exchange` (group None = WORLD): returns (from_prev, from_next)."""
    return start_halo_exchange(x, dim, before, after, group).wait()


def check_group(group, caller):
    """TypeError/ValueError unless `group` (None = WORLD) is a process group this process
    belongs to, in an initialised torch.distributed."""
    if group is not None and not isinstance(group, dist.ProcessGroup):
        raise TypeError(f"group must be a torch.distributed ProcessGroup or None, got {type(group).__name__}")
    if not dist.is_initialized():
        raise ValueError(f"{caller} needs an initialised torch.distributed process group")
    if dist.get_rank(group) < 0:
        raise ValueError("this process is not a member of `group`")


def _empty_rows(x, dim, n):
    shape = list(x.shape)
    shape[dim] = n
    return torch.empty(shape, dtype=x.dtype, device=x.device)


def _check_dim(x, dim):
    if isinstance(dim, bool) or not isinstance(dim, int):
        raise TypeError(f"dim must be an int, got {type(dim).__name__}")
    if not -x.dim() <= dim < x.dim():
        raise ValueError(f"dim={dim} is out of range for a {x.dim()}-D tensor")
    return dim % x.dim()


def _check_count(name, n):
    if isinstance(n, bool) or not isinstance(n, int):
        raise TypeError(f"{name} must be an int, got {type(n).__name__}")
    if n < 0:
        raise ValueError(f"{name} must be >= 0, got {n}")
    return n
