"""Gathering every rank's slab of a tensor, and handing the first rank's tensor to everyone.

`group=None` is torch.distributed's default group (WORLD), as everywhere in this layer.

torch.distributed gathers equal-sized tensors only; slabs of different extents along the
gathered dimension (a row split that the world does not divide) are zero-padded to the
largest for the transfer and trimmed on arrival.
"""
import torch
import torch.distributed as dist

from .fail_together import wait

__all__ = ["all_gather_cat", "gather_cat", "broadcast_from_first"]

# [status, ndim, dtype code, *shape]: enough for the 5-D video tensors and then some.
_MAX_DIMS = 8
_META_LEN = 3 + _MAX_DIMS
_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64, torch.uint8, torch.int8,
           torch.int16, torch.int32, torch.int64, torch.bool)
_MESSAGE_BYTES = 1024
# meta[0]: what the first rank tells the others. x cannot be sent -> ValueError everywhere;
# the first rank met an error making x -> its own error there, RuntimeError elsewhere.
_SEND, _BAD_INPUT, _FAILED = 0, 1, 2


def all_gather_cat(x, group, dim, sizes=None):
    """Every rank's x concatenated along dim in group-rank order, on every rank.

    sizes: each rank's extent along dim (the same list on every rank) when they differ;
    None when every rank's x has the same shape (no padding, no copy beyond torch's).
    """
    dim, send, sizes = _prepare(x, group, dim, sizes)
    parts = [torch.empty_like(send) for _ in sizes]
    wait(dist.all_gather(parts, send, group=group, async_op=True))
    return _trimmed_cat(parts, sizes, dim)


def gather_cat(x, group, dim, sizes=None):
    """all_gather_cat delivered to the group's first rank only; the others get None."""
    dim, send, sizes = _prepare(x, group, dim, sizes)
    first = dist.get_rank(group) == 0
    parts = [torch.empty_like(send) for _ in sizes] if first else None
    wait(dist.gather(send, parts, group=group, group_dst=0, async_op=True))
    return _trimmed_cat(parts, sizes, dim) if first else None


def broadcast_from_first(x, group, device, error=None):
    """The group's first rank passes x (a tensor); every rank returns a copy of it on device.

    Shape and dtype travel first, so the other ranks need not know them. The first rank may
    instead pass `error` (an exception it met while making x), or an x that cannot be sent;
    the verdict travels with the shape, so every rank raises together: the first rank its
    own exception (or a ValueError), the others a RuntimeError / ValueError naming it.
    `device` must be of the same type on every rank and one the group's backend serves.
    """
    first = dist.get_rank(group) == 0
    meta = torch.zeros(_META_LEN, dtype=torch.int64)
    message = None
    if first:
        meta[0], message = _status(x, error)
        if message is None:
            meta[1], meta[2] = x.dim(), _DTYPES.index(x.dtype)
            meta[3 : 3 + x.dim()] = torch.tensor(x.shape, dtype=torch.int64)
    meta = meta.to(device)
    wait(dist.broadcast(meta, group=group, group_src=0, async_op=True))
    meta = meta.cpu()
    if int(meta[0]) != _SEND:
        _raise_everywhere(int(meta[0]), message, error, group, device)
    ndim, code = int(meta[1]), int(meta[2])
    shape = [int(s) for s in meta[3 : 3 + ndim]]
    buf = x.to(device).contiguous() if first else torch.empty(shape, dtype=_DTYPES[code], device=device)
    wait(dist.broadcast(buf, group=group, group_src=0, async_op=True))
    return buf


def _status(x, error):
    """On the first rank: (status, why x cannot be sent or None)."""
    if error is not None:
        return _FAILED, f"{type(error).__name__}: {error}"
    if not isinstance(x, torch.Tensor):
        return _BAD_INPUT, f"broadcast_from_first needs a tensor on the first rank, got {type(x).__name__}"
    if x.dim() > _MAX_DIMS or x.dtype not in _DTYPES:
        dtype = str(x.dtype).replace("torch.", "")
        return _BAD_INPUT, f"broadcast_from_first cannot send a {x.dim()}-D {dtype} tensor"
    return _SEND, None


def _raise_everywhere(status, message, error, group, device):
    """The first rank's reason reaches every rank; every rank raises."""
    raw = torch.zeros(_MESSAGE_BYTES, dtype=torch.uint8)
    if message is not None:
        data = message.encode()[:_MESSAGE_BYTES]
        raw[: len(data)] = torch.frombuffer(bytearray(data), dtype=torch.uint8)
    raw = raw.to(device)
    wait(dist.broadcast(raw, group=group, group_src=0, async_op=True))
    text = bytes(raw.cpu().tolist()).rstrip(b"\0").decode(errors="replace")
    if status == _BAD_INPUT:
        raise ValueError(text if message is not None else f"the group's first rank: {text}")
    if error is not None:
        raise error
    raise RuntimeError(f"the group's first rank failed before broadcasting: {text}")


def _prepare(x, group, dim, sizes):
    """(dim in [0, ndim), x padded for the transfer, every rank's extent along dim)."""
    dim = dim % x.dim()
    world = dist.get_world_size(group)
    if sizes is None:
        return dim, x.contiguous(), [x.shape[dim]] * world
    sizes = [int(n) for n in sizes]
    rank = dist.get_rank(group)
    # A caller bug, not bad user input: the sizes are derived from agreed shapes.
    if len(sizes) != world or x.shape[dim] != sizes[rank]:
        raise RuntimeError(f"rank {rank}: slab has {x.shape[dim]} rows along dim {dim}, expected sizes={sizes}")
    if x.shape[dim] == max(sizes):
        return dim, x.contiguous(), sizes
    shape = list(x.shape)
    shape[dim] = max(sizes)
    padded = x.new_zeros(shape)
    padded.narrow(dim, 0, x.shape[dim]).copy_(x)
    return dim, padded, sizes


def _trimmed_cat(parts, sizes, dim):
    return torch.cat([p.narrow(dim, 0, n) for p, n in zip(parts, sizes)], dim=dim)
