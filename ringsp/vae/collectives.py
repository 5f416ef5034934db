"""Assembling row slabs of different heights, and handing rank 0's tensor to everyone.

torch.distributed gathers equal-sized tensors only, so slabs are zero-padded to the tallest
one for the transfer and trimmed on arrival.
"""
import torch
import torch.distributed as dist
import torch.nn.functional as F

__all__ = ["all_gather_rows", "gather_rows", "broadcast_from_first", "comm_device"]

# Enough for the 5-D tensors decoded here: [ndim, dtype code, *shape].
_META_LEN = 2 + 8
_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


def all_gather_rows(x, rows, group, dim=-2):
    """Every rank's slab concatenated along dim in rank order; rows[r] = rank r's height."""
    dim = dim % x.dim()
    send = _padded(x, rows, group, dim)
    bufs = [torch.empty_like(send) for _ in rows]
    dist.all_gather(bufs, send, group=group)
    return torch.cat([b.narrow(dim, 0, n) for b, n in zip(bufs, rows)], dim=dim)


def gather_rows(x, rows, group, dim=-2):
    """Like all_gather_rows, but only the group's first rank gets the result (others None)."""
    dim = dim % x.dim()
    send = _padded(x, rows, group, dim)
    first = dist.get_rank(group) == 0
    bufs = [torch.empty_like(send) for _ in rows] if first else None
    dist.gather(send, bufs, group=group, group_dst=0)
    if not first:
        return None
    return torch.cat([b.narrow(dim, 0, n) for b, n in zip(bufs, rows)], dim=dim)


def broadcast_from_first(x, group, device):
    """The group's first rank passes x (a tensor); every rank returns a copy of it.

    Shape and dtype travel first, so the other ranks need not know them."""
    first = dist.get_rank(group) == 0
    meta = torch.zeros(_META_LEN, dtype=torch.int64, device=device)
    if first:
        if x.dim() > _META_LEN - 2 or x.dtype not in _DTYPES:
            raise ValueError(f"cannot broadcast a {x.dim()}-D {x.dtype} tensor")
        meta[0], meta[1] = x.dim(), _DTYPES.index(x.dtype)
        meta[2 : 2 + x.dim()] = torch.tensor(x.shape, dtype=torch.int64)
    dist.broadcast(meta, group=group, group_src=0)
    ndim, code = int(meta[0]), int(meta[1])
    shape = [int(s) for s in meta[2 : 2 + ndim]]
    buf = x.contiguous() if first else torch.empty(shape, dtype=_DTYPES[code], device=device)
    dist.broadcast(buf, group=group, group_src=0)
    return buf


def comm_device(group, like=None):
    """A device that the group's backend can communicate tensors on."""
    backend = str(dist.get_backend(group))
    if like is not None and like.device.type != "cpu" and backend != "gloo":
        return like.device
    if backend == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _padded(x, rows, group, dim):
    rank = dist.get_rank(group)
    if len(rows) != dist.get_world_size(group) or x.shape[dim] != rows[rank]:
        raise RuntimeError(f"rank {rank}: slab has {x.shape[dim]} rows along dim {dim}, expected rows={rows}")
    missing = max(rows) - x.shape[dim]
    if missing == 0:
        return x.contiguous()
    pad = [0, 0] * (x.dim() - 1 - dim) + [0, missing]
    return F.pad(x, pad)
